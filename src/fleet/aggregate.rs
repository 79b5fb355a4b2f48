//! `jetlink fleet aggregate`: subscribe to every board's link updates and task offers, average the
//! links per target weighted by samples ([`fuse::fedavg`] over each board's latest update), sign the
//! result with the fleet key and publish it (retained, so a board that joins later gets it at
//! once), and publish the task allocation ([`tasks::allocate`]). A round runs when updates from
//! `min_boards` boards arrived since the last one, or when `period` has passed with at least one
//! new update. Updates for another model hash are counted and left out.
//!
//! Groups: boards that see the same conditions can form a group (each board's `--group`, checked
//! against the fleet's list of boards where there is one). Each round also averages every group's
//! boards apart and publishes that average, signed for `<fleet>/<group>`, on the group's own topics;
//! the fleet's average (every board) stays on the fleet's topics for boards of no group. Averaging
//! boards that drift differently mixes what each learnt (docs/fleet.md measures it).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Result;
use ed25519_dalek::SigningKey;
use rumqttc::{Event, Packet, QoS};
use std::sync::mpsc::RecvTimeoutError;

use super::broker::{MqttLink, mqtt_options};
use super::msg::{
    Assigned, FLEET_PROTO, GlobalLinks, LinkUpdate, ModelHash, TargetLinks, TaskOffer, check_targets,
    sign_global,
};
use super::{FleetConfig, board_of_topic, fuse, tasks};

/// Aggregator settings.
#[derive(Clone, Debug)]
pub struct AggregateOptions {
    pub key: SigningKey,
    pub model_hash: ModelHash,
    pub period: Duration,
    pub min_boards: usize,
    /// Stop after this many rounds (`None`: until stopped).
    pub rounds: Option<u32>,
    /// The first round publishes version `start_version + 1`.
    pub start_version: u64,
    /// Per target, its link and ensemble weight counts in the bundle
    /// ([`super::fuse::target_shapes`]): an update of another shape is refused.
    pub shapes: Vec<(usize, usize)>,
    /// The fleet's boards, each with its group (`None`: no group): an upload from any other board
    /// id, or naming another group, is refused (`None`: any id the broker let through, in the group
    /// it names). The broker's ACL ties an id to its credentials; this list is the fleet's own.
    pub boards: Option<BTreeMap<String, Option<String>>>,
    /// A board that sent nothing in this many rounds is forgotten: its last update leaves the
    /// averages and its task offer the allocation, until it sends again, an upload or an offer
    /// (`None`: never). A board
    /// that left the fleet would otherwise stay in every average for ever, and keep being given
    /// targets to refresh that nobody refreshes.
    pub forget_after: Option<u32>,
    pub poll: Duration,
}

/// One published round.
#[derive(Clone, Debug)]
pub struct RoundReport {
    pub version: u64,
    pub boards: u32,
    pub targets: u32,
    /// Averaging and signing, microseconds.
    pub aggregate_us: f64,
    /// Size of the signed delta from the previous version (what following boards receive; 0
    /// when this round published only the whole update).
    pub delta_bytes: usize,
    /// Size of the signed global update.
    pub bytes: usize,
    /// Groups whose own average this round published (beside the fleet's), and their updates'
    /// bytes: the whole and, where the group had a version before, the delta.
    pub groups: u32,
    pub group_bytes: usize,
    pub group_delta_bytes: usize,
    pub published_at: Instant,
}

