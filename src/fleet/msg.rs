//! What travels between boards and the aggregator: postcard messages (`docs/fleet.md` lists the
//! topics and sizes), and the signed envelope of a global link update, checked with the same rules
//! as a bundle (signature by the fleet's key before anything is decoded, key id, model hash,
//! rollback).

use crate::model_set::ModelSet;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::bundle::{KEY_ID_LEN, SIGNATURE_LEN, hex};
use crate::signing::key_id;

/// Bumped on any change to a message below (2: global updates carry deltas; 3: link updates carry
/// the board's group).
pub const FLEET_PROTO: u8 = 3;

/// Magic of a signed global update: the envelope is magic, postcard [`GlobalLinks`], key id,
/// Ed25519 signature over everything before it.
pub const GLOBAL_MAGIC: &[u8; 8] = b"JLGLOB01";

/// First 8 bytes of the SHA-256 over the bundle's model descriptions and link and ensemble shapes:
/// only boards whose hashes match exchange links.
pub type ModelHash = [u8; 8];

/// A board's period summary (`jetlink/<fleet>/<board>/summary`, retained). `seq` counts this
/// board's summaries from 0, so a receiver can drop duplicates and see gaps.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub seq: u32,
    pub period: u32,
    pub ticks: u32,
    /// Accuracy kept × 1000 (against a reference, or the audit estimate), or `0xFFFF` unknown.
    pub accuracy_milli: u16,
    pub executions_saved_milli: u16,
    pub adapt_tasks: u16,
    pub faults: u32,
    /// Version of the global links in use (0: local links only).
    pub link_version: u64,
    /// Summaries this board dropped (oldest first) while the broker could not be reached.
    pub dropped: u32,
}

/// The summary message with who sent it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SummaryMsg {
    pub proto: u8,
    pub board: String,
    pub model_hash: ModelHash,
    /// When the client queued it (Unix seconds; for `jetlink fleet status`'s "last seen").
    pub queued_unix_s: u64,
    pub summary: Summary,
}

impl SummaryMsg {
    /// A summary `jetlink fleet status` may show: this protocol, sent by the board whose topic it
    /// came on (`topic_board`), a board id usable as a topic level, and shares (in thousandths, or
    /// 0xFFFF for none) that are shares.
    pub fn check(&self, topic_board: &str) -> Result<(), String> {
        if self.proto != FLEET_PROTO {
            return Err(format!("protocol {} (this build speaks {FLEET_PROTO})", self.proto));
        }
        super::check_name("board", &self.board)?;
        if self.board != topic_board {
            return Err(format!("board {:?} published on board {topic_board:?}'s topic", self.board));
        }
        for (what, v) in [
            ("accuracy", self.summary.accuracy_milli),
            ("executions saved", self.summary.executions_saved_milli),
        ] {
            if v > 1000 && v != 0xFFFF {
                return Err(format!("{what} {v}‰ is not a share"));
            }
        }
        Ok(())
    }
}

/// The links into one target (its `n − 1` links, contiguous in the arena, and its ensemble block)
/// and the labelled samples they were fitted on since the board's last update.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetLinks {
    pub target: u8,
    pub samples: u32,
    pub links: Vec<f32>,
    pub ensemble: Vec<f32>,
}

/// The most samples one board may claim for one target in one update: the weight of its links in
/// the average is bounded, and the sum over 10,000 boards stays exact in a u64.
pub const MAX_SAMPLES: u32 = 1 << 20;

/// The largest weight magnitude accepted in a link update or a global update. Link and ensemble
/// weights fitted on normalised inputs stay within a few units; a weight of 1e4 or more is no
/// fit but an attack or a diverged board, and with [`MAX_SAMPLES`] it keeps the weighted sum finite.
pub const MAX_ABS_WEIGHT: f32 = 1.0e4;

