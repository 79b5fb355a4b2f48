//! The bundle file: round trip, and rejection of bad bundles (other version, truncated, flipped byte,
//! trailing bytes, manifest mismatch) with errors that say what is wrong; the score reports.

use std::path::PathBuf;

use jetlink::bundle::{
    Bundle, FORMAT_VERSION, FORMAT_VERSION_RULES, FORMAT_VERSION_SEQUENCE, FORMAT_VERSION_STALENESS,
    FORMAT_VERSION_VECTOR, HEADER_LEN,
};
use jetlink::links::{BuildOptions, EnsembleFit, TrainOptions};
use jetlink::manifest::{Manifest, OutputKind};
use jetlink::scoring::{Per, ScoreRule};
use jetlink::sim::{synthetic_manifest, synthetic_recording};

fn tmp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetlink-bundle-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn small_bundle(name: &str) -> (Manifest, Bundle, PathBuf) {
    let dir = tmp_dir(name);
    let m = synthetic_manifest(&dir).unwrap();
    let rec = synthetic_recording(400, 10_000, 1);
    let o = BuildOptions {
        train: TrainOptions {
            epochs: 2,
            ensemble_epochs: 2,
            ensemble_fit: EnsembleFit::InSample,
            ..TrainOptions::default()
        },
        threads: 2,
        set_heads: 0,
        progress: false,
        fit_from: 0,
        in_sample: false,
    };
    let b = jetlink::train::build(&m, &rec, 300, &o).unwrap();
    (m, b, dir)
}

fn load_err(bytes: &[u8], dir: &std::path::Path) -> String {
    let p = dir.join("bad.bundle");
    std::fs::write(&p, bytes).unwrap();
    format!("{:#}", Bundle::load(&p).unwrap_err())
}

#[test]
fn round_trip() {
    let (m, b, dir) = small_bundle("rt");
    let p = dir.join("x.bundle");
    b.save(&p).unwrap();
    let back = Bundle::load_for(&p, &m).unwrap();
    assert_eq!(back, b);
    assert_eq!(back.models[3].kind, OutputKind::Embedding);
    assert_eq!(back.split.fit_rows + back.split.holdout_rows, 300);
    assert_eq!(back.split.holdout_rows, 60);
    assert!(back.schedule.is_none() && back.dcta.is_none());
    // Header layout.
    let bytes = std::fs::read(&p).unwrap();
    assert_eq!(&bytes[..8], b"JLBUNDLE");
    // Vector kinds only: written as version 5, readable by builds before sequence kinds.
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), FORMAT_VERSION_VECTOR);
    assert_eq!(u64::from_le_bytes(bytes[12..20].try_into().unwrap()) as usize, bytes.len() - HEADER_LEN);
    // A declared score rule: written as version 7 and read back; the tolerance stays beside it.
    let mut r = b.clone();
    r.models[0].scoring.rule = ScoreRule::Presence { threshold: 0.25, per: Per::Overall };
    let rb = r.to_bytes().unwrap();
    assert_eq!(u32::from_le_bytes(rb[8..12].try_into().unwrap()), FORMAT_VERSION_RULES);
    let back = Bundle::from_bytes(&rb).unwrap();
    assert_eq!(back, r);
    assert_eq!(back.models[0].scoring.tolerance, b.models[0].scoring.tolerance);
    // A declared rule under an older header is refused, naming the format.
    let mut old6 = rb.clone();
    old6[8..12].copy_from_slice(&FORMAT_VERSION_SEQUENCE.to_le_bytes());
    assert!(
        Bundle::from_bytes(&old6)
            .unwrap_err()
            .to_string()
            .contains("declared score rule in a format 6 bundle")
    );
    // Staleness weights: version 8, after the other fields; the same payload under an older
    // header is refused (nothing follows the fields of formats 5 to 7), naming the bytes.
    let mut w = r.clone();
    w.staleness = (0..w.n_models()).map(|j| [j as f32, 0.5, -0.5, 4.0, 2.0, 1.0]).collect();
    let wb = w.to_bytes().unwrap();
    assert_eq!(u32::from_le_bytes(wb[8..12].try_into().unwrap()), FORMAT_VERSION_STALENESS);
    assert_eq!(Bundle::from_bytes(&wb).unwrap(), w);
    let mut old = wb.clone();
    old[8..12].copy_from_slice(&FORMAT_VERSION_RULES.to_le_bytes());
    let e = Bundle::from_bytes(&old).unwrap_err().to_string();
    assert!(e.contains("unexpected bytes after the payload's fields (format 7)"), "{e}");
    assert_eq!(Bundle::from_bytes(&r.to_bytes().unwrap()).unwrap(), r);
    // The wrong number of rows, or a weight that is not finite, is refused by name.
    let mut bad = w.clone();
    bad.staleness.pop();
    assert!(
        Bundle::from_bytes(&bad.to_bytes().unwrap())
            .unwrap_err()
            .to_string()
            .contains("rows of staleness weights")
    );
    let mut bad = w.clone();
    bad.staleness[1][4] = f32::NAN;
    assert!(
        Bundle::from_bytes(&bad.to_bytes().unwrap())
            .unwrap_err()
            .to_string()
            .contains("staleness weight 10 is not finite")
    );
    // The precomputed schedule table survives a round trip (a damaged one is refused:
    // `a_damaged_precomputed_table_is_refused_at_load`).
    let mut c = b.clone();
    let table = jetlink::schedule::ScheduleTable::build(&jetlink::schedule::Problem::from_bundle(&b));
    let bytes = postcard::to_stdvec(&table).unwrap();
    c.schedule = Some(bytes.clone());
    assert_eq!(Bundle::from_bytes(&c.to_bytes().unwrap()).unwrap().schedule, Some(bytes));
}

