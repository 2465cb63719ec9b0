//! `loss.png`: the loss of every optimizer step and its moving average against the step, with
//! the steps that made validation images marked, axes with ticks and labels, a legend and a
//! title naming the token and the model; drawn with `plotters` in the font embedded from
//! `assets/fonts/` (DejaVu Sans, Bitstream Vera licence: `assets/fonts/DejaVuSans-LICENSE.txt`).
//! The title is also kept in the PNG's `Title` text chunk, so `ti-xla plot` redraws the same
//! plot from `train_log.jsonl` later.

use std::path::Path;
use std::sync::Once;

use anyhow::{anyhow, Context, Result};
use image::RgbImage;
use plotters::prelude::*;

const W: u32 = 960;
const H: u32 = 540;
const FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
pub const RAW: RGBColor = RGBColor(150, 175, 225);
pub const AVERAGE: RGBColor = RGBColor(20, 60, 160);
pub const VALIDATION: RGBColor = RGBColor(210, 70, 60);

/// One logged step: the 1-based optimizer step and its loss.
pub type Point = (u64, f64);

/// Makes the embedded font the one plotters draws "sans-serif" text with.
fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // The bytes are a valid TTF compiled into the binary (checked by the tests).
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// Steps of the trailing moving average: about a tenth of the run, 1 to 50.
pub fn window(points: usize) -> usize {
    (points / 10).clamp(1, 50)
}

/// The trailing mean of the last `window` losses at each point.
pub fn moving_average(points: &[Point], window: usize) -> Vec<Point> {
    let mut sum = 0.0;
    let mut out = Vec::with_capacity(points.len());
    for (i, &(step, loss)) in points.iter().enumerate() {
        sum += loss;
        if i >= window {
            sum -= points[i - window].1;
        }
        out.push((step, sum / (i + 1).min(window) as f64));
    }
    out
}

/// Draws the plot; `probe` are (step, loss) points whose pixel positions are returned too (for
/// the tests: where plotters put them).
pub fn draw(
    title: &str,
    points: &[Point],
    marks: &[u64],
    probe: &[(f64, f64)],
) -> Result<(RgbImage, Vec<(i32, i32)>)> {
    register_font();
    let points: Vec<Point> = points
        .iter()
        .copied()
        .filter(|(_, l)| l.is_finite())
        .collect();
    let last = points.iter().map(|p| p.0).max().unwrap_or(1).max(1);
    let first = points.iter().map(|p| p.0).min().unwrap_or(0).min(last - 1);
    let (mut lo, mut hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    if !lo.is_finite() {
        (lo, hi) = (0.0, 1.0);
    }
    let pad = if hi > lo {
        0.05 * (hi - lo)
    } else {
        0.1 * lo.abs().max(1e-3)
    };
    let (lo, hi) = (lo - pad, hi + pad);
    let window = window(points.len());
    let average = moving_average(&points, window);

    let mut buffer = vec![0u8; (W * H * 3) as usize];
    let probed;
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (W, H)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| anyhow!("cannot draw loss.png: {e}");
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, (FAMILY, 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(first as f64..last as f64, lo..hi)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("step")
            .y_desc("loss")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 16))
            .light_line_style(RGBColor(238, 238, 238))
            .draw()
            .map_err(e)?;
        let shown: Vec<u64> = marks
            .iter()
            .copied()
            .filter(|m| (first..=last).contains(m))
            .collect();
        for (i, &m) in shown.iter().enumerate() {
            let series = chart
                .draw_series(LineSeries::new(
                    [(m as f64, lo), (m as f64, hi)],
                    VALIDATION.stroke_width(1),
                ))
                .map_err(e)?;
            if i == 0 {
                series.label("validation images").legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], VALIDATION.stroke_width(1))
                });
            }
        }
        let line = |p: &[Point]| p.iter().map(|&(s, l)| (s as f64, l)).collect::<Vec<_>>();
        chart
            .draw_series(LineSeries::new(line(&points), RAW.stroke_width(1)))
            .map_err(e)?
            .label("loss")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RAW.stroke_width(2)));
        chart
            .draw_series(LineSeries::new(line(&average), AVERAGE.stroke_width(2)))
            .map_err(e)?
            .label(format!("moving average ({window} steps)"))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], AVERAGE.stroke_width(2)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK.mix(0.4))
            .draw()
            .map_err(e)?;
        probed = probe.iter().map(|p| chart.backend_coord(p)).collect();
        root.present().map_err(e)?;
    }
    let image = RgbImage::from_raw(W, H, buffer).context("plot buffer size")?;
    Ok((image, probed))
}

/// Writes the plot to `path` atomically as a PNG whose `Title` text chunk holds `title`.
pub fn write(path: &Path, title: &str, points: &[Point], marks: &[u64]) -> Result<()> {
    let (image, _) = draw(title, points, marks, &[])?;
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, W, H);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        encoder.add_itxt_chunk("Title".to_string(), title.to_string())?;
        let mut writer = encoder.write_header()?;
        writer.write_image_data(image.as_raw())?;
        writer.finish()?;
    }
    crate::io::atomic_file::write_atomic(path, &bytes)
}

