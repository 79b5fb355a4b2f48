//! The board-file schema, its checks and the code generator. Shared by `build.rs` (which turns
//! `boards/*.toml` into Rust) and by the crate's tests (which show the errors a bad file gives).
//! Uses only `serde` and `toml`, the build script's two dependencies.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;

/// The most models a workload may have: `crate::model_set::ModelSet::CAP`, written out because this
/// file is also compiled into the build script, which cannot see the crate (a unit test in
/// `src/board/mod.rs` keeps the two equal).
pub const MAX_MODELS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct BoardFile {
    pub name: String,
    pub description: String,
    pub soc: String,
    /// `sm_XY`, or `none` for a board without an NVIDIA GPU.
    pub cuda_arch: String,
    pub total_memory_bytes: u64,
    /// Memory the models (engines and links) may use.
    pub model_budget_bytes: u64,
    /// Memory kept free for everything else when telemetry reports free memory.
    pub reserve_bytes: u64,
    pub power_budget_mw: u32,
    pub period_ms: u32,
    /// Ticks per scheduling period (re-selection and adaptation cadence).
    pub ticks_per_period: u32,
    /// Execution budget: at most this many models run per tick (GPU time per frame), beside the
    /// memory budget. Optional; absent means no limit.
    #[serde(default)]
    pub max_active_models: Option<u32>,
    pub telemetry: Telemetry,
    pub serial: Serial,
    #[serde(rename = "resource")]
    pub resources: Vec<Resource>,
    /// Ed25519 public key (64 hex digits) of the only key whose signed bundles this board loads.
    pub bundle_key: String,
    /// File holding the highest bundle version this board has accepted (rollback protection).
    pub state_file: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Telemetry {
    /// `simulated`, `nvml` or `tegra-sysfs`.
    pub source: String,
    #[serde(default)]
    pub hwmon_glob: Option<String>,
    #[serde(default)]
    pub meminfo: Option<String>,
    #[serde(default)]
    pub gpu_load: Option<String>,
    #[serde(default)]
    pub nvml_device: Option<u32>,
    #[serde(default)]
    pub trace: Option<String>,
    #[serde(default, rename = "rail")]
    pub rails: Vec<Rail>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Rail {
    pub label: String,
    /// Counted in the board's total power.
    pub in_total: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Serial {
    pub device: String,
    pub baud: u32,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct Resource {
    pub name: String,
    /// `gpu`, `dla` or `cpu`.
    pub kind: String,
    /// Throughput relative to the board's GPU (GPU = 1).
    pub speed: f32,
    /// Power drawn while busy, milliwatts.
    pub busy_power_mw: u32,
    /// Share of each period this unit may spend on adaptation, 0..1.
    pub adapt_share: f32,
}

const SOURCES: [&str; 3] = ["simulated", "nvml", "tegra-sysfs"];
const KINDS: [&str; 3] = ["gpu", "dla", "cpu"];

/// Parse and check one board file; the error names the file and the key.
pub fn parse_board(file: &str, text: &str) -> Result<BoardFile, String> {
    let b: BoardFile = toml::from_str(text).map_err(|e| format!("{file}: {}", e.to_string().trim_end()))?;
    check(&b).map_err(|e| format!("{file}: {e}"))?;
    Ok(b)
}

fn check(b: &BoardFile) -> Result<(), String> {
    // The name becomes a Rust identifier in the generated code (`orin-nano-8gb` → `ORIN_NANO_8GB`).
    if !b.name.starts_with(|c: char| c.is_ascii_lowercase())
        || !b.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "key `name`: {:?} must start with a letter and be lowercase letters, digits and '-'",
            b.name
        ));
    }
    if b.cuda_arch != "none"
        && !(b.cuda_arch.starts_with("sm_")
            && b.cuda_arch.len() == 5
            && b.cuda_arch[3..].chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("key `cuda-arch`: {:?} is not `sm_XY` or `none`", b.cuda_arch));
    }
    if b.total_memory_bytes == 0 {
        return Err("key `total-memory-bytes`: must be above 0".into());
    }
    if b.model_budget_bytes == 0 || b.model_budget_bytes > b.total_memory_bytes {
        return Err(format!(
            "key `model-budget-bytes`: {} must be above 0 and at most total-memory-bytes ({})",
            b.model_budget_bytes, b.total_memory_bytes
        ));
    }
    if b.reserve_bytes.saturating_add(b.model_budget_bytes) > b.total_memory_bytes {
        return Err(format!(
            "key `reserve-bytes`: {} plus model-budget-bytes exceeds total-memory-bytes ({})",
            b.reserve_bytes, b.total_memory_bytes
        ));
    }
    if b.power_budget_mw == 0 {
        return Err("key `power-budget-mw`: must be above 0".into());
    }
    if b.period_ms == 0 {
        return Err("key `period-ms`: must be above 0".into());
    }
    if b.max_active_models == Some(0) {
        return Err("key `max-active-models`: must be above 0 (leave it out for no limit)".into());
    }
    if let Some(v) = b.max_active_models.filter(|&v| v as usize > MAX_MODELS) {
        return Err(format!(
            "key `max-active-models`: {v} is above the most models a workload may have ({MAX_MODELS}); leave it out for no limit"
        ));
    }
    if b.ticks_per_period == 0 {
        return Err("key `ticks-per-period`: must be above 0".into());
    }
    let t = &b.telemetry;
    if !SOURCES.contains(&t.source.as_str()) {
        return Err(format!("key `telemetry.source`: {:?} is not one of {SOURCES:?}", t.source));
    }
    let mut seen = BTreeSet::new();
    for r in &t.rails {
        if r.label.is_empty() || r.label == "NC" {
            return Err(format!("key `telemetry.rail.label`: {:?} is not a usable rail label", r.label));
        }
        if !seen.insert(r.label.as_str()) {
            return Err(format!("key `telemetry.rail.label`: duplicate rail {:?}", r.label));
        }
    }
    match t.source.as_str() {
        "tegra-sysfs" => {
            for (key, v) in
                [("hwmon-glob", &t.hwmon_glob), ("meminfo", &t.meminfo), ("gpu-load", &t.gpu_load)]
            {
                if v.is_none() {
                    return Err(format!("key `telemetry.{key}`: required for source \"tegra-sysfs\""));
                }
            }
            if !t.rails.iter().any(|r| r.in_total) {
                return Err(
                    "key `telemetry.rail`: tegra-sysfs needs at least one rail with in-total = true".into()
                );
            }
        }
        "nvml" if t.nvml_device.is_none() => {
            return Err("key `telemetry.nvml-device`: required for source \"nvml\"".into());
        }
        "simulated" if t.trace.is_none() => {
            return Err("key `telemetry.trace`: required for source \"simulated\"".into());
        }
        _ => {}
    }
    if b.serial.device.is_empty() {
        return Err("key `serial.device`: must not be empty".into());
    }
    if b.serial.baud == 0 {
        return Err("key `serial.baud`: must be above 0".into());
    }
    if b.resources.is_empty() {
        return Err("key `resource`: at least one [[resource]] is required".into());
    }
    let mut names = BTreeSet::new();
    for r in &b.resources {
        if !names.insert(r.name.as_str()) {
            return Err(format!("key `resource.name`: duplicate resource {:?}", r.name));
        }
        if !KINDS.contains(&r.kind.as_str()) {
            return Err(format!(
                "key `resource.kind`: {:?} (resource {:?}) is not one of {KINDS:?}",
                r.kind, r.name
            ));
        }
        if !(r.speed.is_finite() && r.speed > 0.0) {
            return Err(format!("key `resource.speed`: {} (resource {:?}) must be above 0", r.speed, r.name));
        }
        if !(r.adapt_share.is_finite() && r.adapt_share > 0.0 && r.adapt_share <= 1.0) {
            return Err(format!(
                "key `resource.adapt-share`: {} (resource {:?}) must be in (0, 1]",
                r.adapt_share, r.name
            ));
        }
    }
    if b.bundle_key.len() != 64 || !b.bundle_key.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!(
            "key `bundle-key`: {:?} is not an Ed25519 public key (64 hex digits, from `jetlink keygen`)",
            b.bundle_key
        ));
    }
    if b.state_file.trim().is_empty() {
        return Err(
            "key `state-file`: must name a file (the highest bundle version accepted is kept there)".into()
        );
    }
    if b.cuda_arch == "none" && b.resources.iter().any(|r| r.kind != "cpu") {
        return Err(
            "key `resource.kind`: a board with cuda-arch = \"none\" can only have cpu resources".into()
        );
    }
    Ok(())
}

