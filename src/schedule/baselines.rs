//! The baselines MLink was compared with: run what fits without links (`standalone`), frame filtering
//! in the style of Reducto (`frame-filter`), and a random subset that fits (`random`).

use super::{Decision, Problem, Scheduler};
use crate::links::Rng;
use crate::model_set::ModelSet;

/// Run the subset of models that fits and delivers the most importance; predict nothing.
#[derive(Default)]
pub struct Standalone {
    active: ModelSet,
}

impl Scheduler for Standalone {
    fn name(&self) -> &'static str {
        "standalone"
    }

    fn select(&mut self, p: &Problem, budget: u64) {
        let mut best = (0.0f32, ModelSet::EMPTY);
        for m in ModelSet::subsets(p.n) {
            let o = p.standalone_objective(m);
            if p.model_cost(m) <= budget
                && m.len() <= p.max_active
                && (o > best.0 || (o == best.0 && p.model_cost(m) < p.model_cost(best.1)))
            {
                best = (o, m);
            }
        }
        self.active = best.1;
    }

    fn decide(&mut self, _frame: &[u8]) -> Decision {
        Decision::Run { active: self.active, predict: ModelSet::EMPTY, hold: ModelSet::EMPTY }
    }

    fn peak_memory(&self, p: &Problem) -> u64 {
        p.model_cost(self.active)
    }
}

/// Reducto-style frame filtering: run every model that fits the budget alone, one after another (so
/// the largest of them is the peak memory), but only on frames whose mean absolute pixel difference
/// from the last processed frame exceeds a threshold; otherwise deliver the last outputs again. The
/// threshold is tuned on a profile slice so that the processed fraction is at most
/// `budget / Σ c(f_i)` over those models: the budget is met on average over time. Swapping models in
/// and out is not charged, which favours this baseline. Models larger than the budget deliver nothing.
pub struct FrameFilter {
    profile: Vec<Vec<u8>>,
    threshold: f32,
    last: Vec<u8>,
    have_last: bool,
    runnable: ModelSet,
    peak: u64,
}

/// Mean absolute difference of two frames.
pub fn frame_difference(a: &[u8], b: &[u8]) -> f32 {
    let s: u64 = a.iter().zip(b).map(|(&x, &y)| x.abs_diff(y) as u64).sum();
    s as f32 / a.len().max(1) as f32
}

impl FrameFilter {
    pub fn new(profile: &[&[u8]]) -> FrameFilter {
        let len = profile.first().map_or(0, |f| f.len());
        FrameFilter {
            profile: profile.iter().map(|f| f.to_vec()).collect(),
            threshold: 0.0,
            last: vec![0; len],
            have_last: false,
            runnable: ModelSet::EMPTY,
            peak: 0,
        }
    }

    /// Fraction of the profile that would be processed at `threshold`.
    fn processed_fraction(&self, threshold: f32) -> f32 {
        let mut last: Option<&[u8]> = None;
        let mut n = 0;
        for f in &self.profile {
            if last.is_none_or(|l| frame_difference(f, l) > threshold) {
                n += 1;
                last = Some(f);
            }
        }
        n as f32 / self.profile.len().max(1) as f32
    }

    pub fn threshold(&self) -> f32 {
        self.threshold
    }
}

