//! Every VJP rule against central finite differences of the printed program, run in f64
//! through the CPU plugin. Tolerance: max |AD - FD| / max |FD| <= 1e-6 per case. Run with
//! `--nocapture` to see the error tables.

mod common;

use common::fd::{case, check};
use common::*;
use std::cell::Cell;
use std::rc::Rc;
use xla_graphs::ops::convolution::input_gradient_with_reversed_kernel;
use xla_graphs::{
    value_and_grad, ComparisonDirection as Dir, ConvDimensionNumbers, Convolution, DType,
    DotDimensionNumbers, Gather, GatherDimensionNumbers, Graph, Scatter, ScatterDimensionNumbers,
    Shape, Tensor, UnaryOp,
};

fn shifted(a: Array, by: f64, scale: f64) -> Array {
    Array::f64(&a.dims, a.data.iter().map(|v| by + scale * v).collect())
}

#[test]
fn elementwise_rules() {
    let x = || rand(&[3, 4], 41);
    let pos = || rand_pos(&[3, 4], 42);
    let y = || rand(&[3, 4], 43);
    let mut cases = Vec::new();
    for (op, positive) in [
        (UnaryOp::Negate, false),
        (UnaryOp::Exponential, false),
        (UnaryOp::Log, true),
        (UnaryOp::Tanh, false),
        (UnaryOp::Logistic, false),
        (UnaryOp::Sqrt, true),
        (UnaryOp::Rsqrt, true),
        (UnaryOp::Erf, false),
        (UnaryOp::Sine, false),
        (UnaryOp::Cosine, false),
        (UnaryOp::Abs, false),
        (UnaryOp::Sign, false),
        (UnaryOp::Floor, false),
    ] {
        let input = if positive {
            pos()
        } else {
            shifted(x(), 0.0, 1.3)
        };
        cases.push(case(op.name(), vec![input], &[0], move |_, p| {
            p[0].unary(op)
        }));
    }
    cases.extend([
        case("stablehlo.add", vec![x(), y()], &[0, 1], |_, p| {
            p[0].add(&p[1])
        }),
        case("stablehlo.subtract", vec![x(), y()], &[0, 1], |_, p| {
            p[0].subtract(&p[1])
        }),
        case("stablehlo.multiply", vec![x(), y()], &[0, 1], |_, p| {
            p[0].multiply(&p[1])
        }),
        // One side only: the other side's cotangent is never built.
        case(
            "stablehlo.multiply (lhs only)",
            vec![x(), y()],
            &[0],
            |_, p| p[0].multiply(&p[1]),
        ),
        case(
            "stablehlo.power (exponent only)",
            vec![pos(), y()],
            &[1],
            |_, p| p[0].power(&p[1]),
        ),
        case("stablehlo.divide", vec![x(), pos()], &[0, 1], |_, p| {
            p[0].divide(&p[1])
        }),
        case("stablehlo.maximum", vec![x(), y()], &[0, 1], |_, p| {
            p[0].maximum(&p[1])
        }),
        case("stablehlo.minimum", vec![x(), y()], &[0, 1], |_, p| {
            p[0].minimum(&p[1])
        }),
        case("stablehlo.power", vec![pos(), y()], &[0, 1], |_, p| {
            p[0].power(&p[1])
        }),
        case(
            "stablehlo.remainder",
            vec![shifted(x(), 2.5, 0.2), shifted(y(), 1.0, 0.1)],
            &[0, 1],
            |_, p| p[0].remainder(&p[1]),
        ),
        case("stablehlo.select", vec![x(), y()], &[0, 1], |_, p| {
            p[0].compare(&p[1], Dir::Gt)?
                .select(&p[0].square()?, &p[1].exponential()?)
        }),
        case(
            "stablehlo.clamp (scalar bounds)",
            vec![
                x(),
                Array::f64(&[], vec![-0.35]),
                Array::f64(&[], vec![0.45]),
            ],
            &[0, 1, 2],
            |_, p| p[0].clamp(&p[1], &p[2]),
        ),
        case(
            "stablehlo.clamp (array bounds)",
            vec![x(), shifted(y(), -0.05, 0.3), shifted(pos(), 0.2, 0.3)],
            &[0, 1, 2],
            |_, p| p[0].clamp(&p[1], &p[2]),
        ),
        case("stablehlo.convert (f64 -> f64)", vec![x()], &[0], |_, p| {
            p[0].convert(DType::F64)?.tanh()
        }),
    ]);
    check("elementwise VJP rules", cases);
}

