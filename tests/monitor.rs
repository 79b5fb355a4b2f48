//! The monitor over a real pseudo-terminal (frames with injected corruption written into the
//! master, decoded from the slave through `serialport`), over a file with a truncated tail, and its
//! CSV output; and the firmware side writing through `SerialWriter` to a pty.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::time::Duration;

use jetlink::monitor::{self, CSV_HEADER, MonitorOptions};
use jetlink::serial::SerialWriter;
use jetlink::wire::{
    self, Event, EventCode, MAX_FRAME, Message, PeriodSummary, TelemetryWriter, Tick, encode,
};

fn enc(m: &Message) -> Vec<u8> {
    let mut buf = [0u8; MAX_FRAME];
    encode(m, &mut buf).unwrap().to_vec()
}

fn tick(i: u32) -> Tick {
    Tick {
        tick: i,
        frame: i * 2,
        power_mw: 7_000 + i,
        flags: u8::from(i.is_multiple_of(10)),
        ..wire::typical_tick()
    }
}

/// A pty pair with the slave in raw mode (no line discipline rewriting bytes).
struct Pty {
    master: std::fs::File,
    _slave: OwnedFd,
    slave_path: PathBuf,
}

fn open_pty() -> Pty {
    let p = nix::pty::openpty(None, None).unwrap();
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    let (master, slave) = unsafe { (std::fs::File::from_raw_fd(p.master), OwnedFd::from_raw_fd(p.slave)) };
    let mut t = nix::sys::termios::tcgetattr(slave.as_raw_fd()).unwrap();
    nix::sys::termios::cfmakeraw(&mut t);
    nix::sys::termios::tcsetattr(slave.as_raw_fd(), nix::sys::termios::SetArg::TCSANOW, &t).unwrap();
    let slave_path = std::fs::read_link(format!("/proc/self/fd/{}", slave.as_raw_fd())).unwrap();
    Pty { master, _slave: slave, slave_path }
}

fn stream_with_corruption() -> (Vec<u8>, usize) {
    let mut s = Vec::new();
    let mut n_ticks = 0;
    s.extend(enc(&Message::Event(Event { tick: 0, code: EventCode::BudgetChange, a: 1, b: 2 })));
    for i in 0..200u32 {
        let mut f = enc(&Message::Tick(tick(i)));
        match i {
            // A flipped byte, a frame cut short (joins the next one), a stray zero inside a frame.
            50 => f[4] ^= 0x40,
            120 => f.truncate(9),
            170 => f[6] = 0,
            _ => n_ticks += 1,
        }
        if i == 121 {
            n_ticks -= 1; // lost with the truncated frame 120
        }
        s.extend(f);
        if i % 50 == 49 {
            let p = PeriodSummary { period: i / 50, ticks: 50, ..Default::default() };
            s.extend(enc(&Message::PeriodSummary(p)));
            s.extend(enc(&Message::Event(Event { tick: i, code: EventCode::Shed, a: 1, b: 512 })));
        }
    }
    (s, n_ticks)
}

#[test]
fn pty_stream_with_corruption() {
    let pty = open_pty();
    let (stream, n_ticks) = stream_with_corruption();
    let path = pty.slave_path.clone();
    let reader = std::thread::spawn(move || {
        let opts = MonitorOptions {
            idle_exit: Some(Duration::from_millis(700)),
            baud: 115_200,
            ..Default::default()
        };
        monitor::monitor(&path, &opts)
    });
    // Let the monitor open the slave, then write in odd-sized bursts, as a UART delivers.
    std::thread::sleep(Duration::from_millis(150));
    let mut master = pty.master.try_clone().unwrap();
    for c in stream.chunks(37) {
        master.write_all(c).unwrap();
        std::thread::sleep(Duration::from_micros(200));
    }
    let st = reader.join().unwrap().unwrap();
    assert_eq!(st.ticks as usize, n_ticks);
    assert_eq!(st.summaries, 4);
    assert_eq!(st.events_of(EventCode::Shed), 4);
    assert_eq!(st.events_of(EventCode::BudgetChange), 1);
    // Flipped byte: 1; truncated 120 + 121 merged: 1; split 170: 2.
    assert_eq!(st.decode.corrupt, 4);
    assert_eq!(st.decode.bytes, stream.len() as u64);
    assert_eq!(st.last_tick, Some(tick(199)));
    // Ticks 0, 10, ..., 190 carry the deadline flag; 50, 120 and 170 were lost (none of them).
    assert_eq!(st.flagged[0], 20 - 3);
    assert!(!st.truncated_tail);
    let mut table = String::new();
    monitor::render("pty", &st, &mut table);
    assert!(table.contains("corrupt 4") && table.contains("shed 4"), "{table}");
}