impl Scheduler for FrameFilter {
    fn name(&self) -> &'static str {
        "frame-filter"
    }

    fn select(&mut self, p: &Problem, budget: u64) {
        self.runnable = (0..p.n).filter(|&i| p.model_mem[i] <= budget).collect();
        self.peak = self.runnable.iter().map(|i| p.model_mem[i]).max().unwrap_or(0);
        // Both budgets are met on average: memory over time, and executions per frame.
        let target = (budget as f64 / p.model_cost(self.runnable).max(1) as f64)
            .min(p.max_active as f64 / self.runnable.len().max(1) as f64)
            .min(1.0) as f32;
        // Smallest threshold whose processed fraction is within the target (bisection on [0, 255]).
        let (mut lo, mut hi) = (0.0f32, 255.0f32);
        if self.processed_fraction(lo) <= target {
            hi = lo;
        }
        for _ in 0..30 {
            let mid = 0.5 * (lo + hi);
            if self.processed_fraction(mid) <= target {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        self.threshold = hi;
    }

    fn decide(&mut self, frame: &[u8]) -> Decision {
        if self.runnable.is_empty() {
            return Decision::Run {
                active: ModelSet::EMPTY,
                predict: ModelSet::EMPTY,
                hold: ModelSet::EMPTY,
            };
        }
        if !self.have_last
            || frame.len() != self.last.len()
            || frame_difference(frame, &self.last) > self.threshold
        {
            if frame.len() == self.last.len() {
                self.last.copy_from_slice(frame);
                self.have_last = true;
            }
            Decision::Run { active: self.runnable, predict: ModelSet::EMPTY, hold: ModelSet::EMPTY }
        } else {
            Decision::Reuse
        }
    }

    fn peak_memory(&self, _p: &Problem) -> u64 {
        self.peak
    }

    fn frame_threshold(&self) -> Option<f32> {
        Some(self.threshold)
    }
}

/// Models in a random order, each added while the budget allows; the rest predicted through links.
pub struct RandomFit {
    rng: Rng,
    active: ModelSet,
    all: ModelSet,
}

impl RandomFit {
    pub fn new(seed: u64) -> RandomFit {
        RandomFit { rng: Rng::new(seed), active: ModelSet::EMPTY, all: ModelSet::EMPTY }
    }
}

impl Scheduler for RandomFit {
    fn name(&self) -> &'static str {
        "random"
    }

    fn select(&mut self, p: &Problem, budget: u64) {
        self.all = p.all();
        let mut order: Vec<usize> = (0..p.n).collect();
        self.rng.shuffle(&mut order);
        let mut a = ModelSet::EMPTY;
        for i in order {
            if p.cost(a.with(i)) <= budget && a.len() < p.max_active {
                a.insert(i);
            }
        }
        self.active = a;
    }

    fn decide(&mut self, _frame: &[u8]) -> Decision {
        Decision::Run { active: self.active, predict: self.all - self.active, hold: ModelSet::EMPTY }
    }

    fn peak_memory(&self, p: &Problem) -> u64 {
        p.cost(self.active)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::problem;
    use super::*;

    #[test]
    fn standalone_runs_the_most_important_set_that_fits() {
        let p = problem(&[10, 20, 30], &[1.0, 1.0, 3.0], |_, _| 0.9);
        let mut s = Standalone::default();
        s.select(&p, 35);
        assert_eq!(s.active, ModelSet::from_bits(0b100));
        // {0, 1} costs 30 > 29; {0} and {1} tie on importance and the cheaper wins.
        s.select(&p, 29);
        assert_eq!(s.active, ModelSet::from_bits(0b001));
        s.select(&p, 30);
        assert_eq!(s.active, ModelSet::from_bits(0b100));
        let p = problem(&[10, 20, 30], &[1.0, 1.0, 1.0], |_, _| 0.9);
        s.select(&p, 30);
        assert_eq!(
            s.decide(&[]),
            Decision::Run {
                active: ModelSet::from_bits(0b011),
                predict: ModelSet::EMPTY,
                hold: ModelSet::EMPTY
            }
        );
    }

    #[test]
    fn frame_filter_meets_the_budget_on_average() {
        // 100 frames; every 4th frame changes a lot.
        let frames: Vec<Vec<u8>> =
            (0..100).map(|i| vec![if i % 4 == 0 { (i * 7 % 250) as u8 } else { 0 }; 16]).collect();
        let refs: Vec<&[u8]> = frames.iter().map(|f| f.as_slice()).collect();
        let p = problem(&[10, 10], &[1.0; 2], |_, _| 0.0);
        let mut f = FrameFilter::new(&refs);
        f.select(&p, 10); // half of the 20 bytes: at most half the frames
        let processed = refs.iter().filter(|fr| f.decide(fr) != Decision::Reuse).count();
        assert!(processed <= 50, "{processed}");
        assert!(processed > 0);
        assert_eq!(f.peak_memory(&p), 10);
        f.select(&p, 5); // the largest model does not fit: nothing runs
        assert_eq!(
            f.decide(refs[0]),
            Decision::Run { active: ModelSet::EMPTY, predict: ModelSet::EMPTY, hold: ModelSet::EMPTY }
        );
    }

    #[test]
    fn random_fit_never_exceeds_the_budget() {
        let p = problem(&[10, 20, 30, 5], &[1.0; 4], |_, _| 0.5);
        let mut r = RandomFit::new(3);
        for b in 0..80 {
            r.select(&p, b);
            assert!(p.cost(r.active) <= b);
        }
    }
}
