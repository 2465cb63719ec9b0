//! The nn composites' gradients (built from the primitives' rules) against central finite
//! differences in f64 through the CPU plugin, tolerance 1e-6 relative; plus the dtype
//! handling of convert and of bf16 x bf16 -> f32 dot_general in the backward pass; and the
//! attention core's values against an f64 reference.

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
                rand(&[2, 3, 2, 4], 92),
                rand(&[2, 5, 2, 4], 93),
                rand(&[2, 5, 2, 3], 94),
            ],
            &[0, 1, 2],
            |_, p| nn::multi_head_attention(&p[0], &p[1], &p[2], &nn::AttentionOptions::default()),
        ),
        case(
            "attention (causal, additive mask)",
            vec![
                rand(&[1, 4, 2, 4], 95),
                rand(&[1, 4, 2, 4], 96),
                rand(&[1, 4, 2, 3], 97),
                rand(&[4, 4], 98),
            ],
            &[0, 1, 2, 3],
            |_, p| {
                let o = nn::AttentionOptions {
                    causal: true,
                    scale: Some(0.7),
                    mask: Some(p[3].clone()),
                    ..nn::AttentionOptions::default()
                };
                nn::multi_head_attention(&p[0], &p[1], &p[2], &o)
            },
        ),
        case(
            "attention (scaled q, normalised after v)",
            vec![
                rand(&[2, 3, 2, 4], 92),
                rand(&[2, 5, 2, 4], 93),
                rand(&[2, 5, 2, 3], 94),
            ],
            &[0, 1, 2],
            |_, p| nn::multi_head_attention(&p[0], &p[1], &p[2], &unet_order()),
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

/// The UNet's and VAE's order, with `upcast_attention` on; the default order is CLIP's.
fn unet_order() -> nn::AttentionOptions {
    nn::AttentionOptions {
        upcast: true,
        scale_at: nn::ScaleAt::Queries,
        normalize: nn::Normalize::AfterValues,
        ..nn::AttentionOptions::default()
    }
}

/// `softmax(q k^T * scale + mask) v` in f64 over `[B, L, H, d]` heads; `mask` is `[Lq, Lk]`.
fn attention_reference(
    q: &Array,
    k: &Array,
    v: &Array,
    scale: f64,
    mask: Option<&Array>,
    causal: bool,
) -> Vec<f64> {
    let (b, lq, h, d) = (q.dims[0], q.dims[1], q.dims[2], q.dims[3]);
    let (lk, dv) = (k.dims[1], v.dims[3]);
    let mut out = vec![0.0; (b * lq * h * dv) as usize];
    for (bi, i, hi) in
        (0..b).flat_map(|bi| (0..lq).flat_map(move |i| (0..h).map(move |hi| (bi, i, hi))))
    {
        let scores: Vec<f64> = (0..lk)
            .map(|j| {
                let dot: f64 = (0..d)
                    .map(|c| {
                        q.data[ravel(&[bi, i, hi, c], &q.dims)]
                            * k.data[ravel(&[bi, j, hi, c], &k.dims)]
                    })
                    .sum();
                let m = mask.map_or(0.0, |m| m.data[ravel(&[i, j], &m.dims)]);
                if causal && j > i {
                    f64::NEG_INFINITY
                } else {
                    dot * scale + m
                }
            })
            .collect();
        let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for c in 0..dv {
            out[ravel(&[bi, i, hi, c], &[b, lq, h, dv])] = (0..lk)
                .map(|j| e[j as usize] / sum * v.data[ravel(&[bi, j, hi, c], &v.dims)])
                .sum();
        }
    }
    out
}

/// The attention core's values, in each order and with the masks, against the f64
/// reference: exactly in f64, to bf16 rounding in bf16 (scores in f32 there).
#[test]
fn attention_matches_the_reference() {
    let round = |a: Array, dtype: DType| {
        let data = match dtype {
            DType::BF16 => a
                .data
                .iter()
                .map(|&v| half::bf16::from_f64(v).to_f64())
                .collect(),
            _ => a.data.clone(),
        };
        Array::new(dtype, &a.dims, data)
    };
    let causal = nn::AttentionOptions {
        causal: true,
        scale: Some(0.7),
        ..nn::AttentionOptions::default()
    };
    let variants = [
        ("default", nn::AttentionOptions::default(), false),
        ("unet order", unet_order(), false),
        ("causal, mask", causal.clone(), true),
        (
            "causal, mask, unet order",
            nn::AttentionOptions {
                scale_at: nn::ScaleAt::Queries,
                normalize: nn::Normalize::AfterValues,
                ..causal
            },
            true,
        ),
    ];
    for dtype in [DType::F64, DType::BF16] {
        let q = round(rand(&[2, 4, 3, 4], 111), dtype);
        let k = round(rand(&[2, 4, 3, 4], 112), dtype);
        let v = round(rand(&[2, 4, 3, 5], 113), dtype);
        let mask = round(rand(&[4, 4], 114), dtype);
        for (name, o, masked) in &variants {
            let g = Graph::new();
            let [qt, kt, vt, mt] = [("q", &q), ("k", &k), ("v", &v), ("mask", &mask)]
                .map(|(n, a)| g.parameter(n, a.shape()).unwrap());
            let o = nn::AttentionOptions {
                mask: masked.then_some(mt),
                ..o.clone()
            };
            let y = nn::multi_head_attention(&qt, &kt, &vt, &o).unwrap();
            assert_eq!(y.shape(), Shape::new(dtype, &[2, 4, 3, 5]), "{name}");
            let got = run(&g, &[&y], &[q.clone(), k.clone(), v.clone(), mask.clone()]);
            let scale = o.scale.unwrap_or(0.5);
            let want = attention_reference(&q, &k, &v, scale, masked.then_some(&mask), o.causal);
            let tol = if dtype == DType::BF16 { 1e-2 } else { 1e-12 };
            assert_close(
                &format!("attention {name} ({dtype:?})"),
                &got[0],
                &want,
                tol,
            );
        }
    }
}
