//! Learned embedding files, as diffusers' `load_textual_inversion` reads them: a diffusers
//! file (one tensor keyed by its token, `[n, D]` or `[D]`), an A1111/kohya safetensors file
//! (`emb_params`, or `string_to_param.*` from a flattened A1111 dict, named by the metadata's
//! `name` or the file name), then the tokens added to the tokenizer after the vocabulary and
//! multi-vector tokens expanded in prompts (`P` -> `P P_1 P_2`).
//! PyTorch files (A1111 `.pt`, diffusers `.bin`) are read without unpickling (`torch_pickle`).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::io::learned_embeds::SDXL_KEYS;
use crate::io::torch_pickle;
use crate::model::tokenizer::{placeholder_token_names, ClipTokenizer};
use crate::model::tokenizers::Tokenizers;

/// The key of A1111's (and kohya's) safetensors embeddings.
const EMB_PARAMS: &str = "emb_params";
/// `string_to_param["*"]` of an A1111 `.pt` dict once flattened into safetensors.
const STRING_TO_PARAM: &str = "string_to_param.*";

/// One learned token and its vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedEmbedding {
    pub token: String,
    /// Values per vector: `widths` together.
    pub hidden: usize,
    /// One width per text encoder the file is for: `[D]`, or SDXL's `[D_clip_l, D_clip_g]`.
    pub widths: Vec<usize>,
    /// Row-major `[num_vectors, hidden]` (SDXL: each row `clip_l`'s then `clip_g`'s values).
    pub rows: Vec<f32>,
    pub path: PathBuf,
}

impl LearnedEmbedding {
    pub fn num_vectors(&self) -> usize {
        self.rows.len() / self.hidden
    }

    /// The tokens the prompt uses: `P`, `P_1`, ...
    pub fn token_names(&self) -> Vec<String> {
        placeholder_token_names(&self.token, self.num_vectors())
    }
}

/// Reads an embedding file; `token` replaces the name stored in it.
pub fn read_embedding(path: &Path, token: Option<&str>) -> Result<LearnedEmbedding> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let found = match sniff(&bytes) {
        Format::Safetensors => {
            from_safetensors(&bytes, stem).with_context(|| format!("{}", path.display()))?
        }
        Format::TorchZip => from_torch(&bytes, stem).with_context(|| format!("{}", path.display()))?,
        Format::LegacyPickle => bail!(
            "{} is a PyTorch file in the pre-1.6 format, which ti-xla does not read; save it again with a current torch, or as safetensors",
            path.display()
        ),
        Format::Unknown => bail!(
            "{} is not an embedding file ti-xla reads (safetensors, or a torch.save .pt/.bin archive)",
            path.display()
        ),
    };
    if let Some(bad) = found.values.iter().find(|v| !v.is_finite()) {
        bail!(
            "{}: {} holds {bad}; a usable embedding is finite (the training that wrote it diverged)",
            path.display(),
            found.key
        );
    }
    let hidden = match found.shape.as_slice() {
        [d] if *d > 0 => *d,
        [n, d] if *n > 0 && *d > 0 => *d,
        shape => bail!(
            "{} in {} has shape {shape:?}; an embedding is [vectors, hidden] or [hidden]",
            found.key,
            path.display()
        ),
    };
    let widths = found.widths.clone().unwrap_or_else(|| vec![hidden]);
    let token = token.map_or(found.name, str::to_string);
    if token.trim().is_empty() {
        bail!(
            "{} names no token: pass --token NAME for it",
            path.display()
        );
    }
    Ok(LearnedEmbedding {
        token,
        hidden,
        widths,
        rows: found.values,
        path: path.to_path_buf(),
    })
}

/// What an embedding file is, by a check of its whole framing, not one byte.
#[derive(Debug, PartialEq, Eq)]
enum Format {
    Safetensors,
    TorchZip,
    LegacyPickle,
    Unknown,
}

fn sniff(bytes: &[u8]) -> Format {
    // safetensors: an 8-byte little-endian header length, then that many bytes of JSON.
    if let Some(len) = bytes
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().expect("8")))
    {
        let fits = len >= 2
            && len
                .checked_add(8)
                .is_some_and(|end| end <= bytes.len() as u64);
        if fits && bytes[8] == b'{' {
            return Format::Safetensors;
        }
    }
    if bytes.starts_with(b"PK\x03\x04") {
        return Format::TorchZip;
    }
    // torch.save before 1.6: a pickle (PROTO 2..5) starting with the legacy magic number.
    if bytes.len() > 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
        return Format::LegacyPickle;
    }
    Format::Unknown
}

/// The embedding tensor a file holds, before its shape is checked.
struct Found {
    /// Where in the file it is, for errors.
    key: String,
    /// The token the file names.
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
    /// SDXL's two parts' widths (the values then hold each row's parts side by side).
    widths: Option<Vec<usize>>,
}

