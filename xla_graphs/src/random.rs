//! In-graph `jax.random`: threefry2x32 built from u32 ops on a traced key, so a compiled program
//! draws the same numbers as JAX (with its default `jax_threefry_partitionable=True`) from the
//! same key, on any backend.
//!
//! A key is a `tensor<2xui32>`, the two words of `jax.random.key_data(key)`; the host makes and
//! splits keys with `ti_xla::rng` and passes one per device. Everything here mirrors JAX's own
//! lowering op for op, including the places where XLA's CPU backend fuses a multiply and an add
//! (uniform's `unit * span + minval`, erf_inv's Horner steps): the same ops compile the same way.
//!
//! ```
//! use xla_graphs::{random, DType, Graph, Shape};
//! let g = Graph::new();
//! let key = g.parameter("key", Shape::new(DType::U32, &[2])).unwrap();
//! let keys = random::split_keys(&key, 2).unwrap();
//! let noise = random::normal(&keys[0], &[2, 4, 8, 8], DType::F32).unwrap();
//! let t = random::randint(&keys[1], &[2], 0, 1000).unwrap();
//! let text = g.to_stablehlo(&[&noise, &t]).unwrap();
//! assert!(text.contains("stablehlo.shift_left"));
//! ```
//!
//! Only f32 and f64 floats are drawn here: JAX draws narrower floats from 8- or 16-bit words,
//! which these programs never need (draw f32 and convert).

use crate::{DType, Graph, GraphError, Literal, NativeType, Result, Shape, Tensor};

/// Threefry rotation amounts, rounds 1-4 and 5-8 of each group of eight.
pub const THREEFRY_ROTATIONS: [[u32; 4]; 2] = [[13, 15, 26, 6], [17, 29, 16, 24]];

/// Threefry's key-schedule parity constant for 32-bit words.
pub const THREEFRY_KS_PARITY: u32 = 0x1BD1_1BDA;

fn err(op: &'static str, operands: &[&Tensor], reason: impl Into<String>) -> GraphError {
    match operands.first() {
        Some(t) => t.graph().op_error(op, operands, reason.into()),
        None => GraphError::invalid(op, reason),
    }
}

fn splat<T: NativeType>(g: &Graph, value: T, dims: &[i64]) -> Result<Tensor> {
    g.constant(Literal::splat_native(dims, value))
}

/// `x` with a scalar constant `value` of its own element type, as an equal-shaped splat.
fn like<T: NativeType>(x: &Tensor, value: T) -> Result<Tensor> {
    splat(x.graph(), value, &x.dims())
}

fn rotate_left(x: &Tensor, r: u32) -> Result<Tensor> {
    x.shift_left(&like(x, r)?)?
        .or(&x.shift_right_logical(&like(x, 32 - r)?)?)
}

/// Threefry-2x32 with 20 rounds on counter words `x0`, `x1` (u32, equal shapes) under key words
/// `k0`, `k1` (u32 scalars): JAX's `threefry2x32_p`, unrolled.
pub fn threefry2x32(
    k0: &Tensor,
    k1: &Tensor,
    x0: &Tensor,
    x1: &Tensor,
) -> Result<(Tensor, Tensor)> {
    const OP: &str = "random.threefry2x32";
    for t in [k0, k1] {
        if t.shape() != Shape::scalar(DType::U32) {
            return Err(err(OP, &[k0, k1], "key words must be u32 scalars"));
        }
    }
    if x0.shape() != x1.shape() || x0.dtype() != DType::U32 {
        return Err(err(
            OP,
            &[x0, x1],
            "counters must be two u32 tensors of one shape",
        ));
    }
    let g = x0.graph();
    let dims = x0.dims();
    let k2 = k0.xor(k1)?.xor(&g.scalar_native(THREEFRY_KS_PARITY)?)?;
    let ks: Vec<Tensor> = [k0, k1, &k2]
        .iter()
        .map(|k| k.broadcast_in_dim(&dims, &[]))
        .collect::<Result<_>>()?;
    let mut a = x0.add(&ks[0])?;
    let mut b = x1.add(&ks[1])?;
    for i in 0..5 {
        for &r in &THREEFRY_ROTATIONS[i % 2] {
            a = a.add(&b)?;
            b = rotate_left(&b, r)?.xor(&a)?;
        }
        a = a.add(&ks[(i + 1) % 3])?;
        b = b.add(&ks[(i + 2) % 3])?.add(&like(&b, i as u32 + 1)?)?;
    }
    Ok((a, b))
}

