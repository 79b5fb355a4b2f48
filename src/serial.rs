//! Where telemetry frames go and come from: an `embedded_io::Write` over a Linux tty (through
//! `serialport`, raw 8N1 at the board's baud, non-blocking so a full line drops a frame instead of
//! stalling the loop) or over a plain file, an in-memory writer with injectable faults for tests,
//! and the reader the monitor uses.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use embedded_io::ErrorKind;

use crate::board::SerialConfig;

/// A write error, `Copy` so the per-tick path can keep it; `TimedOut` means "would block".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SerialError(pub ErrorKind);

impl embedded_io::Error for SerialError {
    fn kind(&self) -> ErrorKind {
        self.0
    }
}

impl core::fmt::Display for SerialError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "serial write: {:?}", self.0)
    }
}

impl std::error::Error for SerialError {}

impl From<io::Error> for SerialError {
    fn from(e: io::Error) -> Self {
        SerialError(match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => ErrorKind::TimedOut,
            k => k.into(),
        })
    }
}

/// Whether `path` is a character device (a tty or pty), as opposed to a file.
pub fn is_char_device(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

/// The firmware's serial output, and the OS error of its last failed write (for the message that
/// reports lost frames: the wire's error keeps only the kind).
pub struct SerialWriter {
    pub sink: Sink,
    /// The last failed write that was not a would-block: its kind and OS error number, if any.
    last_os_error: Option<(ErrorKind, Option<i32>)>,
}

impl From<Sink> for SerialWriter {
    fn from(sink: Sink) -> Self {
        SerialWriter { sink, last_os_error: None }
    }
}

/// Where a [`SerialWriter`] writes: a tty or a file.
pub enum Sink {
    Tty(serialport::TTYPort),
    File(File),
    /// A FIFO: written without SIGPIPE, so a reader that goes away costs dropped frames (EPIPE,
    /// counted), not the process.
    Pipe(File),
}

impl SerialWriter {
    /// Open `path`: a character device is opened as a raw tty at `baud` (non-blocking); anything
    /// else is created (with its parent folders) or truncated as a file.
    pub fn open(path: &Path, baud: u32) -> Result<SerialWriter> {
        if is_char_device(path) {
            let port = open_tty(path, baud, Duration::ZERO)?;
            set_nonblocking(&port).with_context(|| format!("{}: setting O_NONBLOCK", path.display()))?;
            return Ok(Sink::Tty(port).into());
        }
        Ok(Sink::File(one_writer(path)?).into())
    }

    /// Open a telemetry sink named on the command line or in the board file:
    /// - `file:PATH`: a file, created, or replaced only if it already holds jetlink telemetry (an
    ///   empty file, or one whose first frame decodes): never over a manifest, a bundle or a key;
    /// - a character device (tty, pty): opened as a raw tty at `baud`, non-blocking;
    /// - a FIFO: opened non-blocking, so a FIFO without a reader is an error at once, not a hang,
    ///   and a full pipe drops frames (counted) instead of stalling the loop;
    /// - anything else is refused: a missing device (no file is created in its place) or a regular
    ///   file not asked for with `file:`.
    pub fn open_spec(spec: &str, baud: u32) -> Result<SerialWriter> {
        if let Some(p) = spec.strip_prefix("file:") {
            if p.trim().is_empty() {
                anyhow::bail!("--serial file: needs a path (file:PATH)");
            }
            return SerialWriter::open_telemetry_file(Path::new(p));
        }
        let path = Path::new(spec);
        let meta = std::fs::metadata(path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow::anyhow!(
                    "serial device {spec} does not exist (is the board's UART enabled, the cable plugged in?); to write telemetry to a file, use --serial file:PATH"
                )
            } else {
                anyhow::anyhow!("serial device {spec}: {e}")
            }
        })?;
        let ft = meta.file_type();
        if ft.is_char_device() {
            // A tty is opened as a tty (raw, at the baud rate); another character device (/dev/null,
            // /dev/full) is written as it is, non-blocking.
            let f = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
                .open(path)
                .with_context(|| format!("serial device {spec}: opening it"))?;
            // SAFETY: `f` is an open descriptor for the duration of the call.
            if unsafe { libc::isatty(f.as_raw_fd()) } == 1 {
                drop(f);
                return SerialWriter::open(path, baud);
            }
            return Ok(Sink::File(f).into());
        }
        if ft.is_fifo() {
            let f =
                OpenOptions::new().write(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(|e| {
                    if e.raw_os_error() == Some(libc::ENXIO) {
                        anyhow::anyhow!("serial FIFO {spec} has no reader (start the reader first)")
                    } else {
                        anyhow::anyhow!("serial FIFO {spec}: {e}")
                    }
                })?;
            return Ok(Sink::Pipe(f).into());
        }
        anyhow::bail!(
            "serial {spec} is not a tty or FIFO (a {}); to write telemetry to a file, use --serial file:{spec}",
            if ft.is_dir() { "folder" } else { "regular file" }
        )
    }

    /// `file:PATH`: create the file, or replace one that already holds jetlink telemetry.
    fn open_telemetry_file(path: &Path) -> Result<SerialWriter> {
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("--serial file:{}: {e}", path.display()),
            Ok(m) if !m.file_type().is_file() => {
                anyhow::bail!(
                    "--serial file:{}: not a regular file; refusing to write over it",
                    path.display()
                )
            }
            Ok(_) => {
                let mut head = [0u8; 256];
                let n = File::open(path)
                    .and_then(|mut f| f.read(&mut head))
                    .with_context(|| format!("--serial file:{}: reading it", path.display()))?;
                if n > 0 && !looks_like_telemetry(&head[..n]) {
                    anyhow::bail!(
                        "--serial file:{}: the file exists and is not jetlink telemetry; refusing to overwrite it",
                        path.display()
                    );
                }
            }
        }
        Ok(Sink::File(one_writer(path)?).into())
    }

    /// Open the board's serial device, or `override_path` (a file or a pty) if given.
    pub fn open_board(cfg: &SerialConfig, override_path: Option<&Path>) -> Result<SerialWriter> {
        SerialWriter::open(override_path.unwrap_or(Path::new(cfg.device)), cfg.baud)
    }
}

