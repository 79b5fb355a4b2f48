//! `jetlink monitor`: decode a telemetry stream from a tty or a file into a live table (latest
//! tick, period summaries, event counts, corrupt frames) and optionally a CSV of every Tick,
//! resuming after corrupt or partial frames.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::serial::SerialReader;
use crate::wire::{
    AGREEMENT_UNKNOWN, DecodeStats, Decoder, Event, EventCode, Hello, Message, NO_ADAPT_TASK, PeriodSummary,
    Tick, flags,
};

/// The CSV header, one row per Tick (columns appended only: `held` came with wire version 2; a
/// version-1 stream's rows hold 0 there).
pub const CSV_HEADER: &str = "tick,frame,active,degraded,agreement_milli,budget_kib,mem_used_kib,power_mw,tick_us,adapt_task,flags,held";

/// How a tty is polled, and how often the live table is redrawn.
const POLL: Duration = Duration::from_millis(100);
const REFRESH: Duration = Duration::from_millis(250);

/// Options of [`monitor`].
#[derive(Clone, Debug)]
pub struct MonitorOptions<'a> {
    /// Write one CSV row per Tick here.
    pub csv: Option<&'a Path>,
    /// On a file: keep reading at its end, as `tail -f` does (stop with Ctrl-C or `idle_exit`).
    pub follow: bool,
    /// Stop after this long without a byte (a tty otherwise runs until Ctrl-C or hang-up).
    pub idle_exit: Option<Duration>,
    /// Baud rate for a tty.
    pub baud: u32,
    /// Redraw the table on stdout while running (only if stdout is a terminal).
    pub live: bool,
    /// Stop reading when this is set (the command line sets it on SIGINT and SIGTERM), returning
    /// what was read so far, the CSV finished.
    pub stop: Option<&'a std::sync::atomic::AtomicBool>,
}

impl Default for MonitorOptions<'_> {
    fn default() -> Self {
        MonitorOptions { csv: None, follow: false, idle_exit: None, baud: 115_200, live: false, stop: None }
    }
}

/// What a monitor saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MonitorStats {
    pub decode: DecodeStats,
    pub hellos: u64,
    pub ticks: u64,
    pub summaries: u64,
    /// Events per code, indexed by `EventCode as usize`.
    pub events: [u64; EventCode::COUNT],
    pub hello: Option<Hello>,
    pub last_tick: Option<Tick>,
    pub last_summary: Option<PeriodSummary>,
    pub last_event: Option<Event>,
    /// Ticks with each flag bit set (bit i at index i).
    pub flagged: [u64; 8],
    /// The stream ended inside a frame.
    pub truncated_tail: bool,
}

impl MonitorStats {
    pub fn events_of(&self, code: EventCode) -> u64 {
        self.events[code as usize]
    }

    pub fn total_events(&self) -> u64 {
        self.events.iter().sum()
    }

    /// What was lost or not decoded, for stderr and the exit status (3); `None` when every frame
    /// decoded. See `docs/wire-format.md` ("Damaged input").
    pub fn damage(&self) -> Option<String> {
        let d = &self.decode;
        if d.lost() == 0 {
            return None;
        }
        let mut parts = Vec::new();
        let unknown = format!(
            "Hello of an unknown protocol version (this monitor reads versions {} to {})",
            crate::wire::OLDEST_DECODED,
            crate::wire::PROTO_VERSION
        );
        for (n, what) in [
            (d.corrupt, "corrupt"),
            (d.oversized, "oversized"),
            (d.truncated, "truncated at the end of the stream"),
            (d.unknown_version, unknown.as_str()),
            (d.skipped, "skipped after an unknown-version Hello"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}"));
            }
        }
        Some(format!("telemetry frames lost or not decoded: {}", parts.join(", ")))
    }
}

/// A decoder that keeps [`MonitorStats`] and writes Tick rows to a CSV sink.
pub struct Monitor<W: Write> {
    decoder: Decoder,
    stats: MonitorStats,
    csv: Option<W>,
    csv_error: Option<io::Error>,
}

impl<W: Write> Monitor<W> {
    /// A monitor; with a CSV sink, the header is written now.
    pub fn new(mut csv: Option<W>) -> io::Result<Monitor<W>> {
        if let Some(w) = csv.as_mut() {
            writeln!(w, "{CSV_HEADER}")?;
        }
        Ok(Monitor { decoder: Decoder::new(), stats: MonitorStats::default(), csv, csv_error: None })
    }

    /// Feed received bytes.
    /// The file being followed was rewritten: an unfinished frame of the old content is counted as
    /// truncated and dropped, so it cannot swallow the new content's first frame.
    pub fn restart_stream(&mut self) {
        self.decoder.finish();
    }