/// The two words of a `u32[2]` key as u32 scalars.
fn key_words(op: &'static str, key: &Tensor) -> Result<(Tensor, Tensor)> {
    if key.shape() != Shape::new(DType::U32, &[2]) {
        return Err(err(op, &[key], "a threefry key is a tensor<2xui32>"));
    }
    Ok((
        key.slice(&[0], &[1], &[1])?.reshape(&[])?,
        key.slice(&[1], &[2], &[1])?.reshape(&[])?,
    ))
}

/// Threefry of every element's flat index (as the 64-bit counter `[hi, lo]`) under `key`:
/// JAX's `iota_2x32_shape` followed by `threefry2x32_p`.
fn hash_indices(op: &'static str, key: &Tensor, dims: &[i64]) -> Result<(Tensor, Tensor)> {
    let (k0, k1) = key_words(op, key)?;
    if dims.iter().any(|&d| d < 0) {
        return Err(err(op, &[key], format!("negative dimension in {dims:?}")));
    }
    let n: i64 = dims.iter().product();
    if n > i64::from(u32::MAX) {
        // The high counter word would be non-zero; no program here draws that many numbers.
        return Err(err(
            op,
            &[key],
            format!("{n} elements is more than 2^32 - 1"),
        ));
    }
    let g = key.graph();
    let lo = g.iota(Shape::new(DType::U32, &[n]), 0)?.reshape(dims)?;
    let hi = splat(g, 0u32, dims)?;
    threefry2x32(&k0, &k1, &hi, &lo)
}

/// `jax.random.split(key, n)`: a `u32[n, 2]` tensor whose rows are the new keys.
pub fn split(key: &Tensor, n: usize) -> Result<Tensor> {
    let (a, b) = hash_indices("random.split", key, &[n as i64])?;
    let g = key.graph();
    g.concatenate(&[a.reshape(&[n as i64, 1])?, b.reshape(&[n as i64, 1])?], 1)
}

/// `jax.random.split(key, n)` as `n` separate `u32[2]` keys.
pub fn split_keys(key: &Tensor, n: usize) -> Result<Vec<Tensor>> {
    let keys = split(key, n)?;
    (0..n as i64)
        .map(|i| keys.slice(&[i, 0], &[i + 1, 2], &[1, 1])?.reshape(&[2]))
        .collect()
}

/// `jax.random.fold_in(key, data)` for a traced integer scalar (u32, or i32 taken modulo 2^32 as
/// JAX does), e.g. `replica_id` to give each device its own stream.
pub fn fold_in(key: &Tensor, data: &Tensor) -> Result<Tensor> {
    const OP: &str = "random.fold_in";
    let data = match data.shape() {
        s if s == Shape::scalar(DType::U32) => data.clone(),
        s if s == Shape::scalar(DType::I32) => data.bitcast_convert(DType::U32)?,
        _ => return Err(err(OP, &[key, data], "data must be a u32 or i32 scalar")),
    };
    let (k0, k1) = key_words(OP, key)?;
    // JAX hashes `threefry_seed(data)`, which for 32-bit data is the counter pair [0, data].
    let zero = key.graph().scalar_native(0u32)?;
    let (a, b) = threefry2x32(&k0, &k1, &zero, &data)?;
    key.graph()
        .concatenate(&[a.reshape(&[1])?, b.reshape(&[1])?], 0)
}

/// `jax.random.fold_in(key, data)` for a constant `data`.
pub fn fold_in_const(key: &Tensor, data: u32) -> Result<Tensor> {
    fold_in(key, &key.graph().scalar_native(data)?)
}

/// `jax.random.bits(key, dims, uint32)`.
pub fn random_bits(key: &Tensor, dims: &[i64]) -> Result<Tensor> {
    let (a, b) = hash_indices("random.bits", key, dims)?;
    a.xor(&b)
}

