//! Bicubic resizing exactly as Pillow's `Image.resize(size, Image.BICUBIC)` does it for 8-bit
//! RGB (`libImaging/Resample.c`): a separable Keys cubic (a = -0.5) whose support widens with
//! the downscale factor (antialiasing), coefficients in 22-bit fixed point, the horizontal pass
//! first and rounded to 8 bits before the vertical pass. Matching it bit for bit makes our
//! training pixels the reference trainers' pixels.

/// A dense 8-bit RGB image, row-major, 3 bytes per pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rgb8 {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

const PRECISION_BITS: u32 = 32 - 8 - 2;
const SUPPORT: f64 = 2.0;

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

/// For each output position: the first input index and the fixed-point weights from there.
fn coefficients(in_size: usize, out_size: usize) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = SUPPORT * filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // Pillow truncates toward zero with a C cast; the + 0.5 makes it round.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let weights: Vec<f64> = (xmin..xmax)
                .map(|x| bicubic((x as f64 - center + 0.5) / filterscale))
                .collect();
            let total: f64 = weights.iter().sum();
            let fixed = weights
                .iter()
                .map(|&w| {
                    let w = if total != 0.0 { w / total } else { w };
                    let v = w * (1u32 << PRECISION_BITS) as f64;
                    (if v < 0.0 { -0.5 + v } else { 0.5 + v }) as i32
                })
                .collect();
            (xmin, fixed)
        })
        .collect()
}

fn clip8(acc: i64) -> u8 {
    if acc >= (1i64 << PRECISION_BITS) << 8 {
        255
    } else if acc <= 0 {
        0
    } else {
        (acc >> PRECISION_BITS) as u8
    }
}

/// One pass of the separable filter along rows (`horizontal`) or columns.
fn pass(src: &Rgb8, out_w: usize, out_h: usize, horizontal: bool) -> Rgb8 {
    let coeffs = if horizontal {
        coefficients(src.width, out_w)
    } else {
        coefficients(src.height, out_h)
    };
    let mut data = vec![0u8; out_w * out_h * 3];
    for y in 0..out_h {
        for x in 0..out_w {
            let (start, weights) = if horizontal { &coeffs[x] } else { &coeffs[y] };
            for c in 0..3 {
                let mut acc: i64 = 1 << (PRECISION_BITS - 1);
                for (i, &w) in weights.iter().enumerate() {
                    let (sx, sy) = if horizontal {
                        (start + i, y)
                    } else {
                        (x, start + i)
                    };
                    acc += src.data[(sy * src.width + sx) * 3 + c] as i64 * w as i64;
                }
                data[(y * out_w + x) * 3 + c] = clip8(acc);
            }
        }
    }
    Rgb8 {
        width: out_w,
        height: out_h,
        data,
    }
}

impl Rgb8 {
    /// Pillow's `resize((width, height), BICUBIC)`.
    pub fn resize_bicubic(&self, width: usize, height: usize) -> Rgb8 {
        let mut img = self.clone();
        if width != img.width {
            img = pass(&img, width, img.height, true);
        }
        if height != img.height {
            img = pass(&img, width, height, false);
        }
        img
    }

    /// The centred square of side min(width, height), as the reference trainers crop with
    /// numpy: rows `(h - s) / 2 .. (h + s) / 2`, columns likewise (floor division).
    pub fn center_crop_square(&self) -> Rgb8 {
        let s = self.width.min(self.height);
        let (top, left) = ((self.height - s) / 2, (self.width - s) / 2);
        let mut data = Vec::with_capacity(s * s * 3);
        for y in top..top + s {
            let row = (y * self.width + left) * 3;
            data.extend_from_slice(&self.data[row..row + s * 3]);
        }
        Rgb8 {
            width: s,
            height: s,
            data,
        }
    }

    /// Mirror left-right.
    pub fn flip_horizontal(&self) -> Rgb8 {
        let mut data = Vec::with_capacity(self.data.len());
        for y in 0..self.height {
            for x in (0..self.width).rev() {
                let p = (y * self.width + x) * 3;
                data.extend_from_slice(&self.data[p..p + 3]);
            }
        }
        Rgb8 {
            width: self.width,
            height: self.height,
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(451, 64), (64, 451), (300, 300), (7, 3)] {
            for (_, w) in coefficients(i, o) {
                let sum: i64 = w.iter().map(|&v| v as i64).sum();
                assert!(
                    (sum - (1 << PRECISION_BITS)).abs() <= w.len() as i64,
                    "{i}->{o}: {sum}"
                );
            }
        }
    }

    #[test]
    fn constant_images_stay_constant_and_flips_undo() {
        let img = Rgb8 {
            width: 9,
            height: 5,
            data: [10u8, 200, 77].repeat(45),
        };
        let r = img.resize_bicubic(4, 7);
        assert!(r.data.chunks(3).all(|p| p == [10, 200, 77]));
        let ramp = Rgb8 {
            width: 3,
            height: 2,
            data: (0..18).collect(),
        };
        assert_eq!(ramp.flip_horizontal().flip_horizontal(), ramp);
        assert_eq!(&ramp.flip_horizontal().data[..3], &[6, 7, 8]);
        assert_eq!(
            ramp.center_crop_square().data,
            vec![0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 13, 14]
        );
    }
}
