//! What a period can choose from: per task, every (unit, K frames) option with its time, memory and
//! expected gain ([`Menu`], built once from the manifest and the board), the context a period is
//! decided in ([`Context`]), and one period's multiple-choice knapsack ([`Instance`]), refilled from
//! the menu and a context without allocating. Symbols follow `docs/dcta.md`.

use serde::{Deserialize, Serialize};

use super::problem::{CostModel, Tatim, importance};
use super::{DctaError, MAX_CHOICES, MAX_TASKS, MAX_UNITS};
use crate::board::Board;
use crate::manifest::Manifest;

/// The options of one deployment. Every task has the same q = m × k options, option i of a task
/// runs on unit i / k with K = `frames[i % k]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Menu {
    pub tasks: Vec<String>,
    /// w_j.
    pub weights: Vec<f32>,
    pub units: Vec<String>,
    /// s_u.
    pub speeds: Vec<f32>,
    /// K choices, ascending.
    pub frames: Vec<u32>,
    /// g_j(K) ∈ [0, 1], n × k: the share of target j's drift a refresh on K frames wins back
    /// (measured, see [`CostModel::gain`]).
    pub gain: Vec<f32>,
    /// t_j(K): work on a speed-1 unit, µs, n × k.
    pub work_us: Vec<f64>,
    /// M_j: bytes a non-resident target needs to be swapped in (weights and activations).
    pub mem_bytes: Vec<u64>,
    /// L_j: time to load a non-resident target, µs on a speed-1 unit.
    pub load_us: Vec<f64>,
    /// π_j: value a swap costs (the accuracy lost by predicting evicted models meanwhile).
    pub swap_penalty: Vec<f32>,
    /// f_ℓ.
    pub power_levels: Vec<f32>,
    /// C_uℓ, µs, L × m.
    pub capacity_us: Vec<u64>,
    /// Memory the board can free for adaptation at most (its model budget), bytes.
    pub memory_bytes: u64,
    /// Labelled frames a period offers (ticks per period / the loop's labelling rate). Swaps share
    /// the free memory over time, one labelled frame at a time, so memory is a knapsack in
    /// byte-frames: option o takes M_j · K, the period offers M · label_slots.
    pub label_slots: u32,
}

/// The context one period is decided in. Drift is per task in [0, 1]; `free_mem` is the memory
/// available for swapping targets in; `resident` has bit j set when target j is loaded already (a
/// DCTA task word of up to [`crate::dcta::MAX_TASKS`] tasks: synthetic menus go past the
/// [`crate::model_set::ModelSet`] cap of a workload's models, which the loop converts from).
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub drift: &'a [f32],
    pub power_level: usize,
    pub free_mem: u64,
    pub resident: u64,
}

impl Menu {
    /// Tasks from the manifest's models, units from the board, K choices and gains from the cost
    /// model (`docs/dcta.md`).
    pub fn from_manifest(manifest: &Manifest, board: &Board, cost: &CostModel) -> Result<Menu, DctaError> {
        let tatim = Tatim::from_manifest(manifest, board, cost)?;
        let mem: Vec<u64> =
            manifest.models.iter().map(|m| m.cost.weight_bytes + m.cost.activation_bytes).collect();
        let weight_bytes: Vec<u64> = manifest.models.iter().map(|m| m.cost.weight_bytes).collect();
        let slots = board.ticks_per_period / cost.label_every.max(1);
        Menu::from_tatim(&tatim, cost, &mem, &weight_bytes, board.model_budget_bytes, slots)
    }

