//! The fault-injection soak, short enough for CI: 50,000 ticks of the loop on the simulated board
//! with frames, telemetry, memory, power, engines and the serial line failing at random (see
//! `jetlink::soak`). No panic, no allocation after the warm-up, never over the memory budget, a
//! finite (flagged) output for every task on every tick, and every injected fault counted.
//! `jetlink soak --ticks 1000000` is the long run.

use std::path::Path;

use jetlink::alloc_count::CountingAllocator;
use jetlink::board;
use jetlink::sim::soak::{self, SoakInputs, SoakOptions};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

fn inputs() -> SoakInputs {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    SoakInputs::load(&root.join("demo/manifest.toml"), &root.join("demo/demo.bundle"), board::current())
        .unwrap()
}

#[test]
fn fifty_thousand_faulty_ticks() {
    let d = inputs();
    let r = soak::run(&d, board::current(), &SoakOptions::new(50_000, 7)).unwrap();
    println!("{}", r.render());
    assert!(r.passed(), "{}", r.render());
    let (s, i) = (&r.stats, &r.injected);
    assert_eq!(s.ticks, 50_000);
    // Every kind of fault was exercised, and the loop reacted.
    assert!(i.frames_missing > 0 && i.frames_corrupt > 0 && i.frames_wrong_size > 0, "{i:?}");
    assert!(i.telemetry_failed > 0 && i.telemetry_garbage > 0, "{i:?}");
    assert!(i.engine_runtime > 0 && i.engine_bad_output > 0 && i.engine_timeouts > 0, "{i:?}");
    assert!(i.serial_errors > 0 && i.serial_blocked > 0 && i.serial_partial > 0, "{i:?}");
    assert!(i.pressure_episodes > 0 && s.sheds > 0, "{i:?} {s:?}");
    assert!(i.power_spikes > 0 && s.throttles > 0, "{i:?} {s:?}");
    assert!(s.min_budget < board::current().model_budget_bytes / 4, "{s:?}");
    assert!(s.degraded_outputs > 0 && s.adapt_tasks > 0);
    // Links still carry most tasks through all of it.
    assert!(s.accuracy_all().unwrap() > 0.7, "{:?}", s.accuracy_all());
}

#[test]
fn same_seed_same_faults() {
    let d = inputs();
    let o = SoakOptions::new(3_000, 42);
    let a = soak::run(&d, board::current(), &o).unwrap();
    let b = soak::run(&d, board::current(), &o).unwrap();
    assert_eq!(a.injected, b.injected);
    assert_eq!(a.stats.frame_faults, b.stats.frame_faults);
    let c = soak::run(&d, board::current(), &SoakOptions::new(3_000, 43)).unwrap();
    assert_ne!(a.injected, c.injected);
}

/// Every injected fault is a function of the seed and the tick (or call counter) alone: a run
/// slowed past the deadline every 50 ticks (as on a loaded machine: DeadlineMiss events, Tick frames
/// of other lengths) injects exactly the same faults as one at full speed.
#[test]
fn faults_do_not_depend_on_timing() {
    let d = inputs();
    let fast = SoakOptions::new(2_000, 42);
    let slow = SoakOptions { slow_every: 50, ..fast };
    let a = soak::run(&d, board::current(), &fast).unwrap();
    let b = soak::run(&d, board::current(), &slow).unwrap();
    assert!(b.stats.deadline_misses >= 40, "the hook slowed 40 ticks: {} misses", b.stats.deadline_misses);
    assert_eq!(a.injected, b.injected);
    let counted = |r: &soak::SoakReport| {
        (
            r.stats.frame_faults,
            r.stats.telemetry_faults,
            r.stats.engine_faults,
            r.stats.serial_drops,
            r.writer.dropped,
        )
    };
    assert_eq!(counted(&a), counted(&b));
    assert!(a.passed() && b.passed(), "{}\n{}", a.render(), b.render());
}

#[test]
fn bad_options_are_refused_with_what_is_wrong() {
    let d = inputs();
    let e = soak::run(&d, board::current(), &SoakOptions::new(0, 1)).unwrap_err().to_string();
    assert!(e.contains("--ticks"), "{e}");
    let mut o = SoakOptions::new(100, 1);
    o.warmup = 100;
    let e = soak::run(&d, board::current(), &o).unwrap_err().to_string();
    assert!(e.contains("warm-up"), "{e}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let e =
        SoakInputs::load(&root.join("demo/manifest.toml"), &root.join("demo/nope.bundle"), board::current())
            .err()
            .unwrap();
    let e = format!("{e:#}");
    assert!(e.contains("--bundle") && e.contains("nope.bundle"), "{e}");
}
