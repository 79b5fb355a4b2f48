//! The fleet against a real Mosquitto (Debian package `mosquitto`), started by each test on a
//! loopback port and stopped after: four simulated boards aggregate their links; a board cut from
//! the broker keeps its loop running without allocating and resends its summaries; tampered and
//! unsigned global updates are refused. Without `mosquitto` the tests skip with a message, unless
//! `JETLINK_REQUIRE_MOSQUITTO=1` (CI) makes that a failure.
#![cfg(all(feature = "fleet", feature = "sim"))]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ed25519_dalek::SigningKey;
use jetlink::alloc_count::{self, CountingAllocator};
use jetlink::board;
use jetlink::control::LoopBuilder;
use jetlink::fleet::aggregate::{AggregateOptions, Aggregator};
use jetlink::fleet::broker::{Mosquitto, mqtt_options};
use jetlink::fleet::client::{ClientOptions, FleetClient};
use jetlink::fleet::msg::{FLEET_PROTO, GlobalLinks, SummaryMsg, sign_global};
use jetlink::fleet::sim::{SimBoard, local_train, score};
use jetlink::fleet::tap::FleetTap;
use jetlink::fleet::tasks::TaskCosts;
use jetlink::fleet::{FleetConfig, fuse, model_hash};
use jetlink::links::{LinkModel, Predictor};
use jetlink::model_set::ModelSet;
use jetlink::recording::Recording;
use jetlink::serial::MemWriter;
use jetlink::sim::DemoSet;
use jetlink::wire::TelemetryWriter;
use rumqttc::{Client, Event, Packet, QoS};

#[global_allocator]
static ALLOC: CountingAllocator = CountingAllocator;

const WAIT: Duration = Duration::from_secs(60);

fn broker() -> Option<Mosquitto> {
    if Mosquitto::find().is_none() {
        if std::env::var("JETLINK_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1") {
            panic!("JETLINK_REQUIRE_MOSQUITTO=1 but mosquitto is not installed");
        }
        eprintln!("skipped: mosquitto is not installed (Debian: apt-get install mosquitto)");
        return None;
    }
    Some(Mosquitto::start().expect("start mosquitto"))
}

/// The aggregator's options for `bundle`: a long period (rounds start when `min_boards` updates
/// are in), `rounds` rounds, any board id.
fn agg_options(
    key: SigningKey,
    bundle: &jetlink::bundle::Bundle,
    min_boards: usize,
    rounds: Option<u32>,
) -> AggregateOptions {
    AggregateOptions {
        key,
        model_hash: model_hash(bundle),
        period: Duration::from_secs(3600),
        min_boards,
        rounds,
        start_version: 0,
        shapes: fuse::target_shapes(&bundle.links, &bundle.ensembles),
        boards: None,
        forget_after: None,
        poll: Duration::from_millis(10),
    }
}

fn fleet_key() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

/// Rows of `rec` for the frames of `frames` with a stride: every 4th frame is held out for testing
/// (up to `n_test`), the others fill the fit rows, then the validation rows.
fn split(
    rec: &Recording,
    frames: std::ops::Range<u32>,
    n_fit: usize,
    n_val: usize,
    n_test: usize,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    split_rows(frames.filter_map(|f| rec.row_of_frame(f)).collect(), n_fit, n_val, n_test)
}

/// [`split`] of the rows `rows`.
fn split_rows(
    rows: Vec<usize>,
    n_fit: usize,
    n_val: usize,
    n_test: usize,
) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
    let step = (rows.len() / (n_fit + n_val + n_test).max(1)).max(1);
    let picked: Vec<usize> = rows.iter().copied().step_by(step).collect();
    let (mut fit, mut val, mut test) = (Vec::new(), Vec::new(), Vec::new());
    for (i, r) in picked.into_iter().enumerate() {
        if i % 4 == 3 && test.len() < n_test {
            test.push(r);
        } else if fit.len() < n_fit {
            fit.push(r);
        } else if val.len() < n_val {
            val.push(r);
        } else if test.len() < n_test {
            test.push(r);
        }
    }
    (fit, val, test)
}

/// The demo stream's parts the fleet tests put boards on: its clean frames after the training
/// ones, then the drifted frames in three (low, middle and high drift).
fn stream_parts(d: &DemoSet) -> [std::ops::Range<u32>; 4] {
    let drift = d.stream.drift_start as u32;
    let end = d.stream.len() as u32;
    let third = (end - drift) / 3;
    [
        d.stream.train_end as u32..drift,
        drift..drift + third,
        drift + third..drift + 2 * third,
        drift + 2 * third..end,
    ]
}

/// Three boards on different parts of the demo stream (clean frames, low and middle drift)
/// fine-tune their links on their own frames and publish them; the aggregator averages and signs;
/// each fuses the global links with its own and is scored on its held-out frames. A fourth board
/// then joins, on the high-drift frames with only a few training frames: it starts from the
/// fleet's links (retained on the broker) and fine-tunes them on its frames, against the same
/// fine-tuning from the bundle's links alone.
#[test]
fn fleet_links_help_a_new_board_and_hurt_no_other() {
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let (bundle, rec) = (&d.bundle, &*d.reference);
    let [clean, low, mid, high] = stream_parts(&d);
    let specs: [(&str, std::ops::Range<u32>, usize, usize); 3] =
        [("clean", clean, 600, 64), ("drift-low", low, 600, 64), ("drift-mid", mid, 600, 64)];
    let cfg = broker.config("test");
    let key = fleet_key();
    let agg = Aggregator::start(cfg.clone(), agg_options(key.clone(), bundle, specs.len(), Some(1))).unwrap();
    let pk = key.verifying_key().to_bytes();
    let mut boards = Vec::new();
    for (i, (name, frames, n_fit, n_val)) in specs.iter().enumerate() {
        let (fit, val, test) = split(rec, frames.clone(), *n_fit, *n_val, 300);
        let mut b = SimBoard::join(&cfg, bundle, name, pk, val.len()).unwrap();
        local_train(bundle, &mut b.predictor, rec, &fit, 6, 100 + i as u64);
        let bundle_only = score(bundle, &mut Predictor::new(bundle), rec, &test);
        let local = score(bundle, &mut b.predictor, rec, &test);
        assert!(b.client.wait_for(WAIT, |s| s.connected), "{name} did not connect");
        // Cooperative adaptation: each board offers the targets it sees drifting (more drift on
        // the later parts of the stream) and takes none itself.
        let level = 0.3 * i as f32;
        b.tap.offer_tasks(0, &vec![level; bundle.n_models()], ModelSet::EMPTY);
        b.offer(rec, &vec![fit.len() as u32; bundle.n_models()], &val);
        boards.push((b, test, bundle_only, local, fit.len()));
    }
    for (b, ..) in &boards {
        assert!(b.client.wait_for(WAIT, |s| s.global_version == 1), "{} got no global links", b.name);
    }
    println!(
        "board        fit rows   bundle    local    fleet   gain   (held-out frames, mean agreement over targets)"
    );
    let mut gains = Vec::new();
    for (b, test, bundle_only, local, n_fit) in &mut boards {
        assert_eq!(b.take_global(), Some(1));
        let fused = score(bundle, &mut b.predictor, rec, test);
        let st = b.client.stats();
        println!(
            "{:<12} {:>8} {:>8.4} {:>8.4} {:>8.4} {:>+7.4}   local share per target {:?}",
            b.name,
            n_fit,
            bundle_only,
            local,
            fused,
            fused - *local,
            st.last_fused.as_ref().map(|f| f.choices.iter().map(|c| c.1).collect::<Vec<_>>())
        );
        gains.push((b.name.clone(), fused - *local));
    }
    // The aggregator allocated the offered tasks across boards: each board received its share,
    // as allocating the same offers here gives.
    let costs = TaskCosts::of_bundle(bundle).expect("the demo bundle has a DCTA table");
    let offers: Vec<_> = (0..specs.len())
        .map(|i| {
            costs.offer(
                specs[i].0,
                model_hash(bundle),
                0,
                &vec![0.3 * i as f32; bundle.n_models()],
                ModelSet::EMPTY,
            )
        })
        .collect();
    let expected = jetlink::fleet::tasks::allocate(0, &offers.iter().collect::<Vec<_>>());
    let mut union = ModelSet::EMPTY;
    let st = agg.stats();
    println!(
        "aggregator: {} offers, {} allocations published; expected {:?}",
        st.offers, st.assignments, expected.boards
    );
    for (b, ..) in &boards {
        let want = expected.boards.iter().find(|x| x.0 == b.name).unwrap().1;
        assert!(
            b.client.wait_for(WAIT, |s| s.assigned == want),
            "{}: assigned {:#b}, expected {want:#b}",
            b.name,
            b.client.stats().assigned
        );
        assert_eq!(union & want, ModelSet::EMPTY, "a target refreshed by two boards");
        union |= want;
    }
    assert_ne!(union, ModelSet::EMPTY, "nothing allocated");
    println!("tasks allocated across boards: {:?}", expected.boards);
    let agg = agg.stop().unwrap();
    assert_eq!(agg.rounds.len(), 1);
    assert_eq!(agg.rounds[0].boards, 3);
    assert_eq!(agg.offers, 3, "every board offers (the clean one an empty list)");

    // A new board joins with 40 frames of the high-drift part.
    let (fit, val, test) = split(rec, high, 40, 16, 300);
    let mut alone = Predictor::new(bundle);
    local_train(bundle, &mut alone, rec, &fit, 6, 200);
    let local = score(bundle, &mut alone, rec, &test);
    let bundle_only = score(bundle, &mut Predictor::new(bundle), rec, &test);
    let mut b = SimBoard::join(&cfg, bundle, "newcomer", pk, val.len()).unwrap();
    assert!(b.client.wait_for(WAIT, |s| s.global_version == 1), "the new board got no global links");
    assert_eq!(b.take_global(), Some(1), "with no samples of its own it takes the fleet's links");
    local_train(bundle, &mut b.predictor, rec, &fit, 6, 200);
    let fleet = score(bundle, &mut b.predictor, rec, &test);
    println!(
        "{:<12} {:>8} {:>8.4} {:>8.4} {:>8.4} {:>+7.4}   joined later: fine-tuned from the fleet's links",
        "newcomer",
        fit.len(),
        bundle_only,
        local,
        fleet,
        fleet - local
    );
    assert!(fleet - local > 0.02, "the new board gained {:.4} from the fleet's links", fleet - local);
    // No worse for the established boards, within half a point of mean agreement (300 held-out
    // frames: one target's agreement moves by 1/300 per frame; the fusion picks its mix on 64
    // labelled rows, which cannot resolve smaller differences).
    for (name, gain) in &gains {
        assert!(*gain >= -0.005, "{name} lost {gain:.4} with the fleet's links");
    }
}

