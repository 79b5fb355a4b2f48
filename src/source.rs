//! Frame sources: where the loop's frames come from. The host replays a stream file; a camera source
//! on the board implements the same trait.

use std::sync::Arc;

use crate::stream::{FrameMeta, Stream};

/// Why a frame could not be delivered. The loop counts these and goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("no frame arrived in time")]
    Missing,
    #[error("the frame is corrupt")]
    Corrupt,
    #[error("the frame has {got} bytes, expected {expected}")]
    WrongSize { got: usize, expected: usize },
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
