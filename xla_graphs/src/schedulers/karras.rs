//! Karras et al. (2022) noise levels (`use_karras_sigmas`): `n` sigmas from `sigma_max` down to
//! `sigma_min`, evenly spaced in `sigma^(1/7)`, and the (fractional) training timestep diffusers
//! gives each one by interpolating in log sigma (`_sigma_to_t`). DPM-Solver++ with these levels
//! is the "DPM++ 2M Karras" sampler.

/// diffusers' `_convert_to_karras` with rho = 7.
pub(crate) fn karras_sigmas(sigma_max: f64, sigma_min: f64, n: usize) -> Vec<f64> {
    const RHO: f64 = 7.0;
    let (max_inv, min_inv) = (sigma_max.powf(1.0 / RHO), sigma_min.powf(1.0 / RHO));
    (0..n)
        .map(|i| {
            // np.linspace(0, 1, n): the last point is exactly 1.
            let ramp = if n == 1 {
                0.0
            } else {
                i as f64 / (n - 1) as f64
            };
            (max_inv + ramp * (min_inv - max_inv)).powf(RHO)
        })
        .collect()
}

/// diffusers' `_sigma_to_t`: the timestep at noise level `sigma`, linear in log sigma between
/// the two training timesteps around it (`train_sigmas` ascending in t), clamped to the table.
pub(crate) fn sigma_to_t(sigma: f64, train_sigmas: &[f64]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let n = train_sigmas.len();
    // The last index whose log sigma is at most ours (0 if none), at most n - 2.
    let low = train_sigmas
        .iter()
        .rposition(|s| log_sigma - s.ln() >= 0.0)
        .unwrap_or(0)
        .min(n.saturating_sub(2));
    let (lo, hi) = (train_sigmas[low].ln(), train_sigmas[low + 1].ln());
    let w = ((lo - log_sigma) / (lo - hi)).clamp(0.0, 1.0);
    (1.0 - w) * low as f64 + w * (low + 1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_run_from_max_to_min_evenly_in_the_seventh_root() {
        let s = karras_sigmas(14.6, 0.03, 5);
        assert!((s[0] - 14.6).abs() < 1e-12 && (s[4] - 0.03).abs() < 1e-12);
        let roots: Vec<f64> = s.iter().map(|v| v.powf(1.0 / 7.0)).collect();
        for w in roots.windows(3) {
            assert!(((w[0] - w[1]) - (w[1] - w[2])).abs() < 1e-12);
        }
    }

    #[test]
    fn timesteps_interpolate_log_sigma_and_clamp() {
        let train = [0.1, 0.2, 0.4, 0.8];
        assert_eq!(sigma_to_t(0.2, &train), 1.0);
        // Half-way in log between 0.2 and 0.4.
        assert!((sigma_to_t((0.2f64 * 0.4).sqrt(), &train) - 1.5).abs() < 1e-12);
        assert_eq!(sigma_to_t(0.01, &train), 0.0);
        assert_eq!(sigma_to_t(5.0, &train), 3.0);
        assert_eq!(sigma_to_t(0.8, &train), 3.0);
    }
}
