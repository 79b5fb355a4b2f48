//! The allocation-free hand-over between the control loop and the fleet client thread. The tick
//! only copies into or out of buffers sized when the tap is made, under locks that the client holds
//! for a copy at most (never across network I/O); a lock it cannot take at once is skipped and
//! counted, so the tick never waits on the fleet.
//!
//! - period summaries: a bounded queue (oldest dropped first when full, counted);
//! - the local links and labelled rows: a snapshot the loop offers at each period boundary;
//! - fused global links: a slot the client fills with the change fusion makes to the links it was
//!   given, and the loop adds at a period boundary (so the adaptation made since that snapshot is
//!   kept, not overwritten);
//! - the cooperative task allocation: a mask the client sets and the loop adds to its targets.

use crate::model_set::ModelSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU32, AtomicU64, Ordering};

use crate::links::Predictor;
use crate::wire::PeriodSummary;

/// Summaries the tap holds before the oldest is dropped.
pub const TAP_SUMMARIES: usize = 32;

/// The loop's links, labelled rows and per-target sample counts at a period boundary.
#[derive(Clone, Debug)]
pub struct LocalSnapshot {
    pub links: Vec<f32>,
    pub ensembles: Vec<f32>,
    /// Labelled rows per target so far (cumulative).
    pub samples: Vec<u32>,
    /// Labelled rows (`capacity × stride`), the first `filled` valid, and their valid-model masks.
    pub rows: Vec<f32>,
    pub valid: Vec<ModelSet>,
    pub filled: usize,
    /// Version of the global links the weights started from, and the loop they belong to
    /// ([`FleetTap::loop_replaced`]).
    pub base_version: u64,
    pub epoch: u32,
    /// Bumped on every offer.
    pub seq: u32,
}

impl LocalSnapshot {
    /// The loop's state it was taken in: the version applied and the loop's epoch.
    pub fn base(&self) -> (u64, u32) {
        (self.base_version, self.epoch)
    }
}

/// The loop's drift levels and its own allocation at a period boundary.
#[derive(Clone, Debug)]
pub struct TaskState {
    pub period: u32,
    pub drift: Vec<f32>,
    /// Targets the loop allocated itself this period.
    pub local: ModelSet,
    pub seq: u32,
}

/// What fusing global links changes in the loop's weights: fused − the snapshot they were fused
/// against, whose `base_version` the loop must still have applied.
#[derive(Clone, Debug)]
pub struct GlobalSlot {
    pub links: Vec<f32>,
    pub ensembles: Vec<f32>,
    pub version: u64,
}

/// Shared between one loop and its fleet client.
#[derive(Debug)]
pub struct FleetTap {
    summaries: Mutex<heapless::Deque<PeriodSummary, TAP_SUMMARIES>>,
    local: Mutex<LocalSnapshot>,
    global: Mutex<GlobalSlot>,
    tasks: Mutex<TaskState>,
    global_ready: AtomicBool,
    applied_version: AtomicU64,
    /// Bumped when a new loop replaces the one the tap served (a bundle reload): a change fused
    /// against the old loop's links is not added to the new one's.
    epoch: AtomicU32,
    assigned: AtomicU16,
    /// Summaries dropped because the queue was full, offers and applications skipped because the
    /// client held a lock.
    queue_drops: AtomicU32,
    busy_skips: AtomicU32,
}

impl FleetTap {
    /// A tap for loops over `predictor`'s weights, with room for `ring_rows` labelled rows.
    pub fn new(predictor: &Predictor, ring_rows: usize) -> FleetTap {
        let (l, e) = (predictor.links().params.len(), predictor.ensembles().params.len());
        let stride = predictor.stride();
        FleetTap {
            summaries: Mutex::new(heapless::Deque::new()),
            local: Mutex::new(LocalSnapshot {
                links: predictor.links().params.clone(),
                ensembles: predictor.ensembles().params.clone(),
                samples: vec![0; predictor.n_models()],
                rows: vec![0.0; ring_rows * stride],
                valid: vec![ModelSet::EMPTY; ring_rows],
                filled: 0,
                base_version: 0,
                epoch: 0,
                seq: 0,
            }),
            global: Mutex::new(GlobalSlot { links: vec![0.0; l], ensembles: vec![0.0; e], version: 0 }),
            tasks: Mutex::new(TaskState {
                period: 0,
                drift: vec![0.0; predictor.n_models()],
                local: ModelSet::EMPTY,
                seq: 0,
            }),
            global_ready: AtomicBool::new(false),
            applied_version: AtomicU64::new(0),
            epoch: AtomicU32::new(0),
            assigned: AtomicU16::new(0),
            queue_drops: AtomicU32::new(0),
            busy_skips: AtomicU32::new(0),
        }
    }

    // ---- the loop's side (no allocation) ----

    /// Queue a period summary; when the queue is full the oldest is dropped and counted.
    pub fn push_summary(&self, s: PeriodSummary) {
        let mut q = match self.summaries.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        if q.is_full() {
            q.pop_front();
            self.queue_drops.fetch_add(1, Ordering::Relaxed);
        }
        let _ = q.push_back(s);
    }

