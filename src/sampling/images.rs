//! The images a run writes: `{index:04}.png` per sample with the settings in PNG text chunks
//! (one key per setting, plus A1111's `parameters` line that image viewers and web UIs read),
//! and `grid.png` with every sample; written atomically, never over an earlier run's PNGs
//! unless asked.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

use crate::data::resize::Rgb8;
use crate::io::atomic_file::write_atomic;

/// What made an image, stored in its text chunks.
#[derive(Clone, Debug)]
pub struct ImageSettings {
    pub prompt: String,
    pub negative_prompt: String,
    pub seed: u64,
    pub steps: usize,
    pub guidance_scale: f64,
    pub scheduler: String,
    pub model: String,
    pub width: usize,
    pub height: usize,
}

impl ImageSettings {
    /// The text chunks of sample `index`.
    pub fn chunks(&self, index: usize) -> Vec<(String, String)> {
        let s = self;
        let parameters = format!(
            "{}\nNegative prompt: {}\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Sample: {index}, Size: {}x{}, Model: {}",
            s.prompt, s.negative_prompt, s.steps, s.scheduler, s.guidance_scale, s.seed, s.width, s.height, s.model
        );
        [
            ("prompt", s.prompt.clone()),
            ("negative_prompt", s.negative_prompt.clone()),
            ("seed", s.seed.to_string()),
            ("sample_index", index.to_string()),
            ("steps", s.steps.to_string()),
            ("guidance_scale", s.guidance_scale.to_string()),
            ("scheduler", s.scheduler.clone()),
            ("model", s.model.clone()),
            ("parameters", parameters),
            ("software", format!("ti-xla {}", env!("CARGO_PKG_VERSION"))),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

pub fn sample_path(dir: &Path, index: usize) -> PathBuf {
    dir.join(format!("{index:04}.png"))
}

pub fn grid_path(dir: &Path) -> PathBuf {
    dir.join("grid.png")
}

/// Errors if any PNG the run would write exists, unless `overwrite`.
pub fn check_outputs(dir: &Path, samples: usize, overwrite: bool) -> Result<()> {
    if overwrite {
        return Ok(());
    }
    let existing = (0..samples)
        .map(|i| sample_path(dir, i))
        .chain([grid_path(dir)])
        .find(|p| p.exists());
    if let Some(p) = existing {
        bail!(
            "{} already exists; pass --overwrite to replace it, or another --output-dir",
            p.display()
        );
    }
    Ok(())
}

/// One `[3, height, width]` image in [0, 1] as 8-bit RGB, rounded as numpy rounds
/// (`(x * 255).round()`, half to even) in diffusers' `numpy_to_pil`.
pub fn to_rgb8(chw: &[f32], width: usize, height: usize) -> Rgb8 {
    let plane = width * height;
    let mut data = Vec::with_capacity(3 * plane);
    for i in 0..plane {
        for c in 0..3 {
            let v = (chw[c * plane + i].clamp(0.0, 1.0) * 255.0).round_ties_even();
            data.push(v as u8);
        }
    }
    Rgb8 {
        width,
        height,
        data,
    }
}

/// The images side by side, `cols` per row, in order; unfilled cells black.
pub fn grid(images: &[Rgb8], cols: usize) -> Rgb8 {
    let (w, h) = images.first().map_or((0, 0), |i| (i.width, i.height));
    let cols = cols.clamp(1, images.len().max(1));
    let rows = images.len().div_ceil(cols);
    let width = w * cols;
    let mut data = vec![0u8; width * h * rows * 3];
    for (k, img) in images.iter().enumerate() {
        let (x0, y0) = ((k % cols) * w, (k / cols) * h);
        for y in 0..h {
            let src = &img.data[y * w * 3..(y + 1) * w * 3];
            let at = ((y0 + y) * width + x0) * 3;
            data[at..at + w * 3].copy_from_slice(src);
        }
    }
    Rgb8 {
        width,
        height: h * rows,
        data,
    }
}

/// Columns of the grid: as square as the count allows.
pub fn grid_columns(count: usize) -> usize {
    (1..=count.max(1)).find(|c| c * c >= count).unwrap_or(1)
}

/// PNG bytes with `chunks` as text chunks (tEXt when Latin-1, else UTF-8 iTXt).
pub fn encode_png(image: &Rgb8, chunks: &[(String, String)]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, image.width as u32, image.height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (key, text) in chunks {
            if text.chars().all(|c| (c as u32) < 256) {
                encoder.add_text_chunk(key.clone(), text.clone())?;
            } else {
                encoder.add_itxt_chunk(key.clone(), text.clone())?;
            }
        }
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&image.data)?;
        writer.finish()?;
    }
    Ok(bytes)
}

/// Writes every sample and the grid; returns the paths written.
pub fn write_images(dir: &Path, images: &[Rgb8], settings: &ImageSettings) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut written = Vec::new();
    for (i, img) in images.iter().enumerate() {
        let path = sample_path(dir, i);
        write_atomic(&path, &encode_png(img, &settings.chunks(i))?)?;
        written.push(path);
    }
    let mut chunks = settings.chunks(0);
    chunks.retain(|(k, _)| k != "sample_index" && k != "parameters");
    let path = grid_path(dir);
    write_atomic(
        &path,
        &encode_png(&grid(images, grid_columns(images.len())), &chunks)?,
    )?;
    written.push(path);
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn solid(v: u8) -> Rgb8 {
        Rgb8 {
            width: 2,
            height: 1,
            data: vec![v; 6],
        }
    }

    #[test]
    fn grid_places_images_row_by_row() {
        assert_eq!(grid_columns(1), 1);
        assert_eq!(grid_columns(4), 2);
        assert_eq!(grid_columns(5), 3);
        let g = grid(&[solid(1), solid(2), solid(3)], 2);
        assert_eq!((g.width, g.height), (4, 2));
        assert_eq!(g.data[0], 1);
        assert_eq!(g.data[2 * 3], 2);
        assert_eq!(g.data[4 * 3], 3);
        assert_eq!(g.data[6 * 3], 0);
    }

    #[test]
    fn quantises_like_numpy() {
        let img = to_rgb8(&[0.5 / 255.0, 1.5 / 255.0, 2.0], 1, 1);
        assert_eq!(img.data, [0, 2, 255]);
    }

    #[test]
    fn png_keeps_text_chunks() {
        let chunks = vec![
            ("prompt".to_string(), "a <cat-toy> café".to_string()),
            ("negative_prompt".to_string(), "猫".to_string()),
        ];
        let bytes = encode_png(&solid(7), &chunks).unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!(info.uncompressed_latin1_text[0].text, "a <cat-toy> café");
        assert_eq!(info.utf8_text[0].get_text().unwrap(), "猫");
    }
}
