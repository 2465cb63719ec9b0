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

/// Copies the model folder `from` to `to`, without its `reference/` folder.
pub fn copy_model(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        if e.file_name() == "reference" {
            continue;
        }
        let target = to.join(e.file_name());
        if e.path().is_dir() {
            copy_model(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}
