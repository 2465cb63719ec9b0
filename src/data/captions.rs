//! What each training example says: the caption templates (the reference's, or a user's
//! `--templates FILE`) and, with `--caption-extension`, each image's own caption from the file
//! beside it (kohya's layout: `photo.png` and `photo.txt`), with the placeholder written where
//! the caption or template says `{}` or `[name]` (AUTOMATIC1111's template word), else put in
//! front; and kohya's `--caption-dropout-rate`, which empties whole captions.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::templates::LearnableProperty;

/// The longest caption or template file read (a caption is a sentence or a tag list).
pub const MAX_CAPTION_BYTES: u64 = 64 * 1024;

/// The words a caption or template marks the placeholder's place with.
const MARKS: [&str; 2] = ["{}", "[name]"];

pub struct Captions {
    templates: Vec<String>,
    /// Per training image, its caption (None: the templates).
    per_image: Vec<Option<String>>,
    dropout: f64,
}

impl Captions {
    /// The templates of `property` or of `templates_file`, and the caption of each of
    /// `images` whose `extension` file exists (`.txt` or `txt`).
    pub fn load(
        property: LearnableProperty,
        templates_file: Option<&Path>,
        images: &[PathBuf],
        extension: Option<&str>,
        dropout: f64,
    ) -> Result<Captions> {
        let templates = match templates_file {
            None => property.templates().iter().map(|t| t.to_string()).collect(),
            Some(path) => read_templates(path)?,
        };
        let per_image = images
            .iter()
            .map(|image| match extension {
                Some(ext) => read_caption(&caption_path(image, ext)),
                None => Ok(None),
            })
            .collect::<Result<_>>()?;
        Ok(Captions {
            templates,
            per_image,
            dropout,
        })
    }

    /// The number of templates an epoch draws from.
    pub fn template_count(&self) -> usize {
        self.templates.len()
    }

    /// The images that have a caption of their own.
    pub fn captioned(&self) -> usize {
        self.per_image.iter().filter(|c| c.is_some()).count()
    }

    /// The text of an example: image `image`'s caption, else template `template`, with
    /// `placeholder` ("P" or "P P_1 P_2") in it; empty when `dropped`.
    pub fn text(&self, image: usize, template: usize, placeholder: &str, dropped: bool) -> String {
        if dropped {
            return String::new();
        }
        match self.per_image.get(image).and_then(|c| c.as_deref()) {
            Some(caption) => with_placeholder(caption, placeholder),
            None => with_placeholder(
                &self.templates[template % self.templates.len()],
                placeholder,
            ),
        }
    }

    /// Whether the example at `position` of epoch `epoch` has its caption dropped: a draw
    /// of its own (a ChaCha stream apart from the epoch order's), so the order and every other
    /// draw stay those of a run without dropout, on any number of devices.
    pub fn dropped(&self, seed: u64, epoch: u64, position: usize) -> bool {
        if self.dropout <= 0.0 {
            return false;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(epoch | 1 << 63);
        rng.set_word_pos(position as u128 * 2);
        let u = (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        u < self.dropout
    }
}

/// `image`'s caption file: the same name with `extension` (".txt", or "txt").
pub fn caption_path(image: &Path, extension: &str) -> PathBuf {
    image.with_extension(extension.trim_start_matches('.'))
}

/// `text` with the placeholder at each `{}` / `[name]`, or in front when it has neither.
pub fn with_placeholder(text: &str, placeholder: &str) -> String {
    if MARKS.iter().any(|m| text.contains(m)) {
        MARKS
            .iter()
            .fold(text.to_string(), |t, m| t.replace(m, placeholder))
    } else {
        format!("{placeholder} {text}")
    }
}

fn read_text(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?
        .len();
    if size > MAX_CAPTION_BYTES {
        bail!(
            "{} is {size} bytes; a caption or template file may have at most {MAX_CAPTION_BYTES}",
            path.display()
        );
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    String::from_utf8(bytes)
        .with_context(|| format!("{} is not UTF-8 text; save it as UTF-8", path.display()))
}

/// An image's caption: the file's text, trimmed, lines joined with spaces; None when there
/// is no file or it is empty.
fn read_caption(path: &Path) -> Result<Option<String>> {
    if !path.is_file() {
        return Ok(None);
    }
    let text = read_text(path)?;
    let caption = text.split_whitespace().collect::<Vec<_>>().join(" ");
    Ok((!caption.is_empty()).then_some(caption))
}

/// One template per line; blank lines and lines starting with `#` are skipped; each must mark
/// the placeholder's place.
fn read_templates(path: &Path) -> Result<Vec<String>> {
    let text = read_text(path)?;
    let mut templates = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if !MARKS.iter().any(|m| line.contains(m)) {
            bail!(
                "{} line {}: {line:?} has no {{}} or [name] where the placeholder goes",
                path.display(),
                i + 1
            );
        }
        templates.push(line.to_string());
    }
    if templates.is_empty() {
        bail!(
            "{} has no templates: write one per line, e.g. \"a photo of {{}}\"",
            path.display()
        );
    }
    Ok(templates)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_placeholder_goes_where_marked_else_in_front() {
        assert_eq!(with_placeholder("a photo of {}", "<t>"), "a photo of <t>");
        assert_eq!(
            with_placeholder("[name] on a [name] table", "<t> <t>_1"),
            "<t> <t>_1 on a <t> <t>_1 table"
        );
        assert_eq!(
            with_placeholder("red mug, kitchen", "<t>"),
            "<t> red mug, kitchen"
        );
    }

    #[test]
    fn dropout_draws_are_fixed_by_seed_epoch_and_position_at_about_the_rate() {
        let c = Captions {
            templates: vec!["{}".into()],
            per_image: vec![],
            dropout: 0.25,
        };
        let n = 20_000;
        let dropped = (0..n).filter(|&p| c.dropped(7, 3, p)).count();
        // Binomial(20000, 0.25): sd 61; 6 sd either side.
        assert!((dropped as i64 - 5000).abs() < 370, "{dropped}");
        assert_eq!(c.dropped(7, 3, 11), c.dropped(7, 3, 11));
        let other: Vec<bool> = (0..64).map(|p| c.dropped(7, 4, p)).collect();
        let this: Vec<bool> = (0..64).map(|p| c.dropped(7, 3, p)).collect();
        assert_ne!(this, other, "another epoch, other draws");
        let none = Captions { dropout: 0.0, ..c };
        assert!((0..100).all(|p| !none.dropped(7, 3, p)));
    }
}
