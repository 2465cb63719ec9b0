//! The host RNG (`ti_xla::rng`) against the committed `jax.random` vectors
//! (tests/fixtures/rng/threefry_vectors.json, made by scripts/make_rng_vectors.py).

mod rng_vectors;

use rng_vectors::{cases, count, u32s, u64s, vectors};
use serde_json::Value;
use ti_xla::rng::{erf_inv_f32, Key};

fn key(v: &Value) -> Key {
    let d = u32s(v);
    Key::from_data([d[0], d[1]])
}

#[test]
fn seeds_match_jax_x64_and_x32() {
    let v = vectors();
    for case in cases(&v, "seeds_x64") {
        let seed = case["seed_u64"].as_u64().unwrap();
        assert_eq!(
            Key::from_seed(seed),
            key(&case["key"]),
            "x64 seed {}",
            case["seed"]
        );
    }
    // With x64 off JAX truncates the seed to its low 32 bits.
    for case in cases(&v, "seeds_x32") {
        let seed = case["seed_u64"].as_u64().unwrap();
        assert_eq!(
            Key::from_seed(seed & 0xFFFF_FFFF),
            key(&case["key"]),
            "x32 seed {}",
            case["seed"]
        );
    }
}

#[test]
fn split_matches_jax() {
    let v = vectors();
    for case in cases(&v, "split") {
        let want: Vec<Key> = case["keys"].as_array().unwrap().iter().map(key).collect();
        assert_eq!(key(&case["key"]).split(count(case)), want, "split {case}");
    }
}

#[test]
fn fold_in_matches_jax() {
    let v = vectors();
    for case in cases(&v, "fold_in") {
        let data = case["data"].as_u64().unwrap() as u32;
        assert_eq!(
            key(&case["key"]).fold_in(data),
            key(&case["key_out"]),
            "fold_in {case}"
        );
    }
}

#[test]
fn bits_match_jax() {
    let v = vectors();
    for case in cases(&v, "bits_u32") {
        assert_eq!(
            key(&case["key"]).random_bits(count(case)),
            u32s(&case["bits"]),
            "bits {case}"
        );
    }
}

#[test]
fn uniform_matches_jax_exactly() {
    let v = vectors();
    for case in cases(&v, "uniform_f32") {
        let (lo, hi) = (
            case["minval"].as_f64().unwrap() as f32,
            case["maxval"].as_f64().unwrap() as f32,
        );
        let got: Vec<u32> = key(&case["key"])
            .uniform_f32_range(count(case), lo, hi)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(got, u32s(&case["bits"]), "uniform f32 {}", case["key"]);
    }
    for case in cases(&v, "uniform_f64") {
        let (lo, hi) = (
            case["minval"].as_f64().unwrap(),
            case["maxval"].as_f64().unwrap(),
        );
        let got: Vec<u64> = key(&case["key"])
            .uniform_f64_range(count(case), lo, hi)
            .iter()
            .map(|x| x.to_bits())
            .collect();
        assert_eq!(got, u64s(&case["bits"]), "uniform f64 {}", case["key"]);
    }
}

#[test]
fn normal_matches_jax() {
    let v = vectors();
    let mut worst = 0f32;
    for case in cases(&v, "normal_f32") {
        let got = key(&case["key"]).normal_f32(count(case));
        for (g, w) in got.iter().zip(u32s(&case["bits"])) {
            worst = worst.max((g - f32::from_bits(w)).abs());
        }
    }
    eprintln!("normal f32: max |host - jax| = {worst:e}");
    assert!(worst <= 1e-6, "normal f32: max |host - jax| = {worst:e}");
    let mut worst = 0f64;
    for case in cases(&v, "normal_f64") {
        let got = key(&case["key"]).normal_f64(count(case));
        for (g, w) in got.iter().zip(u64s(&case["bits"])) {
            worst = worst.max((g - f64::from_bits(w)).abs());
        }
    }
    eprintln!("normal f64: max |host - jax| = {worst:e}");
    assert!(worst <= 1e-12, "normal f64: max |host - jax| = {worst:e}");
}

#[test]
fn erf_inv_matches_jax() {
    let v = vectors();
    let xs = u32s(&v["erf_inv_f32"]["x_bits"]);
    let ys = u32s(&v["erf_inv_f32"]["y_bits"]);
    assert!(!xs.is_empty());
    for (x, y) in xs.into_iter().zip(ys) {
        let (x, y) = (f32::from_bits(x), f32::from_bits(y));
        let got = erf_inv_f32(x);
        assert!(
            (got - y).abs() <= 1e-6 * y.abs().max(1.0),
            "erf_inv({x:e}) = {got:e}, jax {y:e}"
        );
    }
}

#[test]
fn randint_matches_jax() {
    let v = vectors();
    for case in cases(&v, "randint_i32") {
        let (lo, hi) = (
            case["minval"].as_i64().unwrap() as i32,
            case["maxval"].as_i64().unwrap() as i32,
        );
        let want: Vec<i32> = case["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as i32)
            .collect();
        assert_eq!(
            key(&case["key"]).randint_i32(count(case), lo, hi),
            want,
            "randint {case}"
        );
    }
}
