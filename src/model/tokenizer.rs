//! The CLIP tokenizer of a Stable Diffusion model, built on the `tokenizers` crate so that its ids
//! are those of transformers' `CLIPTokenizer` (the tokenizers-backed one of transformers 5, which
//! is also 4.x's `CLIPTokenizerFast`): NFC + whitespace collapse + lowercase, CLIP's split regex,
//! byte-level BPE with `</w>` word ends, `<|startoftext|> ... <|endoftext|>`, truncated and padded
//! to the model's max length (77). Placeholder tokens are added the way diffusers'
//! `textual_inversion.py` adds them (`P`, `P_1`, ..., matched as whole added tokens).

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// CLIP's context length, used when `tokenizer_config.json` gives no usable `model_max_length`.
pub const DEFAULT_MAX_LENGTH: usize = 77;

/// The pre-tokenizer split of transformers 5's `CLIPTokenizer` (4.x's converter lacked the two
/// special-token alternatives; they only matter for special tokens not caught as added tokens).
const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

const BOS: &str = "<|startoftext|>";
const EOS: &str = "<|endoftext|>";

/// A Stable Diffusion model's CLIP tokenizer (the `tokenizer/` folder of a diffusers model).
pub struct ClipTokenizer {
    inner: Tokenizer,
    max_length: usize,
    pad_token: String,
    /// Ids of the placeholder tokens added by [`ClipTokenizer::add_placeholder_tokens`].
    placeholder_ids: Vec<u32>,
}

