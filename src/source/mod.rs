//! Frame sources: where the loop's frames come from. [`ReplaySource`] replays a stream file;
//! [`LiveSource`] takes frames from a producer thread through a fixed [`FramePool`]: a folder of
//! images ([`images`]), or a GStreamer pipeline, a camera or a video file ([`gst`]).
//! [`SourceSpec`] parses the `--source` argument.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::stream::{FrameMeta, Stream};
use crate::view::Shape;

pub mod gst;
pub mod images;
pub mod pool;

pub use pool::{FramePool, PoolStats, Take};

/// Why a frame could not be delivered. The loop counts these and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("no frame arrived in time")]
    Missing,
    #[error("the frame is corrupt")]
    Corrupt,
    #[error("the frame has {got} bytes, expected {expected}")]
    WrongSize { got: usize, expected: usize },
    #[error("the frame source is down (being restarted)")]
    SourceDown,
}

/// One delivered frame's identity.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub index: u32,
    pub meta: FrameMeta,
}

pub trait FrameSource {
    /// Bytes per frame (height · width · channels).
    fn frame_len(&self) -> usize;
    /// Write the next frame into `buf`. `Ok(None)` at the end of a finite source.
    fn next_frame(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, FrameError>;
}

impl<T: FrameSource + ?Sized> FrameSource for Box<T> {
    fn frame_len(&self) -> usize {
        (**self).frame_len()
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, FrameError> {
        (**self).next_frame(buf)
    }
}

/// Replays a range of a stream, in order.
pub struct ReplaySource {
    stream: Arc<Stream>,
    next: usize,
    end: usize,
}

impl ReplaySource {
    pub fn new(stream: Arc<Stream>, range: std::ops::Range<usize>) -> ReplaySource {
        let end = range.end.min(stream.len());
        ReplaySource { stream, next: range.start, end }
    }
}

impl FrameSource for ReplaySource {
    fn frame_len(&self) -> usize {
        self.stream.frame_len()
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, FrameError> {
        if self.next >= self.end {
            return Ok(None);
        }
        let i = self.next;
        self.next += 1;
        let f = self.stream.frame(i);
        if buf.len() != f.len() {
            return Err(FrameError::WrongSize { got: buf.len(), expected: f.len() });
        }
        buf.copy_from_slice(f);
        Ok(Some(FrameInfo { index: i as u32, meta: self.stream.meta[i] }))
    }
}

/// Where `--source` takes frames from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceSpec {
    /// The manifest's stream file, replayed (the default).
    Stream,
    /// `images:DIR`: a folder of PNG, JPEG or PGM/PPM images in name order.
    Images(PathBuf),
    /// `gst:PIPELINE`: a live GStreamer pipeline (camera, RTSP) without its sink.
    Gst(String),
    /// Any other value: a video file, decoded through GStreamer.
    Video(PathBuf),
}

impl SourceSpec {
    pub fn parse(s: &str) -> Result<SourceSpec> {
        Ok(if s == "stream" {
            SourceSpec::Stream
        } else if let Some(d) = s.strip_prefix("images:") {
            if d.trim().is_empty() {
                bail!("--source images: needs a folder, e.g. 'images:frames/'");
            }
            SourceSpec::Images(PathBuf::from(d))
        } else if let Some(p) = s.strip_prefix("gst:") {
            if p.trim().is_empty() {
                bail!("--source gst: needs a pipeline, e.g. 'gst:v4l2src device=/dev/video0'");
            }
            SourceSpec::Gst(p.to_string())
        } else {
            SourceSpec::Video(PathBuf::from(s))
        })
    }