#[test]
fn layout_and_reduction_rules() {
    let a = || rand(&[2, 3, 4], 51);
    let cases = vec![
        case("stablehlo.reshape", vec![a()], &[0], |_, p| {
            p[0].reshape(&[6, 4])?.tanh()
        }),
        case("stablehlo.transpose", vec![a()], &[0], |_, p| {
            p[0].transpose(&[2, 0, 1])
        }),
        case(
            "stablehlo.broadcast_in_dim",
            vec![rand(&[3, 1], 52)],
            &[0],
            |_, p| p[0].broadcast_in_dim(&[4, 2, 3, 5], &[2, 0]),
        ),
        case(
            "stablehlo.broadcast_in_dim (permuted)",
            vec![rand(&[3, 2], 53)],
            &[0],
            |_, p| p[0].broadcast_in_dim(&[2, 4, 3], &[2, 0]),
        ),
        case("stablehlo.reverse", vec![a()], &[0], |_, p| {
            p[0].reverse(&[0, 2])
        }),
        case(
            "stablehlo.slice (strided)",
            vec![rand(&[5, 7], 54)],
            &[0],
            |_, p| p[0].slice(&[1, 0], &[5, 7], &[2, 3]),
        ),
        case(
            "stablehlo.pad (negative, interior)",
            vec![rand(&[5, 7], 55), Array::f64(&[], vec![0.3])],
            &[0, 1],
            |_, p| p[0].pad(&p[1], &[1, -2], &[2, 1], &[1, 0]),
        ),
        case(
            "stablehlo.concatenate",
            vec![rand(&[2, 3], 56), rand(&[2, 2], 57)],
            &[0, 1],
            |g, p| g.concatenate(&[p[0].clone(), p[1].clone(), p[0].clone()], 1),
        ),
        case(
            "stablehlo.dynamic_slice",
            vec![rand(&[4, 6], 58)],
            &[0],
            |g, p| {
                let (i, j) = (g.scalar(3.0, DType::I32)?, g.scalar(5.0, DType::I32)?);
                p[0].dynamic_slice(&[i, j], &[2, 3])
            },
        ),
        case(
            "stablehlo.dynamic_update_slice",
            vec![rand(&[4, 6], 59), rand(&[2, 3], 60)],
            &[0, 1],
            |g, p| {
                let (i, j) = (g.scalar(1.0, DType::I64)?, g.scalar(2.0, DType::I64)?);
                p[0].dynamic_update_slice(&p[1], &[i, j])?.tanh()
            },
        ),
        case("stablehlo.reduce (sum)", vec![a()], &[0], |_, p| {
            p[0].reduce_sum(&[0, 2])
        }),
        case("stablehlo.reduce (max)", vec![a()], &[0], |_, p| {
            p[0].reduce_max(&[1])
        }),
        case("stablehlo.reduce (min)", vec![a()], &[0], |_, p| {
            p[0].reduce_min(&[2])
        }),
        case(
            "stablehlo.optimization_barrier",
            vec![a(), a()],
            &[0, 1],
            |g, p| {
                let o = g.optimization_barrier(&[p[0].tanh()?, p[1].clone()])?;
                o[0].multiply(&o[1])
            },
        ),
        case(
            "stablehlo.all_reduce (1 replica)",
            vec![a()],
            &[0],
            |_, p| p[0].all_reduce_sum(&[vec![0]]),
        ),
    ];
    check("layout and reduction VJP rules", cases);
}

fn conv(dims: ConvDimensionNumbers, f: impl FnOnce(&mut Convolution)) -> Convolution {
    let mut c = Convolution::new(dims);
    f(&mut c);
    c
}

