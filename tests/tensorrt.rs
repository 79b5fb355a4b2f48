//! The TensorRT plan rules that need no TensorRT: version decoding, plan naming, and the sidecar check
//! that refuses a plan built for another TensorRT version, board or GPU. `plan.rs` is included by
//! path so these run in every build, with or without the `tensorrt` feature.

#[path = "../src/engine/tensorrt/plan.rs"]
#[allow(dead_code)]
mod plan;

use std::path::{Path, PathBuf};

use plan::{PlanSidecar, PlanTarget, TrtVersion};

#[test]
fn lib_version_codes_decode_in_both_encodings() {
    // NV_TENSORRT_VERSION as the 8.x and 10.x headers define it (checked against the headers of
    // NVIDIA/TensorRT tags 8.6.1 and v10.3.0): major*1000+minor*100+patch, then major*10000+...
    assert_eq!(TrtVersion::from_lib_code(8501), Some(TrtVersion::new(8, 5, 1)));
    assert_eq!(TrtVersion::from_lib_code(8602), Some(TrtVersion::new(8, 6, 2)));
    assert_eq!(TrtVersion::from_lib_code(100300), Some(TrtVersion::new(10, 3, 0)));
    assert_eq!(TrtVersion::from_lib_code(101301), Some(TrtVersion::new(10, 13, 1)));
    for bad in [-1, 0, 86, 10300, 99999] {
        assert_eq!(TrtVersion::from_lib_code(bad), None, "{bad}");
    }
}

#[test]
fn versions_parse_and_print() {
    assert_eq!(TrtVersion::parse("10.3.0"), Some(TrtVersion::new(10, 3, 0)));
    assert_eq!(TrtVersion::parse("8.6.2.3"), Some(TrtVersion::new(8, 6, 2)));
    assert_eq!(TrtVersion::parse("8.5"), Some(TrtVersion::new(8, 5, 0)));
    assert_eq!(TrtVersion::parse("10"), None);
    assert_eq!(TrtVersion::parse("10.x.0"), None);
    assert_eq!(TrtVersion::parse("1.2.3.4.5"), None);
    assert_eq!(TrtVersion::new(10, 3, 0).to_string(), "10.3.0");
    assert_eq!(TrtVersion::new(10, 3, 0).short(), "10.3");
}

#[test]
fn plan_names_carry_board_and_version() {
    let v = TrtVersion::new(10, 3, 0);
    let p = plan::plan_path(Path::new("demo/models/digit_mlp.onnx"), "orin-nano-8gb", v);
    assert_eq!(p, PathBuf::from("demo/models/digit_mlp.orin-nano-8gb.trt10.3.plan"));
    assert_eq!(
        plan::sidecar_path(&p),
        PathBuf::from("demo/models/digit_mlp.orin-nano-8gb.trt10.3.plan.toml")
    );
    let p = plan::plan_path(Path::new("m.onnx"), "xavier-nx-8gb", TrtVersion::new(8, 5, 2));
    assert_eq!(p, PathBuf::from("m.xavier-nx-8gb.trt8.5.plan"));
    assert_eq!(plan::compute_capability_of_arch("sm_87").as_deref(), Some("8.7"));
    assert_eq!(plan::compute_capability_of_arch("sm_72").as_deref(), Some("7.2"));
    assert_eq!(plan::compute_capability_of_arch("sm_100").as_deref(), Some("10.0"));
    assert_eq!(plan::compute_capability_of_arch("none"), None);
}

/// A sidecar exactly as tools/trt/build_plans.sh writes it.
const SIDECAR: &str = r#"# written by tools/trt/build_plans.sh; checked by jetlink before the plan is loaded
format = 1
onnx = "digit_mlp.onnx"
onnx-sha256 = "c9c129cd8be8ea1bf87daf8b31b5411213e7e6e5963bf9ee28bb1456776a2804"
board = "orin-nano-8gb"
tensorrt = "10.3.0"
gpu = "Orin"
compute-capability = "8.7"
precision = "fp16"
shapes = ""
built = "2026-11-26T16:38:55Z"
"#;

fn sidecar() -> PlanSidecar {
    toml::from_str(SIDECAR).unwrap()
}

const ORIN: PlanTarget<'static> =
    PlanTarget { board: "orin-nano-8gb", cuda_arch: "sm_87", tensorrt: TrtVersion::new(10, 3, 0) };

