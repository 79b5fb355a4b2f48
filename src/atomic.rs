//! Atomic file writes: the whole new content or the old file, never half of either. The bytes go to
//! a temporary file beside the target (same folder, so the rename stays on one file system), which
//! is flushed to disk (`fsync`) and then renamed over the target; the folder is synced too, so the
//! rename itself survives a power cut. On any error the temporary file is removed.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// A temporary sibling of `path`, unique to this process and call.
fn temp_path(path: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let k = N.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".{name}.{}.{k}.tmp", std::process::id()))
}

fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // Best effort: some file systems refuse fsync on a directory.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Write to a temporary file with `mode` through `fill`, fsync it, and hand it to `commit` (rename or
/// link). The temporary file is gone afterwards, whatever happens.
fn write_with(
    path: &Path,
    mode: u32,
    exact: bool,
    fill: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    commit: impl FnOnce(&Path, &Path) -> io::Result<()>,
) -> io::Result<()> {
    let tmp = temp_path(path);
    let result = (|| {
        let f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        if exact {
            // The mode of the file replaced, whatever the umask.
            use std::os::unix::fs::PermissionsExt;
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        let mut w = io::BufWriter::new(f);
        fill(&mut w)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        drop(f);
        commit(&tmp, path)
    })();
    let _ = std::fs::remove_file(&tmp);
    if result.is_ok() {
        sync_dir(path);
    }
    result
}

/// Replace `path` with what `fill` writes, atomically: with the mode of the regular file it
/// replaces, else 0644 before the umask.
pub fn write_file_with(path: &Path, fill: impl FnOnce(&mut dyn Write) -> io::Result<()>) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let old =
        std::fs::symlink_metadata(path).ok().filter(|m| m.is_file()).map(|m| m.permissions().mode() & 0o7777);
    write_with(path, old.unwrap_or(0o644), old.is_some(), fill, |tmp, p| std::fs::rename(tmp, p))
}

/// Replace `path` with `bytes`, atomically.
pub fn write_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_file_with(path, |w| w.write_all(bytes))
}

/// Create `path` with `bytes` and `mode`, atomically, only if it does not exist (an existing file is
/// an `AlreadyExists` error and stays as it was). A failed write leaves nothing behind.
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    // A hard link fails if the target exists, and is atomic: the file appears complete or not at all.
    write_with(path, mode, false, |w| w.write_all(bytes), |tmp, p| std::fs::hard_link(tmp, p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_files_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("jetlink-atomic-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f.bin");
        write_file(&p, b"one").unwrap();
        write_file(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // A failing writer leaves the old content and no temporary file.
        let e = write_file_with(&p, |w| {
            w.write_all(b"half")?;
            Err(io::Error::other("disk full"))
        });
        assert!(e.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // A replaced file keeps its mode (a read-only one stays read-only).
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o444)).unwrap();
        write_file(&p, b"three").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777, 0o444);
        assert_eq!(std::fs::read(&p).unwrap(), b"three");
        let k = dir.join("k");
        create_new(&k, b"key", 0o600).unwrap();
        assert_eq!(create_new(&k, b"other", 0o600).unwrap_err().kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&k).unwrap(), b"key");
        let left: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
