//! Accuracy kept, estimated on-line without a reference: on audit frames the loop runs one task that
//! it would have predicted and compares the link prediction with the model's own output. From the
//! audits of each task and how often each task ran, [`AuditTally::estimate`] gives the accuracy kept
//! with a 95% interval. The audited rows are also labelled rows for adaptation (the loop pushes them
//! into the same ring).
//!
//! Estimate: with r_j the share of frames on which task j ran (agreement 1) and p̂_j its audited
//! agreement when predicted, smoothed as (Σ agreement + ½) / (audits + 1),
//! `accuracy = (1/n) Σ_j [r_j + (1 − r_j)·p̂_j]`, and the half-width of the 95% interval
//! `1.96 · sqrt(Σ_j (1 − r_j)² · p̂_j(1 − p̂_j) / (audits_j + 1)) / n` (normal approximation, tasks
//! independent). A task predicted but never audited contributes p̂ = ½ with the widest interval.

use crate::model_set::ModelSet;

/// An accuracy estimate from audits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    pub accuracy: f64,
    /// Half-width of the 95% interval.
    pub half_width: f64,
    pub audits: u64,
}

/// Per-task audit counts.
#[derive(Clone, Debug)]
pub struct AuditTally {
    audits: Vec<u32>,
    agree: Vec<f64>,
    ran: Vec<u64>,
    frames: u64,
    next: usize,
}

impl AuditTally {
    pub fn new(n: usize) -> AuditTally {
        AuditTally { audits: vec![0; n], agree: vec![0.0; n], ran: vec![0; n], frames: 0, next: 0 }
    }

    /// The next task to audit, round robin over the tasks not in `active`.
    pub fn next_target(&mut self, active: ModelSet) -> Option<usize> {
        let n = self.audits.len();
        for k in 0..n {
            let j = (self.next + k) % n;
            if !active.contains(j) {
                self.next = (j + 1) % n;
                return Some(j);
            }
        }
        None
    }

    /// A frame was delivered; the tasks in `ran` ran on it.
    pub fn count_frame(&mut self, ran: ModelSet) {
        self.frames += 1;
        for (j, r) in self.ran.iter_mut().enumerate() {
            *r += u64::from(ran.contains(j));
        }
    }

    /// Task `j`'s prediction agreed `agreement` (in [0, 1]) with its model's output.
    pub fn record(&mut self, j: usize, agreement: f32) {
        self.audits[j] += 1;
        self.agree[j] += agreement.clamp(0.0, 1.0) as f64;
    }

    /// Task `j`: audits so far, and its smoothed audited agreement when predicted.
    pub fn task(&self, j: usize) -> (u32, f64) {
        let m = self.audits[j];
        (m, (self.agree[j] + 0.5) / (m as f64 + 1.0))
    }

    pub fn audits(&self) -> u64 {
        self.audits.iter().map(|&a| a as u64).sum()
    }

    /// The estimate so far (`None` before any audit or frame).
    pub fn estimate(&self) -> Option<Estimate> {
        let audits = self.audits();
        if audits == 0 || self.frames == 0 {
            return None;
        }
        let n = self.audits.len() as f64;
        let (mut acc, mut var) = (0.0, 0.0);
        for j in 0..self.audits.len() {
            let r = self.ran[j] as f64 / self.frames as f64;
            let m = self.audits[j] as f64;
            let p = (self.agree[j] + 0.5) / (m + 1.0);
            acc += r + (1.0 - r) * p;
            var += (1.0 - r).powi(2) * p * (1.0 - p) / (m + 1.0);
        }
        Some(Estimate { accuracy: acc / n, half_width: 1.96 * var.sqrt() / n, audits })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_combines_runs_and_audits() {
        let mut t = AuditTally::new(2);
        assert_eq!(t.estimate(), None);
        assert_eq!(t.next_target(ModelSet::from_bits(0b01)), Some(1));
        assert_eq!(t.next_target(ModelSet::from_bits(0b01)), Some(1));
        assert_eq!(t.next_target(ModelSet::from_bits(0b11)), None);
        // Task 0 always runs; task 1 is predicted and agrees on 3 of 4 audits.
        for _ in 0..100 {
            t.count_frame(ModelSet::from_bits(0b01));
        }
        for a in [1.0, 1.0, 0.0, 1.0] {
            t.record(1, a);
        }
        let e = t.estimate().unwrap();
        let p = 3.5 / 5.0;
        assert!((e.accuracy - (1.0 + p) / 2.0).abs() < 1e-12);
        assert!((e.half_width - 1.96 * (p * (1.0 - p) / 5.0f64).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(e.audits, 4);
        // More audits narrow the interval.
        for _ in 0..400 {
            t.record(1, 1.0);
        }
        assert!(t.estimate().unwrap().half_width < e.half_width / 4.0);
    }
}
