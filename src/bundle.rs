//! The bundle: everything the firmware needs besides the engines (model descriptions, link and
//! ensemble weights, normalisation, scores, reserved schedule and DCTA tables), built on the host,
//! versioned and integrity-checked, loaded at start. Layout: `docs/bundle-format.md`.
//!
//! File = 52-byte header (magic `JLBUNDLE`, format version u32, payload length u64, SHA-256 of the
//! payload) + postcard payload ([`Bundle`]) + an optional 80-byte Ed25519 signature trailer (magic
//! `JLBSIG01`, key id, signature; written and checked by [`crate::signing`]).

use crate::model_set::ModelSet;
use std::path::Path;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::links::{EnsembleSet, LinkSet, MAX_MODELS, TrainOptions};
use crate::manifest::{Manifest, OutputKind};

pub const MAGIC: &[u8; 8] = b"JLBUNDLE";
/// Bump on any change to [`Bundle`] or the types inside it, or to how its weights are read. Version 5
/// added the per-source-set ensemble heads; version 6 sequence output kinds (a kind code 6 followed
/// by its steps and decode); version 7 declared score rules ([`crate::scoring::bundle_code`]);
/// version 8 the staleness weights ([`Bundle::staleness`], after the other fields); version 9 the
/// links from an `argmax` sequence reading each step's class one-hot
/// ([`crate::links::source_input`]; the payload is version 8's, staleness list always present). A
/// bundle is written as the oldest version that holds it: with an `argmax` sequence model as 9;
/// else with staleness weights as 8; else with a declared rule as 7, with a sequence model as 6
/// ([`FORMAT_VERSION_SEQUENCE`]), and otherwise as 5 ([`FORMAT_VERSION_VECTOR`]), byte for byte
/// what those builds wrote; all load, except a bundle of a version before 9 with an `argmax`
/// sequence model, whose links were trained on the scores as emitted (refused: rebuild it).
pub const FORMAT_VERSION: u32 = 9;
/// The version written for bundles with staleness weights and no `argmax` sequence model.
pub const FORMAT_VERSION_STALENESS: u32 = 8;
/// The version written for bundles with a declared score rule and no staleness weights.
pub const FORMAT_VERSION_RULES: u32 = 7;
/// The version written for bundles with a sequence model and no declared score rule.
pub const FORMAT_VERSION_SEQUENCE: u32 = 6;
/// The version written for bundles whose models are all vector kinds judged by their own rule.
pub const FORMAT_VERSION_VECTOR: u32 = 5;
pub const HEADER_LEN: usize = 8 + 4 + 8 + 32;
/// Magic of the signature trailer that follows the payload of a signed bundle.
pub const SIG_MAGIC: &[u8; 8] = b"JLBSIG01";
/// Key id: the first 8 bytes of the SHA-256 of the signer's 32-byte Ed25519 public key.
pub const KEY_ID_LEN: usize = 8;
pub const SIGNATURE_LEN: usize = 64;
/// Signature trailer: magic, key id, Ed25519 signature over every byte of the file before it.
pub const TRAILER_LEN: usize = SIG_MAGIC.len() + KEY_ID_LEN + SIGNATURE_LEN;

