//! Sequence outputs end to end on the committed sequence workload (`demo-seq/`, built by
//! `tools/seq/build_seq.py`): the manifest's sequence kind, the JLREC002 recording, links into and
//! out of the PP-OCRv4 recogniser's CTC frames, scored by the decoding rule, and the allocation-free
//! predictor filling a sequence output.

use std::path::{Path, PathBuf};

use jetlink::alloc_count::{CountingAllocator, allocations_in as allocations};
use jetlink::links::{self, BuildOptions, Predictor, TrainOptions};
use jetlink::manifest::{Manifest, OutputKind, SeqDecode};
use jetlink::model_set::ModelSet;
use jetlink::recording::Recording;

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn workload() -> (Manifest, Recording) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("demo-seq");
    let m = Manifest::load(&root.join("manifest.toml")).unwrap();
    let rec = Recording::load(&m.path_of(m.reference.as_deref().unwrap())).unwrap();
    let rec = rec
        .select_by_name(m.models.iter().map(|s| (s.name.as_str(), s.kind, s.size as usize)), "reference")
        .unwrap();
    (m, rec)
}

#[test]
fn the_workload_carries_the_recogniser_as_a_ctc_sequence() {
    let (m, rec) = workload();
    let ocr = &m.models[m.model_index("ocr_rec").unwrap()];
    let OutputKind::Sequence(q) = ocr.kind else { panic!("{:?}", ocr.kind) };
    assert_eq!(q.decode, SeqDecode::Ctc);
    let c = (ocr.size / q.steps) as usize;
    let alphabet = ocr.alphabet.as_deref().unwrap();
    assert_eq!(alphabet.chars().count(), c - 1);
    let stream = jetlink::stream::Stream::load(&m.path_of(&m.stream)).unwrap();
    assert_eq!(stream.len(), rec.len());
    // The recorded CTC frames decode to strings; on most clean frames they have as many symbols as
    // the line has digits (the stream's label); every step is a distribution.
    let col = rec.layout().range(m.model_index("ocr_rec").unwrap());
    let mut same_len = 0;
    for r in 0..rec.len() {
        let row = &rec.row(r)[col.clone()];
        for step in row.chunks_exact(c) {
            assert!((step.iter().sum::<f32>() - 1.0).abs() < 1e-3);
        }
        let s = links::ctc_string(row, c, alphabet);
        if r < stream.drift_start {
            same_len += usize::from(s.chars().count() == stream.meta[r].label as usize);
        }
    }
    assert!(same_len * 2 > stream.drift_start, "{same_len} of {}", stream.drift_start);
}