    pub fn feed(&mut self, bytes: &[u8]) {
        let Monitor { decoder, stats, csv, csv_error } = self;
        decoder.feed(bytes, |m| match m {
            Message::Hello(h) => {
                stats.hellos += 1;
                stats.hello = Some(h);
            }
            Message::Tick(t) => {
                stats.ticks += 1;
                for (bit, n) in stats.flagged.iter_mut().enumerate() {
                    *n += u64::from(t.flags >> bit & 1);
                }
                stats.last_tick = Some(t);
                if let (Some(w), None) = (csv.as_mut(), csv_error.as_ref())
                    && let Err(e) = write_csv_row(w, &t)
                {
                    *csv_error = Some(e);
                }
            }
            Message::PeriodSummary(p) => {
                stats.summaries += 1;
                stats.last_summary = Some(p);
            }
            Message::Event(e) => {
                stats.events[e.code as usize] += 1;
                stats.last_event = Some(e);
            }
        });
        self.stats.decode = self.decoder.stats();
    }

    pub fn stats(&self) -> &MonitorStats {
        &self.stats
    }

    /// Flush the CSV sink; reports the first CSV write error, if any.
    pub fn flush(&mut self) -> io::Result<()> {
        if let Some(e) = self.csv_error.take() {
            return Err(e);
        }
        self.csv.as_mut().map_or(Ok(()), |w| w.flush())
    }

    /// Stopped by the user ([`MonitorOptions::stop`]): a partial frame at the end was cut by the
    /// stop, not lost on the way, so it is shown (`truncated_tail`) but not counted as damage.
    pub fn finish_stopped(mut self) -> io::Result<MonitorStats> {
        self.stats.truncated_tail = self.decoder.has_partial();
        self.stats.decode = self.decoder.stats();
        self.flush()?;
        Ok(self.stats)
    }

    /// End of stream: count a partial frame as truncated, flush the CSV, return the counts.
    pub fn finish(mut self) -> io::Result<MonitorStats> {
        self.stats.truncated_tail = self.decoder.has_partial();
        self.decoder.finish();
        self.stats.decode = self.decoder.stats();
        self.flush()?;
        Ok(self.stats)
    }
}

fn write_csv_row(w: &mut impl Write, t: &Tick) -> io::Result<()> {
    writeln!(
        w,
        "{},{},{},{},{},{},{},{},{},{},{},{}",
        t.tick,
        t.frame,
        t.active.bits(),
        t.degraded.bits(),
        t.agreement_milli,
        t.budget_kib,
        t.mem_used_kib,
        t.power_mw,
        t.tick_us,
        t.adapt_task,
        t.flags,
        t.held.bits()
    )
}