/// The firmware side: `SerialWriter` opens a pty as a raw tty, frames come out byte-exact.
#[test]
fn serial_writer_to_pty() {
    let pty = open_pty();
    let w = SerialWriter::open(&pty.slave_path, 115_200).unwrap();
    assert!(matches!(w.sink, jetlink::serial::Sink::Tty(_)));
    let mut tw = TelemetryWriter::new(w);
    let msgs =
        [Message::Tick(tick(1)), Message::Event(Event { tick: 1, code: EventCode::AdaptDone, a: 3, b: 950 })];
    for m in &msgs {
        tw.send(m).unwrap();
    }
    let want: Vec<u8> = msgs.iter().flat_map(enc).collect();
    let mut got = vec![0u8; want.len()];
    let mut master = pty.master.try_clone().unwrap();
    master.read_exact(&mut got).unwrap();
    assert_eq!(got, want, "bytes altered by the tty (not raw?)");
    assert_eq!(tw.stats().frames, 2);
}

/// Nobody reading the pty: the kernel buffer fills, frames are dropped and counted, and `send`
/// never blocks.
#[test]
fn serial_writer_does_not_block_on_a_full_line() {
    let pty = open_pty();
    let mut tw = TelemetryWriter::new(SerialWriter::open(&pty.slave_path, 115_200).unwrap());
    let start = std::time::Instant::now();
    for i in 0..20_000 {
        let _ = tw.tick(&tick(i));
    }
    let st = tw.stats();
    assert!(st.dropped > 0, "a pty buffer is a few kB; 500 kB cannot fit");
    assert!(st.frames > 10);
    assert!(start.elapsed() < Duration::from_secs(5), "{:?}", start.elapsed());
    drop(pty);
}

