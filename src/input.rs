//! The one rule for opening an input file: it must be a regular file (a symlink to one is fine) no
//! larger than its format allows, and it is read with that bound; a gzip file is inflated with a
//! bound too. A FIFO, a device, a directory or an endless file is refused with its path and kind
//! before anything blocks or grows: the file is opened non-blocking and checked on the open
//! descriptor, so a path swapped for a FIFO after a first look cannot hang the reader either.

use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result, bail};

/// Size limits, by what the file is.
pub mod limit {
    /// Text: manifests, keys, state files, traces, passwords, certificates.
    pub const TEXT: u64 = 4 << 20;
    /// An ONNX model.
    pub const MODEL: u64 = 2 << 30;
    /// A bundle.
    pub const BUNDLE: u64 = 1 << 30;
    /// A stream or recording, as stored, once inflated and once its frames are decoded: it is held
    /// in memory whole.
    pub const DATA: u64 = 2 << 30;
    /// A recording, as stored and once inflated: its bytes and its parsed values are both held
    /// while it is read, so that peak stays within [`DATA`].
    pub const RECORDING: u64 = 1 << 30;
    const _: () = assert!(2 * RECORDING <= DATA, "a recording is held twice while it is read");
    /// An image file, and what its decoder may allocate.
    pub const IMAGE: u64 = 512 << 20;
}

/// The files this process has read by the rule, by device and inode, with what each was: no
/// output replaces one, even with `--force` ([`crate::output::check_replace`]). Bounded: a run
/// that reads a folder of images frame by frame keeps the first [`READ_KEPT`] (the inputs a
/// command names are read first).
static READ: std::sync::Mutex<Vec<(FileId, String)>> = std::sync::Mutex::new(Vec::new());
const READ_KEPT: usize = 1 << 14;

/// A file as it was read: device, inode, size and modification time (so that a file written since,
/// or a new file given a freed inode, is not taken for it).
type FileId = (u64, u64, u64, i64, i64);

fn file_id(md: &std::fs::Metadata) -> FileId {
    use std::os::unix::fs::MetadataExt;
    (md.dev(), md.ino(), md.size(), md.mtime(), md.mtime_nsec())
}

fn note_read(md: &std::fs::Metadata, what: &str) {
    let id = file_id(md);
    let mut read = READ.lock().unwrap_or_else(|e| e.into_inner());
    if read.len() < READ_KEPT && !read.iter().any(|r| r.0 == id) {
        read.push((id, what.to_string()));
    }
}

/// What the file of `md` was read as by this process, if it was read by the rule and has not
/// changed since.
pub fn read_as(md: &std::fs::Metadata) -> Option<String> {
    let id = file_id(md);
    let read = READ.lock().unwrap_or_else(|e| e.into_inner());
    read.iter().find(|r| r.0 == id).map(|r| r.1.clone())
}

/// This process will replace `path` on purpose (a bundle signed in place): it is no longer an
/// input an output must keep clear of.
pub fn release(path: &Path) {
    if let Ok(md) = std::fs::metadata(path) {
        let id = file_id(&md);
        READ.lock().unwrap_or_else(|e| e.into_inner()).retain(|r| r.0 != id);
    }
}

/// What a path that is not a regular file is, for the message.
pub fn kind(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "not a regular file"
    }
}

/// Open `path` for reading without blocking (a FIFO with no writer opens at once); the caller
/// checks what it is on the descriptor.
pub fn open_nonblocking(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path)
}

/// Open `path` (a `what`, for messages) by the rule and read all of it, at most `max` bytes.
pub fn read(path: &Path, what: &str, max: u64) -> Result<Vec<u8>> {
    let shown = path.display();
    let f = open_nonblocking(path).map_err(|e| anyhow::anyhow!("{what} {shown}: cannot read it: {e}"))?;
    let md = f.metadata().with_context(|| format!("{what} {shown}: cannot read its metadata"))?;
    if !md.is_file() {
        bail!("{what} {shown} is {}, not a regular file", kind(md.file_type()));
    }
    if md.len() > max {
        bail!("{what} {shown} is {} bytes, above the limit of {max} bytes for it", md.len());
    }
    note_read(&md, what);
    let mut out = Vec::with_capacity(md.len() as usize);
    f.take(max + 1).read_to_end(&mut out).with_context(|| format!("{what} {shown}: cannot read it"))?;
    if out.len() as u64 > max {
        bail!("{what} {shown} grew past the limit of {max} bytes while it was read");
    }
    Ok(out)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: &Path, what: &str, max: u64) -> Result<String> {
    String::from_utf8(read(path, what, max)?)
        .map_err(|_| anyhow::anyhow!("{what} {}: not UTF-8 text", path.display()))
}