/// The demo key pair's public half (`demo/keys/demo-insecure.pub`): its private half is committed,
/// so a board that trusts it runs bundles anyone can sign. Only `host-sim` may trust it.
pub const DEMO_BUNDLE_KEY: &str = "ddf65dbfb4b7e99f1da38cfcbc3d87587c3be1305693968b92c0a5c36b930526";

/// The board that may trust the demo key (it runs the demo on a host, nothing to protect).
pub const DEMO_KEY_BOARD: &str = "host-sim";

/// How to give a board a real key, for the build error.
pub const HOW_TO_SET_KEY: &str = "make a key pair with `jetlink keygen --out <private key file>` (keep the \
     private key off the board and out of the repository), then either set the public key at build time \
     with `JETLINK_BUNDLE_KEY=<64 hex digits> JETLINK_BOARD=<board> cargo build --release` or put it in \
     the board file's `bundle-key`";

/// The trusted key of the selected board, settled at build time: `env_key` (the build's
/// `JETLINK_BUNDLE_KEY`, if set and not empty) replaces the board file's `bundle-key` of the
/// `selected` board only; then any board but [`DEMO_KEY_BOARD`] whose key is the demo key is refused,
/// with a message that says how to set a real one.
pub fn settle_bundle_key(
    boards: &mut [(String, BoardFile)],
    selected: &str,
    env_key: Option<&str>,
) -> Result<(), String> {
    let Some((_, b)) = boards.iter_mut().find(|(n, _)| n == selected) else {
        return Ok(()); // `generate` names the missing board.
    };
    if let Some(k) = env_key.map(str::trim).filter(|k| !k.is_empty()) {
        if k.len() != 64 || !k.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(format!(
                "JETLINK_BUNDLE_KEY={k:?}: not an Ed25519 public key (64 hex digits, as `jetlink keygen` prints)"
            ));
        }
        b.bundle_key = k.to_ascii_lowercase();
    }
    if selected != DEMO_KEY_BOARD && b.bundle_key.eq_ignore_ascii_case(DEMO_BUNDLE_KEY) {
        return Err(format!(
            "board {selected:?} trusts the demo bundle key {DEMO_BUNDLE_KEY}, whose private half is \
             committed in demo/keys/: anyone could sign a bundle it runs. Refusing to build it: {HOW_TO_SET_KEY}"
        ));
    }
    Ok(())
}

