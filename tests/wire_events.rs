//! Typed events: every `EventKind` is one `EventCode` with its two numbers named, and costs the same
//! bytes on the wire as the untyped record.

use jetlink::wire::{Event, EventCode, EventKind, Message};

#[test]
fn typed_events_round_trip_with_the_same_bytes() {
    let kinds = [
        EventKind::BudgetChange { new_kib: 5120, old_kib: 11_718 },
        EventKind::Shed { models: 0b1010, freed_kib: 4096 },
        EventKind::PowerThrottle { power_mw: 11_000, budget_mw: 10_000 },
        EventKind::ScheduleChange { active: 3, old_active: 5 },
        EventKind::TelemetryFault { error: 2, failures: 7 },
        EventKind::EngineFault { model: 6, error: 2 },
        EventKind::FrameFault { frame: 2001, error: 3 },
        EventKind::BundleRejected { reason: 14, unused: 0 },
        EventKind::AdaptStart { target: 6, unit: 0 },
        EventKind::AdaptDone { target: 6, score_milli: 812 },
        EventKind::DeadlineMiss { tick_us: 41_000, deadline_us: 33_000 },
        EventKind::Decimation { every: 2, old_every: 1 },
        EventKind::AccuracyEstimate { accuracy_milli: 893, half_width_milli: 23 },
        EventKind::GlobalLinks { version: 4, unused: 0 },
    ];
    assert_eq!(kinds.len(), EventCode::ALL.len(), "one typed variant per code");
    for (i, k) in kinds.into_iter().enumerate() {
        let (code, a, b) = k.parts();
        assert_eq!(code, EventCode::ALL[i]);
        let e = Event::new(300, k);
        assert_eq!(e.kind(), k);
        let untyped = Event { tick: 300, code, a, b };
        assert_eq!(
            postcard::to_stdvec(&Message::Event(e)).unwrap(),
            postcard::to_stdvec(&Message::Event(untyped)).unwrap()
        );
    }
    // The golden Shed event of tests/wire.rs, built typed.
    let shed = Event::new(1, EventKind::Shed { models: 2, freed_kib: 3 });
    assert_eq!(postcard::to_stdvec(&Message::Event(shed)).unwrap(), [3, 1, 1, 2, 3]);
}
