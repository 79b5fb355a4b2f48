//! The probe table of docs/reliability.md, run against the release binary: for each class of bad
//! input or fault (whatever a path points at, endless or bombed files, files that must not be
//! replaced, losses that must be counted, non-finite numbers), one probe per instance, each checked
//! for its exit status and message, for ending (or obeying SIGTERM) in time, for peak memory (the
//! child's maximum resident set, from `wait4`) and for the files it must leave alone.
//!
//! The table in docs/reliability.md is rendered from this list: the test fails when they differ
//! (`JETLINK_BLESS_PROBES=1 cargo test --release --test probes` rewrites it).

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// No probe may use more memory than this (maximum resident set).
const MAX_RSS_KB: i64 = 512 * 1024;
/// Every command obeys SIGTERM within this.
const SIGTERM_BOUND: Duration = Duration::from_secs(2);
/// A command that is not stopped must end within this (far above any probe's own time: a hang is
/// forever).
const END_BOUND: Duration = Duration::from_secs(60);

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

enum Step {
    /// Wait until stdout holds this (at most [`END_BOUND`]).
    WaitOut(&'static str),
    Sleep(u64),
    Signal(i32),
    Do(Box<dyn Fn()>),
}

struct Probe {
    class: &'static str,
    what: &'static str,
    args: Vec<String>,
    steps: Vec<Step>,
    status: i32,
    /// Expected in stdout or stderr.
    expect: &'static str,
    unchanged: Vec<PathBuf>,
}

struct Outcome {
    status: Option<i32>,
    out: String,
    err: String,
    rss_kb: i64,
}

fn mkfifo(p: &Path) {
    let _ = std::fs::remove_file(p);
    assert!(Command::new("mkfifo").arg(p).status().unwrap().success());
}

fn run(p: &Probe, dir: &Path, k: usize) -> Outcome {
    let (out_path, err_path) = (dir.join(format!("probe-{k}.out")), dir.join(format!("probe-{k}.err")));
    let child = Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root())
        .args(&p.args)
        .env("RUST_BACKTRACE", "0")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let reap = |block_until: Instant| -> Option<(i32, i64)> {
        loop {
            let mut status = 0;
            // SAFETY: an all-zero rusage is a valid value for wait4 to fill.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            // SAFETY: pid is our child; status and ru are valid for writes.
            let r = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut ru) };
            if r == pid {
                let code = if libc::WIFEXITED(status) {
                    libc::WEXITSTATUS(status)
                } else {
                    128 + libc::WTERMSIG(status)
                };
                return Some((code, ru.ru_maxrss));
            }
            if Instant::now() >= block_until {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    };
    let mut signalled_at = None;
    let mut done = None;
    for s in &p.steps {
        match s {
            Step::WaitOut(text) => {
                let until = Instant::now() + END_BOUND;
                while !std::fs::read_to_string(&out_path).unwrap_or_default().contains(text) {
                    assert!(Instant::now() < until, "{}: never printed {text:?}", p.what);
                    if let Some(d) = reap(Instant::now()) {
                        done = Some(d);
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            Step::Sleep(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Step::Signal(sig) => {
                // SAFETY: signalling our own child.
                unsafe { libc::kill(pid, *sig) };
                if *sig == libc::SIGTERM {
                    signalled_at = Some(Instant::now());
                }
            }
            Step::Do(f) => f(),
        }
        if done.is_some() {
            break;
        }
    }
    let until = signalled_at.map_or(Instant::now() + END_BOUND, |t| t + SIGTERM_BOUND);
    let done = done.or_else(|| reap(until));
    let (status, rss_kb) = match done {
        Some((c, r)) => (Some(c), r),
        None => {
            // SAFETY: killing our own child that hung.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let (_, r) = reap(Instant::now() + Duration::from_secs(10)).unwrap_or((0, 0));
            (None, r)
        }
    };
    Outcome {
        status,
        out: std::fs::read_to_string(&out_path).unwrap_or_default(),
        err: std::fs::read_to_string(&err_path).unwrap_or_default(),
        rss_kb,
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

fn png(path: &Path, w: u32, h: u32) {
    let px: Vec<u8> = (0..w * h).map(|i| (i * 37 % 251) as u8).collect();
    image::save_buffer(path, &px, w, h, image::ExtendedColorType::L8).unwrap();
}

fn jpeg(w: u32, h: u32, grey: bool) -> Vec<u8> {
    let c = if grey { 1 } else { 3 };
    let px: Vec<u8> = (0..w * h * c).map(|i| (i * 7 % 251) as u8).collect();
    let mut out = Vec::new();
    let ty = if grey { image::ExtendedColorType::L8 } else { image::ExtendedColorType::Rgb8 };
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90).encode(&px, w, h, ty).unwrap();
    out
}

/// A PNG whose header declares `side`×`side` pixels and whose data is a few bytes: a decoder that
/// trusts the header allocates gigabytes.
fn png_bomb(path: &Path, side: u32) {
    fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut c = kind.to_vec();
        c.extend_from_slice(data);
        out.extend_from_slice(&c);
        out.extend_from_slice(&crc32(&c).to_be_bytes());
    }
    fn crc32(b: &[u8]) -> u32 {
        let mut c = !0u32;
        for &x in b {
            c ^= x as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&side.to_be_bytes());
    ihdr.extend_from_slice(&[8, 0, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
    chunk(&mut out, b"IEND", &[]);
    std::fs::write(path, out).unwrap();
}

/// A JLSTRM02 stream of `frames` JPEGs (each already encoded) of `h`×`w`×`c`.
fn jpeg_stream(path: &Path, frames: &[Vec<u8>], h: u16, w: u16, c: u8) {
    let mut b = b"JLSTRM02".to_vec();
    b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    b.extend_from_slice(&h.to_le_bytes());
    b.extend_from_slice(&w.to_le_bytes());
    b.extend_from_slice(&[c, 0, 0, 0]);
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&(frames.len() as u32).to_le_bytes());
    for (k, j) in frames.iter().enumerate() {
        b.extend_from_slice(&(k as u32).to_le_bytes());
        b.extend_from_slice(&[255, 0]);
        b.extend_from_slice(&(j.len() as u32).to_le_bytes());
        b.extend_from_slice(j);
    }
    std::fs::write(path, b).unwrap();
}

/// A copy of the demo manifest with absolute paths, its stream (and more) replaced by `edit`.
fn manifest(dir: &Path, name: &str, edit: impl Fn(String) -> String) -> String {
    common::write_demo_manifest(&dir.join(name), edit).display().to_string()
}

fn probes(dir: &Path) -> Vec<Probe> {
    let d = |n: &str| dir.join(n).display().to_string();
    let serial = |n: &str| format!("file:{}", d(n));
    let run = |extra: &[&str], n: &str| {
        let mut v = s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file"]);
        v.push(d(&format!("{n}.state")));
        v.push("--serial".into());
        v.push(serial(&format!("{n}.bin")));
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    // Inputs.
    mkfifo(&dir.join("fifo"));
    mkfifo(&dir.join("monitor.fifo"));
    let key = dir.join("private.key");
    assert!(
        Command::new(env!("CARGO_BIN_EXE_jetlink"))
            .args(["keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap()
            .status
            .success()
    );
    let manifest_copy = dir.join("manifest-copy.toml");
    std::fs::copy(root().join("demo/manifest.toml"), &manifest_copy).unwrap();
    let telemetry = dir.join("telemetry.bin");
    assert!(
        Command::new(env!("CARGO_BIN_EXE_jetlink"))
            .current_dir(root())
            .args(["run", "--engines", "replay", "--frames", "3000", "-q", "--state-file"])
            .arg(dir.join("t.state"))
            .arg("--serial")
            .arg(format!("file:{}", telemetry.display()))
            .output()
            .unwrap()
            .status
            .success()
    );
    let reload_bundle = dir.join("reload.bundle");
    std::fs::copy(root().join("demo/demo.bundle"), &reload_bundle).unwrap();
    // Images: a FIFO among them; a truncated JPEG; a 30000×30000 PNG header; nothing decodable.
    let mixed = dir.join("mixed");
    std::fs::create_dir_all(&mixed).unwrap();
    for k in 0..3 {
        png(&mixed.join(format!("{k}.png")), 28, 28);
    }
    mkfifo(&mixed.join("3.png"));
    let j = jpeg(64, 64, false);
    std::fs::write(mixed.join("4.jpg"), &j[..j.len() / 2]).unwrap();
    png_bomb(&mixed.join("5.png"), 30000);
    let junk = dir.join("junk");
    std::fs::create_dir_all(&junk).unwrap();
    std::fs::write(junk.join("a.png"), b"not a png").unwrap();
    std::fs::write(junk.join("b.jpg"), &j[..100]).unwrap();
    // Streams: a gzip bomb behind a valid header; one behind a wrong magic; damaged JLSTRM02.
    let mut header = b"JLSTRM01".to_vec();
    header.extend_from_slice(&1u32.to_le_bytes());
    header.extend_from_slice(&28u16.to_le_bytes());
    header.extend_from_slice(&28u16.to_le_bytes());
    header.extend_from_slice(&[1, 0, 0, 0]);
    header.extend_from_slice(&0u32.to_le_bytes());
    header.extend_from_slice(&1u32.to_le_bytes());
    // Written in pieces: the children's peak memory (`ru_maxrss`) starts from this process's peak
    // at spawn, so this process stays small.
    let gz_bomb = |path: &Path, head: &[u8]| {
        let f = std::fs::File::create(path).unwrap();
        let mut e = flate2::write::GzEncoder::new(f, flate2::Compression::best());
        e.write_all(head).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..1024 {
            e.write_all(&zeros).unwrap();
        }
        e.finish().unwrap();
    };
    gz_bomb(&dir.join("bomb.jls.gz"), &header);
    gz_bomb(&dir.join("garbage.jls.gz"), b"GARBAGE!");
    let mut reserved = header.clone();
    reserved[17] = 7;
    reserved.resize(header.len() + 6 + 784, 0);
    std::fs::write(dir.join("reserved.jls"), &reserved).unwrap();
    let mut order = header.clone();
    order[20..24].copy_from_slice(&1u32.to_le_bytes());
    order[24..28].copy_from_slice(&0u32.to_le_bytes());
    order.resize(header.len() + 6 + 784, 0);
    std::fs::write(dir.join("order.jls"), &order).unwrap();
    let g = jpeg(28, 28, true);
    jpeg_stream(&dir.join("cut.jls"), &[g.clone(), g[..g.len() / 2].to_vec()], 28, 28, 1);
    jpeg_stream(&dir.join("grey.jls"), &[jpeg(28, 28, false), g.clone()], 28, 28, 3);
    // A reference recording with a NaN: the demo's, one value replaced.
    let mut rec = jetlink::recording::Recording::load(&root().join("demo/reference.jlr.gz")).unwrap();
    rec.values[5] = f32::NAN;
    let nan_rec = dir.join("nan.jlr");
    std::fs::write(&nan_rec, {
        let mut b = Vec::new();
        rec.write_to(&mut b).unwrap();
        b
    })
    .unwrap();
    // A bundle with a NaN link weight (valid hash, unsigned): `sign` must not sign it.
    let mut b = jetlink::bundle::Bundle::load(&root().join("demo/demo.bundle")).unwrap();
    b.links.params[10] = f32::NAN;
    std::fs::write(dir.join("nan.bundle"), b.to_bytes().unwrap()).unwrap();
    std::fs::write(dir.join("plus.state"), "jetlink-bundle-version +1\n").unwrap();

    let m = |name: &str, edit: &dyn Fn(String) -> String| manifest(dir, name, edit);
    let with_stream = |name: &str, stream: &str| {
        let stream = d(stream);
        m(name, &move |t: String| {
            let at = t.find("stream = \"").unwrap();
            let end = t[at + 10..].find('"').unwrap() + at + 10;
            format!("{}stream = \"{stream}\"{}", &t[..at], &t[end + 1..])
        })
    };
    let zero_onnx = m("zero-onnx.toml", &|t| t.replacen("onnx = \"", "onnx = \"/dev/zero\" # \"", 1));
    let zero_stream = m("zero-stream.toml", &|t| t.replacen("stream = \"", "stream = \"/dev/zero\" # \"", 1));
    let nan_mean = m("nan-mean.toml", &|t| {
        t.replacen("view = [", "view = [ { op = \"normalize\", mean = nan, std = 1.0 },", 1)
    });
    let nan_reference = m("nan-ref.toml", &|t| {
        t.replacen("reference = \"", &format!("reference = \"{}\" # \"", nan_rec.display()), 1)
    });
    let (bomb_m, garbage_m, reserved_m, order_m, cut_m, grey_m) = (
        with_stream("bomb.toml", "bomb.jls.gz"),
        with_stream("garbage.toml", "garbage.jls.gz"),
        with_stream("reserved.toml", "reserved.jls"),
        with_stream("order.toml", "order.jls"),
        with_stream("cut.toml", "cut.jls"),
        with_stream("grey.toml", "grey.jls"),
    );
    let bundle_to_fifo = {
        let (b, f) = (reload_bundle.clone(), dir.join("fifo"));
        Box::new(move || {
            std::fs::remove_file(&b).unwrap();
            std::os::unix::fs::symlink(&f, &b).unwrap();
        })
    };
    let mixed_src = format!("images:{}", mixed.display());
    let junk_src = format!("images:{}", junk.display());
    let mut long_run = s(&["run", "--engines", "tract", "-q", "--state-file"]);
    long_run.extend([d("long.state"), "--serial".into(), serial("long.bin"), "--bundle".into()]);
    long_run.push(reload_bundle.display().to_string());
    let (keyp, telem) = (key.display().to_string(), telemetry.display().to_string());
    let images_run = |src: &str, n: &str| {
        let mut v = run(&["--source", src], n);
        (v[2], v[4]) = ("tract".into(), "10".into());
        v
    };
    use libc::{SIGHUP, SIGTERM};
    #[rustfmt::skip]
    let v = vec![
        // What a path points at: refused at once, never waited on.
        Probe { class: "path kind", what: "`run --bundle` a FIFO", args: run(&["--bundle", &d("fifo")], "p1"), steps: vec![], status: 1, expect: "is a FIFO, not a regular file", unchanged: vec![] },
        Probe { class: "path kind", what: "`run --state-file` a FIFO", args: { let mut v = run(&[], "p2"); v[7] = d("fifo"); v }, steps: vec![], status: 1, expect: "state file", unchanged: vec![] },
        Probe { class: "path kind", what: "SIGHUP while the bundle path is a FIFO, then SIGTERM", args: long_run, steps: vec![Step::WaitOut("prepared in"), Step::Do(bundle_to_fifo), Step::Signal(SIGHUP), Step::Sleep(300), Step::Signal(SIGTERM)], status: 0, expect: "1 refused", unchanged: vec![] },
        Probe { class: "path kind", what: "`monitor --idle-exit 1` on a FIFO with no writer", args: s(&["monitor", "--idle-exit", "1", &d("monitor.fifo")]), steps: vec![], status: 0, expect: "", unchanged: vec![] },
        Probe { class: "path kind", what: "`monitor` on `/dev/zero`", args: s(&["monitor", "/dev/zero"]), steps: vec![], status: 1, expect: "/dev/zero", unchanged: vec![] },
        Probe { class: "path kind", what: "`fleet aggregate --rounds 0`", args: s(&["fleet", "aggregate", "--rounds", "0"]), steps: vec![], status: 2, expect: "0 is not in 1..=", unchanged: vec![] },
        // Unbounded memory: bounded by the declared sizes.
        Probe { class: "memory", what: "a manifest's `onnx` is `/dev/zero`", args: run(&["--manifest", &zero_onnx], "m1"), steps: vec![], status: 1, expect: "/dev/zero is a character device", unchanged: vec![] },
        Probe { class: "memory", what: "a manifest's `stream` is `/dev/zero`", args: run(&["--manifest", &zero_stream], "m2"), steps: vec![], status: 1, expect: "/dev/zero is a character device", unchanged: vec![] },
        Probe { class: "memory", what: "`--state-file /dev/zero`", args: { let mut v = run(&[], "m3"); v[7] = "/dev/zero".into(); v }, steps: vec![], status: 1, expect: "state file", unchanged: vec![] },
        Probe { class: "memory", what: "`sign --key /dev/zero`", args: s(&["sign", "--key", "/dev/zero", "demo/demo.bundle", "--out", &d("m4.bundle")]), steps: vec![], status: 1, expect: "/dev/zero is a character device", unchanged: vec![] },
        Probe { class: "memory", what: "a 1 GB gzip stream behind a header that declares one frame", args: run(&["--manifest", &bomb_m], "m5"), steps: vec![], status: 1, expect: "inflates past the 818 bytes its header declares", unchanged: vec![] },
        Probe { class: "memory", what: "a 1 GB gzip stream behind a wrong magic number", args: run(&["--manifest", &garbage_m], "m6"), steps: vec![], status: 1, expect: "not a jetlink stream", unchanged: vec![] },
        Probe { class: "memory", what: "`stream --height 65535 --width 65535 --channels 3`", args: s(&["stream", &mixed.display().to_string(), "--out", &d("m7.jls"), "--height", "65535", "--width", "65535", "--channels", "3", "--train", "0"]), steps: vec![], status: 1, expect: "above the limit of", unchanged: vec![] },
        Probe { class: "memory", what: "a 30000×30000 PNG header among the images (and a FIFO, a truncated JPEG)", args: images_run(&mixed_src, "m8"), steps: vec![], status: 4, expect: "0 engine, 3 frame, 0 telemetry", unchanged: vec![] },
        // Files that are not the command's own kind are never replaced.
        Probe { class: "no file replaced", what: "`sign --out` a private key", args: s(&["sign", "--key", "demo/keys/demo-insecure.key", "demo/demo.bundle", "--out", &keyp]), steps: vec![], status: 1, expect: "is not a jetlink bundle; refusing to replace it", unchanged: vec![key.clone()] },
        Probe { class: "no file replaced", what: "`record --out` a manifest", args: s(&["record", "--to", "3", "--out", &manifest_copy.display().to_string()]), steps: vec![], status: 1, expect: "is not a jetlink recording; refusing to replace it", unchanged: vec![manifest_copy.clone()] },
        Probe { class: "no file replaced", what: "`stream --out /dev/null`", args: s(&["stream", &mixed.display().to_string(), "--out", "/dev/null", "--train", "0"]), steps: vec![], status: 1, expect: "/dev/null is a character device; refusing to write there", unchanged: vec![] },
        Probe { class: "no file replaced", what: "`monitor IN --csv IN`", args: s(&["monitor", &telem, "--csv", &telem]), steps: vec![], status: 1, expect: "refusing to replace it", unchanged: vec![telemetry.clone()] },
        Probe { class: "no file replaced", what: "`run --serial file:` a private key", args: { let mut v = run(&[], "f5"); v[9] = format!("file:{keyp}"); v }, steps: vec![], status: 1, expect: "is not jetlink telemetry; refusing to overwrite it", unchanged: vec![key.clone()] },
        // Losses are counted, and a source with nothing usable is an error.
        Probe { class: "no silent loss", what: "images with nothing decodable", args: images_run(&junk_src, "l1"), steps: vec![], status: 1, expect: "none of its frames could be used", unchanged: vec![] },
        Probe { class: "no silent loss", what: "a truncated JPEG frame in a `JLSTRM02` stream", args: run(&["--manifest", &cut_m], "l2"), steps: vec![], status: 1, expect: "frame 1: decoding its JPEG", unchanged: vec![] },
        Probe { class: "no silent loss", what: "a grey JPEG frame in an RGB `JLSTRM02` stream", args: run(&["--manifest", &grey_m], "l3"), steps: vec![], status: 1, expect: "frame 1: JPEG is 28x28x1, the stream's frames are 28x28x3", unchanged: vec![] },
        Probe { class: "no silent loss", what: "`monitor --idle-exit 0` on a complete file", args: s(&["monitor", "--idle-exit", "0", &telem]), steps: vec![], status: 0, expect: "ticks 3000", unchanged: vec![] },
        // Non-finite numbers, where they enter.
        Probe { class: "non-finite", what: "NaN in the reference recording", args: run(&["--manifest", &nan_reference], "n1"), steps: vec![], status: 1, expect: "is NaN", unchanged: vec![] },
        Probe { class: "non-finite", what: "a bundle with a NaN link weight, to `sign`", args: s(&["sign", "--key", "demo/keys/demo-insecure.key", &d("nan.bundle"), "--out", &d("n2.bundle")]), steps: vec![], status: 1, expect: "is NaN, not finite", unchanged: vec![] },
        Probe { class: "non-finite", what: "a view with `mean = nan` (`models`)", args: s(&["models", "--frames", "1", "--manifest", &nan_mean]), steps: vec![], status: 1, expect: "mean NaN must be finite", unchanged: vec![] },
        // Smaller: values the format does not allow.
        Probe { class: "values", what: "`--budget 1` (below every model)", args: run(&["--budget", "1"], "v1"), steps: vec![], status: 1, expect: "below the smallest model's memory", unchanged: vec![] },
        Probe { class: "values", what: "a state file holding `+1`", args: { let mut v = run(&[], "v2"); v[7] = d("plus.state"); v }, steps: vec![], status: 1, expect: "not a jetlink state file", unchanged: vec![] },
        Probe { class: "values", what: "a stream with non-zero reserved bytes", args: run(&["--manifest", &reserved_m], "v3"), steps: vec![], status: 1, expect: "reserved bytes are [7, 0, 0], not zero", unchanged: vec![] },
        Probe { class: "values", what: "a stream with `drift_start < train_end`", args: run(&["--manifest", &order_m], "v4"), steps: vec![], status: 1, expect: "drift_start 0 is before train_end 1", unchanged: vec![] },
    ];
    v
}

fn table(probes: &[Probe]) -> String {
    let mut t = String::from("| class | probe | exit | message (in stdout or stderr) |\n|---|---|---|---|\n");
    for p in probes {
        let msg = if p.expect.is_empty() {
            "(ends by itself)".to_string()
        } else {
            format!("`{}`", p.expect.replace('|', "\\|"))
        };
        t.push_str(&format!("| {} | {} | {} | {msg} |\n", p.class, p.what, p.status));
    }
    t
}

#[test]
fn probe_table() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    let dir = std::env::temp_dir().join(format!("jetlink-probes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let probes = probes(&dir);
    // The docs table is this list.
    let doc_path = root().join("docs/reliability.md");
    let doc = std::fs::read_to_string(&doc_path).unwrap();
    let (begin, end) = ("<!-- probes:begin -->\n", "<!-- probes:end -->");
    let (a, b) = (
        doc.find(begin).expect("docs/reliability.md: no probes:begin marker") + begin.len(),
        doc.find(end).unwrap(),
    );
    let want = table(&probes);
    if std::env::var_os("JETLINK_BLESS_PROBES").is_some() {
        std::fs::write(&doc_path, format!("{}{want}{}", &doc[..a], &doc[b..])).unwrap();
    } else {
        assert_eq!(
            &doc[a..b],
            want,
            "docs/reliability.md's probe table differs from tests/probes.rs (JETLINK_BLESS_PROBES=1 rewrites it)"
        );
    }
    let mut failures = Vec::new();
    for (k, p) in probes.iter().enumerate() {
        let before: Vec<Vec<u8>> = p.unchanged.iter().map(|f| std::fs::read(f).unwrap()).collect();
        let o = run(p, &dir, k);
        let mut why = Vec::new();
        match o.status {
            None => why.push("did not end in time (hang)".to_string()),
            Some(c) if c != p.status => why.push(format!("exit {c}, expected {}", p.status)),
            _ => {}
        }
        if o.err.contains("panicked") {
            why.push("panicked".into());
        }
        if !(o.out.contains(p.expect) || o.err.contains(p.expect)) {
            why.push(format!("no {:?} in its output", p.expect));
        }
        if o.rss_kb > MAX_RSS_KB {
            why.push(format!("peak memory {} MB", o.rss_kb / 1024));
        }
        for (f, b) in p.unchanged.iter().zip(&before) {
            if std::fs::read(f).ok().as_ref() != Some(b) {
                why.push(format!("changed {}", f.display()));
            }
        }
        println!("probe {k:2} [{}] {}: exit {:?}, {} MB peak", p.class, p.what, o.status, o.rss_kb / 1024);
        if !why.is_empty() {
            failures.push(format!(
                "{} ({}): {}\nstdout: {}\nstderr: {}",
                p.what,
                p.class,
                why.join("; "),
                o.out,
                o.err
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} probes failed:\n{}",
        failures.len(),
        probes.len(),
        failures.join("\n\n")
    );
    let _ = std::fs::remove_dir_all(&dir);
}