    /// Offer the loop's current links, sample counts and labelled rows (copied; skipped when the
    /// client is reading the previous offer).
    pub fn offer_local(
        &self,
        p: &Predictor,
        samples: &[u32],
        rows: &[f32],
        valid: &[ModelSet],
        filled: usize,
    ) {
        let Ok(mut s) = self.local.try_lock() else {
            self.busy_skips.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if s.links.len() != p.links().params.len() || s.ensembles.len() != p.ensembles().params.len() {
            return;
        }
        s.links.copy_from_slice(&p.links().params);
        s.ensembles.copy_from_slice(&p.ensembles().params);
        let n = s.samples.len().min(samples.len());
        s.samples[..n].copy_from_slice(&samples[..n]);
        let r = s.rows.len().min(rows.len());
        s.rows[..r].copy_from_slice(&rows[..r]);
        let v = s.valid.len().min(valid.len());
        s.valid[..v].copy_from_slice(&valid[..v]);
        s.filled = filled.min(v);
        s.base_version = self.applied_version.load(Ordering::Relaxed);
        s.epoch = self.epoch.load(Ordering::Relaxed);
        s.seq = s.seq.wrapping_add(1);
    }

    /// Offer this period's drift levels and the targets the loop allocated itself.
    pub fn offer_tasks(&self, period: u32, drift: &[f32], local: ModelSet) {
        let Ok(mut t) = self.tasks.try_lock() else {
            self.busy_skips.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let n = t.drift.len().min(drift.len());
        t.drift[..n].copy_from_slice(&drift[..n]);
        t.period = period;
        t.local = local;
        t.seq = t.seq.wrapping_add(1);
    }

    /// Add the change fused global links make into `p` when the client has one ready: the weights
    /// become the fused ones plus whatever the loop adapted since the snapshot they were fused
    /// against. Returns their version.
    pub fn take_global(&self, p: &mut Predictor) -> Option<u64> {
        if !self.global_ready.load(Ordering::Acquire) {
            return None;
        }
        let Ok(g) = self.global.try_lock() else {
            self.busy_skips.fetch_add(1, Ordering::Relaxed);
            return None;
        };
        if g.links.len() != p.links.params.len() || g.ensembles.len() != p.ensembles.params.len() {
            return None;
        }
        p.links.params.iter_mut().zip(&g.links).for_each(|(w, d)| *w += d);
        p.ensembles.params.iter_mut().zip(&g.ensembles).for_each(|(w, d)| *w += d);
        self.global_ready.store(false, Ordering::Release);
        self.applied_version.store(g.version, Ordering::Relaxed);
        Some(g.version)
    }

    /// Targets the fleet asks this board to refresh this period (bit j = target j).
    pub fn assigned(&self) -> ModelSet {
        ModelSet::from_bits(self.assigned.load(Ordering::Relaxed))
    }

    // ---- the client's side ----

    /// Move the queued summaries into `out`.
    pub fn drain_summaries(&self, mut out: impl FnMut(PeriodSummary)) {
        let mut q = match self.summaries.lock() {
            Ok(q) => q,
            Err(p) => p.into_inner(),
        };
        while let Some(s) = q.pop_front() {
            out(s);
        }
    }

    /// The last offer, when it is newer than `seen`.
    pub fn local_if_newer(&self, seen: u32) -> Option<LocalSnapshot> {
        let s = self.local.lock().ok()?;
        (s.seq != seen).then(|| s.clone())
    }

    /// The last task offer, when it is newer than `seen`.
    pub fn tasks_if_newer(&self, seen: u32) -> Option<TaskState> {
        let t = self.tasks.lock().ok()?;
        (t.seq != seen).then(|| t.clone())
    }

    /// Hand the loop the change fused global links make (`fused − snapshot`, added at its next
    /// period boundary), fused against a snapshot offered when the loop had applied version
    /// `base.0`, in epoch `base.1`. Refused (false) when the loop has applied another version since
    /// (the change would count that one twice) or was replaced: the client then fuses again against
    /// a newer snapshot. A change not yet taken is replaced.
    pub fn put_change(&self, links: &[f32], ensembles: &[f32], version: u64, base: (u64, u32)) -> bool {
        let Ok(mut g) = self.global.lock() else { return false };
        if self.base() != base || g.links.len() != links.len() || g.ensembles.len() != ensembles.len() {
            return false;
        }
        g.links.copy_from_slice(links);
        g.ensembles.copy_from_slice(ensembles);
        g.version = version;
        self.global_ready.store(true, Ordering::Release);
        true
    }

    pub fn set_assigned(&self, mask: ModelSet) {
        self.assigned.store(mask.bits(), Ordering::Relaxed);
    }

    /// The version applied and the loop's epoch: what a snapshot offered now would carry.
    pub fn base(&self) -> (u64, u32) {
        (self.applied_version.load(Ordering::Relaxed), self.epoch.load(Ordering::Relaxed))
    }

    /// A new loop replaces the one this tap served (a bundle reload, on the loop's thread before
    /// the new loop's first tick): a change waiting for the old loop is dropped, and one fused
    /// against the old loop's snapshots is refused when it is handed over.
    pub fn loop_replaced(&self) {
        let g = self.global.lock();
        self.global_ready.store(false, Ordering::Release);
        self.epoch.fetch_add(1, Ordering::Relaxed);
        drop(g);
    }

    /// Version of the global links the loop applied last (0: none).
    pub fn applied_version(&self) -> u64 {
        self.applied_version.load(Ordering::Relaxed)
    }

    /// Summaries dropped by the queue, and offers or applications skipped on a busy lock.
    pub fn drops(&self) -> (u32, u32) {
        (self.queue_drops.load(Ordering::Relaxed), self.busy_skips.load(Ordering::Relaxed))
    }
}