/// Why a bundle was rejected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BundleError {
    #[error("truncated: {what}")]
    Truncated { what: String },
    #[error("not a jetlink bundle: magic \"{found}\", expected \"JLBUNDLE\"")]
    BadMagic { found: String },
    #[error(
        "bundle format version {found}, this build reads versions {FORMAT_VERSION_VECTOR} to {FORMAT_VERSION}; rebuild the bundle"
    )]
    Version { found: u32 },
    #[error("corrupted: payload SHA-256 is {actual}, header says {expected}")]
    HashMismatch { expected: String, actual: String },
    #[error("{extra} unexpected bytes after the payload")]
    TrailingBytes { extra: usize },
    #[error("payload does not decode: {0}")]
    Decode(String),
    #[error("payload is inconsistent: {0}")]
    Invalid(String),
    #[error("bundle does not match the manifest: {0}")]
    ModelMismatch(String),
    #[error(
        "not signed: this board loads only bundles signed by key {trusted} (sign with `jetlink sign --key <private key> <bundle>`)"
    )]
    Unsigned { trusted: String },
    #[error("signed by key {found}, but this board trusts only key {trusted} (the board file's bundle-key)")]
    UnknownKey { found: String, trusted: String },
    #[error(
        "signature check failed for key {key}: the bundle was changed after it was signed, or the signature is corrupt"
    )]
    BadSignature { key: String },
    #[error("the board's bundle-key is not a usable Ed25519 public key: {0}")]
    BadTrustedKey(String),
    /// `error` names the file (the input rule's messages do); `path` is kept for callers.
    #[error("{error}")]
    Io { path: String, error: String },
    #[error(
        "rollback refused: bundle version {version} is older than version {highest}, the highest this board has accepted (state file {state}); build and sign the bundle with a higher --bundle-version"
    )]
    Rollback { version: u64, highest: u64, state: String },
    #[error("rollback state file {state}: {error}")]
    State { state: String, error: String },
}

impl BundleError {
    /// Stable reason code, sent as `a` of the `BundleRejected` telemetry event
    /// (`docs/bundle-format.md` lists them).
    pub fn reason_code(&self) -> u32 {
        match self {
            BundleError::Truncated { .. } => 1,
            BundleError::BadMagic { .. } => 2,
            BundleError::Version { .. } => 3,
            BundleError::HashMismatch { .. } => 4,
            BundleError::TrailingBytes { .. } => 5,
            BundleError::Decode(_) => 6,
            BundleError::Invalid(_) => 7,
            BundleError::ModelMismatch(_) => 8,
            BundleError::Unsigned { .. } => 9,
            BundleError::UnknownKey { .. } => 10,
            BundleError::BadSignature { .. } => 11,
            BundleError::BadTrustedKey(_) => 12,
            BundleError::Io { .. } => 13,
            BundleError::Rollback { .. } => 14,
            BundleError::State { .. } => 15,
        }
    }
}

/// The signature trailer of a signed bundle, as found (not yet verified).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignatureTrailer {
    pub key_id: [u8; KEY_ID_LEN],
    pub signature: [u8; SIGNATURE_LEN],
}

/// A bundle file split into its parts by the header alone: nothing in the payload is decoded or
/// trusted yet.
#[derive(Clone, Copy, Debug)]
pub struct Envelope<'a> {
    /// Header and payload (the unsigned bundle).
    pub body: &'a [u8],
    /// The bytes the signature covers: the body, the trailer magic and the key id.
    pub signed: &'a [u8],
    pub trailer: Option<SignatureTrailer>,
}