/// Counters of a running aggregator.
#[derive(Clone, Debug, Default)]
pub struct AggregateStats {
    pub rounds: Vec<RoundReport>,
    pub updates: u32,
    pub incompatible: u32,
    pub undecodable: u32,
    /// Updates refused by the checks before averaging (non-finite or oversized weights, sample
    /// counts above the limit, a shape that is not the bundle's), and the last reason.
    pub refused: u32,
    pub last_refusal: Option<String>,
    /// Connected to the broker now, and why the last connection failed (`None` once connected).
    pub connected: bool,
    /// The broker acknowledged the subscriptions of the current connection (uploads and offers
    /// published from then on reach the aggregator).
    pub subscribed: bool,
    pub connection_error: Option<String>,
    pub bytes_received: u64,
    /// Task offers received, and allocations published.
    pub offers: u32,
    pub assignments: u32,
    /// Boards forgotten after [`AggregateOptions::forget_after`] rounds without an upload or an
    /// offer.
    pub forgotten: u32,
}

struct Shared {
    stop: AtomicBool,
    stats: Mutex<AggregateStats>,
}

/// The aggregator on its own thread.
pub struct Aggregator {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Aggregator {
    pub fn start(cfg: FleetConfig, opts: AggregateOptions) -> Result<Aggregator> {
        mqtt_options(&cfg, "aggregator")?;
        let shared =
            Arc::new(Shared { stop: AtomicBool::new(false), stats: Mutex::new(AggregateStats::default()) });
        let sh = shared.clone();
        let handle =
            std::thread::Builder::new().name("fleet-aggregator".into()).spawn(move || run(cfg, opts, sh))?;
        Ok(Aggregator { shared, handle: Some(handle) })
    }