/// Boards that share their drift, in groups. Four parts of the demo stream (clean frames, low,
/// middle and high drift), [`PER_GROUP`] boards on each, every board on frames of its own. Each
/// period a board adapts its links on a few fresh labelled frames of its part, offers them, and
/// fuses the signed average it gets back. The same fleet runs twice: with a group per part of the
/// stream (the aggregator's list of boards says `ID GROUP`), then with no groups (one average over
/// the whole fleet). Each board is scored on its held-out frames against the same adaptation
/// without a fleet. Then a new board joins the high-drift part with 40 frames: it starts from the
/// links it is sent (its group's, or the fleet's) and fine-tunes them on its frames.
#[test]
fn boards_that_share_their_drift_gain_from_their_group() {
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let (bundle, rec) = (&d.bundle, &*d.reference);
    let parts: [(&str, std::ops::Range<u32>); 4] = {
        let [clean, low, mid, high] = stream_parts(&d);
        [("clean", clean), ("low", low), ("mid", mid), ("high", high)]
    };
    // Board b of a part takes every (PER_GROUP + 1)-th row of it from the b-th; the last share is
    // the newcomer's.
    let rows_of_board = |p: usize, b: usize| -> Vec<usize> {
        let rows = parts[p].1.clone().filter_map(|f| rec.row_of_frame(f));
        rows.enumerate().filter(|(i, _)| i % (PER_GROUP + 1) == b).map(|(_, r)| r).collect()
    };
    struct Planned {
        name: String,
        part: usize,
        seed: u64,
        fit: Vec<usize>,
        val: Vec<usize>,
        test: Vec<usize>,
        local: f32,
    }
    let adapt =
        |p: &mut Predictor, rows: &[usize], seed: u64| local_train(bundle, p, rec, rows, EPOCHS, seed);
    let mut planned = Vec::new();
    for (p, (part, _)) in parts.iter().enumerate() {
        for b in 0..PER_GROUP {
            let (fit, val, test) = split_rows(rows_of_board(p, b), PERIODS * FRESH, 64, 300);
            // A drifting part's 1,666 frames leave each board about 120 held-out ones.
            assert!(
                fit.len() == PERIODS * FRESH && test.len() >= 100,
                "{} fit, {} test rows",
                fit.len(),
                test.len()
            );
            let seed = (10 * p + b) as u64;
            // Local only: the same adaptation, period by period, without the fleet.
            let mut alone = Predictor::new(bundle);
            for (period, chunk) in fit.chunks(FRESH).enumerate() {
                adapt(&mut alone, chunk, seed + 1000 * period as u64);
            }
            let local = score(bundle, &mut alone, rec, &test);
            planned.push(Planned { name: format!("{part}-{b}"), part: p, seed, fit, val, test, local });
        }
    }
    let (new_fit, new_val, new_test) = split_rows(rows_of_board(3, PER_GROUP), 40, 16, 300);
    let mut alone = Predictor::new(bundle);
    adapt(&mut alone, &new_fit, 7);
    let newcomer_local = score(bundle, &mut alone, rec, &new_test);
    // What sharing could give at most: each period, the links adapted on the fresh frames of every
    // board of the part together (data pooled in one place, which the fleet never does), scored
    // on the part's held-out frames; the high-drift part's also on the newcomer's.
    let mut pooled = Vec::new();
    for (p, (name, _)) in parts.iter().enumerate() {
        let part: Vec<&Planned> = planned.iter().filter(|b| b.part == p).collect();
        let mut links = Predictor::new(bundle);
        for period in 0..PERIODS {
            let rows: Vec<usize> = part
                .iter()
                .flat_map(|b| b.fit[period * FRESH..(period + 1) * FRESH].iter().copied())
                .collect();
            adapt(&mut links, &rows, 500 + 1000 * period as u64);
        }
        let mean = |f: &dyn Fn(&Planned) -> f32| part.iter().map(|b| f(b)).sum::<f32>() / part.len() as f32;
        let local = mean(&|b| b.local);
        let together = mean(&|b| score(bundle, &mut links.clone(), rec, &b.test));
        println!(
            "part {:<6} local only {local:.4}, adapted on the part's pooled frames {together:.4} ({:+.4})",
            name,
            together - local
        );
        pooled.push(links);
    }
    let newcomer_pooled = score(bundle, &mut pooled[3].clone(), rec, &new_test);
    println!(
        "newcomer: local only {newcomer_local:.4}, the high-drift part's pooled links {newcomer_pooled:.4}"
    );

    let key = fleet_key();
    let pk = key.verifying_key().to_bytes();
    // Per run: the boards' gains over local only, and the newcomer's.
    let mut runs: Vec<(Vec<f32>, f32)> = Vec::new();
    for grouped in [true, false] {
        let fleet = if grouped { "grouped" } else { "whole" };
        let cfg = broker.config(fleet);
        let group_of = |part: usize| grouped.then(|| parts[part].0.to_string());
        let mut roster: std::collections::BTreeMap<String, Option<String>> =
            planned.iter().map(|b| (b.name.clone(), group_of(b.part))).collect();
        roster.insert("newcomer".into(), group_of(3));
        let opts = agg_options(key.clone(), bundle, planned.len(), Some(PERIODS as u32));
        let agg = Aggregator::start(cfg.clone(), AggregateOptions { boards: Some(roster), ..opts }).unwrap();
        let join = |name: &str, part: usize, rows: usize| {
            let c = FleetConfig { group: group_of(part), ..cfg.clone() };
            SimBoard::join(&c, bundle, name, pk, rows).unwrap()
        };
        let mut boards: Vec<SimBoard> = planned.iter().map(|b| join(&b.name, b.part, b.val.len())).collect();
        for period in 0..PERIODS {
            for (b, pl) in boards.iter_mut().zip(&planned) {
                adapt(
                    &mut b.predictor,
                    &pl.fit[period * FRESH..(period + 1) * FRESH],
                    pl.seed + 1000 * period as u64,
                );
                b.offer(rec, &vec![((period + 1) * FRESH) as u32; bundle.n_models()], &pl.val);
            }
            let v = period as u64 + 1;
            for b in &mut boards {
                assert!(
                    b.client.wait_for(WAIT, |s| s.global_version == v),
                    "{fleet}: {} got no version {v}",
                    b.name
                );
                assert_eq!(b.take_global(), Some(v), "{fleet}: {}", b.name);
            }
        }
        let st = agg.stop().unwrap();
        assert_eq!(st.rounds.len(), PERIODS);
        assert_eq!(st.refused, 0, "{:?}", st.last_refusal);
        assert!(
            st.rounds.iter().all(|r| r.groups == if grouped { 4 } else { 0 }),
            "{fleet}: groups per round"
        );
        println!(
            "fleet {fleet:?} ({}): held-out agreement, local only → fleet",
            if grouped { "a group per part" } else { "no groups" }
        );
        let mut gains = Vec::new();
        for (b, pl) in boards.iter_mut().zip(&planned) {
            let fused = score(bundle, &mut b.predictor, rec, &pl.test);
            let shares =
                b.client.stats().last_fused.map(|f| f.choices.iter().map(|c| c.1).collect::<Vec<_>>());
            println!(
                "  {:<8} {:>4} held-out  {:.4} → {:.4} {:+.4}   local share per target {shares:?}",
                pl.name,
                pl.test.len(),
                pl.local,
                fused,
                fused - pl.local
            );
            gains.push(fused - pl.local);
        }
        for (p, (part, _)) in parts.iter().enumerate() {
            let g: Vec<f32> =
                planned.iter().zip(&gains).filter(|(b, _)| b.part == p).map(|(_, g)| *g).collect();
            let mean = g.iter().sum::<f32>() / g.len() as f32;
            let min = g.iter().copied().fold(f32::INFINITY, f32::min);
            println!("  part {part:<6} mean gain {mean:+.4}, least {min:+.4}");
        }
        let mut nb = join("newcomer", 3, new_val.len());
        assert!(
            nb.client.wait_for(WAIT, |s| s.global_version == PERIODS as u64),
            "{fleet}: the newcomer got no links"
        );
        assert_eq!(
            nb.take_global(),
            Some(PERIODS as u64),
            "with no samples of its own it takes the links it is sent"
        );
        let taken = score(bundle, &mut nb.predictor, rec, &new_test);
        adapt(&mut nb.predictor, &new_fit, 7);
        let newcomer = score(bundle, &mut nb.predictor, rec, &new_test);
        println!(
            "  newcomer (high drift, {} frames) {newcomer_local:.4} → {newcomer:.4} {:+.4} (the links it was sent, before its own frames: {taken:.4})",
            new_fit.len(),
            newcomer - newcomer_local
        );
        runs.push((gains, newcomer - newcomer_local));
    }
    let drifting = |gains: &[f32]| {
        let g: Vec<f32> = planned.iter().zip(gains).filter(|(b, _)| b.part > 0).map(|(_, g)| *g).collect();
        g.iter().sum::<f32>() / g.len() as f32
    };
    let (grouped, whole) = (&runs[0], &runs[1]);
    println!(
        "drifting boards' mean gain: {:+.4} in groups, {:+.4} averaged over the whole fleet",
        drifting(&grouped.0),
        drifting(&whole.0)
    );
    // Groups are what makes sharing pay for the drifting boards (the whole fleet's average mixes
    // drifts), and in a group no board is worse than alone by more than 0.3 points.
    assert!(drifting(&grouped.0) > 0.005, "drifting boards gained {:+.4} in groups", drifting(&grouped.0));
    assert!(drifting(&grouped.0) > drifting(&whole.0) + 0.005);
    for (b, g) in planned.iter().zip(&grouped.0) {
        assert!(*g >= -0.003, "{} lost {g:.4} in its group", b.name);
    }
    assert!(grouped.1 > 0.02, "the newcomer gained {:+.4} from its group", grouped.1);
}