impl<'a> Envelope<'a> {
    /// Check the header (length, magic, version) and the file length it implies, and find the
    /// signature trailer if there is one.
    pub fn split(b: &'a [u8]) -> Result<Envelope<'a>, BundleError> {
        if b.len() < HEADER_LEN {
            if b.len() >= 8 && &b[..8] != MAGIC {
                return Err(BundleError::BadMagic { found: b[..8].escape_ascii().to_string() });
            }
            return Err(BundleError::Truncated {
                what: format!("{} bytes, shorter than the {HEADER_LEN}-byte header", b.len()),
            });
        }
        if &b[..8] != MAGIC {
            return Err(BundleError::BadMagic { found: b[..8].escape_ascii().to_string() });
        }
        let version = u32::from_le_bytes(b[8..12].try_into().expect("4 bytes"));
        if !(FORMAT_VERSION_VECTOR..=FORMAT_VERSION).contains(&version) {
            return Err(BundleError::Version { found: version });
        }
        let len = u64::from_le_bytes(b[12..20].try_into().expect("8 bytes"));
        let have = (b.len() - HEADER_LEN) as u64;
        if have < len {
            return Err(BundleError::Truncated {
                what: format!("header says {len} payload bytes, file has {have}"),
            });
        }
        // `len <= have`, so it fits a usize.
        let body_len = HEADER_LEN + len as usize;
        let (body, rest) = b.split_at(body_len);
        if rest.is_empty() {
            return Ok(Envelope { body, signed: body, trailer: None });
        }
        let magic_seen = rest.len().min(SIG_MAGIC.len());
        if rest[..magic_seen] != SIG_MAGIC[..magic_seen] {
            return Err(BundleError::TrailingBytes { extra: rest.len() });
        }
        if rest.len() < TRAILER_LEN {
            return Err(BundleError::Truncated {
                what: format!("signature trailer has {} of its {TRAILER_LEN} bytes", rest.len()),
            });
        }
        if rest.len() > TRAILER_LEN {
            return Err(BundleError::TrailingBytes { extra: rest.len() - TRAILER_LEN });
        }
        let k = SIG_MAGIC.len();
        let trailer = SignatureTrailer {
            key_id: rest[k..k + KEY_ID_LEN].try_into().expect("8 bytes"),
            signature: rest[k + KEY_ID_LEN..].try_into().expect("64 bytes"),
        };
        Ok(Envelope { body, signed: &b[..body_len + k + KEY_ID_LEN], trailer: Some(trailer) })
    }
}

/// What the bundle records about one black-box model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelDesc {
    pub name: String,
    #[serde(with = "kind_code")]
    pub kind: OutputKind,
    pub size: u32,
    pub importance: f32,
    /// How its outputs are scored: the tolerance (regression outputs) and the declared rule.
    #[serde(with = "crate::scoring::bundle_code")]
    pub scoring: crate::scoring::Scoring,
    pub memory_bytes: u64,
    pub flops: u64,
    pub latency_us: f64,
    /// ONNX file as named in the manifest (relative to it).
    pub onnx: String,
    pub onnx_sha256: [u8; 32],
    /// SHA-256 of each behaviour-changing manifest field of this model ([`behaviour_digests`]):
    /// the signature covers them, and a manifest that differs in any of them is refused at load.
    pub behaviour: Vec<FieldDigest>,
}

/// The SHA-256 of one manifest field of a model, as the bundle was built for it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldDigest {
    pub field: String,
    pub sha256: [u8; 32],
}

/// Digests of the manifest fields that change what the board does with a model: its kind, output
/// size, importance, tolerance, input shape, view, costs and chosen output. Each field is hashed in its JSON form
/// (`serde_json`, stable for these types), under its manifest name.
pub fn behaviour_digests(m: &crate::manifest::ModelSpec) -> Vec<FieldDigest> {
    let json = |v: serde_json::Result<Vec<u8>>| sha256(&v.expect("manifest fields encode as JSON"));
    // A cost block the manifest does not have is measured where the bundle is used (latency
    // differs from machine to machine): bind its absence, not the figures.
    let cost = if m.cost.origin == crate::manifest::CostOrigin::Manifest {
        json(serde_json::to_vec(&m.cost))
    } else {
        json(serde_json::to_vec("measured"))
    };
    let mut fields: Vec<(&str, [u8; 32])> = vec![
        ("kind", json(serde_json::to_vec(&m.kind))),
        ("size", json(serde_json::to_vec(&m.size))),
        ("importance", json(serde_json::to_vec(&m.importance))),
        ("tolerance", json(serde_json::to_vec(&m.tolerance))),
        ("input_shape", json(serde_json::to_vec(&m.input_shape))),
        ("view", json(serde_json::to_vec(&m.view))),
        ("cost", cost),
    ];
    // `output` is bound when the manifest names one (bundles built before the key existed stay valid
    // for manifests that do not use it; naming an output where the bundle did not is refused).
    if let Some(o) = &m.output {
        fields.push(("output", json(serde_json::to_vec(o))));
    }
    // A sequence's shape, decoding rule and alphabet (bound only for sequence models, so vector
    // bundles keep their digests).
    // A declared score rule (bound only where declared, so other bundles keep their digests).
    if let Some(r) = m.score.filter(|r| *r != crate::scoring::ScoreRule::Tolerance {}) {
        fields.push(("score", json(serde_json::to_vec(&r))));
    }
    if let Some(q) = m.kind.seq() {
        fields.push(("sequence", json(serde_json::to_vec(&(q.steps, q.decode, &m.alphabet)))));
    }
    fields.into_iter().map(|(f, h)| FieldDigest { field: f.to_string(), sha256: h }).collect()
}