    /// From problem data whose work was computed for `cost.frames_per_task` frames: work scales
    /// linearly in K (K inferences and K·E fine-tuning samples).
    pub fn from_tatim(
        tatim: &Tatim,
        cost: &CostModel,
        mem_bytes: &[u64],
        weight_bytes: &[u64],
        memory_bytes: u64,
        label_slots: u32,
    ) -> Result<Menu, DctaError> {
        tatim.validate()?;
        let n = tatim.n_tasks();
        if n > MAX_TASKS {
            return Err(DctaError::TaskCount { tasks: n, max: MAX_TASKS });
        }
        cost.validate_choices()?;
        if mem_bytes.len() != n || weight_bytes.len() != n {
            return Err(DctaError::BadOption { option: "mem_bytes", reason: "one value per task" });
        }
        let k0 = cost.frames_per_task as f64;
        let mut work_us = Vec::with_capacity(n * cost.frames.len());
        let mut gain = Vec::with_capacity(n * cost.frames.len());
        for j in 0..n {
            for (&k, &g) in cost.frames.iter().zip(&cost.gain) {
                work_us.push(tatim.work_us[j] * k as f64 / k0);
                gain.push(g);
            }
        }
        let budget = memory_bytes.max(1) as f64;
        Ok(Menu {
            tasks: tatim.tasks.clone(),
            weights: tatim.weights.clone(),
            units: tatim.units.clone(),
            speeds: tatim.speeds.clone(),
            frames: cost.frames.clone(),
            gain,
            work_us,
            mem_bytes: mem_bytes.to_vec(),
            load_us: weight_bytes.iter().map(|&b| b as f64 / cost.load_bytes_per_us).collect(),
            swap_penalty: (0..n)
                .map(|j| {
                    cost.swap_penalty * tatim.weights[j] * (mem_bytes[j] as f64 / budget).min(1.0) as f32
                })
                .collect(),
            power_levels: tatim.power_levels.clone(),
            capacity_us: tatim.capacity_us.clone(),
            memory_bytes,
            label_slots: label_slots.max(1),
        })
    }

    pub fn n_tasks(&self) -> usize {
        self.tasks.len()
    }

    pub fn n_units(&self) -> usize {
        self.units.len()
    }

    pub fn n_choices(&self) -> usize {
        self.frames.len()
    }

    pub fn n_levels(&self) -> usize {
        self.power_levels.len()
    }

    /// Options per task, q = m × k.
    pub fn per_task(&self) -> usize {
        self.n_units() * self.n_choices()
    }

    /// Options in all, n × q: the problem's size.
    pub fn n_options(&self) -> usize {
        self.n_tasks() * self.per_task()
    }

    /// Capacities C_uℓ of level ℓ.
    pub fn capacity(&self, level: usize) -> &[u64] {
        let m = self.n_units();
        &self.capacity_us[level * m..(level + 1) * m]
    }

    /// Unit and K index of option i of a task.
    #[inline]
    pub fn option(&self, i: usize) -> (usize, usize) {
        (i / self.n_choices(), i % self.n_choices())
    }