/// A telemetry file (and its folder), created or emptied for this writer alone: opened without truncating, locked,
/// then emptied, so that a second run given the same file is refused before it can cut the first
/// one's telemetry short or interleave with it (the lock goes with the file when it is closed).
fn one_writer(path: &Path) -> Result<File> {
    crate::output::make_folder(path, "telemetry file")?;
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    match f.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => anyhow::bail!(
            "telemetry file {}: another writer holds it (another run, or this one); give each run its own file",
            path.display()
        ),
        // A file system without locks (some network or container mounts): written unlocked, said.
        Err(std::fs::TryLockError::Error(e)) => log::warn!(
            "telemetry file {}: cannot lock it ({e}); a second writer of it would not be noticed",
            path.display()
        ),
    }
    f.set_len(0).with_context(|| format!("emptying {}", path.display()))?;
    Ok(f)
}

fn open_tty(path: &Path, baud: u32, timeout: Duration) -> Result<serialport::TTYPort> {
    let name = path.to_str().with_context(|| format!("{}: not a UTF-8 path", path.display()))?;
    let mut port = serialport::new(name, baud)
        .timeout(timeout)
        .open_native()
        .with_context(|| format!("opening tty {name} at {baud} baud"))?;
    // Let a monitor (or `cat`) open the same device for debugging.
    let _ = port.set_exclusive(false);
    Ok(port)
}

fn set_nonblocking(port: &impl AsRawFd) -> io::Result<()> {
    set_o_nonblock(port, true)
}

fn set_blocking(f: &impl AsRawFd) -> io::Result<()> {
    set_o_nonblock(f, false)
}

fn set_o_nonblock(f: &impl AsRawFd, on: bool) -> io::Result<()> {
    let fd = f.as_raw_fd();
    // SAFETY: `fd` is an open descriptor for the duration of both calls.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
    if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFL, flags) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl embedded_io::ErrorType for SerialWriter {
    type Error = SerialError;
}