#[test]
fn links_into_and_out_of_a_sequence_learn_and_predict_without_allocating() {
    let (m, rec) = workload();
    let stream = jetlink::stream::Stream::load(&m.path_of(&m.stream)).unwrap();
    let opts = BuildOptions {
        train: TrainOptions { epochs: 12, ensemble_epochs: 12, ..TrainOptions::default() },
        threads: 2,
        progress: false,
        set_heads: 0,
        fit_from: 0,
        in_sample: false,
    };
    let b = jetlink::train::build(&m, &rec, stream.train_end, &opts).unwrap();
    let idx = |n: &str| m.model_index(n).unwrap();
    let (ocr, count, first) = (idx("ocr_rec"), idx("count"), idx("first"));
    // seq -> vec: the recogniser's frames tell the digit count and the first digit far better than
    // the constant predictor.
    for j in [count, first] {
        assert!(
            b.link_score(ocr, j) > b.scores.constant[j] + 0.2,
            "ocr_rec -> {}: {} vs constant {}",
            m.models[j].name,
            b.link_score(ocr, j),
            b.scores.constant[j]
        );
    }
    // vec -> seq: the links are trained and scored by exact decoded-string agreement (in [0, 1]).
    assert!((0.0..=1.0).contains(&b.ensemble_score(ocr)));

    // The predictor fills the sequence output from the vector models, per-step distributions, with
    // no allocation per frame.
    let mut p = Predictor::new(&b);
    let mut out = vec![0.0; rec.stride()];
    let active = ModelSet::single(count).with(first);
    let row = rec.row(stream.train_end).to_vec();
    p.predict(active, &row, &mut out).unwrap();
    // Also with the recogniser running: links read its frames in canonical alignment, through a
    // buffer prepared with the predictor.
    let with_ocr = ModelSet::single(ocr).with(count);
    p.predict(with_ocr, &row, &mut out).unwrap();
    let (res, n) = allocations(|| {
        for r in stream.train_end..stream.train_end + 50 {
            p.predict(with_ocr, rec.row(r), &mut out)?;
            p.predict(active, rec.row(r), &mut out)?;
        }
        Ok::<(), links::LinkError>(())
    });
    res.unwrap();
    assert_eq!(n, 0, "allocations in 100 predictions");
    let q = m.models[ocr].kind.seq().unwrap();
    let c = (m.models[ocr].size / q.steps) as usize;
    for step in out[rec.layout().range(ocr)].chunks_exact(c) {
        assert!((step.iter().sum::<f32>() - 1.0).abs() < 1e-4);
    }
    // The two sequence scores, on the same prediction: exact match implies full similarity.
    let actual = &rec.row(stream.train_end + 49)[rec.layout().range(ocr)];
    let pred = &out[rec.layout().range(ocr)];
    let exact = links::agreement(m.models[ocr].kind, m.models[ocr].scoring(), pred, actual);
    let sim = links::sequence_similarity(m.models[ocr].kind, m.models[ocr].scoring(), pred, actual);
    assert!((0.0..=1.0).contains(&sim) && (exact == 0.0 || sim == 1.0));

    // Adaptation, like vector links: on drifted frames, fine-tuning the links into the sequence
    // (from `digits` and `first`) and out of it (into `first`, reading its canonical alignment)
    // lowers the loss, without allocating.
    let mut ad = links::Adapter::new(&b, &p, links::AdaptOptions::default());
    let drift = stream.drift_start;
    let batch: Vec<f32> = (drift + 200..drift + 232).flat_map(|r| rec.row(r).to_vec()).collect();
    let digits = idx("digits");
    for (target, sources) in [(ocr, ModelSet::single(digits).with(first)), (first, ModelSet::single(ocr))] {
        let before = ad.loss(&mut p, target, sources, &batch).unwrap();
        let (_, n) = allocations(|| {
            for _ in 0..30 {
                ad.step(&mut p, target, sources, &batch).unwrap();
            }
        });
        assert_eq!(n, 0, "adaptation of {} allocated", m.models[target].name);
        let after = ad.loss(&mut p, target, sources, &batch).unwrap();
        assert!(after.is_finite() && after < before, "{}: {before} -> {after}", m.models[target].name);
    }
}

/// `jetlink build` and `jetlink run` on the sequence workload, as `docs/sequences.md` shows them:
/// the recogniser is predicted through sequence links when it does not run, the loop allocates
/// nothing, and the run's accuracy is reported per task.
#[test]
fn build_and_run_on_the_sequence_workload() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("jetlink-seq-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("seq.bundle");
    let bin = env!("CARGO_BIN_EXE_jetlink");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(bin).args(args).current_dir(root).output().unwrap();
        let (so, se) =
            (String::from_utf8_lossy(&o.stdout).to_string(), String::from_utf8_lossy(&o.stderr).to_string());
        assert!(o.status.success(), "jetlink {args:?} failed:\n{so}\n{se}");
        so
    };
    let b = bundle.to_str().unwrap();
    let out = run(&[
        "build",
        "--manifest",
        "demo-seq/manifest.toml",
        "-o",
        b,
        "--key",
        "demo/keys/demo-insecure.key",
    ]);
    assert!(out.contains("sequence: the decoded strings equal (ctc)"), "{out}");
    let serial = format!("file:{}", dir.join("serial.bin").display());
    let state = dir.join("state").display().to_string();
    // The loop on the sequence workload with the recogniser within the budget, and `extra`.
    let run_loop = |extra: &[&str]| {
        let mut args =
            vec!["run", "--engines", "replay", "--manifest", "demo-seq/manifest.toml", "--bundle", b];
        args.extend(["--sim-model-budget", "20000000", "--serial", &serial, "--state-file", &state]);
        args.extend(extra);
        run(&args)
    };
    let out = run_loop(&["--max-active", "2"]);
    assert!(out.contains("allocations in loop    0 (our code)"), "{out}");
    assert!(out.contains("per task               ocr_rec "), "{out}");
    assert!(out.contains("sequences              ocr_rec ") && out.contains("digits "), "{out}");
    assert!(out.contains("at most 2 models run per tick"), "{out}");
    // Under a cap above the board's (2), the bundle's schedule table (built for 2) is rebuilt: the
    // exact policy then runs three models on every tick (half of six saved), not two.
    let out = run_loop(&["--max-active", "3", "--policy", "optimal", "--frames", "200"]);
    assert!(out.contains("executions saved       50.0%"), "{out}");
    // `jetlink record` runs the real models (tract) and writes the sequence as JLREC002; the
    // recogniser's decoded strings match the reference (onnxruntime) on these frames.
    let recd = dir.join("rec.jlr");
    run(&[
        "record",
        "--manifest",
        "demo-seq/manifest.toml",
        "-o",
        recd.to_str().unwrap(),
        "--from",
        "1000",
        "--to",
        "1020",
    ]);
    assert_eq!(&std::fs::read(&recd).unwrap()[..8], b"JLREC002");
    let (m, reference) = workload();
    let got = Recording::load(&recd).unwrap();
    let ocr = m.model_index("ocr_rec").unwrap();
    let cols = reference.layout().range(ocr);
    let mut same = 0;
    for r in 0..got.len() {
        let f = got.frames[r] as usize;
        let a = links::ctc_string(&got.row(r)[cols.clone()], 12, "0123456789?");
        let b = links::ctc_string(&reference.row(f)[cols.clone()], 12, "0123456789?");
        same += usize::from(a == b);
    }
    assert!(got.len() == 20 && same >= 19, "{same} of {} strings as the reference", got.len());
    let _ = std::fs::remove_dir_all(&dir);
}

