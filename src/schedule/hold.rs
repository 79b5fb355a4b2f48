//! Temporal reuse: a task's output *held* from its model's last run, scored by its age. The
//! DeepStream-style `interval-K` baseline (every model every K-th frame, held in between) and
//! `optimal-hold`, the exact choice of a core set run on every frame plus a rotation of models run in
//! turn whose outputs, between runs, are held or predicted through links, whichever scores better at
//! that age.

use super::{Decision, Problem, Scheduler};
use crate::links::agreement;
use crate::manifest::OutputKind;
use crate::model_set::ModelSet;
use crate::recording::Recording;

/// Oldest age (frames) whose hold agreement is measured; older outputs score as this age.
pub const MAX_HOLD_AGE: usize = 32;

/// Agreement of each task's output held `age` frames with the model's output on the current frame,
/// measured over consecutive frames of a recording (every model's output on every frame).
#[derive(Clone, Debug, PartialEq)]
pub struct HoldScores {
    n: usize,
    /// `[j * MAX_HOLD_AGE + age - 1]`.
    score: Vec<f32>,
}

impl HoldScores {
    /// Measure on the recorded frames in `frames` (frame indices of the stream): for every pair of
    /// frames `f - age`, `f` both in the range and both recorded, the agreement (the task's score
    /// rule) of the older output with the newer one.
    pub fn measure(
        reference: &Recording,
        kinds: &[OutputKind],
        scorings: &[crate::scoring::Scoring],
        frames: std::ops::Range<usize>,
    ) -> HoldScores {
        let n = kinds.len();
        let layout = reference.layout();
        let mut sum = vec![0.0f64; n * MAX_HOLD_AGE];
        let mut count = vec![0u64; MAX_HOLD_AGE];
        let rows: Vec<Option<usize>> = frames.clone().map(|f| reference.row_of_frame(f as u32)).collect();
        for (k, now) in rows.iter().enumerate() {
            let Some(now) = *now else { continue };
            for age in 1..=MAX_HOLD_AGE.min(k) {
                let Some(old) = rows[k - age] else { continue };
                count[age - 1] += 1;
                for j in 0..n {
                    let r = layout.range(j);
                    sum[j * MAX_HOLD_AGE + age - 1] += agreement(
                        kinds[j],
                        scorings[j],
                        &reference.row(old)[r.clone()],
                        &reference.row(now)[r],
                    ) as f64;
                }
            }
        }
        let score = (0..n * MAX_HOLD_AGE)
            .map(|i| {
                let c = count[i % MAX_HOLD_AGE];
                if c == 0 { 0.0 } else { (sum[i] / c as f64) as f32 }
            })
            .collect();
        HoldScores { n, score }
    }

    /// Scores from a table `[j * MAX_HOLD_AGE + age - 1]` (tests, constructed cases).
    pub fn from_table(n: usize, score: Vec<f32>) -> HoldScores {
        assert_eq!(score.len(), n * MAX_HOLD_AGE);
        HoldScores { n, score }
    }

    pub fn table(&self) -> &[f32] {
        &self.score
    }

    /// Agreement of task j held `age` frames (1 ≤ age; older than [`MAX_HOLD_AGE`] scores as that).
    pub fn get(&self, j: usize, age: usize) -> f32 {
        assert!(j < self.n);
        if age == 0 { 1.0 } else { self.score[j * MAX_HOLD_AGE + age.min(MAX_HOLD_AGE) - 1] }
    }
}

/// Split the models of `runnable` into `k` groups, each of at most `p.max_active` models whose
/// memory sums to at most `budget` (first fit, largest first). `None` when they do not fit.
pub fn interval_groups(p: &Problem, runnable: ModelSet, k: usize, budget: u64) -> Option<Vec<ModelSet>> {
    let mut order: Vec<usize> = runnable.iter().collect();
    order.sort_by(|&a, &b| p.model_mem[b].cmp(&p.model_mem[a]).then(a.cmp(&b)));
    let mut groups = vec![ModelSet::EMPTY; k.max(1)];
    for i in order {
        let g = groups
            .iter_mut()
            .find(|g| g.len() < p.max_active && p.model_cost(**g) + p.model_mem[i] <= budget)?;
        g.insert(i);
    }
    Some(groups)
}