impl TargetLinks {
    /// Finite, bounded weights and a bounded sample count; `shape` (link and ensemble weight
    /// counts per target, see [`super::fuse::target_shapes`]) when the checker knows the bundle.
    pub fn check(&self, shape: Option<&[(usize, usize)]>) -> Result<(), String> {
        let j = self.target;
        if self.samples > MAX_SAMPLES {
            return Err(format!("target {j}: {} samples, above the limit of {MAX_SAMPLES}", self.samples));
        }
        if let Some(shape) = shape {
            let Some(&(l, e)) = shape.get(j as usize) else {
                return Err(format!("target {j}, the bundle has {} models", shape.len()));
            };
            if self.links.len() != l || self.ensemble.len() != e {
                return Err(format!(
                    "target {j}: {} link and {} ensemble weights, expected {l} and {e}",
                    self.links.len(),
                    self.ensemble.len()
                ));
            }
        }
        for (what, xs) in [("link", &self.links), ("ensemble", &self.ensemble)] {
            if let Some(k) = crate::links::first_non_finite(xs) {
                return Err(format!("target {j}: {what} weight {k} is {}, not finite", xs[k]));
            }
            if let Some(k) = xs.iter().position(|v| v.abs() > MAX_ABS_WEIGHT) {
                return Err(format!(
                    "target {j}: {what} weight {k} is {}, above {MAX_ABS_WEIGHT:e} in magnitude",
                    xs[k]
                ));
            }
        }
        Ok(())
    }
}

/// Every target of an update checked ([`TargetLinks::check`]), each target at most once.
pub fn check_targets(targets: &[TargetLinks], shape: Option<&[(usize, usize)]>) -> Result<(), String> {
    for (k, t) in targets.iter().enumerate() {
        if targets[..k].iter().any(|o| o.target == t.target) {
            return Err(format!("target {} appears twice", t.target));
        }
        t.check(shape)?;
    }
    Ok(())
}

/// A board's link update (`jetlink/<fleet>/<board>/links`): the targets it adapted since its last
/// update, whole (not deltas), weighted by their samples in the average.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkUpdate {
    pub proto: u8,
    pub board: String,
    /// The board's group ([`super::FleetConfig::group`]): the aggregator averages it with its group's
    /// boards; with a list of boards, the list must put it in the same group.
    pub group: Option<String>,
    pub model_hash: ModelHash,
    pub seq: u32,
    /// Global version these weights started from (0: the bundle's).
    pub base_version: u64,
    pub targets: Vec<TargetLinks>,
}

/// The fleet's averaged links, signed: whole (`base_version` 0, `targets`; on
/// `jetlink/<fleet>/global/links`, retained, for boards that join or lost track) or as what changed
/// since version `base_version` (`deltas`, 4 bits a value, [`super::quant`]; on
/// `jetlink/<fleet>/global/delta`, what boards that follow receive every round).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GlobalLinks {
    pub proto: u8,
    /// What it was signed for: the fleet name, or `<fleet>/<group>` for a group's own average
    /// ([`super::scope_of`]).
    pub fleet: String,
    pub model_hash: ModelHash,
    /// Monotonic; a board refuses a version not above the highest it accepted.
    pub version: u64,
    /// Boards that contributed, and the samples behind each target.
    pub boards: u32,
    /// 0: `targets` hold the whole weights; else `deltas` apply to this version's, and `targets`
    /// are whole weights of targets new since it.
    pub base_version: u64,
    pub targets: Vec<TargetLinks>,
    pub deltas: Vec<TargetDelta>,
}

/// What changed in one target's weights since the base version.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TargetDelta {
    pub target: u8,
    pub samples: u32,
    pub links: super::quant::Quantized,
    pub ensemble: super::quant::Quantized,
}