#[test]
fn contraction_and_indexing_rules() {
    let nchw = ConvDimensionNumbers::nchw_oihw(2);
    let conv_case = |name: &'static str, lhs: &[i64], rhs: &[i64], c: Convolution| {
        case(
            name,
            vec![rand(lhs, 61), rand(rhs, 62)],
            &[0, 1],
            move |_, p| p[0].convolution(&p[1], c.clone()),
        )
    };
    let cases = vec![
        case(
            "dot_general (batch dims)",
            vec![rand(&[2, 3, 4], 63), rand(&[2, 4, 5], 64)],
            &[0, 1],
            |_, p| p[0].matmul(&p[1]),
        ),
        case(
            "dot_general (mixed batch/contracting)",
            vec![rand(&[3, 2, 2, 4], 65), rand(&[4, 3, 2, 2], 66)],
            &[0, 1],
            |_, p| {
                let d = DotDimensionNumbers {
                    lhs_batching_dimensions: vec![1],
                    rhs_batching_dimensions: vec![3],
                    lhs_contracting_dimensions: vec![3, 2],
                    rhs_contracting_dimensions: vec![0, 2],
                };
                p[0].dot_general(&p[1], d)
            },
        ),
        conv_case(
            "convolution (stride 2, padding, groups 2)",
            &[2, 4, 7, 6],
            &[6, 2, 3, 3],
            conv(nchw.clone(), |c| {
                c.window_strides = vec![2, 2];
                c.padding = vec![(1, 2), (1, 0)];
                c.feature_group_count = 2;
            }),
        ),
        conv_case(
            "convolution (lhs+rhs dilation)",
            &[1, 2, 5, 5],
            &[3, 2, 2, 3],
            conv(nchw.clone(), |c| {
                c.lhs_dilation = vec![2, 1];
                c.rhs_dilation = vec![1, 2];
                c.padding = vec![(1, 1), (2, 0)];
            }),
        ),
        conv_case(
            "convolution (batch groups 2)",
            &[4, 3, 5, 4],
            &[4, 3, 2, 2],
            conv(nchw, |c| c.batch_group_count = 2),
        ),
        conv_case(
            "convolution (nhwc, stride 2)",
            &[2, 5, 6, 3],
            &[3, 3, 3, 4],
            conv(ConvDimensionNumbers::nhwc_hwio(2), |c| {
                c.window_strides = vec![2, 2];
                c.padding = vec![(1, 1), (0, 1)];
            }),
        ),
        conv_case(
            "convolution (nchw activations, hwio kernel, stride 2)",
            &[2, 3, 6, 5],
            &[3, 3, 3, 4],
            conv(ConvDimensionNumbers::nchw_hwio(2), |c| {
                c.window_strides = vec![2, 2];
                c.padding = vec![(1, 1), (0, 1)];
            }),
        ),
        case(
            "gather (repeated rows)",
            vec![rand(&[5, 3], 67)],
            &[0],
            |g, p| p[0].take_rows(&g.constant_vec(&[2, 3], vec![4i32, 0, 4, 2, 4, 1])?),
        ),
        case(
            "gather (clamped 2-d windows)",
            vec![rand(&[4, 5], 68)],
            &[0],
            |g, p| {
                let starts = g.constant_vec(&[3, 2], vec![1i64, 0, 4, 4, 1, 0])?;
                let attrs = Gather {
                    dims: GatherDimensionNumbers {
                        offset_dims: vec![1, 2],
                        start_index_map: vec![0, 1],
                        index_vector_dim: 1,
                        ..Default::default()
                    },
                    slice_sizes: vec![2, 3],
                    indices_are_sorted: false,
                };
                p[0].gather(&starts, attrs)
            },
        ),
        case(
            "scatter (add, repeated indices)",
            vec![rand(&[4, 3], 69), rand(&[5, 3], 70)],
            &[0, 1],
            |g, p| {
                let ids = g.constant_vec(&[5, 1], vec![2i32, 0, 2, 3, 2])?;
                let attrs = Scatter {
                    dims: ScatterDimensionNumbers {
                        update_window_dims: vec![1],
                        inserted_window_dims: vec![0],
                        scatter_dims_to_operand_dims: vec![0],
                        index_vector_dim: 1,
                        ..Default::default()
                    },
                    ..Default::default()
                };
                p[0].scatter_add(&ids, &p[1].square()?, attrs)?.tanh()
            },
        ),
    ];
    check("contraction and indexing VJP rules", cases);
}

/// `Graph::set_custom_vjp`: the cotangent of `x` in `tanh(x * w)` comes from the rule attached
/// to it (here `ct * r`, `r` a residual) instead of the multiply's rule, while `w`'s still comes
/// from the op; the rule runs only when `x` is differentiated. Against the closed forms in f64
/// (1e-12).
#[test]
fn a_custom_vjp_rule_replaces_the_op_rule_for_its_operand() {
    let (x, w, r) = (rand(&[3, 4], 81), rand(&[3, 4], 82), rand(&[3, 4], 83));
    let slope: Vec<f64> = x
        .data
        .iter()
        .zip(&w.data)
        .map(|(a, b)| 1.0 - (a * b).tanh().powi(2))
        .collect();
    let want_x: Vec<f64> = slope.iter().zip(&r.data).map(|(s, r)| s * r).collect();
    let want_w: Vec<f64> = slope.iter().zip(&x.data).map(|(s, x)| s * x).collect();
    for wrt in [vec![0], vec![1], vec![0, 1]] {
        let g = Graph::new();
        let p: Vec<Tensor> = [("x", &x), ("w", &w), ("r", &r)]
            .iter()
            .map(|(name, a)| g.parameter(*name, a.shape()).unwrap())
            .collect();
        let y = p[0].multiply(&p[1]).unwrap();
        let calls = Rc::new(Cell::new(0));
        let counter = Rc::clone(&calls);
        g.set_custom_vjp(&y, 0, &[&p[2]], move |ct, residuals| {
            counter.set(counter.get() + 1);
            ct.multiply(&residuals[0])
        })
        .unwrap();
        let loss = y.tanh().unwrap().sum_all().unwrap();
        let targets: Vec<Tensor> = wrt.iter().map(|&i| p[i].clone()).collect();
        let (_, grads) = value_and_grad(&loss, &targets).unwrap();
        let runs = usize::from(wrt.contains(&0));
        assert_eq!(calls.get(), runs, "rule runs for wrt {wrt:?}");
        let outputs: Vec<&Tensor> = grads.iter().collect();
        let got = run(&g, &outputs, &[x.clone(), w.clone(), r.clone()]);
        for (&i, got) in wrt.iter().zip(&got) {
            let (name, want) = if i == 0 {
                ("x", &want_x)
            } else {
                ("w", &want_w)
            };
            assert_close(&format!("d/d{name}, wrt {wrt:?}"), got, want, 1e-12);
        }
    }
}

