//! Host-side `jax.random`: threefry2x32 keys in pure Rust, bit for bit the same as JAX with its
//! current default `jax_threefry_partitionable=True`.
//!
//! The trainer splits keys here (one per device per step) and passes them to the compiled step,
//! where `xla_graphs::random` draws noise and timesteps with the same algorithm built from u32
//! graph ops. The samplers below ([`Key::uniform_f32`], [`Key::normal_f32`], [`Key::randint_i32`],
//! ...) exist so the host can check the graph's numbers or make noise without a device; they
//! follow `jax.random` step by step, so bits, uniforms and integers are exact and normals agree
//! to a few ulp (the host's `ln_1p` is not XLA's). Where XLA's CPU backend contracts a multiply
//! and an add into one fused multiply-add (uniform's `unit * span + minval`, erf_inv's Horner
//! steps), so do these, since that is what matches JAX on CPU.
//!
//! A key is the pair `jax.random.key_data(key)`: two u32 words, `[hi, lo]` of the seed. The
//! constants (rotations, erf_inv polynomials, randint's span rule) are shared with the graph side.
//!
//! ```
//! use ti_xla::rng::Key;
//! let key = Key::from_seed(0);
//! let keys = key.split(2);
//! assert_eq!(keys[0].data(), [1797259609, 2579123966]);
//! let _noise = keys[1].normal_f32(16);
//! ```

use xla_graphs::random::{
    randint_multiplier, randint_span, ERF_INV_F32_W_GE_5, ERF_INV_F32_W_LT_5, ERF_INV_F64_W_GE_16,
    ERF_INV_F64_W_LT_16, ERF_INV_F64_W_LT_6_25, THREEFRY_KS_PARITY, THREEFRY_ROTATIONS,
};

/// The Threefry-2x32 block cipher with 20 rounds (Salmon et al., "Parallel random numbers: as
/// easy as 1, 2, 3"), as JAX's `threefry2x32_p`: `key` is the key pair, `count` the two counter
/// words; returns the two output words.
pub fn threefry2x32(key: [u32; 2], count: [u32; 2]) -> [u32; 2] {
    let ks = [key[0], key[1], key[0] ^ key[1] ^ THREEFRY_KS_PARITY];
    let mut x = [count[0].wrapping_add(ks[0]), count[1].wrapping_add(ks[1])];
    for i in 0..5 {
        for &r in &THREEFRY_ROTATIONS[i % 2] {
            x[0] = x[0].wrapping_add(x[1]);
            x[1] = x[1].rotate_left(r) ^ x[0];
        }
        x[0] = x[0].wrapping_add(ks[(i + 1) % 3]);
        x[1] = x[1]
            .wrapping_add(ks[(i + 2) % 3])
            .wrapping_add(i as u32 + 1);
    }
    x
}

/// A threefry2x32 PRNG key: the same two words as `jax.random.key_data(key)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key([u32; 2]);

impl Key {
    /// The key `jax.random.PRNGKey(seed)` gives with `jax_enable_x64=True`: the 64-bit seed split
    /// into `[seed >> 32, seed & 0xFFFFFFFF]` (a negative i64 seed cast to u64 gives the same as
    /// in JAX). With x64 off (JAX's default) JAX keeps only the low 32 bits of the seed, i.e.
    /// `from_seed(seed & 0xFFFF_FFFF)`; the two agree for every seed below 2^32.
    pub fn from_seed(seed: u64) -> Key {
        Key([(seed >> 32) as u32, seed as u32])
    }

    /// Wraps raw key data (`jax.random.wrap_key_data` for threefry2x32).
    pub const fn from_data(data: [u32; 2]) -> Key {
        Key(data)
    }

    /// The two key words, as `jax.random.key_data` returns them.
    pub const fn data(&self) -> [u32; 2] {
        self.0
    }

    /// `jax.random.split(key, n)`: key `i` is threefry of the 64-bit counter `i` (as `[hi, lo]`).
    pub fn split(&self, n: usize) -> Vec<Key> {
        (0..n as u64).map(|i| Key(self.hash_counter(i))).collect()
    }

    /// `jax.random.fold_in(key, data)`.
    pub fn fold_in(&self, data: u32) -> Key {
        // JAX hashes `threefry_seed(data)`, which for a u32 is the pair [0, data].
        Key(threefry2x32(self.0, [0, data]))
    }

    /// `jax.random.bits(key, shape, uint32)` flattened, for any shape with `count` elements
    /// (the partitionable scheme depends only on each element's flat index).
    pub fn random_bits(&self, count: usize) -> Vec<u32> {
        (0..count as u64)
            .map(|i| {
                let [a, b] = self.hash_counter(i);
                a ^ b
            })
            .collect()
    }

    /// `jax.random.bits(key, shape, uint64)` flattened (as used by the f64 samplers).
    pub fn random_bits_u64(&self, count: usize) -> Vec<u64> {
        (0..count as u64)
            .map(|i| {
                let [a, b] = self.hash_counter(i);
                (u64::from(a) << 32) | u64::from(b)
            })
            .collect()
    }

