//! The board's fleet client: a thread outside the tick that takes the loop's summaries and link
//! snapshots from the [`FleetTap`], publishes them, and receives the fleet's global links and task
//! allocation.
//!
//! Store and forward: summaries wait in a bounded store (the oldest dropped first when it is full,
//! counted and reported in the next summary) until the broker acknowledges them (QoS 1); when the
//! connection drops, the unacknowledged ones go back to the front of the store and are sent again
//! after reconnecting (receivers drop duplicates by `seq`). Reconnection backs off from
//! `min_backoff`, doubling up to `max_backoff`. A global update is used only when signed by the
//! fleet key for this board's model hash and newer than the last one accepted; it is then fused with
//! the board's links ([`crate::fleet::fuse`]) and handed to the loop through the tap.

use crate::model_set::ModelSet;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rumqttc::{Client, Event, Outgoing, Packet, QoS};
use std::sync::mpsc::RecvTimeoutError;

use super::broker::{MqttLink, mqtt_options};
use super::fuse::{self, Fused};
use super::msg::{
    Assigned, FLEET_PROTO, GlobalLinks, LinkUpdate, ModelHash, Summary, SummaryMsg, verify_global,
};
use super::tap::{FleetTap, LocalSnapshot};
use super::tasks::TaskCosts;
use super::{FleetConfig, check_name};
use crate::links::Predictor;
use crate::manifest::OutputKind;
use crate::wire::PeriodSummary;

/// What a board's client needs beside the broker configuration.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub board: String,
    /// The fleet's public key: global links must be signed by it.
    pub fleet_key: [u8; 32],
    pub model_hash: ModelHash,
    pub kinds: Vec<OutputKind>,
    pub scorings: Vec<crate::scoring::Scoring>,
    /// How long one poll of the connection waits.
    pub poll: Duration,
    /// Task pricing for cooperative adaptation (`None`: no task offers).
    pub tasks: Option<TaskCosts>,
    /// Where the highest global version accepted is kept across restarts
    /// ([`crate::signing::RollbackState::for_fleet`]); `None`: in memory only (tests, the bench).
    pub state: Option<crate::signing::RollbackState>,
}

/// Counters of one client, for `status`, tests and the bench.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    pub connected: bool,
    pub connects: u32,
    pub disconnects: u32,
    /// Summaries acknowledged by the broker.
    pub summaries_acked: u32,
    /// Summaries waiting in the store.
    pub stored: usize,
    /// Summaries dropped from the full store (oldest first).
    pub dropped: u32,
    /// Summaries sent again after a connection dropped before their acknowledgement.
    pub resent: u32,
    pub link_updates: u32,
    pub bytes_published: u64,
    pub globals_accepted: u32,
    pub globals_refused: u32,
    /// Global updates received as deltas (4 bits a value) and applied; deltas that did not follow
    /// the version held (missed while disconnected, or before the first whole update), after which
    /// the board took the whole update again; and bytes of global updates received.
    pub deltas_applied: u32,
    pub delta_gaps: u32,
    pub global_bytes_received: u64,
    pub last_refusal: Option<String>,
    pub global_version: u64,
    pub last_fused: Option<Fused>,
    /// Global updates whose fusion waited for the loop's next snapshot (it had applied a change
    /// since the last one).
    pub globals_deferred: u32,
    /// When the last global update was fused and handed to the loop.
    pub fused_at: Option<Instant>,
    pub assigned: ModelSet,
    pub task_offers: u32,
    /// Why the last connection attempt or connection failed (`None` once connected).
    pub connection_error: Option<String>,
}

struct Shared {
    stop: AtomicBool,
    stats: Mutex<ClientStats>,
}

