//! Telemetry sources against fake sysfs trees laid out as each Jetson board lays them out, the
//! tegrastats cross-check, the simulated trace, and failing / garbage sources.

use std::path::{Path, PathBuf};

use jetlink::board::{self, Board, Rail, TelemetryConfig};
use jetlink::sim::{Fault, Faulty};
use jetlink::telemetry::sim::{self, Simulated, TraceRow};
use jetlink::telemetry::tegra::{self, Tegra, parse_tegrastats};
use jetlink::telemetry::{Dead, Sample, Source, Telemetry, TelemetryError, Valid, open_for_board};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn tree(board: &str) -> PathBuf {
    fixtures().join("sysfs").join(board)
}

fn board(name: &str) -> &'static Board {
    board::by_name(name).unwrap()
}

fn sample_board(name: &str) -> Sample {
    let b = board(name);
    let mut src = Tegra::open(&b.telemetry, &tree(name)).unwrap();
    let mut s = Sample::default();
    src.sample(&mut s).unwrap();
    s.check().unwrap();
    s
}

const KIB: u64 = 1024;

#[test]
fn orin_nano_tree() {
    let s = sample_board("orin-nano-8gb");
    // VDD_IN 5072 mV x 936 mA, VDD_CPU_GPU_CV 5064 x 112, VDD_SOC 5064 x 280 (mW, truncated).
    assert_eq!(s.rail_mw.as_slice(), &[4747, 567, 1417]);
    // Only VDD_IN is in the total: the other rails are inside it.
    assert_eq!(s.power_mw, 4747);
    assert_eq!(s.mem_total_bytes, 7_620_268 * KIB);
    assert_eq!(s.mem_available_bytes, 5_298_112 * KIB);
    assert_eq!(s.gpu_mem_used_bytes, 325_632 * KIB);
    assert_eq!(s.gpu_load_permille, 127);
    assert!(s.valid.contains(Valid::MEM | Valid::GPU_MEM | Valid::POWER | Valid::LOAD));
}

#[test]
fn orin_nx_tree() {
    let s = sample_board("orin-nx-16gb");
    assert_eq!(s.rail_mw.as_slice(), &[7685, 2120, 1675]);
    assert_eq!(s.power_mw, 7685);
    assert_eq!(s.gpu_load_permille, 331);
    assert_eq!(s.gpu_mem_used_bytes, 1_048_576 * KIB);
}

#[test]
fn agx_orin_tree_sums_module_rails_and_skips_nc_and_sum() {
    let b = board("agx-orin-64gb");
    let chans = tegra::discover_rails(&tree(b.name), b.telemetry.hwmon_glob.unwrap()).unwrap();
    let labels: Vec<_> = chans.iter().map(|c| c.label.as_str()).collect();
    // Two INA3221 devices; the NC channels and both summation channels (in7) are not rails.
    assert_eq!(labels, ["VDD_GPU_SOC", "VDD_CPU_CV", "VIN_SYS_5V0", "VDDQ_VDD2_1V8AO"]);
    assert_eq!(chans[3].index, 2);
    assert!(chans[3].dir.ends_with("1-0041/hwmon/hwmon2"));

    let s = sample_board(b.name);
    assert_eq!(s.rail_mw.as_slice(), &[4029, 912, 3184, 477]);
    assert_eq!(s.power_mw, 4029 + 912 + 3184 + 477);
    assert_eq!(s.gpu_load_permille, 455);
}

#[test]
fn xavier_nx_tree_without_nvmap() {
    let s = sample_board("xavier-nx-8gb");
    assert_eq!(s.rail_mw.as_slice(), &[4334, 573, 1308]);
    assert_eq!(s.power_mw, 4334);
    assert_eq!(s.gpu_load_permille, 0);
    assert!(s.valid.contains(Valid::MEM | Valid::POWER | Valid::LOAD));
    assert!(!s.valid.contains(Valid::GPU_MEM), "this meminfo has no NvMapMemUsed");
}