/// Read every `*.toml` in `dir` (sorted by name), check each, and return them with their file stems.
pub fn load_dir(dir: &Path) -> Result<Vec<(String, BoardFile)>, String> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(format!("{}: no board files (*.toml)", dir.display()));
    }
    let mut out = Vec::new();
    for p in paths {
        let file = p.display().to_string();
        let text = std::fs::read_to_string(&p).map_err(|e| format!("{file}: {e}"))?;
        let b = parse_board(&file, &text)?;
        let stem = p.file_stem().unwrap().to_string_lossy().to_string();
        if b.name != stem {
            return Err(format!("{file}: key `name`: {:?} must match the file name {:?}", b.name, stem));
        }
        out.push((stem, b));
    }
    Ok(out)
}

fn opt(s: &Option<String>) -> String {
    match s {
        Some(v) => format!("Some({v:?})"),
        None => "None".into(),
    }
}

/// 64 hex digits (checked) as a Rust `[u8; 32]` literal.
fn key_bytes(hex: &str) -> String {
    let bytes: Vec<String> = (0..32).map(|i| format!("0x{}", &hex[2 * i..2 * i + 2])).collect();
    format!("[{}]", bytes.join(", "))
}

fn ident(name: &str) -> String {
    name.replace('-', "_").to_uppercase()
}

