//! Simulation: what the host needs to run the loop without a board and what tests share. A board
//! build does not need any of it.
//!
//! - [`DemoSet`]: the bundled demo workload with its signed bundle, loaded from the repository
//!   (tests, benchmarks).
//! - [`ReplayBackend`]: engines that play back a reference recording instead of running models
//!   (`--engines replay`, tests, the soak).
//! - [`synthetic_manifest`], [`synthetic_recording`]: a small synthetic workload with every output
//!   kind, for the link and bundle tests.
//! - [`Faulty`]: telemetry fault injection.
//! - [`soak`]: the control loop under seeded fault injection (chaos engines, telemetry and serial
//!   line), its invariants checked (`jetlink soak`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use crate::bundle::Bundle;
use crate::manifest::Manifest;
use crate::recording::Recording;
use crate::stream::Stream;
use crate::workload::Workload;

mod chaos;
mod replay;
pub mod soak;
mod synth;

pub use chaos::{Fault, Faulty};
pub use replay::ReplayBackend;
pub use synth::{synthetic_manifest, synthetic_recording};

/// The repository folder this crate was built from (where `demo/` lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Engines that replay `reference` instead of running the models.
pub fn replay(reference: Arc<Recording>) -> Box<dyn crate::engine::Backend> {
    Box::new(ReplayBackend { recording: reference })
}

/// A workload with its bundle and its reference: what a simulated loop replays.
#[derive(Clone, Debug)]
pub struct DemoSet {
    pub manifest: Manifest,
    pub bundle: Bundle,
    pub stream: Arc<Stream>,
    pub reference: Arc<Recording>,
}

impl DemoSet {
    /// The bundled demo (`demo/manifest.toml`, `demo/demo.bundle`) of this repository.
    pub fn demo() -> Result<DemoSet> {
        let root = repo_root();
        DemoSet::load(&root.join("demo/manifest.toml"), &root.join("demo/demo.bundle"))
    }

    /// A workload and a bundle built for it (integrity-checked, not signature-checked).
    pub fn load(manifest: &Path, bundle: &Path) -> Result<DemoSet> {
        let w = Workload::load(manifest)?;
        let bundle = Bundle::load_for(bundle, &w.manifest)?;
        let reference = w.require_reference("a simulated loop")?.clone();
        Ok(DemoSet { manifest: w.manifest, bundle, stream: w.stream, reference })
    }
}