/// Boards joined to `cfg`'s fleet, each by its name and in its group (if any), with room for 16
/// labelled rows, once each is connected.
fn join_connected<const N: usize>(
    cfg: &FleetConfig,
    bundle: &jetlink::bundle::Bundle,
    pk: [u8; 32],
    boards: [(&str, Option<&str>); N],
) -> [SimBoard; N] {
    boards.map(|(name, group)| {
        let c = FleetConfig { group: group.map(str::to_owned), ..cfg.clone() };
        let b = SimBoard::join(&c, bundle, name, pk, 16).unwrap();
        assert!(b.client.wait_for(WAIT, |s| s.connected), "{name} did not connect");
        b
    })
}

/// A round publishes a group's update only when one of its boards sent something new: north's
/// board uploads and round 1 publishes north's; south's board uploads and round 2 publishes
/// south's, not north's again (north's board would fuse the same links over what it adapted since).
#[test]
fn a_group_with_nothing_new_is_not_sent_again() {
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let (bundle, rec) = (&d.bundle, &*d.reference);
    let cfg = broker.config("quiet");
    let key = fleet_key();
    let pk = key.verifying_key().to_bytes();
    let roster =
        [("n1".to_string(), Some("north".to_string())), ("s1".to_string(), Some("south".to_string()))];
    let opts = AggregateOptions { boards: Some(roster.into()), ..agg_options(key, bundle, 1, Some(2)) };
    let agg = Aggregator::start(cfg.clone(), opts).unwrap();
    let [north, south] = join_connected(&cfg, bundle, pk, [("n1", Some("north")), ("s1", Some("south"))]);
    let (_, val, _) = split(rec, 0..2000, 0, 16, 0);
    let samples = vec![10; bundle.n_models()];
    north.offer(rec, &samples, &val);
    assert!(north.client.wait_for(WAIT, |s| s.global_version == 1), "{:?}", north.client.stats());
    south.offer(rec, &samples, &val);
    assert!(south.client.wait_for(WAIT, |s| s.global_version == 2), "{:?}", south.client.stats());
    let st = agg.stop().unwrap();
    assert_eq!(st.rounds.len(), 2);
    assert!(st.rounds.iter().all(|r| r.groups == 1), "one group a round: {:?}", st.rounds);
    // North's board got nothing more than its group's first version.
    std::thread::sleep(Duration::from_millis(300));
    let n = north.client.stats();
    assert_eq!((n.global_version, n.globals_accepted, n.globals_refused), (1, 1, 0), "{n:?}");
    // `jetlink fleet status` shows the fleet's retained update and each group's.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .args(["fleet", "status", "--broker", &format!("127.0.0.1:{}", broker.port), "--fleet", "quiet"])
        .args(["--wait-s", "1"])
        .env("RUST_BACKTRACE", "0")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    for want in [
        "global links: version 2, 2 boards",
        "group north: version 1, 1 boards",
        "group south: version 2, 1 boards",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

/// A board that stops sending is forgotten after `forget_after` rounds without it: its last update
/// counts in the round it came for and the next (`forget_after` = 1), then leaves the average (the
/// rounds' board counts go 1, 2, then 1).
#[test]
fn a_board_that_stops_sending_is_forgotten() {
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let (bundle, rec) = (&d.bundle, &*d.reference);
    let cfg = broker.config("forget");
    let key = fleet_key();
    let pk = key.verifying_key().to_bytes();
    let opts = AggregateOptions { forget_after: Some(1), ..agg_options(key, bundle, 1, Some(4)) };
    let agg = Aggregator::start(cfg.clone(), opts).unwrap();
    let [gone, stays] = join_connected(&cfg, bundle, pk, [("gone", None), ("stays", None)]);
    let (_, val, _) = split(rec, 0..2000, 0, 16, 0);
    let samples = vec![10; bundle.n_models()];
    // Round 1: `gone` alone; rounds 2 to 4: `stays` alone, one upload a round.
    gone.offer(rec, &samples, &val);
    assert!(gone.client.wait_for(WAIT, |s| s.global_version == 1), "{:?}", gone.client.stats());
    for v in 2..=4 {
        // More samples each round: a board uploads only what it learnt since its last upload.
        stays.offer(rec, &vec![10 * v as u32; bundle.n_models()], &val);
        assert!(stays.client.wait_for(WAIT, |s| s.global_version == v), "{:?}", stays.client.stats());
    }
    let st = agg.stop().unwrap();
    let boards: Vec<u32> = st.rounds.iter().map(|r| r.boards).collect();
    assert_eq!(boards, [1, 2, 1, 1], "{:?}", st.rounds);
    assert_eq!(st.forgotten, 1, "{st:?}");
}

/// Fusion's default side: where the board's labelled rows cannot tell the two apart (here the
/// global links equal the local ones), a board keeps its own links against the whole fleet's and
/// takes its group's when they have more samples behind them than its own; links clearly worse on
/// its rows do not stay the choice, whoever sent them.
#[test]
fn fusion_keeps_its_own_links_on_a_tie_except_against_its_groups() {
    let d = DemoSet::demo().unwrap();
    let (bundle, rec) = (&d.bundle, &*d.reference);
    let n = bundle.n_models();
    let (kinds, scorings) = (bundle.kinds(), bundle.scorings());
    let (_, val, _) = split(rec, d.stream.train_end as u32..d.stream.drift_start as u32, 0, 64, 0);
    assert_eq!(val.len(), 64);
    let rows = jetlink::fleet::sim::rows_of(rec, &val);
    let valid = vec![ModelSet::all(n); val.len()];
    let local = Predictor::new(bundle);
    let global = |p: &Predictor, samples: u32| GlobalLinks {
        proto: FLEET_PROTO,
        fleet: "lab/north".into(),
        model_hash: model_hash(bundle),
        version: 1,
        boards: 4,
        base_version: 0,
        targets: (0..n).map(|j| fuse::target_links(p, j, samples)).collect(),
        deltas: Vec::new(),
    };
    let shares = |g: &GlobalLinks, own: u32, trust: fuse::Trust| {
        let mut p = local.clone();
        let f = fuse::fuse(&mut p, g, &kinds, &scorings, &rows, &valid, &vec![own; n], trust).unwrap();
        f.choices.iter().map(|c| (c.1, c.2.unwrap(), c.3.unwrap())).collect::<Vec<_>>()
    };
    let beta = |v: Vec<(f32, f32, f32)>| v.iter().map(|c| c.0).collect::<Vec<f32>>();
    let same = global(&local, 400);
    assert_eq!(
        beta(shares(&same, 100, fuse::Trust::Fleet)),
        vec![1.0; n],
        "the fleet's links must prove themselves"
    );
    assert_eq!(
        beta(shares(&same, 100, fuse::Trust::Group)),
        vec![0.0; n],
        "a group backed by more samples wins a tie"
    );
    assert_eq!(
        beta(shares(&same, 400, fuse::Trust::Group)),
        vec![1.0; n],
        "not backed by more: the board's own"
    );
    // Links that know nothing (every weight 0): on every target where the board's own agree on at
    // least two more of its rows, the group's are not kept.
    let mut zero = same.clone();
    for t in &mut zero.targets {
        t.links.iter_mut().chain(t.ensemble.iter_mut()).for_each(|w| *w = 0.0);
    }
    let mut worse = 0;
    let all_zero = {
        let mut p = local.clone();
        fuse::put_targets(&mut p, &zero.targets).unwrap();
        p
    };
    let mut out = vec![0.0; local.stride()];
    for (j, (b, _, own)) in shares(&zero, 100, fuse::Trust::Group).into_iter().enumerate() {
        let z = fuse::target_agreement(&mut all_zero.clone(), &kinds, &scorings, j, &rows, &valid, &mut out)
            .unwrap();
        if own >= z + 2.0 / 64.0 {
            worse += 1;
            assert_ne!(b, 0.0, "target {j}: zero links kept ({z:.3} against its own {own:.3})");
        }
    }
    assert!(worse > 0, "no target where the zero links are clearly worse: the check checked nothing");
}

/// Boards a part of the stream has in [`boards_that_share_their_drift_gain_from_their_group`].
const PER_GROUP: usize = 4;
/// Periods of that test, the fresh labelled frames a board adapts on each period, and the epochs.
const PERIODS: usize = 6;
const FRESH: usize = 25;
const EPOCHS: usize = 10;

/// A watcher with a persistent session: it sees every summary a board publishes, across a broker
/// restart.
fn watch(cfg: &FleetConfig, topic: String) -> (Arc<Mutex<BTreeSet<u32>>>, Arc<AtomicBool>) {
    let mut o = mqtt_options(cfg, "watcher").unwrap();
    o.set_clean_session(false);
    let (client, mut conn) = Client::new(o, 64);
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let subscribed = Arc::new(AtomicBool::new(false));
    let (s, sub) = (seen.clone(), subscribed.clone());
    std::thread::spawn(move || {
        loop {
            match conn.recv_timeout(Duration::from_millis(50)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                    client.subscribe(topic.clone(), QoS::AtLeastOnce).unwrap();
                }
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => sub.store(true, Ordering::SeqCst),
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    let m: SummaryMsg = postcard::from_bytes(&p.payload).unwrap();
                    s.lock().unwrap().insert(m.summary.seq);
                }
                Ok(Err(_)) => std::thread::sleep(Duration::from_millis(50)),
                Err(rumqttc::RecvTimeoutError::Disconnected) => break,
                _ => {}
            }
        }
    });
    (seen, subscribed)
}

