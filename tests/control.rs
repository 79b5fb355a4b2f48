//! The control loop end to end on the simulated board over the demo: no allocation per tick over
//! 10,000+ ticks, the memory budget never exceeded while the simulated trace squeezes it, faults
//! survived with every task still delivering, and the real tract engines on a short slice.

use std::path::Path;

use jetlink::alloc_count::{self, CountingAllocator};
use jetlink::board;
use jetlink::control::{Controller, LoopBuilder, LoopOptions};
use jetlink::engine::{Backend, Engine, EngineError, EngineInfo, TractBackend};
use jetlink::manifest::ModelSpec;
use jetlink::model_set::ModelSet;
use jetlink::serial::MemWriter;
use jetlink::sim::DemoSet;
use jetlink::sim::ReplayBackend;
use jetlink::sim::{Fault, Faulty};
use jetlink::source::{FrameError, FrameInfo, FrameSource, ReplaySource};
use jetlink::telemetry::{self, TelemetryError};
use jetlink::wire::{Decoder, Message, TelemetryWriter};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

type Demo = DemoSet;

fn demo() -> Demo {
    DemoSet::demo().unwrap()
}

/// The demo loop's builder: the simulated board, the demo workload, scored against the reference.
fn builder(d: &Demo) -> LoopBuilder {
    LoopBuilder::new(board::current(), d.manifest.clone(), d.bundle.clone(), d.stream.clone())
        .reference(Some(d.reference.clone()))
}

fn writer() -> TelemetryWriter<MemWriter> {
    // Room for every frame up front, so that writing telemetry does not grow a vector.
    TelemetryWriter::new(MemWriter { data: Vec::with_capacity(16 << 20), ..MemWriter::default() })
}

fn replay_loop<S: FrameSource>(
    d: &Demo,
    source: S,
    backend: Option<Box<dyn Backend>>,
    telemetry: telemetry::Telemetry,
) -> Controller<S, MemWriter> {
    let b = builder(d).telemetry(telemetry);
    let b = match backend {
        Some(e) => b.engines(e),
        None => b.engines(jetlink::sim::replay(d.reference.clone())),
    };
    b.build(source, writer()).unwrap()
}

fn decode(ctl: &Controller<impl FrameSource, MemWriter>) -> (u64, u64, u64, u64) {
    let (mut ticks, mut summaries, mut events, mut hellos) = (0, 0, 0, 0);
    let mut dec = Decoder::new();
    dec.feed(&ctl.writer().get_ref().data, |m| match m {
        Message::Tick(_) => ticks += 1,
        Message::PeriodSummary(_) => summaries += 1,
        Message::Event(_) => events += 1,
        Message::Hello(_) => hellos += 1,
    });
    assert_eq!(dec.stats().corrupt, 0);
    (hellos, ticks, summaries, events)
}

#[test]
fn no_allocation_per_tick_over_ten_thousand_ticks() {
    let d = demo();
    let (from, to) = (d.stream.train_end, d.stream.len());
    let telemetry = telemetry::open_for_board(board::current(), Path::new("/"));
    let mut ctl = replay_loop(&d, ReplaySource::new(d.stream.clone(), from..to), None, telemetry);
    // Warm-up: the first periods (first DCTA decision, first adaptation task, first summary).
    for _ in 0..1000 {
        assert!(ctl.tick());
    }
    let before = alloc_count::loop_allocations();
    let mut ticks = 0;
    while ctl.tick() {
        ticks += 1;
    }
    ctl.finish();
    let allocs = alloc_count::loop_allocations() - before;
    assert!(ticks >= 10_000, "{ticks} ticks measured");
    assert_eq!(allocs, 0, "the loop allocated {allocs} times in {ticks} ticks");
    let s = ctl.stats();
    // The simulated trace squeezes free memory below the running set: the loop sheds and never
    // runs over the budget it had at that tick.
    assert_eq!(s.budget_violations, 0);
    assert!(s.sheds > 0 && s.min_budget < board::current().model_budget_bytes / 2, "{s:?}");
    assert!(s.throttles > 0, "the trace's power spikes throttle the schedule");
    assert!(s.adapt_tasks > 0, "adaptation tasks ran");
    assert!(s.peak_mem <= board::current().model_budget_bytes);
    // Links keep most of the accuracy while saving most FLOPs.
    let acc = s.accuracy_all().unwrap();
    assert!(acc > 0.85 && acc < 1.0, "accuracy {acc}");
    assert!(s.flops_saved() > 0.5, "FLOPs saved {}", s.flops_saved());
    let (hellos, tick_msgs, summaries, events) = decode(&ctl);
    assert_eq!(hellos, 1);
    assert_eq!(tick_msgs, s.ticks / ctl.writer().decimation() as u64);
    assert_eq!(summaries, s.ticks.div_ceil(board::current().ticks_per_period as u64));
    assert!(events >= s.sheds + s.throttles);
    // Every period's summary counts exactly its ticks (the last one, partial, the rest).
    let mut per = Vec::new();
    Decoder::new().feed(&ctl.writer().get_ref().data, |m| {
        if let Message::PeriodSummary(p) = m {
            per.push(p.ticks as u64);
        }
    });
    let tpp = board::current().ticks_per_period as u64;
    assert!(per[..per.len() - 1].iter().all(|&t| t == tpp), "{per:?}");
    assert_eq!(per.iter().sum::<u64>(), s.ticks);
}

