//! DCTA: which on-device adaptation tasks run each period, on which execution unit and with how
//! many fresh frames, decided by a policy precomputed on the host (`docs/dcta.md`).
//!
//! The pipeline, each step its own call:
//! - [`Tatim`] and [`Menu::from_manifest`] turn a manifest and a board into the problem's data: one
//!   task per model ("refresh the links into target j"), with q = units × K choices per task, each
//!   with its time, the memory a swap needs, and the measured gain of K frames.
//! - [`Menu::fill`] poses one period's multiple-choice knapsack ([`Instance`]: time per unit and
//!   memory as constraints) from a [`Context`] (drift per target, power level, free memory, which
//!   targets are resident).
//! - [`ExactSolver`] solves an instance exactly (branch and bound with LP hull bounds, a Lagrangian
//!   bound and reduced-cost fixing; capped by nodes where asked); the priced [`Greedy`], the bounded
//!   Lagrangian improvement ([`Refiner`], prices in [`Prices`]) and a node-capped search
//!   ([`ExactSolver::search_from`]) are the policy's run-time steps.
//! - [`build_policy`] learns a [`PolicyTable`] on the host from solved sampled contexts (serde,
//!   stored in the bundle); [`Dcta`] is prepared once from it and decides each period in at most
//!   [`Dcta::work_bound`] steps without allocating, counting contexts outside the table.
//! - [`bench`] sweeps the problem size and compares policy, exact and greedy on held-out contexts
//!   (`jetlink bench dcta`).

mod bench;
mod exact;
mod exchange;
mod greedy;
mod lagrange;
mod menu;
mod problem;
mod refine;
mod table;

pub use bench::{BenchArgs, BenchReport, EnergySource, MethodStats, SizeReport, bench, tatim_of_size};
pub use exact::ExactSolver;
pub use exchange::{CERTIFY, EXCHANGES, Exchanger};
pub use greedy::{Greedy, Price};
pub use lagrange::Prices;
pub use menu::{Choice, Context, Instance, Menu, OptionTimes};
pub use problem::{CostModel, MEASURED_GAIN, Tatim, importance};
pub use refine::Refiner;
pub use table::{
    BUILD_NODES, Dcta, DriftDistribution, Plan, PolicyOptions, PolicyTable, ROUNDS, SEARCH_NODES,
    SEARCH_OPTIONS, SampledContext, build_policy, build_policy_for, sample_contexts,
};

/// Most tasks (models) an instance may have.
pub const MAX_TASKS: usize = 64;

/// Most execution units a board may offer for adaptation.
pub const MAX_UNITS: usize = 8;

/// Most K choices per refresh.
pub const MAX_CHOICES: usize = 16;

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
    #[error("policy table is inconsistent: {0}")]
    BadTable(&'static str),
}