fn wait_until(f: impl Fn() -> bool) -> bool {
    let t = std::time::Instant::now();
    while t.elapsed() < WAIT {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

#[test]
fn a_board_cut_from_the_broker_keeps_looping_without_allocating_and_resends() {
    let Some(mut broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let mut cfg = broker.config("test");
    cfg.min_backoff = Duration::from_millis(50);
    cfg.max_backoff = Duration::from_millis(400);
    let name = "cut-board";
    let (seen, subscribed) = watch(&cfg, cfg.topic_summary(name));
    assert!(wait_until(|| subscribed.load(Ordering::SeqCst)), "the watcher did not subscribe");

    let predictor = Predictor::new(&d.bundle);
    let tap = Arc::new(FleetTap::new(&predictor, jetlink::control::AdaptSettings::default().ring));
    let opts = ClientOptions {
        board: name.into(),
        fleet_key: fleet_key().verifying_key().to_bytes(),
        model_hash: model_hash(&d.bundle),
        kinds: d.bundle.kinds(),
        scorings: d.bundle.scorings(),
        poll: Duration::from_millis(20),
        tasks: jetlink::fleet::tasks::TaskCosts::of_bundle(&d.bundle),
        state: None,
    };
    let client = FleetClient::start(cfg.clone(), opts, tap.clone(), predictor).unwrap();
    let writer =
        TelemetryWriter::new(MemWriter { data: Vec::with_capacity(16 << 20), ..MemWriter::default() });
    let tpp = board::current().ticks_per_period as usize;
    let mut ctl = LoopBuilder::new(board::current(), d.manifest.clone(), d.bundle.clone(), d.stream.clone())
        .reference(Some(d.reference.clone()))
        .engines(jetlink::sim::replay(d.reference.clone()))
        .fleet(tap.clone())
        .build_replay(d.stream.train_end..d.stream.len(), writer)
        .unwrap();
    // Connected: two periods (warm-up), their summaries reach the watcher.
    for _ in 0..2 * tpp + 1 {
        assert!(ctl.tick());
    }
    assert!(wait_until(|| seen.lock().unwrap().len() == 2), "summaries 0 and 1 not seen");
    assert!(client.wait_for(WAIT, |s| s.summaries_acked == 2));

    // The broker goes away.
    broker.stop();
    assert!(client.wait_for(WAIT, |s| !s.connected), "the client did not notice the broker was gone");
    let before = alloc_count::loop_allocations();
    for _ in 0..5 * tpp {
        assert!(ctl.tick());
    }
    let allocs = alloc_count::loop_allocations() - before;
    assert_eq!(allocs, 0, "{allocs} allocations in {} ticks while the broker was down", 5 * tpp);
    assert!(client.wait_for(WAIT, |s| s.stored == 5), "five summaries should wait: {:?}", client.stats());
    assert_eq!(seen.lock().unwrap().len(), 2);

    // It comes back: every stored summary is resent and acknowledged by the broker (QoS 1), none
    // dropped. The broker's acknowledgements are the check, not the watcher: a restarted broker
    // without persistence forgets the watcher's session, and whether the resends reach the watcher
    // depends on which of the two reconnects first (a race under load).
    broker.restart().unwrap();
    assert!(
        client.wait_for(WAIT, |s| s.summaries_acked == 7 && s.stored == 0),
        "after the broker came back: {:?}",
        client.stats()
    );
    assert_eq!(client.stats().dropped, 0);
    assert!(seen.lock().unwrap().iter().all(|&q| q < 7));

    // A signed global update reaches the loop at its next period boundary, without allocating.
    let p = Predictor::new(&d.bundle);
    let g = GlobalLinks {
        proto: FLEET_PROTO,
        fleet: "test".into(),
        model_hash: model_hash(&d.bundle),
        version: 1,
        boards: 2,
        base_version: 0,
        targets: (0..d.bundle.n_models()).map(|j| fuse::target_links(&p, j, 50)).collect(),
        deltas: Vec::new(),
    };
    let (publisher, mut conn) = Client::new(mqtt_options(&cfg, "aggregator").unwrap(), 16);
    std::thread::spawn(move || while conn.recv().is_ok() {});
    publisher
        .publish(cfg.topic_global_links(), QoS::AtLeastOnce, true, sign_global(&g, &fleet_key()))
        .unwrap();
    assert!(client.wait_for(WAIT, |s| s.globals_accepted == 1), "{:?}", client.stats());
    let before = alloc_count::loop_allocations();
    for _ in 0..tpp {
        assert!(ctl.tick());
    }
    assert_eq!(alloc_count::loop_allocations() - before, 0, "applying fused links allocated");
    assert_eq!(tap.applied_version(), 1);
    let st = client.stop();
    assert_eq!(st.dropped, 0);
    assert!(st.disconnects >= 1 && st.connects >= 2, "{st:?}");
}

#[test]
fn a_tampered_or_unsigned_global_update_is_refused() {
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let cfg = broker.config("test");
    let key = fleet_key();
    let mut b = SimBoard::join(&cfg, &d.bundle, "careful", key.verifying_key().to_bytes(), 8).unwrap();
    assert!(b.client.wait_for(WAIT, |s| s.connected));
    let p = Predictor::new(&d.bundle);
    let g = GlobalLinks {
        proto: FLEET_PROTO,
        fleet: "test".into(),
        model_hash: model_hash(&d.bundle),
        version: 1,
        boards: 1,
        base_version: 0,
        targets: vec![fuse::target_links(&p, 0, 10)],
        deltas: Vec::new(),
    };
    let (publisher, mut conn) = Client::new(mqtt_options(&cfg, "intruder").unwrap(), 16);
    std::thread::spawn(move || while conn.recv().is_ok() {});
    let send =
        |bytes: Vec<u8>| publisher.publish(cfg.topic_global_links(), QoS::AtLeastOnce, true, bytes).unwrap();
    let signed = sign_global(&g, &key);
    let mut tampered = signed.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x20;
    let other = sign_global(&g, &SigningKey::from_bytes(&[9; 32]));
    let unsigned = postcard::to_stdvec(&g).unwrap();
    for (i, bytes) in [unsigned, tampered, other].into_iter().enumerate() {
        send(bytes);
        assert!(b.client.wait_for(WAIT, |s| s.globals_refused as usize == i + 1), "update {i} not refused");
    }
    let st = b.client.stats();
    assert_eq!((st.globals_accepted, st.global_version), (0, 0));
    assert_eq!(b.take_global(), None, "nothing refused reaches the loop");
    println!("last refusal: {}", st.last_refusal.unwrap());
    // The same update, signed by the fleet key, is accepted.
    send(signed);
    assert!(b.client.wait_for(WAIT, |s| s.globals_accepted == 1 && s.global_version == 1));
    assert_eq!(b.take_global(), Some(1));
}

/// The tap refuses a change fused against links the loop no longer has: one whose base version the
/// loop has moved past, or one fused for a loop that a bundle reload replaced; a change still
/// waiting when the loop is replaced is dropped. The tap alone, no broker.
#[test]
fn the_tap_refuses_a_change_for_links_the_loop_no_longer_has() {
    let d = DemoSet::demo().unwrap();
    let mut p = Predictor::new(&d.bundle);
    let tap = FleetTap::new(&p, 4);
    let (dl, de) = (vec![0.5f32; p.links().params.len()], vec![0.0f32; p.ensembles().params.len()]);
    let before = p.links().params.clone();
    assert!(tap.put_change(&dl, &de, 1, (0, 0)));
    assert_eq!(tap.take_global(&mut p), Some(1));
    assert!(p.links().params.iter().zip(&before).all(|(a, b)| (a - b - 0.5).abs() < 1e-5));
    // Fused against a snapshot from before version 1 was applied: refused, nothing waits.
    assert!(!tap.put_change(&dl, &de, 2, (0, 0)));
    assert_eq!(tap.take_global(&mut p), None);
    // Against the loop as it is now: handed over.
    assert!(tap.put_change(&dl, &de, 2, tap.base()));
    // A reload replaces the loop before it takes it: dropped; one fused for the old loop refused.
    let old = tap.base();
    tap.loop_replaced();
    assert_eq!(tap.take_global(&mut p), None);
    assert!(!tap.put_change(&dl, &de, 3, old));
    assert!(tap.put_change(&dl, &de, 3, tap.base()));
    assert_eq!(tap.take_global(&mut p), Some(3));
}

/// A global update is fused with the snapshot of the links the loop offered, and the loop adds what
/// fusion changed: whatever it adapted since that snapshot is kept, not overwritten. An update that
/// arrives after the loop applied one but before it offered a newer snapshot waits for that snapshot
/// (fused against the older one, it would count the first update twice).
#[test]
fn a_global_update_keeps_the_adaptation_made_since_its_snapshot() {
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let cfg = broker.config("test");
    let key = fleet_key();
    let mut b = SimBoard::join(&cfg, &d.bundle, "adapting", key.verifying_key().to_bytes(), 8).unwrap();
    assert!(b.client.wait_for(WAIT, |s| s.connected));
    let snapshot = b.predictor.clone();
    let r0 = fuse::link_range(snapshot.links(), 0);
    let r1 = fuse::link_range(snapshot.links(), 1);
    // Global links for target 0 only: the snapshot's weights moved by `by`. With no labelled rows
    // and no samples of its own for target 0, the board takes them whole.
    let global = |version: u64, by: f32| {
        let mut t = fuse::target_links(&snapshot, 0, 10);
        t.links.iter_mut().for_each(|w| *w += by);
        GlobalLinks {
            proto: FLEET_PROTO,
            fleet: "test".into(),
            model_hash: model_hash(&d.bundle),
            version,
            boards: 1,
            base_version: 0,
            targets: vec![t],
            deltas: Vec::new(),
        }
    };
    let (publisher, mut conn) = Client::new(mqtt_options(&cfg, "publisher").unwrap(), 16);
    std::thread::spawn(move || while conn.recv().is_ok() {});
    let send = |g: &GlobalLinks| {
        publisher.publish(cfg.topic_global_links(), QoS::AtLeastOnce, true, sign_global(g, &key)).unwrap()
    };
    send(&global(1, 0.25));
    assert!(b.client.wait_for(WAIT, |s| s.globals_accepted == 1), "{:?}", b.client.stats());
    // The loop adapts targets 0 and 1 after its snapshot, before the update reaches it.
    let shift = |p: &mut Predictor, j: usize, by: f32| {
        let mut t = fuse::target_links(p, j, 1);
        t.links.iter_mut().for_each(|w| *w += by);
        fuse::put_targets(p, &[t]).unwrap();
    };
    shift(&mut b.predictor, 0, 0.5);
    shift(&mut b.predictor, 1, 1.0);
    assert_eq!(b.take_global(), Some(1));
    let close = |a: &[f32], b: &[f32], by: f32| a.iter().zip(b).all(|(x, y)| (x - y - by).abs() < 1e-5);
    assert!(
        close(&b.predictor.links().params[r0.clone()], &snapshot.links().params[r0.clone()], 0.75),
        "target 0 is not the global links plus the adaptation since the snapshot"
    );
    assert!(
        close(&b.predictor.links().params[r1.clone()], &snapshot.links().params[r1.clone()], 1.0),
        "the adaptation of a target the update does not hold was lost"
    );
    // Version 2 arrives before the loop offered a snapshot with version 1 applied: it waits.
    send(&global(2, 2.0));
    assert!(b.client.wait_for(WAIT, |s| s.globals_deferred >= 1), "{:?}", b.client.stats());
    assert_eq!(b.take_global(), None, "an update fused against a stale snapshot reached the loop");
    assert_eq!(b.client.stats().globals_accepted, 1);
    // A delta on version 2 arrives while it waits: it builds on the waiting update (no gap, no
    // whole update asked for) and waits in its place.
    let mut v3 = global(3, 3.0);
    v3.base_version = 2;
    publisher.publish(cfg.topic_global_delta(), QoS::AtLeastOnce, false, sign_global(&v3, &key)).unwrap();
    assert!(b.client.wait_for(WAIT, |s| s.globals_deferred >= 2), "{:?}", b.client.stats());
    assert_eq!(b.client.stats().delta_gaps, 0);
    // The loop offers its links (version 1 applied, adaptation included): version 3 is fused
    // against them and replaces target 0's links with the fleet's, once.
    b.offer(&d.reference, &vec![0; d.bundle.n_models()], &[]);
    assert!(b.client.wait_for(WAIT, |s| s.globals_accepted == 2), "{:?}", b.client.stats());
    assert_eq!(b.take_global(), Some(3));
    assert!(
        close(&b.predictor.links().params[r0.clone()], &snapshot.links().params[r0], 3.0),
        "version 3 counted version 1's change twice"
    );
    assert!(close(&b.predictor.links().params[r1.clone()], &snapshot.links().params[r1], 1.0));
}

/// Poisoned link updates (NaN or huge weights, absurd sample counts, another shape), published under
/// a board's id, are refused and counted by the aggregator and never signed, as is an update from a
/// board outside the fleet's list; a healthy update from the fleet goes through in the same round.
#[test]
fn poisoned_link_updates_are_refused_before_averaging() {
    use jetlink::fleet::msg::{LinkUpdate, verify_global};
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let bundle = &d.bundle;
    let cfg = broker.config("poison");
    let key = fleet_key();
    let agg = Aggregator::start(
        cfg.clone(),
        AggregateOptions {
            boards: Some(
                ["nan", "inf", "huge", "samples", "shape", "healthy"].map(|b| (b.to_string(), None)).into(),
            ),
            ..agg_options(key.clone(), bundle, 1, Some(1))
        },
    )
    .unwrap();
    let (client, mut conn) = Client::new(mqtt_options(&cfg, "intruder").unwrap(), 64);
    let globals = Arc::new(Mutex::new(Vec::new()));
    {
        let globals = globals.clone();
        let topic = cfg.topic_global_links();
        std::thread::spawn(move || {
            while let Ok(ev) = conn.recv() {
                if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::Publish(p))) = ev {
                    if p.topic == topic {
                        globals.lock().unwrap().push(p.payload.to_vec());
                    }
                }
            }
        });
    }
    client.subscribe(cfg.topic_global_links(), QoS::AtLeastOnce).unwrap();
    let p = Predictor::new(bundle);
    let update = |board: &str, edit: &dyn Fn(&mut jetlink::fleet::msg::TargetLinks)| {
        let mut t = fuse::target_links(&p, 1, 50);
        edit(&mut t);
        let u = LinkUpdate {
            proto: FLEET_PROTO,
            board: board.into(),
            group: None,
            model_hash: model_hash(bundle),
            seq: 1,
            base_version: 0,
            targets: vec![t],
        };
        client
            .publish(cfg.topic_links(board), QoS::AtLeastOnce, false, postcard::to_stdvec(&u).unwrap())
            .unwrap();
    };
    std::thread::sleep(Duration::from_millis(300));
    let poisons: [(&str, &dyn Fn(&mut jetlink::fleet::msg::TargetLinks)); 5] = [
        ("nan", &|t| t.links.iter_mut().for_each(|v| *v = f32::NAN)),
        ("inf", &|t| t.ensemble[0] = f32::INFINITY),
        ("huge", &|t| t.links[3] = 1e30),
        ("samples", &|t| t.samples = u32::MAX),
        ("shape", &|t| t.links.push(0.0)),
    ];
    for (k, (board, edit)) in poisons.iter().enumerate() {
        update(board, *edit);
        assert!(
            wait_until(|| agg.stats().refused as usize == k + 1),
            "{board}: not refused: {:?}",
            agg.stats().refused
        );
    }
    assert!(agg.stats().rounds.is_empty(), "a poisoned update started a round");
    // A healthy update from a board that is not in the fleet's list: refused too.
    update("stranger", &|_| {});
    assert!(wait_until(|| agg.stats().refused == 6), "a board outside the list was not refused");
    assert!(agg.stats().last_refusal.unwrap().contains("stranger: not in the fleet's list of boards"));
    update("healthy", &|_| {});
    assert!(wait_until(|| agg.stats().rounds.len() == 1));
    let st = agg.stop().unwrap();
    assert_eq!((st.updates, st.refused), (1, 6), "{:?}", st.last_refusal);
    assert!(wait_until(|| !globals.lock().unwrap().is_empty()));
    let g = verify_global(
        &globals.lock().unwrap()[0],
        &key.verifying_key().to_bytes(),
        "poison",
        model_hash(bundle),
        0,
    )
    .unwrap();
    assert_eq!(g.boards, 1);
    assert!(
        g.targets.iter().all(|t| t.links.iter().chain(&t.ensemble).all(|v| v.is_finite() && v.abs() < 1e4))
    );
}

/// A board keeps the highest global version it accepted across a restart: the same (retained)
/// update and an older one are refused after it restarts, and an update signed with the same key
/// for another fleet is refused too; each refusal is counted.
#[test]
fn replayed_and_foreign_fleet_updates_are_refused_after_a_restart() {
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let cfg = broker.config("lab");
    let key = fleet_key();
    let pk = key.verifying_key().to_bytes();
    let dir = std::env::temp_dir().join(format!("jetlink-fleet-state-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let state = jetlink::signing::RollbackState::new(dir.join("state")).for_fleet("lab");
    let p = Predictor::new(&d.bundle);
    let global = |fleet: &str, version: u64| {
        sign_global(
            &GlobalLinks {
                proto: FLEET_PROTO,
                fleet: fleet.into(),
                model_hash: model_hash(&d.bundle),
                version,
                boards: 1,
                base_version: 0,
                targets: vec![fuse::target_links(&p, 0, 10)],
                deltas: Vec::new(),
            },
            &key,
        )
    };
    let (publisher, mut conn) = Client::new(mqtt_options(&cfg, "replayer").unwrap(), 16);
    std::thread::spawn(move || while conn.recv().is_ok() {});
    let send =
        |bytes: Vec<u8>| publisher.publish(cfg.topic_global_links(), QoS::AtLeastOnce, true, bytes).unwrap();
    // A board that holds a current version listens to deltas only: a replay reaches it there.
    let send_delta =
        |bytes: Vec<u8>| publisher.publish(cfg.topic_global_delta(), QoS::AtLeastOnce, false, bytes).unwrap();

    let b = SimBoard::join_with_state(&cfg, &d.bundle, "keeper", pk, 8, Some(state.clone())).unwrap();
    assert!(b.client.wait_for(WAIT, |s| s.connected));
    send(global("lab", 5));
    assert!(b.client.wait_for(WAIT, |s| s.globals_accepted == 1 && s.global_version == 5));
    b.client.stop();
    assert_eq!(state.highest().unwrap(), 5, "the accepted version was not kept");

    // Restarted: the retained version 5 (the highest accepted) is applied again, since the board
    // holds no global links yet; version 4 is a rollback; version 6 of fleet lab2 (same key) is
    // another fleet's.
    let b = SimBoard::join_with_state(&cfg, &d.bundle, "keeper", pk, 8, Some(state.clone())).unwrap();
    assert!(b.client.wait_for(WAIT, |s| s.connected));
    assert!(
        b.client.wait_for(WAIT, |s| s.globals_accepted == 1 && s.global_version == 5),
        "{:?}",
        b.client.stats()
    );
    send_delta(global("lab", 4));
    assert!(b.client.wait_for(WAIT, |s| s.globals_refused == 1), "{:?}", b.client.stats());
    send_delta(global("lab2", 6));
    assert!(b.client.wait_for(WAIT, |s| s.globals_refused == 2), "{:?}", b.client.stats());
    let st = b.client.stats();
    assert_eq!((st.globals_accepted, st.global_version), (1, 5), "{st:?}");
    assert!(st.last_refusal.as_deref().unwrap_or("").contains("fleet \"lab2\""), "{:?}", st.last_refusal);
    send_delta(global("lab", 7));
    assert!(b.client.wait_for(WAIT, |s| s.globals_accepted == 2 && s.global_version == 7));
    b.client.stop();
    assert_eq!(state.highest().unwrap(), 7);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Groups from the command line: the aggregator's `--boards` list puts `cam-a` in group north and
/// `cam-b` in group south; `cam-b` running with `--group north` has its uploads refused, named and
/// counted; `cam-a` with `--group north` gets them averaged and the round publishes north's own
/// update beside the fleet's.
#[test]
fn the_cli_runs_a_group_and_refuses_a_board_in_another() {
    use std::process::{Command, Stdio};
    let Some(broker) = broker() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("jetlink-fleet-groups-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let list = dir.join("boards");
    std::fs::write(&list, "# id group\ncam-a north\ncam-b south\n").unwrap();
    let at = format!("127.0.0.1:{}", broker.port);
    let mut agg = Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root)
        .args([
            "fleet",
            "aggregate",
            "--broker",
            &at,
            "--fleet",
            "grp",
            "--key",
            "demo/keys/demo-insecure.key",
        ])
        .arg("--boards")
        .arg(&list)
        .args(["--min-boards", "1", "--rounds", "1"])
        .env("RUST_BACKTRACE", "0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pk = std::fs::read_to_string(root.join("demo/keys/demo-insecure.pub")).unwrap();
    let pk = pk.lines().find(|l| !l.starts_with('#')).unwrap().trim().to_string();
    // The aggregator's lines, read on a thread: the test waits for them with a deadline and stops
    // the aggregator if they do not come, rather than hang.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let pipe = agg.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufRead::lines(std::io::BufReader::new(pipe)).map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut stdout = String::new();
    let wait_for = |agg: &mut std::process::Child, stdout: &mut String, what: &str| loop {
        match rx.recv_timeout(WAIT) {
            Ok(l) => {
                stdout.push_str(&l);
                stdout.push('\n');
                if l.contains(what) {
                    return;
                }
            }
            Err(_) => {
                let _ = agg.kill();
                panic!("the aggregator did not print {what:?} within {WAIT:?}: {stdout}");
            }
        }
    };
    // Uploads published once it is subscribed reach it.
    wait_for(&mut agg, &mut stdout, "connected and subscribed; waiting for link updates");
    let run = |board: &str, group: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_jetlink"))
            .current_dir(root)
            .args(["run", "--engines", "replay", "-q", "--state-file"])
            .arg(dir.join(format!("{board}.state")))
            .arg("--serial")
            .arg(format!("file:{}", dir.join(format!("{board}.bin")).display()))
            .args([
                "--broker",
                &at,
                "--fleet",
                "grp",
                "--board-id",
                board,
                "--group",
                group,
                "--fleet-key",
                &pk,
            ])
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let out_s = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.status.code(), Some(0), "{out_s}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(out_s.contains(&format!("in group \"{group}\"")), "{out_s}");
        out_s
    };
    for (board, group) in [("cam-b", "north"), ("cam-a", "north")] {
        let out = run(board, group);
        assert!(!out.contains(" 0 link updates"), "{board} uploaded nothing: {out}");
    }
    // Its one round, then its counts.
    wait_for(&mut agg, &mut stdout, " refused by the checks");
    let out = agg.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("1 boards") && stdout.contains("and 1 group update(s) of"), "{stdout}");
    assert!(
        stderr.contains("link update from cam-b refused: it uploads as group \"north\", the fleet's list of boards puts it in group \"south\""),
        "{stderr}"
    );
    let refused: u32 = stdout
        .lines()
        .last()
        .and_then(|l| l.split(" refused by the checks").next()?.rsplit(", ").next()?.parse().ok())
        .unwrap_or(0);
    assert!(refused >= 1, "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `jetlink run` joining a fleet from the command line: a broker that cannot be reached ends the
/// run at once with an error naming it (unless `--fleet-optional`), TLS material that is not a
/// certificate is refused when named, the aggregator refuses an unreachable broker too, and with
/// the broker up the run's summaries are acknowledged.
#[test]
fn the_cli_reports_an_unreachable_broker_and_bad_tls_material() {
    use std::process::Command;
    let Some(broker) = broker() else { return };
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = std::env::temp_dir().join(format!("jetlink-fleet-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let pk = jetlink::bundle::hex(&fleet_key().verifying_key().to_bytes());
    let not_pem = dir.join("ca.pem");
    std::fs::write(&not_pem, "not a certificate\n").unwrap();
    let run = |name: &str, port: u16, extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_jetlink"))
            .current_dir(root)
            .args(["run", "--engines", "replay", "--frames", "600", "-q", "--state-file"])
            .arg(dir.join(format!("{name}.state")))
            .arg("--serial")
            .arg(format!("file:{}", dir.join(format!("{name}.bin")).display()))
            .args(["--broker", &format!("127.0.0.1:{port}"), "--fleet", "cli", "--board-id", name])
            .args(["--fleet-key", &pk, "--connect-timeout-s", "1"])
            .args(extra)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _, err) = run("lost", closed, &[]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains(&format!("broker 127.0.0.1:{closed} not reached within")), "{err}");
    let (code, out, err) = run("alone", closed, &["--fleet-optional"]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(err.contains("warning: fleet: broker"), "{err}");
    let (code, _, err) = run("tls", broker.port, &["--ca", not_pem.to_str().unwrap()]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("--ca") && err.contains("no PEM certificate"), "{err}");
    let (code, out, err) = run("joined", broker.port, &[]);
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("fleet: ") && out.contains(" summaries acknowledged"), "{out}");

    // A fleet command that must fail with status 1: its standard error.
    let fails = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_jetlink"))
            .current_dir(root)
            .args(args)
            .env("RUST_BACKTRACE", "0")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(1), "{err}");
        err
    };
    let closed_at = format!("127.0.0.1:{closed}");
    let err = fails(&[
        "fleet",
        "aggregate",
        "--broker",
        &closed_at,
        "--fleet",
        "cli",
        "--key",
        "demo/keys/demo-insecure.key",
        "--connect-timeout-s",
        "1",
    ]);
    assert!(err.contains("fleet aggregate: broker") && err.contains("not reached"), "{err}");
    // The password from the environment: empty, or beside --password-file, refused by name.
    let pw = dir.join("pw");
    std::fs::write(&pw, "secret\n").unwrap();
    for (value, file, want) in [
        ("", false, "JETLINK_MQTT_PASSWORD is set but empty"),
        ("secret", true, "both --password-file and JETLINK_MQTT_PASSWORD give a password"),
    ] {
        let mut c = Command::new(env!("CARGO_BIN_EXE_jetlink"));
        c.current_dir(root).args([
            "fleet",
            "status",
            "--broker",
            &closed_at,
            "--fleet",
            "cli",
            "--username",
            "u",
        ]);
        if file {
            c.arg("--password-file").arg(&pw);
        }
        let out = c.env("JETLINK_MQTT_PASSWORD", value).env("RUST_BACKTRACE", "0").output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains(want), "{err}");
    }

    // Stopped by SIGTERM while it waits for a broker that never answers: an error saying so (it
    // used to die of the signal, status 143, without a word). The banner comes after the signal
    // handlers are installed.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_at = format!("127.0.0.1:{}", silent.local_addr().unwrap().port());
    let mut child = Command::new(env!("CARGO_BIN_EXE_jetlink"))
        .current_dir(root)
        .args(["fleet", "aggregate", "--broker", &silent_at, "--fleet", "cli"])
        .args(["--key", "demo/keys/demo-insecure.key", "--connect-timeout-s", "60"])
        .env("RUST_BACKTRACE", "0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut banner = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut banner)
        .unwrap();
    assert!(banner.contains("aggregating models"), "{banner}");
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(child.id() as i32), nix::sys::signal::Signal::SIGTERM)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("stopped by a signal (SIGTERM) while waiting for broker {silent_at}")),
        "{err}"
    );
    drop(silent);

    // `fleet status`: a refused port names the broker and the cause every time (the cause used to
    // be lost to a failed subscribe about half the time), and a listener that never answers is an
    // error after --connect-timeout-s, not an empty fleet.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    for (port, want) in [
        (closed, "Connection refused"),
        (closed, "Connection refused"),
        (silent_port, "no answer within 1 s"),
    ] {
        let at = format!("127.0.0.1:{port}");
        let err = fails(&[
            "fleet",
            "status",
            "--broker",
            &at,
            "--fleet",
            "cli",
            "--connect-timeout-s",
            "1",
            "--wait-s",
            "30",
        ]);
        assert!(err.contains(&format!("broker 127.0.0.1:{port}: ")) && err.contains(want), "{err}");
    }
    drop(silent);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Run `openssl` with `args` in `dir`; panics with its stderr on failure.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").current_dir(dir).args(args).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// A CA, a server certificate for 127.0.0.1, client certificates (one expired), signed by `openssl`.
