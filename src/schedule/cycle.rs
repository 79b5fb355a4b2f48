//! The loop's scheduling policy, precomputed: for each budget level, the cycle of phases (run,
//! predict, hold) that a named policy follows at that budget. Built once in `prepare` from any
//! [`Scheduler`]; a tick looks its level up by budget and takes the next phase, without allocating.

use super::{Decision, Phase, Problem, ScheduleTable, by_name};
use crate::model_set::ModelSet;

/// Draws per budget level of the `random` policy (it cycles through them, one a tick).
pub const RANDOM_DRAWS: usize = 16;

/// Frames a `frame-filter` policy tunes its threshold on (taken from the stream's training part).
pub const PROFILE_FRAMES: usize = 64;

/// Most budget levels a policy other than `optimal` is solved at (evenly spread over the sorted
/// candidate budgets, the largest always kept): a tick's budget takes the level at or below it.
pub const MAX_LEVELS: usize = 64;

/// One budget level: the cheapest budget it applies from, its phases, and (for `frame-filter`) the
/// frame-difference threshold below which a frame runs nothing and every output is held.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub budget: u64,
    start: u32,
    len: u32,
    /// Negative: no frame gate.
    pub threshold: f32,
}

/// A named policy's phases per budget level (levels ascending by budget).
#[derive(Clone, Debug, PartialEq)]
pub struct CycleTable {
    pub name: String,
    levels: Vec<Level>,
    phases: Vec<Phase>,
}

/// The policies, for messages and `--help`.
pub const POLICY_HELP: &str = "policies: optimal, optimal-hold, interval-K, greedy, random, standalone, frame-filter, refresh-K, oracle-refresh-K (a benchmark ceiling: needs the reference), with K from 1 to 1000";

/// Whether `name` is a policy the loop can run (`interval-K`, `refresh-K` and `oracle-refresh-K`
/// for K ≥ 1 included).
pub fn is_policy(name: &str) -> bool {
    name == "optimal" || by_name(name, &[], 0).is_some() || refresh_policy(name).is_some()
}

/// `refresh-K` (false, K) or `oracle-refresh-K` (true, K): the loop chooses each tick which tasks to
/// refresh (`src/control/refresh.rs`) at the execution rate of `interval-K`, whose table it keeps.
pub fn refresh_policy(name: &str) -> Option<(bool, u32)> {
    let (oracle, k) = match name.strip_prefix("oracle-refresh-") {
        Some(k) => (true, k),
        None => (false, name.strip_prefix("refresh-")?),
    };
    super::interval_k(k).map(|k| (oracle, k))
}

impl CycleTable {
    /// The exact staircase (`optimal`): one phase per entry, no holding.
    pub fn from_staircase(table: &ScheduleTable) -> CycleTable {
        let mut t = CycleTable { name: "optimal".into(), levels: Vec::new(), phases: Vec::new() };
        for k in 0..table.cost.len() {
            let ph = Phase { active: table.mask[k], predict: table.predicted[k], hold: ModelSet::EMPTY };
            t.push(table.cost[k], &[ph], -1.0);
        }
        t
    }