    /// Check every size (a menu read from a file may be corrupt).
    pub fn validate(&self) -> Result<(), DctaError> {
        let (n, m, k, l) = (self.n_tasks(), self.n_units(), self.n_choices(), self.n_levels());
        if n == 0 || n > MAX_TASKS {
            return Err(DctaError::TaskCount { tasks: n, max: MAX_TASKS });
        }
        if m == 0 || m > super::MAX_UNITS {
            return Err(DctaError::UnitCount { board: String::new(), units: m, max: super::MAX_UNITS });
        }
        if k == 0 || k > MAX_CHOICES || self.frames.windows(2).any(|w| w[0] >= w[1]) {
            return Err(DctaError::BadTable("need 1 to 16 ascending K choices"));
        }
        if self.label_slots == 0 {
            return Err(DctaError::BadTable("label_slots must be at least 1"));
        }
        if l == 0 || l > 255 || self.capacity_us.len() != l * m {
            return Err(DctaError::BadTable("capacities must be L × m, 1 to 255 levels"));
        }
        let per_task =
            [self.weights.len(), self.mem_bytes.len(), self.load_us.len(), self.swap_penalty.len()];
        if per_task.iter().any(|&len| len != n) || self.gain.len() != n * k || self.work_us.len() != n * k {
            return Err(DctaError::BadTable("weights, memory, load, penalty per task; gain and work n × k"));
        }
        if self.speeds.len() != m || self.speeds.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
            return Err(DctaError::BadTable("speeds must be one finite value > 0 per unit"));
        }
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if !self.weights.iter().chain(&self.gain).chain(&self.swap_penalty).all(|&v| finite(v as f64))
            || !self.work_us.iter().chain(&self.load_us).all(|&v| finite(v))
        {
            return Err(DctaError::BadTable("weights, gains, penalties and times must be finite and >= 0"));
        }
        Ok(())
    }

    /// Fill `inst` with the knapsack of context `ctx` (no allocation once `inst` was made by
    /// [`Instance::for_menu`]). Drift is clamped to [0, 1] (NaN → 0); tasks beyond `ctx.drift` get 0;
    /// a power level the menu lacks counts as its least-capacity level.
    pub fn fill(&self, ctx: &Context, inst: &mut Instance) {
        let level = ctx.power_level.min(self.n_levels() - 1);
        let (cap, k) = (self.capacity(level), self.n_choices());
        self.fill_with(ctx, inst, |j, resident, time, time_f, share| {
            for (i, ((t, tf), s)) in time.iter_mut().zip(time_f).zip(share).enumerate() {
                let (u, c) = (i / k, i % k);
                *t = self.option_time(j, u, c, resident);
                *tf = *t as f64;
                *s = share_of(*t, cap[u]);
            }
            rises(time, k)
        });
    }

    /// [`fill`](Self::fill) with the options' times and their shares of the level's capacity copied
    /// from `times` (this menu's [`option_times`](Self::option_times)) instead of computed: the
    /// device's way.
    pub fn fill_cached(&self, ctx: &Context, inst: &mut Instance, times: &OptionTimes) {
        let (n, q) = (self.n_tasks(), self.per_task());
        assert_eq!(times.time.len(), 2 * n * q, "option times of another menu");
        let level = ctx.power_level.min(self.n_levels() - 1);
        let share = &times.share[level * 2 * n * q..(level + 1) * 2 * n * q];
        self.fill_with(ctx, inst, |j, resident, time, time_f, sh| {
            let row = (resident as usize * n + j) * q..(resident as usize * n + j + 1) * q;
            time.copy_from_slice(&times.time[row.clone()]);
            time_f.copy_from_slice(&times.time_f[row.clone()]);
            sh.copy_from_slice(&share[row]);
            times.rising[resident as usize * n + j]
        });
    }

    /// t_o: option (u, K index c) of task j on its unit, µs, with the load time of a swap unless
    /// the target is resident.
    fn option_time(&self, j: usize, u: usize, c: usize, resident: bool) -> u64 {
        let k = self.n_choices();
        let load = if resident { 0.0 } else { self.load_us[j] };
        ((self.work_us[j * k + c] + load) / self.speeds[u] as f64).ceil().max(1.0) as u64
    }

    /// Every option's time, resident and not, and its share of its unit's capacity at every power
    /// level: computed once where a menu decides many periods.
    pub fn option_times(&self) -> OptionTimes {
        let (n, q, k) = (self.n_tasks(), self.per_task(), self.n_choices());
        // Resident-major, then task by task: entries (resident · n + j) · q + i.
        let mut time = Vec::with_capacity(2 * n * q);
        for resident in [false, true] {
            for j in 0..n {
                time.extend((0..q).map(|i| self.option_time(j, i / k, i % k, resident)));
            }
        }
        let time_f = time.iter().map(|&t| t as f64).collect();
        let rising = time.chunks(q).map(|row| rises(row, k)).collect();
        // Level-major, then in `time`'s order.
        let mut share = Vec::with_capacity(self.n_levels() * time.len());
        for level in 0..self.n_levels() {
            let cap = self.capacity(level);
            share.extend(time.iter().enumerate().map(|(at, &t)| share_of(t, cap[at % q / k])));
        }
        OptionTimes { time, time_f, share, rising }
    }

    /// Pose the knapsack; `times(j, resident, time, time_f, share)` writes task j's row of option
    /// times, the same as `f64`, and their shares of the units' capacities, and returns whether
    /// those times rise with K on every unit ([`rises`]).
    fn fill_with(
        &self,
        ctx: &Context,
        inst: &mut Instance,
        times: impl Fn(usize, bool, &mut [u64], &mut [f64], &mut [f64]) -> bool,
    ) {
        let (n, m, k) = (self.n_tasks(), self.n_units(), self.n_choices());
        let q = m * k;
        inst.set_shape(n, m, k);
        let level = ctx.power_level.min(self.n_levels() - 1);
        inst.cap[..m].copy_from_slice(self.capacity(level));
        for (s, &v) in inst.speed.iter_mut().zip(&self.speeds) {
            *s = v as f64;
        }
        let mem_cap = ctx.free_mem.saturating_mul(self.label_slots as u64);
        inst.mem_cap = mem_cap;
        for j in 0..n {
            let v_j = importance(self.weights[j], ctx.drift.get(j).copied().unwrap_or(0.0));
            let resident = j < 64 && ctx.resident >> j & 1 == 1;
            let (mem, penalty) = match resident {
                true => (0, 0.0),
                false => (self.mem_bytes[j], self.swap_penalty[j] as f64),
            };
            let row = j * q..(j + 1) * q;
            let times_rise = times(
                j,
                resident,
                &mut inst.time[row.clone()],
                &mut inst.time_f[row.clone()],
                &mut inst.time_share[row.clone()],
            );
            // Value, memory and its share depend on the task and K only: once per K, not per unit.
            let mut per_k = [(0.0f64, 0u64, 0.0f64); MAX_CHOICES];
            for (c, slot) in per_k[..k].iter_mut().enumerate() {
                let mm = mem * self.frames[c] as u64;
                *slot =
                    ((v_j * self.gain[j * k + c] as f64 - penalty).max(0.0), mm, mem_share_of(mm, mem_cap));
            }
            // Value and memory are the same on every unit: their rows rise where the K's do.
            inst.rising[j] =
                times_rise && per_k[..k].windows(2).all(|w| value_rises(w[0].0, w[1].0) && w[0].1 <= w[1].1);
            let (value, mem_o, mem_f) =
                (&mut inst.value[row.clone()], &mut inst.mem[row.clone()], &mut inst.mem_f[row.clone()]);
            let (mem_share, live, time) =
                (&mut inst.mem_share[row.clone()], &mut inst.live[row.clone()], &inst.time[row]);
            for u in 0..m {
                let cap = inst.cap[u];
                let span = u * k..(u + 1) * k;
                let rows = value[span.clone()]
                    .iter_mut()
                    .zip(&mut mem_o[span.clone()])
                    .zip(&mut mem_f[span.clone()])
                    .zip(&mut mem_share[span.clone()])
                    .zip(&mut live[span.clone()])
                    .zip(&time[span]);
                for ((((((v, mo), mf), ms), l), &t), &(pv, pm, ps)) in rows.zip(&per_k[..k]) {
                    (*v, *mo, *mf, *ms) = (pv, pm, pm as f64, ps);
                    *l = live_value(pv, t, cap, pm, mem_cap);
                }
            }
        }
        inst.derive_tops();
    }
}