/// `input_gradient_with_reversed_kernel` as a custom rule (what `conv2d` attaches under
/// `Params::with_reversed_kernels`): the input gradient of a convolution convolves with a
/// precomputed reversed, feature-exchanged copy of its kernel (no `reverse` in the program) and
/// equals the gradient the op's own rule builds from the kernel (f64, 1e-12).
#[test]
fn a_recorded_reversed_kernel_gives_the_same_input_gradient() {
    let (xd, kd) = ([2i64, 3, 6, 5], [3i64, 2, 3, 4]); // NCHW input, HWIO kernel [kh, kw, I, O]
    let x = rand(&xd, 71);
    let k = rand(&kd, 72);
    // reversed[h, w, o, i] = k[kh-1-h, kw-1-w, i, o], laid out [kh, kw, O, I].
    let rd = [kd[0], kd[1], kd[3], kd[2]];
    let mut rv = vec![0.0; k.data.len()];
    for h in 0..kd[0] {
        for w in 0..kd[1] {
            for o in 0..kd[3] {
                for i in 0..kd[2] {
                    let src = [kd[0] - 1 - h, kd[1] - 1 - w, i, o];
                    rv[ravel(&[h, w, o, i], &rd)] = k.data[ravel(&src, &kd)];
                }
            }
        }
    }
    let reversed = Array::f64(&rd, rv);
    let attrs = conv(ConvDimensionNumbers::nchw_hwio(2), |c| {
        c.window_strides = vec![2, 1];
        c.padding = vec![(1, 1), (0, 2)];
        c.rhs_dilation = vec![1, 2];
    });
    // The loss of `x` through the convolution, its kernel's reversed copy of type `r_shape`
    // given to a custom rule when `custom`.
    let traced = |custom: bool, r_shape: Shape| {
        let g = Graph::new();
        let xp = g.parameter("x", x.shape()).unwrap();
        let kp = g.parameter("k", k.shape()).unwrap();
        let rp = g.parameter("r", r_shape).unwrap();
        let y = xp.convolution(&kp, attrs.clone()).unwrap();
        if custom {
            let (input, kernel, c) = (xp.shape(), kp.shape(), attrs.clone());
            g.set_custom_vjp(&y, 0, &[&rp], move |ct, residuals| {
                input_gradient_with_reversed_kernel(ct, &input, &kernel, &residuals[0], &c)
            })
            .unwrap();
        }
        let loss = y.multiply(&y).unwrap().reduce_sum(&[0, 1, 2, 3]).unwrap();
        (g, loss, xp, rp)
    };
    let grad = |custom: bool| {
        let (g, loss, xp, rp) = traced(custom, reversed.shape());
        let (_, grads) = value_and_grad(&loss, &[xp]).unwrap();
        let text = g.to_stablehlo(&[&grads[0], &rp]).unwrap();
        assert_eq!(
            text.contains("stablehlo.reverse"),
            !custom,
            "custom {custom}"
        );
        let exe = compile(&text, 1);
        execute(&exe, &[vec![x.clone(), k.clone(), reversed.clone()]]).remove(0)
    };
    let want = grad(false).remove(0);
    assert_close(
        "input gradient with the reversed kernel",
        &grad(true)[0],
        &want.data,
        1e-12,
    );
    // A tensor that cannot be the kernel's reversed copy is refused when the gradient is built.
    let (_, loss, xp, _) = traced(true, Shape::new(DType::F64, &[3, 3, 4, 3]));
    assert!(value_and_grad(&loss, &[xp]).is_err());
}
