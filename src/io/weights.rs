//! Frozen weights from safetensors files: memory-mapped, checked by name and shape against
//! what a traced model declares, and converted from their stored dtype (f32, f16, bf16) to the
//! compute dtype on the way to the device.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use memmap2::Mmap;
use safetensors::{Dtype as StDtype, SafeTensors};
use xla_graphs::DType;

/// Tensors a checkpoint may carry that no model reads (transformers' legacy buffers).
const IGNORED_SUFFIXES: [&str; 1] = ["embeddings.position_ids"];

/// One or more safetensors files of one model component, memory-mapped.
pub struct WeightFiles {
    maps: Vec<(PathBuf, Mmap)>,
    /// name -> where its tensor lies
    index: BTreeMap<String, Entry>,
}

/// One tensor of the mapped files.
struct Entry {
    file: usize,
    dtype: StDtype,
    shape: Vec<usize>,
    /// Its bytes within the file's map (found once, at open).
    bytes: std::ops::Range<usize>,
}

/// diffusers' pre-0.14 attention names (`AttentionBlock`, as in the VAE mid-blocks of the 2022
/// SD 1.x/2.x uploads), read under today's names as diffusers' `_fix_state_dict_keys_on_load`
/// does: the shapes are the same.
const DEPRECATED_ATTENTION_NAMES: [(&str, &str); 4] = [
    ("query", "to_q"),
    ("key", "to_k"),
    ("value", "to_v"),
    ("proj_attn", "to_out.0"),
];

/// Today's name for a deprecated attention-block tensor name, if `name` is one.
fn renamed_attention_key(name: &str) -> Option<String> {
    let (module, param) = name.rsplit_once('.')?;
    if param != "weight" && param != "bias" {
        return None;
    }
    let (path, old) = module.rsplit_once('.')?;
    if !(path.contains(".attentions.") || path.starts_with("attentions.")) {
        return None;
    }
    let (_, new) = DEPRECATED_ATTENTION_NAMES.iter().find(|(o, _)| *o == old)?;
    Some(format!("{path}.{new}.{param}"))
}

/// A tensor the model needs: its checkpoint name and shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WeightSpec {
    pub name: String,
    pub shape: Vec<usize>,
}

impl WeightFiles {
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut maps = Vec::new();
        let mut index = BTreeMap::new();
        for (i, path) in paths.iter().enumerate() {
            let file =
                File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
            // SAFETY: the file is opened read-only; like every safetensors reader we assume it
            // is not truncated by another process while mapped.
            let map = unsafe { Mmap::map(&file) }
                .with_context(|| format!("cannot map {}", path.display()))?;
            let st = SafeTensors::deserialize(&map).map_err(|e| {
                anyhow::anyhow!(
                    "{} is not a valid safetensors file ({e}); it may be truncated: download it again",
                    path.display()
                )
            })?;
            for (name, view) in st.tensors() {
                let start = view.data().as_ptr() as usize - map.as_ptr() as usize;
                let entry = Entry {
                    file: i,
                    dtype: view.dtype(),
                    shape: view.shape().to_vec(),
                    bytes: start..start + view.data().len(),
                };
                index.insert(name, entry);
            }
            maps.push((path.clone(), map));
        }
        let deprecated: Vec<(String, String)> = index
            .keys()
            .filter_map(|k| Some((k.clone(), renamed_attention_key(k)?)))
            .filter(|(_, new)| !index.contains_key(new))
            .collect();
        for (old, new) in deprecated {
            let entry = index.remove(&old).expect("listed from the index");
            index.insert(new, entry);
        }
        Ok(WeightFiles { maps, index })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(String::as_str)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    /// Checks that the files hold exactly `specs` (by name and shape); the error lists the
    /// first few missing, mis-shaped and unexpected tensors.
    pub fn check(&self, specs: &[WeightSpec], what: &str) -> Result<()> {
        const SHOW: usize = 5;
        let mut missing = Vec::new();
        let mut misshaped = Vec::new();
        for spec in specs {
            match self.index.get(&spec.name) {
                None => missing.push(spec.name.clone()),
                Some(e) if e.shape != spec.shape => misshaped.push(format!(
                    "{} (expected {:?}, found {:?})",
                    spec.name, spec.shape, e.shape
                )),
                Some(_) => {}
            }
        }
        let wanted: std::collections::HashSet<&str> =
            specs.iter().map(|s| s.name.as_str()).collect();
        let unexpected: Vec<String> = self
            .index
            .keys()
            .filter(|n| !wanted.contains(n.as_str()))
            .filter(|n| !IGNORED_SUFFIXES.iter().any(|s| n.ends_with(s)))
            .cloned()
            .collect();
        let mut problems = Vec::new();
        for (label, list) in [
            ("missing", &missing),
            ("mis-shaped", &misshaped),
            ("unexpected", &unexpected),
        ] {
            if !list.is_empty() {
                let more = if list.len() > SHOW {
                    format!(" and {} more", list.len() - SHOW)
                } else {
                    String::new()
                };
                problems.push(format!(
                    "{} {label}: {}{more}",
                    list.len(),
                    list[..list.len().min(SHOW)].join(", ")
                ));
            }
        }
        if !problems.is_empty() {
            bail!(
                "{what} weights do not match its config ({}); is the model folder complete and the config the one it was saved with?",
                problems.join("; ")
            );
        }
        Ok(())
    }