/// Each fixture tree agrees with the tegrastats line kept for that board: the same rails and
/// milliwatts, RAM within a megabyte, GPU load within a percent.
#[test]
fn tegrastats_cross_check() {
    for name in ["orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "xavier-nx-8gb"] {
        let text = std::fs::read_to_string(fixtures().join(format!("tegrastats/{name}.txt"))).unwrap();
        let line = text.lines().find(|l| !l.starts_with('#')).unwrap();
        let ts = parse_tegrastats(line).unwrap();
        let b = board(name);
        let s = sample_board(name);
        for (rail, &mw) in b.telemetry.rails.iter().zip(s.rail_mw.iter()) {
            assert_eq!(ts.rail(rail.label).map(|r| r.0), Some(mw), "{name} {}", rail.label);
        }
        assert_eq!(ts.ram_total_mb, s.mem_total_bytes / (1 << 20), "{name}");
        let used_mb = (s.mem_total_bytes - s.mem_available_bytes) / (1 << 20);
        assert!(ts.ram_used_mb.abs_diff(used_mb) <= 1, "{name}: {} vs {used_mb}", ts.ram_used_mb);
        let pct = ts.gpu_load_percent.unwrap();
        assert!(u64::from(pct) * 10 <= u64::from(s.gpu_load_permille) + 9, "{name}");
        assert!(u64::from(s.gpu_load_permille) < u64::from(pct) * 10 + 10, "{name}");
    }
}

#[test]
fn tegrastats_parser_formats_and_garbage() {
    let old =
        parse_tegrastats("RAM 1827/7583MB SWAP 0/3791MB GR3D_FREQ 0% VDD_IN 4334/4334 VDD_SOC 1308/1308")
            .unwrap();
    assert_eq!(old.rails, [("VDD_IN".to_string(), 4334, 4334), ("VDD_SOC".to_string(), 1308, 1308)]);
    let new = parse_tegrastats("RAM 10/20MB GR3D_FREQ 99%@[1300,1300] VDD_IN 4321mW/4000mW").unwrap();
    assert_eq!((new.ram_used_mb, new.ram_total_mb, new.gpu_load_percent), (10, 20, Some(99)));
    assert_eq!(new.rail("VDD_IN"), Some((4321, 4000)));
    assert_eq!(parse_tegrastats("VDD_IN 1/1"), Err(TelemetryError::Garbage), "no RAM field");
    assert_eq!(parse_tegrastats("RAM -5/20MB"), Err(TelemetryError::Garbage));
    assert_eq!(parse_tegrastats("RAM 30/20MB"), Err(TelemetryError::Garbage), "used above total");
    assert_eq!(parse_tegrastats(""), Err(TelemetryError::Garbage));
}

