//! Issue 19 (hardening): rollback protection, the signature binding the manifest's behaviour, and a
//! table of bad inputs run against the release binary: one case per line (arguments, expected error
//! text, exit status). No case may panic, abort, hang, exit 0 on lost data, or leave a partial file.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use jetlink::bundle::{Bundle, BundleError};
use jetlink::manifest::{Manifest, ViewOp};
use jetlink::signing::{self, RollbackState};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetlink-hardening-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn demo_manifest() -> Manifest {
    Manifest::load(&root().join("demo/manifest.toml")).unwrap()
}

fn board() -> &'static jetlink::board::Board {
    jetlink::board::by_name("host-sim").unwrap()
}

/// A signed copy of the demo bundle with another version.
fn demo_bundle_version(dir: &Path, version: u64) -> PathBuf {
    let mut b = Bundle::load(&root().join("demo/demo.bundle")).unwrap();
    b.version = version;
    let key = signing::read_private_key(&root().join("demo/keys/demo-insecure.key")).unwrap();
    let signed = signing::sign_bundle(&b.to_bytes().unwrap(), &key).unwrap();
    let p = dir.join(format!("v{version}.bundle"));
    std::fs::write(&p, signed).unwrap();
    p
}

#[test]
fn rollback_is_refused_with_its_own_reason_code() {
    if jetlink::board::current().name != "host-sim" {
        return; // signed with the demo key, which only host-sim trusts
    }
    let dir = tmp_dir("rollback");
    let m = demo_manifest();
    let state = RollbackState::new(dir.join("state/bundle-version"));
    assert_eq!(state.highest().unwrap(), 0, "no state file: first boot");
    let v3 = demo_bundle_version(&dir, 3);
    let v2 = demo_bundle_version(&dir, 2);
    let v5 = demo_bundle_version(&dir, 5);
    assert_eq!(signing::load_trusted_versioned(&v3, &m, board(), &state).unwrap().version, 3);
    assert_eq!(state.highest().unwrap(), 3);
    assert_eq!(std::fs::read_to_string(state.path()).unwrap(), "jetlink-bundle-version 3\n");
    // The same version again is fine (a restart); an older one is refused and changes nothing.
    signing::load_trusted_versioned(&v3, &m, board(), &state).unwrap();
    let e = signing::load_trusted_versioned(&v2, &m, board(), &state).unwrap_err();
    assert!(matches!(e, BundleError::Rollback { version: 2, highest: 3, .. }), "{e}");
    assert_eq!(e.reason_code(), 14);
    assert!(e.to_string().contains("rollback refused: bundle version 2 is older than version 3"), "{e}");
    assert_eq!(state.highest().unwrap(), 3);
    signing::load_trusted_versioned(&v5, &m, board(), &state).unwrap();
    assert_eq!(state.highest().unwrap(), 5);
    assert_eq!(signing::load_trusted_versioned(&v3, &m, board(), &state).unwrap_err().reason_code(), 14);
    // A damaged state file is an error (code 15), never "version 0".
    std::fs::write(state.path(), "garbage").unwrap();
    let e = signing::load_trusted_versioned(&v5, &m, board(), &state).unwrap_err();
    assert_eq!(e.reason_code(), 15, "{e}");
    // No temporary file is left beside the state file: only its lock file (kept, see
    // `RollbackState::accept_version`).
    let mut left: Vec<_> = std::fs::read_dir(dir.join("state"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["bundle-version", "bundle-version.lock"]);
}

#[test]
fn the_signature_binds_the_manifest_behaviour_and_names_the_field() {
    let m = demo_manifest();
    let b = Bundle::load(&root().join("demo/demo.bundle")).unwrap();
    b.check_manifest(&m).unwrap();
    let changes: [(&str, fn(&mut Manifest)); 7] = [
        ("view", |m| m.models[0].view.push(ViewOp::Invert {})),
        ("input_shape", |m| m.models[1].input_shape[0] = 2),
        ("tolerance", |m| m.models[7].tolerance = Some(0.5)),
        ("importance", |m| m.models[2].importance = 3.0),
        ("cost", |m| m.models[4].cost.latency_us += 1.0),
        ("size", |m| m.models[5].size += 1),
        ("kind", |m| m.models[5].kind = jetlink::manifest::OutputKind::Regression),
    ];
    for (field, change) in changes {
        let mut m2 = m.clone();
        change(&mut m2);
        let e = b.check_manifest(&m2).unwrap_err();
        assert_eq!(e.reason_code(), 8, "{field}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(&format!("{field:?}")) || field == "size" || field == "kind",
            "{field}: {text}"
        );
        assert!(text.contains("model \""), "{field}: {text}");
    }
    // Pinned ONNX bytes are what is hashed: a changed byte in memory is refused.
    let mut m3 = m.clone();
    m3.pin_onnx().unwrap();
    b.check_manifest(&m3).unwrap();
    let mut bytes = (*m3.models[0].onnx_bytes.clone().unwrap()).clone();
    bytes[10] ^= 1;
    m3.models[0].onnx_bytes = Some(std::sync::Arc::new(bytes));
    let e = b.check_manifest(&m3).unwrap_err().to_string();
    assert!(e.contains("ONNX file") && e.contains("SHA-256"), "{e}");
}

/// A copy of the demo manifest in `dir` whose relative paths point back at the demo, after `edit`.
fn manifest_copy(dir: &Path, edit: impl Fn(String) -> String) -> PathBuf {
    common::write_demo_manifest(&dir.join("manifest.toml"), edit)
}

struct Case {
    args: Vec<String>,
    /// Expected in stderr.
    error: &'static str,
    status: i32,
    /// A file that must not exist afterwards (no partial output).
    no_file: Option<PathBuf>,
    /// A file whose content must be unchanged afterwards.
    unchanged: Option<(PathBuf, Vec<u8>)>,
}

fn run_case(c: &Case) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root())
        .args(&c.args)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // No case may hang: 120 s is far beyond any of them.
    let status = common::wait_or_kill(&mut child, Duration::from_secs(120), &format!("{:?}", c.args));
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"), "{:?} panicked: {err}", c.args);
    assert_eq!(status.code(), Some(c.status), "{:?}: status {status:?}, stderr {err}", c.args);
    assert!(err.contains(c.error), "{:?}: expected {:?} in stderr: {err}", c.args, c.error);
    if let Some(p) = &c.no_file {
        assert!(!p.exists(), "{:?} left {}", c.args, p.display());
    }
    if let Some((p, bytes)) = &c.unchanged {
        assert_eq!(&std::fs::read(p).unwrap(), bytes, "{:?} changed {}", c.args, p.display());
    }
}

/// `jetlink ARGS` from the repository root, to completion (no backtraces in its messages).
fn jetlink_out<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root())
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap()
}