    /// The tensor's elements converted to `dtype` (f32, bf16, f16 or f64), as little-endian bytes.
    pub fn read_as(&self, name: &str, dtype: DType) -> Result<Vec<u8>> {
        let rank = self.shape(name).map_or(0, <[usize]>::len);
        let identity: Vec<usize> = (0..rank).collect();
        self.read_laid_out(name, dtype, &identity, &[])
    }

    /// `read_as` of the tensor rearranged: transposed so that dimension `i` of the result is
    /// dimension `permutation[i]` of the stored tensor (`[2, 3, 1, 0]` turns an OIHW kernel
    /// into HWIO), then reversed along the result's `reversed` dimensions.
    pub fn read_laid_out(
        &self,
        name: &str,
        dtype: DType,
        permutation: &[usize],
        reversed: &[usize],
    ) -> Result<Vec<u8>> {
        let entry = self
            .index
            .get(name)
            .with_context(|| format!("tensor {name} is not in the weight files"))?;
        let (path, map) = &self.maps[entry.file];
        let data = &map[entry.bytes.clone()];
        let dims = entry.shape.as_slice();
        if permutation.len() != dims.len() || reversed.iter().any(|&d| d >= dims.len()) {
            bail!(
                "{name} has {} dimensions; cannot lay it out by {permutation:?}, reversing {reversed:?}",
                dims.len()
            );
        }
        let identity = reversed.is_empty() && permutation.iter().enumerate().all(|(i, &p)| i == p);
        // Stored as wanted: move the bytes (a weight file is mostly this), else convert.
        if stored_as(entry.dtype) == Some(dtype) {
            return Ok(if identity {
                data.to_vec()
            } else {
                match dtype.size_in_bytes() {
                    2 => lay_out_bytes::<2>(data, dims, permutation, reversed),
                    4 => lay_out_bytes::<4>(data, dims, permutation, reversed),
                    _ => lay_out_bytes::<8>(data, dims, permutation, reversed),
                }
            });
        }
        let values: Vec<f64> =
            decode(data, entry.dtype).with_context(|| format!("{name} in {}", path.display()))?;
        if identity {
            encode(&values, dtype)
        } else {
            encode(&lay_out(&values, dims, permutation, reversed), dtype)
        }
    }
}

/// The dtype a stored tensor already is, among those weights are computed in.
fn stored_as(dtype: StDtype) -> Option<DType> {
    match dtype {
        StDtype::F32 => Some(DType::F32),
        StDtype::F16 => Some(DType::F16),
        StDtype::BF16 => Some(DType::BF16),
        StDtype::F64 => Some(DType::F64),
        _ => None,
    }
}

/// `lay_out` on little-endian elements of `N` bytes, moved without conversion.
fn lay_out_bytes<const N: usize>(
    data: &[u8],
    dims: &[usize],
    permutation: &[usize],
    reversed: &[usize],
) -> Vec<u8> {
    let (elements, _) = data.as_chunks::<N>();
    lay_out(elements, dims, permutation, reversed)
        .as_flattened()
        .to_vec()
}

