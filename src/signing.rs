//! Signed bundles. The host signs a bundle with an Ed25519 private key (`jetlink keygen`, `jetlink
//! sign`, `jetlink build --key`); the firmware loads only bundles signed by the key whose public half
//! the board file names (`bundle-key`, compiled in). The signature trailer and the order of the
//! checks are in `docs/bundle-format.md`.
//!
//! [`load_trusted`] checks the header, then the signature, and only then hashes, decodes and checks
//! the payload: a bundle that is unsigned, signed by another key, changed after signing (any byte),
//! truncated, of another format version or built for other models is refused before anything in
//! it is decoded or loaded. A running loop that is handed a refused bundle keeps the one it has
//! ([`reload`]), and says so on the serial line (`BundleRejected`, a = the reason code).

use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

use crate::board::Board;
use crate::bundle::{
    Bundle, BundleError, Envelope, KEY_ID_LEN, SIG_MAGIC, SIGNATURE_LEN, TRAILER_LEN, hex, sha256,
};
use crate::manifest::Manifest;
use crate::wire::{Event, EventKind, Message, TelemetryWriter};

/// The demo key pair's public half (`demo/keys/`; its private half is committed, so it protects
/// nothing: for the simulated board and tests only).
pub const DEMO_PUBLIC_KEY: &str = "ddf65dbfb4b7e99f1da38cfcbc3d87587c3be1305693968b92c0a5c36b930526";

/// Key id of a public key: the first 8 bytes of its SHA-256.
pub fn key_id(public: &[u8; 32]) -> [u8; KEY_ID_LEN] {
    sha256(public)[..KEY_ID_LEN].try_into().expect("8 bytes")
}

/// A public key from 64 hex digits; the error says what is wrong.
pub fn parse_public_key(text: &str) -> Result<[u8; 32], String> {
    let t = text.trim();
    if t.len() != 64 || !t.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("{t:?} is not an Ed25519 public key (64 hex digits)"));
    }
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("hex digits");
    }
    let vk = VerifyingKey::from_bytes(&k).map_err(|e| format!("{t}: not a point on Ed25519: {e}"))?;
    // A small-order point (all zeros is one) is no one's key: verify_strict refuses every
    // signature under it, so trusting it would refuse every bundle with a misleading error.
    if vk.is_weak() {
        return Err(format!("{t}: a small-order point, not a usable Ed25519 public key"));
    }
    Ok(k)
}

/// Refuse a board whose compiled-in bundle-key is not a usable Ed25519 key. `build.rs` checks the
/// board file's key for its form (64 hex digits), not for the point (it has no Ed25519): a
/// small-order point would refuse every bundle with a signature error that hides the cause.
pub fn check_board_key(board: &Board) -> Result<()> {
    parse_public_key(&crate::bundle::hex(&board.bundle_key)).map(|_| ()).map_err(|e| {
        anyhow::anyhow!(
            "board {}'s bundle-key (boards/{}.toml, or JETLINK_BUNDLE_KEY at build time): {e}",
            board.name,
            board.name
        )
    })
}

/// A new private key from the operating system's random source.
pub fn generate_key() -> Result<SigningKey> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("reading the system random source: {e}"))?;
    let key = SigningKey::from_bytes(&seed);
    seed.fill(0);
    Ok(key)
}

/// Write `key` as a PKCS#8 PEM file (`openssl pkey` reads it), readable by its owner only. Refuses
/// to overwrite an existing file.
pub fn write_private_key(path: &Path, key: &SigningKey) -> Result<()> {
    // PKCS#8 v1 (the private key alone), the form `openssl genpkey -algorithm ed25519` writes and reads.
    let v1 = ed25519_dalek::pkcs8::KeypairBytes { secret_key: key.to_bytes(), public_key: None };
    let pem = v1.to_pkcs8_pem(LineEnding::LF).map_err(|e| anyhow::anyhow!("encoding the key: {e}"))?;
    // Written whole or not at all (temporary file, fsync, link), so a failed write never leaves an
    // empty key that blocks the next try.
    crate::atomic::create_new(path, pem.as_bytes(), 0o600).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            match std::fs::symlink_metadata(path) {
                Ok(m) if !m.file_type().is_file() => anyhow::anyhow!(
                    "--out {} is {}, not a new key file's path",
                    path.display(),
                    crate::input::kind(m.file_type())
                ),
                _ => anyhow::anyhow!("--out {}: the file exists; not overwriting a key", path.display()),
            }
        } else {
            anyhow::anyhow!("--out {}: cannot create the key file: {e}", path.display())
        }
    })?;
    Ok(())
}

