//! The fuzz targets on stable Rust: every committed seed in `fuzz/corpus/<target>/` and every past
//! finding (below, one test each) runs through the same checks as `cargo fuzz run <target>`
//! (`fuzz/checks.rs`). `.ci/fuzz.sh` runs this, and the targets themselves where cargo-fuzz is
//! installed. Regenerate the seeds with
//! `cargo test --release --test fuzz_regressions -- --ignored write_seed_corpus`.

use std::path::{Path, PathBuf};

#[path = "../fuzz/checks.rs"]
mod checks;

use jetlink::wire::{self, Event, EventCode, Hello, Message, PeriodSummary};

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target)
}

/// Every file of a target's committed corpus (the `seed-*` files; a local fuzzing run adds others,
/// which are run too when present).
fn run_corpus(target: &str, check: fn(&[u8])) -> usize {
    let dir = corpus(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        let r = std::panic::catch_unwind(|| check(&data));
        assert!(r.is_ok(), "{target}: {} fails its check", p.display());
        n += 1;
    }
    n
}

#[test]
fn bundle_corpus() {
    assert!(run_corpus("bundle", checks::bundle) >= 4);
}

#[test]
fn wire_corpus() {
    assert!(run_corpus("wire", checks::wire) >= 3);
}

#[test]
fn board_corpus() {
    assert!(run_corpus("board", checks::board) >= 5);
}

#[test]
fn manifest_corpus() {
    assert!(run_corpus("manifest", checks::manifest) >= 2);
}

#[test]
fn stream_corpus() {
    assert!(run_corpus("stream", checks::stream) >= 2);
}

#[test]
fn fleet_corpus() {
    assert!(run_corpus("fleet", checks::fleet) >= 4);
}

#[test]
fn view_corpus() {
    assert!(run_corpus("view", checks::view) >= 2);
}

// The stable-Rust driver: cargo-fuzz needs nightly (or RUSTC_BOOTSTRAP and an instrumented build
// of every dependency); this runs corpus-mutated pseudo-random inputs through the same checks,
// without coverage feedback. `cargo test` runs 20,000 per target; the million-execution runs are
// `FUZZ_EXECS=1000000 cargo test --release --test fuzz_regressions -- --ignored drive_`.

/// xorshift64*: seeded, so a run is reproducible from its seed.
struct Mutator(u64);

impl Mutator {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    /// 1 to 8 mutations of `input`: bit flips, interesting bytes, ASCII digits, inserted, removed or
    /// duplicated runs, a splice from `other`, or a cut.
    fn mutate(&mut self, input: &mut Vec<u8>, other: &[u8], max_len: usize) {
        const INTERESTING: [u8; 10] = [0x00, 0x01, 0x7F, 0x80, 0xFF, b'0', b'9', b'-', b'"', b'\n'];
        for _ in 0..1 + self.below(8) {
            let len = input.len();
            match self.below(9) {
                0 if len > 0 => {
                    let i = self.below(len);
                    input[i] ^= 1 << self.below(8);
                }
                1 if len > 0 => {
                    let i = self.below(len);
                    input[i] = INTERESTING[self.below(INTERESTING.len())];
                }
                2 if len > 0 => {
                    let i = self.below(len);
                    input[i] = self.next() as u8;
                }
                3 if len > 0 => {
                    // A digit changed or appended: numbers in text formats grow and shrink.
                    let i = self.below(len);
                    if input[i].is_ascii_digit() {
                        let d = b'0' + self.below(10) as u8;
                        if self.below(2) == 0 { input[i] = d } else { input.insert(i, d) }
                    }
                }
                4 if len < max_len => {
                    let i = self.below(len + 1);
                    let n = 1 + self.below(8);
                    for _ in 0..n {
                        input.insert(i, self.next() as u8);
                    }
                }
                5 if len > 0 => {
                    let i = self.below(len);
                    let n = (1 + self.below(16)).min(len - i);
                    input.drain(i..i + n);
                }
                6 if len > 0 && len < max_len => {
                    let i = self.below(len);
                    let n = (1 + self.below(32)).min(len - i);
                    let run = input[i..i + n].to_vec();
                    let at = self.below(len + 1);
                    input.splice(at..at, run);
                }
                7 if !other.is_empty() => {
                    let i = self.below(other.len());
                    let n = (1 + self.below(64)).min(other.len() - i);
                    let at = self.below(len + 1);
                    let end = (at + n).min(len);
                    input.splice(at..end, other[i..i + n].iter().copied());
                }
                8 if len > 0 => input.truncate(self.below(len)),
                _ => {}
            }
        }
        input.truncate(max_len);
    }
}