fn from_safetensors(bytes: &[u8], stem: String) -> Result<Found> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("not a safetensors embedding file ({e})"))?;
    let metadata_name = SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().as_ref()?.get("name").cloned());
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
    if SDXL_KEYS.iter().all(|k| names.iter().any(|n| n == k)) && names.len() == 2 {
        return sdxl_pair(&st, metadata_name.unwrap_or(stem));
    }
    let (key, name) = if names.iter().any(|n| n == STRING_TO_PARAM) {
        (STRING_TO_PARAM.to_string(), metadata_name.unwrap_or(stem))
    } else if names.iter().any(|n| n == EMB_PARAMS) {
        (EMB_PARAMS.to_string(), metadata_name.unwrap_or(stem))
    } else if names.len() == 1 {
        (names[0].clone(), names[0].clone())
    } else {
        bail!(
            "not an embedding file ti-xla knows: it holds {}; expected one tensor named by its token (diffusers), `{EMB_PARAMS}` (A1111, kohya) or `{STRING_TO_PARAM}` (a flattened A1111 dict)",
            if names.is_empty() { "no tensors".to_string() } else { format!("tensors {}", names.join(", ")) }
        );
    };
    let view = st.tensor(&key).expect("a listed name");
    Ok(Found {
        values: tensor_values(&key, &view)?,
        key,
        name,
        shape: view.shape().to_vec(),
        widths: None,
    })
}

/// An SDXL embedding: `clip_l` [n, D1] and `clip_g` [n, D2] joined row by row.
fn sdxl_pair(st: &SafeTensors<'_>, name: String) -> Result<Found> {
    let mut parts = Vec::new();
    for key in SDXL_KEYS {
        let view = st.tensor(key).expect("a listed name");
        let shape = match view.shape() {
            [d] => [1, *d],
            [n, d] => [*n, *d],
            other => bail!("{key} has shape {other:?}; expected [vectors, width]"),
        };
        if shape[0] == 0 || shape[1] == 0 {
            bail!("{key} is empty");
        }
        parts.push((shape, tensor_values(key, &view)?));
    }
    let ([n1, d1], [n2, d2]) = (parts[0].0, parts[1].0);
    if n1 != n2 {
        bail!("clip_l has {n1} vectors but clip_g {n2}: the file is damaged");
    }
    let mut values = Vec::with_capacity(n1 * (d1 + d2));
    for i in 0..n1 {
        values.extend_from_slice(&parts[0].1[i * d1..(i + 1) * d1]);
        values.extend_from_slice(&parts[1].1[i * d2..(i + 1) * d2]);
    }
    Ok(Found {
        key: "clip_l, clip_g".to_string(),
        name,
        shape: vec![n1, d1 + d2],
        values,
        widths: Some(vec![d1, d2]),
    })
}

/// A safetensors tensor's values as f32.
fn tensor_values(key: &str, view: &safetensors::tensor::TensorView<'_>) -> Result<Vec<f32>> {
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => view
            .data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        Dtype::F16 => view
            .data()
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => view
            .data()
            .chunks_exact(2)
            .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        other => bail!("{key} is {other:?}; an embedding is f32, f16 or bf16"),
    };
    Ok(values)
}

/// A1111's `.pt` (`string_to_param["*"]` and `name`) or diffusers' `.bin` (`{token: tensor}`).
fn from_torch(bytes: &[u8], stem: String) -> Result<Found> {
    let value = torch_pickle::load(bytes)?;
    let (key, name, tensor) = if let Some(params) = value.get("string_to_param") {
        let name = match value.get("name") {
            Some(torch_pickle::Value::Str(n)) => n.clone(),
            _ => stem,
        };
        ("string_to_param[\"*\"]".to_string(), name, params.get("*"))
    } else {
        match &value {
            torch_pickle::Value::Dict(items) if items.len() == 1 => match &items[0] {
                (torch_pickle::Value::Str(k), t) => (k.clone(), k.clone(), Some(t)),
                _ => bail!("the PyTorch file's one entry is not keyed by a token"),
            },
            _ => bail!("not an embedding file ti-xla knows: expected an A1111 dict with string_to_param or one tensor keyed by its token (diffusers)"),
        }
    };
    match tensor {
        Some(torch_pickle::Value::Tensor(t)) => Ok(Found {
            key,
            name,
            shape: t.shape.clone(),
            values: t.values.clone(),
            widths: None,
        }),
        _ => bail!("{key} is not a tensor"),
    }
}