/// The `Title` a plot written by [`write`] carries, if `path` is one.
pub fn read_title(path: &Path) -> Option<String> {
    let file = std::fs::File::open(path).ok()?;
    let reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .ok()?;
    let info = reader.info();
    info.utf8_text
        .iter()
        .find(|t| t.keyword == "Title")
        .and_then(|t| t.get_text().ok())
        .or_else(|| {
            info.uncompressed_latin1_text
                .iter()
                .find(|t| t.keyword == "Title")
                .map(|t| t.text.clone())
        })
}

/// The title of a run's plot.
pub fn title(token: &str, model: &str) -> String {
    format!("Textual Inversion of {token} on {model}")
}

/// The (1-based step, loss) records of `train_log.jsonl`; lines that do not parse (the last
/// line of a run still writing it) are skipped.
pub fn read_log(path: &Path) -> Result<Vec<Point>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let v = serde_json::from_str::<serde_json::Value>(l).ok()?;
            Some((v["step"].as_u64()?.checked_add(1)?, v["loss"].as_f64()?))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dark_pixels(img: &RgbImage, x: std::ops::Range<u32>, y: std::ops::Range<u32>) -> usize {
        let mut n = 0;
        for yy in y {
            for xx in x.clone() {
                let p = img.get_pixel(xx, yy).0;
                n += (p.iter().map(|&c| c as u32).sum::<u32>() < 300) as usize;
            }
        }
        n
    }

    fn near(img: &RgbImage, (x, y): (i32, i32), color: RGBColor) -> bool {
        let want = [color.0, color.1, color.2];
        (-2..=2).any(|dx| {
            (-2..=2).any(|dy| {
                let (px, py) = ((x + dx) as u32, (y + dy) as u32);
                px < W && py < H && img.get_pixel(px, py).0 == want
            })
        })
    }

    #[test]
    fn the_moving_average_is_the_trailing_mean() {
        let points: Vec<Point> = (1..=6).map(|s| (s, s as f64)).collect();
        let avg = moving_average(&points, 3);
        let want = [1.0, 1.5, 2.0, 3.0, 4.0, 5.0];
        for (a, w) in avg.iter().zip(want) {
            assert!((a.1 - w).abs() < 1e-12, "{avg:?}");
        }
        assert_eq!(window(5), 1);
        assert_eq!(window(300), 30);
        assert_eq!(window(100_000), 50);
    }

    #[test]
    fn the_plot_has_its_curves_marks_text_and_axes() {
        // A straight descent: the raw curve and (after its window) the average lie on it.
        let points: Vec<Point> = (1..=100).map(|s| (s, 2.0 - s as f64 * 0.01)).collect();
        let probe = [(50.0, 1.5), (30.0, 1.0), (1.0, 0.99), (100.0, 0.99)];
        let (img, at) = draw(
            "Textual Inversion of <cat-toy> on tiny",
            &points,
            &[30],
            &probe,
        )
        .unwrap();
        // Step 50 on the curve: drawn in the raw or the average colour (the average of a line
        // lags it by half its window, 10 steps here, so the raw line is what is there).
        assert!(near(&img, at[0], RAW) || near(&img, at[0], AVERAGE));
        // The validation mark at step 30, away from the curve (at loss 1.0).
        assert!(near(&img, at[1], VALIDATION));
        // The x axis runs from the first to the last step, left to right, at the same height.
        assert!(at[2].0 < at[3].0 && at[2].1 == at[3].1);
        // Text: the title above the plot area, tick labels left of the y axis and below the x
        // axis. More title text, more ink.
        let (left, bottom) = (at[2].0 as u32, at[2].1 as u32);
        assert!(dark_pixels(&img, 0..W, 0..30) > 200, "title");
        assert!(
            dark_pixels(&img, 0..left.saturating_sub(4), 40..bottom) > 200,
            "y ticks"
        );
        assert!(
            dark_pixels(&img, left..W, bottom + 4..H) > 200,
            "x ticks and label"
        );
        let (short, _) = draw("A", &points, &[], &[]).unwrap();
        assert!(dark_pixels(&short, 0..W, 0..30) < dark_pixels(&img, 0..W, 0..30) / 4);
    }

    #[test]
    fn a_written_plot_keeps_its_title_and_odd_logs_still_draw() {
        let dir = std::env::temp_dir().join(format!("ti-xla-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("loss.png");
        let title = title("<猫-toy>", "stable-diffusion-v1-5");
        write(&path, &title, &[(1, 0.5), (2, f64::NAN), (3, 0.25)], &[2]).unwrap();
        assert_eq!(read_title(&path).as_deref(), Some(title.as_str()));
        let img = image::open(&path).unwrap();
        assert_eq!((img.width(), img.height()), (W, H));
        // One point, no points, constant losses: still a plot.
        for points in [vec![(7, 0.1)], vec![], vec![(1, 0.3), (2, 0.3)]] {
            draw("t", &points, &[1, 9], &[]).unwrap();
        }
        let log = dir.join("train_log.jsonl");
        std::fs::write(
            &log,
            "{\"step\":0,\"loss\":0.5,\"lr\":0.001}\n{\"step\":1,\"loss\":0.4}\n{\"step\":2,\"lo",
        )
        .unwrap();
        assert_eq!(read_log(&log).unwrap(), vec![(1, 0.5), (2, 0.4)]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