/// DeepStream-style interval inference: every model that fits the budget alone runs once every `k`
/// frames, the models spread over the `k` phases so that each frame runs at most `max_active` of them
/// within the memory budget; between runs each task delivers its model's last output. No links.
/// When the models cannot be spread so (`feasible()` is false), nothing runs.
pub struct Interval {
    k: usize,
    groups: Vec<ModelSet>,
    runnable: ModelSet,
    t: usize,
    peak: u64,
}

impl Interval {
    pub fn new(k: usize) -> Interval {
        Interval { k: k.max(1), groups: Vec::new(), runnable: ModelSet::EMPTY, t: 0, peak: 0 }
    }

    pub fn k(&self) -> usize {
        self.k
    }

    /// Whether the last `select` could spread every model that fits alone over the `k` phases.
    pub fn feasible(&self) -> bool {
        !self.groups.is_empty()
    }

    /// The models run at each phase.
    pub fn groups(&self) -> &[ModelSet] {
        &self.groups
    }
}

impl Scheduler for Interval {
    fn name(&self) -> &'static str {
        "interval"
    }

    fn select(&mut self, p: &Problem, budget: u64) {
        self.runnable = (0..p.n).filter(|&i| p.model_mem[i] <= budget).collect();
        let groups = interval_groups(p, self.runnable, self.k, budget).unwrap_or_default();
        if groups != self.groups {
            // A new split starts its cycle afresh; an unchanged one keeps its phase.
            self.groups = groups;
            self.t = 0;
        }
        self.peak = self.groups.iter().map(|&g| p.model_cost(g)).max().unwrap_or(0);
    }

    fn decide(&mut self, _frame: &[u8]) -> Decision {
        if self.groups.is_empty() {
            return Decision::Run {
                active: ModelSet::EMPTY,
                predict: ModelSet::EMPTY,
                hold: ModelSet::EMPTY,
            };
        }
        let active = self.groups[self.t % self.k];
        self.t = (self.t + 1) % self.k;
        Decision::Run { active, predict: ModelSet::EMPTY, hold: self.runnable - active }
    }

    fn peak_memory(&self, _p: &Problem) -> u64 {
        self.peak
    }

    fn cycle(&self) -> usize {
        self.groups.len().max(1)
    }
}

/// One frame of a rotation: run `active`, predict `predict`, hold `hold`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Phase {
    pub active: ModelSet,
    pub predict: ModelSet,
    pub hold: ModelSet,
}

/// A cyclic schedule: `core` runs on every frame, the models of `rotation` run in turn (`slots` at a
/// time, in index order), and every other task is, on each frame, predicted through links from the
/// models running then or held from its model's last run, whichever scores better at that age.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rotation {
    pub core: ModelSet,
    pub rotation: ModelSet,
    pub phases: Vec<Phase>,
    /// Importance-weighted expected accuracy, the mean over the phases.
    pub objective: f32,
    /// Largest memory of one phase (its models and the links it uses).
    pub peak: u64,
    /// Models run per frame, the mean over the phases.
    pub executions: f32,
}