/// Frames that fail now and then.
struct FlakySource<S> {
    inner: S,
    n: u64,
}

impl<S: FrameSource> FrameSource for FlakySource<S> {
    fn frame_len(&self) -> usize {
        self.inner.frame_len()
    }
    fn next_frame(&mut self, buf: &mut [u8]) -> Result<Option<FrameInfo>, FrameError> {
        self.n += 1;
        match self.n % 97 {
            13 => Err(FrameError::Corrupt),
            50 => Err(FrameError::Missing),
            _ => self.inner.next_frame(buf),
        }
    }
}

/// Engines that fail on every seventh call.
struct FlakyBackend(Box<dyn Backend>);
struct FlakyEngine(Box<dyn Engine>, u64);

impl Backend for FlakyBackend {
    fn name(&self) -> &'static str {
        "flaky"
    }
    fn load(&self, spec: &ModelSpec, path: &Path) -> anyhow::Result<Box<dyn Engine>> {
        Ok(Box::new(FlakyEngine(self.0.load(spec, path)?, 0)))
    }
}

impl Engine for FlakyEngine {
    fn info(&self) -> &EngineInfo {
        self.0.info()
    }
    fn memory_bytes(&self) -> u64 {
        self.0.memory_bytes()
    }
    fn set_frame(&mut self, index: u32) {
        self.0.set_frame(index);
    }
    fn run(&mut self, input: &[f32], output: &mut [f32]) -> Result<(), EngineError> {
        self.1 += 1;
        if self.1 % 7 == 0 {
            output.fill(f32::NAN);
            return Err(EngineError::Timeout);
        }
        let r = self.0.run(input, output);
        if self.1 % 13 == 0 {
            // A model that "ran" but gave a value that is not a number: the loop must not deliver it.
            output[0] = f32::NAN;
        }
        r
    }
}

#[test]
fn survives_frame_engine_and_telemetry_faults_and_keeps_delivering() {
    let d = demo();
    let from = d.stream.train_end;
    let source = FlakySource { inner: ReplaySource::new(d.stream.clone(), from..from + 3000), n: 0 };
    let inner = Box::new(ReplayBackend { recording: d.reference.clone() });
    let sim = telemetry::sim::Simulated::open_for_board(board::current()).unwrap();
    let faulty = Faulty::new(sim, |n| match n % 11 {
        3 => Some(Fault::Fail(TelemetryError::Unreadable)),
        7 => Some(Fault::Garbage),
        _ => None,
    });
    let tel = telemetry::Telemetry::new(Box::new(faulty), telemetry::Sample::fallback(board::current()));
    let mut ctl =
        builder(&d).engines(Box::new(FlakyBackend(inner))).telemetry(tel).build(source, writer()).unwrap();
    let n = ctl.n_models();
    let before = alloc_count::loop_allocations();
    let mut ticks = 0;
    while ctl.tick() {
        ticks += 1;
        // Every task has a finite output on every tick, degraded or not.
        assert!(ctl.outputs().iter().all(|v| v.is_finite()), "tick {ticks}");
        let t = ctl.last().tick;
        assert!(!t.active.exceeds(n), "{}", t.active);
    }
    let s = ctl.stats();
    assert!(s.frame_faults >= 60, "{}", s.frame_faults);
    assert!(s.engine_faults > 100, "{}", s.engine_faults);
    assert!(s.telemetry_faults > 400, "{}", s.telemetry_faults);
    assert_eq!(s.telemetry_faults, ctl.telemetry().stats().failures);
    assert!(s.degraded_outputs > 0);
    assert_eq!(s.budget_violations, 0);
    assert!(s.accuracy_all().unwrap() > 0.8);
    // Faults are handled without allocating either (after the first, which warms up paths).
    let allocs = alloc_count::loop_allocations() - before;
    assert!(allocs <= 16, "{allocs} allocations over {ticks} faulty ticks");
    let (_, _, _, events) = decode(&ctl);
    assert!(events >= s.frame_faults + s.engine_faults);
}

