//! The firmware control loop. [`prepare`] loads, checks and allocates everything into an immutable
//! [`LoopPlan`] and the loop's mutable state; [`Controller::tick`] then only computes, as a short
//! sequence of named steps: take a frame, sample telemetry (budget and power), re-select the
//! schedule at a period boundary or on a budget change (with the DCTA allocation of adaptation
//! targets), plan the runs (making room for an adaptation target), run the engines, deliver every
//! output (run, predicted through links, or repeated), spend the adaptation slot, score against the
//! reference when there is one, and account and emit telemetry. A tick allocates nothing (see
//! `tests/control.rs`) and survives every fault.
//!
//! - [`policy`]: the power governor, DCTA capacity levels and drift levels (pure, table-tested).
//! - [`adapt`]: on-line adaptation inside the loop (labelled rows, fine-tuning).
//! - [`stats`]: running totals and the shared savings formulas.
//! - [`LoopBuilder`]: the one way to build a loop, with defaults for everything but the workload.

use crate::model_set::ModelSet;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::alloc_count::RuntimeScope;
use crate::board::Board;
use crate::bundle::Bundle;
use crate::dcta::Dcta;
use crate::engine::{EngineError, PreparedModel};
use crate::gpu::LinkExecutor;
use crate::links::agreement;
use crate::manifest::{Manifest, OutputKind};
use crate::recording::Recording;
use crate::row::RowLayout;
use crate::schedule::{CycleTable, Problem, ScheduleTable};
use crate::source::{FrameError, FrameInfo, FrameSource};
use crate::telemetry::{Telemetry, Valid};
use crate::wire::{self, Event, EventKind, Message, PeriodSummary, TelemetryWriter, Tick, flags};

mod adapt;
mod audit;
mod build;
pub mod policy;
mod prepare;
pub mod refresh;
mod stats;

pub use crate::schedule::share_saved;
pub use adapt::{AdaptSettings, LabelRule, LabelWindow, LossHead, OnlineAdaptation, TuneReport};
pub use audit::{AuditTally, Estimate};
pub use build::LoopBuilder;
pub use policy::PowerGovernor;
use prepare::{Parts, prepare};
pub use stats::LoopStats;

/// Loop settings that are not board facts.
#[derive(Clone, Debug)]
pub struct LoopOptions {
    /// On-line adaptation: labelling rate, ring of labelled rows, fine-tuning.
    pub adaptation: AdaptSettings,
    /// Labelled frames per refresh, overriding the K the DCTA plan picks (`jetlink bench
    /// adapt-gain` measures the gain of each K with it).
    pub adapt_frames: Option<u32>,
    /// First frame index of the drift segment (for per-segment accuracy).
    pub drift_start: u32,
    /// Adapt links at all.
    pub adapt: bool,
    /// Most models run per tick; `None` takes the board's `max-active-models` (or no limit).
    pub max_active: Option<usize>,
    /// Audit one predicted task every this many ticks to estimate accuracy without a reference
    /// (0: no audits). Audit runs count as executions.
    pub audit_every: u32,
    /// Cap on the model budget, bytes (`jetlink run --budget`): the budget each tick is the board's
    /// (net of free memory and power throttling) and at most this. `None`: the board's alone.
    pub budget_cap: Option<u64>,
    /// The scheduling policy, by name (`jetlink run --policy`, [`crate::schedule::cycle::is_policy`]):
    /// what runs, what is predicted through links and what is held each tick.
    pub policy: String,
    /// Seed of the `random` policy's draws.
    pub seed: u64,
}

/// The policy the loop runs unless told otherwise.
pub const DEFAULT_POLICY: &str = "optimal-hold";

impl Default for LoopOptions {
    fn default() -> Self {
        LoopOptions {
            adaptation: AdaptSettings::default(),
            adapt_frames: None,
            drift_start: u32::MAX,
            adapt: true,
            max_active: None,
            audit_every: 0,
            budget_cap: None,
            policy: DEFAULT_POLICY.to_string(),
            seed: 1,
        }
    }
}

/// What a tick does beside inference: label a frame for adaptation, audit a task, both, or neither.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Extra {
    label: bool,
    audit: Option<usize>,
}

/// What the last tick did (for the driver's progress display).
#[derive(Clone, Copy, Debug, Default)]
pub struct TickReport {
    pub tick: Tick,
}

/// Everything fixed once the loop is prepared: the board, the options, the row layout, the tasks'
/// kinds and scorings, the schedule problem and its table.
pub struct LoopPlan {
    pub(crate) board: &'static Board,
    pub(crate) opts: LoopOptions,
    pub layout: RowLayout,
    pub kinds: Vec<OutputKind>,
    pub scorings: Vec<crate::scoring::Scoring>,
    pub problem: Problem,
    pub table: ScheduleTable,
    /// The policy's phases per budget level.
    pub cycles: CycleTable,
}

impl LoopPlan {
    pub fn n(&self) -> usize {
        self.layout.len()
    }

    fn all(&self) -> ModelSet {
        ModelSet::all(self.n())
    }
}

/// The loop's inputs and outputs.
struct LoopIo<S: FrameSource, W: embedded_io::Write> {
    source: S,
    telemetry: Telemetry,
    writer: TelemetryWriter<W>,
    models: Vec<PreparedModel>,
    reference: Option<Arc<Recording>>,
    /// The fleet client's hand-over (summaries out, links out and in), when the board is in a fleet.
    fleet: Option<Arc<crate::fleet::tap::FleetTap>>,
}

/// Per-task drift signals accumulated over a period, and the levels derived at its end.
struct DriftTracker {
    sum: Vec<f32>,
    n: Vec<u32>,
    base: Vec<f32>,
    has_base: bool,
    level: Vec<f32>,
}

impl DriftTracker {
    fn new(n: usize) -> DriftTracker {
        DriftTracker {
            sum: vec![0.0; n],
            n: vec![0; n],
            base: vec![0.0; n],
            has_base: false,
            level: vec![0.0; n],
        }
    }

    fn add(&mut self, j: usize, signal: f32) {
        self.sum[j] += signal;
        self.n[j] += 1;
    }

    /// Close a period: the first one with signals sets the baseline; later ones give levels.
    fn close_period(&mut self) {
        let mut any = false;
        for j in 0..self.level.len() {
            let mean = if self.n[j] > 0 { self.sum[j] / self.n[j] as f32 } else { 0.0 };
            if !self.has_base {
                self.base[j] = mean;
            }
            self.level[j] =
                if self.n[j] > 0 && self.has_base { policy::drift_level(mean, self.base[j]) } else { 0.0 };
            any |= self.n[j] > 0;
            self.sum[j] = 0.0;
            self.n[j] = 0;
        }
        self.has_base |= any;
    }
}