    /// Build the table of policy `name` for problem `p`: `optimal` is the staircase `table`; every
    /// other policy is asked, at each candidate budget (the staircase's costs and the memory of every
    /// set of at most `max_active` models), for its selection and then its cycle of decisions.
    /// `profile` tunes `frame-filter`; `seed` draws `random`. `None` for an unknown name.
    pub fn build(
        name: &str,
        p: &Problem,
        table: &ScheduleTable,
        profile: &[&[u8]],
        seed: u64,
    ) -> Option<CycleTable> {
        if name == "optimal" {
            return Some(CycleTable::from_staircase(table));
        }
        if let Some((_, k)) = refresh_policy(name) {
            let mut t = CycleTable::build(&format!("interval-{k}"), p, table, profile, seed)?;
            t.name = name.to_string();
            return Some(t);
        }
        let mut s = by_name(name, profile, seed)?;
        if name == "optimal-hold" && p.n > super::hold::FULL_ROTATION_MODELS {
            // Cores from the exact table's running sets (and none): bounded work for many models.
            let mut cores = table.mask.clone();
            cores.push(ModelSet::EMPTY);
            s = Box::new(super::OptimalHold::with_cores(cores));
        }
        // The frame filter's own selection runs every model that fits alone, one after another; the
        // loop runs its models together, so on a frame that changed it runs the best set that fits
        // without links (`standalone`), with the filter's threshold for that budget.
        let mut runs = if name == "frame-filter" { by_name("standalone", &[], seed) } else { None };
        let mut budgets: Vec<u64> = table.cost.clone();
        for m in ModelSet::subsets(p.n).skip(1) {
            if m.len() <= p.max_active {
                budgets.push(p.model_cost(m));
            }
        }
        budgets.push(0);
        budgets.sort_unstable();
        budgets.dedup();
        if budgets.len() > MAX_LEVELS {
            let n = budgets.len();
            budgets = (0..MAX_LEVELS).map(|k| budgets[k * (n - 1) / (MAX_LEVELS - 1)]).collect();
            budgets.dedup();
        }
        let draws = if name == "random" { RANDOM_DRAWS } else { 1 };
        let mut t = CycleTable { name: name.to_string(), levels: Vec::new(), phases: Vec::new() };
        let mut phases = Vec::new();
        for &b in &budgets {
            phases.clear();
            let mut threshold = -1.0;
            for _ in 0..draws {
                s.select(p, b);
                if let Some(th) = s.frame_threshold() {
                    threshold = th;
                }
                let s = match runs.as_mut() {
                    Some(r) => {
                        r.select(p, b);
                        r
                    }
                    None => &mut s,
                };
                for _ in 0..s.cycle().max(1) {
                    let ph = match s.decide(&[]) {
                        Decision::Run { active, predict, hold } => Phase { active, predict, hold },
                        Decision::Reuse => {
                            Phase { active: ModelSet::EMPTY, predict: ModelSet::EMPTY, hold: p.all() }
                        }
                    };
                    // A phase over the level's budget or execution cap runs nothing and holds.
                    let fits = p.cost_of(ph.active, ph.predict) <= b && ph.active.len() <= p.max_active;
                    phases.push(if fits {
                        ph
                    } else {
                        Phase { active: ModelSet::EMPTY, predict: ModelSet::EMPTY, hold: p.all() }
                    });
                }
            }
            t.push(b, &phases, threshold);
        }
        Some(t)
    }

    /// Append a level unless it repeats the last one.
    fn push(&mut self, budget: u64, phases: &[Phase], threshold: f32) {
        if let Some(l) = self.levels.last() {
            let last = &self.phases[l.start as usize..(l.start + l.len) as usize];
            if last == phases && l.threshold == threshold {
                return;
            }
        }
        let start = self.phases.len() as u32;
        self.phases.extend_from_slice(phases);
        self.levels.push(Level { budget, start, len: phases.len() as u32, threshold });
    }

    /// The level in force at `budget`: the last whose budget is at most `budget` (`None` below the
    /// cheapest, where nothing runs).
    pub fn lookup(&self, budget: u64) -> Option<usize> {
        self.levels.partition_point(|l| l.budget <= budget).checked_sub(1)
    }

    pub fn level(&self, k: usize) -> &Level {
        &self.levels[k]
    }

    pub fn levels(&self) -> usize {
        self.levels.len()
    }

    /// Phase `t` (taken modulo the cycle) of level `k`.
    pub fn phase(&self, k: usize, t: u32) -> Phase {
        let l = &self.levels[k];
        self.phases[(l.start + t % l.len.max(1)) as usize]
    }

    /// Length of level `k`'s cycle.
    pub fn cycle(&self, k: usize) -> u32 {
        self.levels[k].len
    }

    /// Models level `k` runs at some phase.
    pub fn runs(&self, k: usize) -> ModelSet {
        let l = &self.levels[k];
        self.phases[l.start as usize..(l.start + l.len) as usize]
            .iter()
            .fold(ModelSet::EMPTY, |m, ph| m | ph.active)
    }

    /// Why policy `name` (this table's) runs nothing at `budget` although some model fits it alone:
    /// `interval-K` cannot spread the models over K ticks of at most `max_active` within the
    /// budget. The note names the smallest K that can. `None` where the level runs something,
    /// where no model fits, or for another policy (the refresh policies keep interval-K's table for
    /// its rate only: each tick they run the stalest tasks that fit the budget).
    pub fn idle_note(&self, name: &str, p: &Problem, budget: u64) -> Option<String> {
        let k = super::interval_k(name.strip_prefix("interval-")?)?;
        if self.lookup(budget).is_some_and(|l| !self.runs(l).is_empty()) {
            return None;
        }
        let runnable: ModelSet = (0..p.n).filter(|&i| p.model_mem[i] <= budget).collect();
        let k = k as usize;
        // Only where that is the cause at this budget (a level can also run nothing because the
        // table's levels are thinned where there are many candidate budgets: not this note's).
        if runnable.is_empty() || super::hold::interval_groups(p, runnable, k, budget).is_some() {
            return None;
        }
        let enough = (k + 1..=p.n.max(k + 1))
            .find(|&kk| super::hold::interval_groups(p, runnable, kk, budget).is_some())
            .map_or(String::new(), |kk| format!("; interval-{kk} or more can spread them within it"));
        Some(format!(
            "{name} runs nothing at a budget of {budget} bytes: the {} models that fit it cannot be \
             spread over {k} ticks of at most {} models each{enough}; every output is delivered \
             degraded",
            runnable.len(),
            p.max_active
        ))
    }