#[test]
fn real_engines_on_a_short_slice() {
    let d = demo();
    let from = d.stream.drift_start - 20;
    let telemetry = telemetry::open_for_board(board::current(), Path::new("/"));
    let mut ctl = replay_loop(
        &d,
        ReplaySource::new(d.stream.clone(), from..from + 40),
        Some(Box::new(TractBackend)),
        telemetry,
    );
    while ctl.tick() {}
    let s = ctl.stats();
    assert_eq!(s.ticks, 40);
    assert_eq!(s.ref_frames[0] + s.ref_frames[1], 40);
    assert_eq!(s.engine_faults, 0);
    assert!(s.executions > 0 && s.executions < 40 * ctl.n_models() as u64);
    assert!(s.accuracy_all().unwrap() > 0.7, "{:?}", s.accuracy_all());
}

#[test]
fn a_bundle_for_other_models_is_refused() {
    let d = demo();
    let mut m = d.manifest.clone();
    m.models.swap(0, 1);
    let err = LoopBuilder::new(board::current(), m, d.bundle.clone(), d.stream.clone())
        .engines(Box::new(ReplayBackend { recording: d.reference.clone() }))
        .build_replay(0..10, writer())
        .err()
        .unwrap();
    assert!(format!("{err:#}").contains("does not match the manifest"), "{err:#}");
}

/// Adaptation reaches targets that do not fit beside the running set: the loop sets active models
/// aside for those ticks (never over the budget), counts the runs as executions, and wins back
/// accuracy on the drift segment against the same run without adaptation.
#[test]
fn adaptation_makes_room_and_wins_back_drift() {
    let d = demo();
    let run = |adapt: bool| {
        let (from, to) = (d.stream.drift_start, d.stream.len());
        // The board's simulated telemetry trace (the builder's default), as in the main job.
        let mut b = builder(&d).engines(jetlink::sim::replay(d.reference.clone()));
        *b.options_mut() = LoopOptions { adapt, max_active: Some(2), ..b.options_mut().clone() };
        let mut ctl = b.build_replay(from..to, writer()).unwrap();
        while ctl.tick() {}
        ctl.finish();
        *ctl.stats()
    };
    let (on, off) = (run(true), run(false));
    assert_eq!(on.budget_violations, 0);
    assert!(on.peak_mem <= board::current().model_budget_bytes, "{on:?}");
    assert!(on.adapt_tasks > 0 && on.adapt_executions > 0, "{on:?}");
    assert!(on.adapt_room_ticks > 0, "no adaptation target needed room: {on:?}");
    assert_eq!(off.adapt_executions + off.adapt_room_ticks, 0);
    // Adaptation runs are executions: the adapted run saves less.
    assert!(on.executions_saved(on.n_models) < off.executions_saved(off.n_models));
    let (a, b) = (on.accuracy(1).unwrap(), off.accuracy(1).unwrap());
    assert!(a > b + 0.01, "drift accuracy with adaptation {a:.4}, without {b:.4}");
}