impl embedded_io::Write for SerialWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, SerialError> {
        let r = match &mut self.sink {
            Sink::Tty(p) => p.write(buf),
            Sink::File(f) => f.write(buf),
            Sink::Pipe(f) => write_without_sigpipe(f, buf),
        };
        self.kept(r)
    }

    fn flush(&mut self) -> Result<(), SerialError> {
        let r = match &mut self.sink {
            // tcdrain would block until the line is idle; the loop must not wait for that.
            Sink::Tty(_) => Ok(()),
            Sink::File(f) | Sink::Pipe(f) => f.flush(),
        };
        self.kept(r)
    }
}

impl SerialWriter {
    /// `r`, its error kept with its OS error number (a would-block is not kept: the wire reports
    /// it by itself).
    fn kept<T>(&mut self, r: io::Result<T>) -> Result<T, SerialError> {
        r.map_err(|e| {
            let raw = e.raw_os_error();
            let e = SerialError::from(e);
            if e.0 != ErrorKind::TimedOut && e.0 != ErrorKind::Interrupted {
                self.last_os_error = Some((e.0, raw));
            }
            e
        })
    }

    /// The OS's description of the last failed write's error, when that error was of `kind` (the
    /// kind the wire reports) and came with an OS error number.
    pub fn os_error_of(&self, kind: ErrorKind) -> Option<io::Error> {
        match self.last_os_error {
            Some((k, Some(raw))) if k == kind => Some(io::Error::from_raw_os_error(raw)),
            _ => None,
        }
    }
}

/// `write` to a pipe with SIGPIPE blocked on this thread: a reader that went away gives EPIPE
/// (the frame is dropped and counted) instead of killing the process, which keeps SIGPIPE's default
/// action for stdout (`jetlink ... | head`). A SIGPIPE raised by this write is consumed before the
/// mask is restored; one already pending is left alone. No allocation.
fn write_without_sigpipe(f: &mut File, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: plain signal-set calls on sets owned by this frame; the mask is restored on every path.
    unsafe {
        let mut pipe: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut pipe);
        libc::sigaddset(&mut pipe, libc::SIGPIPE);
        let mut pending: libc::sigset_t = std::mem::zeroed();
        libc::sigpending(&mut pending);
        let was_pending = libc::sigismember(&pending, libc::SIGPIPE) == 1;
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_BLOCK, &pipe, &mut old);
        let r = f.write(buf);
        if !was_pending && matches!(&r, Err(e) if e.raw_os_error() == Some(libc::EPIPE)) {
            let zero = libc::timespec { tv_sec: 0, tv_nsec: 0 };
            libc::sigtimedwait(&pipe, std::ptr::null_mut(), &zero);
        }
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        r
    }
}

/// Whether `head` (the start of a file) is jetlink telemetry: its first frame decodes (a valid COBS
/// frame with a correct CRC), before any corrupt one.
pub fn looks_like_telemetry(head: &[u8]) -> bool {
    let mut d = crate::wire::Decoder::new();
    for &b in head {
        d.feed(&[b], |_| {});
        let st = d.stats();
        if st.corrupt + st.oversized > 0 {
            return false;
        }
        // A frame decoded, or a Hello of another jetlink protocol version.
        if st.frames + st.unknown_version > 0 {
            return true;
        }
    }
    false
}

/// An in-memory writer for tests: it can accept only so many bytes (then would block) and fail a
/// chosen number of writes.
#[derive(Debug, Default)]
pub struct MemWriter {
    pub data: Vec<u8>,
    /// Total bytes accepted before it reports "would block"; `None` is unlimited.
    pub limit: Option<usize>,
    /// The next this-many writes fail with `ErrorKind::Other`.
    pub fail_next: u32,
    /// Write calls seen.
    pub calls: u64,
}

impl MemWriter {
    pub fn new() -> MemWriter {
        MemWriter::default()
    }

    pub fn with_limit(limit: usize) -> MemWriter {
        MemWriter { limit: Some(limit), ..MemWriter::default() }
    }
}

impl embedded_io::ErrorType for MemWriter {
    type Error = SerialError;
}

