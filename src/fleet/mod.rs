//! A fleet of boards: period summaries and link updates over an MQTT broker, links averaged across
//! boards (FedAvg weighted by samples) and fused with each board's own, and adaptation tasks
//! allocated across boards. Topics, message sizes and sizing: `docs/fleet.md`.
//!
//! - [`msg`]: the messages (postcard) and the signed global update.
//! - [`tap`]: the allocation-free hand-over between the control loop and the fleet client.
//! - [`fuse`]: FedAvg and the fusion of global with local links.
//! - [`tasks`]: cooperative allocation of adaptation tasks across boards.
//! - `client` (feature `fleet`): the board's fleet client thread (store and forward, backoff).
//! - `aggregate` (feature `fleet`): `jetlink fleet aggregate`, the averaging service.
//! - `broker` (feature `fleet`): MQTT options (TLS, credentials) and a Mosquitto launcher for tests.
//! - `sim`, `bench` (features `fleet` and `sim`): simulated boards, `jetlink bench fleet`.

pub mod fuse;
pub mod msg;
pub mod quant;
pub mod tap;
pub mod tasks;

#[cfg(feature = "fleet")]
pub mod aggregate;
#[cfg(all(feature = "fleet", feature = "sim"))]
pub mod bench;
#[cfg(feature = "fleet")]
pub mod broker;
#[cfg(feature = "fleet")]
pub mod client;
#[cfg(all(feature = "fleet", feature = "sim"))]
pub mod sim;

use std::path::PathBuf;
use std::time::Duration;

/// The aggregator's default for forgetting a board that sent nothing, in rounds (`jetlink fleet
/// aggregate --forget-after-rounds`, `aggregate::AggregateOptions::forget_after`). Here, not in
/// `aggregate`, so that the command line builds without the `fleet` feature.
pub const FORGET_AFTER_ROUNDS: u32 = 10;

use crate::bundle::{Bundle, sha256};
use msg::ModelHash;

/// Where the broker is and how to authenticate; shared by boards, the aggregator and `status`.
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub host: String,
    pub port: u16,
    /// Fleet name: the second topic level.
    pub fleet: String,
    /// The board's group in the fleet, if any: boards that see the same conditions (a site, a
    /// camera type) and are averaged together, apart from the rest of the fleet. Its global links
    /// come on `jetlink/<fleet>/global/<group>/…`, signed for `<fleet>/<group>` ([`Self::scope`]).
    /// The aggregator's list of boards says which boards are in it (`--boards`); unused by the
    /// aggregator's own configuration.
    pub group: Option<String>,
    /// TLS: the CA that signed the broker's certificate (PEM); with `client_cert` and
    /// `client_key` (PEM), client-certificate authentication.
    pub ca: Option<PathBuf>,
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub keep_alive: Duration,
    /// Reconnection backoff: doubles from `min_backoff` up to `max_backoff`.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Summaries kept while the broker cannot be reached (oldest dropped first, counted).
    pub store: usize,
}

impl FleetConfig {
    pub fn new(host: &str, port: u16, fleet: &str) -> FleetConfig {
        FleetConfig {
            host: host.into(),
            port,
            fleet: fleet.into(),
            group: None,
            ca: None,
            client_cert: None,
            client_key: None,
            username: None,
            password: None,
            keep_alive: Duration::from_secs(10),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(30),
            store: 256,
        }
    }

    pub fn topic_summary(&self, board: &str) -> String {
        format!("jetlink/{}/{board}/summary", self.fleet)
    }
    pub fn topic_links(&self, board: &str) -> String {
        format!("jetlink/{}/{board}/links", self.fleet)
    }
    pub fn topic_tasks(&self, board: &str) -> String {
        format!("jetlink/{}/{board}/tasks", self.fleet)
    }
    pub fn topic_assigned(&self, board: &str) -> String {
        format!("jetlink/{}/{board}/assigned", self.fleet)
    }
    /// The whole global links (retained) for this board's group, or the fleet's without one.
    pub fn topic_global_links(&self) -> String {
        self.topic_global(self.group.as_deref(), "links")
    }
    /// Each round's changes since the previous version (not retained), as
    /// [`topic_global_links`](Self::topic_global_links).
    pub fn topic_global_delta(&self) -> String {
        self.topic_global(self.group.as_deref(), "delta")
    }
    /// `jetlink/<fleet>/global/<kind>`, or `jetlink/<fleet>/global/<group>/<kind>` for a group's.
    pub fn topic_global(&self, group: Option<&str>, kind: &str) -> String {
        match group {
            Some(g) => format!("jetlink/{}/global/{g}/{kind}", self.fleet),
            None => format!("jetlink/{}/global/{kind}", self.fleet),
        }
    }
    /// What a global update for this board must be signed for: the fleet name, or
    /// `<fleet>/<group>` for a board in a group.
    pub fn scope(&self) -> String {
        scope_of(&self.fleet, self.group.as_deref())
    }
    /// `jetlink/<fleet>/+/<kind>`: every board's messages of one kind.
    pub fn topic_all(&self, kind: &str) -> String {
        format!("jetlink/{}/+/{kind}", self.fleet)
    }
}

/// The scope a global update is signed for: `fleet`, or `fleet/group` (a group's own average).
pub fn scope_of(fleet: &str, group: Option<&str>) -> String {
    match group {
        Some(g) => format!("{fleet}/{g}"),
        None => fleet.to_string(),
    }
}

/// A name usable as one topic level and a client id: 1–32 of `[A-Za-z0-9_-]`, not `global`.
pub fn check_name(what: &str, name: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !ok {
        return Err(format!("{what} {name:?}: use 1 to 32 letters, digits, '_' or '-'"));
    }
    if name == "global" {
        return Err(format!("{what} \"global\" is reserved for the aggregator's topics"));
    }
    Ok(())
}

/// The model hash of a bundle: the first 8 bytes of the SHA-256 over its workload name, model
/// descriptions and link and ensemble shapes. Boards exchange links only when theirs match.
pub fn model_hash(b: &Bundle) -> ModelHash {
    let mut bytes = postcard::to_stdvec(&(&b.workload, &b.models)).expect("models encode");
    bytes.extend(postcard::to_stdvec(&(&b.links.dims, &b.ensembles.dims)).expect("dims encode"));
    sha256(&bytes)[..8].try_into().expect("8 bytes")
}

/// The topic level after the fleet name (the board id, or `global`).
pub fn board_of_topic(topic: &str) -> Option<&str> {
    topic.split('/').nth(2)
}
