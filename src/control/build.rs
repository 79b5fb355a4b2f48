//! [`LoopBuilder`]: the one way to build a control loop. The workload (manifest, bundle, stream)
//! and the board are required; everything else has a default the caller can replace: engines
//! (tract on the host; `crate::sim::replay` in simulation), telemetry (the board's source: simulated on `host-sim`, sysfs on a
//! Jetson), the frame source (the stream replayed over its evaluation part), options taken from the
//! stream (drift segment). `main`, the benchmarks, the soak and the tests all build loops here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;

use super::{Controller, LoopOptions, Parts, prepare};
use crate::board::Board;
use crate::bundle::Bundle;
use crate::engine::{Backend, TractBackend};
use crate::manifest::Manifest;
use crate::recording::Recording;
use crate::source::{FrameSource, ReplaySource};
use crate::stream::Stream;
use crate::telemetry::Telemetry;
use crate::wire::TelemetryWriter;

/// Builds a [`Controller`]; see the module docs for the defaults.
pub struct LoopBuilder {
    board: &'static Board,
    manifest: Manifest,
    bundle: Bundle,
    stream: Arc<Stream>,
    reference: Option<Arc<Recording>>,
    engines: Option<Box<dyn Backend>>,
    telemetry: Option<Telemetry>,
    sysfs_root: PathBuf,
    opts: LoopOptions,
    fleet: Option<Arc<crate::fleet::tap::FleetTap>>,
}

impl LoopBuilder {
    pub fn new(
        board: &'static Board,
        manifest: Manifest,
        bundle: Bundle,
        stream: Arc<Stream>,
    ) -> LoopBuilder {
        let opts = LoopOptions { drift_start: stream.drift_start as u32, ..LoopOptions::default() };
        LoopBuilder {
            board,
            manifest,
            bundle,
            stream,
            reference: None,
            engines: None,
            telemetry: None,
            sysfs_root: PathBuf::from("/"),
            opts,
            fleet: None,
        }
    }

    /// Every model's output on the stream's frames: accuracy is scored against it.
    pub fn reference(mut self, reference: Option<Arc<Recording>>) -> LoopBuilder {
        self.reference = reference;
        self
    }

    /// Run these engines (default: tract).
    pub fn engines(mut self, backend: Box<dyn Backend>) -> LoopBuilder {
        self.engines = Some(backend);
        self
    }

    /// Read telemetry from this source (default: the board's).
    pub fn telemetry(mut self, telemetry: Telemetry) -> LoopBuilder {
        self.telemetry = Some(telemetry);
        self
    }

    /// Root under which the board's sysfs paths are read, for the default telemetry.
    pub fn sysfs_root(mut self, root: &Path) -> LoopBuilder {
        self.sysfs_root = root.to_path_buf();
        self
    }

    /// Loop options (the default takes the drift segment from the stream).
    pub fn options(mut self, opts: LoopOptions) -> LoopBuilder {
        self.opts = opts;
        self
    }

    /// Join a fleet: period summaries and link snapshots go to `tap` (a fleet client takes them
    /// from there), fused global links come back through it at period boundaries.
    pub fn fleet(mut self, tap: Arc<crate::fleet::tap::FleetTap>) -> LoopBuilder {
        self.fleet = Some(tap);
        self
    }

    pub fn options_mut(&mut self) -> &mut LoopOptions {
        &mut self.opts
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// Prepare the loop over `source`, writing telemetry to `writer`.
    pub fn build<S: FrameSource, W: embedded_io::Write>(
        self,
        source: S,
        writer: TelemetryWriter<W>,
    ) -> Result<Controller<S, W>> {
        let backend: Box<dyn Backend> = self.engines.unwrap_or_else(|| Box::new(TractBackend));
        let telemetry =
            self.telemetry.unwrap_or_else(|| crate::telemetry::open_for_board(self.board, &self.sysfs_root));
        let s = &self.stream;
        // A frame-gated policy tunes its threshold on frames of the training part.
        let profile = if self.opts.policy == "frame-filter" {
            let end = s.train_end.min(s.len());
            let step = end.div_ceil(crate::schedule::cycle::PROFILE_FRAMES).max(1);
            (0..end).step_by(step).map(|i| s.frame(i).to_vec()).collect()
        } else {
            Vec::new()
        };
        prepare(Parts {
            board: self.board,
            frame_shape: s.shape(),
            manifest: self.manifest,
            bundle: self.bundle,
            backend,
            source,
            telemetry,
            writer,
            reference: self.reference,
            opts: self.opts,
            fleet: self.fleet,
            profile,
        })
    }

    /// Prepare the loop over the stream's frames `range` (clamped to the stream).
    pub fn build_replay<W: embedded_io::Write>(
        self,
        range: std::ops::Range<usize>,
        writer: TelemetryWriter<W>,
    ) -> Result<Controller<ReplaySource, W>> {
        let source = ReplaySource::new(self.stream.clone(), range);
        self.build(source, writer)
    }

    /// The name of the engines the loop will run, for headers.
    pub fn engines_name(&self) -> &'static str {
        self.engines.as_ref().map_or("tract-onnx", |b| b.name())
    }
}
