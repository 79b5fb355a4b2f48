//! The one rule for writing an output file: a path that already holds something is replaced only
//! when it holds a regular file of the same kind (a bundle over a bundle, a CSV of ticks over one),
//! or with `--force`; a device, a FIFO, a directory or a socket is never written through. The write
//! itself is atomic (`crate::atomic`). `keygen` refuses any existing file and `--serial file:`
//! anything but telemetry, by the same idea.

use std::io::Read;
use std::path::Path;

use anyhow::{Result, bail};

/// What an output is, and how to recognise an existing file of that kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `JLBUNDLE` (signed or not).
    Bundle,
    /// A recording, `JLREC001`, plain or gzip.
    Recording,
    /// A frame stream, `JLSTRM0x`, plain or gzip.
    Stream,
    /// The monitor's CSV of ticks (its header line).
    TickCsv,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bundle => "jetlink bundle",
            Kind::Recording => "jetlink recording",
            Kind::Stream => "jetlink stream",
            Kind::TickCsv => "CSV of ticks",
        }
    }

    /// Whether `head` (the file's first bytes, inflated when it is gzip) is this kind.
    fn matches(self, head: &[u8]) -> bool {
        match self {
            Kind::Bundle => head.starts_with(b"JLBUNDLE"),
            Kind::Recording => head.starts_with(b"JLREC001"),
            Kind::Stream => head.starts_with(b"JLSTRM0"),
            Kind::TickCsv => head.starts_with(crate::monitor::CSV_HEADER.as_bytes()),
        }
    }
}

/// The first bytes of the regular file `path` (inflated when it is gzip), at most 256.
fn head(path: &Path) -> std::io::Result<Vec<u8>> {
    let f = crate::input::open_nonblocking(path)?;
    let mut raw = Vec::new();
    f.take(256).read_to_end(&mut raw)?;
    if raw.starts_with(&[0x1f, 0x8b]) {
        let f = crate::input::open_nonblocking(path)?;
        let mut out = Vec::new();
        // A truncated or damaged gzip gives what it can; a short head simply does not match.
        let _ = flate2::read::GzDecoder::new(f).take(256).read_to_end(&mut out);
        return Ok(out);
    }
    Ok(raw)
}

/// Check that `path` (a `what`, for messages) may receive a new `kind` file: it does not exist, or
/// is a regular file of that kind, or `force` is set and it is a regular file.
pub fn check_replace(path: &Path, what: &str, kind: Kind, force: bool) -> Result<()> {
    let shown = path.display();
    let md = match std::fs::metadata(path) {
        Ok(md) => md,
        // Nothing there (or a dangling link, which the atomic rename replaces, not follows).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => bail!("{what} {shown}: cannot check what is there: {e}"),
    };
    if !md.is_file() {
        bail!(
            "{what} {shown} is {}; refusing to write there (outputs go to regular files)",
            crate::input::kind(md.file_type())
        );
    }
    if force {
        return Ok(());
    }
    let matches = head(path).map(|h| kind.matches(&h)).unwrap_or(false);
    if !matches {
        bail!(
            "{what} {shown} exists and is not a {}; refusing to replace it (--force replaces it)",
            kind.name()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_kind_is_replaced_and_never_a_device() {
        let dir = std::env::temp_dir().join(format!("jetlink-output-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("x");
        check_replace(&p, "--out", Kind::Bundle, false).unwrap();
        std::fs::write(&p, b"-----BEGIN PRIVATE KEY-----").unwrap();
        let e = check_replace(&p, "--out", Kind::Bundle, false).unwrap_err().to_string();
        assert!(e.contains("is not a jetlink bundle; refusing to replace it (--force replaces it)"), "{e}");
        check_replace(&p, "--out", Kind::Bundle, true).unwrap();
        std::fs::write(&p, b"JLBUNDLE....").unwrap();
        check_replace(&p, "--out", Kind::Bundle, false).unwrap();
        // A gzip stream is recognised inside its compression.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"JLSTRM02 and frames").unwrap();
        std::fs::write(&p, gz.finish().unwrap()).unwrap();
        check_replace(&p, "--out", Kind::Stream, false).unwrap();
        assert!(check_replace(&p, "--out", Kind::Recording, false).is_err());
        for dev in [Path::new("/dev/null"), dir.as_path()] {
            let e = check_replace(dev, "--out", Kind::Bundle, true).unwrap_err().to_string();
            assert!(e.contains("refusing to write there"), "{e}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
