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

use crate::io::torch_pickle;
use crate::model::tokenizer::{placeholder_token_names, ClipTokenizer};

/// The key of A1111's (and kohya's) safetensors embeddings.
const EMB_PARAMS: &str = "emb_params";
/// `string_to_param["*"]` of an A1111 `.pt` dict once flattened into safetensors.
const STRING_TO_PARAM: &str = "string_to_param.*";

/// One learned token and its vectors.
#[derive(Clone, Debug, PartialEq)]
pub struct LearnedEmbedding {
    pub token: String,
    pub hidden: usize,
    /// Row-major `[num_vectors, hidden]`.
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
    // torch.save writes a zip archive; before torch 1.6, a bare pickle.
    let found = if bytes.starts_with(b"PK\x03\x04") {
        from_torch(&bytes, stem).with_context(|| format!("{}", path.display()))?
    } else if bytes.first() == Some(&0x80) {
        bail!(
            "{} is a PyTorch file in the pre-1.6 format, which ti-xla does not read; save it again with a current torch, or as safetensors",
            path.display()
        );
    } else {
        from_safetensors(&bytes, stem).with_context(|| format!("{}", path.display()))?
    };
    let hidden = match found.shape.as_slice() {
        [d] if *d > 0 => *d,
        [n, d] if *n > 0 && *d > 0 => *d,
        shape => bail!(
            "{} in {} has shape {shape:?}; an embedding is [vectors, hidden] or [hidden]",
            found.key,
            path.display()
        ),
    };
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
        rows: found.values,
        path: path.to_path_buf(),
    })
}

/// The embedding tensor a file holds, before its shape is checked.
struct Found {
    /// Where in the file it is, for errors.
    key: String,
    /// The token the file names.
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn from_safetensors(bytes: &[u8], stem: String) -> Result<Found> {
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow::anyhow!("not a safetensors embedding file ({e})"))?;
    let metadata_name = SafeTensors::read_metadata(bytes)
        .ok()
        .and_then(|(_, m)| m.metadata().as_ref()?.get("name").cloned());
    let mut names: Vec<String> = st.names().into_iter().map(str::to_string).collect();
    names.sort();
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
    Ok(Found {
        key,
        name,
        shape: view.shape().to_vec(),
        values,
    })
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

/// Adds every embedding's tokens to `tokenizer` (whose ids must then follow the text
/// encoder's `vocab_size` rows) and returns all their rows, in id order, to append to the token
/// table.
pub fn add_to_tokenizer(
    tokenizer: &mut ClipTokenizer,
    embeddings: &[LearnedEmbedding],
    vocab_size: usize,
    hidden: usize,
) -> Result<Vec<f32>> {
    let mut rows = Vec::new();
    for (i, e) in embeddings.iter().enumerate() {
        if e.hidden != hidden {
            bail!(
                "{}: the embedding {:?} has {} values per vector but this model's text encoder has hidden size {hidden} (SD 1.x uses 768, SD 2.x 1024): use an embedding trained for this model",
                e.path.display(),
                e.token,
                e.hidden
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
            .find(|n| tokenizer.token_id(n).is_some())
        {
            bail!(
                "{}: the token {existing:?} is already in the model's tokenizer; pass --token with another name",
                e.path.display()
            );
        }
        let first = (vocab_size + rows.len() / hidden) as u32;
        let ids = tokenizer.add_placeholder_tokens(&e.token, e.num_vectors())?;
        let expected: Vec<u32> = (first..first + ids.len() as u32).collect();
        if ids != expected {
            bail!(
                "the tokens of {} got ids {ids:?}, expected {expected:?}: the tokenizer has added tokens the text encoder lacks",
                e.path.display()
            );
        }
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