    /// Live sources drop frames when the loop is slow; files and folders deliver every frame.
    pub fn is_live(&self) -> bool {
        matches!(self, SourceSpec::Gst(_))
    }
}

/// Waits of a live source without a frame after which its pipeline counts as stalled (10 s at
/// its 1 s wait).
pub const STALL_WAITS: u32 = 10;
/// The same before a pipeline's first frame (60 s): an RTSP stream or a camera may take longer
/// than [`STALL_WAITS`] to start, and a pipeline stopped before its first frame ends the source.
pub const FIRST_FRAME_WAITS: u32 = 60;

/// Frames from a producer thread through a [`FramePool`].
pub struct LiveSource {
    pool: FramePool,
    wait: Duration,
    /// Why the producer stopped, when it stopped for a reason.
    pub failure: gst::Failure,
    /// The last frame that could not be used, and why (a folder of images: the file and its error).
    fault: gst::Failure,
    /// The decoder child of a pipeline source (none for a folder of images).
    child: gst::ChildPid,
    /// A video file's decoder: one that gives no frame within `wait` has stalled.
    file_decoder: bool,
    /// Consecutive waits that gave no frame from a live pipeline; at [`STALL_WAITS`] its child is
    /// stopped, so that the producer restarts it (with back-off) like a pipeline that failed.
    silent: u32,
    /// A frame has come from this source (the stall rule's patience is [`STALL_WAITS`] after it,
    /// [`FIRST_FRAME_WAITS`] before).
    started: bool,
    producer: Option<std::thread::JoinHandle<()>>,
}

impl LiveSource {
    /// Open `spec` (not [`SourceSpec::Stream`]) for frames of `shape`, numbered from `first`.
    pub fn open(spec: &SourceSpec, shape: Shape, first: u32) -> Result<LiveSource> {
        let pool = FramePool::new(shape.len(), 4, spec.is_live());
        let failure: gst::Failure = Arc::default();
        let child: gst::ChildPid = Arc::default();
        let fault: gst::Failure = Arc::default();
        let producer = match spec {
            SourceSpec::Stream => bail!("the stream is replayed by ReplaySource"),
            SourceSpec::Images(dir) => {
                images::spawn(images::list_images(dir)?, shape, first, pool.clone(), fault.clone())
            }
            SourceSpec::Gst(p) => {
                gst::spawn(p.clone(), shape, first, pool.clone(), failure.clone(), child.clone())
            }
            SourceSpec::Video(path) => {
                // A video file is a regular file (a camera is a `gst:` pipeline): a FIFO, a device or a
                // folder would have the decoder wait or fail inside GStreamer.
                let md = std::fs::metadata(path).with_context(|| format!("--source {}", path.display()))?;
                if !md.is_file() {
                    bail!(
                        "--source {} is {}, not a video file (a folder of images is images:DIR, a camera \
                         or a live feed gst:PIPELINE)",
                        path.display(),
                        crate::input::kind(md.file_type())
                    );
                }
                if md.len() == 0 {
                    bail!("--source {} is an empty file (0 bytes), not a video", path.display());
                }
                gst::spawn(
                    gst::file_pipeline(path),
                    shape,
                    first,
                    pool.clone(),
                    failure.clone(),
                    child.clone(),
                )
            }
        };
        // A file source waits for the producer (decoding may be slow on a loaded machine); a live
        // one reports a missing frame after a second.
        let wait = if spec.is_live() { Duration::from_secs(1) } else { Duration::from_secs(120) };
        let file_decoder = matches!(spec, SourceSpec::Video(_));
        Ok(LiveSource {
            pool,
            wait,
            failure,
            fault,
            child,
            file_decoder,
            silent: 0,
            started: false,
            producer: Some(producer),
        })
    }

    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Handles that outlive the source moving into the loop: its pool (for its counters) and its
    /// failure reason.
    pub fn handles(&self) -> (FramePool, gst::Failure) {
        (self.pool.clone(), self.failure.clone())
    }

    /// Why the producer stopped early, if it did.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Why the last frame that could not be used failed (its file and error), if the source knows.
    pub fn last_fault(&self) -> Option<String> {
        self.fault.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for LiveSource {
    fn drop(&mut self) {
        self.pool.close();
        // A decoder blocked before writing would keep the producer in its read forever.
        gst::kill_child(&self.child);
        if let Some(p) = self.producer.take() {
            let _ = p.join();
        }
    }
}

impl FrameSource for LiveSource {
    fn frame_len(&self) -> usize {
        self.pool.frame_len()
    }

    fn next_frame(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, FrameError> {
        if buf.len() != self.pool.frame_len() {
            return Err(FrameError::WrongSize { got: buf.len(), expected: self.pool.frame_len() });
        }
        match self.pool.take(buf, self.wait) {
            Take::Frame(index) => {
                (self.silent, self.started) = (0, true);
                Ok(Some(FrameInfo { index, meta: FrameMeta::default() }))
            }
            // An image that does not decode: a counted frame fault, not a silent skip.
            Take::Failed(_) => Err(FrameError::Corrupt),
            Take::Ended => Ok(None),
            Take::Nothing { down: true } => Err(FrameError::SourceDown),
            Take::Nothing { down: false } if self.file_decoder => {
                // A video file's decoder that gives nothing for this long has stalled (gst-launch
                // can hang on a damaged file): the source ends, saying why, rather than wait on.
                let mut f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
                if f.is_none() {
                    *f = Some(format!("the decoder gave no frame for {} s; stopped it", self.wait.as_secs()));
                }
                drop(f);
                self.pool.close();
                gst::kill_child(&self.child);
                Ok(None)
            }
            Take::Nothing { down: false } => {
                // A live pipeline silent this long has stalled without exiting (a camera that
                // hangs): stopped, it is restarted by the producer, or ends the source if it never
                // gave a frame (a longer patience before the first: slow starts are normal). Each
                // wait meanwhile is a missing frame, counted.
                self.silent += 1;
                let patience = if self.started { STALL_WAITS } else { FIRST_FRAME_WAITS };
                if self.pool.is_live() && self.silent >= patience {
                    log::warn!(
                        "frame source gave no frame for {} waits of {:?}; restarting it",
                        self.silent,
                        self.wait
                    );
                    gst::kill_child(&self.child);
                    self.silent = 0;
                }
                Err(FrameError::Missing)
            }
        }
    }
}
