//! DeviceWeights: weights land in their argument places among inputs and parameters made
//! outside the binding, replicated on two CPU devices, converted to the declared dtype; a
//! checkpoint that does not match the declared weights is refused before anything uploads.

use std::path::{Path, PathBuf};

use ti_xla::io::tensor_file::{write_f32_atomic, F32Tensor};
use ti_xla::io::weights::WeightFiles;
use ti_xla::pjrt::CompileOptions;
use ti_xla::runtime::device_weights::{weight_specs, DeviceWeights};
use xla_graphs::models::params::Params;
use xla_graphs::{DType, Graph, Shape};

fn checkpoint(name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)]) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("model_weights");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let tensors: Vec<F32Tensor> = tensors
        .iter()
        .map(|(n, s, v)| F32Tensor {
            name: n.to_string(),
            shape: s.clone(),
            values: v.clone(),
        })
        .collect();
    write_f32_atomic(&path, &tensors, None).unwrap();
    path
}

#[test]
fn weights_fill_their_places_on_every_device() {
    let path = checkpoint(
        "ok.safetensors",
        &[
            ("block.scale", vec![3], vec![1.0, 2.0, 3.0]),
            ("block.shift", vec![3], vec![0.5, 0.25, 0.125]),
        ],
    );
    let g = Graph::new();
    let p = Params::new(&g, DType::BF16);
    let scale = p.scope("block", |p| p.get("scale", &[3])).unwrap();
    // Made outside the binding: it must keep its own place.
    let state = g.parameter("state", Shape::new(DType::F32, &[3])).unwrap();
    let x = p.input("x", Shape::new(DType::F32, &[3])).unwrap();
    let shift = p.scope("block", |p| p.get("shift", &[3])).unwrap();
    assert_eq!(
        weight_specs(&p.specs())
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["block.scale", "block.shift"]
    );
    let y = x
        .multiply(&scale.convert(DType::F32).unwrap())
        .unwrap()
        .add(&shift.convert(DType::F32).unwrap())
        .unwrap()
        .add(&state)
        .unwrap();
    let program = g.to_stablehlo(&[&y]).unwrap();

    let client = ti_xla::testing::cpu_client(2).unwrap();
    let exe = client
        .compile(&program, &CompileOptions::replicated(2))
        .unwrap();
    let files = WeightFiles::open(&[path]).unwrap();
    let weights = DeviceWeights::upload(&client, &files, &p.specs(), 2, "toy").unwrap();
    assert_eq!((weights.num_devices(), weights.num_weights()), (2, 2));
    let host = |d: usize, v: [f32; 3]| client.buffer_from_host(&v, &[3], d).unwrap();
    let (state0, x0) = (host(0, [100.0; 3]), host(0, [1.0, 1.0, 1.0]));
    let (state1, x1) = (host(1, [200.0; 3]), host(1, [2.0, 2.0, 2.0]));
    let args = weights
        .arguments(&[vec![&state0, &x0], vec![&state1, &x1]])
        .unwrap();
    assert!(weights.arguments(&[vec![&state0], vec![&state1]]).is_err());
    let out = exe.execute(&args).unwrap();
    assert_eq!(out[0][0].to_vec::<f32>().unwrap(), [101.5, 102.25, 103.125]);
    assert_eq!(out[1][0].to_vec::<f32>().unwrap(), [202.5, 204.25, 206.125]);
}

#[test]
fn a_transposed_weight_is_checked_as_stored_and_uploaded_transposed() {
    // A [2, 3] tensor bound as its transpose: the checkpoint check uses [2, 3] and the
    // program's argument holds the [3, 2] transpose (element (j, i) = stored (i, j)).
    let stored: Vec<f32> = (0..6).map(|v| v as f32).collect();
    let path = checkpoint("t.safetensors", &[("w", vec![2, 3], stored.clone())]);
    let g = Graph::new();
    let p = Params::new(&g, DType::F32);
    let w = p.get_transposed("w", &[2, 3], &[1, 0]).unwrap();
    assert_eq!(w.dims(), vec![3, 2]);
    assert_eq!(weight_specs(&p.specs())[0].shape, vec![2, 3]);
    let program = g.to_stablehlo(&[&w.add(&w).unwrap()]).unwrap();
    let client = ti_xla::testing::cpu_client(1).unwrap();
    let exe = client
        .compile(&program, &CompileOptions::replicated(1))
        .unwrap();
    let files = WeightFiles::open(&[path]).unwrap();
    let weights = DeviceWeights::upload(&client, &files, &p.specs(), 1, "toy").unwrap();
    let out = exe.execute(&weights.arguments(&[vec![]]).unwrap()).unwrap();
    let expect: Vec<f32> = (0..3)
        .flat_map(|j| (0..2).map(move |i| 2.0 * (3 * i + j) as f32))
        .collect();
    assert_eq!(out[0][0].to_vec::<f32>().unwrap(), expect);
}

#[test]
fn a_mismatched_checkpoint_is_refused() {
    let path = checkpoint(
        "bad.safetensors",
        &[
            ("block.scale", vec![4], vec![0.0; 4]),
            ("extra", vec![1], vec![0.0]),
        ],
    );
    let g = Graph::new();
    let p = Params::new(&g, DType::F32);
    p.get("block.scale", &[3]).unwrap();
    p.get("block.shift", &[3]).unwrap();
    let client = ti_xla::testing::cpu_client(1).unwrap();
    let files = WeightFiles::open(&[path]).unwrap();
    let err = DeviceWeights::upload(&client, &files, &p.specs(), 1, "toy")
        .err()
        .unwrap()
        .to_string();
    for part in [
        "toy",
        "block.shift",
        "block.scale (expected [3], found [4])",
        "extra",
    ] {
        assert!(err.contains(part), "{part}: {err}");
    }
}
