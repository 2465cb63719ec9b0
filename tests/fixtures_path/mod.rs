//! Where the committed test fixtures live: the one `fixture` path helper every test binary
//! uses (directly with `mod fixtures_path;`, or re-exported by tests/scratch and tests/parity).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

/// `tests/fixtures/<rel>` in this checkout (`rel` may hold `/`).
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}