impl Rotation {
    /// Score core `core` with `rotation` rotated through `slots` slots; `None` when a phase does not
    /// fit `budget` or `slots` is 0 with a non-empty rotation.
    pub fn evaluate(
        p: &Problem,
        core: ModelSet,
        rotation: ModelSet,
        slots: usize,
        budget: u64,
    ) -> Option<Rotation> {
        let members: Vec<usize> = rotation.iter().collect();
        if !members.is_empty() && slots == 0 {
            return None;
        }
        let k = if members.is_empty() { 1 } else { members.len().div_ceil(slots) };
        // Phase at which each rotating model runs.
        let mut phase_of = [usize::MAX; ModelSet::CAP];
        let mut groups = vec![ModelSet::EMPTY; k];
        for (x, &i) in members.iter().enumerate() {
            phase_of[i] = x / slots.max(1);
            groups[x / slots.max(1)].insert(i);
        }
        let w: f32 = p.importance.iter().sum::<f32>().max(f32::MIN_POSITIVE);
        let mut r = Rotation { core, rotation, ..Rotation::default() };
        for (t, &g) in groups.iter().enumerate() {
            let active = core | g;
            let mut ph = Phase { active, ..Phase::default() };
            let mut o = 0.0f32;
            for j in 0..p.n {
                if active.contains(j) {
                    o += p.importance[j];
                    continue;
                }
                let link = if !active.is_empty() { p.p(j, active) } else { 0.0 };
                let held =
                    if rotation.contains(j) { p.hold_score(j, (t + k - phase_of[j]) % k) } else { 0.0 };
                if held > link {
                    ph.hold.insert(j);
                    o += p.importance[j] * held;
                } else if link > 0.0 {
                    ph.predict.insert(j);
                    o += p.importance[j] * link;
                }
            }
            // Links cost memory: while the phase is over the budget, give up the predicted task that
            // gains least over holding (or over nothing) per byte of its links.
            let mut c = p.cost_of(ph.active, ph.predict);
            while c > budget && !ph.predict.is_empty() {
                let held_of = |j: usize| {
                    if rotation.contains(j) { p.hold_score(j, (t + k - phase_of[j]) % k) } else { 0.0 }
                };
                let drop = ph
                    .predict
                    .iter()
                    .map(|j| {
                        let bytes = (c - p.cost_of(ph.active, ph.predict.without(j))).max(1) as f32;
                        (p.importance[j] * (p.p(j, active) - held_of(j)) / bytes, j)
                    })
                    .min_by(|x, y| x.0.total_cmp(&y.0))
                    .map(|x| x.1)
                    .unwrap_or(0);
                ph.predict.remove(drop);
                o -= p.importance[drop] * (p.p(drop, active) - held_of(drop));
                if held_of(drop) > 0.0 {
                    ph.hold.insert(drop);
                }
                c = p.cost_of(ph.active, ph.predict);
            }
            if c > budget || active.len() > p.max_active {
                return None;
            }
            r.peak = r.peak.max(c);
            r.objective += o / w / k as f32;
            r.executions += active.len() as f32 / k as f32;
            r.phases.push(ph);
        }
        Some(r)
    }

    /// The best rotation within `budget`: every core of at most `max_active` models, and every
    /// rotation of the other models (for more than 10 models only none, or all the others), through
    /// any number of the slots the core leaves. Ties go to fewer executions per frame, then to a shorter rotation. Plain linking (an empty
    /// rotation) and plain interval inference (an empty core) are both among the choices.
    pub fn best(p: &Problem, budget: u64) -> Rotation {
        Rotation::best_among(p, budget, None)
    }

    /// [`Rotation::best`] with the cores restricted to `cores` (every set when `None`).
    pub fn best_among(p: &Problem, budget: u64, cores: Option<&[ModelSet]>) -> Rotation {
        let all = p.all();
        let mut best = Rotation { phases: vec![Phase::default()], ..Rotation::default() };
        let every: Vec<ModelSet>;
        let cores = match cores {
            Some(c) => c,
            None => {
                every = ModelSet::subsets(p.n).collect();
                &every
            }
        };
        for &core in cores {
            let used = core.len();
            if used > p.max_active || p.model_cost(core) > budget {
                continue;
            }
            let fits: ModelSet =
                (all - core).iter().filter(|&i| p.model_cost(core) + p.model_mem[i] <= budget).collect();
            let mut consider = |rot: ModelSet| {
                let better = |r: &Rotation, best: &Rotation| {
                    let same = (r.objective - best.objective).abs() <= 1e-6;
                    r.objective > best.objective + 1e-6
                        || (same && r.executions < best.executions - 1e-6)
                        || (same
                            && (r.executions - best.executions).abs() <= 1e-6
                            && r.rotation.len() < best.rotation.len())
                };
                // Every slot count the core leaves: fewer slots than the execution cap allows when
                // the memory budget fits fewer rotating models beside the core.
                for slots in 1..=(p.max_active - used).max(1) {
                    if let Some(r) = Rotation::evaluate(p, core, rot, slots, budget)
                        && better(&r, &best)
                    {
                        best = r;
                    }
                    if rot.is_empty() {
                        break;
                    }
                }
            };
            if p.n <= super::optimal::MAX_FULL_ENUMERATION {
                for q in fits.subsets_of() {
                    consider(q);
                }
            } else {
                consider(ModelSet::EMPTY);
                consider(fits);
            }
        }
        best
    }
}

/// The exact rotation ([`Rotation::best`]) under the current scores and hold scores: links and
/// temporal reuse chosen together.
#[derive(Default)]
pub struct OptimalHold {
    plan: Rotation,
    t: usize,
    /// Cores considered (`None`: every set of at most `max_active` models).
    cores: Option<Vec<ModelSet>>,
}