fn pki(dir: &std::path::Path) {
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
    for (name, cn) in [("ca", "jetlink test CA"), ("other-ca", "another CA")] {
        let mut a = vec!["req", "-x509", "-days", "2", "-subj"];
        let subj = format!("/CN={cn}");
        a.push(&subj);
        a.extend(ec);
        let (k, c) = (format!("{name}.key"), format!("{name}.crt"));
        a.extend(["-keyout", &k, "-out", &c]);
        openssl(dir, &a);
    }
    std::fs::write(dir.join("index.txt"), "").unwrap();
    std::fs::write(dir.join("serial"), "1000\n").unwrap();
    std::fs::write(
        dir.join("ca.cnf"),
        format!(
            "[ca]\ndefault_ca = d\n[d]\ndir = {}\ndatabase = $dir/index.txt\nnew_certs_dir = $dir\ncertificate = $dir/ca.crt\nprivate_key = $dir/ca.key\nserial = $dir/serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\nunique_subject = no\n[any]\ncommonName = supplied\n",
            dir.display()
        ),
    )
    .unwrap();
    // Every certificate with an extension, so that it is X.509 v3 (rustls takes no v1 certificate).
    let client = Some("extendedKeyUsage=clientAuth");
    for (name, ext, dates) in [
        ("server", Some("subjectAltName=IP:127.0.0.1,DNS:localhost"), None),
        ("cam-1", client, None),
        ("aggregator", client, None),
        ("expired", client, Some(("20200101000000Z", "20200102000000Z"))),
    ] {
        let subj = format!("/CN={}", if name == "expired" { "cam-1" } else { name });
        let (k, r, c) = (format!("{name}.key"), format!("{name}.csr"), format!("{name}.crt"));
        let mut a = vec!["req", "-new", "-subj", &subj];
        a.extend(ec);
        a.extend(["-keyout", &k, "-out", &r]);
        if let Some(s) = ext {
            a.extend(["-addext", s]);
        }
        openssl(dir, &a);
        let mut a = vec!["ca", "-batch", "-notext", "-config", "ca.cnf", "-in", &r, "-out", &c];
        match dates {
            Some((from, to)) => a.extend(["-startdate", from, "-enddate", to]),
            None => a.extend(["-days", "2"]),
        }
        openssl(dir, &a);
    }
}