impl GlobalLinks {
    /// The whole update at `self.version`: itself when whole, else `held` (the whole update at
    /// `base_version`) with the deltas added; checked ([`check_targets`]) either way.
    pub fn resolve(&self, held: Option<&GlobalLinks>) -> Result<GlobalLinks, GlobalError> {
        if self.base_version == 0 {
            return Ok(self.clone());
        }
        let Some(h) = held.filter(|h| h.version == self.base_version) else {
            return Err(GlobalError::Gap { base: self.base_version, held: held.map_or(0, |h| h.version) });
        };
        let mut targets = h.targets.clone();
        for t in &self.targets {
            targets.retain(|h| h.target != t.target);
            targets.push(t.clone());
        }
        targets.sort_by_key(|t| t.target);
        for d in &self.deltas {
            let at = match targets.iter().position(|t| t.target == d.target) {
                Some(at) => at,
                None => {
                    return Err(GlobalError::Poisoned(format!("target {}: a delta with no base", d.target)));
                }
            };
            let t = &mut targets[at];
            d.links
                .add_to(&mut t.links)
                .map_err(|e| GlobalError::Poisoned(format!("target {}: links: {e}", d.target)))?;
            d.ensemble
                .add_to(&mut t.ensemble)
                .map_err(|e| GlobalError::Poisoned(format!("target {}: ensemble: {e}", d.target)))?;
            t.samples = d.samples;
        }
        check_targets(&targets, None).map_err(GlobalError::Poisoned)?;
        Ok(GlobalLinks { base_version: 0, targets, deltas: Vec::new(), ..self.clone() })
    }
}

/// One pending adaptation task of a board: refresh the links into `target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskItem {
    pub target: u8,
    /// Expected accuracy won back × 1000 (the board's drift level times the task's importance).
    pub importance_milli: u16,
    /// Cost in thousandths of a period of the board's adaptation capacity.
    pub cost_milli: u16,
}

/// A board's pending tasks and spare capacity (`jetlink/<fleet>/<board>/tasks`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskOffer {
    pub proto: u8,
    pub board: String,
    pub model_hash: ModelHash,
    pub period: u32,
    /// Spare adaptation capacity this period, in thousandths of a period of the board's own
    /// capacity, times its speed relative to the slowest board (× 1000).
    pub capacity_milli: u32,
    pub tasks: Vec<TaskItem>,
}

/// The aggregator's allocation: per board, the targets it refreshes this period (bit j = target
/// j); each board is sent its own share ([`Assigned`]).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TaskAssignment {
    pub proto: u8,
    pub period: u32,
    pub boards: Vec<(String, ModelSet)>,
}

/// One board's share of the allocation (`jetlink/<fleet>/<board>/assigned`): the targets it
/// refreshes for the fleet this period (bit j = target j), beside those its DCTA table gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assigned {
    pub proto: u8,
    pub period: u32,
    pub targets: ModelSet,
}

/// Decode a board's or the aggregator's message (`LinkUpdate`, `TaskOffer`, `Assigned`): its
/// protocol first (every one starts with it, one byte), so that a message of another protocol is
/// said to be one rather than decoded into wrong fields; then the whole message
/// ([`crate::binfile::decode_whole`]).
pub fn decode_message<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, String> {
    match payload.first() {
        None => Err("an empty message".into()),
        Some(&p) if p != FLEET_PROTO => Err(format!("fleet protocol {p}, this build speaks {FLEET_PROTO}")),
        Some(_) => crate::binfile::decode_whole(payload).map_err(|e| e.to_string()),
    }
}