/// `jetlink run ARGS` with its state file and its telemetry (a file) in `dir`.
fn run_in(dir: &Path, args: &[&str]) -> std::process::Output {
    let state = dir.join("state").display().to_string();
    let serial = format!("file:{}", dir.join("t.bin").display());
    let all: Vec<&str> = ["run"]
        .into_iter()
        .chain(args.iter().copied())
        .chain(["--state-file", &state, "--serial", &serial])
        .collect();
    jetlink_out(&all)
}

#[test]
fn bad_inputs_table() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    let dir = tmp_dir("table");
    let d = |n: &str| dir.join(n).display().to_string();
    let state = d("state");
    let junk = dir.join("junk.txt");
    std::fs::write(&junk, b"not telemetry, maybe a manifest").unwrap();
    let junk_bytes = std::fs::read(&junk).unwrap();
    let key = dir.join("exists.key");
    std::fs::write(&key, b"an existing key").unwrap();
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    let v1 = demo_bundle_version(&dir, 1);
    std::fs::write(dir.join("newer-state"), "jetlink-bundle-version 9\n").unwrap();
    std::fs::write(dir.join("plus-state"), "jetlink-bundle-version +1\n").unwrap();
    let view = manifest_copy(&tmp_dir("table-view"), |t| {
        t.replacen("{ op = \"invert\" }", "{ op = \"pool\", k = 1 }", 1)
    });
    let huge = manifest_copy(&tmp_dir("table-huge"), |t| {
        t.replacen("view = [", "view = [ { op = \"upsample\", k = 4000000000 },", 1)
    });
    let pad = manifest_copy(&tmp_dir("table-pad"), |t| {
        t.replacen(
            "view = [",
            "view = [ { op = \"pad\", top = 4294967295, bottom = 2, left = 0, right = 0, value = 0.0 },",
            1,
        )
    });
    let weight = manifest_copy(&tmp_dir("table-weight"), |t| {
        t.replacen("weight_bytes = ", "weight_bytes = 18446744073709551615 # ", 1)
    });
    let size = manifest_copy(&tmp_dir("table-size"), |t| t.replacen("size = 10", "size = 4294967295", 1));
    let latency =
        manifest_copy(&tmp_dir("table-latency"), |t| t.replacen("latency_us = ", "latency_us = -1.0 # ", 1));
    let huge_latency = manifest_copy(&tmp_dir("table-latency-huge"), |t| {
        t.replacen("latency_us = ", "latency_us = 1e308 # ", 1)
    });
    // Outputs by the rule: bench reports over a FIFO or a user's file, the build's reports, symlinks.
    let bench_fifo = dir.join("bench-fifo");
    std::fs::create_dir_all(&bench_fifo).unwrap();
    assert!(Command::new("mkfifo").arg(bench_fifo.join("loop.json")).status().unwrap().success());
    let bench_junk = dir.join("bench-junk");
    std::fs::create_dir_all(&bench_junk).unwrap();
    std::fs::write(bench_junk.join("loop.json"), b"my notes").unwrap();
    let bench_theirs = dir.join("bench-theirs");
    std::fs::create_dir_all(&bench_theirs).unwrap();
    std::fs::write(bench_theirs.join("loop.json"), b"{\"mine\": true}").unwrap();
    // A 0-pixel PGM among the images: no frame, refused (not resized to black).
    let zero_width = dir.join("zero-width");
    std::fs::create_dir_all(&zero_width).unwrap();
    std::fs::write(zero_width.join("000.pgm"), b"P5\n0 28\n255\n").unwrap();
    std::fs::write(dir.join("rb.scores.md"), b"my notes").unwrap();
    let link = dir.join("link.jlr");
    std::os::unix::fs::symlink(dir.join("nowhere"), &link).unwrap();
    // Inputs: an image folder whose first image is a FIFO; a FIFO as a video file.
    let fifo_images = dir.join("fifo-images");
    std::fs::create_dir_all(&fifo_images).unwrap();
    assert!(Command::new("mkfifo").arg(fifo_images.join("000.png")).status().unwrap().success());
    // A folder of images with one that cannot be read: the run goes on, counts it, exits 4.
    let lossy = dir.join("lossy-images");
    std::fs::create_dir_all(&lossy).unwrap();
    for i in 0..4 {
        image::GrayImage::new(28, 28).save(lossy.join(format!("{i:03}.png"))).unwrap();
    }
    std::fs::write(lossy.join("002.png"), b"").unwrap();
    // A model file whose declared input is not the manifest's input_shape (ge5 takes 196 values,
    // parity's entry says 400).
    let other_input = manifest_copy(&tmp_dir("table-input-shape"), |t| {
        t.replacen("models/parity.onnx", "models/ge5.onnx", 1)
    });
    std::fs::write(
        dir.join("gz.bundle"),
        [&[0x1f, 0x8b, 8, 0, 0xff, b'J', b'L', 0][..], &[0u8; 100]].concat(),
    )
    .unwrap();
    std::fs::write(dir.join("twice-boards"), "cam-1\n# a comment\ncam-1\n").unwrap();
    let zeros = dir.join("zeros.bin");
    std::fs::write(&zeros, vec![0u8; 4096]).unwrap();
    // Inputs a command must not replace with its output.
    let own_manifest = manifest_copy(&tmp_dir("table-own"), |t| t);
    let own_manifest_bytes = std::fs::read(&own_manifest).unwrap();
    let own_key = dir.join("own.key");
    std::fs::copy(root().join("demo/keys/demo-insecure.key"), &own_key).unwrap();
    let own_key_bytes = std::fs::read(&own_key).unwrap();
    let own_images = dir.join("own-images");
    std::fs::create_dir_all(&own_images).unwrap();
    for i in 0..3 {
        image::GrayImage::from_pixel(28, 28, image::Luma([40 * i as u8]))
            .save(own_images.join(format!("{i:03}.png")))
            .unwrap();
    }
    let own_rec = dir.join("own.jlr.gz");
    std::fs::copy(root().join("demo/reference.jlr.gz"), &own_rec).unwrap();
    let own_rec_bytes = std::fs::read(&own_rec).unwrap();
    let own_image_bytes = std::fs::read(own_images.join("001.png")).unwrap();
    let tiny_std = manifest_copy(&tmp_dir("table-std"), |t| {
        t.replacen(
            "{ op = \"normalize\", mean = 0.0, std = 1.0 }",
            "{ op = \"normalize\", mean = 0.0, std = 1e-45 }",
            1,
        )
    });
    let invert_k = manifest_copy(&tmp_dir("table-invert"), |t| {
        t.replacen("{ op = \"invert\" }", "{ op = \"invert\", k = 1 }", 1)
    });
    let unnamed =
        manifest_copy(&tmp_dir("table-unnamed"), |t| t.replacen("name = \"digit_mlp\"", "name = \" \"", 1));
    let long_name = manifest_copy(&tmp_dir("table-long-name"), |t| {
        t.replacen("name = \"digit_mlp\"", &format!("name = \"{}\"", "m".repeat(5000)), 1)
    });
    std::fs::write(dir.join("long-state"), "x".repeat(100_000)).unwrap();
    std::fs::write(dir.join("empty-password"), "").unwrap();
    std::fs::write(dir.join("no-boards"), "# none yet\n\n").unwrap();
    std::fs::write(dir.join("bad-group-boards"), "cam-1 north\ncam-2 no/rth\n").unwrap();
    std::fs::write(dir.join("extra-boards"), "cam-1 north south\n").unwrap();
    std::fs::write(dir.join("linked-state"), "jetlink-bundle-version 0\n").unwrap();
    std::os::unix::fs::symlink(dir.join("linked-state"), dir.join("state-link")).unwrap();
    // A bundle reached through a link: signing it in place is refused, naming the bundle.
    std::fs::copy(root().join("demo/demo.bundle"), dir.join("real.bundle")).unwrap();
    std::os::unix::fs::symlink(dir.join("real.bundle"), dir.join("link.bundle")).unwrap();
    std::fs::write(dir.join("huge-state"), "jetlink-bundle-version 99999999999999999999999\n").unwrap();
    // A recording with bytes after its gzip stream.
    let reference = std::fs::read(root().join("demo/reference.jlr.gz")).unwrap();
    std::fs::write(dir.join("tail.jlr.gz"), [&reference[..], b"garbage"].concat()).unwrap();
    // Damaged telemetry for `jetlink monitor` (docs/wire-format.md, "Receiving").
    let w = damaged_wire(&dir);
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    #[rustfmt::skip]
    let cases = vec![
        // numeric flags, validated at parse time (clap exits 2)
        Case { args: s(&["monitor", "--idle-exit", "NaN", "x"]), error: "is not a finite number in 0..=1000000", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["monitor", "--idle-exit", "inf", "x"]), error: "is not a finite number", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["monitor", "--idle-exit=-1", "x"]), error: "is not a finite number", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["bench", "loop", "--ticks", "18446744073709551615"]), error: "not in 1..=10000000", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "0"]), error: "not in 1..=1000000", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["run", "--frames", "0"]), error: "--frames", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["bench", "mlink", "--budgets", "150%"]), error: "a share of the board's budget must be in (0, 100%]", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["bench", "mlink", "--budgets", "nan%"]), error: "a share of the board's budget must be in (0, 100%]", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["bench", "mlink", "--policies", "optimal,nonsense"]), error: "--policies \"nonsense\": unknown policy", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--sysfs-root", &d("sys"), "--serial", &format!("file:{}", d("sys.bin"))]), error: "not read from sysfs, so the flag would have no effect", status: 1, no_file: Some(dir.join("sys.bin")), unchanged: None },
        Case { args: s(&["build", "--fit-frames", "500..300", "--out", &d("ff.bundle"), "--key", "demo/keys/demo-insecure.key"]), error: "the range is empty", status: 2, no_file: Some(dir.join("ff.bundle")), unchanged: None },
        Case { args: s(&["build", "--fit-frames", "0..99999999", "--out", &d("ff.bundle"), "--key", "demo/keys/demo-insecure.key"]), error: "--fit-frames 0..99999999: the stream has", status: 1, no_file: Some(dir.join("ff.bundle")), unchanged: None },
        Case { args: s(&["monitor", "--force", "x"]), error: "--csv", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["build", "--bundle-version", "18446744073709551615", "--out", &d("bv.bundle"), "--key", "demo/keys/demo-insecure.key"]), error: "not in 1..=4294967295", status: 2, no_file: Some(dir.join("bv.bundle")), unchanged: None },
        Case { args: s(&["build", "--bundle-version", "0", "--out", &d("bv.bundle"), "--key", "demo/keys/demo-insecure.key"]), error: "not in 1..=4294967295", status: 2, no_file: Some(dir.join("bv.bundle")), unchanged: None },
        Case { args: s(&["sign", "--key", "demo/keys/demo-insecure.key", &d("link.bundle")]), error: "bundle (signed in place) ", status: 1, no_file: None, unchanged: Some((dir.join("real.bundle"), std::fs::read(root().join("demo/demo.bundle")).unwrap())) },
        Case { args: s(&["bench", "loop", "--ticks", "10", "--out-dir", &d("link.jlr")]), error: "link.jlr is a symbolic link to", status: 1, no_file: None, unchanged: None },
        // Flags that would have no effect are refused, naming them.
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("fl.bin")), "--username", "bob"]), error: "--username applies only when joining a fleet", status: 1, no_file: Some(dir.join("fl.bin")), unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("fl.bin")), "--fleet-key", "zz"]), error: "--fleet-key applies only when joining a fleet", status: 1, no_file: Some(dir.join("fl.bin")), unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("fl.bin")), "--group", "north"]), error: "--group applies only when joining a fleet", status: 1, no_file: Some(dir.join("fl.bin")), unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("fl.bin")), "--reference-aligned"]), error: "--reference-aligned applies only with a --source other than `stream`", status: 1, no_file: Some(dir.join("fl.bin")), unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--labels", "uniform", "--uncertainty-sampling"]), error: "cannot be used with '--uncertainty-sampling'", status: 2, no_file: None, unchanged: None },
        // A flag the chosen benchmark does not read is refused, not silently ignored.
        Case { args: s(&["bench", "links", "--ticks", "5", "--out-dir", &d("bf")]), error: "--ticks does not apply to `jetlink bench links`: it is read by `bench loop` only", status: 1, no_file: Some(dir.join("bf/links.json")), unchanged: None },
        Case { args: s(&["bench", "seq", "--bundle", "x.bundle", "--out-dir", &d("bf")]), error: "--bundle does not apply to `jetlink bench seq`", status: 1, no_file: Some(dir.join("bf/seq.json")), unchanged: None },
        Case { args: s(&["bench", "adapt-gain", "--frames", "3", "--out-dir", &d("bf")]), error: "--frames does not apply to `jetlink bench adapt-gain`: it is read by `bench mlink` only", status: 1, no_file: Some(dir.join("bf/adapt-gain.json")), unchanged: None },
        Case { args: s(&["monitor", "--baud", "0", "x"]), error: "--baud", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["fleet", "aggregate", "--rounds", "0"]), error: "0 is not in 1..=", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("b1.bin")), "--budget", "1"]), error: "is below the smallest model's memory", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &d("plus-state"), "--serial", &format!("file:{}", d("b2.bin"))]), error: "not a jetlink state file", status: 1, no_file: None, unchanged: None },
        // serial sinks
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &d("no-such-tty")]), error: "does not exist", status: 1, no_file: Some(dir.join("no-such-tty")), unchanged: None },
        // outputs by the one rule (src/output.rs): only a file of the same kind is replaced, never a device
        Case { args: s(&["sign", "--key", "demo/keys/demo-insecure.key", "demo/demo.bundle", "--out", &junk.display().to_string()]), error: "is not a jetlink bundle; refusing to replace it (--force replaces it)", status: 1, no_file: None, unchanged: Some((junk.clone(), junk_bytes.clone())) },
        Case { args: s(&["record", "--to", "3", "--out", &junk.display().to_string()]), error: "is not a jetlink recording; refusing to replace it", status: 1, no_file: None, unchanged: Some((junk.clone(), junk_bytes.clone())) },
        Case { args: s(&["monitor", &junk.display().to_string(), "--csv", &junk.display().to_string()]), error: "is not a CSV of ticks; refusing to replace it", status: 1, no_file: None, unchanged: Some((junk.clone(), junk_bytes.clone())) },
        Case { args: s(&["build", "--out", "/dev/null", "--key", "demo/keys/demo-insecure.key"]), error: "/dev/null is a character device; refusing to write there", status: 1, no_file: None, unchanged: None },
        // inputs by the one rule (src/input.rs): a FIFO or a device is refused at once, naming it
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("f1.bin")), "--bundle", &d("fifo")]), error: "is a FIFO, not a regular file", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &d("fifo"), "--serial", &format!("file:{}", d("f2.bin"))]), error: "state file", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--manifest", "/dev/zero", "--serial", &format!("file:{}", d("f3.bin"))]), error: "manifest /dev/zero is a character device, not a regular file", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["sign", "--key", "/dev/zero", "demo/demo.bundle", "--out", &d("signed.bundle")]), error: "/dev/zero is a character device", status: 1, no_file: Some(dir.join("signed.bundle")), unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &junk.display().to_string()]), error: "is not a tty or FIFO (a regular file)", status: 1, no_file: None, unchanged: Some((junk.clone(), junk_bytes.clone())) },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", junk.display())]), error: "is not jetlink telemetry; refusing to overwrite it", status: 1, no_file: None, unchanged: Some((junk.clone(), junk_bytes.clone())) },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &fifo.display().to_string()]), error: "has no reader", status: 1, no_file: None, unchanged: None },
        // telemetry loss: /dev/full accepts nothing; the run completes, says so, exits 3
        Case { args: s(&["run", "--engines", "replay", "--frames", "20", "-q", "--state-file", &state, "--serial", "/dev/full"]), error: "telemetry frames to /dev/full were lost (last error: write: Other: No space left on device (os error 28))", status: 3, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "20", "-q", "--state-file", &state, "--serial", "/dev/full"]), error: "telemetry to /dev/full is being lost (write: Other: No space left on device (os error 28))", status: 3, no_file: None, unchanged: None },
        // bundles
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &d("newer-state"), "--serial", &format!("file:{}", d("s1.bin")), "--bundle", &v1.display().to_string()]), error: "refused (reason code 14)", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("s2.bin")), "--manifest", &view.display().to_string()]), error: "manifest field \"view\" differs", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["sign", "--key", "demo/keys/demo-insecure.key", "--out", &d("signed.bundle"), &junk.display().to_string()]), error: "not a valid bundle", status: 1, no_file: Some(dir.join("signed.bundle")), unchanged: None },
        // files written atomically / never overwritten
        Case { args: s(&["keygen", "--out", &key.display().to_string()]), error: "the file exists; not overwriting a key", status: 1, no_file: None, unchanged: Some((key.clone(), b"an existing key".to_vec())) },
        Case { args: s(&["keygen", "--out", &d("no-dir/k.key")]), error: "does not exist", status: 1, no_file: Some(dir.join("no-dir/k.key")), unchanged: None },
        // a policy that runs nothing at the run's budget says so, naming the K that can
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("iv.bin")), "--policy", "interval-2"]), error: "cannot be spread over 2 ticks of at most 2 models each; interval-4 or more can spread them within it", status: 0, no_file: None, unchanged: None },
        Case { args: s(&["stream", &zero_width.display().to_string(), "--train", "1", "--height", "28", "--width", "28", "--channels", "1", "--out", &d("zw.jls")]), error: "the image is 0x28, no pixels", status: 1, no_file: Some(dir.join("zw.jls")), unchanged: None },
        Case { args: s(&["keygen", "--out", &dir.display().to_string()]), error: "is a directory, not a new key file's path", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", &format!("file:{}", d("tk.bin")), "--trust-key", &"0".repeat(64)]), error: "a small-order point, not a usable Ed25519 public key", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["build", "--recording", &d("tail.jlr.gz"), "--out", &d("tail.bundle"), "--key", "demo/keys/demo-insecure.key"]), error: "has 7 bytes after the end of its gzip stream", status: 1, no_file: Some(dir.join("tail.bundle")), unchanged: None },
        // sizes from files: checked arithmetic naming model and op, no huge allocation
        Case { args: s(&["models", "--frames", "1", "--manifest", &huge.display().to_string()]), error: "upsample", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &other_input.display().to_string()]), error: "model \"parity\": the manifest's input_shape [1, 400] does not match the input the file declares, [1, 196]", status: 1, no_file: None, unchanged: None },
        // No output replaces a file the command reads, even with --force: the manifest, the
        // private key, an input image.
        Case { args: s(&["record", "--manifest", &own_manifest.display().to_string(), "--from", "0", "--to", "3", "-o", &own_manifest.display().to_string(), "--force"]), error: "is the manifest this command reads; refusing to replace it (even with --force)", status: 1, no_file: None, unchanged: Some((own_manifest.clone(), own_manifest_bytes.clone())) },
        Case { args: s(&["sign", "--key", &own_key.display().to_string(), "demo/demo.bundle", "-o", &own_key.display().to_string(), "--force"]), error: "is the --key private key file this command reads; refusing to replace it (even with --force)", status: 1, no_file: None, unchanged: Some((own_key.clone(), own_key_bytes.clone())) },
        Case { args: s(&["stream", "-o", &own_images.join("001.png").display().to_string(), "--force", "--train", "2", &own_images.display().to_string()]), error: "is the image this command reads; refusing to replace it (even with --force)", status: 1, no_file: None, unchanged: Some((own_images.join("001.png"), own_image_bytes.clone())) },
        // A file that is not a bundle: its magic shown as escaped bytes.
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--bundle", &d("gz.bundle")]), error: "magic \"\\x1f\\x8b\\x08\\x00\\xffJL\\x00\"", status: 1, no_file: None, unchanged: None },
        // record: a range past the stream says which bound was given and which defaulted.
        Case { args: s(&["record", "--manifest", &own_manifest.display().to_string(), "--from", "2000", "-o", &d("r.jlr")]), error: "--from 2000 and the end of the stream's training part (frame 2000, the default --to): need from < to <= 15000", status: 1, no_file: Some(dir.join("r.jlr")), unchanged: None },
        // A missing bundle named once; an image source without a folder.
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--bundle", &d("no-such.bundle")]), error: &*Box::leak(format!("Caused by:\n    bundle {}: cannot read it: No such file or directory", d("no-such.bundle")).into_boxed_str()), status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--frames", "3", "-q", "--state-file", &state, "--source", "images:"]), error: "--source images: needs a folder", status: 1, no_file: None, unchanged: None },
        // Flags with no effect: labelling without adaptation, a broker timeout without a broker.
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--no-adapt", "--label-every", "3"]), error: "the argument '--no-adapt' cannot be used with '--label-every <LABEL_EVERY>'", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--connect-timeout-s", "5"]), error: "--connect-timeout-s applies only when joining a fleet", status: 1, no_file: None, unchanged: None },
        // A simulated budget above the simulated board's memory.
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--sim-model-budget", "1099511627776"]), error: "--sim-model-budget 1099511627776: board host-sim has 268435456 bytes of memory, 16777216 of them reserved; its model budget can be at most 251658240 bytes", status: 1, no_file: None, unchanged: None },
        // monitor: bytes without one telemetry frame are not a success; --baud on a file has no
        // effect; --csv - is not a file.
        Case { args: s(&["monitor", &zeros.display().to_string()]), error: "4096 bytes read and not one telemetry frame among them", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["monitor", "--baud", "9600", &zeros.display().to_string()]), error: "--baud sets a tty's line speed;", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["monitor", "--csv", "-", &zeros.display().to_string()]), error: "--csv -: give a file path", status: 1, no_file: Some(root().join("-")), unchanged: None },
        // A frame too large to hold decoded is refused before any is read (it aborted past 2 GB).
        Case { args: s(&["stream", "-o", &d("huge.jls"), "--train", "1", "--height", "20000", "--width", "20000", "--channels", "3", &own_images.display().to_string()]), error: "a 20000x20000x3 frame is 1200000000 bytes, above the limit of 536870912 bytes for a frame", status: 1, no_file: Some(dir.join("huge.jls")), unchanged: None },
        // build over its own recording: refused before any training.
        Case { args: s(&["build", "--unsigned", "--manifest", "demo/manifest.toml", "--recording", &own_rec.display().to_string(), "-o", &own_rec.display().to_string(), "--force", "--epochs", "1"]), error: "is the recording this command reads; refusing to replace it (even with --force)", status: 1, no_file: None, unchanged: Some((own_rec.clone(), own_rec_bytes.clone())) },
        // A stream file given to `stream` is said to be one (it was taken for a video).
        Case { args: s(&["stream", "demo/stream.jls.gz", "-o", &d("again.jls"), "--train", "10"]), error: "demo/stream.jls.gz is a jetlink stream already", status: 1, no_file: Some(dir.join("again.jls")), unchanged: None },
        // A view error names the manifest file, not only the model.
        Case { args: s(&["models", "--frames", "1", "--manifest", &huge.display().to_string()]), error: Box::leak(format!("manifest {}: model \"digit_mlp\": view", huge.display()).into_boxed_str()), status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &pad.display().to_string()]), error: "pad", status: 1, no_file: None, unchanged: None },
        // manifest sizes and costs (found by the manifest fuzz target's checks): bounded, named
        Case { args: s(&["models", "--frames", "1", "--manifest", &weight.display().to_string()]), error: "cost.weight_bytes 18446744073709551615 is above the limit", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &size.display().to_string()]), error: "size 4294967295 is above the limit", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &latency.display().to_string()]), error: "cost.latency_us -1 must be finite", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &huge_latency.display().to_string()]), error: "at most 1125899906842624", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["bench", "mlink", "--policies", ",", "--out-dir", &d("bp")]), error: "names no policy", status: 1, no_file: Some(dir.join("bp/mlink.json")), unchanged: None },
        Case { args: s(&["bench", "mlink", "--policies", "", "--out-dir", &d("bp")]), error: "names no policy", status: 1, no_file: Some(dir.join("bp/mlink.json")), unchanged: None },
        Case { args: s(&["run", "-q", "--frames", "2", "--state-file", &state, "--serial", &format!("file:{}", d("b300.bin")), "--budget", "1e-300%"]), error: "(from --budget 1e-300% of board host-sim's", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "-q", "--frames", "2", "--state-file", &state, "--serial", &format!("file:{}", d("tk.bin")), "--engines", "replay", "--budget", "5000", "--labels", "top-k"]), error: "the top-k label window (5580 bytes: 5 frames and their outputs) leaves 0 bytes", status: 0, no_file: None, unchanged: None },
        Case { args: s(&["record", "--to", "3", "--out", &format!("{}/sub/r.jlr", junk.display())]), error: "junk.txt is a file, not a folder", status: 1, no_file: None, unchanged: Some((junk.clone(), junk_bytes.clone())) },
        Case { args: s(&["run", "-q", "--frames", "2", "--state-file", &format!("{}/state", junk.display()), "--serial", &format!("file:{}", d("junk-state.bin"))]), error: "junk.txt is a file, not a folder", status: 1, no_file: None, unchanged: Some((junk.clone(), junk_bytes.clone())) },
        Case { args: s(&["run", "--engines", "replay", "-q", "--frames", "2", "--state-file", &state, "--serial", &format!("file:{}", d("src2.bin")), "--source", &format!("images:{}", lossy.display())]), error: "a --source other than the stream gives other frames (--reference-aligned says", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["stream", &lossy.display().to_string(), "--out", &d("lossy.jls"), "--train", "1"]), error: "lossy-images/002.png: decoding", status: 1, no_file: Some(dir.join("lossy.jls")), unchanged: None },
        Case { args: s(&["bench", "mlink", "--budgets", "50%,0.5", "--out-dir", &d("bd")]), error: "--budgets \"0.5\": the same share as an earlier one (50%)", status: 1, no_file: Some(dir.join("bd/mlink.json")), unchanged: None },
        Case { args: s(&["bench", "mlink", "--policies", "greedy,interval-2,greedy", "--out-dir", &d("bd")]), error: "--policies: \"greedy\" is given twice", status: 1, no_file: Some(dir.join("bd/mlink.json")), unchanged: None },
        Case { args: s(&["fleet", "status", "--broker", "127.0.0.1:1", "--fleet", "lab", "--username", "u", "--password-file", &d("empty-password")]), error: "empty-password: its first line is empty", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["fleet", "aggregate", "--broker", "127.0.0.1:1", "--fleet", "lab", "--key", "demo/keys/demo-insecure.key", "--boards", &d("no-boards")]), error: "no-boards: lists no board", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["fleet", "aggregate", "--broker", "127.0.0.1:1", "--fleet", "lab", "--key", "demo/keys/demo-insecure.key", "--boards", &d("twice-boards")]), error: "twice-boards line 3: board \"cam-1\" is listed twice", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["fleet", "aggregate", "--broker", "127.0.0.1:1", "--fleet", "lab", "--key", "demo/keys/demo-insecure.key", "--boards", &d("bad-group-boards")]), error: "bad-group-boards line 2: group \"no/rth\": use 1 to 32 letters", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["fleet", "aggregate", "--broker", "127.0.0.1:1", "--fleet", "lab", "--key", "demo/keys/demo-insecure.key", "--boards", &d("extra-boards")]), error: "extra-boards line 1: \"south\" after the board id and its group", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["fleet", "aggregate", "--min-boards", "0"]), error: "0 is not in 1..", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["bench", "mlink", "--budgets", "1e-300%", "--out-dir", &d("bp")]), error: "below the smallest share a row can run", status: 1, no_file: Some(dir.join("bp/mlink.json")), unchanged: None },
        Case { args: s(&["bench", "mlink", "--sim-model-budget", "0", "--out-dir", &d("bp")]), error: "--sim-model-budget", status: 2, no_file: Some(dir.join("bp/mlink.json")), unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &unnamed.display().to_string()]), error: "model[0].name: a model needs a name", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &long_name.display().to_string()]), error: "mmmm\" … has 5000 characters; a name has at most 128", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &d("state-link"), "--serial", &format!("file:{}", d("sl.bin"))]), error: "state-link: is a symbolic link; refusing to read or write the state through it", status: 1, no_file: None, unchanged: Some((dir.join("linked-state"), b"jetlink-bundle-version 0\n".to_vec())) },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &d("huge-state"), "--serial", &format!("file:{}", d("hs.bin"))]), error: "version 99999999999999999999999 is above the largest", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &d("long-state"), "--serial", &format!("file:{}", d("ls.bin"))]), error: "xxxxxxxx\" …)", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["run", "--engines", "replay", "--frames", "3", "-q", "--state-file", &state, "--serial", "file:"]), error: "--serial file: needs a path", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &tiny_std.display().to_string()]), error: "std 0.000000000000000000000000000000000000000000001 map the values 0..255 past the largest finite number", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["models", "--frames", "1", "--manifest", &invert_k.display().to_string()]), error: "unknown field `k`", status: 1, no_file: None, unchanged: None },
        // policies' K is bounded (a cycle of K phases is built for it)
        Case { args: s(&["run", "--policy", "interval-4294967295"]), error: "with K from 1 to 1000", status: 2, no_file: None, unchanged: None },
        Case { args: s(&["bench", "mlink", "--policies", "refresh-1001", "--out-dir", &d("bk")]), error: "unknown policy", status: 1, no_file: Some(dir.join("bk/mlink.json")), unchanged: None },
        // bench and build reports, symlinks and the monitor's own input, by the output rule
        Case { args: s(&["bench", "loop", "--ticks", "10", "--out-dir", &bench_fifo.display().to_string()]), error: "loop.json is a FIFO; refusing to write there", status: 1, no_file: None, unchanged: None },
        Case { args: s(&["bench", "loop", "--ticks", "10", "--out-dir", &bench_junk.display().to_string()]), error: "loop.json exists and is not a jetlink bench report; refusing to replace it (--force replaces it)", status: 1, no_file: None, unchanged: Some((bench_junk.join("loop.json"), b"my notes".to_vec())) },
        Case { args: s(&["bench", "loop", "--ticks", "10", "--out-dir", &bench_theirs.display().to_string()]), error: "loop.json exists and is not a jetlink bench report", status: 1, no_file: None, unchanged: Some((bench_theirs.join("loop.json"), b"{\"mine\": true}".to_vec())) },
        Case { args: s(&["build", "--out", &d("rb.bundle"), "--key", "demo/keys/demo-insecure.key"]), error: "rb.scores.md exists and is not a link scores report", status: 1, no_file: Some(dir.join("rb.bundle")), unchanged: Some((dir.join("rb.scores.md"), b"my notes".to_vec())) },
        Case { args: s(&["record", "--to", "3", "--out", &link.display().to_string(), "--force"]), error: "is a symbolic link; refusing to write over it or through it", status: 1, no_file: Some(dir.join("nowhere")), unchanged: None },
        Case { args: s(&["monitor", &w.clean, "--csv", &w.clean, "--force"]), error: "is the input", status: 1, no_file: None, unchanged: Some((PathBuf::from(&w.clean), std::fs::read(&w.clean).unwrap())) },
        // inputs that would block: refused at once
        Case { args: s(&["stream", &lossy.display().to_string(), "--out", &d("q.jls"), "--train", "1", "--quality", "5"]), error: "--quality 5 applies to JPEG frames; this stream is raw", status: 1, no_file: Some(dir.join("q.jls")), unchanged: None },
        Case { args: s(&["stream", &fifo_images.display().to_string(), "--out", &d("fi.jls"), "--train", "1"]), error: "000.png is a FIFO, not a regular file", status: 1, no_file: Some(dir.join("fi.jls")), unchanged: None },
        Case { args: s(&["run", "-q", "--frames", "3", "--state-file", &state, "--serial", &format!("file:{}", d("src.bin")), "--source", &fifo.display().to_string()]), error: "is a FIFO, not a video file", status: 1, no_file: None, unchanged: None },
        // frames lost: counted, the run completes, exit 4
        Case { args: s(&["run", "-q", "--frames", "4", "--state-file", &state, "--serial", &format!("file:{}", d("lossy.bin")), "--source", &format!("images:{}", lossy.display())]), error: "frames that could not be read: 1, model runs that failed: 0", status: 4, no_file: None, unchanged: None },
        // damaged telemetry: counted, named on stderr, exit 3 (frames lost); a clean file exits 0
        Case { args: s(&["monitor", &w.merged]), error: "telemetry frames lost or not decoded: 1 corrupt", status: 3, no_file: None, unchanged: None },
        Case { args: s(&["monitor", &w.trailing]), error: "1 truncated at the end of the stream", status: 3, no_file: None, unchanged: None },
        Case { args: s(&["monitor", &w.unknown_version]), error: "1 Hello of an unknown protocol version (this monitor reads versions 1 to 2), 2 skipped", status: 3, no_file: None, unchanged: None },
        Case { args: s(&["monitor", &w.oversized]), error: "1 oversized", status: 3, no_file: None, unchanged: None },
        Case { args: s(&["monitor", &w.junk_after_crc]), error: "1 corrupt", status: 3, no_file: None, unchanged: None },
        Case { args: s(&["monitor", &w.clean]), error: "", status: 0, no_file: None, unchanged: None },
    ];
    for c in &cases {
        run_case(c);
    }
}

