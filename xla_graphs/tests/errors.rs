//! Shape errors are typed values naming the op, the operand types and the layer path; no
//! user-reachable path panics.

use xla_graphs::{
    nn, value_and_grad, ArgAttrs, ConvDimensionNumbers, Convolution, DType, DotDimensionNumbers,
    Graph, GraphError, Shape,
};

fn f32s(dims: &[i64]) -> Shape {
    Shape::new(DType::F32, dims)
}

#[test]
fn mismatched_add_names_op_shapes_and_layer_path() {
    let g = Graph::new();
    let a = g.parameter("a", f32s(&[2, 3])).unwrap();
    let b = g.parameter("b", f32s(&[3, 2])).unwrap();
    let err = {
        let _unet = g.scope("unet");
        let _block = g.scope("down_blocks.1");
        g.with_scope("attentions.0", || a.add(&b)).unwrap_err()
    };
    let msg = err.to_string();
    for part in [
        "stablehlo.add",
        "unet.down_blocks.1.attentions.0",
        "tensor<2x3xf32>",
        "tensor<3x2xf32>",
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
    match err {
        GraphError::Op {
            op, path, operands, ..
        } => {
            assert_eq!(op, "stablehlo.add");
            assert_eq!(path, "unet.down_blocks.1.attentions.0");
            assert_eq!(operands.0, vec![f32s(&[2, 3]), f32s(&[3, 2])]);
        }
        other => panic!("unexpected {other:?}"),
    }
    // Guards popped the scopes.
    assert_eq!(g.path(), "<root>");
    assert_eq!(a.add(&b).unwrap_err().path(), Some("<root>"));
}

#[test]
fn every_op_family_rejects_bad_operands_with_an_error() {
    let g = Graph::new();
    let x = g.parameter("x", f32s(&[2, 3])).unwrap();
    let i = g.parameter("i", Shape::new(DType::I32, &[2, 3])).unwrap();
    let k = g.parameter("k", f32s(&[4, 5, 3, 3])).unwrap();
    let results = [
        ("stablehlo.log", i.log()),
        ("stablehlo.shift_left", x.shift_left(&x)),
        ("stablehlo.reshape", x.reshape(&[4, 2])),
        ("stablehlo.transpose", x.transpose(&[0, 0])),
        (
            "stablehlo.broadcast_in_dim",
            x.broadcast_in_dim(&[2, 4], &[0, 1]),
        ),
        ("stablehlo.slice", x.slice(&[0, 2], &[2, 1], &[1, 1])),
        ("stablehlo.pad", x.pad(&i, &[0, 0], &[0, 0], &[0, 0])),
        ("stablehlo.reduce", x.reduce_sum(&[2])),
        (
            "stablehlo.dot_general",
            x.dot_general(&x, DotDimensionNumbers::matmul(0)),
        ),
        (
            "stablehlo.convolution",
            x.convolution(&k, Convolution::new(ConvDimensionNumbers::nchw_oihw(2))),
        ),
        ("stablehlo.select", x.select(&x, &x)),
        (
            "stablehlo.add",
            x.convert(DType::F64).and_then(|y| y.add(&x)),
        ),
        (
            "stablehlo.concatenate",
            g.concatenate(&[x.clone(), i.clone()], 0),
        ),
        (
            "stablehlo.all_reduce",
            x.all_reduce_sum(&[vec![0, 1], vec![1, 2]]),
        ),
        ("stablehlo.bitcast_convert", x.bitcast_convert(DType::F64)),
        ("stablehlo.iota", g.iota(f32s(&[2]), 1)),
        (
            "stablehlo.constant",
            g.constant_vec(&[3], vec![1.0f32, 2.0]),
        ),
        ("group_norm", nn::group_norm(&x, 4, None, None, 1e-5)),
    ];
    for (op, r) in results {
        match r {
            Err(e) => assert!(e.to_string().contains(op), "{op}: {e}"),
            Ok(t) => panic!("{op} accepted bad operands and made {t:?}"),
        }
    }
}

#[test]
fn conv_error_reports_both_operands() {
    let g = Graph::new();
    let img = g.parameter("img", f32s(&[1, 4, 8, 8])).unwrap();
    let k = g.parameter("k", f32s(&[6, 3, 3, 3])).unwrap();
    let e = g
        .with_scope("vae.encoder", || {
            nn::conv2d(&img, &k, None, nn::Conv2dOptions::default())
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("vae.encoder") && e.contains("tensor<1x4x8x8xf32>, tensor<6x3x3x3xf32>"),
        "{e}"
    );
    assert!(e.contains("input features 4"), "{e}");
}

#[test]
fn misuse_of_graphs_and_autodiff_is_an_error() {
    let g = Graph::new();
    let other = Graph::new();
    let x = g.parameter("x", f32s(&[2])).unwrap();
    let y = other.parameter("y", f32s(&[2])).unwrap();
    assert!(matches!(
        x.add(&y),
        Err(GraphError::ForeignTensor { index: 1, .. })
    ));
    assert!(
        value_and_grad(&x, std::slice::from_ref(&x)).is_err(),
        "non-scalar loss"
    );
    let n = g.parameter("n", Shape::scalar(DType::I32)).unwrap();
    let loss = x.sum_all().unwrap();
    assert!(value_and_grad(&loss, &[n]).is_err(), "integer wrt");
    assert!(g.to_stablehlo(&[&y]).is_err(), "foreign output");
    let attrs = ArgAttrs {
        aliasing_output: Some(3),
        sharding: None,
    };
    g.set_arg_attrs(&x, attrs).unwrap();
    assert!(
        g.to_stablehlo(&[&loss]).is_err(),
        "donation to a missing output"
    );
}
