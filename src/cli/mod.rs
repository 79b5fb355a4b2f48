//! The command line's commands, one file each, and what they share: the demo's paths, workload and
//! reference loading, value parsers for numeric flags, formatting.

pub(crate) use std::path::{Path, PathBuf};
pub(crate) use std::sync::Arc;
pub(crate) use std::time::Instant;

pub(crate) use anyhow::{Context, Result, bail};
pub(crate) use clap::ValueEnum;

pub(crate) use jetlink::alloc_count;
pub(crate) use jetlink::bundle::Bundle;
pub(crate) use jetlink::control::{self, LoopBuilder, LoopOptions};
pub(crate) use jetlink::engine::{self, TractBackend};
pub(crate) use jetlink::manifest::Manifest;
pub(crate) use jetlink::record::{self, percentile};
pub(crate) use jetlink::recording::Recording;
pub(crate) use jetlink::serial::SerialWriter;
pub(crate) use jetlink::source::{FrameSource, LiveSource, ReplaySource, SourceSpec};
pub(crate) use jetlink::stream::Stream;
pub(crate) use jetlink::view::Shape;
pub(crate) use jetlink::wire::TelemetryWriter;

mod bench;
mod boards;
mod build;
mod keys;
mod models;
mod monitor;
mod record_cmd;
mod run;
mod soak;

pub(crate) use bench::{BenchArgs, bench};
pub(crate) use boards::boards;
pub(crate) use build::{BuildArgs, build};
pub(crate) use keys::{KeygenArgs, SignArgs, keygen, sign};
pub(crate) use models::{ModelsArgs, models};
pub(crate) use monitor::{MonitorArgs, monitor};
pub(crate) use record_cmd::{RecordArgs, record_cmd};
pub(crate) use run::{RunArgs, run};
pub(crate) use soak::{SoakArgs, soak};

pub(crate) const DEMO_MANIFEST: &str = "demo/manifest.toml";
pub(crate) const DEMO_BUNDLE: &str = "demo/demo.bundle";

/// A clap value parser for a finite `f64` in `lo..=hi` (NaN, infinities and values outside refused
/// at parse time, with the range in the message).
pub(crate) fn finite_in(
    lo: f64,
    hi: f64,
) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s.trim().parse().map_err(|e| format!("{s:?} is not a number: {e}"))?;
        if !v.is_finite() || v < lo || v > hi {
            return Err(format!("{s} is not a finite number in {lo}..={hi}"));
        }
        Ok(v)
    }
}

pub(crate) fn finite_in_f32(
    lo: f64,
    hi: f64,
) -> impl Fn(&str) -> Result<f32, String> + Clone + Send + Sync + 'static {
    let p = finite_in(lo, hi);
    move |s: &str| p(s).map(|v| v as f32)
}

/// The manifest and its stream (see [`jetlink::workload::Workload`] for the whole workload).
pub(crate) fn load_workload(path: &Path) -> Result<(Manifest, Stream)> {
    let manifest = Manifest::load(path)?;
    let stream = Stream::load(&manifest.path_of(&manifest.stream))
        .with_context(|| format!("stream of manifest {}", path.display()))?;
    Ok((manifest, stream))
}

pub(crate) fn load_reference(manifest: &Manifest) -> Result<Option<Recording>> {
    jetlink::workload::Workload::load_reference(manifest)
}

pub(crate) fn frame_shape(s: &Stream) -> Shape {
    Shape { h: s.height, w: s.width, c: s.channels }
}

pub(crate) fn pct(x: f64) -> String {
    format!("{:.1}%", 100.0 * x)
}
