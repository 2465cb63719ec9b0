//! `learned_embeds.safetensors`, the file every tool reads: one f32 tensor keyed by the
//! placeholder string, shape [num_vectors, hidden] (always 2-D), metadata `{"format": "pt"}`,
//! exactly as diffusers' textual_inversion.py saves it.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{ensure, Result};

use crate::io::tensor_file::{write_f32_atomic, F32Tensor};

/// Writes the learned rows (row-major [num_vectors, hidden]) atomically to `path`.
pub fn write_learned_embeds(
    path: &Path,
    placeholder: &str,
    rows: &[f32],
    hidden: usize,
) -> Result<()> {
    ensure!(
        hidden > 0 && !rows.is_empty() && rows.len().is_multiple_of(hidden),
        "learned rows of length {} do not fill rows of {hidden}",
        rows.len()
    );
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    write_f32_atomic(
        path,
        &[F32Tensor {
            name: placeholder.to_string(),
            shape: vec![rows.len() / hidden, hidden],
            values: rows.to_vec(),
        }],
        Some(metadata),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::SafeTensors;

    #[test]
    fn file_has_the_reference_structure() {
        let dir = std::env::temp_dir().join(format!("ti-xla-export-{}", std::process::id()));
        let path = dir.join("learned_embeds.safetensors");
        let rows: Vec<f32> = (0..2 * 5).map(|i| i as f32 * 0.25 - 1.0).collect();
        write_learned_embeds(&path, "<cat-toy>", &rows, 5).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().unwrap()["format"], "pt");
        let st = SafeTensors::deserialize(&bytes).unwrap();
        assert_eq!(st.names(), vec!["<cat-toy>"]);
        let t = st.tensor("<cat-toy>").unwrap();
        assert_eq!(t.dtype(), safetensors::Dtype::F32);
        assert_eq!(t.shape(), &[2, 5]);
        let back: Vec<f32> = t
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(back, rows);
        assert!(write_learned_embeds(&path, "<x>", &rows, 3).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
