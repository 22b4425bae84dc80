//! Learning-rate schedules: the learning rate of each step from the optimizer's base rate.
//!
//! Steps and epochs count from 0. Epoch-based schedules (`step`, `exponential`) change at
//! epoch boundaries, as PyTorch's `StepLR`/`ExponentialLR` stepped once per epoch; the
//! others change every step.

use std::f64::consts::PI;

/// A schedule and its settings.
#[derive(Clone, Debug, PartialEq)]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// Multiply by `gamma` every `every` epochs.
    Step {
        /// Epochs between decays.
        every: usize,
        /// The factor.
        gamma: f64,
    },
    /// Multiply by `gamma` every epoch.
    Exponential {
        /// The factor.
        gamma: f64,
    },
    /// Linear warmup from 0 over `warmup` steps, then a cosine decay to `min_lr` at the
    /// last step (Loshchilov & Hutter's SGDR without restarts).
    Cosine {
        /// Warmup steps.
        warmup: usize,
        /// The final learning rate.
        min_lr: f64,
    },
    /// Smith's one-cycle policy as PyTorch's `OneCycleLR` (cosine annealing): from
    /// `base / div` up to `base` over the first `pct_start` of the steps, then down to
    /// `base / div / final_div`.
    OneCycle {
        /// Fraction of steps spent increasing.
        pct_start: f64,
        /// Initial rate is `base / div`.
        div: f64,
        /// Final rate is the initial one divided by this.
        final_div: f64,
    },
}

fn cos_anneal(start: f64, end: f64, pct: f64) -> f64 {
    end + (start - end) / 2.0 * (1.0 + (PI * pct).cos())
}

impl Schedule {
    /// The learning rate at `step` (in `epoch`) of a run of `total` steps.
    pub fn lr(&self, base: f64, step: u64, epoch: u64, total: u64) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                base * gamma.powi((epoch / every.max(1) as u64) as i32)
            }
            Schedule::Exponential { gamma } => base * gamma.powi(epoch as i32),
            Schedule::Cosine { warmup, min_lr } => {
                let w = warmup as u64;
                if step < w {
                    base * (step + 1) as f64 / w as f64
                } else {
                    let span = total.saturating_sub(w).saturating_sub(1).max(1);
                    let pct = ((step - w) as f64 / span as f64).min(1.0);
                    cos_anneal(base, min_lr, pct)
                }
            }
            Schedule::OneCycle {
                pct_start,
                div,
                final_div,
            } => {
                let initial = base / div;
                let last = initial / final_div;
                let up_end = (pct_start * total as f64 - 1.0).max(1.0);
                let down_end = (total as f64 - 1.0).max(up_end + 1.0);
                let s = step as f64;
                if s <= up_end {
                    cos_anneal(initial, base, s / up_end)
                } else {
                    cos_anneal(base, last, ((s - up_end) / (down_end - up_end)).min(1.0))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_at_known_steps() {
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12 * b.abs().max(1.0);
        assert_eq!(Schedule::Constant.lr(0.1, 99, 9, 100), 0.1);
        let s = Schedule::Step {
            every: 2,
            gamma: 0.5,
        };
        assert!(close(s.lr(1.0, 0, 1, 100), 1.0));
        assert!(close(s.lr(1.0, 0, 2, 100), 0.5));
        assert!(close(s.lr(1.0, 0, 5, 100), 0.25));
        let e = Schedule::Exponential { gamma: 0.9 };
        assert!(close(e.lr(1.0, 0, 2, 100), 0.81));
        let c = Schedule::Cosine {
            warmup: 10,
            min_lr: 0.0,
        };
        assert!(close(c.lr(1.0, 0, 0, 110), 0.1));
        assert!(close(c.lr(1.0, 9, 0, 110), 1.0));
        assert!(close(c.lr(1.0, 10, 0, 110), 1.0));
        assert!(close(c.lr(1.0, 109, 0, 110), 0.0));
        // Halfway through the decay: the mean of the two ends.
        let mid = Schedule::Cosine {
            warmup: 0,
            min_lr: 0.2,
        };
        assert!(close(mid.lr(1.0, 50, 0, 101), 0.6));
        let o = Schedule::OneCycle {
            pct_start: 0.25,
            div: 25.0,
            final_div: 1e4,
        };
        assert!(close(o.lr(1.0, 0, 0, 101), 0.04));
        assert!(o.lr(1.0, 24, 0, 101) > 0.99);
        assert!(close(o.lr(1.0, 100, 0, 101), 0.04 / 1e4));
    }
}