/// Files of damaged telemetry, each around good frames.
struct DamagedWire {
    clean: String,
    merged: String,
    trailing: String,
    unknown_version: String,
    oversized: String,
    junk_after_crc: String,
}

fn damaged_wire(dir: &Path) -> DamagedWire {
    use jetlink::wire::{Message, Tick, crc16, encode, typical_tick};
    let enc = |m: &Message| {
        let mut b = [0u8; jetlink::wire::MAX_FRAME];
        encode(m, &mut b).unwrap().to_vec()
    };
    let tick = |i: u32| enc(&Message::Tick(Tick { tick: i, frame: i, ..typical_tick() }));
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p.display().to_string()
    };
    let clean = [tick(40), tick(41), tick(42)].concat();
    // Tick 40's delimiter 00 -> 01: 40 and 41 merge into one corrupt frame.
    let mut merged = clean.clone();
    merged[tick(40).len() - 1] = 0x01;
    // A frame without its 0x00 at the end.
    let t = tick(43);
    let trailing = [&clean[..], &t[..t.len() - 1]].concat();
    // A Hello of protocol version 9 (payload 00 09 05 06 07), then two frames it covers.
    let payload = [0x00u8, 0x09, 0x05, 0x06, 0x07];
    let crc = crc16(&payload).to_le_bytes();
    let v9 = [&[0x01u8, 0x07, 0x09, 0x05, 0x06, 0x07][..], &crc[..], &[0x00][..]].concat();
    let unknown = [&v9[..], &tick(1)[..], &tick(2)[..]].concat();
    let oversized = [&[0x55u8; 200][..], &[0][..], &clean[..]].concat();
    // A valid Shed event and its CRC, then two bytes before the 0x00.
    let junk = [0x0Au8, 0x03, 0x01, 0x01, 0x02, 0x03, 0x5B, 0xE8, 0x07, 0x07, 0x00];
    DamagedWire {
        clean: write("clean.bin", &clean),
        merged: write("merged.bin", &merged),
        trailing: write("trailing.bin", &trailing),
        unknown_version: write("unknown-version.bin", &unknown),
        oversized: write("oversized.bin", &oversized),
        junk_after_crc: write("junk-after-crc.bin", &[&junk[..], &clean[..]].concat()),
    }
}