    /// Largest memory of one phase of level `k` (its models and the links it uses).
    pub fn peak(&self, p: &Problem, k: usize) -> u64 {
        let l = &self.levels[k];
        self.phases[l.start as usize..(l.start + l.len) as usize]
            .iter()
            .map(|ph| p.cost_of(ph.active, ph.predict))
            .max()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::problem;
    use super::*;
    use crate::model_set::ModelSet;

    #[test]
    fn every_phase_fits_its_level_and_levels_only_grow() {
        let p = problem(&[10, 20, 30, 40], &[1.0; 4], |_, m| if m.is_empty() { 0.0 } else { 0.5 })
            .with_max_active(2);
        let table = ScheduleTable::build(&p);
        for name in ["optimal", "optimal-hold", "greedy", "standalone", "random", "interval-2", "interval-3"]
        {
            let t = CycleTable::build(name, &p, &table, &[], 1).unwrap();
            assert!(t.levels() > 0, "{name}");
            for k in 0..t.levels() {
                assert!(t.peak(&p, k) <= t.level(k).budget, "{name} level {k}");
                for s in 0..t.cycle(k) {
                    let ph = t.phase(k, s);
                    assert!(ph.active.len() <= 2, "{name}");
                    assert_eq!(ph.active & (ph.predict | ph.hold), ModelSet::from_bits(0), "{name}");
                }
                if k > 0 {
                    assert!(t.level(k).budget > t.level(k - 1).budget);
                }
            }
            assert_eq!(t.lookup(5), t.levels().checked_sub(1).filter(|_| t.level(0).budget <= 5).map(|_| 0));
            assert_eq!(t.lookup(u64::MAX), Some(t.levels() - 1));
        }
        // interval-2 at a budget that fits any two: four models in two phases, each held between.
        let t = CycleTable::build("interval-2", &p, &table, &[], 1).unwrap();
        let k = t.lookup(1000).unwrap();
        assert_eq!(t.cycle(k), 2);
        assert_eq!(t.runs(k), ModelSet::from_bits(0b1111));
        assert_eq!(t.phase(k, 0).hold | t.phase(k, 0).active, ModelSet::from_bits(0b1111));
        assert!(CycleTable::build("nonsense", &p, &table, &[], 1).is_none());
        // Four models, at most two a tick: interval-1 cannot run them all in one tick and says so,
        // naming the smallest K that can; interval-2 runs, so it has no note.
        let one = CycleTable::build("interval-1", &p, &table, &[], 1).unwrap();
        let note = one.idle_note("interval-1", &p, p.model_cost(p.all())).unwrap();
        assert!(
            note.contains("the 4 models that fit it cannot be spread over 1 ticks of at most 2"),
            "{note}"
        );
        assert!(note.contains("interval-2 or more can spread them within it"), "{note}");
        assert_eq!(t.idle_note("interval-2", &p, p.model_cost(p.all())), None);
        assert_eq!(one.idle_note("optimal", &p, p.model_cost(p.all())), None);
        // refresh-1 keeps interval-1's table for its rate only: it runs the stalest tasks that fit,
        // so it has no such note.
        let refresh = CycleTable::build("refresh-1", &p, &table, &[], 1).unwrap();
        assert_eq!(refresh.idle_note("refresh-1", &p, p.model_cost(p.all())), None);
    }

    #[test]
    fn many_models_stay_within_the_level_cap() {
        // Twelve models and no execution cap: 4,095 candidate sets, 64 levels at most, and the
        // rotation's cores from the exact table (a full search would be 3^12 per level).
        let mem: Vec<u64> = (1..=12).map(|i| 10 * i).collect();
        let p =
            problem(&mem, &[1.0; 12], |j, m| if m.is_empty() { 0.0 } else { 0.3 + 0.05 * (j % 3) as f32 });
        let table = ScheduleTable::build(&p);
        for name in ["optimal-hold", "interval-3", "greedy"] {
            let t = CycleTable::build(name, &p, &table, &[], 1).unwrap();
            assert!(t.levels() <= MAX_LEVELS, "{name}: {} levels", t.levels());
            for k in 0..t.levels() {
                assert!(t.peak(&p, k) <= t.level(k).budget, "{name} level {k}");
            }
        }
        assert!(is_policy("interval-7") && is_policy("optimal") && !is_policy("interval-0"));
        for odd in ["interval-+5", "interval-05", "refresh- 3", "oracle-refresh-+1"] {
            assert!(!is_policy(odd), "{odd}");
        }
    }
}