/// Read a private key written by [`write_private_key`] (or `openssl genpkey -algorithm ed25519`).
pub fn read_private_key(path: &Path) -> Result<SigningKey> {
    let text = crate::input::read_to_string(path, "--key private key file", crate::input::limit::TEXT)?;
    if !text.contains("-----BEGIN PRIVATE KEY-----") {
        bail!(
            "--key {}: not a PKCS#8 PEM private key (expected `-----BEGIN PRIVATE KEY-----`; make one with `jetlink keygen`)",
            path.display()
        );
    }
    SigningKey::from_pkcs8_pem(&text)
        .map_err(|e| anyhow::anyhow!("--key {}: not an Ed25519 private key: {e}", path.display()))
}

/// Sign a bundle file's bytes: check that it is a valid bundle, drop any signature it has, and
/// append the trailer (magic, key id, signature over everything before the signature).
pub fn sign_bundle(bytes: &[u8], key: &SigningKey) -> Result<Vec<u8>, BundleError> {
    let env = Envelope::split(bytes)?;
    Bundle::from_bytes(env.body)?;
    let public = key.verifying_key().to_bytes();
    let mut out = Vec::with_capacity(env.body.len() + TRAILER_LEN);
    out.extend_from_slice(env.body);
    out.extend_from_slice(SIG_MAGIC);
    out.extend_from_slice(&key_id(&public));
    let sig = key.sign(&out);
    out.extend_from_slice(&sig.to_bytes());
    debug_assert_eq!(out.len(), env.body.len() + TRAILER_LEN);
    Ok(out)
}

/// Check a bundle file's header and its signature by `trusted` (nothing in the payload is decoded).
pub fn verify<'a>(bytes: &'a [u8], trusted: &[u8; 32]) -> Result<Envelope<'a>, BundleError> {
    let env = Envelope::split(bytes)?;
    let trusted_id = hex(&key_id(trusted));
    let Some(t) = env.trailer else { return Err(BundleError::Unsigned { trusted: trusted_id }) };
    if t.key_id != key_id(trusted) {
        return Err(BundleError::UnknownKey { found: hex(&t.key_id), trusted: trusted_id });
    }
    let vk = VerifyingKey::from_bytes(trusted).map_err(|e| BundleError::BadTrustedKey(e.to_string()))?;
    let sig = Signature::from_bytes(&t.signature);
    vk.verify_strict(env.signed, &sig).map_err(|_| BundleError::BadSignature { key: trusted_id })?;
    debug_assert_eq!(t.signature.len(), SIGNATURE_LEN);
    Ok(env)
}

/// Verify the signature by `trusted`, then hash, decode and check the payload.
pub fn from_bytes_trusted(bytes: &[u8], trusted: &[u8; 32]) -> Result<Bundle, BundleError> {
    let env = verify(bytes, trusted)?;
    Bundle::from_body(env.body)
}

/// The firmware's load: read `path`, verify it against the board's `bundle-key`, decode it and check
/// it was built for `manifest`. Nothing is decoded before the signature checks out.
pub fn load_trusted(path: &Path, manifest: &Manifest, board: &Board) -> Result<Bundle, BundleError> {
    let bytes = crate::input::read(path, "bundle", crate::input::limit::BUNDLE)
        .map_err(|e| BundleError::Io { path: path.display().to_string(), error: format!("{e:#}") })?;
    let bundle = from_bytes_trusted(&bytes, &board.bundle_key)?;
    bundle.check_manifest(manifest)?;
    Ok(bundle)
}