    /// `jax.random.uniform(key, shape, float32, minval, maxval)` flattened.
    pub fn uniform_f32_range(&self, count: usize, minval: f32, maxval: f32) -> Vec<f32> {
        let span = maxval - minval;
        self.random_bits(count)
            .into_iter()
            .map(|b| {
                let unit = f32::from_bits((b >> 9) | 1.0f32.to_bits()) - 1.0;
                // XLA's CPU backend contracts JAX's `unit * span + minval` into one fused
                // multiply-add, so that is what matches JAX there; the max is JAX's guard against
                // rounding below minval.
                unit.mul_add(span, minval).max(minval)
            })
            .collect()
    }

    /// `jax.random.uniform(key, shape, float32)`: values in [0, 1).
    pub fn uniform_f32(&self, count: usize) -> Vec<f32> {
        self.uniform_f32_range(count, 0.0, 1.0)
    }

    /// `jax.random.uniform(key, shape, float64, minval, maxval)` flattened.
    pub fn uniform_f64_range(&self, count: usize, minval: f64, maxval: f64) -> Vec<f64> {
        let span = maxval - minval;
        self.random_bits_u64(count)
            .into_iter()
            .map(|b| {
                let unit = f64::from_bits((b >> 12) | 1.0f64.to_bits()) - 1.0;
                unit.mul_add(span, minval).max(minval)
            })
            .collect()
    }

    /// `jax.random.normal(key, shape, float32)` flattened: `sqrt(2) * erf_inv(u)` with `u`
    /// uniform in `(-1, 1)`, the lower end moved up by one ulp so that erf_inv stays finite.
    pub fn normal_f32(&self, count: usize) -> Vec<f32> {
        let lo = f32::from_bits((-1.0f32).to_bits() - 1);
        self.uniform_f32_range(count, lo, 1.0)
            .into_iter()
            .map(|u| std::f32::consts::SQRT_2 * erf_inv_f32(u))
            .collect()
    }

    /// `jax.random.normal(key, shape, float64)` flattened.
    pub fn normal_f64(&self, count: usize) -> Vec<f64> {
        let lo = f64::from_bits((-1.0f64).to_bits() - 1);
        self.uniform_f64_range(count, lo, 1.0)
            .into_iter()
            .map(|u| std::f64::consts::SQRT_2 * erf_inv_f64(u))
            .collect()
    }

    /// `jax.random.randint(key, shape, minval, maxval, int32)` flattened: values in
    /// `[minval, maxval)`, or `minval` everywhere when `maxval <= minval`.
    pub fn randint_i32(&self, count: usize, minval: i32, maxval: i32) -> Vec<i32> {
        let keys = self.split(2);
        let (higher, lower) = (keys[0].random_bits(count), keys[1].random_bits(count));
        let span = randint_span(minval, maxval);
        let multiplier = randint_multiplier(span);
        higher
            .into_iter()
            .zip(lower)
            .map(|(h, l)| {
                let offset = ((h % span).wrapping_mul(multiplier)).wrapping_add(l % span) % span;
                minval.wrapping_add(offset as i32)
            })
            .collect()
    }

    fn hash_counter(&self, i: u64) -> [u32; 2] {
        threefry2x32(self.0, [(i >> 32) as u32, i as u32])
    }
}

/// `chlo.erf_inv` for f32 as XLA expands it (Giles' single-precision polynomials, evaluated in
/// f32 in the same order); `jax.lax.erf_inv` lowers to it. Horner steps are fused multiply-adds
/// because XLA's CPU backend contracts them; `ln_1p` is the host's, so results can differ from
/// XLA's in the last bit or two.
pub fn erf_inv_f32(x: f32) -> f32 {
    let w = -(-x * x).ln_1p();
    let (coeffs, t) = if w < 5.0 {
        (&ERF_INV_F32_W_LT_5, w - 2.5)
    } else {
        (&ERF_INV_F32_W_GE_5, w.sqrt() - 3.0)
    };
    let p = coeffs[1..].iter().fold(coeffs[0], |p, &c| p.mul_add(t, c));
    if x.abs() == 1.0 {
        x * f32::INFINITY
    } else {
        p * x
    }
}

/// `chlo.erf_inv` for f64 as XLA expands it (Giles' double-precision polynomials on three ranges
/// of `w = -log1p(-x^2)`).
pub fn erf_inv_f64(x: f64) -> f64 {
    let w = -(-x * x).ln_1p();
    let coeffs: &[f64] = if w < 6.25 {
        &ERF_INV_F64_W_LT_6_25
    } else if w < 16.0 {
        &ERF_INV_F64_W_LT_16
    } else {
        &ERF_INV_F64_W_GE_16
    };
    let t = if w < 6.25 {
        w - 3.125
    } else {
        w.sqrt() - if w < 16.0 { 3.25 } else { 5.0 }
    };
    let p = coeffs[1..].iter().fold(coeffs[0], |p, &c| p.mul_add(t, c));
    if x.abs() == 1.0 {
        x * f64::INFINITY
    } else {
        p * x
    }
}