/// A synthetic workload's manifest in a fresh temporary folder, `models` as (name, kind keys), each
/// with a placeholder ONNX file: the folder, the manifest's text and the manifest.
fn synthetic_manifest(tag: &str, models: &[(&str, &str)]) -> (PathBuf, String, Manifest) {
    let dir = std::env::temp_dir().join(format!("jetlink-seq-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = format!("name = \"synth-{tag}\"\nstream = \"s.jls\"\n");
    for (name, keys) in models {
        std::fs::write(dir.join(format!("{name}.onnx")), "placeholder").unwrap();
        text += &format!(
            "[[model]]\nname = \"{name}\"\nonnx = \"{name}.onnx\"\n{keys}\ninput_shape = [1, 4]\nview = []\n"
        );
    }
    let m = Manifest::parse(&text, &dir.join("manifest.toml")).unwrap();
    (dir, text, m)
}

/// A CTC recogniser's per-step columns for the symbol columns `symbols` (1..C; 0 is the blank) over
/// `t` steps: blank runs of 0..1 steps before each symbol (at least 1 between repeats), each symbol
/// held 1..2 steps, blanks to the end.
fn random_alignment(rng: &mut links::Rng, symbols: impl IntoIterator<Item = usize>, t: usize) -> Vec<usize> {
    let mut cols = Vec::new();
    let mut prev = usize::MAX;
    for sym in symbols {
        let blanks = rng.below(2) + usize::from(prev == sym && cols.last() != Some(&0));
        cols.extend(std::iter::repeat_n(0, blanks));
        cols.extend(std::iter::repeat_n(sym, 1 + rng.below(2)));
        prev = sym;
    }
    assert!(cols.len() <= t);
    cols.resize(t, 0);
    cols
}

/// A workload where the sources determine the sequence: a vector `code` (the digits of a 2- to
/// 4-digit string, one-hot per position, with noise) and a CTC recogniser `text` that emits the
/// same string at a random alignment (each symbol 1-2 steps, blank runs of random length), with a
/// `first` digit classifier beside them. Links must recover the exact string (vec->seq, through the
/// canonical alignment) and the first digit from the CTC frames (seq->vec).
#[test]
fn sequence_links_recover_what_their_sources_determine() {
    const T: usize = 16;
    const C: usize = 11;
    let (dir, text, m) = synthetic_manifest(
        "seq",
        &[
            ("code", "kind = \"regression\"\nsize = 40"),
            (
                "text",
                "kind = \"sequence\"\nsize = 176\nsteps = 16\ndecode = \"ctc\"\nalphabet = \"0123456789\"",
            ),
            ("first", "kind = \"class\"\nsize = 10"),
        ],
    );
    let mut rec = Recording::new(m.models.iter().map(jetlink::recording::RecordedModel::of).collect());
    let mut rng = links::Rng::new(25);
    for f in 0..1500u32 {
        let len = 2 + rng.below(3);
        let digits: Vec<usize> = (0..len).map(|_| rng.below(10)).collect();
        let mut row = vec![0.0f32; 40 + T * C + 10];
        for (p, &d) in digits.iter().enumerate() {
            row[p * 10 + d] = 1.0;
        }
        for v in &mut row[..40] {
            *v += rng.symmetric(0.2);
        }
        // CTC frames at a random alignment; soft probabilities around the chosen column.
        let ctc = &mut row[40..40 + T * C];
        let cols = random_alignment(&mut rng, digits.iter().map(|&d| d + 1), T);
        for (t, &k) in cols.iter().take(T).enumerate() {
            for c in 0..C {
                ctc[t * C + c] = if c == k { 0.8 } else { 0.2 / (C - 1) as f32 };
            }
        }
        row[40 + T * C + digits[0]] = 1.0;
        rec.push(f, &row);
    }
    let opts = BuildOptions {
        train: TrainOptions::default(),
        threads: 2,
        progress: false,
        ..BuildOptions::default()
    };
    let b = jetlink::train::build(&m, &rec, 1500, &opts).unwrap();
    println!("{}", jetlink::report::scores_markdown(&b, false));
    let (code, textm, first) = (0, 1, 2);
    // The loop's link path: with a sequence output, a cuda build keeps every link on the CPU and
    // says why (no GPU is needed to check it: the bundle decides before any GPU is looked for).
    let e = jetlink::gpu::LinkExecutor::new(&b);
    assert_eq!(e.backend(), jetlink::gpu::Backend::Cpu);
    let note = if cfg!(feature = "cuda") { Some(jetlink::gpu::SEQUENCE_CPU_NOTE) } else { None };
    assert_eq!(e.cpu_note(), note);
    // The decoded strings agree; the constant string does not.
    assert!(b.link_score(code, textm) > 0.8, "code -> text {}", b.link_score(code, textm));
    assert!(b.scores.constant[textm] < 0.1, "constant {}", b.scores.constant[textm]);
    // The first digit from the CTC frames, whatever their alignment.
    assert!(b.link_score(textm, first) > 0.8, "text -> first {}", b.link_score(textm, first));

    // Trained on the recogniser's own alignment (per-step classes) instead of the canonical one,
    // the same link reads the string far less often (held-out rows, same ctc rule).
    let raw_text = text.replace("decode = \"ctc\"\nalphabet = \"0123456789\"", "decode = \"argmax\"");
    let m_raw = Manifest::parse(&raw_text, &dir.join("manifest.toml")).unwrap();
    let mut rec_raw =
        Recording::new(m_raw.models.iter().map(jetlink::recording::RecordedModel::of).collect());
    for r in 0..rec.len() {
        rec_raw.push(rec.frames[r], rec.row(r));
    }
    let b_raw = jetlink::train::build(&m_raw, &rec_raw, 1500, &opts).unwrap();
    let held = |bundle: &jetlink::bundle::Bundle| {
        let mut p = Predictor::new(bundle);
        let mut out = vec![0.0; rec.stride()];
        let cols = rec.layout().range(textm);
        let rows = 1200..1500;
        let hits: f32 = rows
            .clone()
            .map(|r| {
                p.predict(ModelSet::single(code), rec.row(r), &mut out).unwrap();
                links::agreement(
                    m.models[textm].kind,
                    m.models[textm].scoring(),
                    &out[cols.clone()],
                    &rec.row(r)[cols.clone()],
                )
            })
            .sum();
        hits / rows.len() as f32
    };
    let (canonical, raw) = (held(&b), held(&b_raw));
    println!("code -> text on held-out rows: canonical alignment {canonical:.3}, own alignment {raw:.3}");
    assert!(canonical > 0.8 && canonical > raw + 0.2, "canonical {canonical}, own alignment {raw}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Two readers of the same digit string: `reader`, one class per position (`argmax`, 6 steps of
/// 10 digits and '_' for none), and `text`, a CTC recogniser that emits each digit relabelled
/// (d → d + 3 mod 10) at a random alignment. Links between two symbol sequences share one map over
/// every position (`links::StepTie`), so from 120 training rows each reads the other's string
/// exactly on held-out rows, both ways (a dense link, measured once: 0.79 one way, less the other).
#[test]
fn position_tied_links_read_one_reader_from_another() {
    const T: usize = 20;
    let (dir, _, m) = synthetic_manifest(
        "tied",
        &[
            ("reader", "kind = \"sequence\"\nsize = 66\nsteps = 6\ndecode = \"argmax\""),
            (
                "text",
                "kind = \"sequence\"\nsize = 220\nsteps = 20\ndecode = \"ctc\"\nalphabet = \"0123456789\"",
            ),
        ],
    );
    let mut rec = Recording::new(m.models.iter().map(jetlink::recording::RecordedModel::of).collect());
    let mut rng = links::Rng::new(31);
    for f in 0..450u32 {
        let len = 2 + rng.below(5);
        let digits: Vec<usize> = (0..len).map(|_| rng.below(10)).collect();
        let mut row = vec![0.0f32; 66 + T * 11];
        for p in 0..6 {
            let class = digits.get(p).copied().unwrap_or(10);
            for c in 0..11 {
                row[p * 11 + c] = if c == class { 2.0 + rng.f32() } else { rng.symmetric(1.0) };
            }
        }
        let cols = random_alignment(&mut rng, digits.iter().map(|&d| (d + 3) % 10 + 1), T);
        for (t, &k) in cols.iter().enumerate() {
            for c in 0..11 {
                row[66 + t * 11 + c] = if c == k { 0.8 } else { 0.02 };
            }
        }
        rec.push(f, &row);
    }
    let opts = BuildOptions {
        train: TrainOptions::default(),
        threads: 2,
        progress: false,
        ..BuildOptions::default()
    };
    let b = jetlink::train::build(&m, &rec, 150, &opts).unwrap();
    // Each tied link is stored as a dense one no wider than the dense link the pair would have had
    // (6 positions: 64 units each into `text`, 132 / 6 = 22 each into `reader`).
    let widths: Vec<u32> = b.links.dims.iter().map(|d| d.hidden).collect();
    assert_eq!(widths, [6 * 22, 6 * 64], "hidden widths into reader, into text");
    let mut p = Predictor::new(&b);
    let mut out = vec![0.0; rec.stride()];
    for (from, to) in [(0, 1), (1, 0)] {
        let cols = rec.layout().range(to);
        let rows = 150..450;
        let hits: f32 = rows
            .clone()
            .map(|r| {
                p.predict(ModelSet::single(from), rec.row(r), &mut out).unwrap();
                let kind = m.models[to].kind;
                links::agreement(kind, m.models[to].scoring(), &out[cols.clone()], &rec.row(r)[cols.clone()])
            })
            .sum();
        let share = hits / rows.len() as f32;
        println!("{} -> {}: exact on held-out rows {share:.3}", m.models[from].name, m.models[to].name);
        // A dense link from the same rows reads about 0.8 of them (measured when this was added).
        assert!(share > 0.95, "{} -> {}: {share}", m.models[from].name, m.models[to].name);
    }
    // On-line adaptation keeps the tie: steps on rows the link was not fitted on move the link
    // into `text` and leave it tied, allocating nothing.
    let mut adapter =
        links::Adapter::new(&b, &p, links::AdaptOptions { max_batch: 32, ..Default::default() });
    let idx = b.links.index(0, 1);
    let before = p.links().block(idx).to_vec();
    let tie = links::StepTie::between(m.models[0].kind, 66, m.models[1].kind, 220, 1).unwrap();
    let tie = tie.with_width(b.links.dims[idx].hidden as usize / tie.positions());
    assert!(tie.holds(&before), "the built link is not tied");
    let rows: Vec<f32> = (150..182).flat_map(|r| rec.row(r).to_vec()).collect();
    let (_, n) = allocations(|| {
        for _ in 0..5 {
            adapter.step(&mut p, 1, ModelSet::all(2), &rows).unwrap();
        }
    });
    assert_eq!(n, 0, "adapting a tied link allocated");
    let after = p.links().block(idx);
    assert_ne!(after, &before[..], "adaptation did not move the link");
    assert!(tie.holds(after), "adaptation broke the tie");
    let _ = std::fs::remove_dir_all(&dir);
}