impl ClipTokenizer {
    /// Loads the tokenizer in `dir` as transformers does: `tokenizer.json` when present, else
    /// `vocab.json` + `merges.txt`; pad token and max length from `special_tokens_map.json` and
    /// `tokenizer_config.json`.
    pub fn from_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let json = dir.join("tokenizer.json");
        if json.is_file() {
            let inner = Tokenizer::from_file(&json)
                .map_err(|e| anyhow!("cannot read tokenizer {}: {e}", json.display()))?;
            Self::configure(inner, dir)
        } else {
            Self::from_vocab_and_merges(dir)
        }
    }

    /// Builds the tokenizer from `dir/vocab.json` + `dir/merges.txt` (ignoring any
    /// `tokenizer.json`), exactly as transformers' `CLIPTokenizer` builds its pipeline.
    pub fn from_vocab_and_merges(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let (vocab, merges) = (dir.join("vocab.json"), dir.join("merges.txt"));
        if !vocab.is_file() || !merges.is_file() {
            bail!(
                "no CLIP tokenizer in {}: expected tokenizer.json or vocab.json + merges.txt",
                dir.display()
            );
        }
        let config = TokenizerConfig::read(dir)?;
        let path_str = |p: &Path| {
            p.to_str()
                .map(str::to_owned)
                .ok_or_else(|| anyhow!("path {} is not valid UTF-8", p.display()))
        };
        let bpe = BPE::from_file(&path_str(&vocab)?, &path_str(&merges)?)
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_owned())
            .unk_token(
                config
                    .special("unk_token")
                    .unwrap_or_else(|| EOS.to_owned()),
            )
            .build()
            .map_err(|e| {
                anyhow!(
                    "cannot read {} + {}: {e}",
                    vocab.display(),
                    merges.display()
                )
            })?;
        let mut inner = Tokenizer::new(bpe);
        let whitespace = Replace::new(
            tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".to_owned()),
            " ",
        )
        .map_err(|e| anyhow!("whitespace normaliser: {e}"))?;
        inner.with_normalizer(Some(NormalizerSequence::new(vec![
            NFC.into(),
            whitespace.into(),
            Lowercase.into(),
        ])));
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_REGEX.to_owned()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(|e| anyhow!("CLIP split regex: {e}"))?;
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::default().add_prefix_space(false).into(),
        ])));
        let bos = config
            .special("bos_token")
            .unwrap_or_else(|| BOS.to_owned());
        let eos = config
            .special("eos_token")
            .unwrap_or_else(|| EOS.to_owned());
        let id = |t: &str| {
            inner
                .token_to_id(t)
                .ok_or_else(|| anyhow!("{}: token {t} is not in vocab.json", dir.display()))
        };
        let processor = RobertaProcessing::new((eos.clone(), id(&eos)?), (bos.clone(), id(&bos)?))
            .trim_offsets(false)
            .add_prefix_space(false);
        inner.with_post_processor(Some(processor));
        Self::configure(inner, dir)
    }

    /// Adds the special tokens, truncation and padding that transformers takes from the configs.
    fn configure(mut inner: Tokenizer, dir: &Path) -> Result<Self> {
        let config = TokenizerConfig::read(dir)?;
        let pad_token = config
            .special("pad_token")
            .unwrap_or_else(|| EOS.to_owned());
        // transformers registers every special token as a special added token: the text is split
        // on it (SD 2 pads with "!", so "!" in a prompt becomes the pad id 0, not BPE "!</w>").
        let present: Vec<String> = inner
            .get_added_tokens_decoder()
            .values()
            .map(|t| t.content.clone())
            .collect();
        let mut specials: Vec<AddedToken> = Vec::new();
        for key in ["bos_token", "eos_token", "unk_token", "pad_token"] {
            let default = if key == "bos_token" { BOS } else { EOS };
            let token = config.special(key).unwrap_or_else(|| default.to_owned());
            if !present.contains(&token) && !specials.iter().any(|t| t.content == token) {
                specials.push(AddedToken::from(token, true));
            }
        }
        inner.add_special_tokens(&specials);
        // Tokens a trainer added (a saved full pipeline's placeholders), in id order.
        for (id, content) in config.added_tokens() {
            if inner.token_to_id(&content).is_none() {
                inner.add_tokens(&[AddedToken::from(content.clone(), false)]);
                if inner.token_to_id(&content) != Some(id) {
                    bail!(
                        "{}: added token {content:?} should have id {id} but the vocabulary does not reach it",
                        dir.display()
                    );
                }
            }
        }
        let pad_id = inner.token_to_id(&pad_token).ok_or_else(|| {
            anyhow!(
                "{}: pad token {pad_token:?} is not in the vocabulary",
                dir.display()
            )
        })?;
        let max_length = config.max_length();
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| anyhow!("truncation to {max_length}: {e}"))?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad_token.clone(),
        }));
        Ok(Self {
            inner,
            max_length,
            pad_token,
            placeholder_ids: Vec::new(),
        })
    }

    /// Token ids of `text` with BOS/EOS, truncated (EOS kept) and padded to [`Self::max_length`],
    /// as `tokenizer(text, padding="max_length", truncation=True).input_ids`.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, true)
            .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Ids without BOS/EOS or padding, as `tokenizer.encode(text, add_special_tokens=False)`.
    pub fn encode_without_special_tokens(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("cannot tokenize {text:?}: {e}"))?;
        // Padding is configured on the tokenizer; the attention mask tells padding from text.
        Ok(encoding
            .get_ids()
            .iter()
            .zip(encoding.get_attention_mask())
            .filter(|(_, &mask)| mask == 1)
            .map(|(&id, _)| id)
            .collect())
    }

    /// Adds the placeholder tokens `token`, `token_1`, ..., `token_{num_vectors-1}` (as
    /// `tokenizer.add_tokens` does in diffusers' textual_inversion.py) and returns their ids.
    /// Errors when any of them is already a token, or when `num_vectors` is 0.
    pub fn add_placeholder_tokens(&mut self, token: &str, num_vectors: usize) -> Result<Vec<u32>> {
        if num_vectors == 0 {
            bail!("--num_vectors must be at least 1");
        }
        if token.trim().is_empty() {
            bail!(
                "the placeholder token is empty: pass a --placeholder_token such as \"<cat-toy>\""
            );
        }
        let names = placeholder_token_names(token, num_vectors);
        if let Some(existing) = names.iter().find(|n| self.inner.token_to_id(n).is_some()) {
            bail!(
                "the tokenizer already contains the token {existing:?}: choose a different --placeholder_token"
            );
        }
        // Not special, so matched on the normalised (lowercased) text, as transformers does.
        let added: Vec<AddedToken> = names
            .iter()
            .map(|n| AddedToken::from(n.clone(), false))
            .collect();
        self.inner.add_tokens(&added);
        let ids = names
            .iter()
            .map(|n| {
                self.inner
                    .token_to_id(n)
                    .ok_or_else(|| anyhow!("placeholder token {n:?} was not added"))
            })
            .collect::<Result<Vec<u32>>>()?;
        self.placeholder_ids.extend(&ids);
        Ok(ids)
    }

    /// The id of the initializer word, which must encode to exactly one existing token.
    pub fn encode_initializer(&self, token: &str) -> Result<u32> {
        let ids = self
            .encode_without_special_tokens(token)
            .with_context(|| format!("initializer token {token:?}"))?;
        match ids.as_slice() {
            [id] if self.placeholder_ids.contains(id) => bail!(
                "the initializer token {token:?} is a placeholder token: choose an existing word such as \"toy\""
            ),
            [id] => Ok(*id),
            _ => bail!(
                "the initializer token {token:?} is {} tokens {ids:?}, not one: choose a word that is a single token",
                ids.len()
            ),
        }
    }

    /// The id of a token (vocabulary or added), if it exists.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The token string of an id (vocabulary or added), if it exists.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Number of ids, added tokens included: the rows the token embedding needs.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Length every encoding is truncated and padded to.
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding token (`<|endoftext|>` for SD 1.x, `!` for SD 2.x).
    pub fn pad_token(&self) -> &str {
        &self.pad_token
    }
}