/// Row-major `values` of shape `dims` transposed so that result dimension `i` is dimension
/// `permutation[i]` (numpy's `transpose(permutation)`), then flipped along the result
/// dimensions in `reversed` (numpy's `flip`).
fn lay_out<T: Copy>(
    values: &[T],
    dims: &[usize],
    permutation: &[usize],
    reversed: &[usize],
) -> Vec<T> {
    if dims.len() < 2 {
        // As a [1, n] tensor, so that the result always has a last pair of dimensions.
        let dims: Vec<usize> = std::iter::once(1).chain(dims.iter().copied()).collect();
        let permutation: Vec<usize> = std::iter::once(0)
            .chain(permutation.iter().map(|p| p + 1))
            .collect();
        let reversed: Vec<usize> = reversed.iter().map(|r| r + 1).collect();
        return lay_out(values, &dims, &permutation, &reversed);
    }
    let rank = dims.len();
    let mut strides = vec![1isize; rank];
    for i in (0..rank - 1).rev() {
        strides[i] = strides[i + 1] * dims[i + 1] as isize;
    }
    // The source offset and step of each result dimension; a reversed dimension starts at its
    // last index and steps backwards.
    let out_dims: Vec<usize> = permutation.iter().map(|&p| dims[p]).collect();
    let mut steps: Vec<isize> = permutation.iter().map(|&p| strides[p]).collect();
    let mut offset = 0isize;
    for &d in reversed {
        offset += steps[d] * (out_dims[d] as isize - 1);
        steps[d] = -steps[d];
    }
    let (na, nb) = (out_dims[rank - 2], out_dims[rank - 1]);
    let (sa, sb) = (steps[rank - 2], steps[rank - 1]);
    let plane = na * nb;
    if plane == 0 || values.is_empty() {
        return values.to_vec();
    }
    // The last two result dimensions are copied in square tiles: a kernel's output channels
    // are far apart in the source, and a tile reuses each source cache line for a whole row.
    const TILE: usize = 32;
    let mut out = vec![values[0]; values.len()];
    let mut index = vec![0usize; rank - 2];
    for p in 0..values.len() / plane {
        let base = p * plane;
        for a0 in (0..na).step_by(TILE) {
            for b0 in (0..nb).step_by(TILE) {
                for a in a0..(a0 + TILE).min(na) {
                    let src = offset + a as isize * sa;
                    let row = &mut out[base + a * nb..base + (a + 1) * nb];
                    for b in b0..(b0 + TILE).min(nb) {
                        row[b] = values[(src + b as isize * sb) as usize];
                    }
                }
            }
        }
        for d in (0..rank - 2).rev() {
            index[d] += 1;
            offset += steps[d];
            if index[d] < out_dims[d] {
                break;
            }
            offset -= steps[d] * out_dims[d] as isize;
            index[d] = 0;
        }
    }
    out
}

fn decode(bytes: &[u8], dtype: StDtype) -> Result<Vec<f64>> {
    Ok(match dtype {
        StDtype::F32 => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        StDtype::F16 => bytes
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        StDtype::BF16 => bytes
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f64())
            .collect(),
        StDtype::F64 => bytes
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        other => bail!("weights stored as {other:?} are not supported (expected f32, f16 or bf16)"),
    })
}

fn encode(values: &[f64], dtype: DType) -> Result<Vec<u8>> {
    Ok(match dtype {
        DType::F32 => values
            .iter()
            .flat_map(|&v| (v as f32).to_le_bytes())
            .collect(),
        DType::F64 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        DType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f64(v).to_le_bytes())
            .collect(),
        DType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f64(v).to_le_bytes())
            .collect(),
        other => bail!("weights cannot be converted to {other}"),
    })
}

/// The names a component's safetensors weights may have, as diffusers and transformers save
/// them: one file `<stem>.safetensors` (with a variant `<stem>.<variant>.safetensors`), else a
/// shard index `<stem>.safetensors.index.json` (with a variant
/// `<stem>.safetensors.index.<variant>.json`, or the older `<stem>.<variant>.safetensors.index.json`)
/// whose `weight_map` lists the shards. Returns (the single file, the index names in the order
/// they are looked for). The Hub download ([`crate::model::hub`]) picks files by the same names.
pub fn weight_file_names(stem: &str, variant: Option<&str>) -> (String, Vec<String>) {
    match variant {
        Some(v) => (
            format!("{stem}.{v}.safetensors"),
            vec![
                format!("{stem}.safetensors.index.{v}.json"),
                format!("{stem}.{v}.safetensors.index.json"),
            ],
        ),
        None => (
            format!("{stem}.safetensors"),
            vec![format!("{stem}.safetensors.index.json")],
        ),
    }
}

