//! The traced UNet2DConditionModel against diffusers' outputs for both fixtures (references
//! computed in f64 from the stored f16 weights, time features in f32, see
//! tests/fixtures/README.md), in f32 through the CPU plugin: the predicted sample and every
//! tapped activation the reference holds. Then `ti-xla forward --component unet` end to end.

mod parity;

use parity::{compare, fixture, forward, scratch};
use std::path::PathBuf;

use ti_xla::io::tensor_file::{write_f32_atomic, F32Tensor, TensorFile};
use ti_xla::io::weights::{component_files, WeightFiles};
use ti_xla::model::folder::ModelFolder;
use ti_xla::pjrt::CompileOptions;
use ti_xla::runtime::device_weights::DeviceWeights;
use xla_graphs::models::params::Params;
use xla_graphs::models::unet::UNet2DConditionModel;
use xla_graphs::{DType, Graph, Shape};

/// Max |ours - reference| / max |reference| allowed (issue 4).
const TOLERANCE: f64 = 1e-4;

fn reference(model: &str) -> TensorFile {
    TensorFile::open(&fixture(model).join("reference/unet.safetensors")).unwrap()
}

/// A reference float tensor of any rank up to 4.
fn ref_floats(file: &TensorFile, name: &str) -> Option<(Vec<usize>, Vec<f32>)> {
    (1..=4).find_map(|rank| file.floats(name, &vec![None; rank], "").ok())
}

/// Runs the UNet on the reference inputs; returns the output and the tapped activations as
/// (reference name, shape, values).
fn run_unet(model: &str) -> Vec<(String, Vec<i64>, Vec<f32>)> {
    let folder = ModelFolder::open(fixture(model).to_str().unwrap(), None, None).unwrap();
    let refs = reference(model);
    let input = |name: &str| ref_floats(&refs, name).unwrap();
    let (sample_shape, sample) = input("sample");
    let (t_shape, timestep) = input("timestep");
    let (ctx_shape, context) = input("encoder_hidden_states");
    let dims = |s: &[usize]| s.iter().map(|&d| d as i64).collect::<Vec<_>>();

    let g = Graph::new();
    let p = Params::new(&g, DType::F32);
    p.record_taps();
    let f32_input =
        |name: &str, s: &[usize]| p.input(name, Shape::new(DType::F32, &dims(s))).unwrap();
    let x = f32_input("sample", &sample_shape);
    let t = f32_input("timestep", &t_shape);
    let ctx = f32_input("encoder_hidden_states", &ctx_shape);
    let unet = UNet2DConditionModel::new(folder.unet.clone()).unwrap();
    let out = unet.forward(&p, &x, &t, &ctx, None).unwrap();
    let mut outputs = vec![("out_sample".to_string(), out)];
    outputs.extend(
        p.taps()
            .into_iter()
            .map(|(path, t)| (format!("debug.{path}"), t)),
    );
    let program = g
        .to_stablehlo(&outputs.iter().map(|(_, t)| t).collect::<Vec<_>>())
        .unwrap();

    let client = ti_xla::testing::cpu_client(1).unwrap();
    let exe = client
        .compile(&program, &CompileOptions::replicated(1))
        .unwrap();
    let files = WeightFiles::open(
        &component_files(&folder.component("unet"), "diffusion_pytorch_model", None).unwrap(),
    )
    .unwrap();
    let weights = DeviceWeights::upload(&client, &files, &p.specs(), 1, "unet").unwrap();
    let buffers = [
        (&sample, &sample_shape),
        (&timestep, &t_shape),
        (&context, &ctx_shape),
    ]
    .map(|(v, s)| client.buffer_from_host(v, &dims(s), 0).unwrap());
    let args = weights.arguments(&[buffers.iter().collect()]).unwrap();
    let results = exe.execute(&args).unwrap().pop().unwrap();
    outputs
        .iter()
        .zip(results)
        .map(|((name, t), b)| (name.clone(), t.dims(), b.to_vec::<f32>().unwrap()))
        .collect()
}

fn check_parity(model: &str) {
    let refs = reference(model);
    let mut checked = Vec::new();
    for (name, shape, values) in run_unet(model) {
        let Some((ref_shape, expected)) = ref_floats(&refs, &name) else {
            continue; // blocks past the first have no reference
        };
        let ref_shape: Vec<i64> = ref_shape.iter().map(|&d| d as i64).collect();
        assert_eq!(shape, ref_shape, "{model} {name}: shape");
        let (_, rel) = compare(&format!("{model} {name}"), &values, &expected);
        assert!(rel <= TOLERANCE, "{model} {name}: rel error {rel:.3e}");
        checked.push(name);
    }
    checked.sort();
    assert_eq!(
        checked,
        [
            "debug.conv_in",
            "debug.down_blocks.0",
            "debug.mid_block",
            "debug.time_embedding",
            "debug.time_proj",
            "debug.up_blocks.0",
            "out_sample"
        ],
        "{model}: every reference tensor is compared"
    );
}

#[test]
fn tiny_sd1_unet_matches_diffusers() {
    check_parity("tiny-sd1");
}

#[test]
fn tiny_sd2_unet_matches_diffusers() {
    check_parity("tiny-sd2");
}

