//! The loop's running totals and the savings formulas that every report shares (the summary, the
//! period summaries on the wire, the soak, the benchmarks).

use crate::links::MAX_MODELS;
use crate::schedule::share_saved;

/// Running totals, read by the driver and the summary.
#[derive(Clone, Copy, Debug, Default)]
pub struct LoopStats {
    pub ticks: u64,
    pub frames: u64,
    pub executions: u64,
    pub adapt_executions: u64,
    pub flops: u64,
    pub all_flops_per_frame: u64,
    pub peak_mem: u64,
    pub min_budget: u64,
    pub deadline_misses: u64,
    /// Fine-tunings done (one target each).
    pub adapt_tasks: u64,
    /// Targets allocated for a period that never got a labelled frame.
    pub adapt_abandoned: u64,
    /// Refreshes the DCTA plans started, per execution unit (the board's resource order), and the
    /// labelled frames K they asked for in all.
    pub adapt_by_unit: [u64; crate::dcta::MAX_UNITS],
    pub adapt_frames_planned: u64,
    /// Ticks on which active models were set aside (predicted through links) to make room for an
    /// adaptation target that did not fit beside them.
    pub adapt_room_ticks: u64,
    /// Audits due (a task to audit on an audit tick), and those that could not run because no
    /// room could be made for the audited model within the budget.
    pub audits_due: u64,
    pub audits_no_room: u64,
    pub engine_faults: u64,
    pub frame_faults: u64,
    pub telemetry_faults: u64,
    pub serial_drops: u64,
    pub budget_violations: u64,
    pub schedule_changes: u64,
    pub sheds: u64,
    pub throttles: u64,
    pub degraded_outputs: u64,
    /// Outputs delivered held from their model's last run (by the policy; not degraded).
    pub held_outputs: u64,
    /// Per segment (0 clean, 1 drift): frames with a reference, and per task the sum of agreement
    /// (the first `n_models` entries are used; fixed-size so that a snapshot never allocates).
    pub ref_frames: [u64; 2],
    /// Frames delivered that the reference recording lacks (not scored: said in the summary).
    pub ref_missing: u64,
    pub agree: [[f64; MAX_MODELS]; 2],
    /// Per segment and task, the sum of `links::sequence_similarity` for sequence outputs (the
    /// character-level figure beside the exact agreement; 0 for vector outputs).
    pub similarity: [[f64; MAX_MODELS]; 2],
    /// Per segment and task, the sum of agreement by the kind's own rule (tolerance), kept beside
    /// `agree` for models that declare a score rule (equal to `agree` for the others).
    pub agree_own: [[f64; MAX_MODELS]; 2],
    pub n_models: usize,
    pub max_tick_us: u32,
    pub tick_us_sum: u64,
}

impl LoopStats {
    /// Count a refresh the plan started on `unit` with K = `frames`.
    pub fn count_task(&mut self, unit: usize, frames: u32) {
        if let Some(c) = self.adapt_by_unit.get_mut(unit) {
            *c += 1;
        }
        self.adapt_frames_planned += frames as u64;
    }

    /// Mean agreement over tasks and frames of a segment (None without reference frames).
    pub fn accuracy(&self, seg: usize) -> Option<f64> {
        Self::mean_seg(&self.agree, self.ref_frames, self.n_models, seg)
    }

    pub fn accuracy_all(&self) -> Option<f64> {
        Self::mean_all(&self.agree, self.ref_frames, self.n_models)
    }

    /// [`LoopStats::accuracy`] by every kind's own rule (the tolerance rule where a model declares
    /// another).
    pub fn accuracy_own(&self, seg: usize) -> Option<f64> {
        Self::mean_seg(&self.agree_own, self.ref_frames, self.n_models, seg)
    }

    /// [`LoopStats::accuracy_all`] by every kind's own rule.
    pub fn accuracy_all_own(&self) -> Option<f64> {
        Self::mean_all(&self.agree_own, self.ref_frames, self.n_models)
    }

    fn mean_seg(agree: &[[f64; MAX_MODELS]; 2], frames: [u64; 2], n: usize, seg: usize) -> Option<f64> {
        let f = frames[seg];
        (f > 0).then(|| agree[seg][..n].iter().sum::<f64>() / (f as f64 * n as f64))
    }

    fn mean_all(agree: &[[f64; MAX_MODELS]; 2], frames: [u64; 2], n: usize) -> Option<f64> {
        let f = frames[0] + frames[1];
        let sum: f64 = agree[0][..n].iter().chain(&agree[1][..n]).sum();
        (f > 0).then(|| sum / (f as f64 * n as f64))
    }

    /// Share of model executions saved, adaptation runs counted as executions.
    pub fn executions_saved(&self, n_models: usize) -> f64 {
        share_saved(self.executions + self.adapt_executions, self.frames.max(1), n_models as u64)
    }

    pub fn flops_saved(&self) -> f64 {
        share_saved(self.flops, self.frames.max(1), self.all_flops_per_frame.max(1))
    }

    /// The totals since `earlier` (a snapshot of the same loop).
    pub fn since(&self, earlier: &LoopStats) -> LoopStats {
        let mut d = *self;
        d.ticks -= earlier.ticks;
        d.frames -= earlier.frames;
        d.executions -= earlier.executions;
        d.adapt_executions -= earlier.adapt_executions;
        d.flops -= earlier.flops;
        d.deadline_misses -= earlier.deadline_misses;
        d.adapt_tasks -= earlier.adapt_tasks;
        d.engine_faults -= earlier.engine_faults;
        d.frame_faults -= earlier.frame_faults;
        d.telemetry_faults -= earlier.telemetry_faults;
        for s in 0..2 {
            d.ref_frames[s] -= earlier.ref_frames[s];
            for j in 0..MAX_MODELS {
                d.agree[s][j] -= earlier.agree[s][j];
                d.agree_own[s][j] -= earlier.agree_own[s][j];
                d.similarity[s][j] -= earlier.similarity[s][j];
            }
        }
        d
    }

    /// Faults of every kind.
    pub fn faults(&self) -> u64 {
        self.engine_faults + self.frame_faults + self.telemetry_faults
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn savings_count_adaptation_runs() {
        assert_eq!(share_saved(0, 0, 8), 0.0);
        assert_eq!(share_saved(2, 1, 8), 0.75);
        let s =
            LoopStats { frames: 10, executions: 20, adapt_executions: 4, n_models: 8, ..Default::default() };
        assert!((s.executions_saved(8) - 0.7).abs() < 1e-12);
        let later = LoopStats { frames: 20, executions: 36, ..s };
        let d = later.since(&s);
        assert_eq!((d.frames, d.executions, d.adapt_executions), (10, 16, 0));
        assert!((d.executions_saved(8) - 0.8).abs() < 1e-12);
    }
}
