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
    };
    let b = jetlink::links::build(&m, &rec, 50, &o).unwrap();
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
    // Boards: the real files.
    for e in std::fs::read_dir(root.join("boards")).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        write("board", &name, &std::fs::read(&p).unwrap());
    }
}