/// `--serial` to a FIFO whose reader goes away during the run: the loop neither hangs nor dies of
/// SIGPIPE; the frames written after are counted as dropped (EPIPE), the summary is printed, and
/// the exit status is 3.
#[test]
fn fifo_reader_going_away_costs_frames_not_the_run() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    use std::io::BufRead;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = tmp_dir("fifo-gone");
    let fifo = dir.join("fifo");
    assert!(Command::new("mkfifo").arg(&fifo).status().unwrap().success());
    // The reader first (non-blocking open: no writer yet), then the run.
    let reader = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(&fifo).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root())
        .args(["run", "--engines", "replay", "--frames", "3000", "-q", "--state-file"])
        .arg(dir.join("state"))
        .arg("--serial")
        .arg(&fifo)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    // "workload ..." is printed once the FIFO is open for writing. Hold the run still, let the
    // reader go, and let it carry on: every frame it writes from then on meets a closed pipe.
    for l in lines.by_ref() {
        let l = l.unwrap();
        stdout.push_str(&l);
        stdout.push('\n');
        if l.starts_with("workload ") {
            break;
        }
    }
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    assert!(child.try_wait().unwrap().is_none(), "the run ended before its reader went away");
    drop(reader);
    unsafe { libc::kill(pid, libc::SIGCONT) };
    let reader_thread = std::thread::spawn(move || {
        let mut s = String::new();
        for l in lines {
            s.push_str(&l.unwrap());
            s.push('\n');
        }
        s
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("the run hung after its FIFO reader went away");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stdout.push_str(&reader_thread.join().unwrap());
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), None, "killed by a signal: {status:?}\n{err}");
    assert_eq!(status.code(), Some(3), "{stdout}\n{err}");
    assert!(err.contains("were lost") && err.contains("BrokenPipe: Broken pipe (os error 32)"), "{err}");
    assert!(stdout.contains("summary over"), "{stdout}");
}

