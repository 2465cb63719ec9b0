//! Where the inference timesteps fall among the training ones (`timestep_spacing`), with the
//! numpy arithmetic diffusers uses reproduced exactly: `np.linspace`, `np.arange` with a float
//! step and `np.round` (half to even), since one rounding difference moves a timestep.

use serde::Deserialize;

use super::SchedulerError;

/// Table 2 of "Common Diffusion Noise Schedules and Sample Steps are Flawed".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TimestepSpacing {
    Linspace,
    Leading,
    Trailing,
}

/// `np.linspace(start, stop, num)`: `i * step + start`, the last point set to `stop`.
pub fn linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    if num == 1 {
        return vec![start];
    }
    let step = (stop - start) / (num - 1) as f64;
    let mut out: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
    if let Some(last) = out.last_mut() {
        *last = stop;
    }
    out
}

/// `np.arange(start, stop, step)` for a float step: numpy sizes it `ceil((stop - start) / step)`
/// and fills `start + i * delta` with `delta = (start + step) - start`, so a step like 1000/61
/// gives one element more than the steps asked for (diffusers keeps it).
pub fn arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil().max(0.0) as usize;
    let delta = (start + step) - start;
    (0..len).map(|i| start + i as f64 * delta).collect()
}

/// `np.round`: ties to even.
pub fn round(x: f64) -> f64 {
    x.round_ties_even()
}

/// The integer timesteps of DDIM and PNDM (DDIMScheduler.set_timesteps), largest first.
pub fn integer_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    n: usize,
    steps_offset: usize,
) -> Result<Vec<f64>, SchedulerError> {
    check_count(train_steps, n)?;
    let t = train_steps as f64;
    let mut ts: Vec<f64> = match spacing {
        TimestepSpacing::Linspace => linspace(0.0, t - 1.0, n).into_iter().map(round).collect(),
        TimestepSpacing::Leading => (0..n)
            .map(|i| (i * (train_steps / n) + steps_offset) as f64)
            .collect(),
        TimestepSpacing::Trailing => arange(t, 0.0, -t / n as f64)
            .into_iter()
            .map(|x| round(x) - 1.0)
            .collect(),
    };
    if spacing != TimestepSpacing::Trailing {
        ts.reverse();
    }
    check_range(&ts, train_steps)?;
    Ok(ts)
}

/// Euler's timesteps (EulerDiscreteScheduler.set_timesteps): the same points, but linspace is
/// not rounded, and every value is stored as float32, which is what the UNet is given.
pub fn float32_timesteps(
    spacing: TimestepSpacing,
    train_steps: usize,
    n: usize,
    steps_offset: usize,
) -> Result<Vec<f64>, SchedulerError> {
    let ts = match spacing {
        TimestepSpacing::Linspace => {
            check_count(train_steps, n)?;
            let mut ts = linspace(0.0, train_steps as f64 - 1.0, n);
            ts.reverse();
            ts
        }
        _ => integer_timesteps(spacing, train_steps, n, steps_offset)?,
    };
    Ok(ts.into_iter().map(|t| t as f32 as f64).collect())
}

pub(crate) fn check_count(train_steps: usize, n: usize) -> Result<(), SchedulerError> {
    if n == 0 || n > train_steps {
        return Err(SchedulerError(format!(
            "num_inference_steps {n} must be between 1 and num_train_timesteps {train_steps}"
        )));
    }
    Ok(())
}

pub(crate) fn check_range(ts: &[f64], train_steps: usize) -> Result<(), SchedulerError> {
    match ts
        .iter()
        .find(|&&t| t < 0.0 || t > train_steps as f64 - 1.0)
    {
        Some(t) => Err(SchedulerError(format!(
            "timestep {t} falls outside 0..{train_steps} with these settings \
             (diffusers' float arange adds an extra step for some counts)"
        ))),
        None => Ok(()),
    }
}

/// `np.interp(x, arange(len(table)), table)` for `x` in range.
pub fn interp(x: f64, table: &[f64]) -> f64 {
    let last = table.len() - 1;
    if x <= 0.0 {
        return table[0];
    }
    if x >= last as f64 {
        return table[last];
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return table[j];
    }
    let slope = table[j + 1] - table[j];
    slope * (x - j as f64) + table[j]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_arange_keeps_its_extra_element() {
        assert_eq!(
            arange(1000.0, 0.0, -1000.0 / 16.0)[..3],
            [1000.0, 937.5, 875.0]
        );
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 7.0).len(), 7);
        // numpy: len(np.arange(1000, 0, -1000/61)) == 62.
        assert_eq!(arange(1000.0, 0.0, -1000.0 / 61.0).len(), 62);
    }

    #[test]
    fn spacings_match_numpy() {
        use TimestepSpacing::*;
        // np.round(np.arange(1000, 0, -62.5)) - 1 ties to even: 937.5 -> 938, 812.5 -> 812.
        let t = integer_timesteps(Trailing, 1000, 16, 0).unwrap();
        assert_eq!(t[..4], [999.0, 937.0, 874.0, 811.0]);
        assert_eq!(
            integer_timesteps(Linspace, 1000, 7, 0).unwrap(),
            [999.0, 832.0, 666.0, 500.0, 333.0, 166.0, 0.0]
        );
        assert_eq!(
            integer_timesteps(Leading, 1000, 7, 1).unwrap(),
            [853.0, 711.0, 569.0, 427.0, 285.0, 143.0, 1.0]
        );
        assert_eq!(
            float32_timesteps(Linspace, 1000, 7, 0).unwrap()[..2],
            [999.0, 832.5]
        );
        assert!(integer_timesteps(Trailing, 1000, 61, 0).is_err());
        assert!(integer_timesteps(Leading, 1000, 0, 0).is_err());
    }

    #[test]
    fn interp_hits_the_table_at_integers() {
        let table = [1.0, 3.0, 7.0];
        assert_eq!(interp(1.0, &table), 3.0);
        assert_eq!(interp(1.25, &table), 4.0);
        assert_eq!(interp(2.0, &table), 7.0);
    }
}