    pub fn stats(&self) -> AggregateStats {
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stop and return the counters (or the error that ended the thread).
    pub fn stop(mut self) -> Result<AggregateStats> {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.join().map_err(|_| anyhow::anyhow!("the aggregator thread panicked"))??;
        }
        Ok(self.stats())
    }
}

impl Drop for Aggregator {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(cfg: FleetConfig, opts: AggregateOptions, shared: Arc<Shared>) -> Result<()> {
    // A client id of its own per fleet and instance: a broker drops the older of two connections
    // with one id, so a shared `aggregator` id had two aggregators knock each other off.
    let nonce =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let id = format!("aggregator-{}-{}-{nonce:08x}", cfg.fleet, std::process::id());
    let mut link = MqttLink::open(mqtt_options(&cfg, &id)?, 1024);
    let mut latest: BTreeMap<String, LinkUpdate> = BTreeMap::new();
    let mut offers: BTreeMap<String, TaskOffer> = BTreeMap::new();
    let mut fresh: BTreeMap<String, ()> = BTreeMap::new();
    // Per board, the round its latest upload or offer arrived for (the next round's number then).
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    let mut last_round = Instant::now();
    let mut version = opts.start_version;
    // Per scope (the fleet's, each group's): what its boards hold and the version it was published at.
    let mut scopes: BTreeMap<Option<String>, Held> = BTreeMap::new();
    let mut rounds = 0u32;
    let mut backoff = cfg.min_backoff;
    let mut lost: Option<String> = None;
    let mut limit = WarnLimit::default();
    let mut subacks = 0u32;
    while !shared.stop.load(Ordering::Relaxed) {
        match link.recv_timeout(opts.poll) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => {
                backoff = cfg.min_backoff;
                let mut st = shared.stats.lock().expect("stats");
                (st.connected, st.connection_error, st.subscribed) = (true, None, false);
                drop(st);
                subacks = 0;
                // A request to a connection that has just ended fails: the next connection asks again.
                let _ = link.client.subscribe(cfg.topic_all("links"), QoS::AtLeastOnce);
                let _ = link.client.subscribe(cfg.topic_all("tasks"), QoS::AtLeastOnce);
            }
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                // Both subscriptions (uploads, offers) of this connection acknowledged.
                subacks += 1;
                shared.stats.lock().expect("stats").subscribed = subacks >= 2;
            }
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let mut st = shared.stats.lock().expect("stats");
                st.bytes_received += p.payload.len() as u64;
                let Some(board) = board_of_topic(&p.topic).map(str::to_owned) else { continue };
                // `+` matches the aggregator's own `global` level too (its retained update): not a
                // board's upload.
                if board == "global" {
                    continue;
                }
                if p.topic.ends_with("/links") {
                    match super::msg::decode_message::<LinkUpdate>(&p.payload) {
                        Ok(u) if u.model_hash != opts.model_hash || u.board != board => {
                            if limit.allow(Instant::now()) {
                                log::warn!(
                                    "fleet aggregate: link update on {:?} ignored: {}",
                                    p.topic,
                                    if u.board != board {
                                        "its board id is not the topic's"
                                    } else {
                                        "another model set"
                                    }
                                );
                            }
                            st.incompatible += 1;
                        }
                        // Checked before it is averaged (its group against the list, its weights):
                        // nothing poisoned gets signed.
                        Ok(u) => match group_check(opts.boards.as_ref(), &board, u.group.as_deref())
                            .and_then(|()| check_targets(&u.targets, Some(&opts.shapes)))
                        {
                            Ok(()) => {
                                st.updates += 1;
                                seen.insert(board.clone(), rounds + 1);
                                latest.insert(board.clone(), u);
                                fresh.insert(board, ());
                            }
                            Err(e) => {
                                if limit.allow(Instant::now()) {
                                    log::warn!("fleet aggregate: link update from {board} refused: {e}");
                                }
                                st.refused += 1;
                                st.last_refusal = Some(format!("{board}: {e}"));
                            }
                        },
                        Err(e) => {
                            if limit.allow(Instant::now()) {
                                log::warn!(
                                    "fleet aggregate: link update on {:?} ({} bytes) does not decode: {e}",
                                    p.topic,
                                    p.payload.len()
                                );
                            }
                            st.undecodable += 1;
                        }
                    }
                } else if p.topic.ends_with("/tasks") {
                    match super::msg::decode_message::<TaskOffer>(&p.payload) {
                        Ok(o) if o.model_hash == opts.model_hash && o.board == board => {
                            st.offers += 1;
                            seen.insert(board.clone(), rounds + 1);
                            offers.insert(board, o);
                        }
                        Ok(_) => {
                            if limit.allow(Instant::now()) {
                                log::warn!(
                                    "fleet aggregate: task offer on {:?} ignored: another model set or board id",
                                    p.topic
                                );
                            }
                            st.incompatible += 1;
                        }
                        Err(e) => {
                            if limit.allow(Instant::now()) {
                                log::warn!(
                                    "fleet aggregate: task offer on {:?} ({} bytes) does not decode: {e}",
                                    p.topic,
                                    p.payload.len()
                                );
                            }
                            st.undecodable += 1;
                        }
                    }
                }
            }
            Ok(Ok(_)) | Err(RecvTimeoutError::Timeout) => {}
            Ok(Err(e)) => lost = Some(e.to_string()),
            Err(RecvTimeoutError::Disconnected) => lost = Some("disconnected".into()),
        }
        // The connection failed or dropped (its event thread has ended): a new one after the
        // back-off. A broker restart or a network cut does not end the aggregator.
        if let Some(why) = lost.take() {
            log::warn!("fleet aggregate: broker connection: {why}; retrying in {backoff:?}");
            let mut st = shared.stats.lock().expect("stats");
            (st.connected, st.connection_error, st.subscribed) = (false, Some(why), false);
            drop(st);
            std::thread::sleep(backoff);
            backoff = (backoff * 2).min(cfg.max_backoff);
            link = MqttLink::open(mqtt_options(&cfg, &id)?, 1024);
            continue;
        }
        let due = fresh.len() >= opts.min_boards.max(1)
            || (!fresh.is_empty() && last_round.elapsed() >= opts.period);
        if !due {
            continue;
        }
        // Boards silent for more than `forget_after` rounds leave the averages and the allocation.
        if let Some(after) = opts.forget_after {
            let gone = forget(&mut seen, rounds + 1, after);
            for b in &gone {
                latest.remove(b);
                offers.remove(b);
                log::info!("fleet aggregate: board {b} forgotten: nothing from it in {after} round(s)");
            }
            shared.stats.lock().expect("stats").forgotten += gone.len() as u32;
        }
        let t = Instant::now();
        let ups: Vec<&LinkUpdate> = latest.values().collect();
        let (targets, boards) = fuse::fedavg(&ups);
        version += 1;
        let fleet_wide = publish_scope(&mut scopes, None, &targets, boards, version, &cfg, &opts);
        // Each group's own average, from its boards' latest updates: for the groups with a fresh
        // update (a group with none has nothing new, and its boards would fuse the same links
        // again, over the adaptation they made since).
        let mut groups: BTreeMap<&str, Vec<&LinkUpdate>> = BTreeMap::new();
        for u in latest.values() {
            if let Some(g) = u.group.as_deref() {
                groups.entry(g).or_default().push(u);
            }
        }
        groups.retain(|_, ups| ups.iter().any(|u| fresh.contains_key(&u.board)));
        let mut group_msgs = Vec::new();
        for (g, ups) in &groups {
            let (targets, boards) = fuse::fedavg(ups);
            group_msgs
                .push((*g, publish_scope(&mut scopes, Some(g), &targets, boards, version, &cfg, &opts)));
        }
        let aggregate_us = t.elapsed().as_secs_f64() * 1e6;
        let (len, delta_len) = (fleet_wide.whole.len(), fleet_wide.delta.as_ref().map_or(0, Vec::len));
        let mut published = 0;
        let mut group_bytes = (0, 0);
        for (group, m) in
            std::iter::once((None, fleet_wide)).chain(group_msgs.into_iter().map(|(g, m)| (Some(g), m)))
        {
            if group.is_some() {
                group_bytes.0 += m.whole.len();
                group_bytes.1 += m.delta.as_ref().map_or(0, Vec::len);
            }
            // Publishing on a connection that has just ended fails: logged; the next round
            // publishes the whole update again (retained), and boards that miss a delta take it.
            if let Err(e) =
                link.client.publish(cfg.topic_global(group, "links"), QoS::AtLeastOnce, true, m.whole)
            {
                log::warn!("fleet aggregate: version {version} not published: {e}");
            }
            published += 1;
            if let Some(d) = m.delta {
                let _ = link.client.publish(cfg.topic_global(group, "delta"), QoS::AtLeastOnce, false, d);
                published += 1;
            }
        }
        if !offers.is_empty() {
            // A target refreshed on one board helps the boards that receive the same average: the
            // tasks are allocated within each group, and among the boards of no group.
            let group_of = |board: &str| match &opts.boards {
                Some(list) => list.get(board).cloned().flatten(),
                None => latest.get(board).and_then(|u| u.group.clone()),
            };
            for a in tasks::allocate_by_group(rounds, offers.values(), group_of) {
                for (board, targets) in &a.boards {
                    let msg = Assigned { proto: FLEET_PROTO, period: a.period, targets: *targets };
                    let _ = link.client.publish(
                        cfg.topic_assigned(board),
                        QoS::AtLeastOnce,
                        false,
                        postcard::to_stdvec(&msg)?,
                    );
                    published += 1;
                }
            }
            shared.stats.lock().expect("stats").assignments += 1;
        }
        let report = RoundReport {
            version,
            boards,
            targets: targets.len() as u32,
            aggregate_us,
            bytes: len,
            delta_bytes: delta_len,
            groups: groups.len() as u32,
            group_bytes: group_bytes.0,
            group_delta_bytes: group_bytes.1,
            published_at: Instant::now(),
        };
        log::info!(
            "fleet aggregate: version {version} from {boards} boards, {len} bytes, {aggregate_us:.0} µs"
        );
        shared.stats.lock().expect("stats").rounds.push(report);
        fresh.clear();
        last_round = Instant::now();
        rounds += 1;
        if opts.rounds.is_some_and(|r| rounds >= r) {
            // Let this round's publishes be acknowledged before leaving (at most 5 s).
            let until = Instant::now() + Duration::from_secs(5);
            while published > 0 && Instant::now() < until {
                if let Ok(Ok(Event::Incoming(Packet::PubAck(_)))) = link.recv_timeout(opts.poll) {
                    published -= 1;
                }
            }
            break;
        }
    }
    limit.flush();
    let _ = link.client.disconnect();
    Ok(())
}

