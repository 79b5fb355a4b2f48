//! The DCTA policy table: every quantised context (drift bucket of each task × capacity class)
//! solved exactly on the host and compressed to one small allocation id per context, with the
//! distinct allocations stored once ([`PolicyTable`], serde/postcard, shipped in the bundle); and
//! the device side ([`Dcta`]): prepared once, then an O(1) look-up per decision that never
//! allocates, with a counted greedy fallback outside the table.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::exact::ExactSolver;
use super::greedy::greedy_first;
use super::problem::{Allocation, CostModel, Problem, Tatim, clamp_drift, importance};
use super::{DctaError, MAX_TASKS};
use crate::board::Board;
use crate::manifest::Manifest;

/// Version of the [`PolicyTable`] layout; bump on any change to its fields or their meaning.
pub const FORMAT_VERSION: u16 = 1;

/// How to build a policy table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyOptions {
    pub cost: CostModel,
    /// B: drift buckets per task; drift d ∈ [0, 1] falls in bucket ⌊d·B⌋ (the last one holds d = 1)
    /// and is represented by the bucket's centre.
    pub buckets: u8,
    /// Refuse to build tables with more cells than this.
    pub max_cells: u64,
    /// Build threads (0: all available).
    pub threads: usize,
}

impl Default for PolicyOptions {
    fn default() -> PolicyOptions {
        PolicyOptions { cost: CostModel::default(), buckets: 4, max_cells: 1 << 24, threads: 0 }
    }
}

/// The compressed policy: for each cell (context), the id of its optimal allocation.
///
/// Cell index = class(ℓ) · B^n + Σ_j b_j · B^j (mixed radix, task 0 least significant), where b_j is
/// task j's drift bucket and class(ℓ) groups power levels with identical capacities.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PolicyTable {
    pub version: u16,
    /// Board the table was built for.
    pub board: String,
    /// The problem data (tasks, units, costs, capacities): needed by the greedy fallback.
    pub tatim: Tatim,
    pub buckets: u8,
    /// Capacity class of each power level.
    pub level_class: Vec<u8>,
    pub classes: u8,
    /// Bytes per id: 1 (at most 256 distinct allocations) or 2 (little-endian).
    pub id_width: u8,
    /// cells × id_width bytes.
    pub ids: Vec<u8>,
    /// Distinct allocations, n bytes each (unit index, or 255 for "does not run").
    pub allocations: Vec<u8>,
}

impl PolicyTable {
    pub fn n_tasks(&self) -> usize {
        self.tatim.n_tasks()
    }

    /// Number of contexts (cells).
    pub fn cells(&self) -> usize {
        self.ids.len() / self.id_width.max(1) as usize
    }

    /// Number of distinct allocations.
    pub fn n_allocations(&self) -> usize {
        self.allocations.len() / self.n_tasks().max(1)
    }

    /// The allocation id of cell `c`.
    pub fn id(&self, c: usize) -> usize {
        match self.id_width {
            1 => self.ids[c] as usize,
            _ => u16::from_le_bytes([self.ids[2 * c], self.ids[2 * c + 1]]) as usize,
        }
    }

    /// Serialised (postcard) form, as stored in the bundle.
    pub fn to_postcard(&self) -> Vec<u8> {
        postcard::to_allocvec(self).expect("a policy table always serialises")
    }

    /// Read a table written by [`to_postcard`](Self::to_postcard) and check it.
    pub fn from_postcard(bytes: &[u8]) -> Result<PolicyTable, DctaError> {
        let t: PolicyTable =
            postcard::from_bytes(bytes).map_err(|_| DctaError::BadTable("not a postcard table"))?;
        t.validate()?;
        Ok(t)
    }