/// Uniform floats in `[0, 1)` with every mantissa bit random, as JAX makes them before scaling.
fn unit_floats(op: &'static str, key: &Tensor, dims: &[i64], dtype: DType) -> Result<Tensor> {
    match dtype {
        DType::F32 => {
            // JAX's mantissa trick: 23 random bits under the exponent of 1.0, minus 1.0.
            let bits = random_bits(key, dims)?;
            let mantissa = bits.shift_right_logical(&like(&bits, 9u32)?)?;
            let one = mantissa.or(&like(&mantissa, 1.0f32.to_bits())?)?;
            let one = one.bitcast_convert(DType::F32)?;
            one.subtract(&like(&one, 1.0f32)?)
        }
        DType::F64 => {
            // JAX takes 52 bits of the 64-bit word (hi << 32 | lo) >> 12 the same way. There is
            // no u64 here, but those 52 bits over 2^52 are hi * 2^-32 + (lo >> 12) * 2^-52, and
            // both terms and their sum are exact in f64, so this is the same number.
            let (hi, lo) = hash_indices(op, key, dims)?;
            let lo = lo.shift_right_logical(&like(&lo, 12u32)?)?;
            let hi = hi.convert(DType::F64)?;
            let lo = lo.convert(DType::F64)?;
            let hi = hi.multiply(&like(&hi, 2f64.powi(-32))?)?;
            let lo = lo.multiply(&like(&lo, 2f64.powi(-52))?)?;
            hi.add(&lo)
        }
        other => Err(err(
            op,
            &[key],
            format!("{other} is not drawn here; use f32 or f64"),
        )),
    }
}

/// `jax.random.uniform(key, dims, dtype, minval, maxval)` for f32 or f64: values in
/// `[minval, maxval)` (bounds rounded to `dtype` first, as JAX does).
pub fn uniform(
    key: &Tensor,
    dims: &[i64],
    dtype: DType,
    minval: f64,
    maxval: f64,
) -> Result<Tensor> {
    let unit = unit_floats("random.uniform", key, dims, dtype)?;
    let g = key.graph();
    // The span is computed in `dtype` from the rounded bounds, like JAX's `maxval - minval`.
    let (lo, span) = match dtype {
        DType::F32 => (
            splat(g, minval as f32, dims)?,
            splat(g, maxval as f32 - minval as f32, dims)?,
        ),
        _ => (splat(g, minval, dims)?, splat(g, maxval - minval, dims)?),
    };
    // JAX's max with minval guards against rounding below it.
    unit.multiply(&span)?.add(&lo)?.maximum(&lo)
}

/// `jax.random.normal(key, dims, dtype)` for f32 or f64: `sqrt(2) * erf_inv(u)` with `u`
/// uniform in `(-1, 1)`, the lower end one ulp above -1 so erf_inv stays finite.
pub fn normal(key: &Tensor, dims: &[i64], dtype: DType) -> Result<Tensor> {
    let (lo, sqrt2) = match dtype {
        DType::F32 => (
            f64::from(f32::from_bits((-1f32).to_bits() - 1)),
            f64::from(std::f32::consts::SQRT_2),
        ),
        _ => (
            f64::from_bits((-1f64).to_bits() - 1),
            std::f64::consts::SQRT_2,
        ),
    };
    let u = uniform(key, dims, dtype, lo, 1.0)?;
    let x = erf_inv(&u)?;
    x.graph().splat(sqrt2, dtype, dims)?.multiply(&x)
}

/// The width of randint's range as JAX computes it: `maxval - minval` in wrapping i32 arithmetic
/// read as u32 (so the full i32 range is 2^32 - 1 wide), and 1 when the range is empty.
pub fn randint_span(minval: i32, maxval: i32) -> u32 {
    if maxval <= minval {
        1
    } else {
        maxval.wrapping_sub(minval) as u32
    }
}

/// JAX's `2^32 mod span` for randint, computed as `((2^16 mod span)^2) mod span` in wrapping u32
/// arithmetic. The square wraps to 0 when `2^16 mod span == 2^16` (span > 2^16), which is not
/// `2^32 mod span`; JAX has this quirk, so we keep it.
pub fn randint_multiplier(span: u32) -> u32 {
    let m = (1u32 << 16) % span;
    m.wrapping_mul(m) % span
}

/// `jax.random.randint(key, dims, minval, maxval, int32)`: i32 values in `[minval, maxval)`
/// (all `minval` when the range is empty). Like JAX it draws two words per value from the two
/// halves of `split(key)` and reduces `hi * 2^32 + lo` modulo the span, so small spans are
/// nearly unbiased.
pub fn randint(key: &Tensor, dims: &[i64], minval: i32, maxval: i32) -> Result<Tensor> {
    let keys = split_keys(key, 2)?;
    let higher = random_bits(&keys[0], dims)?;
    let lower = random_bits(&keys[1], dims)?;
    let span = randint_span(minval, maxval);
    let span_t = like(&higher, span)?;
    let offset = higher
        .remainder(&span_t)?
        .multiply(&like(&higher, randint_multiplier(span))?)?
        .add(&lower.remainder(&span_t)?)?
        .remainder(&span_t)?;
    let offset = offset.bitcast_convert(DType::I32)?;
    offset.add(&like(&offset, minval)?)
}