/// TLS and authentication, run against Mosquitto: a board connects with a client certificate and
/// the aggregator with a password, both over TLS, and a round goes through; a wrong CA, a wrong
/// password and an expired client certificate are refused with an error naming the cause; a board
/// publishing on another board's topic is refused by the broker's ACL (its update never reaches the
/// aggregator, while its own, sent after it, does).
#[test]
fn tls_password_and_client_certificates_are_checked() {
    use jetlink::fleet::msg::LinkUpdate;
    let Some(plain) = broker() else { return };
    drop(plain);
    if std::process::Command::new("openssl").arg("version").output().is_err() {
        let required = std::env::var("JETLINK_REQUIRE_MOSQUITTO").is_ok_and(|v| v == "1");
        assert!(!required, "JETLINK_REQUIRE_MOSQUITTO=1 but openssl is not installed");
        eprintln!("skipped: openssl is not installed");
        return;
    }
    let pki_dir = std::env::temp_dir().join(format!("jetlink-pki-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&pki_dir);
    std::fs::create_dir_all(&pki_dir).unwrap();
    pki(&pki_dir);
    let pw = std::process::Command::new("mosquitto_passwd")
        .args(["-b", "-c"])
        .arg(pki_dir.join("passwd"))
        .args(["aggregator", "s3cret"])
        .output()
        .expect("mosquitto_passwd");
    assert!(pw.status.success(), "{}", String::from_utf8_lossy(&pw.stderr));
    // Mosquitto started as root drops to its own user: it must be able to read these test files.
    let readable = |dir: &std::path::Path| {
        use std::os::unix::fs::PermissionsExt;
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
    };
    std::fs::write(
        pki_dir.join("acl"),
        "user aggregator\ntopic readwrite jetlink/#\npattern write jetlink/lab/%u/#\npattern read jetlink/lab/global/#\npattern read jetlink/lab/%u/assigned\n",
    )
    .unwrap();
    readable(&pki_dir);
    let pass_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let p = pki_dir.clone();
    let tls = Mosquitto::start_with(move |port, _| {
        let files = format!(
            "cafile {0}/ca.crt\ncertfile {0}/server.crt\nkeyfile {0}/server.key\nacl_file {0}/acl\nallow_anonymous false\n",
            p.display()
        );
        format!(
            "per_listener_settings true\npersistence false\nmax_inflight_messages 0\n\
             listener {port} 127.0.0.1\n{files}require_certificate true\nuse_identity_as_username true\n\
             listener {pass_port} 127.0.0.1\n{files}password_file {}/passwd\n",
            p.display()
        )
    })
    .expect("a TLS broker");
    let file = |n: &str| Some(pki_dir.join(n));
    let cert_cfg = |cert: &str, ca: &str| {
        let mut c = tls.config("lab");
        (c.ca, c.client_cert, c.client_key) =
            (file(ca), file(&format!("{cert}.crt")), file(&format!("{cert}.key")));
        c
    };
    let pass_cfg = |password: &str| {
        let mut c = FleetConfig::new("127.0.0.1", pass_port, "lab");
        (c.ca, c.username, c.password) = (file("ca.crt"), Some("aggregator".into()), Some(password.into()));
        c
    };
    // Connect once; Ok on ConnAck, else the first error, as the client reports it.
    let connect = |cfg: &FleetConfig, id: &str| -> Result<(Client, rumqttc::Connection), String> {
        let (client, mut conn) = Client::new(mqtt_options(cfg, id).map_err(|e| format!("{e:#}"))?, 16);
        loop {
            match conn.recv_timeout(Duration::from_secs(20)) {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, conn)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(e.to_string()),
                Err(e) => return Err(format!("{e:?}")),
            }
        }
    };
    // Refusals, each with its cause.
    let ca = connect(&cert_cfg("cam-1", "other-ca.crt"), "cam-1").err().expect("a wrong CA is refused");
    assert!(ca.contains("invalid peer certificate") && ca.contains("UnknownIssuer"), "wrong CA: {ca}");
    let pw = connect(&pass_cfg("wrong"), "agg").err().expect("a wrong password is refused");
    assert!(pw.contains("BadUserNamePassword") || pw.contains("NotAuthorized"), "wrong password: {pw}");
    let old =
        connect(&cert_cfg("expired", "ca.crt"), "cam-1").err().expect("an expired certificate is refused");
    assert!(old.contains("CertificateExpired"), "expired certificate: {old}");
    println!("refusals:\n  wrong CA: {ca}\n  wrong password: {pw}\n  expired certificate: {old}");

    // The aggregator with a password and a board with its certificate, both over TLS.
    let d = DemoSet::demo().unwrap();
    let key = fleet_key();
    let agg = Aggregator::start(pass_cfg("s3cret"), agg_options(key.clone(), &d.bundle, 1, Some(1))).unwrap();
    assert!(
        wait_until(|| agg.stats().connected),
        "the aggregator did not connect: {:?}",
        agg.stats().connection_error
    );
    // The fleet client itself over TLS with the board's certificate (the identity is the
    // certificate's CN; the client id is the board's).
    let b =
        SimBoard::join(&cert_cfg("cam-1", "ca.crt"), &d.bundle, "cam-1", key.verifying_key().to_bytes(), 8)
            .unwrap();
    assert!(
        b.client.wait_for(WAIT, |s| s.connected),
        "the board's client did not connect: {:?}",
        b.client.stats()
    );
    drop(b);
    let (board, conn) =
        connect(&cert_cfg("cam-1", "ca.crt"), "cam-1-raw").expect("the board connects with its certificate");
    let acks = Arc::new(Mutex::new(0u32));
    {
        let acks = acks.clone();
        let mut conn = conn;
        std::thread::spawn(move || {
            while let Ok(ev) = conn.recv() {
                if let Ok(Event::Incoming(Packet::PubAck(_))) = ev {
                    *acks.lock().unwrap() += 1;
                }
            }
        });
    }
    let p = Predictor::new(&d.bundle);
    let update = |as_board: &str| LinkUpdate {
        proto: FLEET_PROTO,
        board: as_board.into(),
        group: None,
        model_hash: model_hash(&d.bundle),
        seq: 1,
        base_version: 0,
        targets: vec![fuse::target_links(&p, 1, 50)],
    };
    let cfg = tls.config("lab");
    // On another board's topic (the payload names that board too): the ACL drops it.
    board
        .publish(
            cfg.topic_links("cam-2"),
            QoS::AtLeastOnce,
            false,
            postcard::to_stdvec(&update("cam-2")).unwrap(),
        )
        .unwrap();
    board
        .publish(
            cfg.topic_links("cam-1"),
            QoS::AtLeastOnce,
            false,
            postcard::to_stdvec(&update("cam-1")).unwrap(),
        )
        .unwrap();
    assert!(wait_until(|| agg.stats().rounds.len() == 1), "no round from the board's own update");
    let st = agg.stop().unwrap();
    assert_eq!(st.updates, 1, "the update on cam-2's topic got through: {st:?}");
    assert_eq!(st.rounds[0].boards, 1);
    let _ = std::fs::remove_dir_all(&pki_dir);
}

/// From the second round on, boards that follow receive what changed, 4 bits a value, instead of
/// the whole weights: the delta rebuilds exactly the whole update the aggregator keeps retained for
/// boards that join (closed loop: no error adds up), costs a few kilobytes where the whole update
/// costs hundreds, and the quantised weights predict as the exact average does, within 0.2 points
/// of agreement on held-out frames.
#[test]
fn later_rounds_travel_as_small_deltas_that_rebuild_the_whole_update() {
    use jetlink::fleet::msg::{GlobalLinks, LinkUpdate, verify_global};
    let Some(broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let (bundle, rec) = (&d.bundle, &*d.reference);
    let cfg = broker.config("delta");
    let key = fleet_key();
    let pk = key.verifying_key().to_bytes();
    // Everything published in the fleet, in order.
    let seen = Arc::new(Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let (watcher, mut conn) = Client::new(mqtt_options(&cfg, "delta-watch").unwrap(), 64);
    {
        let seen = seen.clone();
        std::thread::spawn(move || {
            while let Ok(ev) = conn.recv() {
                if let Ok(Event::Incoming(Packet::Publish(p))) = ev {
                    seen.lock().unwrap().push((p.topic.clone(), p.payload.to_vec()));
                }
            }
        });
    }
    watcher.subscribe("jetlink/delta/#", QoS::AtLeastOnce).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let agg = Aggregator::start(cfg.clone(), agg_options(key.clone(), bundle, 2, Some(2))).unwrap();
    let drift = d.stream.drift_start as u32;
    let parts = [(d.stream.train_end as u32..drift, 1u64), (drift..d.stream.len() as u32, 2u64)];
    let mut boards = Vec::new();
    for (i, (frames, seed)) in parts.iter().enumerate() {
        let (fit, val, test) = split(rec, frames.clone(), 600, 32, 300);
        let mut b = SimBoard::join(&cfg, bundle, &format!("b{i}"), pk, val.len()).unwrap();
        assert!(b.client.wait_for(WAIT, |s| s.connected));
        local_train(bundle, &mut b.predictor, rec, &fit[..300], 3, *seed);
        b.offer(rec, &vec![300; bundle.n_models()], &val);
        boards.push((b, fit, val, test));
    }
    for (b, ..) in &boards {
        assert!(b.client.wait_for(WAIT, |s| s.global_version == 1), "{}: no version 1", b.name);
    }
    let after_first: Vec<u64> = boards.iter().map(|(b, ..)| b.client.stats().global_bytes_received).collect();
    // Round 2: more local training, offered again.
    for (k, (b, fit, val, _)) in boards.iter_mut().enumerate() {
        local_train(bundle, &mut b.predictor, rec, &fit[300..], 3, 10 + k as u64);
        b.offer(rec, &vec![600; bundle.n_models()], val);
    }
    for (b, ..) in &boards {
        assert!(
            b.client.wait_for(WAIT, |s| s.global_version == 2),
            "{}: no version 2: {:?}",
            b.name,
            b.client.stats()
        );
        let st = b.client.stats();
        assert_eq!((st.deltas_applied, st.delta_gaps, st.globals_refused), (1, 0, 0), "{}: {st:?}", b.name);
    }
    let st = agg.stop().unwrap();
    assert_eq!(st.rounds.len(), 2);
    let (whole, delta) = (st.rounds[1].bytes, st.rounds[1].delta_bytes);
    println!("round 2: whole update {whole} bytes, delta {delta} bytes");
    assert!(whole > 300_000 && delta > 0 && delta <= 64 * 1024, "whole {whole}, delta {delta}");
    for ((b, ..), before) in boards.iter().zip(&after_first) {
        let got = b.client.stats().global_bytes_received - before;
        assert!(got <= 64 * 1024, "{} received {got} bytes in round 2", b.name);
    }
    // The delta rebuilds the retained whole update exactly. Both wholes and the delta are waited
    // for: the delta is published after the second whole, and may reach the watcher after it.
    let count = |end: &str| seen.lock().unwrap().iter().filter(|(t, _)| t.ends_with(end)).count();
    assert!(wait_until(|| count("/global/links") == 2 && count("/global/delta") == 1));
    let seen = seen.lock().unwrap().clone();
    let verify = |bytes: &[u8]| verify_global(bytes, &pk, "delta", model_hash(bundle), 0).unwrap();
    let wholes: Vec<GlobalLinks> =
        seen.iter().filter(|(t, _)| t.ends_with("/global/links")).map(|(_, b)| verify(b)).collect();
    let deltas: Vec<GlobalLinks> =
        seen.iter().filter(|(t, _)| t.ends_with("/global/delta")).map(|(_, b)| verify(b)).collect();
    assert_eq!(deltas.len(), 1);
    assert_eq!(deltas[0].resolve(Some(&wholes[0])).unwrap(), wholes[1]);
    // Against the exact average of the same uploads: agreement on held-out frames within 0.2 points.
    let mut ups: std::collections::BTreeMap<String, LinkUpdate> = Default::default();
    for (t, bytes) in &seen {
        if t.ends_with("/links") && !t.contains("/global/") {
            let u: LinkUpdate = postcard::from_bytes(bytes).unwrap();
            ups.insert(u.board.clone(), u);
        }
    }
    let (exact, _) = fuse::fedavg(&ups.values().collect::<Vec<_>>());
    let with = |targets: &[jetlink::fleet::msg::TargetLinks]| {
        let mut p = Predictor::new(bundle);
        fuse::put_targets(&mut p, targets).unwrap();
        p
    };
    let test: Vec<usize> = boards.iter().flat_map(|(.., t)| t.iter().copied()).collect();
    let (a, q) = (
        score(bundle, &mut with(&exact), rec, &test),
        score(bundle, &mut with(&wholes[1].targets), rec, &test),
    );
    println!("held-out agreement: exact average {a:.4}, quantised {q:.4}");
    assert!((a - q).abs() <= 0.002, "quantised {q:.4} against exact {a:.4}");
}

/// The aggregator outlives its broker: after a broker restart it connects again and runs its
/// round (its connection's event loop ends at the first error; the aggregator opens a new one).
#[test]
fn the_aggregator_reconnects_after_a_broker_restart() {
    use jetlink::fleet::msg::LinkUpdate;
    let Some(mut broker) = broker() else { return };
    let d = DemoSet::demo().unwrap();
    let bundle = &d.bundle;
    let cfg = broker.config("again");
    let agg = Aggregator::start(cfg.clone(), agg_options(fleet_key(), bundle, 1, Some(1))).unwrap();
    assert!(wait_until(|| agg.stats().connected), "no first connection");
    broker.restart().unwrap();
    assert!(
        wait_until(|| !agg.stats().connected || agg.stats().connection_error.is_some()),
        "the cut went unseen"
    );
    assert!(
        wait_until(|| agg.stats().connected),
        "no connection after the restart: {:?}",
        agg.stats().connection_error
    );
    assert!(!agg.is_finished(), "the aggregator ended with its broker");
    let (client, mut conn) = Client::new(mqtt_options(&cfg, "again-board").unwrap(), 16);
    std::thread::spawn(move || while conn.recv().is_ok() {});
    let p = Predictor::new(bundle);
    let u = LinkUpdate {
        proto: FLEET_PROTO,
        board: "b".into(),
        group: None,
        model_hash: model_hash(bundle),
        seq: 1,
        base_version: 0,
        targets: vec![fuse::target_links(&p, 1, 50)],
    };
    // The aggregator subscribes on each connection; publish until the round runs.
    assert!(
        wait_until(|| {
            let _ = client.publish(
                cfg.topic_links("b"),
                QoS::AtLeastOnce,
                false,
                postcard::to_stdvec(&u).unwrap(),
            );
            std::thread::sleep(Duration::from_millis(200));
            agg.stats().rounds.len() == 1
        }),
        "no round after the restart"
    );
    agg.stop().unwrap();
}
