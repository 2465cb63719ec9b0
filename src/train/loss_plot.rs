//! `loss.png`: the loss per optimizer step (light) and its moving average (dark), with
//! vertical ticks where validation images were made. Drawn directly into an RGB buffer, so no
//! plotting or font library is needed (the numbers themselves are in `train_log.jsonl`).

use std::path::Path;

use anyhow::Result;
use image::{Rgb, RgbImage};

const W: u32 = 800;
const H: u32 = 400;
const MARGIN: u32 = 30;
const RAW: Rgb<u8> = Rgb([170, 190, 230]);
const SMOOTH: Rgb<u8> = Rgb([20, 60, 160]);
const AXIS: Rgb<u8> = Rgb([0, 0, 0]);
const MARK: Rgb<u8> = Rgb([200, 60, 60]);

/// Pixel position of (step index, loss) inside the plot area.
fn to_pixel(i: usize, n: usize, v: f64, lo: f64, hi: f64) -> (i64, i64) {
    let x = MARGIN as f64
        + (W - 2 * MARGIN) as f64
            * if n > 1 {
                i as f64 / (n - 1) as f64
            } else {
                0.5
            };
    let span = if hi > lo { hi - lo } else { 1.0 };
    let y = (H - MARGIN) as f64 - (H - 2 * MARGIN) as f64 * (v - lo) / span;
    (x.round() as i64, y.round() as i64)
}

fn line(img: &mut RgbImage, (x0, y0): (i64, i64), (x1, y1): (i64, i64), color: Rgb<u8>) {
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).max(1);
    for s in 0..=steps {
        let x = x0 + (x1 - x0) * s / steps;
        let y = y0 + (y1 - y0) * s / steps;
        if (0..W as i64).contains(&x) && (0..H as i64).contains(&y) {
            img.put_pixel(x as u32, y as u32, color);
        }
    }
}

/// Renders `losses` (one per step, in order) with `marks` (indices into `losses`).
pub fn render(losses: &[f64], marks: &[usize]) -> RgbImage {
    let mut img = RgbImage::from_pixel(W, H, Rgb([255, 255, 255]));
    line(
        &mut img,
        (MARGIN as i64, MARGIN as i64),
        (MARGIN as i64, (H - MARGIN) as i64),
        AXIS,
    );
    line(
        &mut img,
        (MARGIN as i64, (H - MARGIN) as i64),
        ((W - MARGIN) as i64, (H - MARGIN) as i64),
        AXIS,
    );
    let finite: Vec<f64> = losses.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.is_empty() {
        return img;
    }
    let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let n = losses.len();
    for &m in marks.iter().filter(|&&m| m < n) {
        let (x, _) = to_pixel(m, n, lo, lo, hi);
        line(&mut img, (x, MARGIN as i64), (x, (H - MARGIN) as i64), MARK);
    }
    let points: Vec<(i64, i64)> = losses
        .iter()
        .enumerate()
        .map(|(i, &v)| to_pixel(i, n, v, lo, hi))
        .collect();
    for w in points.windows(2) {
        line(&mut img, w[0], w[1], RAW);
    }
    // An exponential moving average shows the trend through the per-step noise.
    let alpha = (10.0 / n as f64).clamp(0.02, 1.0);
    let mut ema = losses[0];
    let smooth: Vec<(i64, i64)> = losses
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            ema += alpha * (v - ema);
            to_pixel(i, n, ema, lo, hi)
        })
        .collect();
    for w in smooth.windows(2) {
        line(&mut img, w[0], w[1], SMOOTH);
    }
    img
}

/// Writes the plot of `losses` to `path` atomically.
pub fn write(path: &Path, losses: &[f64], marks: &[usize]) -> Result<()> {
    let mut bytes = Vec::new();
    render(losses, marks).write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )?;
    crate::io::atomic_file::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_curve_spans_the_plot_from_highest_to_lowest() {
        let losses: Vec<f64> = (0..50).map(|i| 2.0 - i as f64 * 0.02).collect();
        let img = render(&losses, &[25]);
        // First point top-left of the plot area, last point bottom-right.
        let (x0, y0) = to_pixel(0, 50, 2.0, losses[49], 2.0);
        let (x1, y1) = to_pixel(49, 50, losses[49], losses[49], 2.0);
        assert_eq!((x0, y0), (MARGIN as i64, MARGIN as i64));
        assert_eq!((x1, y1), ((W - MARGIN) as i64, (H - MARGIN) as i64));
        let (xm, ym) = to_pixel(10, 50, losses[10], losses[49], 2.0);
        let on_curve = *img.get_pixel(xm as u32, ym as u32);
        assert!(
            on_curve == RAW || on_curve == SMOOTH,
            "the curve passes through step 10"
        );
        let (mx, _) = to_pixel(25, 50, 0.0, 0.0, 1.0);
        assert_eq!(
            *img.get_pixel(mx as u32, MARGIN + 5),
            MARK,
            "validation mark"
        );
        assert_eq!(
            *img.get_pixel(W - 5, 5),
            Rgb([255, 255, 255]),
            "outside the plot stays white"
        );
    }
}