/// Whether `row` (a task's options, k per unit) never falls from one K to the next on any unit.
fn rises<T: PartialOrd + Copy>(row: &[T], k: usize) -> bool {
    rises_by(row, k, |a, b| a <= b)
}

/// Whether every step from one K to the next on every unit of `row` (k options a unit) is one
/// `step` allows.
fn rises_by<T: Copy>(row: &[T], k: usize, step: impl Fn(T, T) -> bool) -> bool {
    row.chunks(k.max(1)).all(|unit| unit.windows(2).all(|w| step(w[0], w[1])))
}

/// Whether a value row may step from `a` to `b` and still rise ([`Instance::rising`]): up, or level
/// at 0 (worth nothing). Two equal values above 0 do not rise: the first of them would be the pick,
/// which a search for the last fitting option does not find in its bounded steps.
fn value_rises(a: f64, b: f64) -> bool {
    a < b || (a == b && b <= 0.0)
}

/// An option's value where it is worth anything and fits an empty knapsack (its unit's capacity
/// `cap` and the memory `mem_cap`), else −∞: what the solvers' scans take as usable. −∞ rather
/// than 0 so that a priced scan needs no test: v − λ·t − μ·m stays −∞, below any floor.
#[inline]
fn live_value(value: f64, time: u64, cap: u64, mem: u64, mem_cap: u64) -> f64 {
    if value > 0.0 && time <= cap && mem <= mem_cap { value } else { f64::NEG_INFINITY }
}

/// t / C: an option's share of its unit's capacity (a capacity of 0 counts as 1 µs).
#[inline]
fn share_of(t: u64, cap: u64) -> f64 {
    t as f64 / cap.max(1) as f64
}