#[test]
fn rejects_bad_bundles() {
    let (m, b, dir) = small_bundle("bad");
    let good = b.to_bytes().unwrap();

    let mut v = good.clone();
    v[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    let e = load_err(&v, &dir);
    let (found, reads) = (
        format!("format version {}", FORMAT_VERSION + 1),
        format!("reads versions {FORMAT_VERSION_VECTOR} to {FORMAT_VERSION}"),
    );
    assert!(e.contains(&found) && e.contains(&reads), "{e}");
    let mut v4 = good.clone();
    v4[8..12].copy_from_slice(&(FORMAT_VERSION_VECTOR - 1).to_le_bytes());
    assert!(load_err(&v4, &dir).contains(&format!("format version {}", FORMAT_VERSION_VECTOR - 1)));
    // A version-6 header over a vector-only payload loads (the payload types are the same).
    let mut v6 = good.clone();
    v6[8..12].copy_from_slice(&FORMAT_VERSION_SEQUENCE.to_le_bytes());
    assert_eq!(Bundle::from_bytes(&v6).unwrap(), b);
    // A version-8 header over a payload without the staleness weights is refused, naming them.
    let mut v8 = good.clone();
    v8[8..12].copy_from_slice(&FORMAT_VERSION_STALENESS.to_le_bytes());
    assert!(load_err(&v8, &dir).contains("staleness weights"));
    // An argmax sequence model: written as version 9 (its links read each step's class one-hot),
    // with or without staleness weights; under an older header it is refused, asking for a rebuild.
    let mut a = b.clone();
    a.models[0].kind = OutputKind::Sequence(jetlink::manifest::SeqShape {
        steps: 1,
        decode: jetlink::manifest::SeqDecode::Argmax,
    });
    let ab = a.to_bytes().unwrap();
    assert_eq!(u32::from_le_bytes(ab[8..12].try_into().unwrap()), FORMAT_VERSION);
    assert_eq!(Bundle::from_bytes(&ab).unwrap(), a);
    a.staleness = (0..a.n_models()).map(|j| [j as f32, 0.5, -0.5, 4.0, 2.0, 1.0]).collect();
    let ab = a.to_bytes().unwrap();
    assert_eq!(u32::from_le_bytes(ab[8..12].try_into().unwrap()), FORMAT_VERSION);
    assert_eq!(Bundle::from_bytes(&ab).unwrap(), a);
    let mut old = ab.clone();
    old[8..12].copy_from_slice(&FORMAT_VERSION_STALENESS.to_le_bytes());
    let e = Bundle::from_bytes(&old).unwrap_err().to_string();
    assert!(e.contains("argmax sequence model in a format 8 bundle") && e.contains("rebuild"), "{e}");
    // Bytes after the payload's fields are refused in formats 5 to 7 too (format 8 refuses them
    // after its weights), even under a valid length and hash.
    let mut tail = good.clone();
    tail.push(0);
    let len = (tail.len() - HEADER_LEN) as u64;
    tail[12..20].copy_from_slice(&len.to_le_bytes());
    let hash = jetlink::bundle::sha256(&tail[HEADER_LEN..]);
    tail[20..52].copy_from_slice(&hash);
    let e = load_err(&tail, &dir);
    assert!(e.contains("1 unexpected bytes after the payload's fields"), "{e}");

    let e = load_err(&good[..good.len() - 10], &dir);
    assert!(e.contains("truncated") && e.contains("payload bytes"), "{e}");
    let e = load_err(&good[..20], &dir);
    assert!(e.contains("truncated") && e.contains("header"), "{e}");

    let mut f = good.clone();
    let mid = HEADER_LEN + (good.len() - HEADER_LEN) / 2;
    f[mid] ^= 0x01;
    let e = load_err(&f, &dir);
    assert!(e.contains("corrupted") && e.contains("SHA-256"), "{e}");

    let mut t = good.clone();
    t.push(0);
    assert!(load_err(&t, &dir).contains("unexpected bytes"));

    let mut g = good.clone();
    g[0] = b'X';
    assert!(load_err(&g, &dir).contains("not a jetlink bundle"));

    // Manifest mismatches: renamed model, other size, changed ONNX file, missing model.
    let mut m2 = m.clone();
    m2.models[2].name = "holes".into();
    let e = b.check_manifest(&m2).unwrap_err().to_string();
    assert!(e.contains("\"loops\"") && e.contains("\"holes\""), "{e}");
    let mut m3 = m.clone();
    m3.models[4].size = 4;
    let e = b.check_manifest(&m3).unwrap_err().to_string();
    assert!(e.contains("shade") && e.contains("size 3") && e.contains("size 4"), "{e}");
    let mut m4 = m.clone();
    m4.models.pop();
    assert!(b.check_manifest(&m4).unwrap_err().to_string().contains("7 models"));
    std::fs::write(dir.join("emb.onnx"), b"retrained").unwrap();
    let p = dir.join("ok.bundle");
    b.save(&p).unwrap();
    let e = format!("{:#}", Bundle::load_for(&p, &m).unwrap_err());
    assert!(e.contains("emb") && e.contains("ONNX") && e.contains("SHA-256"), "{e}");

    // A payload with a valid hash but inconsistent tables is rejected, not trusted.
    let mut bad = b.clone();
    bad.links.params.pop();
    let e = load_err(&bad.to_bytes().unwrap(), &dir);
    assert!(e.contains("inconsistent") && e.contains("link arena"), "{e}");

    // Numbers are checked finite where they enter: a NaN link weight, an infinite ensemble weight
    // or a NaN score is refused by name, even with a valid hash (a bundle trained on bad data).
    let mut nan = b.clone();
    let k = nan.links.params.len() / 2;
    nan.links.params[k] = f32::NAN;
    let e = load_err(&nan.to_bytes().unwrap(), &dir);
    assert!(e.contains("link ") && e.contains("is NaN, not finite"), "{e}");
    let mut inf = b.clone();
    inf.ensembles.params[0] = f32::INFINITY;
    let e = load_err(&inf.to_bytes().unwrap(), &dir);
    assert!(e.contains("ensemble 0: weight 0 is inf, not finite"), "{e}");
    let mut score = b.clone();
    score.scores.link[1] = f32::NAN;
    let e = load_err(&score.to_bytes().unwrap(), &dir);
    assert!(e.contains("link score 1 is NaN"), "{e}");
}

#[test]
fn reports_next_to_bundle() {
    let (_, b, dir) = small_bundle("report");
    let p = dir.join("demo.bundle");
    let [md, svg] = jetlink::report::write_reports(&b, &p, false, false).unwrap();
    assert_eq!(md, dir.join("demo.scores.md"));
    let md = std::fs::read_to_string(md).unwrap();
    assert!(md.contains("| digit (class 10) | — |") && md.contains("ensemble (all)"), "{md}");
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg") && svg.matches("<rect").count() == 7 * 8);
}

/// A damaged DCTA or schedule table is refused when the bundle is loaded, naming the table (the
/// loop used to find it later, without naming the bundle).
#[test]
fn a_damaged_precomputed_table_is_refused_at_load() {
    let (_, b, dir) = small_bundle("tables");
    for (what, dcta, schedule) in [
        ("the DCTA table does not decode", Some(vec![7u8; 5]), None),
        ("the schedule table does not decode", None, Some(vec![0xffu8; 3])),
    ] {
        let mut bad = b.clone();
        (bad.dcta, bad.schedule) = (dcta, schedule);
        let e = load_err(&bad.to_bytes().unwrap(), &dir);
        assert!(e.contains(what), "{e}");
    }
}
