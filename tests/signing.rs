//! Signed bundles: sign and verify round trip; every byte of a small signed bundle flipped, and
//! every truncation, refused before the payload is decoded; unsigned, other-key, other-version and
//! mismatched bundles refused with errors that say why; the demo key and the boards that trust it;
//! a running loop keeps its bundle when a new one is refused, and says so on the serial line.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use jetlink::board;
use jetlink::bundle::{Bundle, BundleError, FORMAT_VERSION, HEADER_LEN, TRAILER_LEN};
use jetlink::control::LoopBuilder;
use jetlink::links::{BuildOptions, EnsembleFit, TrainOptions};
use jetlink::manifest::Manifest;
use jetlink::recording::Recording;
use jetlink::serial::MemWriter;
use jetlink::signing::{self, DEMO_PUBLIC_KEY};
use jetlink::sim::{synthetic_manifest, synthetic_recording};
use jetlink::stream::Stream;
use jetlink::wire::{Decoder, EventCode, Message, TelemetryWriter};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetlink-signing-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn demo_key() -> ed25519_dalek::SigningKey {
    signing::read_private_key(&root().join("demo/keys/demo-insecure.key")).unwrap()
}

fn demo_public() -> [u8; 32] {
    signing::parse_public_key(DEMO_PUBLIC_KEY).unwrap()
}

/// A small valid bundle (2 models, tiny links) and its manifest.
fn small_bundle(name: &str) -> (Manifest, Vec<u8>, PathBuf) {
    let dir = tmp_dir(name);
    let mut m = synthetic_manifest(&dir).unwrap();
    m.models.truncate(2);
    let rec = synthetic_recording(120, 10_000, 1);
    let keep: Vec<usize> = (0..2).collect();
    let rec = subset(&rec, &keep);
    let o = BuildOptions {
        train: TrainOptions {
            epochs: 1,
            ensemble_epochs: 1,
            ensemble_fit: EnsembleFit::InSample,
            ..TrainOptions::default()
        },
        set_heads: 0,
        threads: 1,
        progress: false,
        fit_from: 0,
        in_sample: false,
    };
    let b = jetlink::train::build(&m, &rec, 100, &o).unwrap();
    (m, b.to_bytes().unwrap(), dir)
}

/// The trailer as `jetlink sign` writes it, without checking what it signs.
fn sign_raw(body: &[u8], key: &ed25519_dalek::SigningKey) -> Vec<u8> {
    use ed25519_dalek::Signer;
    let mut out = body.to_vec();
    out.extend_from_slice(b"JLBSIG01");
    out.extend_from_slice(&signing::key_id(&key.verifying_key().to_bytes()));
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// The recording restricted to some models.
fn subset(r: &Recording, keep: &[usize]) -> Recording {
    let mut out = Recording::new(keep.iter().map(|&i| r.models[i].clone()).collect());
    let mut row = Vec::new();
    for f in 0..r.len() {
        row.clear();
        for &i in keep {
            row.extend_from_slice(r.output(f, i));
        }
        out.push(r.frames[f], &row);
    }
    out
}

/// Issue 19: only the simulated board trusts the demo key (a Jetson board build refuses it: see
/// `board::tests::jetson_boards_refuse_the_demo_key_and_take_one_from_the_environment`, which builds
/// their tables with a throwaway key generated for the run).
#[test]
fn demo_key_pair_matches_and_only_the_simulated_board_trusts_it() {
    let key = demo_key();
    assert_eq!(key.verifying_key().to_bytes(), demo_public());
    let pub_file = std::fs::read_to_string(root().join("demo/keys/demo-insecure.pub")).unwrap();
    assert_eq!(pub_file.trim(), DEMO_PUBLIC_KEY);
    assert_eq!(DEMO_PUBLIC_KEY, jetlink::board::schema::DEMO_BUNDLE_KEY);
    for b in board::boards::ALL {
        // Every compiled-in key is a usable Ed25519 point.
        signing::parse_public_key(&jetlink::bundle::hex(&b.bundle_key)).unwrap();
    }
    let cur = board::current();
    if cur.name != "host-sim" {
        assert_ne!(cur.bundle_key, demo_public(), "board {} was built trusting the demo key", cur.name);
    } else {
        assert_eq!(cur.bundle_key, demo_public());
    }
    for f in ["orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "xavier-nx-8gb"] {
        let text = std::fs::read_to_string(root().join(format!("boards/{f}.toml"))).unwrap();
        assert!(text.contains("REPLACE THIS") && text.contains("REFUSES"), "{f}");
    }
}

#[test]
fn keygen_writes_an_owner_only_key_and_refuses_to_overwrite() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tmp_dir("keygen");
    let p = dir.join("k.pem");
    let _ = std::fs::remove_file(&p);
    let k = signing::generate_key().unwrap();
    signing::write_private_key(&p, &k).unwrap();
    assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(signing::read_private_key(&p).unwrap().to_bytes(), k.to_bytes());
    let e = signing::write_private_key(&p, &k).unwrap_err().to_string();
    assert!(e.contains("exists") && e.contains("k.pem"), "{e}");
    std::fs::write(dir.join("junk"), "hello").unwrap();
    let e = signing::read_private_key(&dir.join("junk")).unwrap_err().to_string();
    assert!(e.contains("--key") && e.contains("junk") && e.contains("PKCS#8"), "{e}");
    let e = signing::read_private_key(&dir.join("missing")).unwrap_err().to_string();
    assert!(e.contains("missing") && e.contains("cannot read"), "{e}");
    assert!(signing::parse_public_key("abc").unwrap_err().contains("64 hex digits"));
}

