//! `--masked-loss`: a per-pixel weight on the loss from each image's alpha channel, or from
//! `NAME.mask.png` beside it (grey levels; white is 1), as kohya's masked loss: the mask is
//! cropped and resized as its image is (so it covers the same pixels), scaled to [0, 1], and
//! averaged down to the latent size (PyTorch's `interpolate(mode="area")`, which for the VAE's
//! whole downscale factor is the mean of each factor x factor block). Images without either
//! weigh every pixel 1.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

use super::dataset::Sample;
use super::image_file::load_image;
use super::resize::Rgb8;

/// `image`'s mask file: `photo.png` -> `photo.mask.png`.
pub fn mask_path(image: &Path) -> PathBuf {
    let stem = image.file_stem().unwrap_or_default().to_string_lossy();
    image.with_file_name(format!("{stem}.mask.png"))
}

/// Whether `path` is a mask file (`*.mask.png`), not a training image.
pub fn is_mask_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.to_ascii_lowercase().ends_with(".mask.png"))
}

/// Each training image's latent-size mask, unflipped and flipped.
pub struct LossMasks {
    /// Latent side.
    pub size: usize,
    /// Per image: [plain, mirrored], `size * size` values each.
    per_image: Vec<[Vec<f32>; 2]>,
    /// Images whose mask came from a file or an alpha channel.
    pub masked: usize,
}

impl LossMasks {
    /// Masks for `paths` (the training images, in order) at `resolution`, cropped as the
    /// images are, averaged over `factor` x `factor` blocks.
    pub fn load(
        paths: &[PathBuf],
        resolution: usize,
        center_crop: bool,
        factor: usize,
    ) -> Result<LossMasks> {
        if factor == 0 || !resolution.is_multiple_of(factor) {
            bail!("--resolution {resolution} is not a multiple of the VAE's factor {factor}");
        }
        let size = resolution / factor;
        let mut per_image = Vec::with_capacity(paths.len());
        let mut masked = 0;
        for path in paths {
            let mask = match pixel_mask(path)? {
                Some(gray) => {
                    masked += 1;
                    let square = if center_crop {
                        gray.center_crop_square()
                    } else {
                        gray
                    };
                    area_mean(&square.resize_bicubic(resolution, resolution), factor)
                }
                None => vec![1.0; size * size],
            };
            let mirrored = mirror(&mask, size);
            per_image.push([mask, mirrored]);
        }
        Ok(LossMasks {
            size,
            per_image,
            masked,
        })
    }

    /// The masks of `samples`, `[B, 1, size, size]` row-major.
    pub fn batch(&self, samples: &[Sample]) -> Vec<f32> {
        samples
            .iter()
            .flat_map(|s| self.per_image[s.image][s.flip as usize].iter().copied())
            .collect()
    }
}

/// The image's mask at its own (upright) size as grey RGB: its `.mask.png`, else its alpha
/// channel, else none.
fn pixel_mask(image: &Path) -> Result<Option<Rgb8>> {
    let img = load_image(image)?;
    let file = mask_path(image);
    let gray = if file.is_file() {
        let mask = load_image(&file)?.to_luma8();
        if mask.dimensions() != (img.width(), img.height()) {
            bail!(
                "{} is {}x{} but {} is {}x{}: a mask must have its image's size",
                file.display(),
                mask.width(),
                mask.height(),
                image.display(),
                img.width(),
                img.height()
            );
        }
        mask.into_raw()
    } else if img.color().has_alpha() {
        // 16-bit alpha is scaled to 8 bits.
        img.to_rgba8().pixels().map(|p| p.0[3]).collect()
    } else {
        return Ok(None);
    };
    Ok(Some(Rgb8 {
        width: img.width() as usize,
        height: img.height() as usize,
        data: gray.into_iter().flat_map(|v| [v; 3]).collect(),
    }))
}

/// The mean of each `factor` x `factor` block of the first channel, scaled to [0, 1].
pub fn area_mean(mask: &Rgb8, factor: usize) -> Vec<f32> {
    let size = mask.width / factor;
    let mut out = vec![0f32; size * size];
    for y in 0..size * factor {
        for x in 0..size * factor {
            out[(y / factor) * size + x / factor] += mask.data[(y * mask.width + x) * 3] as f32;
        }
    }
    let scale = 1.0 / (255.0 * (factor * factor) as f32);
    out.iter_mut().for_each(|v| *v *= scale);
    out
}

fn mirror(mask: &[f32], size: usize) -> Vec<f32> {
    mask.chunks_exact(size)
        .flat_map(|row| row.iter().rev().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_the_area_mean() {
        assert_eq!(
            mask_path(Path::new("d/cat.png")),
            Path::new("d/cat.mask.png")
        );
        assert_eq!(
            mask_path(Path::new("d/cat.jpg")),
            Path::new("d/cat.mask.png")
        );
        assert!(is_mask_file(Path::new("d/cat.MASK.png")));
        assert!(!is_mask_file(Path::new("d/cat.png")));
        // 4x4 with a white left half, factor 2: [[1, 0], [1, 0]]; one grey block.
        let mut data = Vec::new();
        for y in 0..4 {
            for x in 0..4 {
                let v = if x < 2 {
                    255
                } else if y < 2 && x == 3 {
                    102
                } else {
                    0
                };
                data.extend([v; 3]);
            }
        }
        let m = Rgb8 {
            width: 4,
            height: 4,
            data,
        };
        let pooled = area_mean(&m, 2);
        assert_eq!(pooled[0], 1.0);
        assert_eq!(pooled[2], 1.0);
        assert!((pooled[1] - 0.2).abs() < 1e-6, "{pooled:?}");
        assert_eq!(pooled[3], 0.0);
        assert_eq!(mirror(&pooled, 2), vec![pooled[1], 1.0, 0.0, 1.0]);
    }
}