#[test]
fn sidecar_check_accepts_the_matching_plan() {
    let s = sidecar();
    assert_eq!(s.dla_core, None);
    let f = Path::new("digit_mlp.orin-nano-8gb.trt10.3.plan.toml");
    plan::check_sidecar(&s, f, &ORIN, None).unwrap();
    plan::check_sidecar(&s, f, &ORIN, Some(&s.onnx_sha256.to_uppercase())).unwrap();
}

#[test]
fn sidecar_check_refuses_another_tensorrt_board_gpu_or_onnx() {
    let s = sidecar();
    let f = Path::new("x.plan.toml");
    let e =
        |t: &PlanTarget<'_>, sha: Option<&str>| plan::check_sidecar(&s, f, t, sha).unwrap_err().to_string();

    let jp5 = PlanTarget { tensorrt: TrtVersion::new(8, 5, 2), ..ORIN };
    assert_eq!(
        e(&jp5, None),
        "x.plan.toml: key `tensorrt`: the plan was built by TensorRT 10.3.0, but TensorRT 8.5.2 is loaded; \
         plans are not portable across TensorRT versions: rebuild it on this board with tools/trt/build_plans.sh"
    );
    let patch = PlanTarget { tensorrt: TrtVersion::new(10, 3, 1), ..ORIN };
    assert!(e(&patch, None).contains("built by TensorRT 10.3.0, but TensorRT 10.3.1 is loaded"));

    let nx = PlanTarget { board: "orin-nx-16gb", ..ORIN };
    assert!(
        e(&nx, None).starts_with("x.plan.toml: key `board`: the plan was built for board \"orin-nano-8gb\"")
    );

    let mut volta = s.clone();
    volta.compute_capability = "7.2".into();
    let err = plan::check_sidecar(&volta, f, &ORIN, None).unwrap_err().to_string();
    assert!(err.contains("key `compute-capability`") && err.contains("has 8.7 (sm_87)"), "{err}");
    let mut unknown = s.clone();
    unknown.compute_capability = "unknown".into();
    plan::check_sidecar(&unknown, f, &ORIN, None).unwrap();

    assert!(
        e(&ORIN, Some("00"))
            .contains("key `onnx-sha256`: the plan was built from another version of digit_mlp.onnx")
    );

    let mut garbled = s.clone();
    garbled.tensorrt = "ten".into();
    let err = plan::check_sidecar(&garbled, f, &ORIN, None).unwrap_err().to_string();
    assert!(err.contains("key `tensorrt`: \"ten\" is not a version"), "{err}");
}

