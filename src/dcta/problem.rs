//! The TATIM instance: tasks with importances, per-unit integer costs and capacities
//! ([`Problem`], fixed-size and `Copy`), the answer ([`Allocation`]), and how a manifest and a board
//! become the problem's data ([`Tatim`], [`CostModel`]). Symbols follow `docs/dcta.md`.

use serde::{Deserialize, Serialize};

use super::{DctaError, MAX_TASKS, MAX_UNITS};
use crate::board::Board;
use crate::manifest::Manifest;

/// Which unit each task runs on, if any. Fixed size and `Copy`, so the device can hold and return
/// one without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Allocation {
    n: u8,
    unit: [u8; MAX_TASKS],
}

impl Allocation {
    /// The byte that marks an unassigned task in [`as_bytes`](Self::as_bytes) and in tables.
    pub const NONE: u8 = u8::MAX;

    /// `n` tasks, none assigned.
    pub const fn empty(n: usize) -> Allocation {
        assert!(n <= MAX_TASKS);
        Allocation { n: n as u8, unit: [Self::NONE; MAX_TASKS] }
    }

    /// From one byte per task (a unit index or [`NONE`](Self::NONE)); `None` if too long.
    pub fn from_bytes(bytes: &[u8]) -> Option<Allocation> {
        if bytes.len() > MAX_TASKS {
            return None;
        }
        let mut a = Allocation::empty(bytes.len());
        a.unit[..bytes.len()].copy_from_slice(bytes);
        Some(a)
    }

    /// Number of tasks.
    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The unit task `j` runs on, or `None` when it does not run (or `j` is out of range).
    pub fn unit_of(&self, j: usize) -> Option<usize> {
        match self.as_bytes().get(j) {
            Some(&u) if u != Self::NONE => Some(u as usize),
            _ => None,
        }
    }

    /// Put task `j` on `unit` (or take it off with `None`). Panics if `j` is out of range.
    pub fn set(&mut self, j: usize, unit: Option<usize>) {
        assert!(j < self.len(), "task {j} out of range ({} tasks)", self.n);
        self.unit[j] = unit.map_or(Self::NONE, |u| u as u8);
    }

    /// One byte per task: the unit index, or [`NONE`](Self::NONE).
    pub fn as_bytes(&self) -> &[u8] {
        &self.unit[..self.n as usize]
    }

    /// Number of tasks that run.
    pub fn assigned(&self) -> usize {
        self.as_bytes().iter().filter(|&&u| u != Self::NONE).count()
    }
}

/// One TATIM instance: maximise Σ v_j over assigned tasks subject to, for every unit u,
/// Σ_{j on u} c_ju ≤ C_u. Costs and capacities are integers (µs) so that feasibility is exact.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Problem {
    /// Tasks n.
    pub n: usize,
    /// Units m.
    pub m: usize,
    /// v_j ≥ 0.
    pub values: [f64; MAX_TASKS],
    /// c_ju.
    pub costs: [[u64; MAX_UNITS]; MAX_TASKS],
    /// C_u.
    pub capacity: [u64; MAX_UNITS],
}

impl Problem {
    /// `costs` is row-major n × m.
    pub fn new(values: &[f64], costs: &[u64], capacity: &[u64]) -> Result<Problem, DctaError> {
        let (n, m) = (values.len(), capacity.len());
        if n == 0 || n > MAX_TASKS {
            return Err(DctaError::TaskCount { tasks: n, max: MAX_TASKS });
        }
        if m == 0 || m > MAX_UNITS {
            return Err(DctaError::UnitCount { board: String::new(), units: m, max: MAX_UNITS });
        }
        if costs.len() != n * m {
            return Err(DctaError::BadOption { option: "costs", reason: "must hold n × m values" });
        }
        if values.iter().any(|v| !(v.is_finite() && *v >= 0.0)) {
            return Err(DctaError::BadOption { option: "values", reason: "must be finite and >= 0" });
        }
        let mut p = Problem {
            n,
            m,
            values: [0.0; MAX_TASKS],
            costs: [[0; MAX_UNITS]; MAX_TASKS],
            capacity: [0; MAX_UNITS],
        };
        p.values[..n].copy_from_slice(values);
        p.capacity[..m].copy_from_slice(capacity);
        for j in 0..n {
            p.costs[j][..m].copy_from_slice(&costs[j * m..(j + 1) * m]);
        }
        Ok(p)
    }