impl embedded_io::Write for MemWriter {
    fn write(&mut self, buf: &[u8]) -> Result<usize, SerialError> {
        self.calls += 1;
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(SerialError(ErrorKind::Other));
        }
        let room = self.limit.map_or(usize::MAX, |l| l.saturating_sub(self.data.len()));
        if room == 0 && !buf.is_empty() {
            return Err(SerialError(ErrorKind::TimedOut));
        }
        let n = buf.len().min(room);
        self.data.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> Result<(), SerialError> {
        Ok(())
    }
}

/// A byte source for the monitor: a tty (raw, at `baud`, reads time out after `poll`), a FIFO
/// (opened and read non-blocking: no writer yet, or a writer with nothing to say, is a wait the
/// monitor can end, never a blocked read) or a regular file. Anything else (a directory, a block
/// device, a character device that is not a tty such as `/dev/zero`) is refused by name.
pub enum SerialReader {
    Tty(serialport::TTYPort),
    Pipe { f: File, seen: bool },
    File(File),
}

impl SerialReader {
    pub fn open(path: &Path, baud: u32, poll: Duration) -> Result<SerialReader> {
        if is_char_device(path) {
            return Ok(SerialReader::Tty(open_tty(path, baud, poll)?));
        }
        let f =
            crate::input::open_nonblocking(path).with_context(|| format!("opening {}", path.display()))?;
        let ft =
            f.metadata().with_context(|| format!("{}: reading its metadata", path.display()))?.file_type();
        if ft.is_fifo() {
            return Ok(SerialReader::Pipe { f, seen: false });
        }
        if !ft.is_file() {
            bail!(
                "{} is {}, not a tty, a FIFO or a file of telemetry",
                path.display(),
                crate::input::kind(ft)
            );
        }
        // Blocking again: a regular file never blocks, and `read` below expects plain reads.
        set_blocking(&f).with_context(|| format!("{}: clearing O_NONBLOCK", path.display()))?;
        Ok(SerialReader::File(f))
    }

    pub fn is_tty(&self) -> bool {
        matches!(self, SerialReader::Tty(_))
    }

    /// For `--follow` on a regular file: true when the file at `path` is no longer the one being
    /// read from its current position (truncated below it, or replaced by another file), and then
    /// starts over from the start of what is at `path` now. A run that rewrites its telemetry file
    /// in place is followed into its new content.
    pub fn reopen_if_rewritten(&mut self, path: &Path) -> io::Result<bool> {
        use std::io::Seek;
        use std::os::unix::fs::MetadataExt;
        let SerialReader::File(f) = self else { return Ok(false) };
        let pos = f.stream_position()?;
        let (open, now) = (
            f.metadata()?,
            match std::fs::metadata(path) {
                Ok(m) => m,
                Err(_) => return Ok(false),
            },
        );
        if (open.dev(), open.ino()) != (now.dev(), now.ino()) {
            // Replaced: a new file is read from its start; anything else ends the following (the
            // length of a folder or a FIFO says nothing of the file that was read).
            if !now.is_file() {
                return Err(io::Error::other(format!(
                    "it was replaced by {}; a telemetry file was expected",
                    crate::input::kind(now.file_type())
                )));
            }
            *f = File::open(path)?;
            return Ok(true);
        }
        if now.len() < pos {
            f.seek(io::SeekFrom::Start(0))?;
            return Ok(true);
        }
        Ok(false)
    }
}

impl Read for SerialReader {
    /// A tty with nothing to read returns `ErrorKind::TimedOut` after the poll interval; a file
    /// returns 0 at its end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            SerialReader::Tty(p) => p.read(buf),
            SerialReader::File(f) => f.read(buf),
            // A FIFO's end of file before any byte means no writer has come yet: a wait, not the end.
            SerialReader::Pipe { f, seen } => match f.read(buf) {
                Ok(0) if !*seen => Err(io::ErrorKind::WouldBlock.into()),
                Ok(n) => {
                    *seen |= n > 0;
                    Ok(n)
                }
                Err(e) => Err(e),
            },
        }
    }
}
