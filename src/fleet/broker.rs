//! The MQTT side shared by boards, the aggregator and `jetlink fleet status`: client options from a
//! [`FleetConfig`] (TCP or TLS with rustls and the `ring` provider, username and password, client
//! certificates), and [`Mosquitto`], a broker process on a loopback port for tests and the bench.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rumqttc::{MqttOptions, TlsConfiguration, Transport};

use super::FleetConfig;

/// Largest message either side accepts: a full link update of a large bundle.
pub const MAX_PACKET: usize = 64 << 20;

/// MQTT options for `client_id` (clean session: the client resends what it keeps itself).
pub fn mqtt_options(cfg: &FleetConfig, client_id: &str) -> Result<MqttOptions> {
    let mut o = MqttOptions::new(client_id, cfg.host.clone(), cfg.port);
    o.set_keep_alive(cfg.keep_alive.max(Duration::from_secs(1)));
    o.set_max_packet_size(MAX_PACKET, MAX_PACKET);
    o.set_clean_session(true);
    o.set_request_channel_capacity(1024);
    o.set_inflight(64);
    if let Some(u) = &cfg.username {
        o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
    }
    match (&cfg.ca, &cfg.client_cert, &cfg.client_key) {
        (None, None, None) => {}
        (None, _, _) => bail!("--cert/--client-key need --ca (TLS to the broker)"),
        (Some(ca), cert, key) => {
            // The process-wide rustls provider: ring (an error means one is installed already).
            // rustls marks it deprecated for lacking post-quantum key exchange; the alternative,
            // aws-lc-rs, needs cmake and a C toolchain per target, which the board builds avoid.
            #[allow(deprecated)]
            let _ = rustls::crypto::ring::default_provider().install_default();
            let read = |p: &Path, what: &str| crate::input::read(p, what, crate::input::limit::TEXT);
            let ca_path = ca;
            let ca = read(ca, "--ca")?;
            check_pem_certificates(&ca, "--ca", ca_path)?;
            let client_auth = match (cert, key) {
                (Some(c), Some(k)) => {
                    let (cb, kb) = (read(c, "--cert")?, read(k, "--client-key")?);
                    check_pem_certificates(&cb, "--cert", c)?;
                    use rustls::pki_types::{PrivateKeyDer, pem::PemObject};
                    PrivateKeyDer::from_pem_slice(&kb).map_err(|e| {
                        anyhow::anyhow!("--client-key {}: no PEM private key in it ({e:?})", k.display())
                    })?;
                    Some((cb, kb))
                }
                (None, None) => None,
                _ => bail!("client-certificate authentication needs both --cert and --client-key"),
            };
            o.set_transport(Transport::Tls(TlsConfiguration::Simple { ca, alpn: None, client_auth }));
        }
    }
    Ok(o)
}

/// An MQTT connection whose event loop runs on a thread of its own, its events read here with a
/// timeout. rumqttc's own `Connection::recv_timeout` drops the event loop's future when the timeout
/// fires, and with it a connection attempt in progress: a TLS handshake longer than the caller's
/// poll (tens of milliseconds) then never completes. The thread ends at the first connection error
/// (the caller reconnects with its own back-off) or when this side is dropped.
pub struct MqttLink {
    pub client: rumqttc::Client,
    rx: std::sync::mpsc::Receiver<Result<rumqttc::Event, rumqttc::ConnectionError>>,
}

impl MqttLink {
    pub fn open(opts: MqttOptions, cap: usize) -> MqttLink {
        let (client, mut conn) = rumqttc::Client::new(opts, cap);
        let (tx, rx) = std::sync::mpsc::sync_channel(cap.max(1));
        std::thread::spawn(move || {
            while let Ok(ev) = conn.recv() {
                let last = ev.is_err();
                if tx.send(ev).is_err() || last {
                    break;
                }
            }
        });
        MqttLink { client, rx }
    }

    /// The next event or connection error, waiting at most `d`.
    pub fn recv_timeout(
        &self,
        d: Duration,
    ) -> Result<Result<rumqttc::Event, rumqttc::ConnectionError>, std::sync::mpsc::RecvTimeoutError> {
        self.rx.recv_timeout(d)
    }
}