    /// Total value of `a` (tasks beyond n ignored).
    pub fn value_of(&self, a: &Allocation) -> f64 {
        (0..self.n.min(a.len())).filter(|&j| a.unit_of(j).is_some()).map(|j| self.values[j]).sum()
    }

    /// Whether `a` has n tasks, names only units below m and fits every capacity.
    pub fn is_feasible(&self, a: &Allocation) -> bool {
        if a.len() != self.n {
            return false;
        }
        let mut load = [0u64; MAX_UNITS];
        for j in 0..self.n {
            if let Some(u) = a.unit_of(j) {
                if u >= self.m {
                    return false;
                }
                load[u] += self.costs[j][u];
            }
        }
        (0..self.m).all(|u| load[u] <= self.capacity[u])
    }
}

/// How task costs and unit capacities are derived from the manifest and the board (`docs/dcta.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// K: buffered frames each refresh runs its target model on.
    pub frames_per_task: u32,
    /// E: fine-tuning passes over the K frames.
    pub finetune_epochs: u32,
    /// Smallest hidden width of a link (2·|Y_j| otherwise), as the link trainer uses.
    pub link_hidden_floor: u32,
    /// σ: multiplies every task's time (the manifest's latencies were measured by a host runtime;
    /// this says what they are on a speed-1 unit of the board). Ignored when `stress` is set.
    pub time_scale: f64,
    /// Capacity levels: fractions f_ℓ of the board's power budget (its power modes), from the most
    /// to the least capacity.
    pub power_levels: Vec<f32>,
    /// ρ: when set, scale every task's time so that running all tasks would need ρ × the board's
    /// speed-weighted adaptation capacity at level 0. The demo's models are so small that every task
    /// fits in a period with room to spare (ρ ≪ 1); the bench uses ρ > 1 to make the knapsack bind.
    pub stress: Option<f64>,
}

impl Default for CostModel {
    fn default() -> CostModel {
        CostModel {
            frames_per_task: 32,
            finetune_epochs: 20,
            link_hidden_floor: 64,
            time_scale: 1.0,
            power_levels: vec![1.0, 0.6, 0.3],
            stress: None,
        }
    }
}

/// The data of every TATIM instance of one deployment: tasks, units, costs and capacities per level.
/// Only the importances change from period to period ([`Tatim::problem`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tatim {
    pub tasks: Vec<String>,
    /// w_j: the target's task importance from the manifest.
    pub weights: Vec<f32>,
    pub units: Vec<String>,
    /// s_u.
    pub speeds: Vec<f32>,
    /// t_j: a task's time on a speed-1 unit, µs.
    pub work_us: Vec<f64>,
    /// c_ju = ⌈t_j / s_u⌉, row-major n × m, µs.
    pub costs_us: Vec<u64>,
    /// f_ℓ.
    pub power_levels: Vec<f32>,
    /// C_uℓ, row-major L × m, µs.
    pub capacity_us: Vec<u64>,
    /// ρ at level 0: Σ t_j / Σ_u s_u C_u0.
    pub load: f64,
}