/// The policy seam: each named policy runs inside the loop. Holding policies deliver a task's
/// output held from its model's last run (never the running models', never one that never ran),
/// with its age; the wire's Ticks say which outputs were held; no phase runs over the budget or
/// the execution cap; and no tick allocates.
#[test]
fn policies_run_in_the_loop_and_held_outputs_carry_their_age() {
    let d = demo();
    let cap = 2u32;
    for policy in [
        "interval-4",
        "optimal-hold",
        "frame-filter",
        "random",
        "greedy",
        "standalone",
        "refresh-4",
        "oracle-refresh-4",
    ] {
        let mut b = builder(&d).engines(jetlink::sim::replay(d.reference.clone()));
        *b.options_mut() =
            LoopOptions { policy: policy.into(), max_active: Some(cap as usize), ..b.options_mut().clone() };
        let mut ctl = b.build_replay(d.stream.train_end..d.stream.train_end + 4000, writer()).unwrap();
        assert_eq!(ctl.policy(), policy);
        for _ in 0..1000 {
            assert!(ctl.tick());
        }
        let before = alloc_count::loop_allocations();
        let (mut held_seen, mut oldest) = (0u64, 0u32);
        while ctl.tick() {
            let t = ctl.last().tick;
            let held = ctl.held();
            assert_eq!(held, t.held, "{policy}");
            assert_eq!(
                held & ctl.active(),
                ModelSet::EMPTY,
                "{policy}: a running model's output is not held"
            );
            assert!(ctl.active().len() <= cap as usize, "{policy}");
            for j in 0..ctl.n_models() {
                if held.contains(j) {
                    let age = ctl.held_age(j).expect("a held output has an age");
                    assert!(age >= 1, "{policy}: task {j} held at age 0");
                    oldest = oldest.max(age);
                }
            }
            held_seen += held.len() as u64;
        }
        ctl.finish();
        let allocs = alloc_count::loop_allocations() - before;
        assert_eq!(allocs, 0, "{policy}: the loop allocated {allocs} times");
        let s = *ctl.stats();
        assert_eq!(s.budget_violations, 0, "{policy}: {s:?}");
        assert!(s.held_outputs >= held_seen, "{policy}");
        // Decoded from the wire: the held bits of every Tick (one per tick on host-sim).
        let mut wire_held = 0u64;
        Decoder::new().feed(&ctl.writer().get_ref().data, |m| {
            if let Message::Tick(t) = m {
                wire_held += t.held.len() as u64;
            }
        });
        assert_eq!(ctl.writer().decimation(), 1);
        assert_eq!(wire_held, s.held_outputs, "{policy}");
        match policy {
            // Every model runs every 4th tick at most (the cycle restarts when the budget's level
            // changes), held between.
            "interval-4" => {
                assert!(held_seen > 1000 && oldest >= 3, "{policy}: {held_seen} held, oldest {oldest}");
                assert!(s.executions_saved(s.n_models) > 0.6, "{s:?}");
            }
            // Unchanged frames hold every output.
            "frame-filter" => assert!(held_seen > 0, "{policy}"),
            // At interval-4's rate (8 / 4 = 2 runs a tick, within the cap), the rest held.
            "refresh-4" | "oracle-refresh-4" => {
                assert!(held_seen > 1000, "{policy}: {held_seen} held");
                let saved = s.executions_saved(s.n_models);
                assert!((0.70..=0.80).contains(&saved), "{policy}: {saved} saved");
            }
            // Policies without holding.
            "greedy" | "standalone" | "random" => assert_eq!(held_seen, 0, "{policy}"),
            _ => {}
        }
    }
    // An unknown policy is refused when the loop is prepared, naming it and the choices.
    let mut b = builder(&d).engines(jetlink::sim::replay(d.reference.clone()));
    b.options_mut().policy = "interval-0".into();
    let err = b.build_replay(0..10, writer()).err().unwrap();
    let msg = format!("{err:#}");
    assert!(msg.contains("\"interval-0\"") && msg.contains("optimal-hold"), "{msg}");
    // The oracle is a benchmark ceiling: without a reference it is refused.
    let mut b = builder(&d).engines(jetlink::sim::replay(d.reference.clone())).reference(None);
    b.options_mut().policy = "oracle-refresh-4".into();
    let msg = format!("{:#}", b.build_replay(0..10, writer()).err().unwrap());
    assert!(msg.contains("needs the reference"), "{msg}");
}

/// A bundle whose DCTA table was built for another board still adapts: the loop allocates with
/// plain greedy over this board's menu, as its log says.
#[test]
fn a_foreign_dcta_table_falls_back_to_greedy_and_still_adapts() {
    let d = demo();
    let mut bundle = d.bundle.clone();
    let mut t = jetlink::dcta::PolicyTable::from_postcard(bundle.dcta.as_ref().unwrap()).unwrap();
    t.board = "another-board".into();
    bundle.dcta = Some(t.to_postcard());
    let b = LoopBuilder::new(board::current(), d.manifest.clone(), bundle, d.stream.clone())
        .reference(Some(d.reference.clone()))
        .engines(jetlink::sim::replay(d.reference.clone()));
    let mut ctl = b.build_replay(d.stream.drift_start..d.stream.len(), writer()).unwrap();
    assert_eq!(ctl.dcta().unwrap().table().board, board::current().name);
    while ctl.tick() {}
    ctl.finish();
    assert!(ctl.stats().adapt_tasks > 0, "{:?}", ctl.stats());
}
