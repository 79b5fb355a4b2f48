//! TensorRT plan files: where a model's plan lives, the sidecar that says what it was built for, and
//! the checks that refuse a plan built for another TensorRT version, board or GPU before TensorRT is
//! asked to deserialise it.
//!
//! Plain Rust with no TensorRT in it, so it is tested in every build: `tests/tensorrt.rs` includes
//! this file by path. Keep it free of `crate::` paths.
//!
//! Naming (docs/tensorrt.md): the plan of `models/digit_mlp.onnx` for board `orin-nano-8gb` under
//! TensorRT 10.3 is `models/digit_mlp.orin-nano-8gb.trt10.3.plan`, next to the ONNX file, and its
//! sidecar is the same path with `.toml` appended. `tools/trt/build_plans.sh` writes both.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::{Deserialize, Serialize};

/// A TensorRT version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrtVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl TrtVersion {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        TrtVersion { major, minor, patch }
    }

    /// Decode `getInferLibVersion()` (or `NV_TENSORRT_VERSION`). TensorRT changed the encoding at
    /// 10.0: `major*1000 + minor*100 + patch` before (8.6.1 → 8601), `major*10000 + minor*100 +
    /// patch` from 10.0 (10.3.0 → 100300). `None` for codes neither encoding can give.
    pub fn from_lib_code(code: i32) -> Option<Self> {
        let c = u32::try_from(code).ok()?;
        let v = if c >= 100_000 {
            TrtVersion::new(c / 10_000, (c / 100) % 100, c % 100)
        } else if c >= 1_000 {
            TrtVersion::new(c / 1_000, (c / 100) % 10, c % 100)
        } else {
            return None;
        };
        // 10.x must use the new encoding and 1..=9 the old one, or the code is garbage.
        let new_scheme = c >= 100_000;
        ((v.major >= 10) == new_scheme && v.major >= 1).then_some(v)
    }

    /// Parse `"10.3.0"`, `"10.3.0.26"` (a build number, ignored) or `"8.6"` (patch 0).
    pub fn parse(s: &str) -> Option<Self> {
        let mut it = s.trim().split('.');
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        let patch = match it.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if let Some(build) = it.next() {
            build.parse::<u32>().ok()?;
        }
        if it.next().is_some() {
            return None;
        }
        Some(TrtVersion::new(major, minor, patch))
    }

    /// `"10.3"`: the part of the version that names a plan file.
    pub fn short(&self) -> String {
        format!("{}.{}", self.major, self.minor)
    }
}

impl fmt::Display for TrtVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The plan for `onnx` on `board` under TensorRT `version`: `<dir>/<stem>.<board>.trt<M>.<m>.plan`.
pub fn plan_path(onnx: &Path, board: &str, version: TrtVersion) -> PathBuf {
    let stem = onnx.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    onnx.with_file_name(format!("{stem}.{board}.trt{}.plan", version.short()))
}

/// The sidecar of a plan: the plan's path with `.toml` appended.
pub fn sidecar_path(plan: &Path) -> PathBuf {
    let mut s = plan.as_os_str().to_owned();
    s.push(".toml");
    PathBuf::from(s)
}

/// Every plan next to `onnx` that belongs to it (`<stem>.*.plan`), sorted; for error messages.
pub fn sibling_plans(onnx: &Path) -> Vec<PathBuf> {
    let Some(stem) = onnx.file_stem().map(|s| s.to_string_lossy().into_owned()) else { return vec![] };
    let dir = onnx.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let prefix = format!("{stem}.");
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            name.starts_with(&prefix) && name.ends_with(".plan")
        })
        .collect();
    found.sort();
    found
}

/// What `tools/trt/build_plans.sh` records next to each plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct PlanSidecar {
    /// Sidecar format version; this code reads 1.
    pub format: u32,
    /// The ONNX file the plan was built from (file name) and its SHA-256 (lower-case hex).
    pub onnx: String,
    pub onnx_sha256: String,
    /// jetlink board name (`boards/<name>.toml`).
    pub board: String,
    /// TensorRT version that built the plan, `major.minor.patch`.
    pub tensorrt: String,
    /// GPU name as trtexec reported it (e.g. "Orin"), and its compute capability ("8.7"); either may
    /// be "unknown" if trtexec's log did not say.
    pub gpu: String,
    pub compute_capability: String,
    /// "fp32", "fp16" or "int8".
    pub precision: String,
    /// The DLA core the plan runs on, if any (then the runtime must select it before deserialising).
    #[serde(default)]
    pub dla_core: Option<u32>,
    /// trtexec `--shapes` argument, or "" for a static-shape model.
    #[serde(default)]
    pub shapes: String,
    /// When the plan was built (UTC, RFC 3339), for people.
    #[serde(default)]
    pub built: String,
}

pub const SIDECAR_FORMAT: u32 = 1;

impl PlanSidecar {
    pub fn load(path: &Path) -> Result<PlanSidecar> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading plan sidecar {}", path.display()))?;
        let s: PlanSidecar =
            toml::from_str(&text).with_context(|| format!("parsing plan sidecar {}", path.display()))?;
        if s.format != SIDECAR_FORMAT {
            bail!(
                "{}: key `format`: sidecar format {} (this jetlink reads {SIDECAR_FORMAT})",
                path.display(),
                s.format
            );
        }
        Ok(s)
    }
}