/// The reference inputs with the timestep as i64 (`DDPMScheduler` timesteps are integers).
fn integer_timestep_inputs(model: &str) -> PathBuf {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    let refs = reference(model);
    let path = scratch(&format!("{model}-inputs.safetensors"));
    let mut data = Vec::new();
    for name in ["sample", "encoder_hidden_states"] {
        let (shape, values) = ref_floats(&refs, name).unwrap();
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        data.push((name, Dtype::F32, shape, bytes));
    }
    let (shape, t) = ref_floats(&refs, "timestep").unwrap();
    let bytes = t.iter().flat_map(|&v| (v as i64).to_le_bytes()).collect();
    data.push(("timestep", Dtype::I64, shape, bytes));
    let views = data
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            (
                *name,
                TensorView::new(*dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect::<Vec<_>>();
    safetensors::serialize_to_file(views, None, &path).unwrap();
    path
}

#[test]
fn forward_command_predicts_the_reference_sample() {
    for model in ["tiny-sd1", "tiny-sd2"] {
        let inputs = integer_timestep_inputs(model);
        let out = scratch(&format!("{model}-unet.safetensors"));
        let run = forward("unet", model, &inputs, &out, &["--debug"]);
        let stderr = String::from_utf8_lossy(&run.stderr);
        assert!(run.status.success(), "{model}: {stderr}");
        let written = TensorFile::open(&out).unwrap();
        for (name, ref_name) in [
            ("sample", "out_sample"),
            ("debug.time_proj", "debug.time_proj"),
            ("debug.up_blocks.0", "debug.up_blocks.0"),
        ] {
            let (shape, ours) = ref_floats(&written, name).unwrap();
            let (ref_shape, expected) = ref_floats(&reference(model), ref_name).unwrap();
            assert_eq!(shape, ref_shape, "{name}");
            let (_, rel) = compare(&format!("{model} forward {name}"), &ours, &expected);
            assert!(rel <= TOLERANCE, "{model} {name}: rel error {rel:.3e}");
        }
    }
}

#[test]
fn forward_command_bf16_is_close() {
    let model = "tiny-sd2";
    let refs_path = fixture(model).join("reference/unet.safetensors");
    let out = scratch("tiny-sd2-unet-bf16.safetensors");
    let run = forward("unet", model, &refs_path, &out, &["--dtype", "bf16"]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let (_, ours) = ref_floats(&TensorFile::open(&out).unwrap(), "sample").unwrap();
    let (_, expected) = ref_floats(&reference(model), "out_sample").unwrap();
    let (_, rel) = compare("tiny-sd2 forward bf16", &ours, &expected);
    // bf16 keeps 8 bits of mantissa through ~20 layers: a few 1e-2.
    assert!(rel <= 5e-2, "bf16 rel error {rel:.3e}");
}

#[test]
fn forward_command_names_a_missing_or_misshaped_input() {
    let refs = reference("tiny-sd1");
    let bad = scratch("bad-inputs.safetensors");
    let out = scratch("never-written.safetensors");
    let _ = std::fs::remove_file(&out);
    let write = |tensors: &[(&str, Vec<usize>)]| {
        let tensors: Vec<F32Tensor> = tensors
            .iter()
            .map(|(name, shape)| match ref_floats(&refs, name) {
                Some((s, values)) if &s == shape => F32Tensor {
                    name: name.to_string(),
                    shape: s,
                    values,
                },
                _ => F32Tensor {
                    name: name.to_string(),
                    values: vec![0.5; shape.iter().product()],
                    shape: shape.clone(),
                },
            })
            .collect();
        write_f32_atomic(&bad, &tensors, None).unwrap();
    };
    let error_of = |run: std::process::Output| {
        assert!(!run.status.success(), "expected a failure");
        let stderr = String::from_utf8_lossy(&run.stderr).trim().to_string();
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        stderr
    };
    let ctx = ("encoder_hidden_states", vec![2, 77, 16]);
    write(&[("sample", vec![2, 4, 8, 8]), ctx.clone()]);
    let err = error_of(forward("unet", "tiny-sd1", &bad, &out, &[]));
    assert!(err.contains("no tensor timestep"), "{err}");
    write(&[
        ("sample", vec![2, 4, 7, 7]),
        ("timestep", vec![2]),
        ctx.clone(),
    ]);
    let err = error_of(forward("unet", "tiny-sd1", &bad, &out, &[]));
    assert!(
        err.contains("sample") && err.contains("multiples of 2"),
        "{err}"
    );
    write(&[
        ("sample", vec![2, 4, 8, 8]),
        ("timestep", vec![3]),
        ctx.clone(),
    ]);
    let err = error_of(forward("unet", "tiny-sd1", &bad, &out, &[]));
    assert!(err.contains("timestep [2] or a scalar"), "{err}");
    write(&[
        ("sample", vec![2, 4, 8, 8]),
        ("timestep", vec![]),
        ("encoder_hidden_states", vec![2, 77, 40]),
    ]);
    let err = error_of(forward("unet", "tiny-sd1", &bad, &out, &[]));
    assert!(err.contains("encoder_hidden_states [2, L, 16]"), "{err}");
    assert!(!out.exists());
    // A scalar timestep is broadcast to the batch.
    write(&[("sample", vec![2, 4, 8, 8]), ("timestep", vec![]), ctx]);
    let run = forward("unet", "tiny-sd1", &bad, &out, &[]);
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
}