/// SIGHUP with a refused bundle keeps the running one and sends `BundleRejected`; SIGTERM stops at
/// the end of a tick with the summary and the final period summary, exit 0.
#[test]
fn signals_reload_and_stop_cleanly() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    use std::io::BufRead;
    let dir = tmp_dir("signals");
    let bundle = dir.join("b.bundle");
    std::fs::copy(root().join("demo/demo.bundle"), &bundle).unwrap();
    let serial = dir.join("s.bin");
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root())
        .args(["run", "--engines", "tract", "-q", "--state-file"])
        .arg(dir.join("state"))
        .arg("--serial")
        .arg(format!("file:{}", serial.display()))
        .arg("--bundle")
        .arg(&bundle)
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut stdout = String::new();
    for l in lines.by_ref() {
        let l = l.unwrap();
        stdout.push_str(&l);
        stdout.push('\n');
        if l.starts_with("prepared in") {
            break;
        }
    }
    // Replace the bundle with an unsigned one, then ask for a reload: refused, the loop goes on.
    let bytes = std::fs::read(root().join("demo/demo.bundle")).unwrap();
    let body = jetlink::bundle::Envelope::split(&bytes).unwrap().body.to_vec();
    std::fs::write(&bundle, body).unwrap();
    let pid = child.id() as i32;
    unsafe { libc::kill(pid, libc::SIGHUP) };
    // Wait for the refusal to reach the serial file, then stop.
    let mut refused = false;
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(50));
        let mut found = false;
        jetlink::wire::Decoder::new().feed(&std::fs::read(&serial).unwrap_or_default(), |m| {
            if let jetlink::wire::Message::Event(e) = m {
                found |= e.code == jetlink::wire::EventCode::BundleRejected && e.a == 9;
            }
        });
        if found {
            refused = true;
            break;
        }
    }
    assert!(refused, "no BundleRejected after SIGHUP");
    // The signed bundle back, and a reload again: accepted, a new loop on the same line.
    std::fs::write(&bundle, &bytes).unwrap();
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let mut reloaded = false;
    for _ in 0..600 {
        std::thread::sleep(Duration::from_millis(50));
        let mut hellos = 0;
        jetlink::wire::Decoder::new().feed(&std::fs::read(&serial).unwrap_or_default(), |m| {
            hellos += usize::from(matches!(m, jetlink::wire::Message::Hello(_)));
        });
        if hellos == 2 {
            reloaded = true;
            break;
        }
    }
    assert!(reloaded, "no second Hello after SIGHUP with the signed bundle");
    std::thread::sleep(Duration::from_millis(200));
    unsafe { libc::kill(pid, libc::SIGTERM) };
    for l in lines {
        stdout.push_str(&l.unwrap());
        stdout.push('\n');
    }
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{err}");
    assert!(stdout.contains("stopped by a signal (SIGTERM)") && stdout.contains("summary over"), "{stdout}");
    assert!(stdout.contains("1 accepted, 1 refused"), "{stdout}");
    assert!(err.contains("SIGHUP: bundle") && err.contains("refused"), "{err}");
    // The last frame on the line is the final period summary.
    let mut last = None;
    jetlink::wire::Decoder::new().feed(&std::fs::read(&serial).unwrap(), |m| last = Some(m));
    assert!(matches!(last, Some(jetlink::wire::Message::PeriodSummary(_))), "{last:?}");
    // The reloaded loop continues the Tick counter on the same line: it never goes back.
    let mut ticks = Vec::new();
    jetlink::wire::Decoder::new().feed(&std::fs::read(&serial).unwrap(), |m| {
        if let jetlink::wire::Message::Tick(t) = m {
            ticks.push(t.tick);
        }
    });
    assert!(ticks.len() > 2 && ticks.windows(2).all(|w| w[0] < w[1]), "tick numbers went back: {ticks:?}");
}

