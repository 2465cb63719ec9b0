//! The training set: every image of a folder prepared once (RGB, optional centre crop, bicubic
//! resize), and each epoch's order of (image, caption template, flip) drawn from a ChaCha
//! stream keyed by the seed and the epoch, so that the position in an epoch is all a checkpoint
//! needs to continue the same order.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use half::bf16;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::image_file::{has_image_extension, load_rgb8, IMAGE_EXTENSIONS};
use super::resize::Rgb8;

/// The prepared images, in file-name order.
pub struct TrainImages {
    pub paths: Vec<PathBuf>,
    pub images: Vec<Rgb8>,
    pub resolution: usize,
    /// SDXL's size conditioning per image: (original height, original width, crop top, crop
    /// left) as diffusers' SDXL trainer computes them. It squashes the image to a square, so
    /// its crop is (0, 0); with `--center-crop` the crop is where the centred square lies once
    /// the image's short side is scaled to the resolution.
    pub size_conditions: Vec<[usize; 4]>,
}

/// One training example: which image, which caption template, mirrored or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub image: usize,
    pub template: usize,
    pub flip: bool,
}

impl TrainImages {
    /// Reads every image file of `dir`. Other files are skipped (returned: the caller warns
    /// of those that are not captions); an image that cannot be decoded is an error naming it;
    /// no image at all is an error.
    pub fn load(dir: &Path, resolution: usize, center_crop: bool) -> Result<(Self, Vec<PathBuf>)> {
        // Divisibility by the model's downsampling is the trainer's check: it knows the model.
        if resolution == 0 {
            bail!("--resolution must be positive");
        }
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the training images folder {}", dir.display()))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        let mut skipped = Vec::new();
        let mut paths = Vec::new();
        let mut images = Vec::new();
        let mut size_conditions = Vec::new();
        for path in files {
            let hidden = path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with('.'));
            if hidden {
                continue;
            }
            if !has_image_extension(&path) {
                skipped.push(path);
                continue;
            }
            let rgb = load_rgb8(&path)?;
            size_conditions.push(size_condition(
                rgb.height,
                rgb.width,
                resolution,
                center_crop,
            ));
            let square = if center_crop {
                rgb.center_crop_square()
            } else {
                rgb
            };
            images.push(square.resize_bicubic(resolution, resolution));
            paths.push(path);
        }
        if images.is_empty() {
            bail!(
                "no training images in {} (looked for {}); put 3-5 photos of your concept there",
                dir.display(),
                IMAGE_EXTENSIONS.join(", ")
            );
        }
        Ok((
            TrainImages {
                paths,
                images,
                resolution,
                size_conditions,
            },
            skipped,
        ))
    }

    pub fn len(&self) -> usize {
        self.images.len()
    }

    /// Keeps the images whose path passes `keep`.
    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        fn keep_where<T>(v: &mut Vec<T>, kept: &[bool]) {
            let all = std::mem::take(v);
            v.extend(
                all.into_iter()
                    .zip(kept)
                    .filter(|(_, k)| **k)
                    .map(|(x, _)| x),
            );
        }
        let kept: Vec<bool> = self.paths.iter().map(|p| keep(p)).collect();
        keep_where(&mut self.images, &kept);
        keep_where(&mut self.size_conditions, &kept);
        keep_where(&mut self.paths, &kept);
    }

    pub fn is_empty(&self) -> bool {
        self.images.is_empty()
    }

    /// SDXL's time ids of `samples`, `[B, 6]`: original size, crop, target size (the
    /// resolution), as f32.
    pub fn time_ids(&self, samples: &[Sample]) -> Vec<f32> {
        let r = self.resolution as f32;
        samples
            .iter()
            .flat_map(|s| {
                let [h, w, top, left] = self.size_conditions[s.image];
                [h as f32, w as f32, top as f32, left as f32, r, r]
            })
            .collect()
    }

    /// Pixels of `samples` as NCHW [B, 3, R, R] in [-1, 1] (`x / 127.5 - 1`), in bf16.
    pub fn pixel_values(&self, samples: &[Sample]) -> Vec<bf16> {
        let r = self.resolution;
        let mut out = Vec::with_capacity(samples.len() * 3 * r * r);
        for s in samples {
            let img = &self.images[s.image];
            for c in 0..3 {
                for y in 0..r {
                    for x in 0..r {
                        let sx = if s.flip { r - 1 - x } else { x };
                        let v = img.data[(y * r + sx) * 3 + c] as f32 / 127.5 - 1.0;
                        out.push(bf16::from_f32(v));
                    }
                }
            }
        }
        out
    }
}

/// (original height, original width, crop top, crop left) of an image `height` x `width`.
fn size_condition(height: usize, width: usize, resolution: usize, center_crop: bool) -> [usize; 4] {
    if !center_crop {
        return [height, width, 0, 0];
    }
    let short = height.min(width).max(1) as f64;
    let scale = resolution as f64 / short;
    let offset = |side: usize| ((side as f64 * scale - resolution as f64) / 2.0).round() as usize;
    [height, width, offset(height), offset(width)]
}

/// A uniform integer in [0, n) without modulo bias (rejection sampling).
fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    let zone = u64::MAX - u64::MAX % n;
    loop {
        let v = rng.next_u64();
        if v < zone {
            return v % n;
        }
    }
}

/// The samples of epoch `epoch`: `images * repeats` examples, each image `repeats` times,
/// shuffled, each with a random template and a flip with probability 1/2.
pub fn epoch_plan(
    seed: u64,
    epoch: u64,
    images: usize,
    repeats: usize,
    templates: usize,
) -> Vec<Sample> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(epoch);
    let n = images * repeats;
    let mut order: Vec<usize> = (0..n).map(|i| i % images).collect();
    for i in (1..n).rev() {
        let j = below(&mut rng, i as u64 + 1) as usize;
        order.swap(i, j);
    }
    order
        .into_iter()
        .map(|image| Sample {
            image,
            template: below(&mut rng, templates as u64) as usize,
            flip: rng.next_u32() & 1 == 1,
        })
        .collect()
}