/// Above this many models, [`OptimalHold`] built for the loop takes its cores from the exact
/// staircase's running sets instead of every set (the full search grows as 3^n per budget level).
pub const FULL_ROTATION_MODELS: usize = 8;

impl OptimalHold {
    pub fn plan(&self) -> &Rotation {
        &self.plan
    }

    /// Consider only these cores (the running sets of the exact table, say).
    pub fn with_cores(cores: Vec<ModelSet>) -> OptimalHold {
        OptimalHold { cores: Some(cores), ..OptimalHold::default() }
    }
}

impl Scheduler for OptimalHold {
    fn name(&self) -> &'static str {
        "optimal-hold"
    }

    fn select(&mut self, problem: &Problem, budget: u64) {
        let plan = Rotation::best_among(problem, budget, self.cores.as_deref());
        if plan.core != self.plan.core || plan.rotation != self.plan.rotation {
            self.t = 0;
        }
        self.plan = plan;
    }

    fn decide(&mut self, _frame: &[u8]) -> Decision {
        let k = self.plan.phases.len().max(1);
        let ph = self.plan.phases.get(self.t % k).copied().unwrap_or_default();
        self.t = (self.t + 1) % k;
        Decision::Run { active: ph.active, predict: ph.predict, hold: ph.hold }
    }

    fn peak_memory(&self, _p: &Problem) -> u64 {
        self.plan.peak
    }

    fn cycle(&self) -> usize {
        self.plan.phases.len().max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::problem;
    use super::*;
    use crate::recording::RecordedModel;

    /// Hold scores falling linearly with age from `fresh` by `slope` per frame.
    fn hold(n: usize, fresh: &[f32], slope: f32) -> HoldScores {
        let mut t = vec![0.0; n * MAX_HOLD_AGE];
        for j in 0..n {
            for a in 1..=MAX_HOLD_AGE {
                t[j * MAX_HOLD_AGE + a - 1] = (fresh[j] - slope * (a - 1) as f32).max(0.0);
            }
        }
        HoldScores::from_table(n, t)
    }

    #[test]
    fn hold_scores_are_measured_by_age() {
        // One class model whose top class changes every 3 frames: held 1 frame agrees 2 times in 3,
        // held 3 frames never.
        let mut rec =
            Recording::new(vec![RecordedModel { name: "c".into(), kind: OutputKind::Class, size: 2 }]);
        for f in 0..300u32 {
            let c = (f / 3) % 2;
            rec.push(f, if c == 0 { &[1.0, 0.0] } else { &[0.0, 1.0] });
        }
        let h = HoldScores::measure(
            &rec,
            &[OutputKind::Class],
            &[crate::scoring::Scoring::tolerance(0.1)],
            0..300,
        );
        assert!((h.get(0, 1) - 2.0 / 3.0).abs() < 0.01, "{}", h.get(0, 1));
        assert!((h.get(0, 2) - 1.0 / 3.0).abs() < 0.01);
        assert!(h.get(0, 3) < 0.01);
        assert!((h.get(0, 6) - 1.0).abs() < 0.01);
        assert_eq!(h.get(0, 0), 1.0);
        // Ages past the table score as the oldest measured age.
        assert_eq!(h.get(0, 1000), h.get(0, MAX_HOLD_AGE));
        // Only frames inside the range count: a range of one frame measures nothing.
        let h =
            HoldScores::measure(&rec, &[OutputKind::Class], &[crate::scoring::Scoring::tolerance(0.1)], 5..6);
        assert_eq!(h.get(0, 1), 0.0);
    }

    #[test]
    fn interval_runs_every_model_every_kth_frame_within_both_budgets() {
        let p = problem(&[10, 20, 30, 40], &[1.0; 4], |_, _| 0.5).with_max_active(2);
        let mut s = Interval::new(2);
        s.select(&p, 50);
        assert!(s.feasible());
        let mut runs = [0usize; 4];
        for _ in 0..10 {
            let Decision::Run { active, predict, hold } = s.decide(&[]) else { panic!() };
            assert!(p.model_cost(active) <= 50 && active.len() <= 2);
            assert_eq!(predict, ModelSet::EMPTY);
            assert_eq!(hold, ModelSet::from_bits(0b1111) - active);
            for (i, r) in runs.iter_mut().enumerate() {
                *r += usize::from(active.contains(i));
            }
        }
        assert_eq!(runs, [5; 4]);
        assert_eq!(s.peak_memory(&p), 50);
        // One frame cannot run all four within two executions: k = 1 is infeasible.
        let mut s = Interval::new(1);
        s.select(&p, 1000);
        assert!(!s.feasible());
        assert_eq!(
            s.decide(&[]),
            Decision::Run { active: ModelSet::EMPTY, predict: ModelSet::EMPTY, hold: ModelSet::EMPTY }
        );
        // A model larger than the budget never runs and is never held.
        let mut s = Interval::new(3);
        s.select(&p, 35);
        assert!(s.feasible());
        for _ in 0..6 {
            let Decision::Run { active, hold, .. } = s.decide(&[]) else { panic!() };
            assert!(!(active | hold).contains(3));
        }
    }

    #[test]
    fn optimal_hold_prefers_holding_when_outputs_change_slowly() {
        // Links score 0.3; a held output scores 0.9 falling 0.1 per frame of age.
        let base = problem(&[10, 10, 10, 10], &[1.0; 4], |_, m| if m.is_empty() { 0.0 } else { 0.3 })
            .with_max_active(1);
        let p = base.clone().with_hold(&hold(4, &[0.9; 4], 0.1));
        let r = Rotation::best(&p, 10);
        // Rotating all four through the one slot: each phase runs one model, the one run a frame
        // ago is held at .9, two frames ago at .8, three frames ago .7: (1 + .9 + .8 + .7) / 4.
        assert_eq!(r.rotation, ModelSet::from_bits(0b1111));
        assert_eq!(r.phases.len(), 4);
        assert!((r.objective - 0.85).abs() < 1e-5, "{}", r.objective);
        // Against the choices it contains: plain linking ({one model}, others at .3) and plain
        // interval (the same rotation with links off) are no better.
        assert!(r.objective >= p.objective(ModelSet::from_bits(0b0001)) - 1e-6);
        // When holding is worthless, the rotation falls back to plain links with one core model.
        let r0 = Rotation::best(&base, 10);
        assert!(
            (r0.objective - base.objective(ModelSet::from_bits(0b0001))).abs() < 1e-6,
            "{} vs {}",
            r0.objective,
            base.objective(ModelSet::from_bits(1))
        );
        assert_eq!(r0.rotation, ModelSet::EMPTY);
        assert_eq!(r0.core.len(), 1);
        // Old held outputs lose to links: by age 7 hold (.3) no longer beats .3, so a phase predicts.
        let p = base.clone().with_hold(&hold(4, &[0.5; 4], 0.1));
        let mut s = OptimalHold::default();
        s.select(&p, 10);
        for _ in 0..8 {
            let Decision::Run { active, predict, hold } = s.decide(&[]) else { panic!() };
            assert_eq!(active & (predict | hold), ModelSet::EMPTY);
            assert_eq!(predict & hold, ModelSet::EMPTY);
            assert!(active.len() <= 1);
        }
    }

    #[test]
    fn rotation_respects_the_memory_budget_in_every_phase() {
        let mut rng = crate::links::Rng::new(5);
        for _ in 0..30 {
            let n = 2 + (rng.next_u64() % 4) as usize;
            let mem: Vec<u64> = (0..n).map(|_| 1 + rng.next_u64() % 30).collect();
            let scores: Vec<f32> = (0..n << n).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
            let fresh: Vec<f32> = (0..n).map(|_| (rng.next_u64() % 1000) as f32 / 1000.0).collect();
            let k = 1 + (rng.next_u64() % n as u64) as usize;
            let mut p = problem(&mem, &vec![1.0; n], |j, m| scores[(j << n) | m.index()])
                .with_max_active(k)
                .with_hold(&hold(n, &fresh, 0.05));
            // Links that cost memory: some budgets fit a model but not all of its links.
            for x in p.link_mem.iter_mut() {
                *x = rng.next_u64() % 8;
            }
            for budget in [5u64, 20, 40, 200] {
                let r = Rotation::best(&p, budget);
                for ph in &r.phases {
                    assert!(p.cost_of(ph.active, ph.predict) <= budget);
                    assert!(ph.active.len() <= k);
                }
                // Never below plain linking with the best active set (the empty rotation is a choice).
                let t = super::super::ScheduleTable::build(&p);
                let (m, _) = t.lookup(budget);
                if !m.is_empty() {
                    assert!(r.objective >= p.objective_of(m, ModelSet::EMPTY) - 1e-5);
                }
            }
        }
    }
}