/// A reference recording that lacks a frame the run delivers: the frame is not scored, and the
/// summary says how many were not (rather than score the rest as if nothing were missing).
#[test]
fn frames_the_reference_lacks_are_counted_in_the_summary() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    let dir = tmp_dir("reference-gap");
    let mut rec = jetlink::recording::Recording::load(&root().join("demo/reference.jlr.gz")).unwrap();
    // Drop the row of one frame near the end of the evaluation frames.
    let drop = rec.frames.len() - 50;
    let stride = rec.values.len() / rec.frames.len();
    rec.frames.remove(drop);
    rec.values.drain(drop * stride..(drop + 1) * stride);
    let gap = dir.join("gap.jlr");
    rec.write_to(std::fs::File::create(&gap).unwrap()).unwrap();
    // The copy's paths are absolute: its reference is the demo's, replaced by the gap's.
    let demo_reference = root().join("demo/reference.jlr.gz").display().to_string();
    let manifest = manifest_copy(&dir, |t| t.replacen(&demo_reference, &gap.display().to_string(), 1));
    assert!(std::fs::read_to_string(&manifest).unwrap().contains(&gap.display().to_string()));
    let from = (rec.frames[drop] - 2).to_string();
    let out = run_in(
        &dir,
        &["--engines", "tract", "--manifest", manifest.to_str().unwrap(), "--from", &from, "--frames", "5"],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("reference gaps         1 frames the reference recording lacks"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A reference with a row for a frame the stream does not have (recorded from another stream) is
/// refused by `build` and `run`, naming the recording, the frame and the stream's length.
#[test]
fn a_reference_longer_than_its_stream_is_refused() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    let dir = tmp_dir("reference-past");
    let mut rec = jetlink::recording::Recording::load(&root().join("demo/reference.jlr.gz")).unwrap();
    let stream = jetlink::stream::Stream::load(&root().join("demo/stream.jls.gz")).unwrap();
    let stride = rec.values.len() / rec.frames.len();
    let last = rec.values[rec.values.len() - stride..].to_vec();
    rec.push(stream.len() as u32, &last);
    let past = dir.join("past.jlr");
    rec.write_to(std::fs::File::create(&past).unwrap()).unwrap();
    let demo_reference = root().join("demo/reference.jlr.gz").display().to_string();
    let manifest = manifest_copy(&dir, |t| t.replacen(&demo_reference, &past.display().to_string(), 1));
    let want = format!("has a row for frame {}, but the stream", stream.len());
    let m = manifest.display().to_string();
    let bundle = dir.join("b.bundle").display().to_string();
    for out in [
        jetlink_out(&["build", "--manifest", &m, "--out", &bundle, "--key", "demo/keys/demo-insecure.key"]),
        run_in(&dir, &["--engines", "replay", "--frames", "3", "-q", "--manifest", &m]),
    ] {
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(&want) && err.contains("past.jlr"), "{err}");
    }
    assert!(!dir.join("b.bundle").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--labels auto` weighs the top-k window against the budget in force, not the board's: under
/// `--budget 5000` the window (5,580 bytes on the demo) would leave no model room, so `auto` takes
/// `uniform` and the models run.
#[test]
fn auto_labels_weigh_the_window_against_the_budget_in_force() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    let dir = tmp_dir("auto-window");
    let out = run_in(&dir, &["--engines", "replay", "-q", "--frames", "20", "--budget", "5000"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("labels                 uniform every 5 ticks"), "{text}");
    assert!(!text.contains("(0 inference"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A recording whose values are finite but too large for the trainer's arithmetic (1e37: its
/// square is not finite) is refused by `build` naming the recording and the model, and no bundle
/// (signed or not) is written.
#[test]
fn a_recording_too_large_to_train_on_is_refused() {
    if jetlink::board::current().name != "host-sim" {
        return;
    }
    let dir = tmp_dir("recording-huge");
    let mut rec = jetlink::recording::Recording::load(&root().join("demo/reference.jlr.gz")).unwrap();
    for v in &mut rec.values {
        *v = 1e37 * (0.5 + *v);
    }
    let huge = dir.join("huge.jlr");
    rec.write_to(std::fs::File::create(&huge).unwrap()).unwrap();
    let bundle = dir.join("b.bundle").display().to_string();
    let out = jetlink_out(&[
        "build",
        "--epochs",
        "1",
        "--unsigned",
        "--recording",
        huge.to_str().unwrap(),
        "--out",
        &bundle,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("huge.jlr gave links that are not usable") && err.contains("its largest value is"),
        "{err}"
    );
    assert!(!dir.join("b.bundle").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// Every output makes its missing folder by one rule (`sign --out` and `monitor --csv` used to
/// refuse where the others made it); an empty telemetry input is said.
#[test]
fn outputs_make_their_missing_folders() {
    let dir = tmp_dir("folders");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetlink"))
            .current_dir(root())
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{args:?}: {err}");
        err
    };
    let signed = dir.join("new/deep/signed.bundle");
    run(&[
        "sign",
        "--key",
        "demo/keys/demo-insecure.key",
        "demo/demo.bundle",
        "--out",
        signed.to_str().unwrap(),
    ]);
    assert!(Bundle::load(&signed).is_ok());
    let empty = dir.join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    let csv = dir.join("new2/ticks.csv");
    let err = run(&["monitor", empty.to_str().unwrap(), "--csv", csv.to_str().unwrap()]);
    assert!(err.contains("nothing was read from") && err.contains("it holds no telemetry"), "{err}");
    assert!(std::fs::read_to_string(&csv).unwrap().starts_with(jetlink::monitor::CSV_HEADER));
    std::fs::remove_dir_all(&dir).unwrap();
}