impl ModelDesc {
    /// Descriptions of every manifest model, hashing each ONNX file.
    pub fn from_manifest(manifest: &Manifest) -> Result<Vec<ModelDesc>> {
        manifest
            .models
            .iter()
            .map(|m| {
                let path = manifest.path_of(&m.onnx);
                let bytes = match &m.onnx_bytes {
                    Some(b) => b.clone(),
                    None => std::sync::Arc::new(crate::input::read(
                        &path,
                        &format!("model {:?}: ONNX file", m.name),
                        crate::input::limit::MODEL,
                    )?),
                };
                Ok(ModelDesc {
                    name: m.name.clone(),
                    kind: m.kind,
                    size: m.size,
                    importance: m.importance,
                    scoring: m.scoring(),
                    memory_bytes: m.cost.memory_bytes(),
                    flops: m.cost.flops,
                    latency_us: m.cost.latency_us,
                    onnx: m.onnx.clone(),
                    onnx_sha256: sha256(&bytes),
                    behaviour: behaviour_digests(m),
                })
            })
            .collect()
    }
}

/// Which recorded rows the links were trained and scored on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DataSplit {
    /// Frames `< train_end` were eligible; evaluation frames were never read.
    pub train_end: u64,
    pub fit_rows: u32,
    pub holdout_rows: u32,
}

/// Scores in [0, 1] measured on the holdout rows with [`crate::links::agreement`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Scores {
    /// `n × n`, row-major `[target][source]`: score of link source → target alone; 1 on the diagonal.
    pub link: Vec<f32>,
    /// `n × 2^(n−1)`, row-major `[target][slot mask]`: score of target's ensemble given source subset
    /// (slot mask = mask over models with the target's bit removed, see
    /// [`crate::model_set::ModelSet::slots_for`]). Entry 0 is the no-source prediction (the ensemble bias).
    pub subset: Vec<f32>,
    /// `n`: score of the constant predictor (the fit rows' mean target) on the holdout rows, per
    /// target: the floor a score rule gives a link that learnt nothing.
    pub constant: Vec<f32>,
    /// `n × MAX_HOLD_AGE`, `[j * MAX_HOLD_AGE + age - 1]`: agreement of model j's output held
    /// `age` frames with its output now, measured on consecutive training frames
    /// ([`crate::schedule::HoldScores`]); what the loop's holding policies plan with.
    pub hold: Vec<f32>,
}

/// Everything the firmware loads at start besides the engines.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Bundle {
    /// Tool and version that wrote it.
    pub producer: String,
    /// Manifest name.
    pub workload: String,
    /// Release number, monotonic per deployment (`jetlink build --bundle-version`): a board refuses
    /// a bundle older than the highest it has accepted (rollback protection, [`crate::signing`]).
    pub version: u64,
    pub models: Vec<ModelDesc>,
    /// Training settings, including the hidden width rule.
    pub settings: TrainOptions,
    pub split: DataSplit,
    pub links: LinkSet,
    pub ensembles: EnsembleSet,
    pub scores: Scores,
    /// Reserved: postcard-encoded schedule table (scheduler issue).
    pub schedule: Option<Vec<u8>>,
    /// Reserved: postcard-encoded DCTA policy table (adaptation-allocation issue).
    pub dcta: Option<Vec<u8>>,
    /// Per model, the staleness model's weights fitted at `build`
    /// ([`crate::control::refresh::fit`], [`crate::control::refresh::FEATURES`] each); empty in
    /// bundles before format 8. Written after the payload's other fields (format 8), so that the
    /// payload of an older format decodes as it always did.
    #[serde(skip)]
    pub staleness: Vec<[f32; crate::control::refresh::FEATURES]>,
}

impl Bundle {
    pub fn n_models(&self) -> usize {
        self.models.len()
    }

