//! Every op's forward through the CPU plugin against a Rust f64 reference, on random inputs
//! (never zeros). Floats compare to 1e-13 of the largest reference value unless a line says
//! otherwise; integer, bitwise and layout ops compare exactly.

mod common;

use common::*;
use xla_graphs::{ComparisonDirection as Dir, DType, Graph, Literal, Shape, Tensor, UnaryOp};

const TOL: f64 = 1e-13;

/// A binary op as a method of `Tensor`, for tables of cases.
type BinaryBuilder = fn(&Tensor, &Tensor) -> xla_graphs::Result<Tensor>;
type UnaryCase<'a> = (UnaryOp, &'a Array, fn(f64) -> f64);

fn param(g: &Graph, a: &Array) -> Tensor {
    g.parameter("p", a.shape()).unwrap()
}

/// erf by its Maclaurin series: plenty for |x| <= 3 in f64.
fn erf(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    for n in 1..80 {
        term *= -x * x / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

#[test]
fn unary_float_ops() {
    let x = rand(&[3, 5], 1);
    let pos = rand_pos(&[3, 5], 2);
    let cases: Vec<UnaryCase> = vec![
        (UnaryOp::Negate, &x, |v| -v),
        (UnaryOp::Exponential, &x, f64::exp),
        (UnaryOp::Log, &pos, f64::ln),
        (UnaryOp::Tanh, &x, f64::tanh),
        (UnaryOp::Logistic, &x, |v| 1.0 / (1.0 + (-v).exp())),
        (UnaryOp::Sqrt, &pos, f64::sqrt),
        (UnaryOp::Rsqrt, &pos, |v| 1.0 / v.sqrt()),
        (UnaryOp::Erf, &x, erf),
        (UnaryOp::Sine, &x, f64::sin),
        (UnaryOp::Cosine, &x, f64::cos),
        (UnaryOp::Abs, &x, f64::abs),
        (UnaryOp::Sign, &x, f64::signum),
    ];
    for (op, input, f) in cases {
        let g = Graph::new();
        let y = param(&g, input).unary(op).unwrap();
        let got = run(&g, &[&y], std::slice::from_ref(input));
        let want: Vec<f64> = input.data.iter().map(|&v| f(v)).collect();
        assert_close(op.name(), &got[0], &want, TOL);
    }
    let g = Graph::new();
    let scaled = Array::f64(&x.dims, x.data.iter().map(|v| v * 3.7).collect());
    let y = param(&g, &scaled).floor().unwrap();
    let want: Vec<f64> = scaled.data.iter().map(|v| v.floor()).collect();
    assert_close("floor", &run(&g, &[&y], &[scaled])[0], &want, 0.0);
}

#[test]
fn binary_float_ops() {
    let a = rand(&[4, 3], 3);
    let b = rand(&[4, 3], 4);
    let pos = rand_pos(&[4, 3], 5);
    type F = fn(f64, f64) -> f64;
    let cases: Vec<(&str, BinaryBuilder, &Array, &Array, F)> = vec![
        ("add", Tensor::add, &a, &b, |x, y| x + y),
        ("subtract", Tensor::subtract, &a, &b, |x, y| x - y),
        ("multiply", Tensor::multiply, &a, &b, |x, y| x * y),
        ("divide", Tensor::divide, &a, &b, |x, y| x / y),
        ("maximum", Tensor::maximum, &a, &b, f64::max),
        ("minimum", Tensor::minimum, &a, &b, f64::min),
        ("power", Tensor::power, &pos, &b, f64::powf),
        ("remainder", Tensor::remainder, &a, &pos, |x, y| x % y),
    ];
    for (name, f, l, r, reference) in cases {
        let g = Graph::new();
        let y = f(&param(&g, l), &param(&g, r)).unwrap();
        let got = run(&g, &[&y], &[l.clone(), r.clone()]);
        let want: Vec<f64> = l
            .data
            .iter()
            .zip(&r.data)
            .map(|(&x, &y)| reference(x, y))
            .collect();
        assert_close(name, &got[0], &want, TOL);
    }
}

fn u32s(n: usize, seed: u64) -> Vec<u32> {
    rand_values(n, seed)
        .iter()
        .map(|v| ((v + 1.0) * 2147483647.0) as u32)
        .collect()
}

#[test]
fn u32_integer_and_bitwise_ops() {
    let (a, b) = (u32s(16, 6), u32s(16, 7));
    let shifts: Vec<u32> = (0..16).map(|i| (i * 5 % 33) as u32).collect();
    let arr = |v: &[u32]| Array::new(DType::U32, &[4, 4], v.iter().map(|&x| x as f64).collect());
    type F = fn(u32, u32) -> u32;
    let cases: Vec<(&str, BinaryBuilder, &[u32], F)> = vec![
        ("add", Tensor::add, &b, u32::wrapping_add),
        ("subtract", Tensor::subtract, &b, u32::wrapping_sub),
        ("multiply", Tensor::multiply, &b, u32::wrapping_mul),
        ("and", Tensor::and, &b, |x, y| x & y),
        ("or", Tensor::or, &b, |x, y| x | y),
        ("xor", Tensor::xor, &b, |x, y| x ^ y),
        // StableHLO shifts by >= 32 give 0; Rust's checked shifts say the same with None.
        ("shift_left", Tensor::shift_left, &shifts, |x, s| {
            x.checked_shl(s).unwrap_or(0)
        }),
        (
            "shift_right_logical",
            Tensor::shift_right_logical,
            &shifts,
            |x, s| x.checked_shr(s).unwrap_or(0),
        ),
    ];
    for (name, f, rhs, reference) in cases {
        let g = Graph::new();
        let (l, r) = (arr(&a), arr(rhs));
        let y = f(&param(&g, &l), &param(&g, &r)).unwrap();
        let got = run(&g, &[&y], &[l, r]);
        let want: Vec<f64> = a
            .iter()
            .zip(rhs)
            .map(|(&x, &y)| reference(x, y) as f64)
            .collect();
        assert_close(name, &got[0], &want, 0.0);
    }
    let g = Graph::new();
    let x = param(&g, &arr(&a));
    let not = x.not().unwrap();
    let got = run(&g, &[&not], &[arr(&a)]);
    assert_close(
        "not",
        &got[0],
        &a.iter().map(|&x| !x as f64).collect::<Vec<_>>(),
        0.0,
    );
}

#[test]
fn u32_constants_iota_and_bitcasts() {
    let g = Graph::new();
    let c = g
        .constant_vec(&[3], vec![0u32, 0x1BD11BDA, u32::MAX])
        .unwrap();
    let k = g
        .scalar_native(0x9E3779B9u32)
        .unwrap()
        .broadcast_in_dim(&[3], &[])
        .unwrap();
    let mixed = c
        .xor(&k)
        .unwrap()
        .add(&g.iota(Shape::new(DType::U32, &[3]), 0).unwrap())
        .unwrap();
    // 1.0f32 = 0x3F800000: the usual way of turning random bits into floats in [1, 2).
    let bits = g
        .constant_vec(&[2], vec![0x3F800000u32, 0x40490FDB])
        .unwrap();
    let floats = bits.bitcast_convert(DType::F32).unwrap();
    let back = floats.bitcast_convert(DType::U32).unwrap();
    let split = g
        .scalar(1.5, DType::F64)
        .unwrap()
        .bitcast_convert(DType::U32)
        .unwrap();
    let widened = split.bitcast_convert(DType::F64).unwrap();
    let got = run(&g, &[&mixed, &floats, &back, &split, &widened], &[]);
    let want: Vec<f64> = [0u32, 0x1BD11BDA, u32::MAX]
        .iter()
        .zip(0u32..)
        .map(|(&c, i)| (c ^ 0x9E3779B9).wrapping_add(i) as f64)
        .collect();
    assert_close("xor+iota", &got[0], &want, 0.0);
    assert_close(
        "bitcast u32->f32",
        &got[1],
        &[1.0, f32::from_bits(0x40490FDB) as f64],
        0.0,
    );
    assert_close(
        "bitcast f32->u32",
        &got[2],
        &[0x3F800000u32 as f64, 0x40490FDB as f64],
        0.0,
    );
    let b = 1.5f64.to_bits();
    assert_eq!(got[3].dims, vec![2]);
    assert_close(
        "bitcast f64->2xu32",
        &got[3],
        &[(b & 0xFFFF_FFFF) as f64, (b >> 32) as f64],
        0.0,
    );
    assert_close("bitcast 2xu32->f64", &got[4], &[1.5], 0.0);
}

#[test]
fn literals_of_every_dtype_print_exactly() {
    let g = Graph::new();
    let vals = [0.1, -2.5, 3.0e-3, 65504.0];
    let mut outs = Vec::new();
    for dt in [DType::F64, DType::F32, DType::BF16, DType::F16] {
        outs.push(g.constant_f64(dt, &[2, 2], &vals).unwrap());
        outs.push(g.splat(0.1, dt, &[3]).unwrap());
    }
    outs.push(g.constant_vec(&[2], vec![i64::MIN + 1, i64::MAX]).unwrap());
    outs.push(g.constant_vec(&[3], vec![true, false, true]).unwrap());
    outs.push(g.constant_vec(&[2], vec![-7i32, 9]).unwrap());
    outs.push(g.constant_vec(&[2], vec![0u8, 255]).unwrap());
    outs.push(
        g.constant(Literal::splat(DType::F32, &[2], f64::NEG_INFINITY))
            .unwrap(),
    );
    let refs: Vec<&Tensor> = outs.iter().collect();
    let got = run(&g, &refs, &[]);
    let round = |dt: DType, v: f64| match dt {
        DType::F32 => v as f32 as f64,
        DType::BF16 => half::bf16::from_f64(v).to_f64(),
        DType::F16 => half::f16::from_f64(v).to_f64(),
        _ => v,
    };
    for (i, dt) in [DType::F64, DType::F32, DType::BF16, DType::F16]
        .into_iter()
        .enumerate()
    {
        let want: Vec<f64> = vals.iter().map(|&v| round(dt, v)).collect();
        assert_close(&format!("{dt} literal"), &got[2 * i], &want, 0.0);
        assert_close(
            &format!("{dt} splat"),
            &got[2 * i + 1],
            &[round(dt, 0.1); 3],
            0.0,
        );
    }
    assert_eq!(got[8].data, vec![(i64::MIN + 1) as f64, i64::MAX as f64]);
    assert_eq!(got[9].data, vec![1.0, 0.0, 1.0]);
    assert_eq!(got[10].data, vec![-7.0, 9.0]);
    assert_eq!(got[11].data, vec![0.0, 255.0]);
    assert_eq!(got[12].data, vec![f64::NEG_INFINITY; 2]);
}

#[test]
fn compare_select_clamp() {
    let a = rand(&[2, 5], 8);
    let mut b = rand(&[2, 5], 9);
    b.data[3] = a.data[3];
    for dir in [Dir::Eq, Dir::Ne, Dir::Ge, Dir::Gt, Dir::Le, Dir::Lt] {
        let g = Graph::new();
        let (x, y) = (param(&g, &a), param(&g, &b));
        let m = x.compare(&y, dir).unwrap();
        let s = m.select(&x, &y).unwrap();
        let got = run(&g, &[&m, &s], &[a.clone(), b.clone()]);
        let f: fn(f64, f64) -> bool = match dir {
            Dir::Eq => |x, y| x == y,
            Dir::Ne => |x, y| x != y,
            Dir::Ge => |x, y| x >= y,
            Dir::Gt => |x, y| x > y,
            Dir::Le => |x, y| x <= y,
            Dir::Lt => |x, y| x < y,
        };
        let mask: Vec<f64> = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| f(x, y) as u8 as f64)
            .collect();
        let sel: Vec<f64> = a
            .data
            .iter()
            .zip(&b.data)
            .map(|(&x, &y)| if f(x, y) { x } else { y })
            .collect();
        assert_close(&format!("compare {dir:?}"), &got[0], &mask, 0.0);
        assert_close(&format!("select {dir:?}"), &got[1], &sel, 0.0);
    }
    // Signed and unsigned integer comparisons pick their compare type from the dtype.
    let g = Graph::new();
    let i = g.constant_vec(&[2], vec![-1i32, 5]).unwrap();
    let u = g.constant_vec(&[2], vec![u32::MAX, 5]).unwrap();
    let i_lt = i
        .compare(&g.constant_vec(&[2], vec![0i32, 0]).unwrap(), Dir::Lt)
        .unwrap();
    let u_lt = u
        .compare(&g.constant_vec(&[2], vec![0u32, 0]).unwrap(), Dir::Lt)
        .unwrap();
    let x = param(&g, &a);
    let clamped = x
        .clamp(
            &g.scalar(-0.3, DType::F64).unwrap(),
            &g.scalar(0.4, DType::F64).unwrap(),
        )
        .unwrap();
    let lo = param(&g, &b);
    let clamped2 = x.clamp(&lo, &lo.add_scalar(0.5).unwrap()).unwrap();
    let got = run(
        &g,
        &[&i_lt, &u_lt, &clamped, &clamped2],
        &[a.clone(), b.clone()],
    );
    assert_eq!(got[0].data, vec![1.0, 0.0]);
    assert_eq!(got[1].data, vec![0.0, 0.0]);
    let want: Vec<f64> = a.data.iter().map(|v| v.clamp(-0.3, 0.4)).collect();
    assert_close("clamp scalar bounds", &got[2], &want, 0.0);
    let want: Vec<f64> = a
        .data
        .iter()
        .zip(&b.data)
        .map(|(v, l)| v.max(*l).min(l + 0.5))
        .collect();
    assert_close("clamp array bounds", &got[3], &want, 0.0);
}

#[test]
fn converts() {
    let a = Array::f64(
        &[6],
        vec![1.0 + 1.0 / 256.0, 1.0 + 3.0 / 256.0, -2.7, 3.9, 1e-3, 100.5],
    );
    let g = Graph::new();
    let x = param(&g, &a);
    let f32 = x.convert(DType::F32).unwrap();
    let bf = f32.convert(DType::BF16).unwrap();
    let i = x.convert(DType::I32).unwrap();
    let u = x
        .abs()
        .unwrap()
        .convert(DType::U32)
        .unwrap()
        .convert(DType::F32)
        .unwrap();
    let p = x
        .compare(&x.zeros_like().unwrap(), Dir::Gt)
        .unwrap()
        .convert(DType::F32)
        .unwrap();
    let got = run(&g, &[&f32, &bf, &i, &u, &p], std::slice::from_ref(&a));
    assert_close(
        "f64->f32",
        &got[0],
        &a.data.iter().map(|&v| v as f32 as f64).collect::<Vec<_>>(),
        0.0,
    );
    // f32 -> bf16 rounds to nearest even: 1 + 1/256 is a tie and goes down, 1 + 3/256 goes up.
    let want: Vec<f64> = a
        .data
        .iter()
        .map(|&v| half::bf16::from_f32(v as f32).to_f64())
        .collect();
    assert_close("f32->bf16", &got[1], &want, 0.0);
    assert_eq!(got[1].data[0], 1.0);
    assert_eq!(got[1].data[1], 1.0 + 4.0 / 256.0);
    assert_eq!(got[2].data, vec![1.0, 1.0, -2.0, 3.0, 0.0, 100.0]);
    assert_eq!(got[3].data, vec![1.0, 1.0, 2.0, 3.0, 0.0, 100.0]);
    assert_eq!(got[4].data, vec![1.0, 1.0, 0.0, 1.0, 1.0, 1.0]);
}