#[test]
fn file_with_csv_and_truncated_tail() {
    let dir = std::env::temp_dir().join(format!("jetlink-monitor-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("serial.bin");
    let csv = dir.join("ticks.csv");
    // Written as the firmware does, through SerialWriter on a file.
    let mut tw = TelemetryWriter::new(SerialWriter::open(&bin, 921_600).unwrap());
    let hello = wire::Hello {
        proto_version: wire::PROTO_VERSION,
        firmware: (0, 1, 0),
        board: heapless::String::try_from("host-sim").unwrap(),
        bundle_hash: [1, 2, 3, 4, 5, 6, 7, 8],
        n_models: 8,
        period_ms: 33,
    };
    tw.send(&Message::Hello(hello.clone())).unwrap();
    for i in 0..5 {
        tw.tick(&tick(i)).unwrap();
    }
    tw.flush().unwrap();
    drop(tw);
    // The recording stopped mid-frame.
    let mut f = std::fs::OpenOptions::new().append(true).open(&bin).unwrap();
    f.write_all(&enc(&Message::Tick(tick(5)))[..7]).unwrap();
    drop(f);

    let opts = MonitorOptions { csv: Some(&csv), ..Default::default() };
    let st = monitor::monitor(&bin, &opts).unwrap();
    assert_eq!(st.hello, Some(hello));
    assert_eq!(st.ticks, 5);
    assert!(st.truncated_tail);
    assert_eq!(st.decode.corrupt, 0);
    // The bytes left without a 0x00 are one truncated frame, reported (exit status 3 in the CLI).
    assert_eq!(st.decode.truncated, 1);
    let damage = st.damage().unwrap();
    assert!(damage.contains("1 truncated at the end of the stream"), "{damage}");
    let text = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], CSV_HEADER);
    assert_eq!(lines.len(), 6);
    // tick, frame, active, degraded, agreement, budget, used, power, tick_us, adapt, flags, held
    assert_eq!(lines[1], "0,0,5,0,941,11718,9500,7000,1850,255,1,0");
    assert_eq!(lines[5], "4,8,5,0,941,11718,9500,7004,1850,255,0,0");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A Hello of a protocol version the monitor does not know: counted and reported, and the frames
/// after it are skipped (not decoded, no CSV rows) until a Hello of version 1.
#[test]
fn unknown_hello_version_is_reported_and_not_decoded() {
    let payload = [0x00u8, 0x07, 0x01, 0x02];
    let crc = wire::crc16(&payload).to_le_bytes();
    let mut v7 = vec![0x01, 6, 0x07, 0x01, 0x02, crc[0], crc[1], 0x00];
    assert!(crc.iter().all(|&b| b != 0));
    let mut stream = Vec::new();
    stream.append(&mut v7);
    for i in 0..3 {
        stream.extend(enc(&Message::Tick(tick(i))));
    }
    let mut mon = monitor::Monitor::new(Some(Vec::new())).unwrap();
    mon.feed(&stream);
    let st = mon.finish().unwrap();
    assert_eq!((st.ticks, st.hellos, st.decode.unknown_version, st.decode.skipped), (0, 0, 1, 3));
    assert_eq!(st.hello, None);
    let damage = st.damage().unwrap();
    assert!(
        damage.contains("1 Hello of an unknown protocol version") && damage.contains("3 skipped"),
        "{damage}"
    );
    let mut table = String::new();
    monitor::render("file", &st, &mut table);
    assert!(table.contains("unknown-version hellos 1  frames skipped after them 3"), "{table}");
}

/// Whatever the path points at, the monitor ends when asked: a FIFO with no writer ends at
/// `--idle-exit` (it used to block in open); `--idle-exit 0` still reads a whole file (it used to
/// stop after its first 4 KB); `--follow` follows a run that rewrites its file in place; a device
/// that is not a tty is refused by name.
#[test]
fn fifo_idle_exit_and_rewritten_file() {
    let dir = std::env::temp_dir().join(format!("jetlink-monitor-paths-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let fifo = dir.join("fifo");
    assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let idle = MonitorOptions { idle_exit: Some(Duration::from_millis(300)), ..Default::default() };
    let t = std::time::Instant::now();
    let st = monitor::monitor(&fifo, &idle).unwrap();
    assert_eq!(st.ticks, 0);
    assert!(t.elapsed() < Duration::from_secs(20), "a FIFO without a writer kept the monitor");

    // A file far above 4 KB, read whole with --idle-exit 0.
    let big = dir.join("big.bin");
    let n = 2_000u32;
    let bytes: Vec<u8> = (0..n).flat_map(|i| enc(&Message::Tick(tick(i)))).collect();
    assert!(bytes.len() > 8 * 4096, "{} bytes", bytes.len());
    std::fs::write(&big, &bytes).unwrap();
    let zero = MonitorOptions { idle_exit: Some(Duration::ZERO), ..Default::default() };
    assert_eq!(monitor::monitor(&big, &zero).unwrap().ticks, n as u64);

    // --follow on a file a writer truncates and writes again: the new content is read.
    let live = dir.join("live.bin");
    let first: Vec<u8> = (0..50).flat_map(|i| enc(&Message::Tick(tick(i)))).collect();
    std::fs::write(&live, &first).unwrap();
    let writer = {
        let live = live.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            let again: Vec<u8> = (0..7).flat_map(|i| enc(&Message::Tick(tick(100 + i)))).collect();
            // File::create truncates in place, as `--serial file:` does when a run starts.
            std::fs::File::create(&live).unwrap().write_all(&again).unwrap();
        })
    };
    let follow =
        MonitorOptions { follow: true, idle_exit: Some(Duration::from_secs(3)), ..Default::default() };
    let st = monitor::monitor(&live, &follow).unwrap();
    writer.join().unwrap();
    assert_eq!(st.ticks, 57, "the rewritten file's ticks were not followed");
    assert_eq!(st.last_tick.map(|t| t.tick), Some(106));

    // --follow on a file replaced by a folder, then by a FIFO: an error naming the file and what
    // replaced it, at once (it used to re-read the deleted file's content without end).
    for fifo in [false, true] {
        std::fs::write(&live, &first).unwrap();
        let swap = {
            let live = live.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(400));
                std::fs::remove_file(&live).unwrap();
                if fifo {
                    assert!(std::process::Command::new("mkfifo").arg(&live).status().unwrap().success());
                } else {
                    std::fs::create_dir(&live).unwrap();
                }
            })
        };
        let t = std::time::Instant::now();
        let e = format!("{:#}", monitor::monitor(&live, &follow).unwrap_err());
        swap.join().unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "the replaced file kept the monitor");
        let what = if fifo { "replaced by a FIFO" } else { "replaced by a directory" };
        assert!(e.contains(&format!("following {}", live.display())) && e.contains(what), "{e}");
        if fifo {
            std::fs::remove_file(&live).unwrap();
        } else {
            std::fs::remove_dir(&live).unwrap();
        }
    }

    let e = monitor::monitor(std::path::Path::new("/dev/zero"), &idle).unwrap_err();
    assert!(format!("{e:#}").contains("/dev/zero"), "{e:#}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A telemetry file is written by one run at a time: a second writer of the same `file:` path is
/// refused before it can empty or interleave with the first one's frames, and the file is free
/// again once the first writer is gone.
#[test]
fn a_telemetry_file_has_one_writer_at_a_time() {
    let dir = std::env::temp_dir().join(format!("jetlink-serial-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!("file:{}", dir.join("t.bin").display());
    let mut first = TelemetryWriter::new(SerialWriter::open_spec(&spec, 115_200).unwrap());
    first.send(&jetlink::wire::Message::Tick(jetlink::wire::typical_tick())).unwrap();
    first.flush().unwrap();
    let written = std::fs::read(dir.join("t.bin")).unwrap();
    assert!(!written.is_empty());
    let e = format!("{:#}", SerialWriter::open_spec(&spec, 115_200).err().expect("a second writer"));
    assert!(e.contains("another writer holds it"), "{e}");
    assert_eq!(std::fs::read(dir.join("t.bin")).unwrap(), written, "the refused writer changed the file");
    drop(first);
    // Free again once the first writer is gone. A process another test of this binary forks in
    // the meantime holds a copy of the descriptor (and so the lock) until it execs, which closes
    // it (close-on-exec): wait that out rather than fail on it.
    let t0 = std::time::Instant::now();
    while let Err(e) = SerialWriter::open_spec(&spec, 115_200) {
        assert!(t0.elapsed() < Duration::from_secs(30), "{e:#}");
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `jetlink monitor --follow` off a terminal, ended by SIGTERM: it stops reading, prints the table
/// of what it read and finishes the CSV (it used to die of the signal with neither).
#[test]
fn a_followed_file_ends_with_its_table_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("jetlink-monitor-term-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (file, csv) = (dir.join("t.bin"), dir.join("t.csv"));
    let ticks: Vec<u8> = (0..9).flat_map(|i| enc(&Message::Tick(tick(i)))).collect();
    std::fs::write(&file, &ticks).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .args(["monitor", "--follow", "--csv"])
        .arg(&csv)
        .arg(&file)
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The CSV's rows appear once the reading loop runs (after the handlers are installed).
    let rows = || std::fs::read_to_string(&csv).map_or(0, |s| s.lines().count().saturating_sub(1));
    let t0 = std::time::Instant::now();
    while rows() < 9 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the monitor wrote no CSV rows");
        std::thread::sleep(Duration::from_millis(20));
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("jetlink monitor") && stdout.contains("frames 9"), "{stdout}");
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with(CSV_HEADER) && text.lines().count() == 10, "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