/// Copy a fixture tree to a scratch folder a test may damage.
fn scratch_tree(board: &str, tag: &str) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &to.join(e.file_name()));
            } else {
                std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
            }
        }
    }
    let dir = std::env::temp_dir().join(format!("jetlink-telemetry-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    copy(&tree(board), &dir);
    dir
}

fn nano_hwmon(root: &Path) -> PathBuf {
    root.join("sys/bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3")
}

#[test]
fn garbage_and_unreadable_files_are_errors_and_the_wrapper_keeps_the_last_good() {
    let b = board("orin-nano-8gb");
    let root = scratch_tree(b.name, "garbage");
    let hw = nano_hwmon(&root);
    let mut t = Telemetry::new(Box::new(Tegra::open(&b.telemetry, &root).unwrap()), Sample::fallback(b));
    assert!(!t.has_reading());
    assert_eq!(t.latest().mem_available_bytes, b.model_budget_bytes + b.reserve_bytes);
    t.poll().unwrap();
    let good = t.latest().clone();
    assert_eq!(good.power_mw, 4747);

    // The files are re-read each sample (sysfs regenerates them): a new value shows up.
    std::fs::write(hw.join("curr1_input"), "1000\n").unwrap();
    t.poll().unwrap();
    assert_eq!(t.latest().power_mw, 5072);

    // A negative current: garbage, counted; the last good sample stays.
    std::fs::write(hw.join("curr1_input"), "-12\n").unwrap();
    assert_eq!(t.poll(), Err(TelemetryError::Garbage));
    assert_eq!(t.latest().power_mw, 5072);
    // Not a number, empty, absurdly large.
    for bad in ["abc", "", "99999999999999999999999"] {
        std::fs::write(hw.join("curr1_input"), bad).unwrap();
        assert_eq!(t.poll(), Err(TelemetryError::Garbage), "{bad:?}");
    }
    // A product too big to be power: the source reads it, the wrapper's check rejects it.
    std::fs::write(hw.join("curr1_input"), "900000000").unwrap();
    assert_eq!(t.poll(), Err(TelemetryError::Garbage));
    // MemAvailable above MemTotal.
    std::fs::write(hw.join("curr1_input"), "1000").unwrap();
    let meminfo = std::fs::read_to_string(root.join("proc/meminfo")).unwrap();
    std::fs::write(
        root.join("proc/meminfo"),
        meminfo.replace("MemAvailable:    5298112", "MemAvailable:   99298112"),
    )
    .unwrap();
    assert_eq!(t.poll(), Err(TelemetryError::Garbage));
    std::fs::write(root.join("proc/meminfo"), &meminfo).unwrap();
    // A GPU load above 1000 per mille.
    std::fs::write(root.join("sys/devices/platform/gpu.0/load"), "1500").unwrap();
    assert_eq!(t.poll(), Err(TelemetryError::Garbage));
    std::fs::write(root.join("sys/devices/platform/gpu.0/load"), "127").unwrap();

    let st = t.stats();
    assert_eq!((st.good, st.failures, st.consecutive_failures), (2, 7, 7));
    assert_eq!(t.latest().power_mw, 5072);
    t.poll().unwrap();
    assert_eq!(t.stats().consecutive_failures, 0);

    // A file that vanished and was replaced by something unreadable (a folder).
    let path = hw.join("in1_input");
    let mut t2 = Tegra::open(&b.telemetry, &root).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::create_dir(&path).unwrap();
    let mut t3 = Tegra::open(&b.telemetry, &root).unwrap();
    let mut s = Sample::default();
    // The already-open file still reads (unlinked files stay readable); a fresh open reads a folder.
    t2.sample(&mut s).unwrap();
    s.clear();
    assert_eq!(t3.sample(&mut s), Err(TelemetryError::Unreadable));
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn missing_rails_and_trees_fail_at_open() {
    let b = board("orin-nano-8gb");
    // The AGX tree has no VDD_IN.
    let e = Tegra::open(&b.telemetry, &tree("agx-orin-64gb")).err().unwrap();
    assert!(format!("{e:#}").contains("rail VDD_IN not found"), "{e:#}");
    // No tree at all.
    let e = Tegra::open(&b.telemetry, Path::new("/nonexistent-jetlink")).err().unwrap();
    assert!(format!("{e:#}").contains("no hwmon directory matches"), "{e:#}");
    // A board whose rail is NC is not a board: NC channels are never offered.
    static NC: [Rail; 1] = [Rail { label: "NC", in_total: true }];
    let cfg = TelemetryConfig { rails: &NC, ..b.telemetry };
    assert!(Tegra::open(&cfg, &tree("agx-orin-64gb")).is_err());
    // A missing GPU load node only drops the load reading.
    let cfg = TelemetryConfig { gpu_load: Some("/sys/devices/gpu.0/load"), ..b.telemetry };
    let mut src = Tegra::open(&cfg, &tree(b.name)).unwrap();
    let mut s = Sample::default();
    src.sample(&mut s).unwrap();
    assert!(!s.valid.contains(Valid::LOAD));
}

#[test]
fn open_for_board_picks_the_source_and_survives_a_missing_one() {
    // Jetson boards against their trees.
    for name in ["orin-nano-8gb", "orin-nx-16gb", "agx-orin-64gb", "xavier-nx-8gb"] {
        let mut t = open_for_board(board(name), &tree(name));
        assert_eq!(t.source_name(), "tegra-sysfs");
        t.poll().unwrap();
    }
    // A Jetson board on a machine without its sysfs: a dead source, the board's static figures.
    let b = board("orin-nano-8gb");
    let mut t = open_for_board(b, Path::new("/nonexistent-jetlink"));
    assert_eq!(t.source_name(), "dead");
    assert_eq!(t.poll(), Err(TelemetryError::Unavailable));
    assert_eq!(t.latest(), &Sample::fallback(b));
    assert_eq!(t.latest().model_budget_bytes(b, 0), b.model_budget_bytes);
    // host-sim replays the demo trace (tests run in the crate root).
    let mut t = open_for_board(board("host-sim"), Path::new("/"));
    assert_eq!(t.source_name(), "simulated");
    t.poll().unwrap();
    assert!(t.latest().valid.contains(Valid::MEM | Valid::POWER | Valid::LOAD));
}

/// NVML is for discrete-GPU hosts; where libnvidia-ml is missing, opening fails without a panic.
/// Where it is present (the GPU machine), it reads plausible values.
#[test]
fn nvml_opens_or_fails_cleanly() {
    match jetlink::telemetry::nvml::Nvml::open(0) {
        Err(e) => eprintln!("NVML unavailable here: {e:#}"),
        Ok(mut n) => {
            let mut s = Sample::default();
            n.sample(&mut s).unwrap();
            s.check().unwrap();
            eprintln!(
                "NVML {}: total {} MiB, free {} MiB, used {} MiB, power {} mW (valid {}), load {} permille",
                n.device_name(),
                s.mem_total_bytes >> 20,
                s.mem_available_bytes >> 20,
                s.gpu_mem_used_bytes >> 20,
                s.power_mw,
                s.valid.contains(Valid::POWER),
                s.gpu_load_permille
            );
            assert!(s.mem_total_bytes > 1 << 30 && s.gpu_mem_used_bytes <= s.mem_total_bytes);
        }
    }
}

fn demo_trace_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/telemetry-trace.csv")
}

/// The committed demo trace is exactly what the generator writes (regenerate with
/// `JETLINK_REGEN_TRACE=1 cargo test --release --test telemetry demo_trace`).
#[test]
fn demo_trace_matches_its_generator() {
    let rows = sim::synth_demo_trace();
    let mut csv = Vec::new();
    sim::write_trace(&rows, &mut csv).unwrap();
    if std::env::var_os("JETLINK_REGEN_TRACE").is_some() {
        std::fs::write(demo_trace_path(), &csv).unwrap();
    }
    let committed = std::fs::read(demo_trace_path()).unwrap();
    assert!(committed == csv, "demo/telemetry-trace.csv differs from sim::synth_demo_trace()");
    assert_eq!(sim::load_trace(&demo_trace_path()).unwrap(), rows);
}

/// The demo trace does what the host-sim scenario needs: power spikes above the 10 W budget, and
/// memory drops that shrink the 12 MB model budget for a while, then recover.
#[test]
fn demo_trace_has_spikes_and_memory_drops() {
    let b = board("host-sim");
    let rows = sim::synth_demo_trace();
    assert_eq!(rows.len(), sim::demo::TICKS);
    let over: Vec<usize> = (0..rows.len()).filter(|&t| rows[t].power_mw > b.power_budget_mw).collect();
    // Every spike goes over budget, and nothing else does.
    for &(start, len, _) in &sim::demo::SPIKES {
        assert!((start..start + len).all(|t| rows[t].power_mw > b.power_budget_mw), "spike at {start}");
    }
    let in_spikes: usize = sim::demo::SPIKES.iter().map(|s| s.1).sum();
    assert_eq!(over.len(), in_spikes);
    let normal = rows[..300].iter().map(|r| r.power_mw);
    assert!(normal.clone().all(|p| (5_000..9_500).contains(&p)));

    // The budget a replayed tick allows while our models hold the full 12 MB.
    let own = b.model_budget_bytes;
    let mut src = Simulated::new(rows.clone(), b.total_memory_bytes, 1).unwrap();
    src.set_own_usage(own);
    let mut s = Sample::default();
    let mut budgets = Vec::new();
    for _ in 0..rows.len() {
        s.clear();
        src.sample(&mut s).unwrap();
        s.check().unwrap();
        budgets.push(s.model_budget_bytes(b, own));
    }
    let shrunk = budgets.iter().filter(|&&x| x < b.model_budget_bytes).count();
    assert!((300..800).contains(&shrunk), "{shrunk} ticks with a shrunk budget");
    let min = *budgets.iter().min().unwrap();
    // ~22 MB free of other tenants at the floor, less the 16 MiB reserve: about 5 MB.
    assert!((4_000_000..6_500_000).contains(&min), "min budget {min}");
    // Recovered by the end, and the loop wraps to the start.
    assert_eq!(budgets[rows.len() - 1], b.model_budget_bytes);
    s.clear();
    src.sample(&mut s).unwrap();
    assert_eq!(s.mem_available_bytes, rows[0].mem_available_bytes - own);
}

#[test]
fn trace_parser_rejects_bad_files() {
    let ok = "# a comment\ntick,mem_available_bytes,power_mw,gpu_load_permille\n0,100,5,10\n1,90,6,20\n";
    assert_eq!(
        sim::parse_trace(ok).unwrap()[1],
        TraceRow { mem_available_bytes: 90, power_mw: 6, gpu_load_permille: 20 }
    );
    for bad in [
        "0,100,5,10\n",
        "tick,mem_available_bytes,power_mw,gpu_load_permille\n1,100,5,10\n",
        "tick,mem_available_bytes,power_mw,gpu_load_permille\n0,-100,5,10\n",
        "tick,mem_available_bytes,power_mw,gpu_load_permille\n0,100,5,1001\n",
        "tick,mem_available_bytes,power_mw,gpu_load_permille\n0,100,5\n",
    ] {
        assert!(sim::parse_trace(bad).is_err(), "{bad:?}");
    }
    assert!(Simulated::new(vec![], 10, 1).is_err());
}

/// The fault-injection wrapper: failures and garbage on chosen samples; the wrapper counts them,
/// keeps the last good sample, and recovers.
#[test]
fn injected_faults_are_counted_and_survived() {
    let b = board("host-sim");
    let rows: Vec<TraceRow> = (0..10)
        .map(|i| TraceRow {
            mem_available_bytes: 100_000_000 + i,
            power_mw: 6_000 + i as u32,
            gpu_load_permille: 500,
        })
        .collect();
    let sim = Simulated::new(rows, b.total_memory_bytes, 1).unwrap();
    let plan = |n: u64| match n {
        2 => Some(Fault::Fail(TelemetryError::Unreadable)),
        3 => Some(Fault::Garbage),
        4 => Some(Fault::Fail(TelemetryError::Injected)),
        _ => None,
    };
    let mut t = Telemetry::new(Box::new(Faulty::new(sim, plan)), Sample::fallback(b));
    let mut seen = Vec::new();
    for _ in 0..7 {
        let r = t.poll();
        seen.push((r, t.latest().power_mw));
    }
    assert_eq!(
        seen,
        [
            (Ok(()), 6_000),
            (Ok(()), 6_001),
            (Err(TelemetryError::Unreadable), 6_001),
            (Err(TelemetryError::Garbage), 6_001),
            (Err(TelemetryError::Injected), 6_001),
            (Ok(()), 6_005),
            (Ok(()), 6_006),
        ]
    );
    let st = t.stats();
    assert_eq!((st.samples, st.good, st.failures, st.consecutive_failures), (7, 4, 3, 0));
    assert_eq!(st.last_error, Some(TelemetryError::Injected));

    // A source that never works: the fallback, forever, and no panic.
    let mut dead = Telemetry::new(Box::new(Dead { why: TelemetryError::Unavailable }), Sample::fallback(b));
    for _ in 0..1000 {
        assert!(dead.poll().is_err());
    }
    assert_eq!(dead.stats().consecutive_failures, 1000);
    assert_eq!(dead.latest(), &Sample::fallback(b));
}

/// Counts heap allocations per thread (tests run on several threads).
#[global_allocator]
static ALLOC: jetlink::alloc_count::CountingAllocator = jetlink::alloc_count::CountingAllocator;

/// Polling, on every source the tests can open, allocates nothing once opened.
#[test]
fn polling_does_not_allocate() {
    let mut sources = Vec::new();
    for name in ["orin-nano-8gb", "agx-orin-64gb", "xavier-nx-8gb"] {
        sources.push(open_for_board(board(name), &tree(name)));
    }
    sources.push(open_for_board(board("host-sim"), Path::new("/")));
    for t in &mut sources {
        t.poll().unwrap();
    }
    let before = jetlink::alloc_count::loop_allocations();
    for _ in 0..100 {
        for t in &mut sources {
            t.poll().unwrap();
            let _ = t.latest().model_budget_bytes(board("host-sim"), 1 << 20);
        }
    }
    assert_eq!(jetlink::alloc_count::loop_allocations() - before, 0);
}