/// Why a global update was refused.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum GlobalError {
    #[error("truncated global update ({0} bytes)")]
    Truncated(usize),
    #[error("not a signed global update (magic {0:?}): global links must be signed by the fleet key")]
    Unsigned(String),
    #[error("signed by key {found}, but this board trusts only fleet key {trusted}")]
    UnknownKey { found: String, trusted: String },
    #[error("signature check failed for fleet key {0}: the update was changed after it was signed")]
    BadSignature(String),
    #[error("payload does not decode: {0}")]
    Decode(String),
    #[error("global links for models {found}, this board runs {ours}: not aggregated together")]
    ModelMismatch { found: String, ours: String },
    #[error("global version {version} is not above {highest}, the highest accepted (rollback refused)")]
    Rollback { version: u64, highest: u64 },
    #[error("global links do not fit this bundle: {0}")]
    Shape(String),
    #[error("fleet protocol {0}, this build speaks {FLEET_PROTO}")]
    Proto(u8),
    #[error("global links of {}, this board is in {}", scope_words(found), scope_words(ours))]
    OtherFleet { found: String, ours: String },
    #[error("global links refused: {0}")]
    Poisoned(String),
    #[error("a delta from version {base}, this board holds version {held}: waiting for the whole update")]
    Gap { base: u64, held: u64 },
}

/// A scope ([`super::scope_of`]) in words: `fleet "lab"`, or `fleet "lab", group "north"`.
fn scope_words(scope: &str) -> String {
    match scope.split_once('/') {
        Some((fleet, group)) => format!("fleet {fleet:?}, group {group:?}"),
        None => format!("fleet {scope:?}"),
    }
}

impl GlobalError {
    /// Stable code, counted per kind in the client's statistics.
    pub fn code(&self) -> u32 {
        match self {
            GlobalError::Truncated(_) => 1,
            GlobalError::Unsigned(_) => 2,
            GlobalError::UnknownKey { .. } => 3,
            GlobalError::BadSignature(_) => 4,
            GlobalError::Decode(_) => 5,
            GlobalError::ModelMismatch { .. } => 6,
            GlobalError::Rollback { .. } => 7,
            GlobalError::Shape(_) => 8,
            GlobalError::Proto(_) => 9,
            GlobalError::OtherFleet { .. } => 10,
            GlobalError::Poisoned(_) => 11,
            GlobalError::Gap { .. } => 12,
        }
    }
}

/// Encode and sign a global update with the fleet's private key.
pub fn sign_global(g: &GlobalLinks, key: &SigningKey) -> Vec<u8> {
    let mut out = Vec::from(&GLOBAL_MAGIC[..]);
    out.extend_from_slice(&postcard::to_stdvec(g).expect("global links encode"));
    out.extend_from_slice(&key_id(&key.verifying_key().to_bytes()));
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    out
}

