//! Whole-program features through the CPU plugin: all_reduce and replica_id over 2 replicas,
//! optimization_barrier with several results, donated and sharding-annotated arguments.

mod common;

use common::*;
use xla_graphs::{
    ArgAttrs, ConvDimensionNumbers, Convolution, DType, DotDimensionNumbers, DotGeneral, Graph,
    ModuleOptions, Precision, Shape,
};

#[test]
fn all_reduce_sums_over_replicas_and_replica_id_tells_them_apart() {
    let g = Graph::new();
    let x = g.parameter("x", Shape::new(DType::F32, &[3])).unwrap();
    let id = g
        .replica_id()
        .unwrap()
        .convert(DType::F32)
        .unwrap()
        .broadcast_in_dim(&[3], &[])
        .unwrap();
    let summed = x.all_reduce_sum(&[vec![0, 1]]).unwrap();
    let opts = ModuleOptions {
        num_replicas: Some(2),
        num_partitions: Some(1),
        ..Default::default()
    };
    let text = g.to_stablehlo_with(&[&summed, &id], &opts).unwrap();
    assert!(
        text.contains("replica_groups = dense<[[0, 1]]> : tensor<1x2xi64>"),
        "{text}"
    );
    let exe = compile(&text, 2);
    let a = Array::new(DType::F32, &[3], vec![1.0, 2.0, 3.0]);
    let b = Array::new(DType::F32, &[3], vec![10.0, 20.0, 30.0]);
    let out = execute(&exe, &[vec![a], vec![b]]);
    for (d, outs) in out.iter().enumerate() {
        assert_eq!(outs[0].data, vec![11.0, 22.0, 33.0], "replica {d}");
        assert_eq!(outs[1].data, vec![d as f64; 3], "replica {d}");
    }
}

#[test]
fn optimization_barrier_passes_every_operand_through() {
    let g = Graph::new();
    let x = g.parameter("x", Shape::new(DType::F64, &[2])).unwrap();
    let k = g.parameter("k", Shape::new(DType::U32, &[])).unwrap();
    let outs = g
        .optimization_barrier(&[x.exponential().unwrap(), k.clone()])
        .unwrap();
    let y = outs[0].add_scalar(1.0).unwrap();
    let text = g.to_stablehlo(&[&y, &outs[1]]).unwrap();
    assert!(
        text.contains(":2 = \"stablehlo.optimization_barrier\""),
        "{text}"
    );
    let got = run(
        &g,
        &[&y, &outs[1]],
        &[
            Array::f64(&[2], vec![0.5, -1.0]),
            Array::new(DType::U32, &[], vec![7.0]),
        ],
    );
    assert_close(
        "barrier",
        &got[0],
        &[0.5f64.exp() + 1.0, (-1.0f64).exp() + 1.0],
        1e-15,
    );
    assert_eq!(got[1].data, vec![7.0]);
}

#[test]
fn donated_and_sharded_arguments_compile_and_run() {
    let g = Graph::new();
    let attrs = ArgAttrs {
        aliasing_output: Some(0),
        sharding: Some("{replicated}".into()),
    };
    let state = g
        .parameter_with("state", Shape::new(DType::F32, &[4]), attrs)
        .unwrap();
    let step = g.parameter("step", Shape::new(DType::F32, &[4])).unwrap();
    let next = state.add(&step).unwrap();
    let text = g.to_stablehlo(&[&next]).unwrap();
    assert!(
        text.contains(
            "%arg0: tensor<4xf32> {mhlo.sharding = \"{replicated}\", tf.aliasing_output = 0 : i32}"
        ),
        "{text}"
    );
    let exe = compile(&text, 1);
    let s = Array::new(DType::F32, &[4], vec![1.0, 2.0, 3.0, 4.0]);
    let d = Array::new(DType::F32, &[4], vec![0.5; 4]);
    let got = execute(&exe, &[vec![s, d]]).remove(0);
    assert_eq!(got[0].data, vec![1.5, 2.5, 3.5, 4.5]);
}

#[test]
fn precision_config_and_hwio_convolution_run() {
    let g = Graph::new();
    let a = g.parameter("a", Shape::new(DType::F32, &[2, 3])).unwrap();
    let attrs = DotGeneral {
        dims: DotDimensionNumbers::matmul(0),
        precision: Precision::Highest,
        ..Default::default()
    };
    let d = a
        .dot_general_with(&a.transpose(&[1, 0]).unwrap(), attrs)
        .unwrap();
    let img = g
        .parameter("img", Shape::new(DType::F32, &[1, 4, 3, 3]))
        .unwrap();
    let k = g
        .parameter("k", Shape::new(DType::F32, &[1, 1, 2, 2]))
        .unwrap();
    // Input NCHW, kernel HWIO, output NHWC: every operand in its own layout.
    let dims = ConvDimensionNumbers {
        input_batch_dimension: 0,
        input_feature_dimension: 1,
        input_spatial_dimensions: vec![2, 3],
        kernel_input_feature_dimension: 2,
        kernel_output_feature_dimension: 3,
        kernel_spatial_dimensions: vec![0, 1],
        output_batch_dimension: 0,
        output_feature_dimension: 3,
        output_spatial_dimensions: vec![1, 2],
    };
    let conv = Convolution {
        feature_group_count: 2,
        precision: Precision::Highest,
        ..Convolution::new(dims)
    };
    let c = img.convolution(&k, conv).unwrap();
    let av = Array::new(DType::F32, &[2, 3], vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
    let iv = Array::new(
        DType::F32,
        &[1, 4, 3, 3],
        (0..36).map(|v| v as f64).collect(),
    );
    let kv = Array::new(DType::F32, &[1, 1, 2, 2], vec![1.0, 10.0, 100.0, 1000.0]);
    let got = run(&g, &[&d, &c], &[av, iv, kv]);
    assert_eq!(got[0].data, vec![14.0, 32.0, 32.0, 77.0]);
    // 1x1 kernel, groups of 2 channels: out[o] = sum over the group's channels of k[i, o] x.
    assert_eq!(got[1].dims, vec![1, 3, 3, 2]);
    let want: Vec<f64> = (0..9)
        .flat_map(|p| {
            let x = |c: usize| (c * 9 + p) as f64;
            [x(0) + 100.0 * x(1), 1000.0 * x(3) + 10.0 * x(2)]
        })
        .collect();
    assert_eq!(got[1].data, want);
}