impl Drop for MqttLink {
    fn drop(&mut self) {
        // Ends the event loop's thread: a disconnect request, or the closed channel at its next event.
        let _ = self.client.try_disconnect();
    }
}

/// TLS material is checked when it is named, not at the first connection: `bytes` (of the `what`
/// file at `path`) must hold at least one PEM certificate that parses as X.509.
fn check_pem_certificates(bytes: &[u8], what: &str, path: &Path) -> Result<()> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{what} {}: not PEM certificates ({e:?})", path.display()))?;
    if certs.is_empty() {
        bail!("{what} {}: no PEM certificate in it", path.display());
    }
    let mut roots = rustls::RootCertStore::empty();
    for (k, c) in certs.into_iter().enumerate() {
        roots
            .add(c)
            .map_err(|e| anyhow::anyhow!("{what} {}: certificate {k} does not parse: {e}", path.display()))?;
    }
    Ok(())
}

/// A Mosquitto broker on a loopback port, stopped when dropped. Finds `mosquitto` on `PATH` or in
/// `/usr/sbin` (the Debian package's place).
pub struct Mosquitto {
    child: Option<Child>,
    pub port: u16,
    dir: PathBuf,
    exe: PathBuf,
    /// The whole configuration for a port and the broker's folder (`None`: the anonymous
    /// loopback listener of [`Mosquitto::start`]).
    conf: Option<Box<dyn Fn(u16, &Path) -> String + Send>>,
    /// `OWNER_LOCK` in the folder, locked while this handle lives: what tells another process
    /// that the folder is in use.
    _owner: std::fs::File,
}

/// The lock file in a broker's folder, held by the process that owns the folder.
const OWNER_LOCK: &str = "owner.lock";

/// Brokers' folders are named `jetlink-mosquitto-PID-PORT` in the temporary folder.
const FOLDER_PREFIX: &str = "jetlink-mosquitto-";

/// Remove the brokers' folders that a process no longer running left in `tmp` (a run ended by a
/// signal does not run its destructors; its broker ends with it, `PR_SET_PDEATHSIG`, but its folder
/// stays). A folder is in use while its [`OWNER_LOCK`] is locked, whatever PID namespace its owner
/// runs in; one without that file (being made, or left by an older version) while the process
/// named in it runs. One in use, or that cannot be removed, is left alone.
fn remove_orphaned_folders(tmp: &Path) {
    let Ok(entries) = std::fs::read_dir(tmp) else { return };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(FOLDER_PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, port)| port.parse::<u16>().ok().and(pid.parse::<libc::pid_t>().ok()))
            .filter(|&pid| pid > 0)
        else {
            continue;
        };
        let gone = match std::fs::OpenOptions::new().write(true).open(e.path().join(OWNER_LOCK)) {
            Ok(f) => f.try_lock().is_ok(),
            // SAFETY: signal 0 only checks that the process exists; nothing is sent.
            Err(_) => {
                (unsafe { libc::kill(pid, 0) }) != 0
                    && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
            }
        };
        if gone && e.file_type().is_ok_and(|t| t.is_dir()) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

impl Mosquitto {
    /// The broker binary, if installed.
    pub fn find() -> Option<PathBuf> {
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/sbin")])
            .map(|d| d.join("mosquitto"))
            .find(|p| p.is_file())
    }

    /// Start a broker on a free loopback port (anonymous; sessions and queued messages persist
    /// across [`Mosquitto::restart`], as on a real broker that is restarted cleanly).
    pub fn start() -> Result<Mosquitto> {
        Mosquitto::start_conf(None)
    }

    /// Start a broker whose whole configuration `conf` writes for a free loopback port and the
    /// broker's own folder (TLS listeners, password files, ACLs); it must listen on that port,
    /// which is how the start is detected.
    pub fn start_with(conf: impl Fn(u16, &Path) -> String + Send + 'static) -> Result<Mosquitto> {
        Mosquitto::start_conf(Some(Box::new(conf)))
    }

