//! The one rule for writing an output file: a path that already holds something is replaced only
//! when it holds a regular file of the same kind (a bundle over a bundle, a CSV of ticks over one,
//! a bench's JSON over its JSON), or with `--force`; a device, a FIFO, a directory, a socket or a
//! symbolic link is never written through or over. The write itself is atomic (`crate::atomic`):
//! [`write`] checks and writes. `keygen` refuses any existing file and `--serial file:`
//! anything but telemetry, by the same idea.

use std::io::Read;
use std::path::{Path, PathBuf};

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
    /// A bench's JSON report: an object whose first key is the one given (each bench's report
    /// opens with its own), so a user's JSON of another shape is not taken for one.
    Json(&'static str),
    /// An SVG plot as jetlink writes them (a bench's or the build's: [`crate::plot::svg_open`]).
    Svg,
    /// The build's Markdown report of link scores (its title line).
    ScoresReport,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bundle => "jetlink bundle",
            Kind::Recording => "jetlink recording",
            Kind::Stream => "jetlink stream",
            Kind::TickCsv => "CSV of ticks",
            Kind::Json(_) => "jetlink bench report",
            Kind::Svg => "jetlink SVG plot",
            Kind::ScoresReport => "link scores report",
        }
    }

    /// Whether `head` (the file's first bytes, inflated when it is gzip) is this kind.
    fn matches(self, head: &[u8]) -> bool {
        match self {
            Kind::Bundle => head.starts_with(b"JLBUNDLE"),
            Kind::Recording => head.starts_with(b"JLREC001"),
            Kind::Stream => head.starts_with(b"JLSTRM0"),
            Kind::TickCsv => head.starts_with(crate::monitor::CSV_HEADER.as_bytes()),
            Kind::Json(key) => head
                .trim_ascii_start()
                .strip_prefix(b"{")
                .is_some_and(|h| h.trim_ascii_start().starts_with(format!("\"{key}\"").as_bytes())),
            Kind::Svg => crate::plot::is_jetlink_svg(head),
            Kind::ScoresReport => head.starts_with(crate::report::SCORES_TITLE.as_bytes()),
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
/// is a regular file of that kind, or `force` is set and it is a regular file; never a file this
/// process read as an input ([`crate::input::read_as`]).
pub fn check_replace(path: &Path, what: &str, kind: Kind, force: bool) -> Result<()> {
    let shown = path.display();
    let md = match std::fs::symlink_metadata(path) {
        Ok(md) => md,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return folder_in_way(path, what),
        Err(e) => bail!("{what} {shown}: cannot check what is there: {e}"),
    };
    if md.file_type().is_symlink() {
        // The atomic rename would replace the link itself, not what it points to: neither is what
        // the user meant without saying so.
        bail!(
            "{what} {shown} is a symbolic link; refusing to write over it or through it (give the path \
             of the file it points to)"
        );
    }
    if !md.is_file() {
        bail!(
            "{what} {shown} is {}; refusing to write there (outputs go to regular files)",
            crate::input::kind(md.file_type())
        );
    }
    if let Some(input) = crate::input::read_as(&md) {
        bail!("{what} {shown} is the {input} this command reads; refusing to replace it (even with --force)");
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

/// [`check_replace`], and no file in the way of the folder `path` goes in: what a command checks
/// of its output before any work, so that a refused output costs nothing. [`make_folder`] then
/// makes that folder when the work starts.
pub fn prepare(path: &Path, what: &str, kind: Kind, force: bool) -> Result<()> {
    check_replace(path, what, kind, force)?;
    folder_in_way(path, what)
}

/// Make the folder `path` goes in (and its parents), naming `path` (a `what`) if it cannot be made.
pub fn make_folder(path: &Path, what: &str) -> Result<()> {
    let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) else { return Ok(()) };
    std::fs::create_dir_all(dir)
        .map_err(|e| anyhow::anyhow!("{what} {}: creating {}: {e}", path.display(), dir.display()))
}

/// The nearest existing path above `path` when it is not a folder (a file in the way), with what
/// it is.
pub fn non_folder_above(path: &Path) -> Option<(PathBuf, &'static str)> {
    let above = path.ancestors().skip(1).filter(|a| !a.as_os_str().is_empty());
    match above.into_iter().find_map(|a| std::fs::metadata(a).ok().map(|md| (a, md))) {
        Some((a, md)) if !md.is_dir() => {
            Some((a.to_path_buf(), if md.is_file() { "a file" } else { crate::input::kind(md.file_type()) }))
        }
        _ => None,
    }
}

/// Refuse `path` (a `what`) when a file is in the way of its folder, naming that file.
fn folder_in_way(path: &Path, what: &str) -> Result<()> {
    match non_folder_above(path) {
        Some((a, k)) => bail!("{what} {}: {} is {k}, not a folder", path.display(), a.display()),
        None => Ok(()),
    }
}

/// Write `bytes` to `path` (a `what`, for messages) as a `kind` file by the rule above
/// ([`check_replace`], the folder made where missing ([`make_folder`]), then an atomic write).
pub fn write(path: &Path, what: &str, kind: Kind, force: bool, bytes: &[u8]) -> Result<()> {
    check_replace(path, what, kind, force)?;
    make_folder(path, what)?;
    crate::atomic::write_file(path, bytes)
        .map_err(|e| anyhow::anyhow!("{what} {}: writing it: {e}", path.display()))
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
        // A symbolic link, to a file of the kind or dangling, is neither replaced nor followed.
        std::fs::write(&p, b"JLBUNDLE....").unwrap();
        for (link, to) in [("l1", p.clone()), ("l2", dir.join("nothing"))] {
            let l = dir.join(link);
            std::os::unix::fs::symlink(&to, &l).unwrap();
            let e = write(&l, "--out", Kind::Bundle, true, b"JLBUNDLE new").unwrap_err().to_string();
            assert!(e.contains("is a symbolic link"), "{e}");
            assert!(std::fs::symlink_metadata(&l).unwrap().file_type().is_symlink());
        }
        assert_eq!(std::fs::read(&p).unwrap(), b"JLBUNDLE....");
        assert!(!dir.join("nothing").exists());
        // Reports: a bench's JSON over its own, jetlink's SVG over its own; a user's notes, JSON or
        // SVG only with --force.
        let j = dir.join("r.json");
        write(&j, "bench output", Kind::Json("a"), false, b"{\"a\": 1}").unwrap();
        write(&j, "bench output", Kind::Json("a"), false, b"{\n  \"a\": 2}").unwrap();
        for theirs in [&b"my notes"[..], b"{\"mine\": true}", b"[1, 2]"] {
            std::fs::write(&j, theirs).unwrap();
            let e = write(&j, "bench output", Kind::Json("a"), false, b"{}").unwrap_err().to_string();
            assert!(e.contains("is not a jetlink bench report"), "{e}");
            assert_eq!(std::fs::read(&j).unwrap(), theirs);
        }
        write(&j, "bench output", Kind::Json("a"), true, b"{}").unwrap();
        let g = dir.join("r.svg");
        let ours = crate::plot::svg_open(10, 20) + "\n</svg>\n";
        write(&g, "bench output", Kind::Svg, false, ours.as_bytes()).unwrap();
        write(&g, "bench output", Kind::Svg, false, ours.as_bytes()).unwrap();
        std::fs::write(&g, b"<svg>mine</svg>").unwrap();
        let e = write(&g, "bench output", Kind::Svg, false, ours.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("is not a jetlink SVG plot"), "{e}");
        assert_eq!(std::fs::read(&g).unwrap(), b"<svg>mine</svg>");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The `json!` reports (`bench loop`, `bench adapt-gain`) are told apart by their first key,
    /// which serde_json writes in sorted order while its `preserve_order` feature is off. A
    /// dependency that turned it on (features unify) would make those benches refuse to replace
    /// their own reports: this fails first.
    #[test]
    fn json_objects_are_written_with_their_keys_sorted() {
        let v = serde_json::json!({ "zeta": 1, "adaptation": 2, "drift_accuracy": 3 });
        assert!(
            v.to_string().starts_with("{\"adaptation\""),
            "serde_json no longer sorts keys (preserve_order on?): {v}; give the json! reports a fixed first key"
        );
    }
}
