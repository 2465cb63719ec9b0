//! The tokenizers of a pipeline, one per text encoder (`tokenizer/`, and SDXL's `tokenizer_2/`),
//! kept in step: learned tokens are added to every one under the same names, each after its own
//! encoder's vocabulary, and a prompt is encoded by each (the same text to both, as diffusers'
//! SDXL pipeline and trainer do).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::model::folder::ModelFolder;
use crate::model::tokenizer::ClipTokenizer;

pub struct Tokenizers {
    /// In text-encoder order.
    pub all: Vec<ClipTokenizer>,
    /// Each text encoder's `vocab_size`: where the added tokens' ids start.
    vocab_sizes: Vec<usize>,
}

impl Tokenizers {
    /// The folder's tokenizers (`first` replaces `tokenizer/`, as `--tokenizer-name` does), each
    /// checked against its text encoder's table.
    pub fn open(folder: &ModelFolder, first: Option<PathBuf>) -> Result<Tokenizers> {
        let dirs = [
            first.unwrap_or_else(|| folder.component("tokenizer")),
            folder.component("tokenizer_2"),
        ];
        let mut all = Vec::new();
        let mut vocab_sizes = Vec::new();
        for (dir, config) in dirs.iter().zip(folder.text_encoders()) {
            let tokenizer = ClipTokenizer::from_dir(dir)?;
            let vocab = config.vocab_size;
            if tokenizer.vocab_size() != vocab {
                bail!(
                    "the tokenizer {} has {} tokens but its text encoder {vocab} rows: use the model's own tokenizer",
                    dir.display(),
                    tokenizer.vocab_size()
                );
            }
            all.push(tokenizer);
            vocab_sizes.push(vocab);
        }
        let lengths: Vec<usize> = all.iter().map(ClipTokenizer::max_length).collect();
        if lengths.iter().any(|&l| l != lengths[0]) {
            bail!("the tokenizers pad to different lengths {lengths:?}; SDXL needs one length");
        }
        Ok(Tokenizers { all, vocab_sizes })
    }

    pub fn first(&self) -> &ClipTokenizer {
        &self.all[0]
    }

    /// Adds `token`, `token_1`, ... to every tokenizer; their ids must follow each text
    /// encoder's vocabulary after `already` earlier added rows (the rows are appended to the
    /// tables in that order). Returns the first tokenizer's ids.
    pub fn add_placeholder_tokens(
        &mut self,
        token: &str,
        num_vectors: usize,
        already: usize,
    ) -> Result<Vec<u32>> {
        let mut first = None;
        for (tokenizer, &vocab) in self.all.iter_mut().zip(&self.vocab_sizes) {
            let ids = tokenizer.add_placeholder_tokens(token, num_vectors)?;
            let start = (vocab + already) as u32;
            let expected: Vec<u32> = (start..start + num_vectors as u32).collect();
            if ids != expected {
                bail!("the tokens of {token:?} got ids {ids:?}, expected {expected:?}: the tokenizer has added tokens its text encoder lacks");
            }
            first.get_or_insert(ids);
        }
        Ok(first.unwrap_or_default())
    }

    /// Every tokenizer's id of the initializer word, which must be one token in each.
    pub fn encode_initializer(&self, token: &str) -> Result<Vec<u32>> {
        self.all
            .iter()
            .map(|t| t.encode_initializer(token))
            .collect()
    }

    /// `text` through every tokenizer, padded to [`Self::max_length`], as i32.
    pub fn encode(&self, text: &str) -> Result<Vec<Vec<i32>>> {
        self.all
            .iter()
            .map(|t| {
                Ok(t.encode(text)
                    .with_context(|| format!("cannot tokenize {text:?}"))?
                    .into_iter()
                    .map(|i| i as i32)
                    .collect())
            })
            .collect()
    }

    pub fn max_length(&self) -> usize {
        self.first().max_length()
    }
}
