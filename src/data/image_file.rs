//! Reading one training image as 8-bit RGB: any of jpg, png, webp, bmp and tiff, EXIF
//! orientation applied, grayscale expanded, alpha dropped (as Pillow's `convert("RGB")` does)
//! and 16-bit samples scaled to 8 bits (Pillow would clip them to 255 instead).

use std::path::Path;

use anyhow::{bail, Context, Result};
use image::{DynamicImage, ImageDecoder, ImageReader};

use super::resize::Rgb8;

/// File extensions read as images (lower case).
pub const IMAGE_EXTENSIONS: [&str; 7] = ["jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff"];

pub fn has_image_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| IMAGE_EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// The largest image side read (a 16K photo), checked before decoding.
pub const MAX_SIDE: u32 = 16384;
/// The most pixels read (120 megapixels: 360 MB as 8-bit RGB).
pub const MAX_PIXELS: u64 = 120_000_000;
/// The decoder's allocation limit.
const MAX_ALLOC: u64 = 1 << 30;

/// Loads `path` as upright 8-bit RGB; the error names the file. Declared sizes beyond
/// [`MAX_SIDE`] or [`MAX_PIXELS`] are refused before any pixel is decoded (a few bytes can
/// declare a 100000 x 100000 image), and a JPEG cut short is refused rather than read grey.
pub fn load_rgb8(path: &Path) -> Result<Rgb8> {
    Ok(to_rgb8(load_image(path)?))
}

/// Loads `path` upright with the checks of [`load_rgb8`], as decoded (alpha kept).
pub fn load_image(path: &Path) -> Result<DynamicImage> {
    let what = || format!("cannot read image {}", path.display());
    let reader = ImageReader::open(path)
        .with_context(what)?
        .with_guessed_format()
        .with_context(what)?;
    if reader.format() == Some(image::ImageFormat::Jpeg) {
        let bytes = std::fs::read(path).with_context(what)?;
        if !jpeg_is_complete(&bytes) {
            bail!(
                "{} is a truncated JPEG (no end-of-image marker after its last scan): copy the file again",
                path.display()
            );
        }
    }
    let mut decoder = reader.into_decoder().with_context(what)?;
    let (w, h) = decoder.dimensions();
    if w > MAX_SIDE || h > MAX_SIDE || w as u64 * h as u64 > MAX_PIXELS {
        bail!(
            "{} declares {w}x{h} pixels; ti-xla reads images up to {MAX_SIDE} px per side and {} megapixels: downscale it first",
            path.display(),
            MAX_PIXELS / 1_000_000
        );
    }
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_ALLOC);
    decoder.set_limits(limits).with_context(what)?;
    // A missing or unreadable EXIF block means "as stored", not a broken image.
    let orientation = decoder
        .orientation()
        .unwrap_or(image::metadata::Orientation::NoTransforms);
    let mut img = DynamicImage::from_decoder(decoder).with_context(what)?;
    img.apply_orientation(orientation);
    Ok(img)
}

/// Whether a JPEG's last scan (SOS, FF DA) is followed by its end-of-image marker (FF D9). An
/// EOI earlier in the file (an EXIF thumbnail's) does not count.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|w| w == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(sos), Some(eoi)) => eoi > sos,
        _ => false,
    }
}

/// 16-bit samples to 8 bits with rounding: v * 255 / 65535.
fn scale16(v: u16) -> u8 {
    ((v as u32 * 255 + 32767) / 65535) as u8
}

fn to_rgb8(img: DynamicImage) -> Rgb8 {
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        DynamicImage::ImageLuma16(b) => {
            b.into_raw().iter().flat_map(|&v| [scale16(v); 3]).collect()
        }
        DynamicImage::ImageLumaA16(b) => b
            .into_raw()
            .chunks_exact(2)
            .flat_map(|p| [scale16(p[0]); 3])
            .collect(),
        DynamicImage::ImageRgb16(b) => b.into_raw().iter().map(|&v| scale16(v)).collect(),
        DynamicImage::ImageRgba16(b) => b
            .into_raw()
            .chunks_exact(4)
            .flat_map(|p| [scale16(p[0]), scale16(p[1]), scale16(p[2])])
            .collect(),
        other => other.to_rgb8().into_raw(),
    };
    Rgb8 {
        width,
        height,
        data,
    }
}