/// Check a global update's signature by `trusted` (the board's fleet key), then decode it and check
/// its protocol, scope (`scope`: the board's fleet, or `fleet/group`), model hash and version
/// (above `highest`). Nothing is decoded before the signature checks out.
pub fn verify_global(
    bytes: &[u8],
    trusted: &[u8; 32],
    scope: &str,
    ours: ModelHash,
    highest: u64,
) -> Result<GlobalLinks, GlobalError> {
    let tail = KEY_ID_LEN + SIGNATURE_LEN;
    if bytes.len() < GLOBAL_MAGIC.len() {
        return Err(GlobalError::Truncated(bytes.len()));
    }
    if &bytes[..GLOBAL_MAGIC.len()] != GLOBAL_MAGIC {
        return Err(GlobalError::Unsigned(String::from_utf8_lossy(&bytes[..GLOBAL_MAGIC.len()]).into()));
    }
    if bytes.len() < GLOBAL_MAGIC.len() + tail + 1 {
        return Err(GlobalError::Truncated(bytes.len()));
    }
    let sig_at = bytes.len() - SIGNATURE_LEN;
    let id = &bytes[sig_at - KEY_ID_LEN..sig_at];
    let want = key_id(trusted);
    if id != want {
        return Err(GlobalError::UnknownKey { found: hex(id), trusted: hex(&want) });
    }
    let vk = VerifyingKey::from_bytes(trusted).map_err(|_| GlobalError::BadSignature(hex(&want)))?;
    let sig = Signature::from_bytes(bytes[sig_at..].try_into().expect("64 bytes"));
    vk.verify_strict(&bytes[..sig_at], &sig).map_err(|_| GlobalError::BadSignature(hex(&want)))?;
    // The protocol first (its first byte, a u8): an update of another protocol is said to be one,
    // not taken for a damaged payload (the signature checked, the bytes are as signed).
    let payload = &bytes[GLOBAL_MAGIC.len()..sig_at - KEY_ID_LEN];
    if payload[0] != FLEET_PROTO {
        return Err(GlobalError::Proto(payload[0]));
    }
    let g: GlobalLinks = crate::binfile::decode_whole(payload)
        .map_err(|e| GlobalError::Decode(format!("{e} (signed as it is: written by another jetlink?)")))?;
    // The fleet name (and group) is in the signed payload: a key shared by two fleets does not
    // carry one fleet's update to the other, nor one group's to another group or to the fleet.
    if g.fleet != scope {
        return Err(GlobalError::OtherFleet { found: g.fleet, ours: scope.to_string() });
    }
    if g.model_hash != ours {
        return Err(GlobalError::ModelMismatch { found: hex(&g.model_hash), ours: hex(&ours) });
    }
    if g.version <= highest {
        return Err(GlobalError::Rollback { version: g.version, highest });
    }
    // Signed is not enough: checked again before it is applied (a delta's sum again once resolved).
    check_targets(&g.targets, None).map_err(GlobalError::Poisoned)?;
    for d in &g.deltas {
        // A delta spans at most from −MAX_ABS_WEIGHT to +MAX_ABS_WEIGHT: 2·MAX / 7 a step.
        let step = 2.0 * MAX_ABS_WEIGHT / 7.0;
        d.links
            .check(step)
            .and_then(|()| d.ensemble.check(step))
            .map_err(|e| GlobalError::Poisoned(format!("target {}: {e}", d.target)))?;
    }
    if g.base_version == 0 && !g.deltas.is_empty() {
        return Err(GlobalError::Poisoned("deltas with no base version".into()));
    }
    if g.deltas.iter().any(|d| g.targets.iter().any(|t| t.target == d.target)) {
        return Err(GlobalError::Poisoned("a target both whole and as a delta".into()));
    }
    if g.base_version >= g.version {
        return Err(GlobalError::Poisoned(format!(
            "a delta from version {} to {}",
            g.base_version, g.version
        )));
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_of_another_protocol_is_named_not_misread() {
        let u = LinkUpdate {
            proto: FLEET_PROTO,
            board: "cam-1".into(),
            group: Some("north".into()),
            model_hash: [3; 8],
            seq: 1,
            base_version: 0,
            targets: Vec::new(),
        };
        let mut b = postcard::to_stdvec(&u).unwrap();
        assert_eq!(decode_message::<LinkUpdate>(&b).unwrap(), u);
        b.push(0);
        assert!(decode_message::<LinkUpdate>(&b).unwrap_err().contains("follow its last field"));
        b.pop();
        b[0] = FLEET_PROTO - 1;
        assert_eq!(
            decode_message::<LinkUpdate>(&b).unwrap_err(),
            format!("fleet protocol {}, this build speaks {FLEET_PROTO}", FLEET_PROTO - 1)
        );
        assert_eq!(decode_message::<TaskOffer>(&[]).unwrap_err(), "an empty message");
    }

    #[test]
    fn a_summary_is_shown_only_from_its_own_board_with_shares_that_are_shares() {
        let ok = SummaryMsg {
            proto: FLEET_PROTO,
            board: "b1".into(),
            model_hash: [0; 8],
            queued_unix_s: 0,
            summary: Summary { accuracy_milli: 942, executions_saved_milli: 0xFFFF, ..Summary::default() },
        };
        ok.check("b1").unwrap();
        let bad = |f: fn(&mut SummaryMsg), topic: &str, why: &str| {
            let mut m = ok.clone();
            f(&mut m);
            let e = m.check(topic).unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        bad(|_| {}, "b8", "published on board \"b8\"'s topic");
        bad(|m| m.proto = 99, "b1", "protocol 99");
        bad(|m| m.summary.accuracy_milli = 60000, "b1", "accuracy 60000");
        bad(|m| m.summary.executions_saved_milli = 1001, "b1", "executions saved 1001");
        bad(|m| m.board = "a\u{1b}[2Jb".into(), "a\u{1b}[2Jb", "board");
        bad(|m| m.board = String::new(), "", "board");
    }

    fn global() -> GlobalLinks {
        GlobalLinks {
            proto: FLEET_PROTO,
            fleet: "lab".into(),
            model_hash: [7; 8],
            version: 3,
            boards: 2,
            base_version: 0,
            targets: vec![TargetLinks { target: 1, samples: 9, links: vec![1.0, 2.0], ensemble: vec![0.5] }],
            deltas: Vec::new(),
        }
    }

    #[test]
    fn signed_global_round_trip_and_every_refusal() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let pk = key.verifying_key().to_bytes();
        let b = sign_global(&global(), &key);
        assert_eq!(verify_global(&b, &pk, "lab", [7; 8], 2).unwrap(), global());
        // Every flipped byte and every cut is refused.
        for i in 0..b.len() {
            let mut t = b.clone();
            t[i] ^= 0x01;
            assert!(verify_global(&t, &pk, "lab", [7; 8], 2).is_err(), "byte {i}");
        }
        for n in 0..b.len() {
            assert!(verify_global(&b[..n], &pk, "lab", [7; 8], 2).is_err(), "cut at {n}");
        }
        let unsigned = postcard::to_stdvec(&global()).unwrap();
        assert!(matches!(verify_global(&unsigned, &pk, "lab", [7; 8], 2), Err(GlobalError::Unsigned(_))));
        let by_other = sign_global(&global(), &other);
        assert!(matches!(
            verify_global(&by_other, &pk, "lab", [7; 8], 2),
            Err(GlobalError::UnknownKey { .. })
        ));
        assert!(matches!(verify_global(&b, &pk, "lab", [8; 8], 2), Err(GlobalError::ModelMismatch { .. })));
        assert!(matches!(verify_global(&b, &pk, "lab", [7; 8], 3), Err(GlobalError::Rollback { .. })));
        // Another fleet's update, signed by the same key: refused.
        assert!(matches!(verify_global(&b, &pk, "lab2", [7; 8], 2), Err(GlobalError::OtherFleet { .. })));
        // The fleet's update on a board of a group, and one group's on another group's board or on
        // a board of no group: refused.
        assert!(matches!(
            verify_global(&b, &pk, "lab/north", [7; 8], 2),
            Err(GlobalError::OtherFleet { .. })
        ));
        let north = sign_global(
            &GlobalLinks { fleet: crate::fleet::scope_of("lab", Some("north")), ..global() },
            &key,
        );
        assert!(verify_global(&north, &pk, "lab/north", [7; 8], 2).is_ok());
        for other in ["lab/south", "lab"] {
            let e = verify_global(&north, &pk, other, [7; 8], 2).unwrap_err();
            assert!(
                e.to_string().starts_with(
                    "global links of fleet \"lab\", group \"north\", this board is in fleet \"lab\""
                ),
                "{e}"
            );
        }
        // Poisoned but signed (an aggregator that did not check): refused on the board too.
        for bad in [f32::NAN, f32::INFINITY, 1e30] {
            let mut g = global();
            g.targets[0].links[1] = bad;
            let e = verify_global(&sign_global(&g, &key), &pk, "lab", [7; 8], 2).unwrap_err();
            assert!(matches!(e, GlobalError::Poisoned(_)), "{bad}: {e}");
        }
        let mut g = global();
        g.targets[0].samples = u32::MAX;
        let e = verify_global(&sign_global(&g, &key), &pk, "lab", [7; 8], 2).unwrap_err();
        assert!(e.to_string().contains("samples, above the limit"), "{e}");
    }
}