/// m / M: an option's share of the free memory (0 for an option that needs none).
#[inline]
fn mem_share_of(m: u64, mem_cap: u64) -> f64 {
    if m > 0 { m as f64 / mem_cap.max(1) as f64 } else { 0.0 }
}

/// Every option's time on its unit for a non-resident and a resident target, and those times'
/// shares of the unit's capacity at every power level ([`Menu::option_times`]).
#[derive(Clone, Debug)]
pub struct OptionTimes {
    /// Resident-major, then by task: (resident · n + j) · q + i.
    time: Vec<u64>,
    /// The same as `f64`.
    time_f: Vec<f64>,
    /// Level-major: level × (`time`'s order).
    share: Vec<f64>,
    /// Per (resident, task) in `time`'s order: whether the row's times never fall as K grows on
    /// any unit ([`Instance::rising`]).
    rising: Vec<bool>,
}

/// One period's multiple-choice knapsack: choose at most one option per task to maximise
/// Σ v_o subject to Σ_{o on u} t_o ≤ C_u for every unit and Σ mem_o ≤ M (memory in byte-frames,
/// see [`Menu::label_slots`]). Buffers are sized once.
///
/// Besides the options' own figures it keeps, per option, what the solvers' passes would otherwise
/// recompute each time (the time and memory as `f64`, their shares of the capacities, and the value
/// where the option fits an empty knapsack, else 0). They are derived when the instance is set, so
/// the option figures are written only through [`Menu::fill`], [`set_option`](Self::set_option)
/// and [`set_capacity`](Self::set_capacity), which keep them in step.
#[derive(Clone, Debug)]
pub struct Instance {
    pub n: usize,
    pub m: usize,
    /// K choices per unit.
    pub k: usize,
    /// Options per task (m × k).
    pub q: usize,
    /// v_o, n × q.
    pub(crate) value: Vec<f64>,
    /// t_o, µs on the option's unit, n × q.
    pub(crate) time: Vec<u64>,
    /// mem_o, byte-frames (bytes swapped in × K), n × q.
    pub(crate) mem: Vec<u64>,
    /// C_u, µs.
    pub(crate) cap: Vec<u64>,
    /// s_u, the units' speeds (any positive values give a valid work bound; 1 by default).
    pub speed: Vec<f64>,
    /// M, byte-frames (free bytes × the period's labelled frames).
    pub(crate) mem_cap: u64,
    /// Derived per option: t_o and mem_o as `f64` (exact: both are far below 2^53).
    pub(crate) time_f: Vec<f64>,
    pub(crate) mem_f: Vec<f64>,
    /// Derived per option: t_o / C_u and mem_o / M (0 for no memory), the shares the greedy prices.
    pub(crate) time_share: Vec<f64>,
    pub(crate) mem_share: Vec<f64>,
    /// Derived per option: v_o where the option fits an empty knapsack ([`usable`](Self::usable)),
    /// else −∞ ([`live_value`]).
    pub(crate) live: Vec<f64>,
    /// Derived per task: its largest `live` value (0 when no option is usable) and the first
    /// option holding it (`Choice::NONE` then).
    pub(crate) top_value: Vec<f64>,
    pub(crate) top_at: Vec<u8>,
    /// Derived per task: whether its options rise with K on every unit ([`Instance::rising`]).
    rising: Vec<bool>,
    /// The unit of option i (within a task): i / k, looked up rather than divided.
    unit_of: [u8; MAX_UNITS * MAX_CHOICES],
}

impl Instance {
    /// Buffers for `menu`'s size.
    pub fn for_menu(menu: &Menu) -> Instance {
        Instance::with_size(menu.n_tasks(), menu.n_units(), menu.n_choices())
    }

    /// An empty instance of n tasks, m units, k choices (all values 0).
    pub fn with_size(n: usize, m: usize, k: usize) -> Instance {
        let q = m * k;
        let mut inst = Instance {
            n,
            m,
            k,
            q,
            value: vec![0.0; n * q],
            time: vec![1; n * q],
            mem: vec![0; n * q],
            cap: vec![0; m],
            speed: vec![1.0; m],
            mem_cap: 0,
            time_f: vec![0.0; n * q],
            mem_f: vec![0.0; n * q],
            time_share: vec![0.0; n * q],
            mem_share: vec![0.0; n * q],
            live: vec![0.0; n * q],
            top_value: vec![0.0; n],
            top_at: vec![Choice::NONE; n],
            rising: vec![false; n],
            unit_of: [0; MAX_UNITS * MAX_CHOICES],
        };
        inst.derive();
        inst
    }

