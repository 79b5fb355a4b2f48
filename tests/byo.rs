//! Bring your own models and frames (issue 15): a second workload, built here and unlike the demo
//! (other models, names and order; two-output ONNX classifiers; no `[model.cost]`; frames from a
//! folder of images), goes `stream → profile → record → build → run → bench mlink` through the
//! release binary, from a working directory that is not the repository, with a key made by
//! `jetlink keygen`. The refusals met on the way name the file, model and field.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use prost::Message;
use tract_onnx::pb::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto, tensor_shape_proto, type_proto,
};

use jetlink::manifest::Manifest;

const FLOAT: i32 = 1;
const INT64: i32 = 7;
const SIDE: u32 = 12;
const FRAMES: u32 = 120;
const DRIFT: u32 = 90;

fn jetlink(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .expect("running jetlink");
    out
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let o = jetlink(dir, args);
    let (so, se) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "jetlink {args:?} failed ({}):\n{so}\n{se}", o.status);
    println!("$ jetlink {}\n{so}{se}", args.join(" "));
    format!("{so}{se}")
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn refused(dir: &Path, args: &[&str]) -> String {
    let o = jetlink(dir, args);
    assert!(!o.status.success(), "jetlink {args:?} should have failed");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    // The refusal itself (anyhow prints a backtrace after it when RUST_BACKTRACE is set).
    let shown: String = text.lines().take_while(|l| !l.contains("backtrace")).collect::<Vec<_>>().join("\n");
    println!("$ jetlink {} (refused)\n{shown}", args.join(" "));
    text
}

/// Deterministic numbers in [-1, 1).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