#[test]
fn signed_round_trip_and_refusals_name_the_reason() {
    let (_m, body, _dir) = small_bundle("refusals");
    let key = demo_key();
    let pk = demo_public();
    let signed = signing::sign_bundle(&body, &key).unwrap();
    assert_eq!(signed.len(), body.len() + TRAILER_LEN);
    assert_eq!(&signed[body.len()..body.len() + 8], b"JLBSIG01");
    let b = signing::from_bytes_trusted(&signed, &pk).unwrap();
    assert_eq!(b, Bundle::from_bytes(&body).unwrap());
    // Host tools read a signed bundle too; signing again replaces the trailer.
    assert_eq!(Bundle::from_bytes(&signed).unwrap(), b);
    assert_eq!(signing::sign_bundle(&signed, &key).unwrap(), signed);

    let err = |bytes: &[u8]| signing::from_bytes_trusted(bytes, &pk).unwrap_err();
    let e = err(&body);
    assert!(matches!(e, BundleError::Unsigned { .. }) && e.to_string().contains("jetlink sign"), "{e}");
    assert_eq!(e.reason_code(), 9);

    let other = signing::generate_key().unwrap();
    let e = err(&signing::sign_bundle(&body, &other).unwrap());
    assert!(matches!(e, BundleError::UnknownKey { .. }) && e.to_string().contains("trusts only key"), "{e}");

    // Another format version, re-signed by the right key: still refused, by version.
    let mut v = body.clone();
    v[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = err(&sign_raw(&v, &key));
    assert!(matches!(e, BundleError::Version { found } if found == FORMAT_VERSION + 1), "{e}");

    // A signed bundle built for other models.
    let (m2, _, _) = small_bundle("other");
    let mut m3 = m2.clone();
    m3.models[0].name = "renamed".into();
    assert!(matches!(b.check_manifest(&m3).unwrap_err(), BundleError::ModelMismatch(_)));

    // Garbage after the trailer, and a trailer cut short.
    let mut t = signed.clone();
    t.push(0);
    assert!(matches!(err(&t), BundleError::TrailingBytes { extra: 1 }));
    let e = err(&signed[..signed.len() - 1]);
    assert!(e.to_string().contains("signature trailer has 79 of its 80 bytes"), "{e}");
}

/// The brief's check: flip every byte (each bit pattern 0xFF, and the low bit) of a small signed
/// bundle; each is refused. And every truncation.
#[test]
fn every_flipped_byte_and_every_truncation_is_refused() {
    let (_m, body, _dir) = small_bundle("flip");
    let pk = demo_public();
    let signed = signing::sign_bundle(&body, &demo_key()).unwrap();
    // Format 3 adds per-model behaviour digests (7 fields x ~40 bytes per model).
    assert!(signed.len() < 12_288, "keep the bundle small: {} bytes", signed.len());
    let mut f = signed.clone();
    let mut reasons = std::collections::BTreeMap::new();
    for i in 0..signed.len() {
        for mask in [0x01u8, 0xFF] {
            f[i] ^= mask;
            let e = signing::from_bytes_trusted(&f, &pk)
                .err()
                .unwrap_or_else(|| panic!("byte {i} ^ {mask:#x} of {} accepted", signed.len()));
            *reasons.entry(e.reason_code()).or_insert(0u32) += 1;
            // A payload change can never get as far as decoding: the signature covers it.
            if i >= HEADER_LEN {
                assert!(![6, 7].contains(&e.reason_code()), "byte {i}: {e}");
            }
            f[i] ^= mask;
        }
    }
    assert_eq!(f, signed);
    // Header fields give their own errors, the rest fail the signature or the key id.
    for code in [2, 3, 10, 11] {
        assert!(reasons.contains_key(&code), "{reasons:?}");
    }
    for n in 0..signed.len() {
        let e = signing::from_bytes_trusted(&signed[..n], &pk).unwrap_err();
        assert!(matches!(e.reason_code(), 1 | 9), "truncated to {n}: {e}");
    }
}

#[test]
fn run_refuses_an_unsigned_bundle_with_an_event() {
    let dir = tmp_dir("run");
    let bundle = dir.join("unsigned.bundle");
    let bytes = std::fs::read(root().join("demo/demo.bundle")).unwrap();
    let env = jetlink::bundle::Envelope::split(&bytes).unwrap();
    std::fs::write(&bundle, env.body).unwrap();
    let serial = dir.join("serial.bin");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root())
        .args(["run", "--engines", "replay", "--frames", "5", "--quiet", "--bundle"])
        .arg(&bundle)
        .arg("--serial")
        .arg(format!("file:{}", serial.display()))
        .arg("--state-file")
        .arg(dir.join("state"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused (reason code 9)") && err.contains("not signed"), "{err}");
    let mut codes = Vec::new();
    Decoder::new().feed(&std::fs::read(&serial).unwrap(), |m| {
        if let Message::Event(e) = m {
            codes.push((e.code, e.a));
        }
    });
    assert_eq!(codes, [(EventCode::BundleRejected, 9)]);
}

#[test]
fn a_running_loop_keeps_its_bundle_when_a_new_one_is_refused() {
    let b = board::current();
    let manifest = Manifest::load(&root().join("demo/manifest.toml")).unwrap();
    let demo_path = root().join("demo/demo.bundle");
    let bundle =
        signing::load_trusted(&demo_path, &manifest, b).expect("demo/demo.bundle is signed by the demo key");
    let stream = Arc::new(Stream::load(&manifest.path_of(&manifest.stream)).unwrap());
    let reference =
        Arc::new(Recording::load(&manifest.path_of(manifest.reference.as_ref().unwrap())).unwrap());
    let from = stream.train_end;
    let mut ctl = LoopBuilder::new(b, manifest.clone(), bundle.clone(), stream.clone())
        .reference(Some(reference.clone()))
        .engines(jetlink::sim::replay(reference))
        .build_replay(from..from + 400, TelemetryWriter::new(MemWriter::new()))
        .unwrap();
    for _ in 0..200 {
        assert!(ctl.tick());
    }
    let acc_before = ctl.stats().accuracy_all().unwrap();

    // A tampered bundle (one payload byte flipped) and an unsigned one are refused mid-run.
    let dir = tmp_dir("reload");
    let mut bytes = std::fs::read(&demo_path).unwrap();
    bytes[HEADER_LEN + 100] ^= 0x20;
    let bad = dir.join("tampered.bundle");
    std::fs::write(&bad, &bytes).unwrap();
    let e = ctl.offer_bundle(&bad, &manifest, b, None).unwrap_err();
    assert_eq!(e.reason_code(), 11, "{e}");
    let e = ctl.offer_bundle(&dir.join("nonexistent.bundle"), &manifest, b, None).unwrap_err();
    assert_eq!(e.reason_code(), 13, "{e}");
    assert!(e.to_string().contains("nonexistent.bundle"), "{e}");

    // The loop goes on, on the bundle it had.
    while ctl.tick() {}
    assert_eq!(ctl.stats().ticks, 400);
    assert!(ctl.outputs().iter().all(|v| v.is_finite()));
    assert!(ctl.stats().accuracy_all().unwrap() > acc_before - 0.1);
    let mut rejected = Vec::new();
    let mut hellos = 0;
    Decoder::new().feed(&ctl.writer().get_ref().data, |m| match m {
        Message::Event(e) if e.code == EventCode::BundleRejected => rejected.push((e.tick, e.a)),
        Message::Hello(_) => hellos += 1,
        _ => {}
    });
    assert_eq!(rejected, [(200, 11), (200, 13)]);
    assert_eq!(hellos, 1, "no new bundle was started");

    // A good bundle is accepted (for the driver to prepare a loop from).
    let good = ctl.offer_bundle(&demo_path, &manifest, b, None).unwrap();
    assert_eq!(good, bundle);
}

/// A board whose compiled-in bundle-key is a small-order point is refused at once, naming the board
/// and its file; the board this binary was built for passes.
#[test]
fn a_board_key_that_is_a_small_order_point_is_refused() {
    let board = jetlink::board::current();
    jetlink::signing::check_board_key(board).unwrap();
    let mut weak = *board;
    weak.bundle_key = [0; 32];
    let e = format!("{:#}", jetlink::signing::check_board_key(&weak).unwrap_err());
    assert!(e.contains("a small-order point") && e.contains(&format!("boards/{}.toml", board.name)), "{e}");
}

/// Two runs sharing a state file cannot lower it: the read and the write of an acceptance happen
/// under a lock, and a version below the one recorded meanwhile is refused as a rollback.
#[test]
fn racing_acceptances_never_lower_the_state() {
    let dir = std::env::temp_dir().join(format!("jetlink-state-race-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for round in 0..100 {
        let path = dir.join(format!("state-{round}"));
        let results: Vec<_> = std::thread::scope(|s| {
            let h: Vec<_> = [1u64, 2]
                .into_iter()
                .map(|v| {
                    let st = signing::RollbackState::new(path.clone());
                    s.spawn(move || (v, st.accept_version(v)))
                })
                .collect();
            h.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let st = signing::RollbackState::new(path.clone());
        assert_eq!(st.highest().unwrap(), 2, "round {round}: {results:?}");
        for (v, r) in results {
            match (v, r) {
                (2, r) => r.unwrap(),
                (1, Ok(())) => {}
                (1, Err(BundleError::Rollback { version: 1, highest: 2, .. })) => {}
                (v, r) => panic!("version {v}: {r:?}"),
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The state's lock file is opened without waiting or following: a FIFO there is refused at once
/// (not waited on), and an existing lock file needs no write access.
#[test]
fn the_state_lock_file_is_never_waited_on_or_followed() {
    let dir = std::env::temp_dir().join(format!("jetlink-state-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let st = signing::RollbackState::new(dir.join("fifo-state"));
    assert!(
        std::process::Command::new("mkfifo").arg(dir.join("fifo-state.lock")).status().unwrap().success()
    );
    let e = st.accept_version(1).unwrap_err().to_string();
    assert!(e.contains("fifo-state.lock is a FIFO, not a regular file"), "{e}");
    let st = signing::RollbackState::new(dir.join("linked-state"));
    std::os::unix::fs::symlink(dir.join("elsewhere"), dir.join("linked-state.lock")).unwrap();
    assert!(st.accept_version(1).is_err());
    assert!(!dir.join("elsewhere").exists(), "the link was followed");
    // A lock file left read-only (by another user, say) still locks.
    let st = signing::RollbackState::new(dir.join("ro-state"));
    std::fs::write(dir.join("ro-state.lock"), b"").unwrap();
    let mut perm = std::fs::metadata(dir.join("ro-state.lock")).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o444);
    std::fs::set_permissions(dir.join("ro-state.lock"), perm).unwrap();
    st.accept_version(3).unwrap();
    assert_eq!(st.highest().unwrap(), 3);
    let _ = std::fs::remove_dir_all(&dir);
}
