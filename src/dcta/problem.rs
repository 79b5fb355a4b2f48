//! How a manifest and a board become the problem's data: tasks with importances, per-unit costs
//! and capacities per power level ([`Tatim`]), through the cost model ([`CostModel`]: K choices,
//! measured gains, swap costs). Symbols follow `docs/dcta.md`.

use serde::{Deserialize, Serialize};

use super::{DctaError, MAX_CHOICES, MAX_TASKS, MAX_UNITS};
use crate::board::Board;
use crate::manifest::Manifest;

/// How task costs and unit capacities are derived from the manifest and the board (`docs/dcta.md`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CostModel {
    /// K₀: the frames the work t_j is computed for; an option with K frames costs t_j · K / K₀.
    pub frames_per_task: u32,
    /// The K choices of a refresh, ascending (at most 16).
    pub frames: Vec<u32>,
    /// g(K) ∈ [0, 1] for each K choice: the share of a target's drift a refresh on K labelled frames
    /// wins back. Default: measured by `jetlink bench adapt-gain` on the demo's drift segment
    /// (`docs/bench/adapt-gain.json`); `jetlink build --gain FILE` takes another measurement.
    pub gain: Vec<f32>,
    /// The loop's labelling rate (one frame every this many ticks, `jetlink run --label-every`):
    /// how many labelled frames a period offers, over which swaps share the free memory.
    pub label_every: u32,
    /// Bytes per µs a non-resident target loads at (its weights), on a speed-1 unit.
    pub load_bytes_per_us: f64,
    /// π: value a swap costs, as a share of the target's weight per share of the memory budget it
    /// takes (models predicted through links meanwhile).
    pub swap_penalty: f32,
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
            frames: vec![8, 16, 32, 64],
            gain: MEASURED_GAIN.to_vec(),
            label_every: 10,
            load_bytes_per_us: 1000.0,
            swap_penalty: 0.02,
            finetune_epochs: 20,
            link_hidden_floor: 64,
            time_scale: 1.0,
            power_levels: vec![1.0, 0.6, 0.3],
            stress: None,
        }
    }
}

/// g(K) at K = 8, 16, 32, 64, as `jetlink bench adapt-gain` measured it on an earlier version of the
/// loop (every 10th frame labelled). Today's loop measures a more concave curve
/// (`docs/bench/adapt-gain.json`: [0.462, 0.752, 0.912, 1.0] labelling every 10th frame, `gain_uniform_10`;
/// [0.598, 0.806, 0.969, 1.0] with the default top-k labelling, `gain`): small K win back most of
/// the drift. With those curves the exact branch and bound that learns the policy table explores
/// orders of magnitude more nodes on 4-unit boards (minutes per context at 128 options, measured),
/// so the cost model keeps this curve until the allocator's worst case is bounded (the DCTA issue).
pub const MEASURED_GAIN: [f32; 4] = [0.159, 0.349, 0.607, 1.0];

impl CostModel {
    /// The same model with `choices` K values spaced log-evenly from its smallest to its largest K,
    /// the gain at each interpolated linearly in K from the measured curve (its own when `choices`
    /// is its own count).
    pub fn with_choices(&self, choices: usize) -> Result<CostModel, DctaError> {
        self.validate_choices()?;
        if choices == self.frames.len() {
            return Ok(self.clone());
        }
        if choices == 0 || choices > MAX_CHOICES {
            return Err(DctaError::BadOption { option: "choices", reason: "need 1 to 16 K choices" });
        }
        let (lo, hi) = (self.frames[0] as f64, *self.frames.last().unwrap() as f64);
        let mut frames: Vec<u32> = (0..choices)
            .map(|i| {
                let t = if choices == 1 { 1.0 } else { i as f64 / (choices - 1) as f64 };
                (lo * (hi / lo).powf(t)).round() as u32
            })
            .collect();
        frames.dedup();
        let gain = frames
            .iter()
            .map(|&k| {
                let k = k as f32;
                let at = self.frames.iter().position(|&f| f as f32 >= k).unwrap_or(self.frames.len() - 1);
                if at == 0 {
                    return self.gain[0];
                }
                let (k0, k1) = (self.frames[at - 1] as f32, self.frames[at] as f32);
                let t = ((k - k0) / (k1 - k0)).clamp(0.0, 1.0);
                self.gain[at - 1] + t * (self.gain[at] - self.gain[at - 1])
            })
            .collect();
        let m = CostModel { frames, gain, ..self.clone() };
        m.validate_choices()?;
        Ok(m)
    }

    /// Check the K choices, their gains and the swap settings.
    pub fn validate_choices(&self) -> Result<(), DctaError> {
        let k = self.frames.len();
        if k == 0 || k > MAX_CHOICES || self.frames.windows(2).any(|w| w[0] >= w[1]) || self.frames[0] == 0 {
            return Err(DctaError::BadOption { option: "frames", reason: "need 1 to 16 ascending K > 0" });
        }
        if self.gain.len() != k || self.gain.iter().any(|g| !(g.is_finite() && (0.0..=1.0).contains(g))) {
            return Err(DctaError::BadOption { option: "gain", reason: "one value in [0, 1] per K choice" });
        }
        if self.label_every == 0 {
            return Err(DctaError::BadOption { option: "label_every", reason: "must be at least 1" });
        }
        if !(self.load_bytes_per_us.is_finite() && self.load_bytes_per_us > 0.0) {
            return Err(DctaError::BadOption {
                option: "load_bytes_per_us",
                reason: "must be finite and > 0",
            });
        }
        if !(self.swap_penalty.is_finite() && self.swap_penalty >= 0.0) {
            return Err(DctaError::BadOption { option: "swap_penalty", reason: "must be finite and >= 0" });
        }
        Ok(())
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