/// The boards of `seen` (each with the round its latest upload or task offer arrived for) that
/// sent nothing for more than `after` rounds before round `round`, removed from `seen` and returned.
fn forget(seen: &mut BTreeMap<String, u32>, round: u32, after: u32) -> Vec<String> {
    let gone: Vec<String> =
        seen.iter().filter(|&(_, &r)| round.saturating_sub(r) > after).map(|(b, _)| b.clone()).collect();
    for b in &gone {
        seen.remove(b);
    }
    gone
}

/// Whether `board` may upload as a member of `group`: the fleet's list (`boards`), where there is
/// one, must hold the board in that group (or in none for `None`). Without a list, any valid group
/// name is taken as the board gives it.
fn group_check(
    boards: Option<&BTreeMap<String, Option<String>>>,
    board: &str,
    group: Option<&str>,
) -> Result<(), String> {
    if let Some(g) = group {
        super::check_name("group", g)?;
    }
    let Some(boards) = boards else { return Ok(()) };
    match boards.get(board) {
        None => Err("not in the fleet's list of boards".into()),
        Some(listed) if listed.as_deref() != group => Err(format!(
            "it uploads as {}, the fleet's list of boards puts it in {}",
            group_name(group),
            group_name(listed.as_deref())
        )),
        Some(_) => Ok(()),
    }
}

