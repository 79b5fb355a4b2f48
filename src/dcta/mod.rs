//! DCTA: which on-device adaptation tasks run, and on which execution unit, each period (the TATIM
//! multiple-knapsack problem of `docs/dcta.md`), decided by a precomputed policy table.
//!
//! The pipeline, each step its own call:
//! - [`Tatim::from_manifest`] turns a manifest and a board into the problem's data: one task per model
//!   ("refresh the links into target j"), its cost on every unit, every unit's capacity per power level.
//! - [`ExactSolver`] solves one instance exactly (branch and bound); [`greedy`] is the baseline.
//! - [`build_policy`] solves every quantised context on the host and compresses the answers into a
//!   [`PolicyTable`] (serde, stored in the bundle).
//! - [`Dcta`] is prepared once from a table; [`Dcta::allocate`] quantises a context and looks its
//!   allocation up in O(1) without allocating, falling back to greedy (and counting it) outside the table.
//! - [`bench`] compares look-up, exact solve and greedy on held-out contexts (`jetlink bench dcta`).

mod bench;
mod exact;
mod greedy;
mod problem;
mod table;

pub use bench::{BenchArgs, BenchReport, DriftDistribution, EnergySource, MethodStats, Workload, bench};
pub use exact::ExactSolver;
pub use greedy::greedy;
pub use problem::{Allocation, CostModel, Problem, Tatim, importance};
pub use table::{Dcta, PolicyOptions, PolicyTable, build_policy, build_policy_for};

/// Most tasks (models) an instance may have; matches the link module's model limit.
pub const MAX_TASKS: usize = 16;

/// Most execution units a board may offer for adaptation.
pub const MAX_UNITS: usize = 8;

/// Errors of building a problem or a policy table, and of preparing a table for the device.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum DctaError {
    #[error("{tasks} tasks: between 1 and {max} are supported")]
    TaskCount { tasks: usize, max: usize },
    #[error("board {board:?} offers {units} execution units: between 1 and {max} are supported")]
    UnitCount { board: String, units: usize, max: usize },
    #[error("model {model:?}: cost.latency_us {latency_us} must be finite and > 0")]
    BadLatency { model: String, latency_us: f64 },
    #[error("resource {unit:?}: speed {speed} and adapt-share {share} must be finite and > 0")]
    BadUnit { unit: String, speed: f32, share: f32 },
    #[error("option `{option}`: {reason}")]
    BadOption { option: &'static str, reason: &'static str },
    #[error("policy table would have {cells} cells, more than max_cells = {max} (use fewer drift buckets)")]
    TableTooLarge { cells: u64, max: u64 },
    #[error("policy table has {count} distinct allocations, more than the 65536 a u16 id can name")]
    TooManyAllocations { count: usize },
    #[error("policy table is inconsistent: {0}")]
    BadTable(&'static str),
}