/// XLA's log1p, written out: Cephes' rational approximation for `|x| < sqrt(2) - 1`, else
/// `log(1 + x)`. StableHLO's `log_plus_one` is not among the graph's ops; this is how XLA
/// expands it on CPU, evaluated in the element type.
#[allow(clippy::excessive_precision)] // XLA's constants, verbatim
pub fn log1p(x: &Tensor) -> Result<Tensor> {
    const NUM: [f64; 7] = [
        4.5270000862445199635215E-5,
        4.9854102823193375972212E-1,
        6.5787325942061044846969E0,
        2.9911919328553073277375E1,
        6.0949667980987787057556E1,
        5.7112963590585538103336E1,
        2.0039553499201281259648E1,
    ];
    const DEN: [f64; 7] = [
        1.,
        1.5062909083469192043167E1,
        8.3047565967967209469434E1,
        2.2176239823732856465394E2,
        3.0909872225312059774938E2,
        2.1642788614495947685003E2,
        6.0118660497603843919306E1,
    ];
    if !x.dtype().is_float() {
        return Err(err("random.log1p", &[x], "log1p needs a float operand"));
    }
    let c = |v: f64| x.full_like(v);
    let poly = |cs: &[f64]| -> Result<Tensor> {
        let mut p = c(cs[0])?;
        for &v in &cs[1..] {
            p = p.multiply(x)?.add(&c(v)?)?;
        }
        Ok(p)
    };
    let x2 = x.multiply(x)?;
    let ratio = poly(&NUM)?.divide(&poly(&DEN)?)?;
    let small = c(-0.5)?
        .multiply(&x2)?
        .add(&x.multiply(&x2)?.multiply(&ratio)?)?;
    let small = x.add(&small)?;
    let large = x.add(&c(1.0)?)?.log()?;
    let is_small = x.abs()?.compare(
        &c(std::f64::consts::SQRT_2 - 1.0)?,
        crate::ComparisonDirection::Lt,
    )?;
    is_small.select(&small, &large)
}

/// `jax.lax.erf_inv` for f32 and f64, as XLA expands `chlo.erf_inv`: Giles' polynomials in
/// `w = -log1p(-x^2)` (two ranges for f32, three for f64), `±inf` at `±1`.
pub fn erf_inv(x: &Tensor) -> Result<Tensor> {
    use crate::ComparisonDirection::{Eq, Lt};
    let dtype = x.dtype();
    let c = |v: f64| x.full_like(v);
    let w = log1p(&x.multiply(&x.negate()?)?)?.negate()?;
    let p = match dtype {
        DType::F32 => {
            let lt = w.compare(&c(5.0)?, Lt)?;
            let coefficient = |i: usize| {
                lt.select(
                    &c(f64::from(ERF_INV_F32_W_LT_5[i]))?,
                    &c(f64::from(ERF_INV_F32_W_GE_5[i]))?,
                )
            };
            let t = lt.select(&w.subtract(&c(2.5)?)?, &w.sqrt()?.subtract(&c(3.0)?)?)?;
            let mut p = coefficient(0)?;
            for i in 1..ERF_INV_F32_W_LT_5.len() {
                p = coefficient(i)?.add(&p.multiply(&t)?)?;
            }
            p
        }
        DType::F64 => {
            let lt_6_25 = w.compare(&c(6.25)?, Lt)?;
            let lt_16 = w.compare(&c(16.0)?, Lt)?;
            let coefficient = |i: usize| -> Result<Tensor> {
                let mut k = c(ERF_INV_F64_W_LT_6_25[i])?;
                if i < ERF_INV_F64_W_LT_16.len() {
                    k = lt_6_25.select(&k, &c(ERF_INV_F64_W_LT_16[i])?)?;
                }
                if i < ERF_INV_F64_W_GE_16.len() {
                    k = lt_16.select(&k, &c(ERF_INV_F64_W_GE_16[i])?)?;
                }
                Ok(k)
            };
            let shift = lt_16.select(&c(3.25)?, &c(5.0)?)?;
            let t = lt_6_25.select(&w.subtract(&c(3.125)?)?, &w.sqrt()?.subtract(&shift)?)?;
            let mut p = coefficient(0)?;
            // Shorter polynomials stop early: their ranges keep `p` once they run out.
            for i in 1..ERF_INV_F64_W_LT_6_25.len() {
                let next = coefficient(i)?.add(&p.multiply(&t)?)?;
                p = if i < ERF_INV_F64_W_GE_16.len() {
                    next
                } else if i < ERF_INV_F64_W_LT_16.len() {
                    lt_16.select(&next, &p)?
                } else {
                    lt_6_25.select(&next, &p)?
                };
            }
            p
        }
        other => {
            return Err(err(
                "random.erf_inv",
                &[x],
                format!("{other} is not supported; use f32 or f64"),
            ))
        }
    };
    let at_one = x.abs()?.compare(&c(1.0)?, Eq)?;
    at_one.select(&x.multiply(&c(f64::INFINITY)?)?, &p.multiply(x)?)
}