impl Tatim {
    /// Tasks from the manifest's models, units from the board's resources (see `docs/dcta.md`).
    pub fn from_manifest(manifest: &Manifest, board: &Board, cost: &CostModel) -> Result<Tatim, DctaError> {
        let n = manifest.models.len();
        if n == 0 || n > MAX_TASKS {
            return Err(DctaError::TaskCount { tasks: n, max: MAX_TASKS });
        }
        let m = board.resources.len();
        if m == 0 || m > MAX_UNITS {
            return Err(DctaError::UnitCount { board: board.name.into(), units: m, max: MAX_UNITS });
        }
        if cost.frames_per_task == 0 {
            return Err(DctaError::BadOption { option: "frames_per_task", reason: "must be at least 1" });
        }
        if cost.power_levels.is_empty()
            || cost.power_levels.len() > 255
            || cost.power_levels.iter().any(|f| !(f.is_finite() && *f > 0.0))
        {
            return Err(DctaError::BadOption {
                option: "power_levels",
                reason: "need 1 to 255 levels, each finite and > 0",
            });
        }
        if !(cost.time_scale.is_finite() && cost.time_scale > 0.0) {
            return Err(DctaError::BadOption { option: "time_scale", reason: "must be finite and > 0" });
        }
        if cost.stress.is_some_and(|s| !(s.is_finite() && s > 0.0)) {
            return Err(DctaError::BadOption { option: "stress", reason: "must be finite and > 0" });
        }
        for r in board.resources {
            if !(r.speed.is_finite() && r.speed > 0.0 && r.adapt_share.is_finite() && r.adapt_share > 0.0) {
                return Err(DctaError::BadUnit { unit: r.name.into(), speed: r.speed, share: r.adapt_share });
            }
        }
        for s in &manifest.models {
            if !(s.cost.latency_us.is_finite() && s.cost.latency_us > 0.0) {
                return Err(DctaError::BadLatency { model: s.name.clone(), latency_us: s.cost.latency_us });
            }
        }
        // Throughput of the runtime that measured the latencies, flop per µs, to turn fine-tuning
        // flops into time.
        let flops: f64 = manifest.models.iter().map(|s| s.cost.flops as f64).sum();
        let lat: f64 = manifest.models.iter().map(|s| s.cost.latency_us).sum();
        let throughput = if flops > 0.0 { flops / lat } else { 1e3 };
        let k = cost.frames_per_task as f64;
        let sizes: Vec<f64> = manifest.models.iter().map(|s| s.size as f64).collect();
        let total: f64 = sizes.iter().sum();
        let mut work: Vec<f64> = manifest
            .models
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let yj = sizes[j];
                let h = (2.0 * yj).max(cost.link_hidden_floor as f64);
                // Σ_{i≠j} (|Y_i|·h + h·|Y_j|) multiply-adds per sample and pass; ×2 flop, ×3 for
                // forward and backward.
                let macs = (total - yj) * h + (n as f64 - 1.0) * h * yj;
                let ft = 6.0 * macs * k * cost.finetune_epochs as f64 / throughput;
                k * s.cost.latency_us + ft
            })
            .collect();
        let period_us = board.period_ms as f64 * 1e3 * board.ticks_per_period as f64;
        let levels = cost.power_levels.len();
        let mut cap = vec![0.0f64; levels * m];
        for (l, &f) in cost.power_levels.iter().enumerate() {
            for (u, r) in board.resources.iter().enumerate() {
                let t_u = r.adapt_share as f64 * period_us;
                let power = f as f64 * board.power_budget_mw as f64;
                let e = if r.busy_power_mw == 0 { 1.0 } else { (power / r.busy_power_mw as f64).min(1.0) };
                cap[l * m + u] = t_u * e;
            }
        }
        let weighted: f64 = board.resources.iter().zip(&cap[..m]).map(|(r, c)| r.speed as f64 * c).sum();
        let raw_load = work.iter().sum::<f64>() / weighted;
        let scale = match cost.stress {
            Some(rho) => rho / raw_load,
            None => cost.time_scale,
        };
        for w in &mut work {
            *w *= scale;
        }
        let mut costs_us = Vec::with_capacity(n * m);
        for w in &work {
            for r in board.resources {
                costs_us.push((w / r.speed as f64).ceil().max(1.0) as u64);
            }
        }
        Ok(Tatim {
            tasks: manifest.models.iter().map(|s| s.name.clone()).collect(),
            weights: manifest.models.iter().map(|s| s.importance).collect(),
            units: board.resources.iter().map(|r| r.name.to_string()).collect(),
            speeds: board.resources.iter().map(|r| r.speed).collect(),
            work_us: work,
            costs_us,
            power_levels: cost.power_levels.clone(),
            capacity_us: cap.iter().map(|c| c.floor() as u64).collect(),
            load: raw_load * scale,
        })
    }

    /// The same deployment with other task work t_j (µs on a speed-1 unit), rescaled to load ρ when
    /// `stress` is set. Costs are recomputed; capacities are kept.
    pub fn with_work(&self, work_us: &[f64], stress: Option<f64>) -> Result<Tatim, DctaError> {
        if work_us.len() != self.n_tasks() || work_us.iter().any(|w| !(w.is_finite() && *w > 0.0)) {
            return Err(DctaError::BadOption { option: "work_us", reason: "one finite value > 0 per task" });
        }
        let m = self.n_units();
        let weighted: f64 =
            self.speeds.iter().zip(self.capacity(0)).map(|(s, &c)| *s as f64 * c as f64).sum();
        let raw = work_us.iter().sum::<f64>() / weighted;
        let scale = stress.map_or(1.0, |rho| rho / raw);
        let mut t = self.clone();
        t.work_us = work_us.iter().map(|w| w * scale).collect();
        t.costs_us = (0..self.n_tasks() * m)
            .map(|i| (t.work_us[i / m] / self.speeds[i % m] as f64).ceil().max(1.0) as u64)
            .collect();
        t.load = raw * scale;
        Ok(t)
    }

    pub fn n_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn n_units(&self) -> usize {
        self.units.len()
    }

    pub fn n_levels(&self) -> usize {
        self.power_levels.len()
    }

    /// Capacities C_uℓ of level ℓ.
    pub fn capacity(&self, level: usize) -> &[u64] {
        let m = self.n_units();
        &self.capacity_us[level * m..(level + 1) * m]
    }

    /// The instance at level ℓ with zero importances (fill [`Problem::values`] with [`importance`]).
    pub fn base_problem(&self, level: usize) -> Result<Problem, DctaError> {
        Problem::new(&vec![0.0; self.n_tasks()], &self.costs_us, self.capacity(level))
    }

    /// The instance for drift levels `drift` (one per task) at capacity level ℓ.
    pub fn problem(&self, drift: &[f32], level: usize) -> Result<Problem, DctaError> {
        let mut p = self.base_problem(level)?;
        for (j, &d) in drift.iter().enumerate().take(p.n) {
            p.values[j] = importance(self.weights[j], d);
        }
        Ok(p)
    }

    /// Check the internal sizes (a table read from a file may be corrupt).
    pub fn validate(&self) -> Result<(), DctaError> {
        let (n, m, l) = (self.n_tasks(), self.n_units(), self.n_levels());
        if n == 0 || n > MAX_TASKS {
            return Err(DctaError::TaskCount { tasks: n, max: MAX_TASKS });
        }
        if m == 0 || m > MAX_UNITS {
            return Err(DctaError::UnitCount { board: String::new(), units: m, max: MAX_UNITS });
        }
        if l == 0 || l > 255 {
            return Err(DctaError::BadTable("need 1 to 255 power levels"));
        }
        if self.weights.len() != n || self.work_us.len() != n {
            return Err(DctaError::BadTable("weights and work must have one entry per task"));
        }
        if self.speeds.len() != m || self.speeds.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DctaError::BadTable("speeds must be one finite value > 0 per unit"));
        }
        if self.costs_us.len() != n * m || self.capacity_us.len() != l * m {
            return Err(DctaError::BadTable("costs must be n × m and capacities L × m"));
        }
        if self.weights.iter().any(|w| !(w.is_finite() && *w >= 0.0)) {
            return Err(DctaError::BadTable("task weights must be finite and >= 0"));
        }
        Ok(())
    }
}

/// v_j = w_j · d_j: the accuracy a refresh is expected to win back, weighted by the target's task
/// importance. `d` is clamped to [0, 1]; NaN counts as 0.
#[inline]
pub fn importance(weight: f32, drift: f32) -> f64 {
    weight as f64 * clamp_drift(drift) as f64
}

#[inline]
pub(crate) fn clamp_drift(d: f32) -> f32 {
    if d.is_nan() { 0.0 } else { d.clamp(0.0, 1.0) }
}