/// Run `execs` inputs through `check`: each a mutation of a corpus file or of an earlier input,
/// or plain random bytes (1 in 16). A panic saves the input under `fuzz/artifacts/` and fails.
fn drive(target: &str, check: fn(&[u8]), execs: u64, seed: u64) {
    let mut pool: Vec<Vec<u8>> = Vec::new();
    for e in std::fs::read_dir(corpus(target)).unwrap() {
        pool.push(std::fs::read(e.unwrap().path()).unwrap());
    }
    let max_len = pool.iter().map(Vec::len).max().unwrap_or(0).max(256) * 2;
    let corpus_len = pool.len();
    let mut m = Mutator(seed | 1);
    // Inputs that panic are reported by the test; keep the default hook quiet meanwhile.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut found = None;
    for i in 0..execs {
        let input = if m.below(16) == 0 {
            let n = m.below(max_len);
            (0..n).map(|_| m.next() as u8).collect()
        } else {
            let mut x = pool[m.below(pool.len())].clone();
            let other = pool[m.below(pool.len())].clone();
            m.mutate(&mut x, &other, max_len);
            x
        };
        if std::panic::catch_unwind(|| check(&input)).is_err() {
            found = Some((i, input));
            break;
        }
        // Keep a rolling set of recent mutants beside the corpus, so mutations stack.
        if pool.len() < corpus_len + 64 {
            pool.push(input);
        } else {
            let k = corpus_len + m.below(64);
            pool[k] = input;
        }
    }
    std::panic::set_hook(hook);
    if let Some((i, input)) = found {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/artifacts");
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("{target}-crash-{seed}-{i}"));
        std::fs::write(&p, &input).unwrap();
        let e = std::panic::catch_unwind(|| check(&input)).unwrap_err();
        let msg = e.downcast_ref::<String>().cloned().or(e.downcast_ref::<&str>().map(|s| s.to_string()));
        panic!("{target}: execution {i} panicked ({msg:?}); input saved to {}", p.display());
    }
    println!("{target}: {execs} executions, seed {seed}, no panic");
}

fn execs() -> u64 {
    std::env::var("FUZZ_EXECS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000)
}

#[test]
fn drive_every_target_briefly() {
    drive("manifest", checks::manifest, 20_000, 1);
    drive("stream", checks::stream, 20_000, 1);
    drive("view", checks::view, 20_000, 1);
    drive("wire", checks::wire, 20_000, 1);
    drive("board", checks::board, 5_000, 1);
    drive("fleet", checks::fleet, 20_000, 1);
}

#[test]
#[ignore]
fn drive_manifest() {
    drive("manifest", checks::manifest, execs(), 19);
}

#[test]
#[ignore]
fn drive_stream() {
    drive("stream", checks::stream, execs(), 19);
}

#[test]
#[ignore]
fn drive_view() {
    drive("view", checks::view, execs(), 19);
}

// Findings, one test each: the input the fuzzer found, minimised, and what must hold now.

/// board: a board name starting with a digit ("8gb", file `boards/8gb.toml`) passed the checks and
/// generated `pub static 8GB: Board`, which failed the build with a rustc syntax error instead of
/// the file and the key. Fixed in `src/board/schema.rs`: a name must start with a letter.
#[test]
fn finding_board_name_starting_with_a_digit() {
    let good =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/host-sim.toml")).unwrap();
    for bad in ["8gb", "-", "-a"] {
        let text = good.replace("name = \"host-sim\"", &format!("name = \"{bad}\""));
        let e = jetlink::board::parse_board_text("boards/x.toml", &text).unwrap_err();
        assert!(e.starts_with("boards/x.toml: key `name`:") && e.contains("start with a letter"), "{e}");
        checks::board(text.as_bytes());
    }
}

/// board: `max-active-models` above the model-set cap (16) passed the checks and behaved as "no
/// limit" (the schedule clamps it to the number of models) without saying so. Now refused, naming
/// the key and the cap; 16 itself is accepted.
#[test]
fn board_max_active_models_above_the_cap_is_refused() {
    let good =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("boards/host-sim.toml")).unwrap();
    assert!(good.contains("max-active-models = 2"));
    let e = jetlink::board::parse_board_text(
        "boards/x.toml",
        &good.replace("max-active-models = 2", "max-active-models = 17"),
    )
    .unwrap_err();
    assert!(
        e.starts_with("boards/x.toml: key `max-active-models`: 17 is above") && e.contains("(16)"),
        "{e}"
    );
    jetlink::board::parse_board_text(
        "boards/x.toml",
        &good.replace("max-active-models = 2", "max-active-models = 16"),
    )
    .unwrap();
}