/// Coefficients of XLA's `ErfInv32`, highest degree first, for `w < 5` (in `w - 2.5`).
#[allow(clippy::excessive_precision)]
pub const ERF_INV_F32_W_LT_5: [f32; 9] = [
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
];

/// Coefficients of XLA's `ErfInv32`, highest degree first, for `w >= 5` (in `sqrt(w) - 3`).
#[allow(clippy::excessive_precision)]
pub const ERF_INV_F32_W_GE_5: [f32; 9] = [
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
];

/// Coefficients of XLA's `ErfInv64`, highest degree first, for `w < 6.25` (in `w - 3.125`).
#[allow(clippy::excessive_precision)]
pub const ERF_INV_F64_W_LT_6_25: [f64; 23] = [
    -3.6444120640178196996e-21,
    -1.685059138182016589e-19,
    1.2858480715256400167e-18,
    1.115787767802518096e-17,
    -1.333171662854620906e-16,
    2.0972767875968561637e-17,
    6.6376381343583238325e-15,
    -4.0545662729752068639e-14,
    -8.1519341976054721522e-14,
    2.6335093153082322977e-12,
    -1.2975133253453532498e-11,
    -5.4154120542946279317e-11,
    1.051212273321532285e-09,
    -4.1126339803469836976e-09,
    -2.9070369957882005086e-08,
    4.2347877827932403518e-07,
    -1.3654692000834678645e-06,
    -1.3882523362786468719e-05,
    0.0001867342080340571352,
    -0.00074070253416626697512,
    -0.0060336708714301490533,
    0.24015818242558961693,
    1.6536545626831027356,
];

/// Coefficients of XLA's `ErfInv64`, highest degree first, for `6.25 <= w < 16`
/// (in `sqrt(w) - 3.25`).
#[allow(clippy::excessive_precision)]
pub const ERF_INV_F64_W_LT_16: [f64; 19] = [
    2.2137376921775787049e-09,
    9.0756561938885390979e-08,
    -2.7517406297064545428e-07,
    1.8239629214389227755e-08,
    1.5027403968909827627e-06,
    -4.013867526981545969e-06,
    2.9234449089955446044e-06,
    1.2475304481671778723e-05,
    -4.7318229009055733981e-05,
    6.8284851459573175448e-05,
    2.4031110387097893999e-05,
    -0.0003550375203628474796,
    0.00095328937973738049703,
    -0.0016882755560235047313,
    0.0024914420961078508066,
    -0.0037512085075692412107,
    0.005370914553590063617,
    1.0052589676941592334,
    3.0838856104922207635,
];

/// Coefficients of XLA's `ErfInv64`, highest degree first, for `w >= 16` (in `sqrt(w) - 5`).
#[allow(clippy::excessive_precision)]
pub const ERF_INV_F64_W_GE_16: [f64; 17] = [
    -2.7109920616438573243e-11,
    -2.5556418169965252055e-10,
    1.5076572693500548083e-09,
    -3.7894654401267369937e-09,
    7.6157012080783393804e-09,
    -1.4960026627149240478e-08,
    2.9147953450901080826e-08,
    -6.7711997758452339498e-08,
    2.2900482228026654717e-07,
    -9.9298272942317002539e-07,
    4.5260625972231537039e-06,
    -1.9681778105531670567e-05,
    7.5995277030017761139e-05,
    -0.00021503011930044477347,
    -0.00013871931833623122026,
    1.0103004648645343977,
    4.8499064014085844221,
];
