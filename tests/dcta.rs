//! DCTA: the exact solver against brute force, the greedy baseline, the policy table (built at
//! bucket centres, serialised, checked when read), the device look-up (no allocation, counted
//! fallbacks) and the bench on the demo manifest.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::Path;

use jetlink::board;
use jetlink::dcta::{
    Allocation, BenchArgs, CostModel, Dcta, DctaError, DriftDistribution, ExactSolver, PolicyOptions,
    PolicyTable, Problem, Tatim, Workload, build_policy, build_policy_for, greedy,
};
use jetlink::manifest::Manifest;

/// Counts allocations made by the current thread (tests run on several threads).
struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, size: usize) -> *mut u8 {
        ALLOCS.with(|c| c.set(c.get() + 1));
        unsafe { System.realloc(p, l, size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCS.with(|c| c.get())
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn f64(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn demo() -> Manifest {
    Manifest::load(Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/demo/manifest.toml"))).unwrap()
}

/// A random instance: n tasks, m units, some units identical, some tasks too big for some units,
/// some values zero, some ties.
fn random_problem(rng: &mut Rng, n: usize, m: usize) -> Problem {
    let mut values = Vec::new();
    for _ in 0..n {
        values.push(match rng.below(6) {
            0 => 0.0,
            1 => 1.0,
            _ => (rng.f64() * 10.0 * 8.0).round() / 8.0,
        });
    }
    let speeds: Vec<u64> =
        (0..m).map(|u| if u > 0 && rng.below(3) == 0 { 0 } else { 1 + rng.below(4) }).collect();
    let mut costs = Vec::new();
    for _ in 0..n {
        let work = 1 + rng.below(40);
        for u in 0..m {
            // speed 0: a twin of the previous unit (same costs and capacity).
            let s = if speeds[u] == 0 { speeds[u - 1].max(1) } else { speeds[u] };
            costs.push(work.div_ceil(s));
        }
    }
    let mut capacity: Vec<u64> = (0..m).map(|_| rng.below(60)).collect();
    for u in 1..m {
        if speeds[u] == 0 {
            capacity[u] = capacity[u - 1];
            for j in 0..n {
                costs[j * m + u] = costs[j * m + u - 1];
            }
        }
    }
    Problem::new(&values, &costs, &capacity).unwrap()
}

/// Best value over all (m + 1)^n assignments.
fn brute_force(p: &Problem) -> f64 {
    let (n, m) = (p.n, p.m);
    let total = (m as u64 + 1).pow(n as u32);
    let mut best = 0.0f64;
    for code in 0..total {
        let mut a = Allocation::empty(n);
        let mut c = code;
        for j in 0..n {
            let u = (c % (m as u64 + 1)) as usize;
            c /= m as u64 + 1;
            a.set(j, if u == m { None } else { Some(u) });
        }
        if p.is_feasible(&a) {
            best = best.max(p.value_of(&a));
        }
    }
    best
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

#[test]
fn exact_matches_brute_force_on_random_instances() {
    let mut rng = Rng(7);
    let mut solver = ExactSolver::new();
    let mut binding = 0;
    for case in 0..1500 {
        let n = 1 + rng.below(7) as usize;
        let m = 1 + rng.below(3) as usize;
        let p = random_problem(&mut rng, n, m);
        let (a, v) = solver.solve(&p);
        let bf = brute_force(&p);
        assert!(p.is_feasible(&a), "case {case}: infeasible {a:?} for {p:?}");
        assert!(close(p.value_of(&a), v), "case {case}: reported {v}, allocation worth {}", p.value_of(&a));
        assert!(close(v, bf), "case {case}: exact {v} != brute force {bf} for {p:?}");
        let g = greedy(&p);
        assert!(p.is_feasible(&g), "case {case}: greedy infeasible");
        assert!(p.value_of(&g) <= v + 1e-9);
        if p.value_of(&g) < v - 1e-9 {
            binding += 1;
        }
    }
    // The instances are hard enough that greedy is often not optimal.
    assert!(binding > 50, "greedy was suboptimal on only {binding} instances");
}

#[test]
fn exact_handles_edge_cases() {
    let mut solver = ExactSolver::new();
    // Nothing fits.
    let p = Problem::new(&[3.0, 2.0], &[5, 6], &[4]).unwrap();
    let (a, v) = solver.solve(&p);
    assert_eq!((a.assigned(), v), (0, 0.0));
    // Zero capacity and zero cost: a free task runs.
    let p = Problem::new(&[1.0], &[0], &[0]).unwrap();
    assert_eq!(solver.solve(&p).1, 1.0);
    // Too many tasks or units is an error, not a panic.
    assert!(matches!(Problem::new(&[1.0; 17], &[1; 17], &[1]), Err(DctaError::TaskCount { .. })));
    assert!(matches!(Problem::new(&[1.0], &[1; 9], &[1; 9]), Err(DctaError::UnitCount { .. })));
    assert!(Problem::new(&[f64::NAN], &[1], &[1]).is_err());
    // 16 tasks on 4 units still solves quickly.
    let mut rng = Rng(3);
    let p = random_problem(&mut rng, 16, 4);
    let (a, v) = solver.solve(&p);
    assert!(p.is_feasible(&a) && v >= p.value_of(&greedy(&p)));
}

/// A small random deployment: n tasks, m units, 2 power levels.
fn random_tatim(rng: &mut Rng, n: usize, m: usize) -> Tatim {
    let speeds: Vec<f64> = (0..m).map(|u| if u == 0 { 1.0 } else { 0.25 + rng.f64() }).collect();
    let work: Vec<f64> = (0..n).map(|_| 100.0 + rng.f64() * 900.0).collect();
    let mut costs_us = Vec::new();
    for w in &work {
        for s in &speeds {
            costs_us.push((w / s).ceil() as u64);
        }
    }
    let cap0: Vec<u64> = (0..m).map(|_| 300 + rng.below(1200)).collect();
    let mut capacity_us = cap0.clone();
    capacity_us.extend(cap0.iter().map(|c| c / 2));
    Tatim {
        tasks: (0..n).map(|j| format!("t{j}")).collect(),
        weights: (0..n).map(|_| 0.5 + rng.f64() as f32).collect(),
        units: (0..m).map(|u| format!("u{u}")).collect(),
        speeds: speeds.iter().map(|&s| s as f32).collect(),
        work_us: work,
        costs_us,
        power_levels: vec![1.0, 0.5],
        capacity_us,
        load: 1.0,
    }
}

fn options(buckets: u8) -> PolicyOptions {
    PolicyOptions { buckets, threads: 2, ..PolicyOptions::default() }
}

#[test]
fn table_holds_the_exact_answer_at_every_bucket_centre() {
    let mut rng = Rng(11);
    let mut solver = ExactSolver::new();
    for _ in 0..5 {
        let tatim = random_tatim(&mut rng, 4, 2);
        let b = 3usize;
        let table = build_policy_for(tatim.clone(), "test", &options(b as u8)).unwrap();
        assert_eq!(table.cells(), 2 * 81);
        let mut dcta = Dcta::new(table).unwrap();
        for level in 0..2 {
            for code in 0..81usize {
                let drift: Vec<f32> =
                    (0..4).map(|j| ((code / b.pow(j)) % b) as f32 / b as f32 + 0.5 / b as f32).collect();
                let p = tatim.problem(&drift, level).unwrap();
                let opt = solver.solve(&p).1;
                let a = *dcta.allocate(&drift, level);
                assert!(p.is_feasible(&a));
                assert!(close(p.value_of(&a), opt), "level {level} drift {drift:?}");
                // Any drift inside the same cells gives the same answer.
                let inside: Vec<f32> = drift.iter().map(|d| d - 0.4 / b as f32).collect();
                assert_eq!(*dcta.allocate(&inside, level), a);
            }
        }
        assert_eq!(dcta.fallbacks(), 0);
        assert_eq!(dcta.decisions(), 2 * 81 * 2);
    }
}

#[test]
fn table_round_trips_through_postcard_and_rejects_corruption() {
    let mut rng = Rng(5);
    let table = build_policy_for(random_tatim(&mut rng, 5, 3), "test", &options(4)).unwrap();
    let bytes = table.to_postcard();
    let back = PolicyTable::from_postcard(&bytes).unwrap();
    assert_eq!(back, table);
    assert!(matches!(PolicyTable::from_postcard(&bytes[..bytes.len() / 2]), Err(DctaError::BadTable(_))));

    let mut bad = table.clone();
    bad.ids[0] = 250;
    assert!(matches!(Dcta::new(bad), Err(DctaError::BadTable("id out of range"))));
    let mut bad = table.clone();
    bad.allocations[0] = 7;
    assert!(matches!(Dcta::new(bad), Err(DctaError::BadTable(_))));
    let mut bad = table.clone();
    bad.ids.pop();
    assert!(Dcta::new(bad).is_err());
    let mut bad = table.clone();
    bad.level_class[1] = 9;
    assert!(Dcta::new(bad).is_err());
    let mut bad = table;
    bad.version = 99;
    assert!(Dcta::new(bad).is_err());
}

#[test]
fn lookup_and_fallback_do_not_allocate() {
    let table = build_policy(&demo(), board::by_name("agx-orin-64gb").unwrap(), &options(3)).unwrap();
    let mut dcta = Dcta::new(table).unwrap();
    let drift = [0.9f32, 0.1, 0.5, 0.0, 1.0, 0.3, 0.7, 0.2];
    let short = [0.9f32, 0.1];
    dcta.allocate(&drift, 0);
    let before = allocations();
    let mut assigned = 0;
    for level in 0..3 {
        assigned += dcta.allocate(&drift, level).assigned();
        assigned += dcta.allocate(&short, level).assigned();
        assigned += dcta.allocate(&drift, level + 3).assigned();
    }
    assert_eq!(allocations() - before, 0, "look-up allocated");
    assert!(assigned > 0);
    assert_eq!(dcta.fallbacks(), 6);
}

#[test]
fn out_of_table_contexts_fall_back_to_greedy_and_are_counted() {
    let manifest = demo();
    let agx = board::by_name("agx-orin-64gb").unwrap();
    let mut opts = options(3);
    opts.cost.stress = Some(2.0);
    let table = build_policy(&manifest, agx, &opts).unwrap();
    let tatim = table.tatim.clone();
    let mut dcta = Dcta::new(table).unwrap();
    let drift = [0.9f32, 0.1, 0.5, 0.05, 1.0, 0.3, 0.7, 0.2];
    dcta.allocate(&drift, 1);
    assert_eq!(dcta.fallbacks(), 0);

    // A capacity level the table was not built for: greedy at the least capacity, feasible.
    let a = *dcta.allocate(&drift, 7);
    assert_eq!(dcta.fallbacks(), 1);
    let p = tatim.problem(&drift, 2).unwrap();
    assert!(p.is_feasible(&a));
    assert_eq!(a, greedy(&p));

    // A different task count: greedy over the tasks the table knows.
    let a = *dcta.allocate(&drift[..3], 0);
    assert_eq!(dcta.fallbacks(), 2);
    assert_eq!(a.len(), 8);
    assert!((3..8).all(|j| a.unit_of(j).is_none()));
    assert!(tatim.problem(&drift[..3], 0).unwrap().is_feasible(&a));
    let mut long = drift.to_vec();
    long.push(0.5);
    dcta.allocate(&long, 0);
    assert_eq!((dcta.fallbacks(), dcta.decisions()), (3, 4));
}

#[test]
fn demo_costs_follow_the_board() {
    let manifest = demo();
    let agx = board::by_name("agx-orin-64gb").unwrap();
    let t = Tatim::from_manifest(&manifest, agx, &CostModel::default()).unwrap();
    assert_eq!(t.units, ["gpu", "dla0", "dla1", "cpu"]);
    assert_eq!(t.n_tasks(), 8);
    // c_ju = ⌈t_j / s_u⌉: the DLAs (speed 0.25) take 4×, the CPU (0.05) 20× the GPU's time.
    for j in 0..8 {
        let c = &t.costs_us[j * 4..j * 4 + 4];
        assert!(c[1].abs_diff(4 * c[0]) <= 4 && c[1] == c[2] && c[3].abs_diff(20 * c[0]) <= 20, "{c:?}");
        // K = 32 frames of the target model at least.
        assert!(t.work_us[j] >= 32.0 * manifest.models[j].cost.latency_us);
    }
    // C_u = adapt-share × period × min(1, f·P / p_u): GPU at 0.3 × 50 W = 15 W < 25 W busy.
    let period_us = 33_000.0 * 1800.0;
    assert_eq!(t.capacity(0)[0], (0.2 * period_us) as u64);
    assert_eq!(t.capacity(2)[0], (0.2 * period_us * 0.6) as u64);
    assert_eq!(t.capacity(2)[1], (0.5 * period_us) as u64);
    // The demo's models are tiny: everything fits (ρ ≪ 1), which is why the bench uses `stress`.
    assert!(t.load < 0.05, "load {}", t.load);
    let stressed =
        Tatim::from_manifest(&manifest, agx, &CostModel { stress: Some(1.5), ..CostModel::default() })
            .unwrap();
    assert!((stressed.load - 1.5).abs() < 1e-9);

    // Levels 0 and 1 have the same capacities on the AGX (the 30 W mode still covers the GPU's 25 W).
    let table = build_policy(&manifest, agx, &options(2)).unwrap();
    assert_eq!((table.classes, table.level_class.as_slice()), (2, &[0u8, 0, 1][..]));
    assert_eq!(table.cells(), 2 * 256);

    let host = board::by_name("host-sim").unwrap();
    let t = Tatim::from_manifest(&manifest, host, &CostModel::default()).unwrap();
    assert_eq!(t.units, ["cpu"]);
    let bad = CostModel { power_levels: vec![], ..CostModel::default() };
    assert!(matches!(Tatim::from_manifest(&manifest, host, &bad), Err(DctaError::BadOption { .. })));
    let too_big = PolicyOptions { buckets: 16, max_cells: 1000, ..options(16) };
    assert!(matches!(build_policy(&manifest, host, &too_big), Err(DctaError::TableTooLarge { .. })));
}

#[test]
fn bench_reports_every_method_on_held_out_contexts() {
    let host = board::by_name("host-sim").unwrap();
    let mut args = BenchArgs { contexts: 300, energy_seconds: 0.02, ..BenchArgs::default() };
    args.policy.buckets = 3;
    args.policy.threads = 2;
    args.real = vec![(vec![0.5; 8], 0), (vec![0.5; 3], 1)];
    let r = jetlink::dcta::bench(&demo(), host, &args).unwrap();
    assert_eq!((r.contexts, r.fallbacks), (302, 1));
    assert!((r.exact.quality - 1.0).abs() < 1e-12 && r.exact.quality_min > 1.0 - 1e-9);
    assert!(r.lookup.quality > 0.8 && r.lookup.quality <= 1.0 + 1e-12, "{}", r.lookup.quality);
    assert!(r.greedy.quality <= 1.0 + 1e-12);
    assert!(r.table_bytes > r.cells && r.lookup.median_ns > 0.0 && r.exact.energy_nj > 0.0);
    let json: serde_json::Value = serde_json::from_str(&r.to_json()).unwrap();
    assert_eq!(json["lookup"]["method"], "lookup");
    assert_eq!(json["distribution"], "uniform");
    assert!(r.to_table().contains("look-up vs exact"));
    args.distribution = DriftDistribution::LongTail;
    assert!(jetlink::dcta::bench(&demo(), host, &args).is_ok());
}

/// The numbers for the report: `cargo test --release --test dcta -- --ignored --nocapture`; writes
/// `target/dcta-bench-<board>-<distribution>.json`.
#[test]
#[ignore]
fn bench_every_board() {
    let buckets: u8 = std::env::var("DCTA_BUCKETS").ok().and_then(|b| b.parse().ok()).unwrap_or(4);
    let stress: f64 = std::env::var("DCTA_STRESS").ok().and_then(|b| b.parse().ok()).unwrap_or(1.5);
    let spread = Workload::Spread { seed: 3, spread: 10.0 };
    for name in ["host-sim", "orin-nano-8gb", "agx-orin-64gb"] {
        for (workload, distribution) in [
            (Workload::Manifest, DriftDistribution::Uniform),
            (spread, DriftDistribution::Uniform),
            (spread, DriftDistribution::LongTail),
        ] {
            let mut args = BenchArgs { distribution, workload, ..BenchArgs::default() };
            args.policy.buckets = buckets;
            args.policy.cost.stress = Some(stress);
            let r = jetlink::dcta::bench(&demo(), board::by_name(name).unwrap(), &args).unwrap();
            println!("{}", r.to_table());
            let out = Path::new(env!("CARGO_MANIFEST_DIR")).join(
                format!("target/dcta-bench-{name}-{}-{distribution:?}.json", workload_name(&workload))
                    .to_lowercase(),
            );
            std::fs::write(out, r.to_json()).unwrap();
        }
    }
}

fn workload_name(w: &Workload) -> &'static str {
    match w {
        Workload::Manifest => "manifest",
        _ => "spread",
    }
}
