//! A workload on disk, loaded in one place: its manifest, its stream and, when the manifest names
//! one, its reference recording (every model's output on every frame). The command line, the soak
//! and the tests load workloads through [`Workload::load`].

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::manifest::Manifest;
use crate::recording::Recording;
use crate::stream::Stream;

/// A loaded workload.
#[derive(Clone, Debug)]
pub struct Workload {
    pub manifest: Manifest,
    pub stream: Arc<Stream>,
    pub reference: Option<Arc<Recording>>,
}

impl Workload {
    /// Load the manifest at `path`, its stream and its reference (paths relative to the manifest).
    pub fn load(path: &Path) -> Result<Workload> {
        let manifest = Manifest::load(path)?;
        let stream = Arc::new(
            Stream::load(&manifest.path_of(&manifest.stream))
                .with_context(|| format!("stream of manifest {}", path.display()))?,
        );
        let reference = Self::load_reference(&manifest)
            .with_context(|| format!("reference of manifest {}", path.display()))?
            .map(Arc::new);
        if let Some(r) = &reference {
            reference_within_stream(&manifest, r, &stream)?;
        }
        Ok(Workload { manifest, stream, reference })
    }

    /// The manifest's reference recording, if it names one.
    pub fn load_reference(manifest: &Manifest) -> Result<Option<Recording>> {
        manifest.reference.as_ref().map(|r| Recording::load(&manifest.path_of(r))).transpose()
    }

    /// The reference, or an error naming the manifest for a use that needs one.
    pub fn require_reference(&self, what: &str) -> Result<&Arc<Recording>> {
        self.reference.as_ref().with_context(|| {
            format!("{what} needs a reference recording; manifest {:?} names none", self.manifest.name)
        })
    }
}

/// Refuse a recording with a row for a frame past the end of `stream`: its outputs pair with no
/// pixels (a recording made from another stream, or a stream cut short after recording). The
/// paths name both in the error.
pub fn within_stream(rec: &Recording, rec_path: &Path, stream: &Stream, stream_path: &Path) -> Result<()> {
    match rec.last_frame() {
        Some(last) if last as usize >= stream.len() => anyhow::bail!(
            "recording {} has a row for frame {last}, but the stream {} has {} frames: it was recorded \
             from another stream",
            rec_path.display(),
            stream_path.display(),
            stream.len()
        ),
        _ => Ok(()),
    }
}

/// [`within_stream`] for the manifest's own reference `rec` and stream, named by the manifest.
pub fn reference_within_stream(manifest: &Manifest, rec: &Recording, stream: &Stream) -> Result<()> {
    match &manifest.reference {
        Some(name) => {
            within_stream(rec, &manifest.path_of(name), stream, &manifest.path_of(&manifest.stream))
        }
        None => Ok(()),
    }
}