/// Generate the Rust source for all boards, with `selected` as `BOARD`.
pub fn generate(boards: &[(String, BoardFile)], selected: &str) -> Result<String, String> {
    if !boards.iter().any(|(n, _)| n == selected) {
        let names: Vec<_> = boards.iter().map(|(n, _)| n.as_str()).collect();
        return Err(format!("JETLINK_BOARD={selected:?}: no such board; boards/ has {names:?}"));
    }
    let mut s = String::from("// @generated by build.rs from boards/*.toml; do not edit.\n");
    for (n, b) in boards {
        let t = &b.telemetry;
        let source = match t.source.as_str() {
            "nvml" => "TelemetrySource::Nvml",
            "tegra-sysfs" => "TelemetrySource::TegraSysfs",
            _ => "TelemetrySource::Simulated",
        };
        let rails: String = t
            .rails
            .iter()
            .map(|r| format!("Rail {{ label: {:?}, in_total: {} }}, ", r.label, r.in_total))
            .collect();
        let res: String = b
            .resources
            .iter()
            .map(|r| {
                let kind = match r.kind.as_str() {
                    "gpu" => "ResourceKind::Gpu",
                    "dla" => "ResourceKind::Dla",
                    _ => "ResourceKind::Cpu",
                };
                format!(
                    "Resource {{ name: {:?}, kind: {kind}, speed: {:?}, busy_power_mw: {}, adapt_share: {:?} }}, ",
                    r.name, r.speed, r.busy_power_mw, r.adapt_share
                )
            })
            .collect();
        let _ = write!(
            s,
            "pub static {id}: Board = Board {{ name: {name:?}, description: {desc:?}, soc: {soc:?}, \
             cuda_arch: {arch:?}, total_memory_bytes: {tm}, model_budget_bytes: {mb}, reserve_bytes: {rb}, \
             power_budget_mw: {pb}, period_ms: {pm}, ticks_per_period: {tp}, max_active_models: {ma}, \
             telemetry: TelemetryConfig {{ source: {source}, hwmon_glob: {hg}, meminfo: {mi}, gpu_load: {gl}, \
             nvml_device: {nd:?}, trace: {tr}, rails: &[{rails}] }}, \
             serial: SerialConfig {{ device: {sd:?}, baud: {sb} }}, resources: &[{res}], bundle_key: {bk}, state_file: {sf:?} }};\n",
            id = ident(n),
            name = b.name,
            desc = b.description,
            soc = b.soc,
            arch = b.cuda_arch,
            tm = b.total_memory_bytes,
            mb = b.model_budget_bytes,
            rb = b.reserve_bytes,
            pb = b.power_budget_mw,
            pm = b.period_ms,
            tp = b.ticks_per_period,
            ma = b.max_active_models.unwrap_or(0),
            hg = opt(&t.hwmon_glob),
            mi = opt(&t.meminfo),
            gl = opt(&t.gpu_load),
            nd = t.nvml_device,
            tr = opt(&t.trace),
            sd = b.serial.device,
            sb = b.serial.baud,
            bk = key_bytes(&b.bundle_key),
            sf = b.state_file,
        );
    }
    let all: Vec<_> = boards.iter().map(|(n, _)| format!("&{}", ident(n))).collect();
    let _ = writeln!(s, "pub static ALL: &[&Board] = &[{}];", all.join(", "));
    let _ = writeln!(s, "pub static BOARD: &Board = &{};", ident(selected));
    Ok(s)
}
