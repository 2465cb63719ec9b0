//! Reading the committed JAX threefry vectors (`tests/fixtures/rng/threefry_vectors.json`),
//! shared by the host and graph RNG tests.
#![allow(dead_code)]

use serde_json::Value;

pub fn vectors() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/rng/threefry_vectors.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn u32s(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

pub fn u64s(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect()
}

/// A case's `shape` as dimensions.
pub fn dims(case: &Value) -> Vec<i64> {
    case["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap())
        .collect()
}

/// How many elements a case's `shape` holds.
pub fn count(case: &Value) -> usize {
    dims(case).iter().product::<i64>() as usize
}

/// The non-empty list of cases named `name`.
pub fn cases<'a>(v: &'a Value, name: &str) -> &'a Vec<Value> {
    let cases = v[name]
        .as_array()
        .unwrap_or_else(|| panic!("no {name} in the vectors"));
    assert!(!cases.is_empty(), "{name} is empty");
    cases
}