/// A running fleet client.
pub struct FleetClient {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

impl FleetClient {
    /// Start the client thread for the loop behind `tap`; `predictor` is a copy of the loop's
    /// predictor (same bundle), used to fuse global links.
    pub fn start(
        cfg: FleetConfig,
        opts: ClientOptions,
        tap: Arc<FleetTap>,
        predictor: Predictor,
    ) -> Result<FleetClient> {
        check_name("board id", &opts.board).map_err(anyhow::Error::msg)?;
        check_name("fleet name", &cfg.fleet).map_err(anyhow::Error::msg)?;
        if let Some(g) = &cfg.group {
            check_name("group", g).map_err(anyhow::Error::msg)?;
        }
        mqtt_options(&cfg, &opts.board)?;
        // The highest global version accepted before this start: a replayed older update, even one
        // retained on the broker, is refused after a restart too.
        let highest = match &opts.state {
            Some(st) => st.highest().context("fleet: the global links state")?,
            None => 0,
        };
        let stats = ClientStats { global_version: highest, ..ClientStats::default() };
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), stats: Mutex::new(stats.clone()) });
        let sh = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("fleet-{}", opts.board))
            .spawn(move || Worker::new(cfg, opts, tap, predictor, sh, stats).run())?;
        Ok(FleetClient { shared, handle: Some(handle) })
    }

    pub fn stats(&self) -> ClientStats {
        self.shared.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Wait (up to `timeout`) until `f` holds for the stats; returns whether it did.
    pub fn wait_for(&self, timeout: Duration, f: impl Fn(&ClientStats) -> bool) -> bool {
        let t = Instant::now();
        loop {
            if f(&self.stats()) {
                return true;
            }
            if t.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Stop the thread (after one more pass over the tap) and return the final counters.
    pub fn stop(mut self) -> ClientStats {
        self.shutdown();
        self.stats()
    }

    fn shutdown(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for FleetClient {
    fn drop(&mut self) {
        self.shutdown();
    }
}

enum Sent {
    Summary(Summary),
    Other,
}

struct Worker {
    cfg: FleetConfig,
    opts: ClientOptions,
    tap: Arc<FleetTap>,
    predictor: Predictor,
    shared: Arc<Shared>,
    store: VecDeque<Summary>,
    inflight: VecDeque<(Option<u16>, Sent)>,
    seq: u32,
    stats: ClientStats,
    local: Option<LocalSnapshot>,
    local_seen: u32,
    sent_samples: Vec<u32>,
    pending_update: Option<Vec<u8>>,
    update_seq: u32,
    queued_unix_s: u64,
    tasks_seen: u32,
    pending_offer: Option<Vec<u8>>,
    /// The whole global update at the version applied (the base of the next delta).
    held: Option<GlobalLinks>,
    /// Subscribed to the retained whole update (at start, after a reconnection or a gap).
    want_whole: bool,
    /// A verified global update waiting for a snapshot taken after the loop's last change, and
    /// whether it came as a delta.
    deferred: Option<(GlobalLinks, bool)>,
}

impl Worker {
    fn new(
        cfg: FleetConfig,
        opts: ClientOptions,
        tap: Arc<FleetTap>,
        predictor: Predictor,
        shared: Arc<Shared>,
        stats: ClientStats,
    ) -> Worker {
        let n = predictor.n_models();
        Worker {
            cfg,
            opts,
            tap,
            predictor,
            shared,
            store: VecDeque::new(),
            inflight: VecDeque::new(),
            seq: 0,
            stats,
            local: None,
            local_seen: 0,
            sent_samples: vec![0; n],
            pending_update: None,
            update_seq: 0,
            queued_unix_s: 0,
            tasks_seen: 0,
            pending_offer: None,
            held: None,
            want_whole: true,
            deferred: None,
        }
    }

    fn publish_stats(&mut self) {
        self.stats.stored =
            self.store.len() + self.inflight.iter().filter(|i| matches!(i.1, Sent::Summary(_))).count();
        self.stats.assigned = self.tap.assigned();
        if let Ok(mut s) = self.shared.stats.lock() {
            *s = self.stats.clone();
        }
    }

    fn run(mut self) {
        let mut conn: Option<MqttLink> = None;
        let mut next_try = Instant::now();
        let mut backoff = self.cfg.min_backoff;
        let mut stop_at: Option<Instant> = None;
        loop {
            let stopping = self.shared.stop.load(Ordering::Relaxed);
            if stopping && stop_at.is_none() {
                // On stop, up to 2 s to flush what is stored while connected.
                stop_at = Some(Instant::now() + Duration::from_secs(2));
            }
            let flushed_or_late = stop_at.is_some_and(|t| Instant::now() >= t);
            self.take_from_tap();
            if self.deferred.is_some() {
                // Also while the broker is away: the loop need not wait for it.
                let client = conn.as_ref().map(|l| l.client.clone());
                self.retry_deferred(client.as_ref());
            }
            if conn.is_none() && Instant::now() >= next_try {
                match mqtt_options(&self.cfg, &self.opts.board) {
                    Ok(o) => conn = Some(MqttLink::open(o, 1024)),
                    Err(e) => self.stats.last_refusal = Some(format!("{e:#}")),
                }
            }
            if self.stats.connected {
                if let Some(link) = conn.as_ref() {
                    self.send_pending(&link.client);
                }
            }
            self.publish_stats();
            if stopping
                && (self.store.is_empty() && self.inflight.is_empty()
                    || !self.stats.connected
                    || flushed_or_late)
            {
                if let Some(link) = conn.as_ref() {
                    let _ = link.client.try_disconnect();
                }
                break;
            }
            let Some(link) = conn.as_ref() else {
                std::thread::sleep(self.opts.poll.min(next_try.saturating_duration_since(Instant::now())));
                continue;
            };
            match link.recv_timeout(self.opts.poll) {
                Ok(Ok(ev)) => {
                    let client = link.client.clone();
                    self.on_event(&client, ev, &mut backoff)
                }
                Err(RecvTimeoutError::Timeout) => {}
                Ok(Err(e)) => {
                    self.stats.connection_error = Some(e.to_string());
                    self.on_disconnect(&mut backoff, &mut next_try);
                    conn = None;
                }
                Err(RecvTimeoutError::Disconnected) => {
                    self.on_disconnect(&mut backoff, &mut next_try);
                    conn = None;
                }
            }
        }
        self.publish_stats();
    }

    fn on_disconnect(&mut self, backoff: &mut Duration, next_try: &mut Instant) {
        if self.stats.connected {
            self.stats.disconnects += 1;
        }
        self.stats.connected = false;
        // Unacknowledged summaries go back to the front of the store, in order.
        while let Some((_, sent)) = self.inflight.pop_back() {
            if let Sent::Summary(s) = sent {
                self.store.push_front(s);
                self.stats.resent += 1;
            }
        }
        self.trim_store();
        *next_try = Instant::now() + *backoff;
        *backoff = (*backoff * 2).min(self.cfg.max_backoff);
    }

    fn trim_store(&mut self) {
        while self.store.len() > self.cfg.store.max(1) {
            self.store.pop_front();
            self.stats.dropped += 1;
        }
    }

    /// Summaries and a newer link snapshot from the loop.
    fn take_from_tap(&mut self) {
        let mut new = Vec::new();
        self.tap.drain_summaries(|s| new.push(s));
        for s in new {
            let summary = self.summary_of(s);
            self.store.push_back(summary);
        }
        self.trim_store();
        if let Some(snap) = self.tap.local_if_newer(self.local_seen) {
            self.local_seen = snap.seq;
            self.predictor.links.params.copy_from_slice(&snap.links);
            self.predictor.ensembles.params.copy_from_slice(&snap.ensembles);
            let targets: Vec<_> = (0..self.predictor.n_models())
                .filter(|&j| snap.samples[j] > self.sent_samples[j])
                .map(|j| fuse::target_links(&self.predictor, j, snap.samples[j]))
                .collect();
            if !targets.is_empty() {
                self.sent_samples.copy_from_slice(&snap.samples);
                let u = LinkUpdate {
                    proto: FLEET_PROTO,
                    board: self.opts.board.clone(),
                    group: self.cfg.group.clone(),
                    model_hash: self.opts.model_hash,
                    seq: self.update_seq,
                    base_version: snap.base_version,
                    targets,
                };
                self.update_seq += 1;
                self.pending_update = Some(postcard::to_stdvec(&u).expect("link update encodes"));
            }
            self.local = Some(snap);
        }
        if let Some(t) = self.tap.tasks_if_newer(self.tasks_seen) {
            self.tasks_seen = t.seq;
            if let Some(c) = &self.opts.tasks {
                let offer = c.offer(&self.opts.board, self.opts.model_hash, t.period, &t.drift, t.local);
                self.pending_offer = Some(postcard::to_stdvec(&offer).expect("task offer encodes"));
            }
        }
    }

    fn summary_of(&mut self, s: PeriodSummary) -> Summary {
        self.queued_unix_s =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let seq = self.seq;
        self.seq += 1;
        Summary {
            seq,
            period: s.period,
            ticks: s.ticks,
            accuracy_milli: s.agreement_milli,
            executions_saved_milli: s.executions_saved_milli,
            adapt_tasks: s.adapt_tasks,
            faults: s.faults,
            link_version: self.tap.applied_version(),
            dropped: self.stats.dropped + self.tap.drops().0,
        }
    }

    fn send_pending(&mut self, client: &Client) {
        let topic = self.cfg.topic_summary(&self.opts.board);
        while let Some(s) = self.store.pop_front() {
            let msg = SummaryMsg {
                proto: FLEET_PROTO,
                board: self.opts.board.clone(),
                model_hash: self.opts.model_hash,
                queued_unix_s: self.queued_unix_s,
                summary: s,
            };
            let bytes = postcard::to_stdvec(&msg).expect("summary encodes");
            let len = bytes.len();
            if client.try_publish(topic.clone(), QoS::AtLeastOnce, true, bytes).is_err() {
                self.store.push_front(s);
                return;
            }
            self.stats.bytes_published += len as u64;
            self.inflight.push_back((None, Sent::Summary(s)));
        }
        if let Some(o) = self.pending_offer.take() {
            let len = o.len();
            match client.try_publish(
                self.cfg.topic_tasks(&self.opts.board),
                QoS::AtLeastOnce,
                false,
                o.clone(),
            ) {
                Ok(()) => {
                    self.stats.task_offers += 1;
                    self.stats.bytes_published += len as u64;
                    self.inflight.push_back((None, Sent::Other));
                }
                Err(_) => self.pending_offer = Some(o),
            }
        }
        if let Some(u) = self.pending_update.take() {
            let len = u.len();
            match client.try_publish(
                self.cfg.topic_links(&self.opts.board),
                QoS::AtLeastOnce,
                false,
                u.clone(),
            ) {
                Ok(()) => {
                    self.stats.link_updates += 1;
                    self.stats.bytes_published += len as u64;
                    self.inflight.push_back((None, Sent::Other));
                }
                Err(_) => self.pending_update = Some(u),
            }
        }
    }

    fn on_event(&mut self, client: &Client, ev: Event, backoff: &mut Duration) {
        match ev {
            Event::Incoming(Packet::ConnAck(_)) => {
                self.stats.connected = true;
                self.stats.connection_error = None;
                self.stats.connects += 1;
                *backoff = self.cfg.min_backoff;
                // Deltas every round; the retained whole update until it has one that is current
                // (deltas may have been missed while disconnected).
                let _ = client.try_subscribe(self.cfg.topic_global_delta(), QoS::AtLeastOnce);
                let _ = client.try_subscribe(self.cfg.topic_global_links(), QoS::AtLeastOnce);
                self.want_whole = true;
                let _ = client.try_subscribe(self.cfg.topic_assigned(&self.opts.board), QoS::AtLeastOnce);
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                if let Some(slot) = self.inflight.iter_mut().find(|i| i.0.is_none()) {
                    slot.0 = Some(pkid);
                }
            }
            Event::Incoming(Packet::PubAck(a)) => {
                if let Some(at) = self.inflight.iter().position(|i| i.0 == Some(a.pkid)) {
                    if let Some((_, Sent::Summary(_))) = self.inflight.remove(at) {
                        self.stats.summaries_acked += 1;
                    }
                }
            }
            Event::Incoming(Packet::Publish(p)) => {
                if p.topic == self.cfg.topic_global_links() || p.topic == self.cfg.topic_global_delta() {
                    self.stats.global_bytes_received += p.payload.len() as u64;
                    self.on_global(client, &p.payload);
                } else if p.topic == self.cfg.topic_assigned(&self.opts.board) {
                    if let Ok(a) = super::msg::decode_message::<Assigned>(&p.payload) {
                        self.tap.set_assigned(a.targets);
                    }
                }
            }
            _ => {}
        }
    }

    /// Stop receiving the retained whole update once the board holds a current version: from then on
    /// each round costs a delta.
    fn whole_is_current(&mut self, client: &Client) {
        if self.want_whole {
            self.want_whole = false;
            let _ = client.try_unsubscribe(self.cfg.topic_global_links());
        }
    }

    fn on_global(&mut self, client: &Client, payload: &[u8]) {
        // A board that holds no global links yet (just started) takes the highest version it
        // accepted before again (the retained update after a restart); an older one stays refused.
        let highest = match self.held {
            Some(_) => self.stats.global_version,
            None => self.stats.global_version.saturating_sub(1),
        };
        let g = match verify_global(
            payload,
            &self.opts.fleet_key,
            &self.cfg.scope(),
            self.opts.model_hash,
            highest,
        ) {
            Ok(g) => g,
            Err(e) => {
                // A retained update seen again after a reconnection is not news: the board is current.
                if let super::msg::GlobalError::Rollback { version, highest } = e
                    && version == highest
                {
                    if self.held.as_ref().is_some_and(|h| h.version == version) {
                        self.whole_is_current(client);
                    }
                } else {
                    log::warn!("fleet: global links refused: {e}");
                    self.stats.globals_refused += 1;
                    self.stats.last_refusal = Some(e.to_string());
                }
                return;
            }
        };
        let delta = g.base_version != 0;
        // A delta may follow an update still waiting to be fused: it builds on that one.
        let base = match &self.deferred {
            Some((d, _)) if g.base_version == d.version => Some(d),
            _ => self.held.as_ref(),
        };
        let g = match g.resolve(base) {
            Ok(g) => g,
            Err(e @ super::msg::GlobalError::Gap { .. }) => {
                // Not refused: the whole update (retained) brings the board back in step.
                log::info!("fleet: {e}");
                self.stats.delta_gaps += 1;
                if !self.want_whole {
                    self.want_whole = true;
                    let _ = client.try_subscribe(self.cfg.topic_global_links(), QoS::AtLeastOnce);
                }
                return;
            }
            Err(e) => {
                log::warn!("fleet: global links refused: {e}");
                self.stats.globals_refused += 1;
                self.stats.last_refusal = Some(e.to_string());
                return;
            }
        };
        self.fuse_and_hand(Some(client), g, delta);
    }

    /// Fuse the (verified, resolved) global update `g` with the loop's last snapshot and hand the
    /// change to the loop; deferred when the loop applied another version since that snapshot.
    fn fuse_and_hand(&mut self, client: Option<&Client>, g: GlobalLinks, delta: bool) {
        let empty = LocalSnapshot {
            links: Vec::new(),
            ensembles: Vec::new(),
            samples: vec![0; self.predictor.n_models()],
            rows: Vec::new(),
            valid: Vec::new(),
            filled: 0,
            base_version: 0,
            epoch: 0,
            seq: 0,
        };
        let snap = self.local.as_ref().unwrap_or(&empty);
        let base = snap.base();
        if self.tap.base() != base {
            // The loop applied a change since this snapshot: fused against it, this one would count
            // that change twice. Fused when the loop offers its next snapshot (a period at most).
            self.defer(g, delta);
            return;
        }
        let stride = self.predictor.stride();
        let rows = &snap.rows[..(snap.filled * stride).min(snap.rows.len())];
        let valid = &snap.valid[..snap.filled.min(snap.valid.len())];
        let mut p = self.predictor.clone();
        let trust = if self.cfg.group.is_some() { fuse::Trust::Group } else { fuse::Trust::Fleet };
        match fuse::fuse(&mut p, &g, &self.opts.kinds, &self.opts.scorings, rows, valid, &snap.samples, trust)
        {
            Ok(f) => {
                // Recorded before it is applied: if the version cannot be kept, it is not applied.
                if let Some(Err(e)) = self.opts.state.as_ref().map(|s| s.accept_version(g.version)) {
                    log::warn!("fleet: global links version {} not applied: {e}", g.version);
                    self.stats.globals_refused += 1;
                    self.stats.last_refusal = Some(e.to_string());
                    return;
                }
                // What fusion changed, added by the loop to its weights as they are then.
                let sub =
                    |fused: &mut [f32], snap: &[f32]| fused.iter_mut().zip(snap).for_each(|(f, s)| *f -= s);
                sub(&mut p.links.params, &self.predictor.links.params);
                sub(&mut p.ensembles.params, &self.predictor.ensembles.params);
                if !self.tap.put_change(&p.links.params, &p.ensembles.params, g.version, base) {
                    self.defer(g, delta);
                    return;
                }
                self.stats.global_version = g.version;
                self.stats.globals_accepted += 1;
                self.stats.deltas_applied += u32::from(delta);
                self.held = Some(g);
                if let Some(client) = client {
                    self.whole_is_current(client);
                }
                self.stats.last_fused = Some(f);
                self.stats.fused_at = Some(Instant::now());
            }
            Err(e) => {
                self.stats.globals_refused += 1;
                self.stats.last_refusal = Some(e.to_string());
            }
        }
    }

    fn defer(&mut self, g: GlobalLinks, delta: bool) {
        self.stats.globals_deferred += 1;
        self.deferred = Some((g, delta));
    }

    /// Fuse a deferred update once the loop has offered a snapshot taken after its last change.
    fn retry_deferred(&mut self, client: Option<&Client>) {
        let base = self.local.as_ref().map_or((0, 0), LocalSnapshot::base);
        if self.tap.base() == base
            && let Some((g, delta)) = self.deferred.take()
        {
            self.fuse_and_hand(client, g, delta);
        }
    }
}