fn value_info(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    let dim = dims
        .iter()
        .map(|&d| tensor_shape_proto::Dimension {
            value: Some(tensor_shape_proto::dimension::Value::DimValue(d)),
            ..Default::default()
        })
        .collect();
    ValueInfoProto {
        name: name.into(),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type,
                shape: Some(TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn weights(name: &str, dims: &[i64], rng: &mut Lcg, scale: f32) -> TensorProto {
    let n: i64 = dims.iter().product();
    TensorProto {
        name: name.into(),
        dims: dims.to_vec(),
        data_type: FLOAT,
        float_data: (0..n).map(|_| scale * rng.next()).collect(),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: op.into(),
        name: outputs[0].into(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn int_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto { name: name.into(), r#type: 2, i: v, ..Default::default() }
}

fn model(graph: GraphProto) -> Vec<u8> {
    ModelProto {
        ir_version: 7,
        opset_import: vec![OperatorSetIdProto { domain: String::new(), version: 13 }],
        producer_name: "jetlink tests/byo.rs".into(),
        graph: Some(graph),
        ..Default::default()
    }
    .encode_to_vec()
}

/// A linear classifier with skl2onnx's output order: int64 `label` first, `probabilities` second.
fn classifier(inputs: i64, classes: i64, seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    model(GraphProto {
        name: "classifier".into(),
        node: vec![
            node("MatMul", &["x", "W"], &["z"], vec![]),
            node("Add", &["z", "B"], &["logits"], vec![]),
            node("Softmax", &["logits"], &["probabilities"], vec![int_attr("axis", 1)]),
            node(
                "ArgMax",
                &["probabilities"],
                &["label"],
                vec![int_attr("axis", 1), int_attr("keepdims", 1)],
            ),
        ],
        initializer: vec![
            weights("W", &[inputs, classes], &mut rng, 0.4),
            weights("B", &[classes], &mut rng, 0.1),
        ],
        input: vec![value_info("x", FLOAT, &[1, inputs])],
        output: vec![value_info("label", INT64, &[1, 1]), value_info("probabilities", FLOAT, &[1, classes])],
        ..Default::default()
    })
}

/// A linear regression with one output.
fn regression(inputs: i64, outputs: i64, seed: u64) -> Vec<u8> {
    let mut rng = Lcg(seed);
    model(GraphProto {
        name: "regression".into(),
        node: vec![node("MatMul", &["x", "W"], &["z"], vec![]), node("Add", &["z", "B"], &["y"], vec![])],
        initializer: vec![
            weights("W", &[inputs, outputs], &mut rng, 0.2),
            weights("B", &[outputs], &mut rng, 0.1),
        ],
        input: vec![value_info("x", FLOAT, &[1, inputs])],
        output: vec![value_info("y", FLOAT, &[1, outputs])],
        ..Default::default()
    })
}

/// Frame k: a bright 3×3 blob moving over a noisy background; from DRIFT on the camera degrades
/// (brighter, noisier).
fn write_images(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    let mut rng = Lcg(7);
    for k in 0..FRAMES {
        let (cx, cy) = ((k * 7) % (SIDE - 2), (k * 5) % (SIDE - 2));
        let drift = k >= DRIFT;
        let img = image::GrayImage::from_fn(SIDE, SIDE, |x, y| {
            let noise = rng.next() * if drift { 60.0 } else { 20.0 };
            let blob = if (cx..cx + 3).contains(&x) && (cy..cy + 3).contains(&y) { 200.0 } else { 30.0 };
            let v = blob + noise + if drift { 40.0 } else { 0.0 } + 4.0 * x as f32;
            image::Luma([v.clamp(0.0, 255.0) as u8])
        });
        img.save(dir.join(format!("frame-{k:04}.png"))).unwrap();
    }
}

/// The models in manifest order (`[[model]]` blocks without costs).
const MODELS: &str = r#"
[[model]]
name = "glow"
onnx = "models/glow.onnx"
kind = "regression"
size = 2
tolerance = 0.25
input_shape = [1, 144]
view = [{ op = "normalize", mean = 0.5, std = 0.5 }]

[[model]]
name = "where_blob"
onnx = "models/where_blob.onnx"
output = "probabilities"
kind = "class"
size = 4
input_shape = [1, 36]
view = [{ op = "pool", k = 2 }, { op = "normalize", mean = 0.5, std = 0.5 }]

[[model]]
name = "corner"
onnx = "models/corner.onnx"
output = "probabilities"
kind = "class"
size = 3
importance = 2.0
input_shape = [1, 36]
view = [{ op = "crop", x = 0, y = 0, w = 6, h = 6 }, { op = "normalize", mean = 0.5, std = 0.5 }]
"#;

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetlink-byo-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn a_second_workload_goes_from_images_to_a_run_and_a_benchmark() {
    let w = scratch("flow");
    // The workload lives in w/work; commands run from w (not the repository, not the manifest's folder).
    let work = w.join("work");
    std::fs::create_dir_all(work.join("models")).unwrap();
    std::fs::write(work.join("models/glow.onnx"), regression(144, 2, 11)).unwrap();
    std::fs::write(work.join("models/where_blob.onnx"), classifier(36, 4, 12)).unwrap();
    std::fs::write(work.join("models/corner.onnx"), classifier(36, 3, 13)).unwrap();
    write_images(&w.join("images"));

    // stream: a folder of PNGs → JLSTRM01 (size of the first image, grey).
    let o =
        ok(&w, &["stream", "images", "--out", "work/frames.jls.gz", "--train", "60", "--drift-start", "90"]);
    assert!(o.contains("120 frames of 12x12x1"), "{o}");

    let manifest =
        format!("name = \"blobs\"\nstream = \"frames.jls.gz\"\nreference = \"reference.jlr.gz\"\n{MODELS}");
    std::fs::write(work.join("manifest.toml"), &manifest).unwrap();
    // The same models in another order, for the reference: everything downstream matches by name.
    let mut blocks: Vec<&str> = MODELS.split("[[model]]").filter(|b| !b.trim().is_empty()).collect();
    blocks.reverse();
    let reversed: String = blocks.iter().map(|b| format!("[[model]]{b}")).collect();
    std::fs::write(
        work.join("record.toml"),
        format!("name = \"blobs\"\nstream = \"frames.jls.gz\"\n{reversed}"),
    )
    .unwrap();

    // A two-output file read without `output`: the error lists every output with its shape.
    std::fs::write(work.join("first-output.toml"), manifest.replace("output = \"probabilities\"\n", ""))
        .unwrap();
    let e =
        refused(&w, &["record", "--manifest", "work/first-output.toml", "--out", "work/x.jlr", "--to", "2"]);
    assert!(
        e.contains("where_blob")
            && e.contains("\"label\"")
            && e.contains("\"probabilities\"")
            && e.contains("size = 4"),
        "{e}"
    );
    assert!(e.contains("models/where_blob.onnx"), "{e}");
    std::fs::write(
        work.join("bad-output.toml"),
        manifest.replacen("output = \"probabilities\"", "output = \"probs\"", 1),
    )
    .unwrap();
    let e =
        refused(&w, &["record", "--manifest", "work/bad-output.toml", "--out", "work/x.jlr", "--to", "2"]);
    assert!(e.contains("where_blob") && e.contains("`output`") && e.contains("\"probs\""), "{e}");

    // profile: measures every model and writes the blocks into the manifest.
    let o = ok(&w, &["profile", "--manifest", "work/manifest.toml", "--frames", "5", "--write"]);
    assert!(o.contains("wrote [model.cost] for glow, where_blob, corner"), "{o}");
    let m = Manifest::load(&work.join("manifest.toml")).unwrap();
    let cost = |n: &str| m.models[m.model_index(n).unwrap()].cost.clone();
    // FLOPs: 2 × the MatMul's multiply-accumulates; weights: W and B as f32.
    assert_eq!(cost("glow").flops, 2 * 144 * 2);
    assert_eq!(cost("where_blob").flops, 2 * 36 * 4);
    assert_eq!(cost("corner").flops, 2 * 36 * 3);
    assert_eq!(cost("glow").weight_bytes, 4 * (144 * 2 + 2));
    assert_eq!(cost("where_blob").weight_bytes, 4 * (36 * 4 + 4));
    // Activations: at least the input and the output vector are live at once.
    assert!(cost("glow").activation_bytes >= 4 * (144 + 2), "{:?}", cost("glow"));
    assert!(cost("corner").latency_us > 0.0 && cost("corner").latency_runtime.starts_with("tract-onnx"));
    assert!(std::fs::read_to_string(work.join("manifest.toml")).unwrap().contains("name = \"glow\""));

    // record: the reference over the whole stream, with the models in another order.
    let o = ok(
        &w,
        &[
            "record",
            "--manifest",
            "work/record.toml",
            "--from",
            "0",
            "--to",
            "120",
            "--out",
            "work/reference.jlr.gz",
        ],
    );
    assert!(o.contains("recorded 120 frames x 3 models"), "{o}");
    // models: outputs compared with the reference by model name (recorded in another order): equal.
    let o = ok(&w, &["models", "--manifest", "work/manifest.toml", "--frames", "12"]);
    for name in ["glow", "where_blob", "corner"] {
        let row =
            o.lines().find(|l| l.starts_with(name)).unwrap_or_else(|| panic!("no row for {name}:\n{o}"));
        assert!(row.trim_end().ends_with("0.0e0"), "{name} differs from its own reference: {row}");
    }
    // A reference that lacks a model is refused, naming it.
    let two: String = blocks[..2].iter().map(|b| format!("[[model]]{b}")).collect();
    std::fs::write(work.join("two.toml"), format!("name = \"blobs\"\nstream = \"frames.jls.gz\"\n{two}"))
        .unwrap();
    ok(&w, &["record", "--manifest", "work/two.toml", "--to", "60", "--out", "work/two.jlr"]);

    // keygen: a key that is not the demo's.
    let o = jetlink(&w, &["keygen", "--out", "my.key"]);
    assert!(o.status.success());
    let public = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(public.len(), 64);
    let key_id = String::from_utf8_lossy(&o.stderr)
        .split("key id ")
        .nth(1)
        .map(|s| s.trim().split_whitespace().next().unwrap().to_string())
        .unwrap();

    // build: refusals before any training (key ids printed as keygen prints them), then the signed bundle.
    let board_key_id = jetlink::bundle::hex(&jetlink::signing::key_id(&jetlink::board::current().bundle_key));
    let e = refused(&w, &["build", "--manifest", "work/manifest.toml", "--key", "my.key"]);
    assert!(e.contains("--out is required"), "{e}");
    let e = refused(
        &w,
        &["build", "--manifest", "work/manifest.toml", "--out", "work/blobs.bundle", "--key", "nope.key"],
    );
    assert!(e.contains("nope.key") && e.contains(&format!("trusts key id {board_key_id}")), "{e}");
    assert!(!work.join("blobs.bundle").exists());
    let e = refused(&w, &["build", "--manifest", "work/manifest.toml", "--out", "work/blobs.bundle"]);
    assert!(
        e.contains("no --key")
            && e.contains("--unsigned")
            && e.contains(&format!("trusts key id {board_key_id}")),
        "{e}"
    );
    assert!(!work.join("blobs.bundle").exists());
    let e = refused(
        &w,
        &[
            "build",
            "--manifest",
            "work/manifest.toml",
            "--out",
            "work/x.bundle",
            "--key",
            "my.key",
            "--recording",
            "work/two.jlr",
        ],
    );
    assert!(e.contains("work/two.jlr") && e.contains("has no model \"glow\""), "{e}");
    let o = ok(
        &w,
        &[
            "build",
            "--manifest",
            "work/manifest.toml",
            "--out",
            "work/blobs.bundle",
            "--key",
            "my.key",
            "--epochs",
            "60",
        ],
    );
    assert!(o.contains(&format!("signed by key id {key_id}")), "{o}");
    assert!(o.contains("trained 6 links and 3 ensembles"), "{o}");

    // run: the host-sim board trusts the demo key; this bundle is trusted through --trust-key.
    let run_args = |extra: &[&str]| -> Vec<String> {
        let mut v: Vec<String> = [
            "run",
            "--manifest",
            "work/manifest.toml",
            "--bundle",
            "work/blobs.bundle",
            "--serial",
            "file:serial.bin",
            "--state-file",
            "state/version",
            "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let e = refused(&w, &strs(&run_args(&[])));
    assert!(e.contains("refused") && e.contains("key"), "{e}");
    let e = refused(&w, &strs(&run_args(&["--trust-key", &public, "--budget", "999999999999"])));
    assert!(e.contains("above board host-sim's model budget"), "{e}");
    let budget = (cost("where_blob").memory_bytes() + cost("corner").memory_bytes()).to_string();
    let o = ok(&w, &strs(&run_args(&["--trust-key", &public, "--budget", &budget])));
    assert!(o.contains(&format!("model budget")) && o.contains(&format!("--budget {budget} bytes")), "{o}");
    assert!(o.contains("summary over 60 ticks"), "{o}");
    assert!(o.contains("accuracy kept") && !o.contains("not measured"), "{o}");
    assert!(o.contains("over budget on 0 ticks"), "{o}");

    // bench mlink: a sweep of `jetlink run` (the reference's models are in another order than the
    // bundle's). Every row names the run that reproduces it.
    let o = ok(
        &w,
        &[
            "bench",
            "mlink",
            "--manifest",
            "work/manifest.toml",
            "--bundle",
            "work/blobs.bundle",
            "--trust-key",
            &public,
            "--state-file",
            "state/version",
            "--policies",
            "optimal,optimal-hold,interval-2",
            "--budgets",
            "50%,100%",
            "--out-dir",
            "bench",
        ],
    );
    assert!(o.contains("best overall"), "{o}");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(w.join("bench/mlink.json")).unwrap()).unwrap();
    assert!(json["hold_agreement"].as_array().is_some_and(|h| h.len() == 3));
    let rows = json["results"].as_array().unwrap();
    // The main job's settings, then 3 policies and 7 labelling variants of the first, at 2 budgets.
    assert_eq!(rows.len(), 1 + (3 + 7) * 2);
    assert_eq!(rows[0]["method"], "main");
    assert_eq!(json["main"], rows[0]);
    assert!(rows.iter().any(|r| r["method"] == "interval-2" && r["held_outputs"].as_u64().unwrap() > 0));
    for r in rows.iter().filter(|r| r["budget_share"] == 0.5 || r["method"] == "main").take(4) {
        let cmd = r["command"].as_str().unwrap();
        assert!(cmd.starts_with("jetlink run "), "{cmd}");
        assert_eq!(cmd.contains("--budget 50%"), r["method"] != "main", "{cmd}");
        let mut args: Vec<&str> = cmd.split_whitespace().skip(1).collect();
        args.extend(["--serial", "file:replay.bin", "--quiet"]);
        let out = ok(&w, &args);
        let pct = |k: &str| format!("{:.1}%", 100.0 * r["accuracy"][k].as_f64().unwrap());
        let line = format!("{} overall, {} clean, {} drift", pct("overall"), pct("clean"), pct("drift"));
        assert!(out.contains(&line), "{cmd}: expected {line}:\n{out}");
        let saved = format!("executions saved       {:.1}%", 100.0 * r["executions_saved"].as_f64().unwrap());
        assert!(out.contains(&saved), "{cmd}: expected {saved}:\n{out}");
    }
    let _ = std::fs::remove_dir_all(&w);
}

/// `run --budget`: the loop's budget each tick is at most the cap (`LoopOptions::budget_cap`), the
/// schedule stays within it, and a cap below the board's changes what runs.
#[test]
fn a_budget_cap_lowers_the_loop_budget_on_every_tick() {
    let d = jetlink::sim::DemoSet::demo().unwrap();
    let (manifest, bundle, stream, reference) = (&d.manifest, &d.bundle, &d.stream, &d.reference);
    let run = |cap: Option<u64>| {
        let mut b = jetlink::control::LoopBuilder::new(
            jetlink::board::current(),
            manifest.clone(),
            bundle.clone(),
            stream.clone(),
        )
        .reference(Some(reference.clone()))
        .engines(jetlink::sim::replay(reference.clone()));
        b.options_mut().budget_cap = cap;
        let from = stream.train_end;
        let writer = jetlink::wire::TelemetryWriter::new(jetlink::serial::MemWriter::new());
        let mut ctl = b.build_replay(from..from + 1500, writer).unwrap();
        let mut max_budget = 0;
        while ctl.tick() {
            max_budget = max_budget.max(ctl.budget());
        }
        ctl.finish();
        (max_budget, *ctl.stats())
    };
    let cap = 6_000_000;
    let (full_max, full) = run(None);
    let (capped_max, capped) = run(Some(cap));
    assert!(full_max > cap, "the board's budget ({full_max}) is above the cap in this test");
    assert!(capped_max <= cap, "budget {capped_max} above the cap {cap}");
    assert!(capped.peak_mem <= cap && capped.budget_violations == 0, "{capped:?}");
    assert!(full.peak_mem > cap, "with the board's budget the loop runs more than the cap allows: {full:?}");
}