/// Send the `BundleRejected` event for `err` (a = its reason code, b = 0) at `tick`.
pub fn report_rejection<W: embedded_io::Write>(
    writer: &mut TelemetryWriter<W>,
    tick: u32,
    err: &BundleError,
) {
    let kind = EventKind::BundleRejected { reason: err.reason_code(), unused: 0 };
    let _ = writer.send(&Message::Event(Event::new(tick, kind)));
}

/// Rollback protection: the file (the board's `state-file`) that holds the highest bundle version
/// this board has accepted. A bundle older than that is refused ([`BundleError::Rollback`], reason
/// code 14); a newer one raises it. The file is written atomically (temporary file, fsync, rename).
///
/// The same rule keeps the highest fleet global-links version a board accepted
/// ([`RollbackState::for_fleet`]), so a replayed older update is refused after a restart too.
#[derive(Clone, Debug)]
pub struct RollbackState {
    path: PathBuf,
    prefix: &'static str,
}

const STATE_PREFIX: &str = "jetlink-bundle-version ";
const FLEET_STATE_PREFIX: &str = "jetlink-fleet-version ";

impl RollbackState {
    pub fn new(path: impl Into<PathBuf>) -> RollbackState {
        RollbackState { path: path.into(), prefix: STATE_PREFIX }
    }