fn group_name(g: Option<&str>) -> String {
    g.map_or("no group".into(), |g| format!("group {g:?}"))
}

/// What the boards of one scope (the fleet, or a group) hold: the whole weights of its last
/// version, and that version.
#[derive(Default)]
struct Held {
    targets: Vec<TargetLinks>,
    version: u64,
}

/// One scope's signed messages of a round: the whole update, and the delta from the scope's last
/// version (none for its first).
struct ScopeMsgs {
    whole: Vec<u8>,
    delta: Option<Vec<u8>>,
}

/// Sign `targets` (averaged over `boards` boards) as `version` of scope `group` (`None`: the
/// fleet's): the whole update, and the delta that takes the scope's boards from what they hold to
/// it (closed loop: taken from what they hold, so quantisation errors never add up).
fn publish_scope(
    scopes: &mut BTreeMap<Option<String>, Held>,
    group: Option<&str>,
    targets: &[TargetLinks],
    boards: u32,
    version: u64,
    cfg: &FleetConfig,
    opts: &AggregateOptions,
) -> ScopeMsgs {
    let held = scopes.entry(group.map(str::to_owned)).or_default();
    let first = held.targets.is_empty();
    let (deltas, new_targets) = fuse::advance(&mut held.targets, targets);
    let whole = GlobalLinks {
        proto: FLEET_PROTO,
        fleet: super::scope_of(&cfg.fleet, group),
        model_hash: opts.model_hash,
        version,
        boards,
        base_version: 0,
        targets: held.targets.clone(),
        deltas: Vec::new(),
    };
    let bytes = sign_global(&whole, &opts.key);
    // Every version but the scope's first: its boards that follow take this instead of the whole.
    let delta = (!first).then(|| {
        sign_global(
            &GlobalLinks { base_version: held.version, targets: new_targets, deltas, ..whole },
            &opts.key,
        )
    });
    held.version = version;
    ScopeMsgs { whole: bytes, delta }
}