    /// v_o of every option (n × q, option i of task j at j · q + i).
    pub fn value(&self) -> &[f64] {
        &self.value[..self.n * self.q]
    }

    /// t_o of every option, µs on its unit.
    pub fn time(&self) -> &[u64] {
        &self.time[..self.n * self.q]
    }

    /// mem_o of every option, byte-frames.
    pub fn mem(&self) -> &[u64] {
        &self.mem[..self.n * self.q]
    }

    /// C_u of every unit, µs.
    pub fn cap(&self) -> &[u64] {
        &self.cap[..self.m]
    }

    /// M, byte-frames.
    pub fn mem_cap(&self) -> u64 {
        self.mem_cap
    }

    /// Set option `o` (= j · q + i): its value, time and memory.
    pub fn set_option(&mut self, o: usize, value: f64, time: u64, mem: u64) {
        (self.value[o], self.time[o], self.mem[o]) = (value, time, mem);
        self.derive_option(o);
    }

    /// Set the capacities: each unit's time and the memory.
    pub fn set_capacity(&mut self, cap: &[u64], mem_cap: u64) {
        self.cap[..self.m].copy_from_slice(&cap[..self.m]);
        self.mem_cap = mem_cap;
        self.derive();
    }

    /// Recompute every option's derived figures (one pass over the options) and the tasks' tops.
    pub(crate) fn derive(&mut self) {
        self.set_shape(self.n, self.m, self.k);
        for o in 0..self.n * self.q {
            let u = self.unit(o % self.q);
            let (ts, ms) = (share_of(self.time[o], self.cap[u]), mem_share_of(self.mem[o], self.mem_cap));
            self.set_derived(o, u, ts, ms);
        }
        for j in 0..self.n {
            self.derive_rising(j);
        }
        self.derive_tops();
    }

    /// Whether task j's rows rise ([`rising`](Self::rising)), from its options.
    fn derive_rising(&mut self, j: usize) {
        let (q, k) = (self.q, self.k);
        let span = j * q..(j + 1) * q;
        self.rising[j] = rises_by(&self.value[span.clone()], k, value_rises)
            && rises(&self.time[span.clone()], k)
            && rises(&self.mem[span], k);
    }

    /// Option `o`'s derived figures, on its unit `u`, from its value, time and memory and their
    /// shares (`time_share` = [`share_of`], `mem_share` = [`mem_share_of`]): time and memory as
    /// `f64`, the shares, and [`live_value`]. The shares are divided, not multiplied by a
    /// reciprocal, so that they are the same numbers the greedy always priced. (Posing a period's
    /// knapsack, [`Menu::fill`], writes the same figures a task's row at a time.)
    #[inline]
    fn set_derived(&mut self, o: usize, u: usize, time_share: f64, mem_share: f64) {
        let (v, t, m) = (self.value[o], self.time[o], self.mem[o]);
        self.time_f[o] = t as f64;
        self.mem_f[o] = m as f64;
        self.time_share[o] = time_share;
        self.mem_share[o] = mem_share;
        self.live[o] = live_value(v, t, self.cap[u], m, self.mem_cap);
    }

    /// Each task's largest usable value and where it is first.
    pub(crate) fn derive_tops(&mut self) {
        let q = self.q;
        for j in 0..self.n {
            let top = super::greedy::first_max(&self.live[j * q..(j + 1) * q], 0.0);
            self.top_value[j] = top.map_or(0.0, |t| t.0);
            self.top_at[j] = top.map_or(Choice::NONE, |t| t.1 as u8);
        }
    }

    /// n tasks of m units × k choices (q = m · k), and the unit of every option.
    fn set_shape(&mut self, n: usize, m: usize, k: usize) {
        (self.n, self.m, self.k, self.q) = (n, m, k, m * k);
        for i in 0..self.q.min(self.unit_of.len()) {
            self.unit_of[i] = (i / k.max(1)) as u8;
        }
    }

