//! Helpers shared by jetlink's little-endian binary file formats (streams, recordings): reading a
//! file that may be gzip-compressed, and a bounds-checked reader that names the field it failed on.

use std::path::Path;

use anyhow::{Result, ensure};

/// Read a stream or recording file (a `what`, for messages) by the input rule ([`crate::input`]),
/// inflating it if it is gzip-compressed, within `limit` (a [`crate::input::limit`]) and within the
/// size its header declares (`declared`, see [`crate::input::read_maybe_gz`]).
pub fn read_maybe_gz(
    path: &Path,
    what: &str,
    limit: u64,
    declared: impl Fn(&[u8]) -> Result<Option<u64>>,
) -> Result<Vec<u8>> {
    crate::input::read_maybe_gz(path, what, limit, declared)
}

/// A bounds-checked little-endian reader that names the field it failed on.
pub(crate) struct Cursor<'a> {
    pub b: &'a [u8],
    pub at: usize,
}

impl<'a> Cursor<'a> {
    pub fn take(&mut self, n: usize, field: &str) -> Result<&'a [u8]> {
        ensure!(
            self.b.len() - self.at >= n,
            "truncated at byte {} reading {field} ({n} bytes, {} left)",
            self.at,
            self.b.len() - self.at
        );
        let s = &self.b[self.at..self.at + n];
        self.at += n;
        Ok(s)
    }
    pub fn u16(&mut self, field: &str) -> Result<u16> {
        let s = self.take(2, field)?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    pub fn u32(&mut self, field: &str) -> Result<u32> {
        let s = self.take(4, field)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
}