/// At most [`WarnLimit::MAX`] warnings about boards' messages a minute: a board (or anyone) that
/// floods the broker with bad uploads must not flood the log. Every message is still counted in
/// the aggregator's status; how many were not logged is said at the next message after the minute
/// and when the aggregator stops.
#[derive(Debug, Default)]
struct WarnLimit {
    since: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

impl WarnLimit {
    const MAX: u32 = 20;
    const WINDOW: Duration = Duration::from_secs(60);

    /// Say how many warnings were not logged since the last time it was said (none: nothing).
    fn flush(&mut self) {
        if self.suppressed > 0 {
            log::warn!(
                "fleet aggregate: {} more refused, ignored or undecodable messages were not logged (at \
                 most {} a minute are; every one is counted in the status)",
                self.suppressed,
                Self::MAX
            );
            self.suppressed = 0;
        }
    }

    /// Whether a warning may be logged at `now`.
    fn allow(&mut self, now: Instant) -> bool {
        let since = *self.since.get_or_insert(now);
        if now.duration_since(since) >= Self::WINDOW {
            self.flush();
            *self = WarnLimit { since: Some(now), logged: 0, suppressed: 0 };
        }
        if self.logged < Self::MAX {
            self.logged += 1;
            true
        } else {
            self.suppressed += 1;
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_board_uploads_only_as_the_group_the_fleets_list_gives_it() {
        let list: BTreeMap<String, Option<String>> =
            [("cam-1".to_string(), Some("north".to_string())), ("cam-2".to_string(), None)].into();
        assert_eq!(group_check(Some(&list), "cam-1", Some("north")), Ok(()));
        assert_eq!(group_check(Some(&list), "cam-2", None), Ok(()));
        let e = group_check(Some(&list), "cam-1", Some("south")).unwrap_err();
        assert_eq!(e, "it uploads as group \"south\", the fleet's list of boards puts it in group \"north\"");
        let e = group_check(Some(&list), "cam-1", None).unwrap_err();
        assert!(e.starts_with("it uploads as no group"), "{e}");
        let e = group_check(Some(&list), "cam-2", Some("north")).unwrap_err();
        assert!(e.ends_with("puts it in no group"), "{e}");
        assert_eq!(group_check(Some(&list), "cam-3", None).unwrap_err(), "not in the fleet's list of boards");
        // Without a list, the group the board names, if it is a valid name.
        assert_eq!(group_check(None, "cam-9", Some("east")), Ok(()));
        assert!(group_check(None, "cam-9", Some("a/b")).unwrap_err().contains("group \"a/b\""));
        assert!(group_check(None, "cam-9", Some("global")).is_err());
    }

    /// A board is forgotten once more than `after` rounds passed since the round its latest upload
    /// came for, not before; the others stay.
    #[test]
    fn a_board_silent_for_more_than_the_limit_is_forgotten() {
        let mut seen: BTreeMap<String, u32> = [("a".to_string(), 1), ("b".to_string(), 3)].into();
        assert!(forget(&mut seen, 3, 2).is_empty(), "round 3: a's upload is 2 rounds old");
        assert_eq!(forget(&mut seen, 4, 2), ["a"]);
        assert_eq!(seen.keys().collect::<Vec<_>>(), ["b"]);
        assert!(forget(&mut seen, 5, 2).is_empty());
        assert_eq!(forget(&mut seen, 6, 2), ["b"]);
        assert!(seen.is_empty());
    }

    #[test]
    fn warnings_are_limited_per_minute_and_resume() {
        let t0 = Instant::now();
        let mut l = WarnLimit::default();
        let allowed = (0..100).filter(|&i| l.allow(t0 + Duration::from_millis(i))).count();
        assert_eq!((allowed, l.suppressed), (WarnLimit::MAX as usize, 100 - WarnLimit::MAX as u64));
        // A minute later the count starts again.
        assert!(l.allow(t0 + WarnLimit::WINDOW + Duration::from_millis(1)));
        assert_eq!((l.logged, l.suppressed), (1, 0));
    }
}