    /// Check every size and index, so that look-ups cannot go out of range.
    pub fn validate(&self) -> Result<(), DctaError> {
        if self.version != FORMAT_VERSION {
            return Err(DctaError::BadTable("unknown format version"));
        }
        self.tatim.validate()?;
        let (n, m) = (self.n_tasks(), self.tatim.n_units());
        if self.buckets == 0 {
            return Err(DctaError::BadTable("buckets must be at least 1"));
        }
        if self.level_class.len() != self.tatim.n_levels()
            || self.classes == 0
            || self.level_class.iter().any(|&c| c >= self.classes)
        {
            return Err(DctaError::BadTable("level_class must name a class for every power level"));
        }
        let cells = cell_count(self.buckets, n, self.classes as usize)
            .ok_or(DctaError::BadTable("cell count overflows"))?;
        if !matches!(self.id_width, 1 | 2) || self.ids.len() as u64 != cells * self.id_width as u64 {
            return Err(DctaError::BadTable("ids must hold one 1- or 2-byte id per cell"));
        }
        if self.allocations.is_empty() || !self.allocations.len().is_multiple_of(n) {
            return Err(DctaError::BadTable("allocations must be n bytes each"));
        }
        if self.allocations.iter().any(|&u| u != Allocation::NONE && u as usize >= m) {
            return Err(DctaError::BadTable("allocation names a unit the board does not have"));
        }
        let count = self.n_allocations();
        if (0..self.cells()).any(|c| self.id(c) >= count) {
            return Err(DctaError::BadTable("id out of range"));
        }
        Ok(())
    }
}

fn cell_count(buckets: u8, n: usize, classes: usize) -> Option<u64> {
    (buckets as u64).checked_pow(n as u32)?.checked_mul(classes as u64)
}

/// Quantise a drift value into bucket ⌊d·B⌋ (clamped, NaN → 0).
#[inline]
fn bucket(d: f32, buckets: usize) -> usize {
    ((clamp_drift(d) * buckets as f32) as usize).min(buckets - 1)
}

/// Build the policy table for a manifest on a board: one task per model (see `docs/dcta.md`).
pub fn build_policy(
    manifest: &Manifest,
    board: &Board,
    opts: &PolicyOptions,
) -> Result<PolicyTable, DctaError> {
    let tatim = Tatim::from_manifest(manifest, board, &opts.cost)?;
    build_policy_for(tatim, board.name, opts)
}

/// Build the policy table for given problem data (`opts.cost` is not used).
pub fn build_policy_for(tatim: Tatim, board: &str, opts: &PolicyOptions) -> Result<PolicyTable, DctaError> {
    tatim.validate()?;
    if opts.buckets == 0 {
        return Err(DctaError::BadOption { option: "buckets", reason: "must be at least 1" });
    }
    let (n, levels) = (tatim.n_tasks(), tatim.n_levels());
    // Power levels with identical capacities share their cells.
    let mut level_class = Vec::with_capacity(levels);
    let mut class_level: Vec<usize> = Vec::new();
    for l in 0..levels {
        match class_level.iter().position(|&k| tatim.capacity(k) == tatim.capacity(l)) {
            Some(c) => level_class.push(c as u8),
            None => {
                level_class.push(class_level.len() as u8);
                class_level.push(l);
            }
        }
    }
    let classes = class_level.len();
    let b = opts.buckets as usize;
    let cells = cell_count(opts.buckets, n, classes).filter(|&c| c <= opts.max_cells);
    let cells = cells.ok_or(DctaError::TableTooLarge {
        cells: cell_count(opts.buckets, n, classes).unwrap_or(u64::MAX),
        max: opts.max_cells,
    })? as usize;
    let stride = cells / classes;
    let bases: Vec<Problem> = class_level.iter().map(|&l| tatim.base_problem(l)).collect::<Result<_, _>>()?;
    let centre: Vec<f64> = (0..b).map(|k| (k as f64 + 0.5) / b as f64).collect();

    let threads = match opts.threads {
        0 => std::thread::available_parallelism().map_or(1, |t| t.get()),
        t => t,
    };
    let chunk = cells.div_ceil(threads).max(1);
    let mut solved = vec![Allocation::empty(n); cells];
    std::thread::scope(|s| {
        for (i, part) in solved.chunks_mut(chunk).enumerate() {
            let (bases, centre, tatim) = (&bases, &centre, &tatim);
            s.spawn(move || {
                let mut solver = ExactSolver::new();
                for (k, out) in part.iter_mut().enumerate() {
                    let c = i * chunk + k;
                    let mut p = bases[c / stride];
                    let mut r = c % stride;
                    for j in 0..n {
                        p.values[j] = tatim.weights[j] as f64 * centre[r % b];
                        r /= b;
                    }
                    *out = solver.solve(&p).0;
                }
            });
        }
    });

    let mut index: HashMap<Allocation, u16> = HashMap::new();
    let mut allocations = Vec::new();
    let mut raw_ids = Vec::with_capacity(cells);
    for a in &solved {
        let next = index.len();
        let id = match index.get(a) {
            Some(&id) => id,
            None => {
                if next >= 1 << 16 {
                    return Err(DctaError::TooManyAllocations { count: next + 1 });
                }
                index.insert(*a, next as u16);
                allocations.extend_from_slice(a.as_bytes());
                next as u16
            }
        };
        raw_ids.push(id);
    }
    let id_width: u8 = if index.len() <= 256 { 1 } else { 2 };
    let ids = match id_width {
        1 => raw_ids.iter().map(|&i| i as u8).collect(),
        _ => raw_ids.iter().flat_map(|i| i.to_le_bytes()).collect(),
    };
    let table = PolicyTable {
        version: FORMAT_VERSION,
        board: board.to_string(),
        tatim,
        buckets: opts.buckets,
        level_class,
        classes: classes as u8,
        id_width,
        ids,
        allocations,
    };
    table.validate()?;
    Ok(table)
}

