//! Helpers shared by jetlink's little-endian binary file formats (streams, recordings): reading a
//! file that may be gzip-compressed, and a bounds-checked reader that names the field it failed on.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, ensure};

/// Read a file, inflating it if it is gzip-compressed.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("inflating {}", path.display()))?;
        Ok(out)
    } else {
        Ok(raw)
    }
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