/// Everything a tick changes.
struct LoopState {
    links: LinkExecutor,
    online: OnlineAdaptation,
    dcta: Option<Dcta>,
    governor: PowerGovernor,
    drift: DriftTracker,
    // Buffers, all sized in `prepare`.
    frame: Vec<u8>,
    /// Per target, the labelled frames K of this period's plan.
    frames: Vec<u32>,
    row: Vec<f32>,
    out: Vec<f32>,
    last_out: Vec<f32>,
    tick_no: u32,
    period: u32,
    active: ModelSet,
    /// Tasks predicted through links (the others, not running, held or repeating their last output).
    predicted: ModelSet,
    /// Tasks the policy holds this tick (delivered as their model last output them).
    hold: ModelSet,
    /// Tasks delivered held this tick (for the wire).
    held: ModelSet,
    /// The policy's level in force (`None`: the budget is below every level) and the tick within
    /// its cycle.
    level: Option<usize>,
    phase_t: u32,
    /// Per model, its output at its last run (a row), and the ticks since (`u32::MAX`: never ran).
    run_out: Vec<f32>,
    age: Vec<u32>,
    /// Per task, the age of its output when last delivered held.
    held_age: Vec<u32>,
    /// The last frame a frame-gated policy ran on.
    gate_frame: Vec<u8>,
    have_gate: bool,
    /// This tick's drift signals per predicted task (valid where `sig_fresh` has its bit).
    sig: Vec<crate::links::DriftSignals>,
    sig_fresh: ModelSet,
    /// Label selection: the loss head (`loss-prediction`) and the window of recent frames
    /// (`top-k`, empty otherwise), with scratch for labelling a frame of the window.
    loss: LossHead,
    window: LabelWindow,
    label_frame: Vec<u8>,
    label_row: Vec<f32>,
    budget: u64,
    mem_used: u64,
    have_last: bool,
    /// What this tick does beside inference (decided before the engines run), and the targets it
    /// runs for that.
    extra: Extra,
    label_group: ModelSet,
    audits: AuditTally,
    /// Index of the frame expected next (the last delivered frame's + 1).
    next_index: u32,
    /// Index of this tick's frame.
    frame_index: u32,
    /// Time spent in engines (views and inference) during the last tick.
    engine_ns: u64,
    stats: LoopStats,
    /// `refresh-K` / `oracle-refresh-K`: the per-tick choice of what to refresh.
    refresh: Option<refresh::Refresh>,
    period_start: LoopStats,
    period_peak: u64,
    period_missed: bool,
    last: TickReport,
}

/// Flags and degraded outputs gathered while a tick runs.
#[derive(Default)]
struct TickNotes {
    flags: u8,
    degraded: ModelSet,
    /// A power throttle started this tick (counted after the period boundary, with the tick).
    throttle: bool,
}

/// Up to this many tasks, `refresh-K` picks the best set to run exhaustively; above, greedily.
const EXHAUSTIVE_REFRESH: usize = 12;

/// The prepared loop.
pub struct Controller<S: FrameSource, W: embedded_io::Write> {
    plan: LoopPlan,
    io: LoopIo<S, W>,
    st: LoopState,
}

/// Send an event; a full or failed sink is counted by the writer.
fn emit<W: embedded_io::Write>(writer: &mut TelemetryWriter<W>, tick: u32, kind: EventKind) {
    let _ = writer.send(&Message::Event(Event::new(tick, kind)));
}

impl<S: FrameSource, W: embedded_io::Write> Controller<S, W> {
    pub fn stats(&self) -> &LoopStats {
        &self.st.stats
    }

    pub fn last(&self) -> &TickReport {
        &self.st.last
    }

    pub fn n_models(&self) -> usize {
        self.plan.n()
    }

    pub fn model_names(&self) -> impl Iterator<Item = &str> {
        self.io.models.iter().map(|m| m.spec.name.as_str())
    }

    pub fn writer(&self) -> &TelemetryWriter<W> {
        &self.io.writer
    }

    /// The next tick's number and the current period's: what a loop that replaces this one (a
    /// bundle reload) continues from, so that the wire's Tick counter and period numbers never go
    /// back on the same line.
    pub fn numbering(&self) -> (u32, u32) {
        (self.st.tick_no, self.st.period)
    }

    /// Continue the numbering of the loop this one replaces ([`Controller::numbering`]), before the
    /// first tick.
    pub fn resume_numbering(&mut self, (tick_no, period): (u32, u32)) {
        self.st.tick_no = tick_no;
        self.st.period = period;
    }

    /// Time the loop was held between two ticks (a bundle reload runs on the loop's thread): every
    /// tick deadline the stall spans is a deadline missed, counted (and sent as `DeadlineMiss`) as
    /// a slow tick's is.
    pub fn count_stall(&mut self, stall: std::time::Duration) {
        let deadline_us = self.plan.board.period_ms as u64 * 1000;
        let us = stall.as_micros().min(u32::MAX as u128) as u64;
        if deadline_us == 0 || us <= deadline_us {
            return;
        }
        self.st.stats.deadline_misses += us / deadline_us;
        self.st.stats.max_tick_us = self.st.stats.max_tick_us.max(us as u32);
        self.event(EventKind::DeadlineMiss { tick_us: us as u32, deadline_us: deadline_us as u32 });
    }

    /// The frame source and the serial writer, for a new loop that replaces this one (a bundle
    /// reload).
    pub fn into_source_and_writer(self) -> (S, TelemetryWriter<W>) {
        (self.io.source, self.io.writer)
    }

    pub fn telemetry(&self) -> &Telemetry {
        &self.io.telemetry
    }

    pub fn dcta(&self) -> Option<&Dcta> {
        self.st.dcta.as_ref()
    }

    /// The last delivered outputs (a full row; every task has a value).
    pub fn outputs(&self) -> &[f32] {
        &self.st.last_out
    }

    pub fn active(&self) -> ModelSet {
        self.st.active
    }

    /// Tasks whose output the last tick delivered held from their model's last run.
    pub fn held(&self) -> ModelSet {
        self.st.held
    }

    /// The age (ticks since its model's run) of task `j`'s output as the last tick delivered it
    /// held; `None` when it was not held.
    pub fn held_age(&self, j: usize) -> Option<u32> {
        self.st.held.contains(j).then_some(self.st.held_age[j])
    }

    /// The bundle's hold scores the policy plans with (`[j * MAX_HOLD_AGE + age - 1]`).
    pub fn hold_scores(&self) -> &[f32] {
        &self.plan.problem.hold
    }

    /// The scheduling policy the loop runs.
    pub fn policy(&self) -> &str {
        &self.plan.cycles.name
    }