    /// The state of fleet `fleet`'s global links beside this (bundle) state file:
    /// `<state-file>.fleet-<fleet>`, holding `jetlink-fleet-version N`.
    pub fn for_fleet(&self, fleet: &str) -> RollbackState {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".fleet-{fleet}"));
        RollbackState { path: p.into(), prefix: FLEET_STATE_PREFIX }
    }

    /// The board's own state file.
    pub fn for_board(board: &Board) -> RollbackState {
        RollbackState::new(board.state_file)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self, error: impl std::fmt::Display) -> BundleError {
        BundleError::State { state: self.path.display().to_string(), error: error.to_string() }
    }

    /// The highest version accepted so far; 0 when the file does not exist yet (first boot). A file
    /// that exists but does not parse is an error: the board refuses to guess.
    pub fn highest(&self) -> Result<u64, BundleError> {
        self.refuse_link()?;
        if !self.path.exists() && std::fs::symlink_metadata(&self.path).is_err() {
            return Ok(0);
        }
        let text = match crate::input::read_to_string(&self.path, "state file", crate::input::limit::TEXT) {
            Ok(t) => t,
            Err(e) => return Err(self.err(format!("cannot read it: {e:#}"))),
        };
        // Digits only: `u64::from_str` would also take `+1`.
        let digits = |v: &str| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit());
        let value = text.trim_end().strip_prefix(self.prefix).filter(|v| digits(v));
        if let Some(v) = value.filter(|v| v.parse::<u64>().is_err()) {
            let shown: String = v.chars().take(32).collect();
            return Err(self.err(format!(
                "version {shown}{} is above the largest, 2^64 − 1",
                if v.len() > 32 { "…" } else { "" }
            )));
        }
        value.and_then(|v| v.parse::<u64>().ok()).ok_or_else(|| {
            // At most the first 64 characters of what is there: the file may be anything.
            let shown: String = text.chars().take(64).collect();
            let more = if text.chars().count() > 64 { " …" } else { "" };
            self.err(format!("not a jetlink state file (expected `{}N`, found {shown:?}{more})", self.prefix))
        })
    }

    /// A state file that is a symbolic link is refused, as every output is (`output::check_replace`):
    /// its atomic write would replace the link with a file and leave the file it points to behind,
    /// splitting the board's rollback state in two.
    fn refuse_link(&self) -> Result<(), BundleError> {
        if let Some((a, k)) = crate::output::non_folder_above(&self.path) {
            return Err(self.err(format!("{} is {k}, not a folder", a.display())));
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(md) if md.file_type().is_symlink() => Err(self.err(
                "is a symbolic link; refusing to read or write the state through it (give the path of \
                 the file it points to)",
            )),
            _ => Ok(()),
        }
    }

    /// The exclusive lock on `<state file>.lock`, held while the version is read and raised. An
    /// existing lock file is opened read-only (a lock needs no write access: one left by another
    /// user still works), not followed through a link and not waited on as a FIFO; a missing one is
    /// created.
    fn lock(&self) -> Result<std::fs::File, BundleError> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut p = self.path.clone().into_os_string();
        p.push(".lock");
        let p = PathBuf::from(p);
        let flags = libc::O_NOFOLLOW | libc::O_NONBLOCK;
        let f = match std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&p) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(flags)
                .open(&p)
                // Created by another run meanwhile: open that one.
                .or_else(|_| std::fs::OpenOptions::new().read(true).custom_flags(flags).open(&p)),
            r => r,
        }
        .map_err(|e| self.err(format!("opening its lock file {}: {e}", p.display())))?;
        let md = f.metadata().map_err(|e| self.err(format!("{}: {e}", p.display())))?;
        if !md.is_file() {
            return Err(self.err(format!(
                "its lock file {} is {}, not a regular file",
                p.display(),
                crate::input::kind(md.file_type())
            )));
        }
        // A file system without locks (some network or container mounts): the state is still
        // written atomically, only a second process sharing it is not excluded; said, not fatal.
        if let Err(e) = f.lock() {
            log::warn!(
                "rollback state {}: cannot lock {} ({e}); kept without the lock",
                self.path.display(),
                p.display()
            );
        }
        Ok(f)
    }

    /// Refuse `bundle` if it is older than the highest version accepted.
    pub fn check(&self, bundle: &Bundle) -> Result<(), BundleError> {
        let highest = self.highest()?;
        if bundle.version < highest {
            return Err(BundleError::Rollback {
                version: bundle.version,
                highest,
                state: self.path.display().to_string(),
            });
        }
        Ok(())
    }

    /// Record that `bundle` was accepted (only ever raises the stored version).
    pub fn accept(&self, bundle: &Bundle) -> Result<(), BundleError> {
        self.accept_version(bundle.version)
    }

    /// Record that `version` was accepted: it raises the stored version, and one below it is refused
    /// as a rollback ([`check`](Self::check) said so first, unless another run raised it since). The read and the
    /// write happen under an exclusive lock on `<state file>.lock` (kept beside it), so that two
    /// runs sharing a state file cannot lower it: without it, one could read 0, the other write 2,
    /// and the first then write 1 over it.
    pub fn accept_version(&self, version: u64) -> Result<(), BundleError> {
        // `highest` checks the path too (no link, no file in the way of its folder).
        if version == self.highest()? {
            return Ok(());
        }
        if let Some(d) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(d).map_err(|e| self.err(format!("creating {}: {e}", d.display())))?;
        }
        let lock = self.lock()?;
        // Under the lock: another run may have raised it since this one was checked; then this
        // version is a rollback after all.
        let highest = self.highest()?;
        if version < highest && self.prefix == FLEET_STATE_PREFIX {
            return Err(self.err(format!(
                "global links version {version} is older than version {highest}, accepted meanwhile by \
                 another process sharing this state file"
            )));
        }
        if version < highest {
            return Err(BundleError::Rollback { version, highest, state: self.path.display().to_string() });
        }
        if version == highest {
            return Ok(());
        }
        let written = crate::atomic::write_file(&self.path, format!("{}{version}\n", self.prefix).as_bytes())
            .map_err(|e| self.err(format!("cannot write it: {e}")));
        drop(lock);
        written
    }
}

/// [`load_trusted`], then rollback protection: refuse a bundle older than the highest version the
/// board has accepted, and record this one's version.
pub fn load_trusted_versioned(
    path: &Path,
    manifest: &Manifest,
    board: &Board,
    state: &RollbackState,
) -> Result<Bundle, BundleError> {
    let bundle = load_trusted(path, manifest, board)?;
    state.check(&bundle)?;
    state.accept(&bundle)?;
    Ok(bundle)
}