    /// Derive option `o` alone (and the tasks' tops).
    fn derive_option(&mut self, o: usize) {
        let u = self.unit(o % self.q);
        let (ts, ms) = (share_of(self.time[o], self.cap[u]), mem_share_of(self.mem[o], self.mem_cap));
        self.set_derived(o, u, ts, ms);
        self.derive_rising(o / self.q);
        self.derive_tops();
    }

    /// Whether task j's options rise with K on every unit: time and memory never fall from one K to
    /// the next, and value grows (or stays at 0). Then the options of a unit that fit any remaining
    /// capacity are a prefix of its row, and the most valuable of them is the last, the first to
    /// hold its value (the refresh of the menu: gain, work and labelled frames all grow with K).
    #[inline]
    pub(crate) fn rising(&self, j: usize) -> bool {
        self.rising[j]
    }

    /// Unit of option i (within a task).
    #[inline]
    pub fn unit(&self, i: usize) -> usize {
        self.unit_of[i] as usize
    }

    /// Whether option i of task j fits an empty knapsack (and is worth anything).
    #[inline]
    pub fn usable(&self, j: usize, i: usize) -> bool {
        self.live[j * self.q + i] > 0.0
    }

    /// Total value of `c` (tasks beyond n ignored).
    pub fn value_of(&self, c: &Choice) -> f64 {
        (0..self.n.min(c.len())).filter_map(|j| c.option_of(j).map(|i| self.value[j * self.q + i])).sum()
    }

    /// What feasible choice `c` leaves: each unit's time and the memory.
    pub(crate) fn left_by(&self, c: &Choice) -> ([u64; super::MAX_UNITS], u64) {
        let mut rem = [0u64; super::MAX_UNITS];
        rem[..self.m].copy_from_slice(&self.cap[..self.m]);
        let mut mem_rem = self.mem_cap;
        for j in 0..self.n {
            if let Some(i) = c.option_of(j) {
                rem[self.unit(i)] -= self.time[j * self.q + i];
                mem_rem -= self.mem[j * self.q + i];
            }
        }
        (rem, mem_rem)
    }

    /// Whether `c` has n tasks, names options below q and fits every unit and the memory.
    pub fn is_feasible(&self, c: &Choice) -> bool {
        if c.len() != self.n {
            return false;
        }
        let mut load = [0u64; super::MAX_UNITS];
        let mut mem = 0u64;
        for j in 0..self.n {
            if let Some(i) = c.option_of(j) {
                if i >= self.q {
                    return false;
                }
                load[self.unit(i)] += self.time[j * self.q + i];
                mem += self.mem[j * self.q + i];
            }
        }
        (0..self.m).all(|u| load[u] <= self.cap[u]) && mem <= self.mem_cap
    }
}

/// Which option each task takes, if any. Fixed size and `Copy`: held and returned without
/// allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Choice {
    n: u8,
    opt: [u8; MAX_TASKS],
}

impl Choice {
    /// The byte that marks a task that does not run.
    pub const NONE: u8 = u8::MAX;

    /// `n` tasks, none chosen.
    pub const fn empty(n: usize) -> Choice {
        assert!(n <= MAX_TASKS);
        Choice { n: n as u8, opt: [Self::NONE; MAX_TASKS] }
    }

    pub fn len(&self) -> usize {
        self.n as usize
    }

    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// The option task j takes (index within the task), or `None`.
    #[inline]
    pub fn option_of(&self, j: usize) -> Option<usize> {
        match self.opt[..self.n as usize].get(j) {
            Some(&o) if o != Self::NONE => Some(o as usize),
            _ => None,
        }
    }

    /// Set task j's option (or none). Panics if j is out of range.
    #[inline]
    pub fn set(&mut self, j: usize, option: Option<usize>) {
        assert!(j < self.len(), "task {j} out of range ({} tasks)", self.n);
        self.opt[j] = option.map_or(Self::NONE, |o| o as u8);
    }

    /// Number of tasks that run.
    pub fn assigned(&self) -> usize {
        self.opt[..self.n as usize].iter().filter(|&&o| o != Self::NONE).count()
    }
}