/// What the running system is, against which a plan is checked.
#[derive(Clone, Debug)]
pub struct PlanTarget<'a> {
    /// Board name this binary was built for.
    pub board: &'a str,
    /// The board's `cuda-arch` (`"sm_87"`), or `"none"` when the board file does not say.
    pub cuda_arch: &'a str,
    /// The TensorRT library loaded at run time.
    pub tensorrt: TrtVersion,
}

/// `"sm_87"` → `"8.7"`; `None` for anything else.
pub fn compute_capability_of_arch(arch: &str) -> Option<String> {
    let digits = arch.strip_prefix("sm_")?;
    if digits.len() < 2 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let (major, minor) = digits.split_at(digits.len() - 1);
    Some(format!("{major}.{minor}"))
}

/// Refuse a plan whose sidecar says it was built for another TensorRT version, board or GPU, or from
/// another ONNX file (`onnx_sha256`: the SHA-256 of the manifest's ONNX file when it is present).
/// `sidecar_file` names the sidecar in the messages.
pub fn check_sidecar(
    s: &PlanSidecar,
    sidecar_file: &Path,
    target: &PlanTarget<'_>,
    onnx_sha256: Option<&str>,
) -> Result<()> {
    let f = sidecar_file.display();
    let built = TrtVersion::parse(&s.tensorrt)
        .with_context(|| format!("{f}: key `tensorrt`: {:?} is not a version like \"10.3.0\"", s.tensorrt))?;
    if built != target.tensorrt {
        bail!(
            "{f}: key `tensorrt`: the plan was built by TensorRT {built}, but TensorRT {} is loaded; \
             plans are not portable across TensorRT versions: rebuild it on this board with \
             tools/trt/build_plans.sh",
            target.tensorrt
        );
    }
    if s.board != target.board {
        bail!(
            "{f}: key `board`: the plan was built for board {:?}, this binary is for {:?}; plans are not \
             portable across GPUs: rebuild it on this board with tools/trt/build_plans.sh",
            s.board,
            target.board
        );
    }
    if let Some(want) = compute_capability_of_arch(target.cuda_arch)
        && s.compute_capability != "unknown"
        && s.compute_capability != want
    {
        bail!(
            "{f}: key `compute-capability`: the plan was built on a GPU of compute capability {} ({}), \
             board {:?} has {want} ({}); rebuild it on this board",
            s.compute_capability,
            s.gpu,
            target.board,
            target.cuda_arch
        );
    }
    if let Some(sha) = onnx_sha256
        && !s.onnx_sha256.eq_ignore_ascii_case(sha)
    {
        bail!(
            "{f}: key `onnx-sha256`: the plan was built from another version of {} (sha256 {}, the \
             manifest's file has {sha}); rebuild it with tools/trt/build_plans.sh",
            s.onnx,
            s.onnx_sha256
        );
    }
    Ok(())
}

/// Lower-case hex SHA-256 of a byte string.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// Find and check the plan for `onnx` on `target`: its path and its sidecar, or an error that says
/// which file was expected and which plans exist instead.
pub fn locate(onnx: &Path, target: &PlanTarget<'_>) -> Result<(PathBuf, PlanSidecar)> {
    let plan = plan_path(onnx, target.board, target.tensorrt);
    if !plan.is_file() {
        let others: Vec<String> = sibling_plans(onnx).iter().map(|p| p.display().to_string()).collect();
        let found = if others.is_empty() { "none".to_string() } else { others.join(", ") };
        bail!(
            "no TensorRT plan {} (board {:?}, TensorRT {}); plans found for this model: {found}. Plans \
             are not portable across TensorRT versions or GPUs: build them on the board with \
             tools/trt/build_plans.sh",
            plan.display(),
            target.board,
            target.tensorrt.short()
        );
    }
    let side = sidecar_path(&plan);
    if !side.is_file() {
        bail!(
            "{}: missing sidecar {} (it records the TensorRT version and GPU the plan was built for; a \
             plan without one is refused): rebuild with tools/trt/build_plans.sh",
            plan.display(),
            side.display()
        );
    }
    let s = PlanSidecar::load(&side)?;
    let sha = match std::fs::read(onnx) {
        Ok(bytes) => Some(sha256_hex(&bytes)),
        Err(_) => None, // the board may carry plans without their ONNX files
    };
    check_sidecar(&s, &side, target, sha.as_deref())?;
    Ok((plan, s))
}

/// The shape to run an engine input with: the manifest's `input_shape`, which must have the engine's
/// rank and agree with every fixed (non -1) dimension. Returns it and whether any dimension was
/// dynamic (then `setInputShape` is needed).
pub fn resolve_input_shape(
    engine: &[i64],
    manifest: &[u32],
) -> std::result::Result<(Vec<i64>, bool), String> {
    if engine.len() != manifest.len() {
        return Err(format!(
            "the plan's input has rank {} ({engine:?}), the manifest's input_shape {manifest:?}",
            engine.len()
        ));
    }
    let mut dynamic = false;
    for (i, (&e, &m)) in engine.iter().zip(manifest).enumerate() {
        if e < 0 {
            dynamic = true;
        } else if e != i64::from(m) {
            return Err(format!(
                "the plan's input is {engine:?}, the manifest's input_shape {manifest:?} (dimension {i})"
            ));
        }
    }
    Ok((manifest.iter().map(|&m| i64::from(m)).collect(), dynamic))
}