#[test]
fn sidecar_files_are_strict() {
    let typo = SIDECAR.replace("precision", "precison");
    let err = toml::from_str::<PlanSidecar>(&typo).unwrap_err().to_string();
    assert!(err.contains("unknown field `precison`"), "{err}");
    let dla: PlanSidecar = toml::from_str(&format!("{SIDECAR}dla-core = 1\n")).unwrap();
    assert_eq!(dla.dla_core, Some(1));
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("jetlink-trt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn locate_names_the_missing_plan_and_the_plans_that_exist() {
    let d = scratch("locate");
    let onnx = d.join("digit_mlp.onnx");
    std::fs::write(&onnx, b"not really onnx").unwrap();
    let old = d.join("digit_mlp.orin-nano-8gb.trt8.6.plan");
    std::fs::write(&old, b"plan").unwrap();
    std::fs::write(d.join("other.orin-nano-8gb.trt10.3.plan"), b"plan").unwrap();

    let err = plan::locate(&onnx, &ORIN).unwrap_err().to_string();
    let want = d.join("digit_mlp.orin-nano-8gb.trt10.3.plan");
    assert!(
        err.starts_with(&format!(
            "no TensorRT plan {} (board \"orin-nano-8gb\", TensorRT 10.3)",
            want.display()
        )),
        "{err}"
    );
    assert!(err.contains(&format!("plans found for this model: {}.", old.display())), "{err}");
    assert!(!err.contains("other."), "{err}");

    // The plan without its sidecar is refused.
    std::fs::write(&want, b"plan").unwrap();
    let err = plan::locate(&onnx, &ORIN).unwrap_err().to_string();
    assert!(err.contains("missing sidecar") && err.contains("a plan without one is refused"), "{err}");

    // With a sidecar for this ONNX file, it is found; after the ONNX file changes, refused.
    let sha = plan::sha256_hex(b"not really onnx");
    let text = SIDECAR.replace("c9c129cd8be8ea1bf87daf8b31b5411213e7e6e5963bf9ee28bb1456776a2804", &sha);
    std::fs::write(plan::sidecar_path(&want), text).unwrap();
    let (p, s) = plan::locate(&onnx, &ORIN).unwrap();
    assert_eq!((p, s.precision.as_str()), (want.clone(), "fp16"));
    std::fs::write(&onnx, b"retrained").unwrap();
    let err = plan::locate(&onnx, &ORIN).unwrap_err().to_string();
    assert!(err.contains("key `onnx-sha256`"), "{err}");

    // A board that carries only plans (no ONNX file) skips the hash check.
    std::fs::remove_file(&onnx).unwrap();
    plan::locate(&onnx, &ORIN).unwrap();
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn sha256_is_lower_hex() {
    assert_eq!(plan::sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}

#[test]
fn input_shapes_resolve_from_the_manifest() {
    assert_eq!(plan::resolve_input_shape(&[1, 784], &[1, 784]), Ok((vec![1, 784], false)));
    assert_eq!(plan::resolve_input_shape(&[-1, 3, 48, 48], &[1, 3, 48, 48]), Ok((vec![1, 3, 48, 48], true)));
    let e = plan::resolve_input_shape(&[1, 784], &[1, 1, 28, 28]).unwrap_err();
    assert!(e.contains("rank 2"), "{e}");
    let e = plan::resolve_input_shape(&[1, 400], &[1, 784]).unwrap_err();
    assert!(e.contains("(dimension 1)"), "{e}");
}

/// With the feature: the library this test binary loaded. On a Jetson these run against the real
/// TensorRT; nowhere else can they link.
#[cfg(feature = "tensorrt")]
mod with_tensorrt {
    use jetlink::engine::tensorrt::TrtVersion;
    use jetlink::engine::{PreparedModel, TensorRtBackend, tensorrt};
    use jetlink::manifest::Manifest;
    use jetlink::recording::Recording;
    use jetlink::stream::Stream;
    use jetlink::view::Shape;

    #[test]
    fn loaded_tensorrt_matches_the_headers() {
        let compiled = tensorrt::compiled_version();
        let loaded = tensorrt::loaded_version().unwrap();
        assert!(compiled >= TrtVersion::new(8, 5, 0), "{compiled}");
        assert_eq!(compiled.major, loaded.major, "headers {compiled}, library {loaded}");
    }

    /// Every demo model that has a plan for this board and TensorRT matches the onnxruntime reference
    /// (FP32 plans within 1e-3, FP16 within 5e-2). Run on the board after tools/trt/build_plans.sh.
    #[test]
    #[ignore = "needs a Jetson, TensorRT and plans built by tools/trt/build_plans.sh"]
    fn demo_plans_match_the_reference() {
        let m =
            Manifest::load(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/manifest.toml")))
                .unwrap();
        let s = Stream::load(&m.path_of(&m.stream)).unwrap();
        let r = Recording::load(&m.path_of(m.reference.as_ref().unwrap())).unwrap();
        let shape = Shape { h: s.height, w: s.width, c: s.channels };
        let backend = TensorRtBackend::new().unwrap();
        let mut ran = 0;
        for (mi, spec) in m.models.iter().enumerate() {
            let mut p = match PreparedModel::prepare(spec, &m, shape, &backend) {
                Ok(p) => p,
                Err(e) => {
                    eprintln!("skip {}: {e:#}", spec.name);
                    continue;
                }
            };
            let board = jetlink::board::current().name;
            let plan = tensorrt::plan_path(&m.path_of(&spec.onnx), board, backend.tensorrt_version());
            let side = tensorrt::PlanSidecar::load(&tensorrt::plan::sidecar_path(&plan)).unwrap();
            let tol = if side.precision == "fp32" { 1e-3 } else { 5e-2 };
            let mut out = vec![0.0f32; spec.size as usize];
            for f in (0..s.len()).step_by(s.len().div_ceil(16).max(1)) {
                p.run(s.frame(f), &mut out).unwrap();
                let row = r.row_of_frame(f as u32).unwrap();
                for (a, b) in out.iter().zip(r.output(row, mi)) {
                    assert!(
                        (a - b).abs() <= tol,
                        "{} frame {f}: {a} vs reference {b} (tol {tol})",
                        spec.name
                    );
                }
            }
            ran += 1;
        }
        assert!(ran > 0, "no model had a plan");
    }
}