/// [`read`], inflating a gzip file with the same bound on what it inflates to, and with the bound
/// the file's own header declares: `declared` is shown what has been inflated so far and answers
/// `Ok(Some(n))` once it knows the whole file is at most `n` bytes, `Ok(None)` while its header is
/// incomplete, or an error (a wrong magic number, a size past `max`), which stops inflation at
/// once. So a gzip bomb behind a wrong or small header costs one chunk, not gigabytes.
pub fn read_maybe_gz(
    path: &Path,
    what: &str,
    max: u64,
    declared: impl Fn(&[u8]) -> Result<Option<u64>>,
) -> Result<Vec<u8>> {
    const CHUNK: usize = 1 << 20;
    let shown = path.display();
    let raw = read(path, what, max)?;
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    // The buffered decoder over the bytes consumes exactly what the gzip stream takes, so what it
    // leaves unread is whatever follows the stream.
    let mut dec = flate2::bufread::GzDecoder::new(&raw[..]);
    let mut out = Vec::new();
    let mut bound: Option<u64> = None;
    loop {
        let limit = bound.unwrap_or(max);
        // A small first chunk: enough for a header, little for a bomb behind a wrong one.
        let chunk = if out.is_empty() { 64 << 10 } else { CHUNK as u64 };
        let want = (limit + 1).saturating_sub(out.len() as u64).min(chunk);
        if want == 0 {
            break;
        }
        let got = (&mut dec)
            .take(want)
            .read_to_end(&mut out)
            .with_context(|| format!("inflating {what} {shown}"))?;
        if out.len() as u64 > limit {
            match bound {
                Some(n) => bail!("{what} {shown} inflates past the {n} bytes its header declares"),
                None => bail!("{what} {shown} inflates past the limit of {max} bytes"),
            }
        }
        if bound.is_none() {
            if let Some(n) = declared(&out).with_context(|| format!("{what} {shown}"))? {
                if n > max {
                    bail!("{what} {shown}: its header declares {n} bytes, above the limit of {max} bytes");
                }
                if out.len() as u64 > n {
                    bail!("{what} {shown} inflates past the {n} bytes its header declares");
                }
                bound = Some(n);
            }
        }
        if got == 0 {
            // Bytes after the gzip stream (another member, or anything appended) are refused, not
            // ignored: they would be data the reader silently drops.
            let after = dec.get_ref().len();
            if after > 0 {
                bail!("{what} {shown} has {after} bytes after the end of its gzip stream");
            }
            break;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_regular_files_within_their_limit_are_read() {
        let dir = std::env::temp_dir().join(format!("jetlink-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("a.txt");
        std::fs::write(&f, b"hello").unwrap();
        assert_eq!(read(&f, "test file", 5).unwrap(), b"hello");
        let e = read(&f, "test file", 4).unwrap_err().to_string();
        assert!(e.contains("is 5 bytes, above the limit of 4 bytes"), "{e}");
        let e = read(&dir, "test file", 4).unwrap_err().to_string();
        assert!(e.contains("is a directory, not a regular file"), "{e}");
        // A FIFO with no writer: refused at once, not waited on.
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path; mkfifo only creates a file system node.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read(&fifo, "test file", 4).unwrap_err().to_string();
        assert!(e.contains("is a FIFO, not a regular file"), "{e}");
        let e = read(Path::new("/dev/zero"), "test file", 4).unwrap_err().to_string();
        assert!(e.contains("is a character device"), "{e}");
        // A gzip bomb stops at the bound.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        std::io::Write::write_all(&mut gz, &vec![0u8; 1 << 20]).unwrap();
        let g = dir.join("bomb.gz");
        std::fs::write(&g, gz.finish().unwrap()).unwrap();
        let any = |_: &[u8]| Ok(None);
        let e = read_maybe_gz(&g, "stream", 64 << 10, any).unwrap_err().to_string();
        assert!(e.contains("inflates past the limit"), "{e}");
        assert_eq!(read_maybe_gz(&g, "stream", 2 << 20, any).unwrap().len(), 1 << 20);
        // The header's own bound stops it early, and a refused header stops it at once.
        let small = |b: &[u8]| Ok((b.len() >= 8).then_some(4096));
        let e = read_maybe_gz(&g, "stream", 2 << 20, small).unwrap_err().to_string();
        assert!(e.contains("inflates past the 4096 bytes its header declares"), "{e}");
        let wrong = |_: &[u8]| -> Result<Option<u64>> { bail!("not a stream: magic") };
        let e = format!("{:#}", read_maybe_gz(&g, "stream", 2 << 20, wrong).unwrap_err());
        assert!(e.contains("not a stream: magic"), "{e}");
        // Bytes after the gzip stream are refused, whether garbage or a second member.
        let whole = std::fs::read(&g).unwrap();
        let junk = dir.join("junk.gz");
        std::fs::write(&junk, [&whole[..], b"garbage"].concat()).unwrap();
        let e = read_maybe_gz(&junk, "stream", 2 << 20, any).unwrap_err().to_string();
        assert!(e.contains("has 7 bytes after the end of its gzip stream"), "{e}");
        std::fs::write(&junk, [&whole[..], &whole[..]].concat()).unwrap();
        let e = read_maybe_gz(&junk, "stream", 4 << 20, any).unwrap_err().to_string();
        assert!(e.contains(&format!("has {} bytes after the end", whole.len())), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