    pub fn sizes(&self) -> Vec<usize> {
        self.models.iter().map(|m| m.size as usize).collect()
    }

    /// The layout of one row of every model's output, in bundle order.
    pub fn layout(&self) -> crate::row::RowLayout {
        crate::row::RowLayout::new(self.models.iter().map(|m| m.size as usize))
    }

    /// Whether a model's output is an `argmax` sequence (what format 9 changed the reading of).
    fn has_argmax_sequence(&self) -> bool {
        self.models
            .iter()
            .any(|m| m.kind.seq().is_some_and(|q| q.decode == crate::manifest::SeqDecode::Argmax))
    }

    /// Score of link `source → target` alone.
    pub fn link_score(&self, source: usize, target: usize) -> f32 {
        self.scores.link[target * self.n_models() + source]
    }

    /// Score of `target`'s ensemble when the models in `active` (mask over models; the target's own
    /// bit is ignored) are the sources.
    pub fn subset_score(&self, target: usize, active: ModelSet) -> f32 {
        let k = self.n_models() - 1;
        self.scores.subset[(target << k) + active.slots_for(target).index()]
    }

    /// Score of `target`'s ensemble from all other models.
    pub fn ensemble_score(&self, target: usize) -> f32 {
        self.subset_score(target, ModelSet::all(self.n_models()))
    }