/// The shard files a safetensors index lists in its `weight_map` (relative to the index's
/// folder), sorted and without repeats.
pub fn shard_names(index: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(index)
        .with_context(|| format!("cannot read {}", index.display()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not valid JSON", index.display()))?;
    let map = json["weight_map"]
        .as_object()
        .with_context(|| format!("{} has no weight_map", index.display()))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|v| v.as_str())
        .map(str::to_string)
        .collect();
    files.sort();
    files.dedup();
    if let Some(bad) = files
        .iter()
        .find(|f| f.is_empty() || f.starts_with('/') || f.split('/').any(|part| part == ".."))
    {
        bail!(
            "{} lists a shard outside its folder: {bad}",
            index.display()
        );
    }
    Ok(files)
}

/// The weight files of a diffusers component folder, by the names of [`weight_file_names`].
pub fn component_files(dir: &Path, stem: &str, variant: Option<&str>) -> Result<Vec<PathBuf>> {
    let (single_name, index_names) = weight_file_names(stem, variant);
    let single = dir.join(&single_name);
    if single.is_file() {
        return Ok(vec![single]);
    }
    if let Some(index) = index_names
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
    {
        return Ok(shard_names(&index)?.iter().map(|f| dir.join(f)).collect());
    }
    let hint = match variant {
        Some(v) => format!(" (variant {v}; drop --variant if the folder has plain files)"),
        None if dir.join(format!("{stem}.fp16.safetensors")).is_file() => {
            " (the folder has fp16 files: pass --variant fp16)".to_string()
        }
        None => String::new(),
    };
    bail!("no {single_name} in {}{hint}", dir.display())
}

#[cfg(test)]
mod tests {
    use super::lay_out;

    #[test]
    fn deprecated_attention_names_map_to_todays() {
        use super::renamed_attention_key as r;
        let mid = "encoder.mid_block.attentions.0";
        assert_eq!(
            r(&format!("{mid}.query.weight")).as_deref(),
            Some("encoder.mid_block.attentions.0.to_q.weight")
        );
        assert_eq!(
            r(&format!("{mid}.proj_attn.bias")).as_deref(),
            Some("encoder.mid_block.attentions.0.to_out.0.bias")
        );
        assert_eq!(r(&format!("{mid}.group_norm.weight")), None);
        assert_eq!(r(&format!("{mid}.to_k.weight")), None);
        assert_eq!(r("encoder.conv_in.weight"), None);
        assert_eq!(r("text_model.encoder.layers.0.self_attn.key.weight"), None);
    }

    #[test]
    fn lay_out_moves_each_element_to_its_permuted_reversed_index() {
        // OIHW [2, 3, 4, 5] -> HWIO [4, 5, 3, 2]: element (o, i, h, w) holds 1000o+100i+10h+w.
        let dims = [2, 3, 4, 5];
        let mut values = Vec::new();
        for o in 0..2 {
            for i in 0..3 {
                for h in 0..4 {
                    for w in 0..5 {
                        values.push((1000 * o + 100 * i + 10 * h + w) as f64);
                    }
                }
            }
        }
        let out = lay_out(&values, &dims, &[2, 3, 1, 0], &[]);
        let mut k = 0;
        for h in 0..4 {
            for w in 0..5 {
                for i in 0..3 {
                    for o in 0..2 {
                        assert_eq!(out[k], (1000 * o + 100 * i + 10 * h + w) as f64);
                        k += 1;
                    }
                }
            }
        }
        assert_eq!(lay_out(&values, &dims, &[0, 1, 2, 3], &[]), values);
        assert_eq!(lay_out(&[7.0], &[], &[], &[]), vec![7.0]);
        assert_eq!(lay_out(&[1, 2, 3], &[3], &[0], &[0]), vec![3, 2, 1]);
        // Larger than a tile in both of the last two dimensions: [70, 40] -> its transpose.
        let m: Vec<usize> = (0..2800).collect();
        let t = lay_out(&m, &[70, 40], &[1, 0], &[]);
        assert!((0..40).all(|c| (0..70).all(|r| t[c * 70 + r] == r * 40 + c)));
        // The input gradient's kernel: [h, w, o, i] = (o, i, 3-h, 4-w).
        let out = lay_out(&values, &dims, &[2, 3, 0, 1], &[0, 1]);
        let mut k = 0;
        for h in 0..4 {
            for w in 0..5 {
                for o in 0..2 {
                    for i in 0..3 {
                        let v = 1000 * o + 100 * i + 10 * (3 - h) + (4 - w);
                        assert_eq!(out[k], v as f64);
                        k += 1;
                    }
                }
            }
        }
    }
}