    /// Why the policy runs nothing at the budget of the last tick, where some model fits it
    /// ([`CycleTable::idle_note`]): `interval-K` that cannot spread the models over K ticks.
    pub fn idle_note(&self) -> Option<String> {
        self.plan.cycles.idle_note(&self.plan.cycles.name, &self.plan.problem, self.st.budget)
    }

    /// The label rule in force (`auto` resolved) and the bytes its window takes from the budget.
    pub fn label_rule(&self) -> (LabelRule, u64) {
        (self.plan.opts.adaptation.rule, self.st.window.bytes())
    }

    /// Per model, its runs and where their time went (view, engine).
    pub fn run_times(&self) -> impl Iterator<Item = (&str, crate::engine::RunTime)> + '_ {
        self.io.models.iter().map(|m| (m.spec.name.as_str(), m.time))
    }

    /// Time the last tick spent in engines (input views and inference), nanoseconds.
    pub fn last_engine_ns(&self) -> u64 {
        self.st.engine_ns
    }

    /// How task `j`'s outputs are judged (its tolerance and declared score rule).
    pub fn scoring(&self, j: usize) -> crate::scoring::Scoring {
        self.plan.scorings[j]
    }

    /// Whether task `j`'s output is a sequence.
    pub fn is_sequence(&self, j: usize) -> bool {
        self.plan.kinds.get(j).is_some_and(|k| k.seq().is_some())
    }

    /// Where the links run: "cuda" (one fused kernel per tick) or "cpu".
    pub fn link_backend(&self) -> &'static str {
        match self.st.links.backend() {
            crate::gpu::Backend::Cuda => "cuda",
            crate::gpu::Backend::Cpu => "cpu",
        }
    }

    /// Why the links run on the CPU in a build with the GPU path, when the bundle is the reason
    /// (sequence links have no kernel).
    pub fn link_backend_note(&self) -> Option<&'static str> {
        self.st.links.cpu_note()
    }

    /// Each task's drift level in [0, 1] at the last period boundary (what the DCTA look-up saw).
    pub fn drift(&self) -> &[f32] {
        &self.st.drift.level
    }

    /// Memory of the running models and the links in use.
    pub fn active_memory(&self) -> u64 {
        self.st.mem_used
    }

    /// `refresh-K`: per task, the staleness model's weights now (bias, log age, frame change,
    /// 1 − hold score, fragility, last change) and the runs it learnt from on-line.
    pub fn refresh_weights(&self) -> Option<(Vec<[f32; refresh::FEATURES]>, u64)> {
        let r = self.st.refresh.as_ref()?;
        Some(((0..self.plan.n()).map(|j| r.weights(j)).collect(), r.updates))
    }

    /// Each model's memory (weights and activations), as the schedule counts it.
    pub fn model_memory(&self) -> &[u64] {
        &self.plan.problem.model_mem
    }

    /// Accuracy kept estimated from audit frames (`None` without audits).
    pub fn accuracy_estimate(&self) -> Option<Estimate> {
        self.st.audits.estimate()
    }

    /// The audit counts per task.
    pub fn audits(&self) -> &AuditTally {
        &self.st.audits
    }

    /// Most models run per tick under the schedule in force.
    pub fn max_active(&self) -> usize {
        self.plan.problem.max_active
    }

    pub fn budget(&self) -> u64 {
        self.st.budget
    }

    /// A new bundle was refused: send `BundleRejected` (a = the reason code); the loop goes on with
    /// the bundle it has.
    pub fn bundle_rejected(&mut self, reason: u32) {
        self.event(EventKind::BundleRejected { reason, unused: 0 });
    }

    /// Offer the running loop a new bundle (a SIGHUP reload): signed by the board's key, built for
    /// `manifest` and, with `state`, not older than the highest version accepted. Refused: the loop
    /// keeps the bundle it runs (nothing of the new one was loaded), `BundleRejected` goes out on its
    /// serial line, and the error is returned. Accepted: the checked bundle is returned, for the
    /// driver to prepare a new loop from and switch to between ticks.
    pub fn offer_bundle(
        &mut self,
        path: &std::path::Path,
        manifest: &Manifest,
        board: &Board,
        state: Option<&crate::signing::RollbackState>,
    ) -> Result<Bundle, crate::bundle::BundleError> {
        let loaded = match state {
            Some(st) => crate::signing::load_trusted_versioned(path, manifest, board, st),
            None => crate::signing::load_trusted(path, manifest, board),
        };
        loaded.inspect_err(|e| {
            log::warn!("bundle {} refused, keeping the running bundle: {e}", path.display());
            self.bundle_rejected(e.reason_code());
        })
    }

    fn event(&mut self, kind: EventKind) {
        emit(&mut self.io.writer, self.st.tick_no, kind);
    }

    /// One tick. Returns false when the frame source has ended.
    pub fn tick(&mut self) -> bool {
        let t0 = Instant::now();
        let mut notes = TickNotes::default();
        self.st.engine_ns = 0;
        let Some(info) = self.take_frame() else { return false };
        let (budget, power) = self.sample_power(&mut notes);
        self.reselect(budget, info.is_some(), &mut notes);
        // This tick's counts go to the period it belongs to: after the summary a period boundary
        // sends from `reselect` (a 500-tick period reports 500 ticks, not 501 then 499).
        self.st.stats.ticks += 1;
        self.st.stats.frame_faults += u64::from(info.is_none());
        self.st.stats.telemetry_faults += u64::from(notes.flags & flags::TELEMETRY_FAULT != 0);
        self.st.stats.throttles += u64::from(notes.throttle);
        self.st.extra = self.choose_extra();
        let (group, run) = self.plan_extra();
        if let Some(j) = self.st.extra.audit {
            self.st.stats.audits_due += 1;
            self.st.stats.audits_no_room += u64::from(!group.contains(j));
        }
        self.st.label_group = group;
        self.st.stats.adapt_room_ticks += u64::from(run != self.st.active);
        // Active models set aside for the adaptation target are predicted through links this tick.
        let (active, predicted) = (self.st.active, self.st.predicted);
        self.st.mem_used = self.plan.problem.cost_of(run, predicted | (active - run));
        self.st.stats.min_budget = self.st.stats.min_budget.min(self.st.budget);
        self.st.stats.budget_violations += u64::from(self.st.mem_used > self.st.budget);
        let ok = match info {
            Some(info) => self.run_engines(info, run, &mut notes),
            None => ModelSet::EMPTY,
        };
        let fresh = self.deliver(ok, &mut notes);
        if info.is_some() {
            self.st.audits.count_frame(ok);
        }
        let adapt_task = self.extra_slot(ok, info.is_some(), fresh);
        let agreement_milli = self.score_reference(info);
        self.finish_tick(t0, info, power, adapt_task, agreement_milli, notes);
        true
    }

    /// Step 1: the next frame. `None` when the source has ended; `Some(None)` for a frame fault.
    fn take_frame(&mut self) -> Option<Option<FrameInfo>> {
        match self.io.source.next_frame(&mut self.st.frame) {
            Ok(None) => None,
            Ok(Some(i)) => {
                self.st.next_index = i.index.wrapping_add(1);
                Some(Some(i))
            }
            Err(e) => {
                let code = match e {
                    FrameError::Missing => 0,
                    FrameError::Corrupt => 1,
                    FrameError::WrongSize { .. } => 2,
                    FrameError::SourceDown => 3,
                };
                self.event(EventKind::FrameFault { frame: self.st.next_index, error: code });
                Some(None)
            }
        }
    }

    /// Step 2: telemetry. Returns the budget in force (free memory less the reserve, throttled by
    /// the power governor) and the power reading (0 when unknown).
    fn sample_power(&mut self, notes: &mut TickNotes) -> (u64, u32) {
        self.io.telemetry.set_own_usage(self.st.mem_used);
        if let Err(e) = self.io.telemetry.poll() {
            notes.flags |= flags::TELEMETRY_FAULT;
            let st = self.io.telemetry.stats();
            if st.consecutive_failures == 1 {
                let failures = st.failures.min(u32::MAX as u64) as u32;
                self.event(EventKind::TelemetryFault { error: e as u32, failures });
            }
        }
        let sample = self.io.telemetry.latest();
        // The label window's frames take their bytes from the model budget.
        let mem_budget = sample
            .model_budget_bytes(self.plan.board, self.st.mem_used)
            .min(self.plan.opts.budget_cap.unwrap_or(u64::MAX))
            .saturating_sub(self.st.window.bytes());
        let power = if sample.valid.contains(Valid::POWER) { sample.power_mw } else { 0 };
        let step = self.st.governor.update(power, self.plan.board.power_budget_mw);
        if step.over {
            notes.flags |= flags::OVER_POWER;
        }
        if step.started {
            notes.throttle = true;
            self.event(EventKind::PowerThrottle {
                power_mw: power,
                budget_mw: self.plan.board.power_budget_mw,
            });
        }
        (self.st.governor.apply(mem_budget), power)
    }

    /// Step 3: at a period boundary (which also allocates adaptation targets) or on a budget
    /// change, look the policy's level up (shedding models under a falling budget is flagged); then
    /// take the level's next phase: what runs, what is predicted, what is held.
    fn reselect(&mut self, budget: u64, have_frame: bool, notes: &mut TickNotes) {
        let tpp = self.plan.board.ticks_per_period.max(1);
        let boundary = self.st.tick_no.is_multiple_of(tpp);
        if boundary {
            self.start_period();
        }
        if budget != self.st.budget || boundary {
            self.select_level(budget, notes);
        }
        let Some(k) = self.st.level else {
            (self.st.active, self.st.predicted, self.st.hold) =
                (ModelSet::EMPTY, ModelSet::EMPTY, ModelSet::EMPTY);
            return;
        };
        let ph = self.plan.cycles.phase(k, self.st.phase_t);
        self.st.phase_t = (self.st.phase_t + 1) % self.plan.cycles.cycle(k).max(1);
        (self.st.active, self.st.predicted, self.st.hold) = (ph.active, ph.predict, ph.hold);
        let threshold = self.plan.cycles.level(k).threshold;
        if threshold >= 0.0 && have_frame {
            let st = &mut self.st;
            let same =
                st.have_gate && crate::schedule::frame_difference(&st.frame, &st.gate_frame) <= threshold;
            if same {
                (st.active, st.predicted, st.hold) = (ModelSet::EMPTY, ModelSet::EMPTY, self.plan.all());
            } else {
                st.gate_frame.copy_from_slice(&st.frame);
                st.have_gate = true;
            }
        }
        if self.st.refresh.is_some() && have_frame {
            self.choose_refresh(budget);
        }
    }

    /// `refresh-K`: this tick's runs go to the tasks whose held outputs are most likely stale (the
    /// oracle: those that are), most first, as many as the rate allows and the budget fits; every
    /// other task is held, but for those with nothing to hold (their model has not run yet, or does
    /// not fit the budget even alone), which are predicted through the links.
    fn choose_refresh(&mut self, budget: u64) {
        let (plan, io) = (&self.plan, &self.io);
        let LoopState { refresh, frame, age, run_out, next_index, .. } = &mut self.st;
        let Some(rf) = refresh.as_mut() else { return };
        rf.observe_frame(frame);
        let oracle = rf.mode == refresh::Mode::Oracle;
        if oracle {
            // The reference outputs of this frame, in the loop's layout (matched by name at build).
            let index = next_index.wrapping_sub(1);
            match io.reference.as_ref().and_then(|r| Some((r, r.row_of_frame(index)?))) {
                Some((r, row)) => {
                    for j in 0..plan.n() {
                        let range = plan.layout.range(j);
                        let o = r.offset(j);
                        rf.reference[range.clone()].copy_from_slice(&r.row(row)[o..o + range.len()]);
                    }
                }
                // A frame the reference lacks: nothing looks stale, so the oldest go first.
                None => rf.reference.copy_from_slice(run_out),
            }
        }
        let runs = rf.take_runs(plan.problem.max_active);
        let p = &plan.problem;
        let held = refresh::Held {
            kinds: &plan.kinds,
            scorings: &plan.scorings,
            layout: &plan.layout,
            outputs: run_out,
        };
        let scores = rf.score(age, &p.hold, &p.importance, held);
        let n = plan.n();
        let fits = |m: ModelSet| p.cost_of(m, ModelSet::EMPTY) <= budget;
        let value = |m: ModelSet| m.iter().map(|j| scores[j].min(1e6)).sum::<f32>();
        let mut chosen = ModelSet::EMPTY;
        if n <= EXHAUSTIVE_REFRESH {
            // The set of at most `runs` tasks that fits and is most stale in total: one large task
            // does not crowd out two smaller ones that are staler together (2^n sets, n ≤ 12).
            let mut best = 0.0f32;
            for m in ModelSet::subsets(n).skip(1) {
                if m.len() <= runs && fits(m) {
                    let v = value(m);
                    if v > best {
                        (best, chosen) = (v, m);
                    }
                }
            }
        } else {
            for _ in 0..runs {
                // A task worth nothing (the oracle's output that is not stale) is not run.
                let next = (0..n)
                    .filter(|&j| scores[j] > 0.0 && !chosen.contains(j) && fits(chosen.with(j)))
                    .max_by(|&a, &b| scores[a].total_cmp(&scores[b]));
                match next {
                    Some(j) => chosen.insert(j),
                    None => break,
                }
            }
        }
        rf.spent(chosen.len());
        // Tasks with nothing to hold (not run yet, or too large for the budget alone) are predicted
        // through the links from what runs, as far as their links and ensembles fit beside it.
        let mut predict = ModelSet::EMPTY;
        if !chosen.is_empty() {
            for j in 0..n {
                let nothing = age[j] == u32::MAX || p.model_mem[j] > budget;
                if nothing && !chosen.contains(j) && p.cost_of(chosen, predict.with(j)) <= budget {
                    predict.insert(j);
                }
            }
        }
        let st = &mut self.st;
        (st.active, st.predicted, st.hold) = (chosen, predict, self.plan.all() - chosen - predict);
    }

    /// The policy's level at `budget`; a new level starts its cycle afresh.
    fn select_level(&mut self, budget: u64, notes: &mut TickNotes) {
        let k = self.plan.cycles.lookup(budget);
        let runs = |k: Option<usize>| k.map_or(ModelSet::EMPTY, |k| self.plan.cycles.runs(k));
        let (new, old) = (runs(k), runs(self.st.level));
        if k != self.st.level {
            self.st.phase_t = 0;
            self.st.stats.schedule_changes += 1;
            let shed = old - new;
            if budget < self.st.budget && !shed.is_empty() {
                notes.flags |= flags::MEMORY_SHED;
                self.st.stats.sheds += 1;
                let p = &self.plan.problem;
                let freed = p.model_cost(old).saturating_sub(p.model_cost(new));
                self.event(EventKind::Shed { models: shed.bits().into(), freed_kib: (freed / 1024) as u32 });
            }
            self.event(EventKind::ScheduleChange {
                active: new.bits().into(),
                old_active: old.bits().into(),
            });
        }
        if budget != self.st.budget && self.st.budget != u64::MAX {
            self.event(EventKind::BudgetChange {
                new_kib: (budget / 1024) as u32,
                old_kib: (self.st.budget / 1024) as u32,
            });
        }
        self.st.level = k;
        self.st.budget = budget;
    }

    /// Close the period that ends (summary, drift levels) and allocate this period's adaptation
    /// targets: those the DCTA table assigns a unit, whose drift rose, that are not running and that
    /// fit the budget beside at least one running model.
    fn start_period(&mut self) {
        if self.st.tick_no > 0 {
            // A loop resumed at a boundary (after a reload) has no ticks of its own to summarise:
            // the loop it replaced sent that period's summary. The period number moves on anyway.
            if self.st.stats.ticks > self.st.period_start.ticks {
                self.send_summary();
            }
            self.st.period += 1;
        }
        self.fleet_exchange();
        self.st.drift.close_period();
        if !self.plan.opts.adapt {
            return;
        }
        let level = self.st.governor.capacity_level();
        let ctx = crate::dcta::Context {
            drift: &self.st.drift.level,
            power_level: level,
            free_mem: self.swap_room(),
            resident: u64::from(self.st.active.bits()),
        };
        let Some(plan) = self.st.dcta.as_mut().map(|d| *d.allocate(&ctx)) else {
            return;
        };
        let mut targets = ModelSet::EMPTY;
        // Targets the fleet assigned this board (cooperative adaptation) are refreshed here too.
        let assigned = self.io.fleet.as_ref().map_or(ModelSet::EMPTY, |t| t.assigned());
        for j in 0..self.plan.n() {
            let running = self.st.active.contains(j);
            let fleet_task = plan.unit_of(j).is_none() && assigned.contains(j);
            // A target the fleet assigned runs on the first unit with no cap on its frames.
            let planned = if fleet_task { u32::MAX } else { plan.frames_of(j) };
            self.st.frames[j] = self.plan.opts.adapt_frames.unwrap_or(planned);
            let unit = plan.unit_of(j).or(if fleet_task { Some(0) } else { None });
            if let Some(unit) = unit {
                if self.st.drift.level[j] > 0.0 && !running && self.can_make_room(j) {
                    targets.insert(j);
                    self.st.stats.count_task(unit, self.st.frames[j]);
                    self.event(EventKind::AdaptStart { target: j as u32, unit: unit as u32 });
                }
            }
        }
        if let Some(tap) = &self.io.fleet {
            tap.offer_tasks(self.st.period, &self.st.drift.level, targets);
        }
        // Targets of the period that ends which never got a label could not fit: counted.
        let abandoned = self.st.online.start_period(targets, &self.st.frames);
        self.st.stats.adapt_abandoned += abandoned.len() as u64;
    }

    /// Memory a period can free for adaptation targets: the budget less the cheapest way to keep
    /// one running model (the others predicted through links while a target runs).
    fn swap_room(&self) -> u64 {
        let (p, st) = (&self.plan.problem, &self.st);
        let keep = st
            .active
            .iter()
            .map(|i| p.cost_of(ModelSet::single(i), st.predicted | st.active.without(i)))
            .min()
            .unwrap_or(0);
        st.budget.saturating_sub(keep)
    }

    /// At a period boundary, in a fleet: add the change fused global links make, when the fleet
    /// client has one ready, then offer the links (with it), sample counts and labelled rows to the
    /// client (copies and sums; nothing allocates or waits).
    fn fleet_exchange(&mut self) {
        let Some(tap) = self.io.fleet.as_ref() else { return };
        let st = &mut self.st;
        if let Some(version) = tap.take_global(st.links.predictor_mut()) {
            st.links.weights_changed();
            // The low 32 bits: the aggregator's versions count up from a clock in milliseconds.
            let v = version as u32;
            emit(&mut self.io.writer, st.tick_no, EventKind::GlobalLinks { version: v, unused: 0 });
        }
        let (rows, valid, filled) = st.online.ring();
        tap.offer_local(st.links.predictor(), st.online.samples(), rows, valid, filled);
    }

    /// Whether target `j` fits the budget beside at least one running model (the others set aside
    /// while it runs, see [`Self::plan_labels`]).
    fn can_make_room(&self, j: usize) -> bool {
        let (p, st) = (&self.plan.problem, &self.st);
        st.active.iter().any(|i| {
            p.cost_of(ModelSet::single(i), st.predicted | st.active.without(i)) + p.model_mem[j] <= st.budget
        })
    }

    /// Step 4a: label a frame for adaptation when one is due; audit a task when one is due (the
    /// two are independent, so audits sample label ticks too).
    fn choose_extra(&mut self) -> Extra {
        let label = self.plan.opts.adapt && self.st.online.due();
        let every = self.plan.opts.audit_every;
        let audit = if every > 0 && self.st.tick_no % every == every / 2 {
            // Round robin over the predicted or held tasks that room can be made for: a task too
            // large to run beside any source would otherwise take its turn forever and starve the
            // others (two large models alternating with the rotation took every audit).
            let n = self.plan.n();
            let fit: ModelSet = (0..n).filter(|&j| self.room_for(ModelSet::single(j)).is_some()).collect();
            let all = ModelSet::all(n);
            let pick = self.st.audits.next_target(self.st.active | (all - fit));
            if pick.is_none() && !all.is_subset(self.st.active) {
                // Due, but nothing predicted fits: counted (and said in the summary).
                self.st.stats.audits_due += 1;
                self.st.stats.audits_no_room += 1;
            }
            pick
        } else {
            None
        };
        Extra { label, audit }
    }

    /// The targets this tick runs beside inference and the models that run beside them: the
    /// labelling targets, plus the audited task when room can be made for it too.
    fn plan_extra(&self) -> (ModelSet, ModelSet) {
        let (mut group, mut run) =
            if self.st.extra.label { self.plan_labels() } else { (ModelSet::EMPTY, self.st.active) };
        if let Some(j) = self.st.extra.audit {
            if let Some(r) = self.room_for(group.with(j)) {
                group.insert(j);
                run &= r;
            }
        }
        (group, run)
    }

    /// Step 4b: the targets this labelling tick runs and the models that run beside them. Targets
    /// that fit beside the schedule's active set and targets that do not are labelled on alternate
    /// labelling ticks, so that the rows of the former keep every running source.
    fn plan_labels(&self) -> (ModelSet, ModelSet) {
        let (p, st) = (&self.plan.problem, &self.st);
        let targets = st.online.targets() - st.active;
        let base = p.cost_of(st.active, st.predicted);
        let fit: ModelSet = targets.iter().filter(|&j| base + p.model_mem[j] <= st.budget).collect();
        let big = targets - fit;
        if big.is_empty() || (!fit.is_empty() && st.online.labels() % 2 == 0) {
            return (fit, st.active);
        }
        self.room_for(big).map_or((fit, st.active), |run| (big, run))
    }

    /// The models to run beside the targets in `group` (which run one after another): the active
    /// set, or, when the largest target does not fit beside it, the active set with its largest
    /// models set aside (predicted through links for this tick) until it fits, keeping at least one
    /// source. `None` when no room can be made.
    fn room_for(&self, group: ModelSet) -> Option<ModelSet> {
        let (p, st) = (&self.plan.problem, &self.st);
        let need = group.iter().map(|j| p.model_mem[j]).max()?;
        let fits = |run: ModelSet| p.cost_of(run, st.predicted | (st.active - run)) + need <= st.budget;
        let mut run = st.active;
        while !fits(run) && run.len() > 1 {
            let largest = run.iter().max_by_key(|&i| p.model_mem[i]);
            let Some(i) = largest else { break };
            run.remove(i);
        }
        fits(run).then_some(run)
    }

    /// Step 5: run the models in `run` on the frame. Returns the models whose outputs are valid.
    fn run_engines(&mut self, info: FrameInfo, run: ModelSet, notes: &mut TickNotes) -> ModelSet {
        self.st.frame_index = info.index;
        let mut ok = ModelSet::EMPTY;
        for i in 0..self.plan.n() {
            if !run.contains(i) {
                continue;
            }
            self.st.stats.executions += 1;
            self.st.stats.flops += self.plan.problem.flops[i];
            match self.run_engine(i) {
                Ok(()) => ok.insert(i),
                Err(e) => {
                    notes.flags |= flags::ENGINE_FAULT;
                    notes.degraded.insert(i);
                    self.st.stats.engine_faults += 1;
                    let code = match e {
                        EngineError::InputSize { .. } => 0,
                        EngineError::OutputSize { .. } => 1,
                        EngineError::Runtime => 2,
                        EngineError::BadOutput => 3,
                        EngineError::Timeout => 4,
                    };
                    self.event(EventKind::EngineFault { model: i as u32, error: code });
                }
            }
        }
        ok
    }

    /// Run model `i` on this tick's frame (its view, then its engine) into its slice of the row,
    /// timing it.
    fn run_engine(&mut self, i: usize) -> Result<(), EngineError> {
        let r = self.plan.layout.range(i);
        let m = &mut self.io.models[i];
        // The model times its view and engine (`PreparedModel::time`); the tick adds this run's.
        let spent = |m: &crate::engine::PreparedModel| m.time.view_ns + m.time.engine_ns;
        let before = spent(m);
        let res = {
            let _scope = RuntimeScope::enter();
            m.run(self.st.frame_index, &self.st.frame, &mut self.st.row[r])
        };
        self.st.engine_ns += spent(m) - before;
        res
    }

    /// Step 6: every task gets an output: run, predicted through links (their drift signals
    /// sampled), held from its model's last run where the policy holds it, or its last output
    /// repeated (flagged degraded). Returns whether the CPU predictor ran (its signals are fresh).
    fn deliver(&mut self, ok: ModelSet, notes: &mut TickNotes) -> bool {
        self.keep_runs(ok);
        let st = &mut self.st;
        (st.held, st.sig_fresh) = (ModelSet::EMPTY, ModelSet::EMPTY);
        let (predicted, fresh) = if ok.is_empty() {
            (false, false)
        } else {
            st.links.predict(ok, &st.row, &mut st.out).map_or((false, false), |fresh| (true, fresh))
        };
        if !predicted {
            // Nothing ran (or no frame): the last outputs again, flagged, but for the held tasks.
            st.out.copy_from_slice(&st.last_out);
            if !st.have_last {
                st.out.fill(0.0);
            }
        }
        self.deliver_held(ok);
        let st = &mut self.st;
        if predicted {
            for j in 0..self.plan.n() {
                if fresh && !ok.contains(j) {
                    if let Ok(s) = st.links.predictor_mut().signals(j) {
                        st.drift.add(j, s.score());
                        st.sig[j] = s;
                        st.sig_fresh.insert(j);
                    }
                }
                // Tasks neither run, predicted nor held repeat their last output.
                if !(ok | st.predicted | st.active | st.held).contains(j) {
                    let r = self.plan.layout.range(j);
                    st.out[r.clone()].copy_from_slice(&st.last_out[r]);
                    notes.degraded.insert(j);
                }
            }
            st.have_last = true;
        } else {
            notes.degraded = self.plan.all() - st.held;
        }
        st.stats.degraded_outputs += notes.degraded.len() as u64;
        st.stats.held_outputs += st.held.len() as u64;
        fresh
    }

    /// Keep the outputs of the models in `ok` (this tick's run) for holding; age the others.
    fn keep_runs(&mut self, ok: ModelSet) {
        for a in self.st.age.iter_mut() {
            // u32::MAX (never ran) stays; a real age stops one short of it.
            if *a < u32::MAX - 1 {
                *a += 1;
            }
        }
        self.store_outputs(ok);
    }

    /// Keep the outputs of the models in `ran` (run this tick) for holding: age 0.
    fn store_outputs(&mut self, ran: ModelSet) {
        let st = &mut self.st;
        for j in 0..self.plan.n() {
            if ran.contains(j) {
                let r = self.plan.layout.range(j);
                if let Some(rf) = st.refresh.as_mut() {
                    // The fresh output against the one it replaces: how stale that one had gone.
                    let old = (st.age[j] != u32::MAX).then(|| &st.run_out[r.clone()]);
                    rf.ran(j, self.plan.kinds[j], self.plan.scorings[j], &st.row[r.clone()], old);
                }
                st.run_out[r.clone()].copy_from_slice(&st.row[r]);
                st.age[j] = 0;
            }
        }
    }

    /// Deliver the tasks the policy holds (and that did not run) as their model last output them.
    fn deliver_held(&mut self, ok: ModelSet) {
        let st = &mut self.st;
        for j in 0..self.plan.n() {
            if (st.hold - ok).contains(j) && st.age[j] != u32::MAX {
                let r = self.plan.layout.range(j);
                st.out[r.clone()].copy_from_slice(&st.run_out[r]);
                st.held.insert(j);
                st.held_age[j] = st.age[j];
            }
        }
    }

    /// Step 7, the extra slot: on a labelling or audit tick, run the targets of this tick's group
    /// that did not run and fit the budget beside the models that ran (one after another); an audit
    /// compares the delivered prediction with the model's output; the row goes to the adaptation
    /// ring. Then fine-tune one pending target. Returns the target worked on (or `NO_ADAPT_TASK`).
    fn extra_slot(&mut self, ok: ModelSet, have_frame: bool, fresh: bool) -> u8 {
        let mut worked = wire::NO_ADAPT_TASK;
        let extra = self.st.extra;
        let audit_bit = extra.audit.map_or(ModelSet::EMPTY, ModelSet::single);
        let mut labelled = false;
        let top_k = !self.st.window.is_empty();
        if self.plan.opts.adapt && top_k && have_frame && !ok.is_empty() {
            let score = self.target_signal(ok, fresh).unwrap_or(0.0);
            let st = &mut self.st;
            st.window.push(&st.frame, st.frame_index, &st.row, ok, score);
        }
        // Targets run one after another: the tick's memory is the largest of its extra runs.
        let mut peak = self.st.mem_used;
        if !self.st.label_group.is_empty() && have_frame && !ok.is_empty() {
            // The gates apply to labels only; an audit runs whatever they say.
            if extra.label {
                if top_k {
                    // The label group runs on the window's most uncertain frame; this frame runs
                    // the audit only.
                    let (done, mem) = self.label_from_window(&mut worked);
                    (labelled, peak) = (done, peak.max(mem));
                    self.st.label_group &= audit_bit;
                } else {
                    let signal = self.target_signal(ok, fresh);
                    labelled = self.st.online.accept(signal);
                    if !labelled {
                        self.st.label_group &= audit_bit;
                    }
                }
            }
            if !self.st.label_group.is_empty() {
                let valid = self.run_group(ok, &mut worked);
                peak = peak.max(self.st.mem_used);
                // The targets' fresh outputs are what a later tick holds, and what the loss head
                // learns from.
                self.store_outputs(valid - ok);
                self.learn_losses(valid - ok);
                if let Some(j) = extra.audit.filter(|&j| valid.contains(j) && !ok.contains(j)) {
                    let r = self.plan.layout.range(j);
                    let a = agreement(
                        self.plan.kinds[j],
                        self.plan.scorings[j],
                        &self.st.out[r.clone()],
                        &self.st.row[r],
                    );
                    self.st.audits.record(j, a);
                }
                if self.plan.opts.adapt && valid != ok {
                    self.st.online.push(&self.st.row, valid);
                }
            }
        }
        self.st.mem_used = peak;
        if !self.plan.opts.adapt {
            return worked;
        }
        if !labelled {
            self.st.online.skip();
        }
        match self.st.online.tune_one(self.st.links.predictor_mut(), self.st.active) {
            Some(Ok(rep)) => {
                self.st.links.weights_changed();
                self.st.stats.adapt_tasks += 1;
                self.event(EventKind::AdaptDone {
                    target: rep.target as u32,
                    score_milli: (1000.0 * rep.agreement) as u32,
                });
                rep.target as u8
            }
            _ => worked,
        }
    }

    /// Run the targets of this tick's group that did not run and fit beside the models that ran;
    /// returns the models whose outputs the row now holds.
    fn run_group(&mut self, ok: ModelSet, worked: &mut u8) -> ModelSet {
        let (base, mut extra, mut valid) = (self.st.mem_used, 0u64, ok);
        for j in 0..self.plan.n() {
            let need = self.plan.problem.model_mem[j];
            if !self.st.label_group.contains(j) || ok.contains(j) || base + need > self.st.budget {
                continue;
            }
            let res = self.run_engine(j);
            self.st.stats.adapt_executions += 1;
            self.st.stats.engine_faults += u64::from(res.is_err());
            extra = extra.max(need);
            if res.is_ok() {
                valid.insert(j);
                *worked = j as u8;
            }
        }
        self.st.mem_used = base + extra;
        valid
    }

    /// The allocated targets' mean uncertainty ([`crate::links::DriftSignals::score`]) on this
    /// frame, or with `loss-prediction` their mean predicted loss; `None` when the CPU predictor
    /// did not run.
    fn target_signal(&self, ok: ModelSet, fresh: bool) -> Option<f32> {
        if !fresh {
            return None;
        }
        let st = &self.st;
        let loss = self.plan.opts.adaptation.rule == LabelRule::LossPrediction;
        let (mut sum, mut count) = (0.0f32, 0u32);
        for j in 0..self.plan.n() {
            if ((st.online.targets() - ok) & st.sig_fresh).contains(j) {
                sum += if loss { st.loss.predict(j, &st.sig[j]) } else { st.sig[j].score() };
                count += 1;
            }
        }
        (count > 0).then(|| sum / count as f32)
    }

    /// With `loss-prediction`: the loss head learns, for each task in `ran` that this tick
    /// predicted, the loss its prediction had against the model's own output.
    fn learn_losses(&mut self, ran: ModelSet) {
        if self.plan.opts.adaptation.rule != LabelRule::LossPrediction {
            return;
        }
        let st = &mut self.st;
        for j in 0..self.plan.n() {
            if (ran & st.sig_fresh).contains(j) {
                let r = self.plan.layout.range(j);
                let a = agreement(self.plan.kinds[j], self.plan.scorings[j], &st.out[r.clone()], &st.row[r]);
                st.loss.learn(j, &st.sig[j], 1.0 - a);
            }
        }
    }

    /// `top-k`: run this tick's label group on the most uncertain frame of the window not yet
    /// labelled (its row holds the models that ran on it then), and keep the labelled row. The
    /// frame and row buffers are swapped, not copied twice; nothing allocates. Returns whether a
    /// row was labelled and the memory in use while its targets ran.
    fn label_from_window(&mut self, worked: &mut u8) -> (bool, u64) {
        let Some(k) = self.st.window.take_best() else { return (false, self.st.mem_used) };
        let st = &mut self.st;
        let (index, valid) = {
            let (frame, index, row, valid) = st.window.entry(k);
            st.label_frame.copy_from_slice(frame);
            st.label_row.copy_from_slice(row);
            (index, valid)
        };
        let targets = st.label_group & st.online.targets();
        std::mem::swap(&mut st.frame, &mut st.label_frame);
        std::mem::swap(&mut st.row, &mut st.label_row);
        let (now, group) = (st.frame_index, st.label_group);
        (st.frame_index, st.label_group) = (index, targets);
        let base = st.mem_used;
        let labelled = self.run_group(valid, worked);
        let st = &mut self.st;
        std::mem::swap(&mut st.frame, &mut st.label_frame);
        std::mem::swap(&mut st.row, &mut st.label_row);
        (st.frame_index, st.label_group) = (now, group);
        let label_mem = std::mem::replace(&mut st.mem_used, base);
        if labelled == valid {
            return (false, label_mem);
        }
        st.online.push(&st.label_row, labelled);
        (true, label_mem)
    }

    /// Step 8: agreement of every delivered output with the reference, when there is one. Returns
    /// the mean in thousandths (or `AGREEMENT_UNKNOWN`).
    fn score_reference(&mut self, info: Option<FrameInfo>) -> u16 {
        let (Some(info), Some(r)) = (info, &self.io.reference) else { return wire::AGREEMENT_UNKNOWN };
        let Some(row) = r.row_of_frame(info.index) else {
            self.st.stats.ref_missing += 1;
            return wire::AGREEMENT_UNKNOWN;
        };
        let seg = usize::from(info.index >= self.plan.opts.drift_start);
        let mut sum = 0.0f32;
        for j in 0..self.plan.n() {
            let range = self.plan.layout.range(j);
            let (o, s) = (r.offset(j), range.len());
            let (kind, scoring) = (self.plan.kinds[j], self.plan.scorings[j]);
            let (out, actual) = (&self.st.out[range], &r.row(row)[o..o + s]);
            let a = agreement(kind, scoring, out, actual);
            self.st.stats.agree[seg][j] += a as f64;
            let own = if scoring.declared() { agreement(kind, scoring.own(), out, actual) } else { a };
            self.st.stats.agree_own[seg][j] += own as f64;
            if kind.seq().is_some() {
                self.st.stats.similarity[seg][j] +=
                    crate::links::sequence_similarity(kind, scoring, out, actual) as f64;
            }
            sum += a;
        }
        self.st.stats.ref_frames[seg] += 1;
        (1000.0 * sum / self.plan.n() as f32).round() as u16
    }

    /// Step 9: keep the outputs, account memory and the deadline, and emit the Tick record.
    fn finish_tick(
        &mut self,
        t0: Instant,
        info: Option<FrameInfo>,
        power: u32,
        adapt_task: u8,
        agreement_milli: u16,
        mut notes: TickNotes,
    ) {
        let st = &mut self.st;
        st.last_out.copy_from_slice(&st.out);
        st.stats.frames += u64::from(info.is_some());
        st.stats.peak_mem = st.stats.peak_mem.max(st.mem_used);
        st.period_peak = st.period_peak.max(st.mem_used);
        let tick_us = t0.elapsed().as_micros().min(u32::MAX as u128) as u32;
        let deadline_us = self.plan.board.period_ms * 1000;
        if tick_us > deadline_us {
            notes.flags |= flags::DEADLINE_MISS;
            st.stats.deadline_misses += 1;
            if !st.period_missed {
                st.period_missed = true;
                emit(&mut self.io.writer, st.tick_no, EventKind::DeadlineMiss { tick_us, deadline_us });
            }
        }
        st.stats.max_tick_us = st.stats.max_tick_us.max(tick_us);
        st.stats.tick_us_sum += tick_us as u64;
        let t = Tick {
            tick: st.tick_no,
            frame: info.map_or(u32::MAX, |i| i.index),
            active: st.active,
            degraded: notes.degraded,
            held: st.held,
            agreement_milli,
            budget_kib: (st.budget.min(u64::MAX / 2) / 1024).min(u32::MAX as u64) as u32,
            mem_used_kib: (st.mem_used / 1024) as u32,
            power_mw: power,
            tick_us,
            adapt_task,
            flags: notes.flags,
        };
        let _ = self.io.writer.tick(&t);
        st.stats.serial_drops = self.io.writer.stats().dropped;
        st.last = TickReport { tick: t };
        st.tick_no = st.tick_no.wrapping_add(1);
    }

    /// At the end of a finite source: summarise the last (partial) period and flush the writer.
    pub fn finish(&mut self) {
        if self.st.stats.ticks > self.st.period_start.ticks {
            self.send_summary();
        }
        let _ = self.io.writer.flush();
    }

    fn send_summary(&mut self) {
        let st = &mut self.st;
        let d = st.stats.since(&st.period_start);
        let n = self.plan.n();
        let ref_frames = d.ref_frames[0] + d.ref_frames[1];
        let agree: f64 = (0..n).map(|j| d.agree[0][j] + d.agree[1][j]).sum();
        let milli = |x: f64| (1000.0 * x).round().clamp(0.0, 65534.0) as u16;
        let summary = PeriodSummary {
            period: st.period,
            ticks: d.ticks as u32,
            agreement_milli: if ref_frames > 0 {
                milli(agree / (ref_frames as f64 * n as f64))
            } else {
                wire::AGREEMENT_UNKNOWN
            },
            executions_saved_milli: milli(d.executions_saved(n)),
            flops_saved_milli: milli(d.flops_saved()),
            peak_mem_kib: (st.period_peak / 1024) as u32,
            deadline_misses: d.deadline_misses as u32,
            adapt_tasks: d.adapt_tasks as u16,
            faults: d.faults() as u32,
        };
        let _ = self.io.writer.send(&Message::PeriodSummary(summary));
        if let Some(tap) = &self.io.fleet {
            tap.push_summary(summary);
        }
        if let Some(e) = st.audits.estimate() {
            let (a, b) = ((1000.0 * e.accuracy).round() as u32, (1000.0 * e.half_width).round() as u32);
            emit(
                &mut self.io.writer,
                st.tick_no,
                EventKind::AccuracyEstimate { accuracy_milli: a, half_width_milli: b },
            );
        }
        st.period_start = st.stats;
        st.period_peak = 0;
        st.period_missed = false;
    }
}
