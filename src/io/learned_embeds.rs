//! `learned_embeds.safetensors`, the file every tool reads, metadata `{"format": "pt"}`: for
//! SD 1.x/2.x one f32 tensor keyed by the placeholder string, shape [num_vectors, hidden]
//! (always 2-D), exactly as diffusers' textual_inversion.py saves it; for SDXL the two tables'
//! rows as `clip_l` [num_vectors, D1] and `clip_g` [num_vectors, D2], the file A1111/Forge,
//! ComfyUI, kohya, OneTrainer and ai-toolkit read (diffusers loads it with one
//! `load_textual_inversion` call per text encoder).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{ensure, Result};

use crate::io::tensor_file::{write_f32_atomic, F32Tensor};

/// The SDXL file's names of the two text encoders' rows, in text-encoder order.
pub const SDXL_KEYS: [&str; 2] = ["clip_l", "clip_g"];

/// Writes the learned rows atomically to `path`: row-major `[num_vectors, sum(widths)]`, each
/// row the text encoders' parts side by side (`widths`: one per encoder).
pub fn write_learned_embeds(
    path: &Path,
    placeholder: &str,
    rows: &[f32],
    widths: &[usize],
) -> Result<()> {
    let hidden: usize = widths.iter().sum();
    ensure!(
        hidden > 0
            && widths.iter().all(|&w| w > 0)
            && (1..=2).contains(&widths.len())
            && !rows.is_empty()
            && rows.len().is_multiple_of(hidden),
        "learned rows of length {} do not fill rows of {widths:?}",
        rows.len()
    );
    let n = rows.len() / hidden;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let tensors: Vec<F32Tensor> = match widths {
        [_] => vec![F32Tensor {
            name: placeholder.to_string(),
            shape: vec![n, hidden],
            values: rows.to_vec(),
        }],
        _ => split_columns(rows, widths)
            .into_iter()
            .zip(SDXL_KEYS)
            .zip(widths)
            .map(|((values, name), &w)| F32Tensor {
                name: name.to_string(),
                shape: vec![n, w],
                values,
            })
            .collect(),
    };
    write_f32_atomic(path, &tensors, Some(metadata))
}

/// Row-major rows of `sum(widths)` columns split into one row-major block per width.
pub fn split_columns(rows: &[f32], widths: &[usize]) -> Vec<Vec<f32>> {
    let hidden: usize = widths.iter().sum();
    let mut parts: Vec<Vec<f32>> = widths.iter().map(|_| Vec::new()).collect();
    for row in rows.chunks_exact(hidden.max(1)) {
        let mut start = 0;
        for (part, &w) in parts.iter_mut().zip(widths) {
            part.extend_from_slice(&row[start..start + w]);
            start += w;
        }
    }
    parts
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
        write_learned_embeds(&path, "<cat-toy>", &rows, &[5]).unwrap();
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
        assert!(write_learned_embeds(&path, "<x>", &rows, &[3]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sdxl_file_splits_each_row_into_clip_l_and_clip_g() {
        let dir = std::env::temp_dir().join(format!("ti-xla-export-xl-{}", std::process::id()));
        let path = dir.join("learned_embeds.safetensors");
        // Two rows of 2 + 3 columns: [a0 a1 | b0 b1 b2].
        let rows: Vec<f32> = (0..10).map(|i| i as f32).collect();
        write_learned_embeds(&path, "<cat-toy>", &rows, &[2, 3]).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let mut names = st.names();
        names.sort();
        assert_eq!(names, vec!["clip_g", "clip_l"]);
        let values = |k: &str| -> (Vec<usize>, Vec<f32>) {
            let t = st.tensor(k).unwrap();
            let v = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            (t.shape().to_vec(), v)
        };
        assert_eq!(values("clip_l"), (vec![2, 2], vec![0.0, 1.0, 5.0, 6.0]));
        assert_eq!(
            values("clip_g"),
            (vec![2, 3], vec![2.0, 3.0, 4.0, 7.0, 8.0, 9.0])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