/// `token`, `token_1`, ..., `token_{num_vectors-1}`: the placeholder tokens of a multi-vector
/// embedding, as diffusers names them (a prompt uses them joined by spaces).
pub fn placeholder_token_names(token: &str, num_vectors: usize) -> Vec<String> {
    (0..num_vectors)
        .map(|i| {
            if i == 0 {
                token.to_owned()
            } else {
                format!("{token}_{i}")
            }
        })
        .collect()
}

/// `tokenizer_config.json` and `special_tokens_map.json`, either of which may be missing.
struct TokenizerConfig {
    config: Value,
    special_tokens_map: Value,
    /// `added_tokens.json`: `{token: id}`.
    added: Value,
}

impl TokenizerConfig {
    fn read(dir: &Path) -> Result<Self> {
        let read = |name: &str| -> Result<Value> {
            let path = dir.join(name);
            if !path.is_file() {
                return Ok(Value::Null);
            }
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read {}", path.display()))?;
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))
        };
        Ok(Self {
            config: read("tokenizer_config.json")?,
            special_tokens_map: read("special_tokens_map.json")?,
            added: read("added_tokens.json")?,
        })
    }

    /// A special token (`"pad_token"`, ...), written as a string or as `{"content": ...}`.
    /// `special_tokens_map.json` wins over `tokenizer_config.json`, as in transformers (SD 2 sets
    /// its pad "!" in the map).
    fn special(&self, key: &str) -> Option<String> {
        let content = |v: &Value| match v.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Object(o) => o.get("content")?.as_str().map(str::to_owned),
            _ => None,
        };
        content(&self.special_tokens_map).or_else(|| content(&self.config))
    }

    /// Non-special added tokens with their ids, ascending: `added_tokens_decoder` of
    /// `tokenizer_config.json` and the older `added_tokens.json` (read into `added`).
    fn added_tokens(&self) -> Vec<(u32, String)> {
        let mut out: Vec<(u32, String)> = Vec::new();
        if let Some(map) = self
            .config
            .get("added_tokens_decoder")
            .and_then(Value::as_object)
        {
            for (id, t) in map {
                let special = t.get("special").and_then(Value::as_bool).unwrap_or(false);
                if let (Ok(id), Some(content), false) = (
                    id.parse(),
                    t.get("content").and_then(Value::as_str),
                    special,
                ) {
                    out.push((id, content.to_owned()));
                }
            }
        }
        if let Some(map) = self.added.as_object() {
            for (content, id) in map {
                if let Some(id) = id.as_u64() {
                    if !out.iter().any(|(_, c)| c == content) {
                        out.push((id as u32, content.clone()));
                    }
                }
            }
        }
        out.sort();
        out
    }

    /// `model_max_length`, unless missing or transformers' "no limit" sentinel (about 1e30).
    fn max_length(&self) -> usize {
        self.config
            .get("model_max_length")
            .and_then(Value::as_u64)
            .filter(|&n| n > 0 && n <= 1 << 20)
            .map_or(DEFAULT_MAX_LENGTH, |n| n as usize)
    }
}
