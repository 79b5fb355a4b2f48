//! The board this binary was built for: hardware facts and budgets compiled in from `boards/*.toml`
//! by `build.rs` (select with `JETLINK_BOARD=<name>` at build time; default `host-sim`).

/// The board-file schema and checks (also compiled into `build.rs`); public for tests and fuzzing.
#[doc(hidden)]
#[path = "schema.rs"]
pub mod schema;

/// Parse and check the text of one board file; the error names `file` and the key (as the build
/// does). For tools and fuzzing: the compiled-in boards were checked at build time.
pub fn parse_board_text(file: &str, text: &str) -> Result<schema::BoardFile, String> {
    schema::parse_board(file, text)
}

/// Where telemetry comes from on this board.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TelemetrySource {
    /// A replayable trace (host simulation, tests).
    Simulated,
    /// NVML on a host with a discrete NVIDIA GPU.
    Nvml,
    /// INA3221 rails through hwmon, `/proc/meminfo` and the GPU load node (Jetson).
    TegraSysfs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResourceKind {
    Gpu,
    Dla,
    Cpu,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rail {
    pub label: &'static str,
    pub in_total: bool,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TelemetryConfig {
    pub source: TelemetrySource,
    pub hwmon_glob: Option<&'static str>,
    pub meminfo: Option<&'static str>,
    pub gpu_load: Option<&'static str>,
    pub nvml_device: Option<u32>,
    pub trace: Option<&'static str>,
    pub rails: &'static [Rail],
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SerialConfig {
    pub device: &'static str,
    pub baud: u32,
}

/// An execution unit that can run adaptation tasks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Resource {
    pub name: &'static str,
    pub kind: ResourceKind,
    pub speed: f32,
    pub busy_power_mw: u32,
    pub adapt_share: f32,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Board {
    pub name: &'static str,
    pub description: &'static str,
    pub soc: &'static str,
    pub cuda_arch: &'static str,
    pub total_memory_bytes: u64,
    pub model_budget_bytes: u64,
    pub reserve_bytes: u64,
    pub power_budget_mw: u32,
    pub period_ms: u32,
    pub ticks_per_period: u32,
    /// Most models run per tick (`max-active-models`); 0 = no limit.
    pub max_active_models: u32,
    pub telemetry: TelemetryConfig,
    pub serial: SerialConfig,
    pub resources: &'static [Resource],
    /// Ed25519 public key whose signed bundles this board loads (`bundle-key`; see
    /// `crate::signing`).
    pub bundle_key: [u8; 32],
    /// File holding the highest bundle version accepted (`state-file`; rollback protection).
    pub state_file: &'static str,
}

/// Every board of `boards/`, and the selected one.
pub mod boards {
    use super::*;
    include!(concat!(env!("OUT_DIR"), "/boards.rs"));
}

/// The board selected at build time.
pub fn current() -> &'static Board {
    boards::BOARD
}

/// Look a board up by name.
pub fn by_name(name: &str) -> Option<&'static Board> {
    boards::ALL.iter().copied().find(|b| b.name == name)
}

#[cfg(test)]
mod tests {
    use super::schema::{generate, load_dir, parse_board};
    use super::*;

    #[test]
    fn the_schemas_model_cap_is_the_model_sets() {
        assert_eq!(super::schema::MAX_MODELS, crate::model_set::ModelSet::CAP);
    }

    #[test]
    fn generated_boards_match_their_files() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let files = load_dir(&dir).unwrap();
        let names: Vec<_> = boards::ALL.iter().map(|b| b.name).collect();
        assert_eq!(names, ["agx-orin-64gb", "host-sim", "orin-nano-8gb", "orin-nx-16gb", "xavier-nx-8gb"]);
        for (name, f) in &files {
            let b = by_name(name).unwrap();
            assert_eq!(b.total_memory_bytes, f.total_memory_bytes);
            assert_eq!(b.model_budget_bytes, f.model_budget_bytes);
            assert_eq!(b.cuda_arch, f.cuda_arch);
            assert_eq!(b.telemetry.rails.len(), f.telemetry.rails.len());
            assert_eq!(b.resources.len(), f.resources.len());
            assert!(b.model_budget_bytes + b.reserve_bytes <= b.total_memory_bytes);
            let env_key = std::env::var("JETLINK_BUNDLE_KEY").ok().filter(|k| !k.trim().is_empty());
            match env_key {
                Some(k) if b.name == current().name => {
                    assert_eq!(crate::bundle::hex(&b.bundle_key), k.trim().to_ascii_lowercase())
                }
                _ => assert_eq!(crate::bundle::hex(&b.bundle_key), f.bundle_key.to_ascii_lowercase()),
            }
            assert_eq!(b.state_file, f.state_file);
        }
        let sel = std::env::var("JETLINK_BOARD").unwrap_or_else(|_| "host-sim".into());
        assert_eq!(current().name, sel);
        // Facts from the brief, checked on the generated tables.
        let agx = by_name("agx-orin-64gb").unwrap();
        assert_eq!(agx.resources.iter().filter(|r| r.kind == ResourceKind::Dla).count(), 2);
        assert!(agx.telemetry.rails.iter().all(|r| r.label != "VDD_IN"));
        assert_eq!(by_name("xavier-nx-8gb").unwrap().cuda_arch, "sm_72");
        assert_eq!(by_name("orin-nano-8gb").unwrap().serial.device, "/dev/ttyTCU0");
        assert_eq!(by_name("host-sim").unwrap().telemetry.source, TelemetrySource::Simulated);
        assert!(generate(&files, "no-such-board").unwrap_err().contains("no such board"));
    }

    fn good() -> String {
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/boards/orin-nano-8gb.toml")).unwrap()
    }

    /// The exact messages a bad board file fails the build with (build.rs prints these).
    #[test]
    fn bad_board_files_fail_with_file_and_key() {
        let f = "boards/bad.toml";
        let unknown = good().replace("period-ms =", "perod-ms = 1\nperiod-ms =");
        let e = parse_board(f, &unknown).unwrap_err();
        assert!(e.starts_with("boards/bad.toml: ") && e.contains("unknown field `perod-ms`"), "{e}");

        let missing = good().replace("power-budget-mw", "# power-budget-mw");
        let e = parse_board(f, &missing).unwrap_err();
        assert!(e.contains("missing field `power-budget-mw`"), "{e}");

        let over =
            good().replace("model-budget-bytes = 4_294_967_296", "model-budget-bytes = 99_000_000_000");
        let e = parse_board(f, &over).unwrap_err();
        assert!(e.contains("key `model-budget-bytes`") && e.contains("at most total-memory-bytes"), "{e}");

        let dup = good().replace("label = \"VDD_SOC\"", "label = \"VDD_IN\"");
        let e = parse_board(f, &dup).unwrap_err();
        assert_eq!(e, "boards/bad.toml: key `telemetry.rail.label`: duplicate rail \"VDD_IN\"");

        let arch = good().replace("cuda-arch = \"sm_87\"", "cuda-arch = \"ampere\"");
        assert!(parse_board(f, &arch).unwrap_err().contains("key `cuda-arch`"));

        let key = good().replace("bundle-key = \"ddf6", "bundle-key = \"xyz6");
        let e = parse_board(f, &key).unwrap_err();
        assert!(
            e.starts_with("boards/bad.toml: key `bundle-key`: \"xyz6") && e.contains("64 hex digits"),
            "{e}"
        );
        let short = good().replace("bundle-key = \"ddf6", "bundle-key = \"6");
        assert!(parse_board(f, &short).unwrap_err().contains("key `bundle-key`"));
        let nokey = good().replace("bundle-key =", "# bundle-key =");
        assert!(parse_board(f, &nokey).unwrap_err().contains("missing field `bundle-key`"));

        let speed = good().replacen("speed = 1.0", "speed = -1.0", 1);
        assert!(parse_board(f, &speed).unwrap_err().contains("key `resource.speed`"));

        assert!(parse_board(f, &good()).is_ok());
    }

    /// Issue 19: a Jetson board that trusts the committed demo key does not build; a throwaway key
    /// given as `JETLINK_BUNDLE_KEY` (generated for this run) does, for the selected board only.
    #[test]
    fn jetson_boards_refuse_the_demo_key_and_take_one_from_the_environment() {
        use super::schema::{DEMO_BUNDLE_KEY, settle_bundle_key};
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("boards");
        let throwaway = crate::signing::generate_key().unwrap().verifying_key().to_bytes();
        let throwaway = crate::bundle::hex(&throwaway);
        for jetson in ["orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "xavier-nx-8gb"] {
            let mut files = load_dir(&dir).unwrap();
            let e = settle_bundle_key(&mut files, jetson, None).unwrap_err();
            assert!(
                e.starts_with(&format!("board \"{jetson}\" trusts the demo bundle key {DEMO_BUNDLE_KEY}"))
                    && e.contains("JETLINK_BUNDLE_KEY=")
                    && e.contains("jetlink keygen"),
                "{e}"
            );
            // An empty variable is "not set".
            assert!(settle_bundle_key(&mut files, jetson, Some("  ")).is_err());
            let e = settle_bundle_key(&mut files, jetson, Some("abc")).unwrap_err();
            assert!(e.starts_with("JETLINK_BUNDLE_KEY=\"abc\": not an Ed25519 public key"), "{e}");
            settle_bundle_key(&mut files, jetson, Some(&throwaway)).unwrap();
            let src = generate(&files, jetson).unwrap();
            let sel = files.iter().find(|(n, _)| n == jetson).unwrap();
            assert_eq!(sel.1.bundle_key, throwaway);
            // Only the selected board changes.
            assert!(files.iter().filter(|(n, _)| n != jetson).all(|(_, b)| b.bundle_key == DEMO_BUNDLE_KEY));
            assert!(src.contains(&format!(
                "pub static BOARD: &Board = &{};",
                jetson.replace('-', "_").to_uppercase()
            )));
        }
        // The simulated board may keep the demo key (it protects nothing there).
        let mut files = load_dir(&dir).unwrap();
        settle_bundle_key(&mut files, "host-sim", None).unwrap();
        // The board files still carry the warning next to the key.
        for f in ["orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "xavier-nx-8gb"] {
            let text = std::fs::read_to_string(dir.join(format!("{f}.toml"))).unwrap();
            assert!(text.contains("REPLACE THIS") && text.contains("JETLINK_BUNDLE_KEY"), "{f}");
        }
    }

    #[test]
    fn bad_board_dir_names_the_file() {
        let dir = std::env::temp_dir().join(format!("jetlink-boards-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("other-name.toml"), good()).unwrap();
        let e = load_dir(&dir).unwrap_err();
        assert!(e.contains("other-name.toml: key `name`"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