    /// Serialise to the file layout (header + payload).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut payload = postcard::to_stdvec(self).context("encoding bundle payload")?;
        if !self.staleness.is_empty() || self.has_argmax_sequence() {
            payload.extend(postcard::to_stdvec(&self.staleness).context("encoding staleness weights")?);
        }
        let mut b = Vec::with_capacity(HEADER_LEN + payload.len());
        b.extend_from_slice(MAGIC);
        let seq = self.models.iter().any(|m| m.kind.seq().is_some());
        let rule = self.models.iter().any(|m| m.scoring.declared());
        let version = match (rule, seq) {
            _ if self.has_argmax_sequence() => FORMAT_VERSION,
            _ if !self.staleness.is_empty() => FORMAT_VERSION_STALENESS,
            (true, _) => FORMAT_VERSION_RULES,
            (false, true) => FORMAT_VERSION_SEQUENCE,
            (false, false) => FORMAT_VERSION_VECTOR,
        };
        b.extend_from_slice(&version.to_le_bytes());
        b.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        b.extend_from_slice(&sha256(&payload));
        b.extend_from_slice(&payload);
        Ok(b)
    }

    /// Parse and check a bundle file's bytes: header, length, hash, decoding, internal consistency.
    /// A signature trailer is allowed but not checked (host tools); the firmware loads bundles
    /// with [`crate::signing::load_trusted`], which requires and checks it first.
    pub fn from_bytes(b: &[u8]) -> Result<Bundle, BundleError> {
        Bundle::from_body(Envelope::split(b)?.body)
    }

    /// Hash, decode and check the header + payload of an [`Envelope`] (header already checked).
    pub(crate) fn from_body(body: &[u8]) -> Result<Bundle, BundleError> {
        let payload = &body[HEADER_LEN..];
        let actual = sha256(payload);
        if actual[..] != body[20..52] {
            return Err(BundleError::HashMismatch { expected: hex(&body[20..52]), actual: hex(&actual) });
        }
        // The payload's hash matched: not damage, most likely another version's layout.
        let decode = |e: postcard::Error| {
            BundleError::Decode(format!(
                "{} (its hash matches: written by another version of jetlink?)",
                crate::binfile::postcard_error(&e)
            ))
        };
        let (mut bundle, rest): (Bundle, &[u8]) = postcard::take_from_bytes(payload).map_err(decode)?;
        let version = u32::from_le_bytes(body[8..12].try_into().expect("4 bytes"));
        if version >= FORMAT_VERSION_STALENESS {
            let what = |e: String| BundleError::Decode(format!("staleness weights after the payload: {e}"));
            let (w, extra): (Vec<_>, &[u8]) =
                postcard::take_from_bytes(rest).map_err(|e| what(crate::binfile::postcard_error(&e)))?;
            if !extra.is_empty() {
                return Err(what(format!("{} unexpected bytes after them", extra.len())));
            }
            bundle.staleness = w;
        } else if !rest.is_empty() {
            // Nothing follows the fields of formats 5 to 7: bytes there (under a valid hash) are
            // refused, not ignored.
            return Err(BundleError::Decode(format!(
                "{} unexpected bytes after the payload's fields (format {version})",
                rest.len()
            )));
        }
        if version < FORMAT_VERSION && bundle.has_argmax_sequence() {
            return Err(BundleError::Invalid(format!(
                "an argmax sequence model in a format {version} bundle: its links were trained on the \
                 scores as emitted, and since format {FORMAT_VERSION} they read each step's class; rebuild \
                 the bundle"
            )));
        }
        if version < FORMAT_VERSION_RULES && bundle.models.iter().any(|m| m.scoring.declared()) {
            return Err(BundleError::Invalid(format!(
                "a declared score rule in a format {version} bundle (rules came with format {FORMAT_VERSION_RULES})"
            )));
        }
        bundle.validate().map_err(BundleError::Invalid)?;
        Ok(bundle)
    }

    /// Structural checks (sizes of every table); a bundle that passes cannot make the predictor index
    /// out of bounds.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.n_models();
        if !(2..=MAX_MODELS).contains(&n) {
            return Err(format!("{n} models, expected 2..={MAX_MODELS}"));
        }
        let sizes = self.sizes();
        if sizes.contains(&0) {
            return Err("a model has output size 0".into());
        }
        self.links.validate(&sizes)?;
        self.ensembles.validate(&sizes)?;
        if self.scores.link.len() != n * n {
            return Err(format!("{} link scores, expected {}", self.scores.link.len(), n * n));
        }
        if self.scores.subset.len() != n << (n - 1) {
            return Err(format!("{} subset scores, expected {}", self.scores.subset.len(), n << (n - 1)));
        }
        if self.scores.constant.len() != n {
            return Err(format!("{} constant scores, expected {n}", self.scores.constant.len()));
        }
        let ages = crate::schedule::MAX_HOLD_AGE;
        if self.scores.hold.len() != n * ages {
            return Err(format!("{} hold scores, expected {}", self.scores.hold.len(), n * ages));
        }
        if self.scores.hold.iter().any(|x| !(0.0..=1.0).contains(x)) {
            return Err("hold scores must lie in [0, 1]".into());
        }
        if !self.staleness.is_empty() && self.staleness.len() != n {
            return Err(format!("{} rows of staleness weights, expected {n} or none", self.staleness.len()));
        }
        if let Some(k) = crate::links::first_non_finite(self.staleness.as_flattened()) {
            return Err(format!("staleness weight {k} is not finite"));
        }
        // The precomputed tables decode (and the DCTA one is consistent), so that a damaged one is
        // refused with the bundle, not found later by the loop.
        if let Some(d) = &self.dcta {
            crate::dcta::PolicyTable::from_postcard(d)
                .map_err(|e| format!("the DCTA table does not decode: {e}"))?;
        }
        if let Some(t) = &self.schedule {
            crate::binfile::decode_whole::<crate::schedule::ScheduleTable>(t)
                .map_err(|e| format!("the schedule table does not decode: {e}"))?;
        }
        let s = &self.scores;
        for (what, xs) in [("link", &s.link), ("subset", &s.subset), ("constant", &s.constant)] {
            if let Some(k) = crate::links::first_non_finite(xs) {
                return Err(format!("{what} score {k} is {}, not finite", xs[k]));
            }
        }
        for m in &self.models {
            let tol = m.scoring.tolerance;
            if !(m.importance.is_finite() && tol.is_finite() && m.latency_us.is_finite()) {
                return Err(format!(
                    "model {:?}: importance {}, tolerance {tol}, latency_us {}: each must be finite",
                    m.name, m.importance, m.latency_us
                ));
            }
            if tol <= 0.0 {
                return Err(format!("model {:?}: tolerance {tol} must be > 0", m.name));
            }
            if let Err(e) = m.scoring.rule.check(m.kind, m.size) {
                return Err(format!("model {:?}: {e}", m.name));
            }
        }
        Ok(())
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let b = self.to_bytes()?;
        crate::atomic::write_file(path, &b).with_context(|| format!("writing bundle {}", path.display()))
    }

    /// Load and check a bundle file.
    pub fn load(path: &Path) -> Result<Bundle> {
        let b = crate::input::read(path, "bundle", crate::input::limit::BUNDLE)?;
        Bundle::from_bytes(&b).with_context(|| format!("loading bundle {}", path.display()))
    }

    /// Load a bundle and check it was built for `manifest` (names, kinds, sizes, ONNX file hashes).
    pub fn load_for(path: &Path, manifest: &Manifest) -> Result<Bundle> {
        let bundle = Bundle::load(path)?;
        bundle.check_manifest(manifest).with_context(|| format!("loading bundle {}", path.display()))?;
        Ok(bundle)
    }

    /// Reject a bundle whose models differ from the manifest's (order, name, kind, size, ONNX hash).
    pub fn check_manifest(&self, manifest: &Manifest) -> Result<(), BundleError> {
        let mm = BundleError::ModelMismatch;
        if self.models.len() != manifest.models.len() {
            return Err(mm(format!(
                "bundle has {} models, manifest {:?} has {}",
                self.models.len(),
                manifest.name,
                manifest.models.len()
            )));
        }
        for (i, (b, m)) in self.models.iter().zip(&manifest.models).enumerate() {
            if b.name != m.name {
                return Err(mm(format!(
                    "model {i} is {:?} in the bundle, {:?} in the manifest",
                    b.name, m.name
                )));
            }
            if b.kind != m.kind || b.size != m.size {
                return Err(mm(format!(
                    "model {:?} is {} of size {} in the bundle, {} of size {} in the manifest",
                    b.name,
                    b.kind.name(),
                    b.size,
                    m.kind.name(),
                    m.size
                )));
            }
            let want = behaviour_digests(m);
            for f in &b.behaviour {
                match want.iter().find(|w| w.field == f.field) {
                    Some(w) if w.sha256 == f.sha256 => {}
                    Some(_) => {
                        return Err(mm(format!(
                            "model {:?}: manifest field {:?} differs from the one the bundle was built and signed for (SHA-256 {} in the bundle); rebuild and sign the bundle for this manifest",
                            b.name,
                            f.field,
                            hex(&f.sha256)
                        )));
                    }
                    None => {
                        return Err(mm(format!(
                            "model {:?}: the bundle binds field {:?}, which this manifest does not set; rebuild and sign the bundle for this manifest",
                            b.name, f.field
                        )));
                    }
                }
            }
            if let Some(w) = want.iter().find(|w| !b.behaviour.iter().any(|f| f.field == w.field)) {
                return Err(mm(format!(
                    "model {:?}: manifest field {:?} is not bound by the bundle; rebuild and sign the bundle",
                    b.name, w.field
                )));
            }
            // The bytes the engine will load: pinned in memory by `Manifest::pin_onnx` (the firmware
            // does this, so that what is hashed here is what the engine parses), else read now.
            let path = manifest.path_of(&m.onnx);
            let read;
            let bytes: &[u8] = match &m.onnx_bytes {
                Some(pinned) => pinned,
                None => {
                    read = crate::input::read(
                        &path,
                        &format!("model {:?}: ONNX file", b.name),
                        crate::input::limit::MODEL,
                    )
                    .map_err(|e| mm(format!("{e:#}")))?;
                    &read
                }
            };
            let h = sha256(bytes);
            if h != b.onnx_sha256 {
                return Err(mm(format!(
                    "model {:?}: ONNX file {} has SHA-256 {}, the bundle was built for {}",
                    b.name,
                    path.display(),
                    hex(&h),
                    hex(&b.onnx_sha256)
                )));
            }
        }
        Ok(())
    }
}