/// Writes the fleet target's seeds (small, committed): an upload, a signed whole global update, a
/// delta payload and quantised values. Ignored: run by hand after a fleet protocol change
/// (`write_seed_corpus` writes them too).
#[test]
#[ignore]
fn write_fleet_seed_corpus() {
    use jetlink::fleet::msg::{FLEET_PROTO, GlobalLinks, LinkUpdate, TargetDelta, TargetLinks, sign_global};
    use jetlink::fleet::quant::Quantized;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = |name: &str, mode: u8, data: &[u8]| {
        let d = corpus("fleet");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{name}")), [&[mode][..], data].concat()).unwrap();
    };
    let t = |target| TargetLinks {
        target,
        samples: 9,
        links: vec![0.25, -0.5, 1.0, 0.0],
        ensemble: vec![0.5, 0.1],
    };
    let up = LinkUpdate {
        proto: FLEET_PROTO,
        board: "cam-1".into(),
        group: None,
        model_hash: [0; 8],
        seq: 3,
        base_version: 1,
        targets: vec![t(0), t(2)],
    };
    write("upload", 0, &postcard::to_stdvec(&up).unwrap());
    let whole = GlobalLinks {
        proto: FLEET_PROTO,
        fleet: "lab".into(),
        model_hash: [0; 8],
        version: 2,
        boards: 2,
        base_version: 0,
        targets: vec![t(0), t(1)],
        deltas: Vec::new(),
    };
    let key = jetlink::signing::read_private_key(&root.join("demo/keys/demo-insecure.key")).unwrap();
    write("signed-whole", 1, &sign_global(&whole, &key));
    let q = Quantized::new(&[0.01, -0.02, 0.03, 0.0]);
    let delta = GlobalLinks {
        version: 3,
        base_version: 2,
        targets: vec![t(2)],
        deltas: vec![TargetDelta {
            target: 0,
            samples: 12,
            links: q.clone(),
            ensemble: Quantized::new(&[0.1, 0.2]),
        }],
        ..whole
    };
    write("delta", 2, &postcard::to_stdvec(&delta).unwrap());
    write("quantized", 3, &postcard::to_stdvec(&q).unwrap());
}