/// Reads every `--learned-embeds` file, with the `--token` names in the files' order.
pub fn read_embeddings(paths: &[PathBuf], tokens: &[String]) -> Result<Vec<LearnedEmbedding>> {
    if !tokens.is_empty() && tokens.len() != paths.len() {
        bail!(
            "{} --token name(s) for {} --learned-embeds file(s): give one per file, in the same order",
            tokens.len(),
            paths.len()
        );
    }
    paths
        .iter()
        .enumerate()
        .map(|(i, p)| read_embedding(p, tokens.get(i).map(String::as_str)))
        .collect()
}

/// Adds every embedding's tokens to the tokenizers (whose ids must then follow each text
/// encoder's vocabulary) and returns all their rows, in id order, to append to the token
/// tables; `widths` are the model's text encoders' hidden sizes.
pub fn add_to_tokenizer(
    tokenizers: &mut Tokenizers,
    embeddings: &[LearnedEmbedding],
    widths: &[usize],
) -> Result<Vec<f32>> {
    let hidden: usize = widths.iter().sum();
    let mut rows = Vec::new();
    for (i, e) in embeddings.iter().enumerate() {
        if e.widths != widths {
            let kind = |w: &[usize]| match w.len() {
                1 => format!("an SD 1.x/2.x embedding of width {}", w[0]),
                _ => format!("an SDXL embedding of widths {w:?} (clip_l, clip_g)"),
            };
            let model = match widths.len() {
                1 => format!("an SD 1.x/2.x model with text encoder width {}", widths[0]),
                _ => format!("an SDXL model with text encoder widths {widths:?}"),
            };
            bail!(
                "{}: the embedding {:?} is {}, but this is {model}: use an embedding trained for this model",
                e.path.display(),
                e.token,
                kind(&e.widths)
            );
        }
        if let Some(other) = embeddings[..i].iter().find(|o| o.token == e.token) {
            bail!(
                "{} and {} both hold the token {:?}: rename one with --token",
                other.path.display(),
                e.path.display(),
                e.token
            );
        }
        if let Some(existing) = e
            .token_names()
            .into_iter()
            .find(|n| tokenizers.all.iter().any(|t| t.token_id(n).is_some()))
        {
            bail!(
                "{}: the token {existing:?} is already in the model's tokenizer; pass --token with another name",
                e.path.display()
            );
        }
        tokenizers
            .add_placeholder_tokens(&e.token, e.num_vectors(), rows.len() / hidden)
            .with_context(|| format!("{}", e.path.display()))?;
        rows.extend_from_slice(&e.rows);
    }
    Ok(rows)
}

/// `prompt` with each multi-vector token `P` the tokenizer knows (`P_1`, `P_2`, ... are tokens
/// too) written out as `P P_1 ... P_{n-1}`, as diffusers' `maybe_convert_prompt` does; an
/// occurrence already followed by `_<digit>` is left alone. Works for tokens added from files
/// and for those a saved full pipeline's tokenizer lists.
pub fn expand_prompt(tokenizer: &ClipTokenizer, prompt: &str) -> Result<String> {
    let mut tokens: Vec<(String, usize)> = Vec::new();
    for id in tokenizer.encode_without_special_tokens(prompt)? {
        let Some(token) = tokenizer.id_to_token(id) else {
            continue;
        };
        let n = (1..)
            .find(|i| tokenizer.token_id(&format!("{token}_{i}")).is_none())
            .unwrap_or(1);
        if n > 1 && !tokens.iter().any(|(t, _)| *t == token) {
            tokens.push((token, n));
        }
    }
    Ok(expand_tokens(prompt, &tokens))
}

/// `text` with each `(P, n)` written out as `P P_1 ... P_{n-1}`.
fn expand_tokens(text: &str, tokens: &[(String, usize)]) -> String {
    let mut text = text.to_string();
    for (token, n) in tokens {
        let expansion = placeholder_token_names(token, *n).join(" ");
        let mut out = String::with_capacity(text.len());
        let mut rest = text.as_str();
        while let Some(at) = rest.find(token.as_str()) {
            let after = &rest[at + token.len()..];
            let numbered = after
                .strip_prefix('_')
                .is_some_and(|s| s.starts_with(|c: char| c.is_ascii_digit()));
            out.push_str(&rest[..at]);
            out.push_str(if numbered { token } else { &expansion });
            rest = after;
        }
        out.push_str(rest);
        text = out;
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_vector_tokens_expand_once() {
        let tokens = [("<cat-toy>".to_string(), 3), ("<style>".to_string(), 1)];
        assert_eq!(
            expand_tokens("a <cat-toy>, in <style> with <cat-toy>_1", &tokens),
            "a <cat-toy> <cat-toy>_1 <cat-toy>_2, in <style> with <cat-toy>_1"
        );
        assert_eq!(expand_tokens("no token", &tokens), "no token");
    }
}
