//! The loop's policies as small pure types, each constant named once: the power governor (how the
//! budget shrinks while power is over the board's budget and recovers after), the DCTA capacity
//! level the governor's state maps to, and the drift level of a task from its link signals.

/// Throttles the memory budget while measured power is above the board's power budget.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PowerGovernor {
    factor: f32,
}

/// What one governor update did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PowerStep {
    /// Power was above the budget this tick.
    pub over: bool,
    /// A throttle began this tick (the governor was at full budget before).
    pub started: bool,
}

impl PowerGovernor {
    /// Each tick over budget multiplies the factor by this.
    pub const THROTTLE: f32 = 0.8;
    /// The factor never falls below this.
    pub const FLOOR: f32 = 0.25;
    /// Each tick comfortably under budget multiplies the factor by this (up to 1).
    pub const RECOVER: f32 = 1.05;
    /// "Comfortably under": below this share of the power budget.
    pub const RECOVER_BELOW: f32 = 0.9;
    /// At or above this the governor counts as unthrottled.
    pub const FULL: f32 = 0.999;
    /// Below this the governor is deeply throttled (DCTA capacity level 2).
    pub const DEEP: f32 = 0.5;

    pub const fn new() -> PowerGovernor {
        PowerGovernor { factor: 1.0 }
    }

    pub fn factor(&self) -> f32 {
        self.factor
    }

    /// One tick with measured power `power_mw` (0 when unknown) against `budget_mw`.
    pub fn update(&mut self, power_mw: u32, budget_mw: u32) -> PowerStep {
        if power_mw > budget_mw {
            let started = self.factor >= Self::FULL;
            self.factor = (self.factor * Self::THROTTLE).max(Self::FLOOR);
            PowerStep { over: true, started }
        } else {
            if self.factor < 1.0 && (power_mw as f32) < Self::RECOVER_BELOW * budget_mw as f32 {
                self.factor = (self.factor * Self::RECOVER).min(1.0);
            }
            PowerStep { over: false, started: false }
        }
    }

    /// The memory budget the governor allows out of `budget`.
    pub fn apply(&self, budget: u64) -> u64 {
        (budget as f64 * self.factor as f64) as u64
    }

    /// The DCTA capacity level: 0 unthrottled, 1 throttled, 2 deeply throttled. The DCTA cost model's
    /// power levels (`crate::dcta::CostModel::power_levels`, fractions of the power budget) are
    /// chosen to fall in these bands; a test checks they agree.
    pub fn capacity_level(&self) -> usize {
        if self.factor < Self::DEEP {
            2
        } else if self.factor < Self::FULL {
            1
        } else {
            0
        }
    }
}

impl Default for PowerGovernor {
    fn default() -> Self {
        PowerGovernor::new()
    }
}

/// A task's signal grows by this factor (over its first period's baseline) to reach drift level 1.
pub const DRIFT_FULL_GROWTH: f32 = 4.0;
/// Baselines below this are raised to it, so that a near-zero baseline does not blow up the ratio.
pub const DRIFT_BASE_FLOOR: f32 = 0.02;

/// Drift level in [0, 1] of a task whose mean link signal this period is `mean` against its
/// baseline `base`: 0 when unchanged or lower, 1 when it grew [`DRIFT_FULL_GROWTH`]-fold.
pub fn drift_level(mean: f32, base: f32) -> f32 {
    ((mean / base.max(DRIFT_BASE_FLOOR) - 1.0) / (DRIFT_FULL_GROWTH - 1.0)).clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn governor_throttles_floors_and_recovers() {
        // (power, budget) per tick → (over, started, factor after).
        let cases: &[(u32, u32, bool, bool, f32)] = &[
            (9_000, 10_000, false, false, 1.0),
            (11_000, 10_000, true, true, 0.8),
            (11_000, 10_000, true, false, 0.64),
            (9_500, 10_000, false, false, 0.64), // under budget, not comfortably: hold
            (8_000, 10_000, false, false, 0.672),
        ];
        let mut g = PowerGovernor::new();
        for &(p, b, over, started, f) in cases {
            assert_eq!(g.update(p, b), PowerStep { over, started });
            assert!((g.factor() - f).abs() < 1e-5, "{} vs {f}", g.factor());
        }
        for _ in 0..40 {
            g.update(20_000, 10_000);
        }
        assert_eq!(g.factor(), PowerGovernor::FLOOR);
        assert_eq!(g.capacity_level(), 2);
        for _ in 0..200 {
            g.update(0, 10_000);
        }
        assert_eq!((g.factor(), g.capacity_level()), (1.0, 0));
        assert_eq!(g.apply(1000), 1000);
    }

    #[test]
    fn capacity_levels_agree_with_the_dcta_power_levels() {
        // Each DCTA level's fraction of the power budget lies in the band of governor factors that
        // maps to it, so the table is looked up at the capacity the governor allows.
        let levels = crate::dcta::CostModel::default().power_levels;
        assert_eq!(levels.len(), 3);
        for (l, &f) in levels.iter().enumerate() {
            let g = PowerGovernor { factor: f };
            assert_eq!(g.capacity_level(), l, "level {l} fraction {f}");
        }
    }

    #[test]
    fn drift_levels() {
        for &(mean, base, want) in
            &[(0.1, 0.1, 0.0), (0.05, 0.1, 0.0), (0.4, 0.1, 1.0), (0.25, 0.1, 0.5), (0.04, 0.0, 1.0 / 3.0)]
        {
            assert!((drift_level(mean, base) - want).abs() < 1e-6, "{mean} {base}");
        }
    }
}
