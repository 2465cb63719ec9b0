//! Learning-rate schedules as diffusers' `get_scheduler` builds them for the trainers: a
//! multiplier of the base rate per optimizer step, evaluated before that step's update (torch's
//! `LambdaLR` semantics, so with warm-up the very first update uses a rate of 0, as in the
//! reference).

use std::f64::consts::PI;

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum LrSchedulerKind {
    #[value(name = "constant")]
    Constant,
    #[value(name = "constant_with_warmup")]
    ConstantWithWarmup,
    #[value(name = "linear")]
    Linear,
    #[value(name = "cosine")]
    Cosine,
    #[value(name = "cosine_with_restarts")]
    CosineWithRestarts,
    #[value(name = "polynomial")]
    Polynomial,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LrSchedule {
    pub kind: LrSchedulerKind,
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    /// Hard restarts for `cosine_with_restarts` (`--lr-num-cycles`).
    pub num_cycles: u64,
}

/// diffusers' polynomial defaults: decay to 1e-7 linearly.
const POLY_LR_END: f64 = 1e-7;
const POLY_POWER: f64 = 1.0;

impl LrSchedule {
    /// The learning rate of the update at optimizer step `step` (0-based).
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.multiplier(step)
    }

    fn multiplier(&self, step: u64) -> f64 {
        let (s, w, t) = (
            step as f64,
            self.warmup_steps as f64,
            self.total_steps as f64,
        );
        let warming = step < self.warmup_steps;
        let ramp = s / w.max(1.0);
        let progress = (s - w) / (t - w).max(1.0);
        match self.kind {
            LrSchedulerKind::Constant => 1.0,
            LrSchedulerKind::ConstantWithWarmup => {
                if warming {
                    ramp
                } else {
                    1.0
                }
            }
            LrSchedulerKind::Linear => {
                if warming {
                    ramp
                } else {
                    ((t - s) / (t - w).max(1.0)).max(0.0)
                }
            }
            LrSchedulerKind::Cosine => {
                if warming {
                    ramp
                } else {
                    // num_cycles = 0.5: half a cosine from 1 to 0.
                    (0.5 * (1.0 + (PI * 0.5 * 2.0 * progress).cos())).max(0.0)
                }
            }
            LrSchedulerKind::CosineWithRestarts => {
                if warming {
                    ramp
                } else if progress >= 1.0 {
                    0.0
                } else {
                    let phase = (self.num_cycles as f64 * progress) % 1.0;
                    (0.5 * (1.0 + (PI * phase).cos())).max(0.0)
                }
            }
            LrSchedulerKind::Polynomial => {
                if warming {
                    ramp
                } else if step > self.total_steps {
                    POLY_LR_END / self.base_lr
                } else {
                    let range = self.base_lr - POLY_LR_END;
                    let remaining = 1.0 - (s - w) / (t - w);
                    (range * remaining.powf(POLY_POWER) + POLY_LR_END) / self.base_lr
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(kind: LrSchedulerKind, warmup: u64, total: u64) -> LrSchedule {
        LrSchedule {
            kind,
            base_lr: 1e-3,
            warmup_steps: warmup,
            total_steps: total,
            num_cycles: 2,
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-12
    }

    #[test]
    fn warmup_ramps_linearly_from_zero_for_every_warmup_kind() {
        use LrSchedulerKind::*;
        for kind in [
            ConstantWithWarmup,
            Linear,
            Cosine,
            CosineWithRestarts,
            Polynomial,
        ] {
            let s = sched(kind, 10, 110);
            assert_eq!(
                s.lr(0),
                0.0,
                "{kind:?}: the first update has rate 0, as LambdaLR gives"
            );
            assert!(close(s.lr(5), 0.5e-3), "{kind:?}");
            assert!(
                close(s.lr(10), 1e-3),
                "{kind:?} reaches the base rate after warm-up"
            );
        }
        assert!(
            close(sched(Constant, 10, 110).lr(0), 1e-3),
            "constant ignores warm-up"
        );
    }

    #[test]
    fn decays_follow_their_closed_forms() {
        use LrSchedulerKind::*;
        // Linear: halfway through the decay, half the rate; zero at the end.
        assert!(close(sched(Linear, 10, 110).lr(60), 0.5e-3));
        assert!(close(sched(Linear, 10, 110).lr(110), 0.0));
        // Cosine (half a period): 1/2 at the midpoint, (1 + cos(pi/4))/2 at a quarter.
        assert!(close(sched(Cosine, 10, 110).lr(60), 0.5e-3));
        assert!(close(
            sched(Cosine, 10, 110).lr(35),
            1e-3 * 0.5 * (1.0 + (PI / 4.0).cos())
        ));
        // Two hard restarts: the rate is back at the top at the half-way point.
        let r = sched(CosineWithRestarts, 10, 110);
        assert!(close(r.lr(60), 1e-3));
        assert!(close(r.lr(35), 0.5e-3));
        assert!(close(r.lr(110), 0.0));
        // Polynomial with power 1 decays linearly to 1e-7.
        let p = sched(Polynomial, 10, 110);
        assert!(close(p.lr(60), (1e-3 - 1e-7) * 0.5 + 1e-7));
        assert!(close(p.lr(110), 1e-7));
        assert!(close(p.lr(500), 1e-7));
    }
}
