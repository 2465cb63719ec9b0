//! Named host tensors in safetensors files: reading a command's inputs (integers as i32 or
//! i64, floats as f32, f16 or bf16) with one-line errors that name the tensor, and writing
//! outputs atomically (a temporary file in the same folder, then a rename).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use safetensors::{Dtype as StDtype, SafeTensors};

/// The tensors of one safetensors file, read into memory.
pub struct TensorFile {
    path: PathBuf,
    bytes: Vec<u8>,
}

/// What a tensor's shape must look like, for error messages and checks: `Some(n)` fixes a
/// dimension, `None` lets it be any size.
pub type DimsPattern<'a> = &'a [Option<usize>];

impl TensorFile {
    pub fn open(path: &Path) -> Result<TensorFile> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        SafeTensors::deserialize(&bytes).map_err(|e| {
            anyhow::anyhow!("{} is not a valid safetensors file ({e})", path.display())
        })?;
        Ok(TensorFile {
            path: path.to_path_buf(),
            bytes,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn tensors(&self) -> SafeTensors<'_> {
        // Checked in `open`; the bytes cannot change since.
        SafeTensors::deserialize(&self.bytes).expect("validated when opened")
    }

    /// The raw view of `name` after checking its rank and fixed dimensions against `dims`;
    /// `what` describes the expected tensor ("input_ids [B, L] of i32 or i64").
    fn view(
        &self,
        name: &str,
        dims: DimsPattern,
        what: &str,
    ) -> Result<(StDtype, Vec<usize>, Vec<u8>)> {
        let st = self.tensors();
        let view = match st.tensor(name) {
            Ok(v) => v,
            Err(_) => {
                let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
                names.sort();
                bail!(
                    "{} has no tensor {name} (expected {what}; it holds: {})",
                    self.path.display(),
                    if names.is_empty() {
                        "nothing".to_string()
                    } else {
                        names.join(", ")
                    }
                );
            }
        };
        let shape = view.shape().to_vec();
        let fits = shape.len() == dims.len()
            && shape
                .iter()
                .zip(dims)
                .all(|(&s, d)| d.is_none_or(|d| d == s));
        if !fits {
            bail!(
                "{name} in {} has shape {shape:?}; expected {what}",
                self.path.display()
            );
        }
        Ok((view.dtype(), shape, view.data().to_vec()))
    }

    /// An integer tensor (i32 or i64) as i64 values, with its shape.
    pub fn ints(
        &self,
        name: &str,
        dims: DimsPattern,
        what: &str,
    ) -> Result<(Vec<usize>, Vec<i64>)> {
        let (dtype, shape, data) = self.view(name, dims, what)?;
        let values = match dtype {
            StDtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            StDtype::I32 => data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            other => bail!(
                "{name} in {} is {other:?}; expected {what}",
                self.path.display()
            ),
        };
        Ok((shape, values))
    }

    /// A float tensor (f32, f16 or bf16) as f32 values, with its shape.
    pub fn floats(
        &self,
        name: &str,
        dims: DimsPattern,
        what: &str,
    ) -> Result<(Vec<usize>, Vec<f32>)> {
        let (dtype, shape, data) = self.view(name, dims, what)?;
        let values = match dtype {
            StDtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            StDtype::F16 => data
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            StDtype::BF16 => data
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => bail!(
                "{name} in {} is {other:?}; expected {what}",
                self.path.display()
            ),
        };
        Ok((shape, values))
    }
}

/// An f32 tensor to write.
pub struct F32Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// Writes `tensors` as f32 to `path` through a temporary file and a rename, so a reader never
/// sees a half-written file and a failed run leaves any previous file intact.
pub fn write_f32_atomic(
    path: &Path,
    tensors: &[F32Tensor],
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|t| t.values.iter().flat_map(|v| v.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            safetensors::tensor::TensorView::new(StDtype::F32, t.shape.clone(), b)
                .map(|v| (t.name.clone(), v))
                .with_context(|| format!("tensor {} does not fill shape {:?}", t.name, t.shape))
        })
        .collect::<Result<Vec<_>>>()?;
    let data = safetensors::serialize(views, metadata)?;
    crate::io::atomic_file::write_atomic(path, &data)
}