/// Read `path` (a tty or a file) to its end (or, for a tty or `opts.follow`, until hang-up,
/// `opts.stop` or `opts.idle_exit`), decoding as it goes.
pub fn monitor(path: &Path, opts: &MonitorOptions) -> Result<MonitorStats> {
    let mut reader = SerialReader::open(path, opts.baud, POLL)?;
    let csv = match opts.csv {
        Some(p) => {
            Some(BufWriter::new(File::create(p).with_context(|| format!("creating {}", p.display()))?))
        }
        None => None,
    };
    let mut mon = Monitor::new(csv).context("writing the CSV header")?;
    let live = opts.live && io::stdout().is_terminal();
    let name = path.display().to_string();
    let mut buf = [0u8; 4096];
    let mut last_byte = Instant::now();
    let mut last_draw = Instant::now();
    loop {
        let got = match reader.read(&mut buf) {
            Ok(0) if reader.is_tty() => break,
            Ok(0) if !opts.follow => break,
            Ok(0) => {
                if reader.reopen_if_rewritten(path).with_context(|| format!("following {name}"))? {
                    log::info!("{name} was rewritten; reading it from its start");
                    mon.restart_stream();
                    continue;
                }
                std::thread::sleep(POLL);
                0
            }
            Ok(n) => {
                mon.feed(&buf[..n]);
                last_byte = Instant::now();
                n
            }
            Err(e) if matches!(e.kind(), io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => {
                // A FIFO (a tty times out by itself): wait a poll interval, never block.
                if !reader.is_tty() {
                    std::thread::sleep(POLL);
                }
                0
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => 0,
            // The other end of a pty closed, or a USB adapter was pulled.
            Err(e)
                if reader.is_tty()
                    && (e.raw_os_error() == Some(libc::EIO) || e.kind() == io::ErrorKind::BrokenPipe) =>
            {
                break;
            }
            Err(e) => return Err(e).with_context(|| format!("reading {name}")),
        };
        // Idle means nothing to read: a file still being read is never idle, even with 0 s.
        if got == 0 && opts.idle_exit.is_some_and(|idle| last_byte.elapsed() >= idle) {
            break;
        }
        if opts.stop.is_some_and(|s| s.load(std::sync::atomic::Ordering::Relaxed)) {
            return mon.finish_stopped().context("writing the CSV");
        }
        if last_draw.elapsed() >= REFRESH {
            last_draw = Instant::now();
            mon.flush().context("writing the CSV")?;
            if live {
                let mut s = String::from("\x1b[H\x1b[J");
                render(&name, mon.stats(), &mut s);
                print!("{s}");
                let _ = io::stdout().flush();
            }
        }
    }
    mon.finish().context("writing the CSV")
}

/// The table: stream counts, the Hello, the latest Tick and period summary, event counts.
pub fn render(source: &str, s: &MonitorStats, out: &mut String) {
    let d = &s.decode;
    let _ = writeln!(
        out,
        "jetlink monitor  {source}\n  bytes {}  frames {}  corrupt {}  oversized {}  truncated {}{}",
        d.bytes,
        d.frames,
        d.corrupt,
        d.oversized,
        d.truncated,
        if s.truncated_tail { "  (ended inside a frame)" } else { "" }
    );
    if d.unknown_version + d.skipped > 0 {
        let _ = writeln!(
            out,
            "  unknown-version hellos {}  frames skipped after them {}",
            d.unknown_version, d.skipped
        );
    }
    let _ = writeln!(
        out,
        "  hello {}  ticks {}  summaries {}  events {}",
        s.hellos,
        s.ticks,
        s.summaries,
        s.total_events()
    );
    if let Some(h) = &s.hello {
        let hash: String = h.bundle_hash.iter().map(|b| format!("{b:02x}")).collect();
        let _ = writeln!(
            out,
            "board {}  proto {}  firmware {}.{}.{}  bundle {hash}  models {}  period {} ms",
            h.board, h.proto_version, h.firmware.0, h.firmware.1, h.firmware.2, h.n_models, h.period_ms
        );
    }
    if let Some(t) = &s.last_tick {
        let agree = if t.agreement_milli == AGREEMENT_UNKNOWN {
            "-".to_string()
        } else {
            format!("{:.3}", t.agreement_milli as f64 / 1000.0)
        };
        let adapt = if t.adapt_task == NO_ADAPT_TASK { "-".to_string() } else { t.adapt_task.to_string() };
        let _ = writeln!(
            out,
            "tick {}  frame {}  active {:#06b}  degraded {:#06b}  held {:#06b}  agreement {agree}\n  budget {} KiB  used {} KiB  power {} mW  tick {} us  adapt {adapt}  flags {}",
            t.tick,
            t.frame,
            t.active,
            t.degraded,
            t.held,
            t.budget_kib,
            t.mem_used_kib,
            t.power_mw,
            t.tick_us,
            flag_names(t.flags)
        );
    }
    let names = ["deadline-miss", "telemetry-fault", "engine-fault", "over-power", "memory-shed"];
    let flagged: Vec<String> = names
        .iter()
        .enumerate()
        .filter(|(i, _)| s.flagged[*i] > 0)
        .map(|(i, n)| format!("{n} {}", s.flagged[i]))
        .collect();
    if !flagged.is_empty() {
        let _ = writeln!(out, "ticks flagged: {}", flagged.join(", "));
    }
    if let Some(p) = &s.last_summary {
        let _ = writeln!(
            out,
            "period {}: {} ticks  agreement {:.3}  executions saved {:.1}%  flops saved {:.1}%  peak {} KiB  misses {}  adapt {}  faults {}",
            p.period,
            p.ticks,
            p.agreement_milli as f64 / 1000.0,
            p.executions_saved_milli as f64 / 10.0,
            p.flops_saved_milli as f64 / 10.0,
            p.peak_mem_kib,
            p.deadline_misses,
            p.adapt_tasks,
            p.faults
        );
    }
    let ev: Vec<String> = EventCode::ALL
        .iter()
        .filter(|c| s.events_of(**c) > 0)
        .map(|c| format!("{} {}", c.name(), s.events_of(*c)))
        .collect();
    if !ev.is_empty() {
        let _ = writeln!(out, "events: {}", ev.join(", "));
    }
}

fn flag_names(f: u8) -> String {
    if f == 0 {
        return "-".into();
    }
    let all = [
        (flags::DEADLINE_MISS, "deadline"),
        (flags::TELEMETRY_FAULT, "telemetry"),
        (flags::ENGINE_FAULT, "engine"),
        (flags::OVER_POWER, "power"),
        (flags::MEMORY_SHED, "shed"),
    ];
    let v: Vec<&str> = all.iter().filter(|(b, _)| f & b != 0).map(|(_, n)| *n).collect();
    v.join("+")
}
