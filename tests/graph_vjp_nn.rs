//! The nn composites' gradients (built from the primitives' rules) against central finite
//! differences in f64 through the CPU plugin, tolerance 1e-6 relative; plus the dtype
//! handling of convert and of bf16 x bf16 -> f32 dot_general in the backward pass.

mod common;

use common::fd::{case, check};
use common::*;
use xla_graphs::{nn, value_and_grad, DType, DotDimensionNumbers, DotGeneral, Graph, Shape};

#[test]
fn composite_layers() {
    let x = || rand(&[2, 3, 5], 81);
    let opts = nn::Conv2dOptions {
        stride: [2, 1],
        padding: [1, 1],
        dilation: [1, 1],
        groups: 2,
    };
    let cases = vec![
        case("softmax", vec![x()], &[0], |_, p| nn::softmax(&p[0], 2)),
        case(
            "layer_norm (x, weight, bias)",
            vec![x(), rand(&[5], 82), rand(&[5], 83)],
            &[0, 1, 2],
            |_, p| nn::layer_norm(&p[0], Some(&p[1]), Some(&p[2]), 1e-5),
        ),
        case(
            "group_norm (x, weight, bias)",
            vec![rand(&[2, 4, 3, 2], 84), rand(&[4], 85), rand(&[4], 86)],
            &[0, 1, 2],
            |_, p| nn::group_norm(&p[0], 2, Some(&p[1]), Some(&p[2]), 1e-5),
        ),
        case("gelu (erf)", vec![x()], &[0], |_, p| nn::gelu(&p[0])),
        case("gelu (tanh)", vec![x()], &[0], |_, p| nn::gelu_tanh(&p[0])),
        case("quick_gelu", vec![x()], &[0], |_, p| nn::quick_gelu(&p[0])),
        case("silu", vec![x()], &[0], |_, p| nn::silu(&p[0])),
        case("mean, variance", vec![x()], &[0], |_, p| {
            nn::variance(&p[0], &[0, 2])?.multiply(&nn::mean(&p[0], &[0, 2])?)
        }),
        case(
            "linear (x, weight, bias)",
            vec![x(), rand(&[4, 5], 87), rand(&[4], 88)],
            &[0, 1, 2],
            |_, p| nn::linear(&p[0], &p[1], Some(&p[2])),
        ),
        case(
            "conv2d (stride 2, groups 2, bias)",
            vec![
                rand(&[1, 4, 5, 4], 89),
                rand(&[4, 2, 3, 3], 90),
                rand(&[4], 91),
            ],
            &[0, 1, 2],
            move |_, p| nn::conv2d(&p[0], &p[1], Some(&p[2]), opts),
        ),
        case(
            "attention (q, k, v)",
            vec![
                rand(&[2, 3, 4], 92),
                rand(&[2, 5, 4], 93),
                rand(&[2, 5, 3], 94),
            ],
            &[0, 1, 2],
            |_, p| {
                nn::scaled_dot_product_attention(
                    &p[0],
                    &p[1],
                    &p[2],
                    &nn::AttentionOptions::default(),
                )
            },
        ),
        case(
            "attention (causal, additive mask)",
            vec![
                rand(&[2, 4, 4], 95),
                rand(&[2, 4, 4], 96),
                rand(&[2, 4, 3], 97),
                rand(&[4, 4], 98),
            ],
            &[0, 1, 2, 3],
            |_, p| {
                let o = nn::AttentionOptions {
                    causal: true,
                    scale: Some(0.7),
                    mask: Some(p[3].clone()),
                };
                nn::scaled_dot_product_attention(&p[0], &p[1], &p[2], &o)
            },
        ),
        case(
            "upsample_nearest_2x",
            vec![rand(&[1, 2, 3, 2], 99)],
            &[0],
            |_, p| nn::upsample_nearest_2x(&p[0]),
        ),
    ];
    check("composite layers (through their primitives' rules)", cases);
}

#[test]
fn convert_sends_the_cotangent_back_in_the_operand_dtype() {
    let g = Graph::new();
    let x = g.parameter("x", Shape::new(DType::F64, &[4])).unwrap();
    let r = rand(&[4], 101);
    let proj = g.constant_f64(DType::F32, &[4], &r.data).unwrap();
    let loss = x
        .convert(DType::F32)
        .unwrap()
        .multiply(&proj)
        .unwrap()
        .sum_all()
        .unwrap();
    let (_, grads) = value_and_grad(&loss, &[x]).unwrap();
    assert_eq!(grads[0].dtype(), DType::F64);
    let got = run(&g, &[&grads[0]], &[rand(&[4], 102)]);
    let want: Vec<f64> = r.data.iter().map(|&v| v as f32 as f64).collect();
    assert_close("convert backward", &got[0], &want, 0.0);
}

/// bf16 operands with an f32 result: the backward product runs on bf16 operands with f32
/// accumulation and lands in bf16, so it matches the f64 product to bf16 precision.
#[test]
fn bf16_dot_with_f32_result_differentiates_in_bf16() {
    let to_bf16 = |a: Array| {
        let data = a
            .data
            .iter()
            .map(|&v| half::bf16::from_f64(v).to_f64())
            .collect();
        Array::new(DType::BF16, &a.dims, data)
    };
    let (xa, wa) = (to_bf16(rand(&[3, 8], 103)), to_bf16(rand(&[8, 4], 104)));
    let r = to_bf16(rand(&[3, 4], 105));
    let g = Graph::new();
    let x = g.parameter("x", xa.shape()).unwrap();
    let w = g.parameter("w", wa.shape()).unwrap();
    let attrs = DotGeneral {
        dims: DotDimensionNumbers::matmul(0),
        result_dtype: Some(DType::F32),
        ..Default::default()
    };
    let y = x.dot_general_with(&w, attrs).unwrap();
    let proj = g.constant_f64(DType::F32, &[3, 4], &r.data).unwrap();
    let loss = y.multiply(&proj).unwrap().sum_all().unwrap();
    let (_, grads) = value_and_grad(&loss, &[x]).unwrap();
    assert_eq!(grads[0].dtype(), DType::BF16);
    let got = run(&g, &[&grads[0]], &[xa, wa.clone()]);
    let want: Vec<f64> = (0..3)
        .flat_map(|i| (0..8).map(move |k| (i, k)))
        .map(|(i, k)| (0..4).map(|j| r.data[i * 4 + j] * wa.data[k * 4 + j]).sum())
        .collect();
    assert_close("bf16 dot backward", &got[0], &want, 1e-2);
}
