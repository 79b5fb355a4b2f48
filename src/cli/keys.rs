//! `jetlink keygen` and `jetlink sign`: Ed25519 keys and bundle signatures.

use super::*;

#[derive(clap::Args)]
pub(crate) struct KeygenArgs {
    /// Private key file to create (PKCS#8 PEM); never overwritten.
    #[arg(long, short)]
    pub(crate) out: PathBuf,
}

#[derive(clap::Args)]
pub(crate) struct SignArgs {
    /// Private key file (from `jetlink keygen`).
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// The bundle to sign.
    pub(crate) bundle: PathBuf,
    /// Write the signed bundle here instead of replacing the input.
    #[arg(long, short)]
    pub(crate) out: Option<PathBuf>,
    /// Replace an existing output that is not of this kind (never a device or a FIFO).
    #[arg(long)]
    pub(crate) force: bool,
}

pub(crate) fn keygen(a: &KeygenArgs) -> Result<()> {
    if let Some(d) = a.out.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
        bail!("--out {}: the folder {} does not exist", a.out.display(), d.display());
    }
    let key = jetlink::signing::generate_key()?;
    jetlink::signing::write_private_key(&a.out, &key)?;
    let public = key.verifying_key().to_bytes();
    eprintln!(
        "wrote the private key to {} (mode 0600; keep it off the board and out of the repository); key id {}",
        a.out.display(),
        jetlink::bundle::hex(&jetlink::signing::key_id(&public))
    );
    eprintln!("public key, for the board file: bundle-key = \"{}\"", jetlink::bundle::hex(&public));
    println!("{}", jetlink::bundle::hex(&public));
    Ok(())
}

pub(crate) fn sign(a: &SignArgs) -> Result<()> {
    let key = jetlink::signing::read_private_key(&a.key)?;
    let bytes = jetlink::input::read(&a.bundle, "bundle", jetlink::input::limit::BUNDLE)?;
    let signed = jetlink::signing::sign_bundle(&bytes, &key)
        .with_context(|| format!("{}: not a valid bundle, not signing it", a.bundle.display()))?;
    let out = a.out.as_ref().unwrap_or(&a.bundle);
    // Written beside the target and renamed, so that an interrupted sign never leaves half a bundle.
    let what = if a.out.is_some() { "--out" } else { "bundle (signed in place)" };
    // The bundle may be replaced by its own signed copy (in place, or --out naming it); every
    // other input (the key) stays protected.
    jetlink::input::release(&a.bundle);
    jetlink::output::write(out, what, jetlink::output::Kind::Bundle, a.force, &signed)?;
    let public = key.verifying_key().to_bytes();
    println!(
        "signed {} ({} bytes) with key {} (public {})",
        out.display(),
        signed.len(),
        jetlink::bundle::hex(&jetlink::signing::key_id(&public)),
        jetlink::bundle::hex(&public)
    );
    let board = jetlink::board::current();
    if public != board.bundle_key {
        println!("note: board {} trusts another key; it will refuse this bundle", board.name);
    }
    Ok(())
}