/// The device side of the policy: prepared once from a table, then [`allocate`](Self::allocate)
/// per period without allocating.
#[derive(Clone, Debug)]
pub struct Dcta {
    table: PolicyTable,
    n: usize,
    buckets: usize,
    stride: usize,
    /// The distinct allocations, decoded.
    allocs: Vec<Allocation>,
    /// Per power level, the problem with zero importances (for the greedy fallback).
    bases: Vec<Problem>,
    out: Allocation,
    decisions: u64,
    fallbacks: u64,
}

impl Dcta {
    /// Check the table and prepare every buffer.
    pub fn new(table: PolicyTable) -> Result<Dcta, DctaError> {
        table.validate()?;
        let n = table.n_tasks();
        let allocs =
            table.allocations.chunks(n).map(|c| Allocation::from_bytes(c).expect("n <= MAX_TASKS")).collect();
        let bases =
            (0..table.tatim.n_levels()).map(|l| table.tatim.base_problem(l)).collect::<Result<_, _>>()?;
        let buckets = table.buckets as usize;
        Ok(Dcta {
            stride: table.cells() / table.classes as usize,
            n,
            buckets,
            allocs,
            bases,
            out: Allocation::empty(n),
            decisions: 0,
            fallbacks: 0,
            table,
        })
    }

    /// The allocation for drift levels `drift` (one per task, the table's task order, each in [0, 1])
    /// at power level `capacity_level` (0 = most capacity). O(n), no allocation.
    ///
    /// Outside the table, decides greedily instead and counts a fallback: a drift slice of another
    /// length (the greedy then considers the first min(len, n) tasks, the only ones with known costs)
    /// or a level the table was not built for (treated as the least-capacity level, so the answer
    /// stays feasible).
    pub fn allocate(&mut self, drift: &[f32], capacity_level: usize) -> &Allocation {
        self.decisions += 1;
        let levels = self.bases.len();
        if drift.len() != self.n || capacity_level >= levels {
            self.fallbacks += 1;
            let mut p = self.bases[capacity_level.min(levels - 1)];
            let k = drift.len().min(self.n);
            for (j, (&w, &d)) in self.table.tatim.weights.iter().zip(drift).enumerate() {
                p.values[j] = importance(w, d);
            }
            self.out = greedy_first(&p, k);
            return &self.out;
        }
        let mut cell = 0;
        let mut mul = 1;
        for &d in drift {
            cell += bucket(d, self.buckets) * mul;
            mul *= self.buckets;
        }
        cell += self.table.level_class[capacity_level] as usize * self.stride;
        self.out = self.allocs[self.table.id(cell)];
        &self.out
    }

    /// Decisions made so far.
    pub fn decisions(&self) -> u64 {
        self.decisions
    }

    /// Decisions that fell back to greedy because the context was outside the table.
    pub fn fallbacks(&self) -> u64 {
        self.fallbacks
    }

    pub fn table(&self) -> &PolicyTable {
        &self.table
    }

    /// Number of tasks the table was built for.
    pub fn n_tasks(&self) -> usize {
        self.n
    }
}

const _: () = assert!(MAX_TASKS <= u8::MAX as usize);