    fn start_conf(conf: Option<Box<dyn Fn(u16, &Path) -> String + Send>>) -> Result<Mosquitto> {
        let exe = Mosquitto::find()
            .context("mosquitto not found on PATH or in /usr/sbin (Debian: apt-get install mosquitto)")?;
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        remove_orphaned_folders(&std::env::temp_dir());
        let dir = std::env::temp_dir().join(format!("{FOLDER_PREFIX}{}-{port}", std::process::id()));
        // Made under a name the cleanup does not take for a broker's folder, locked, then renamed
        // into place: no other process ever sees it without its lock held.
        let making = std::env::temp_dir().join(format!("jetlink-making-{}-{port}", std::process::id()));
        let _ = std::fs::remove_dir_all(&making);
        std::fs::create_dir_all(&making)?;
        let owner = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(making.join(OWNER_LOCK))
            .with_context(|| format!("{}: creating {OWNER_LOCK}", making.display()))?;
        owner.try_lock().with_context(|| format!("{}: locking {OWNER_LOCK}", making.display()))?;
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::rename(&making, &dir)
            .with_context(|| format!("moving {} to {}", making.display(), dir.display()))?;
        let mut m = Mosquitto { child: None, port, dir, exe, conf, _owner: owner };
        m.restart()?;
        Ok(m)
    }

    /// The broker's folder (its configuration, persistence and any files a test puts there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stop the broker cleanly (SIGTERM: it saves its sessions), killing it after 10 s; clients see
    /// the connection drop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling our own child process by its id.
            unsafe {
                libc::kill(c.id() as libc::pid_t, libc::SIGTERM);
            }
            let t = Instant::now();
            while t.elapsed() < Duration::from_secs(10) {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Start it again on the same port; returns once it accepts connections.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        let conf = self.dir.join("mosquitto.conf");
        let text = match &self.conf {
            Some(f) => f(self.port, &self.dir),
            None => format!(
                "listener {} 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location {}/\nautosave_interval 0\nmax_queued_messages 100000\nmax_inflight_messages 0\n",
                self.port,
                self.dir.display()
            ),
        };
        std::fs::write(&conf, text)?;
        let mut cmd = Command::new(&self.exe);
        // The broker ends with the thread that started it (the one that owns this handle): a
        // `bench fleet` stopped by a signal leaves no broker behind. Not where mosquitto changes its
        // user at start (run as root, it drops to its own user, and the kernel clears the death
        // signal): there only `Drop` stops it. SAFETY: prctl(2) is async-signal-safe, as a pre_exec
        // hook requires.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", self.exe.display()))?;
        self.child = Some(child);
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if t.elapsed() > Duration::from_secs(20) {
                bail!("mosquitto did not listen on 127.0.0.1:{} within 20 s", self.port);
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                bail!("mosquitto exited at start ({st}); port {} taken?", self.port);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// A configuration for this broker.
    pub fn config(&self, fleet: &str) -> FleetConfig {
        FleetConfig::new("127.0.0.1", self.port, fleet)
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod orphan_tests {
    use super::*;

    #[test]
    fn folders_of_ended_processes_are_removed_and_no_others() {
        let tmp = std::env::temp_dir().join(format!("jetlink-orphans-{}", std::process::id()));
        let ended = {
            let mut c = Command::new("true").spawn().unwrap();
            let pid = c.id();
            c.wait().unwrap();
            pid
        };
        let me = std::process::id();
        let names = [
            format!("{FOLDER_PREFIX}{ended}-1883"),
            format!("{FOLDER_PREFIX}{me}-1883"),
            format!("{FOLDER_PREFIX}{ended}-notaport"),
            format!("other-{ended}-1883"),
            // With an owner lock, the lock decides, not the PID (which may be another namespace's).
            format!("{FOLDER_PREFIX}{ended}-1884"),
            format!("{FOLDER_PREFIX}{me}-1884"),
        ];
        for n in &names {
            std::fs::create_dir_all(tmp.join(n)).unwrap();
        }
        let lock = |n: &str| std::fs::File::create(tmp.join(n).join(OWNER_LOCK)).unwrap();
        let held = lock(&names[4]);
        held.try_lock().unwrap();
        let _free = lock(&names[5]);
        remove_orphaned_folders(&tmp);
        let left: Vec<bool> = names.iter().map(|n| tmp.join(n).exists()).collect();
        assert_eq!(left, [false, true, true, true, true, false]);
        drop(held);
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