/// Writes the seed corpus (small, committed). Ignored: run by hand after a format change.
#[test]
#[ignore]
fn write_seed_corpus() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let write = |target: &str, name: &str, data: &[u8]| {
        let d = corpus(target);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("seed-{name}")), data).unwrap();
    };
    // Bundles: a small signed bundle (two models), unsigned, its payload alone, a cut header.
    let dir = std::env::temp_dir().join(format!("jetlink-seeds-{}", std::process::id()));
    let mut m = jetlink::sim::synthetic_manifest(&dir).unwrap();
    m.models.truncate(2);
    let full = jetlink::sim::synthetic_recording(60, 10_000, 1);
    let mut rec = jetlink::recording::Recording::new(full.models[..2].to_vec());
    let stride2 = full.models[0].size + full.models[1].size;
    for f in 0..full.len() {
        rec.push(full.frames[f], &full.row(f)[..stride2]);
    }
    let o = jetlink::links::BuildOptions {
        train: jetlink::links::TrainOptions {
            epochs: 1,
            ensemble_epochs: 1,
            ensemble_fit: jetlink::links::EnsembleFit::InSample,
            hidden_floor: 2,
            hidden_factor: 1,
            ..Default::default()
        },
        threads: 1,
        progress: false,
        set_heads: 0,
        ..Default::default()
    };
    let b = jetlink::train::build(&m, &rec, 50, &o).unwrap();
    let body = b.to_bytes().unwrap();
    let key = jetlink::signing::read_private_key(&root.join("demo/keys/demo-insecure.key")).unwrap();
    let signed = jetlink::signing::sign_bundle(&body, &key).unwrap();
    let with = |mode: u8, d: &[u8]| [&[mode][..], d].concat();
    write("bundle", "signed", &with(0, &signed));
    write("bundle", "unsigned", &with(0, &body));
    write("bundle", "payload", &with(1, &body[jetlink::bundle::HEADER_LEN..]));
    write("bundle", "header-only", &with(0, &body[..jetlink::bundle::HEADER_LEN]));
    // Wire: one frame of each message, fed in chunks of 7; a stream with a broken frame.
    let mut s = vec![6u8];
    let mut buf = [0u8; wire::MAX_FRAME];
    let mut board = heapless::String::<24>::new();
    board.push_str("host-sim").unwrap();
    for m in [
        Message::Hello(Hello {
            proto_version: wire::PROTO_VERSION,
            firmware: (0, 1, 0),
            board,
            bundle_hash: [1, 2, 3, 4, 5, 6, 7, 8],
            n_models: 8,
            period_ms: 33,
        }),
        Message::Tick(wire::typical_tick()),
        Message::PeriodSummary(PeriodSummary { period: 3, ticks: 500, ..Default::default() }),
        Message::Event(Event { tick: 9, code: EventCode::BundleRejected, a: 11, b: 0 }),
    ] {
        s.extend_from_slice(wire::encode(&m, &mut buf).unwrap());
    }
    write("wire", "each-message", &s);
    let mut broken = s.clone();
    broken[5] ^= 0x40;
    broken.insert(20, 0);
    write("wire", "broken", &broken);
    write("wire", "oversized", &[&[0u8][..], &[0x55u8; 300][..], &s[1..]].concat());
    // Manifests: the demo's, and a small one with every view op.
    write("manifest", "demo", &std::fs::read(root.join("demo/manifest.toml")).unwrap());
    write("manifest", "small", SMALL_MANIFEST.as_bytes());
    // Streams: three 4x3 frames (one training, one clean, one drift), and one 2x2x3 frame.
    let meta = |n: u32| jetlink::stream::FrameMeta { source: n, label: n as u8, severity: 0 };
    let s3 = jetlink::stream::Stream::from_parts(
        3,
        4,
        1,
        1,
        2,
        vec![meta(0), meta(1), meta(2)],
        (0..36).collect(),
    )
    .unwrap();
    write("stream", "three-frames", &s3.to_bytes());
    let s1 = jetlink::stream::Stream::from_parts(2, 2, 3, 0, 1, vec![meta(7)], vec![200; 12]).unwrap();
    write("stream", "rgb", &s1.to_bytes());
    // Views (fuzz/checks.rs::view): a 28x28x1 frame; pad, pool, channels; crop, upsample, normalize.
    write("view", "pad-pool-channels", &[27, 27, 0, 3, 2, 2, 2, 2, 1, 2, 0, 0, 0, 6, 3, 0, 0, 0]);
    write(
        "view",
        "crop-upsample-normalize",
        &[27, 27, 0, 0, 4, 4, 20, 20, 2, 2, 0, 0, 0, 5, 1, 1, 0, 0, 4, 0, 0, 0, 0],
    );
    // Boards: the real files.
    for e in std::fs::read_dir(root.join("boards")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "toml") {
            continue;
        }
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        write("board", &name, &std::fs::read(&p).unwrap());
    }
    write_fleet_seed_corpus();
}

const SMALL_MANIFEST: &str = r#"name = "fuzz"
stream = "s.jlstream"

[[model]]
name = "a"
onnx = "a.onnx"
kind = "class"
size = 10
importance = 1.0
input_shape = [1, 3, 30, 30]
provenance = "fuzz seed"
view = [ { op = "pad", top = 1, bottom = 1, left = 1, right = 1, value = 0.0 }, { op = "invert" }, { op = "normalize", mean = 0.5, std = 0.25 }, { op = "channels", n = 3 } ]
[model.cost]
weight_bytes = 1000
activation_bytes = 200
flops = 5000
latency_us = 12.5
latency_runtime = "tract"
"#;