pub fn sha256(b: &[u8]) -> [u8; 32] {
    Sha256::digest(b).into()
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `OutputKind` on the wire as its stable one-byte code, independent of enum order; a sequence's
/// code is followed by its steps (u32) and decode code (u8). Vector kinds encode exactly as in
/// format versions 4 and 5.
mod kind_code {
    use serde::de::{Error, SeqAccess, Visitor};
    use serde::ser::SerializeTuple;
    use serde::{Deserializer, Serializer};

    use crate::manifest::{OutputKind, SEQUENCE_CODE, SeqDecode};

    pub fn serialize<S: Serializer>(k: &OutputKind, s: S) -> Result<S::Ok, S::Error> {
        match k.seq() {
            None => {
                let mut t = s.serialize_tuple(1)?;
                t.serialize_element(&k.code())?;
                t.end()
            }
            Some(q) => {
                let mut t = s.serialize_tuple(3)?;
                t.serialize_element(&k.code())?;
                t.serialize_element(&q.steps)?;
                t.serialize_element(&q.decode.code())?;
                t.end()
            }
        }
    }

    struct KindVisitor;
    impl<'de> Visitor<'de> for KindVisitor {
        type Value = OutputKind;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an output kind code (and a sequence's steps and decode)")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<OutputKind, A::Error> {
            let c: u8 = a.next_element()?.ok_or_else(|| A::Error::custom("missing output kind code"))?;
            if c != SEQUENCE_CODE {
                return OutputKind::from_code(c)
                    .ok_or_else(|| A::Error::custom(format!("unknown output kind code {c}")));
            }
            let steps: u32 =
                a.next_element()?.ok_or_else(|| A::Error::custom("sequence kind without steps"))?;
            let d: u8 = a.next_element()?.ok_or_else(|| A::Error::custom("sequence kind without decode"))?;
            let decode = SeqDecode::from_code(d)
                .ok_or_else(|| A::Error::custom(format!("unknown sequence decode code {d}")))?;
            if steps == 0 || steps > crate::manifest::MAX_STEPS {
                return Err(A::Error::custom(format!("sequence steps {steps} out of range")));
            }
            Ok(OutputKind::Sequence(crate::manifest::SeqShape { steps, decode }))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<OutputKind, D::Error> {
        d.deserialize_tuple(3, KindVisitor)
    }
}

impl crate::links::LinkModel for Bundle {
    fn kinds(&self) -> Vec<crate::manifest::OutputKind> {
        self.models.iter().map(|m| m.kind).collect()
    }
    fn scorings(&self) -> Vec<crate::scoring::Scoring> {
        self.models.iter().map(|m| m.scoring).collect()
    }
    fn layout(&self) -> crate::row::RowLayout {
        Bundle::layout(self)
    }
    fn link_set(&self) -> &LinkSet {
        &self.links
    }
    fn ensemble_set(&self) -> &EnsembleSet {
        &self.ensembles
    }
    fn train_options(&self) -> &TrainOptions {
        &self.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{SeqDecode, SeqShape};

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct K(#[serde(with = "kind_code")] OutputKind, u8);

    #[test]
    fn kinds_encode_as_their_code_and_a_sequence_adds_its_shape() {
        // Vector kinds: one byte, as in format versions 4 and 5.
        assert_eq!(postcard::to_stdvec(&K(OutputKind::Box, 7)).unwrap(), [5, 7]);
        let q = OutputKind::Sequence(SeqShape { steps: 38, decode: SeqDecode::Argmax });
        let b = postcard::to_stdvec(&K(q, 7)).unwrap();
        assert_eq!(b, [6, 38, 1, 7]);
        assert_eq!(postcard::from_bytes::<K>(&b).unwrap(), K(q, 7));
        assert_eq!(postcard::from_bytes::<K>(&[5, 7]).unwrap(), K(OutputKind::Box, 7));
        assert!(postcard::from_bytes::<K>(&[6, 0, 1, 7]).unwrap_err().to_string().len() > 0);
        assert!(postcard::from_bytes::<K>(&[9, 7]).is_err());
    }
}
