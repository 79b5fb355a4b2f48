//! `jetlink fleet aggregate|status` and the fleet options of `jetlink run` (joining a fleet).

use super::*;

/// Where the broker is and how to log in (shared by `run`, `fleet aggregate` and `fleet status`).
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct BrokerArgs {
    /// MQTT broker, HOST:PORT (1883 plain, 8883 usually TLS).
    #[arg(long, value_name = "HOST:PORT")]
    pub(crate) broker: Option<String>,
    /// Fleet name (a topic level: letters, digits, '_' or '-').
    #[arg(long)]
    pub(crate) fleet: Option<String>,
    /// TLS: the CA certificate (PEM) that signed the broker's certificate.
    #[arg(long, value_name = "PEM")]
    pub(crate) ca: Option<PathBuf>,
    /// TLS client certificate (PEM), with --client-key.
    #[arg(long, value_name = "PEM")]
    pub(crate) cert: Option<PathBuf>,
    /// TLS client private key (PEM), with --cert.
    #[arg(long, value_name = "PEM")]
    pub(crate) client_key: Option<PathBuf>,
    /// MQTT username.
    #[arg(long)]
    pub(crate) username: Option<String>,
    /// File holding the MQTT password (its first line); or the environment variable
    /// JETLINK_MQTT_PASSWORD.
    #[arg(long, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// How long to wait for the broker at start before giving up (seconds; default 10).
    #[arg(long, value_parser = finite_in(0.1, 3600.0))]
    pub(crate) connect_timeout_s: Option<f64>,
}

impl BrokerArgs {
    /// `--connect-timeout-s`, or its default.
    pub(crate) fn connect_timeout(&self) -> f64 {
        self.connect_timeout_s.unwrap_or(10.0)
    }
}

/// Without `--broker` and `--fleet`, a flag that only joining a fleet reads is refused, naming it,
/// rather than ignored.
fn refuse_fleet_flags(j: &JoinArgs) -> Result<()> {
    let b = &j.broker;
    let given = [
        ("--ca", b.ca.is_some()),
        ("--cert", b.cert.is_some()),
        ("--client-key", b.client_key.is_some()),
        ("--username", b.username.is_some()),
        ("--password-file", b.password_file.is_some()),
        ("--board-id", j.board_id.is_some()),
        ("--group", j.group.is_some()),
        ("--fleet-key", j.fleet_key.is_some()),
        ("--fleet-optional", j.fleet_optional),
        ("--connect-timeout-s", j.broker.connect_timeout_s.is_some()),
    ];
    match given.iter().find(|g| g.1) {
        Some((flag, _)) => {
            bail!("{flag} applies only when joining a fleet: give --broker HOST:PORT and --fleet NAME too")
        }
        None => Ok(()),
    }
}

/// Joining a fleet from `jetlink run`.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct JoinArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// This board's id in the fleet (default: the board name).
    #[arg(long)]
    pub(crate) board_id: Option<String>,
    /// This board's group in the fleet: boards that see the same conditions (a site, a camera
    /// type), averaged together apart from the rest of the fleet (docs/fleet.md, "Groups").
    #[arg(long)]
    pub(crate) group: Option<String>,
    /// The fleet's Ed25519 public key (hex, from `jetlink keygen`): global links must be signed by it.
    #[arg(long, value_name = "PUBLIC_KEY_HEX")]
    pub(crate) fleet_key: Option<String>,
    /// Run even when the broker cannot be reached at start (summaries are kept, up to the store's
    /// size, and sent once it can be); without it, an unreachable broker ends the run with an error.
    #[arg(long)]
    pub(crate) fleet_optional: bool,
}

#[derive(clap::Args)]
pub(crate) struct FleetArgs {
    #[command(subcommand)]
    pub(crate) what: FleetCmd,
}

#[derive(clap::Subcommand)]
pub(crate) enum FleetCmd {
    /// Average the boards' link updates (FedAvg by samples), sign and publish the global links;
    /// allocate adaptation tasks across boards.
    Aggregate(AggregateArgs),
    /// Show the boards of a fleet: last seen, accuracy kept, executions saved, link versions.
    Status(StatusArgs),
}

#[derive(clap::Args)]
pub(crate) struct AggregateArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// The fleet's private key (PKCS#8 PEM, `jetlink keygen`): global links are signed with it.
    #[arg(long)]
    pub(crate) key: PathBuf,
    /// The manifest and bundle the fleet runs: only updates for its model hash are averaged.
    #[arg(long, default_value = DEMO_MANIFEST)]
    pub(crate) manifest: PathBuf,
    #[arg(long, default_value = DEMO_BUNDLE)]
    pub(crate) bundle: PathBuf,
    /// Publish at least every this many seconds when updates arrived.
    #[arg(long, default_value_t = 60.0, value_parser = finite_in(0.01, 1e7))]
    pub(crate) period_s: f64,
    /// Publish as soon as updates from this many boards arrived (at least 1).
    #[arg(long, default_value_t = usize::MAX, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub(crate) min_boards: usize,
    /// Stop after this many published rounds (at least 1; leave it out to run until stopped).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) rounds: Option<u32>,
    /// The fleet's boards, one a line: its id, then its group if it is in one (`cam-7 north`).
    /// Uploads from any other id, or naming another group, are refused and counted (without it, any
    /// id the broker lets through, in the group it names).
    #[arg(long, value_name = "FILE")]
    pub(crate) boards: Option<PathBuf>,
    /// Forget a board that sent nothing (no link update, no task offer) in this many rounds: its
    /// last update leaves the averages and its offer the task allocation until it sends again
    /// (0: never forget).
    #[arg(long, default_value_t = jetlink::fleet::FORGET_AFTER_ROUNDS)]
    pub(crate) forget_after_rounds: u32,
}

#[derive(clap::Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) broker: BrokerArgs,
    /// How long to listen for the boards' retained summaries.
    #[arg(long, default_value_t = 2.0, value_parser = finite_in(0.1, 3600.0))]
    pub(crate) wait_s: f64,
}

#[cfg(feature = "fleet")]
pub(crate) fn config(b: &BrokerArgs) -> Result<jetlink::fleet::FleetConfig> {
    let broker = b.broker.as_deref().context("--broker HOST:PORT is needed")?;
    let fleet = b.fleet.as_deref().context("--fleet NAME is needed")?;
    jetlink::fleet::check_name("--fleet", fleet).map_err(anyhow::Error::msg)?;
    let (host, port) = broker
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h, p.parse::<u16>().ok()?)))
        .filter(|(h, _)| !h.is_empty())
        .with_context(|| format!("--broker {broker:?}: expected HOST:PORT"))?;
    let mut c = jetlink::fleet::FleetConfig::new(host, port, fleet);
    c.ca = b.ca.clone();
    c.client_cert = b.cert.clone();
    c.client_key = b.client_key.clone();
    c.username = b.username.clone();
    c.password = match &b.password_file {
        Some(p) => Some(
            jetlink::input::read_to_string(p, "--password-file", jetlink::input::limit::TEXT)?
                .lines()
                .next()
                .unwrap_or("")
                .to_string(),
        ),
        None => match std::env::var("JETLINK_MQTT_PASSWORD") {
            Ok(p) if p.is_empty() => bail!("JETLINK_MQTT_PASSWORD is set but empty"),
            Ok(p) => Some(p),
            Err(_) => None,
        },
    };
    if b.password_file.is_some() && std::env::var_os("JETLINK_MQTT_PASSWORD").is_some() {
        bail!("both --password-file and JETLINK_MQTT_PASSWORD give a password: give one");
    }
    if c.password.is_some() && c.username.is_none() {
        bail!("a password without --username");
    }
    if let (Some(p), Some(file)) = (&c.password, &b.password_file)
        && p.is_empty()
    {
        bail!("--password-file {}: its first line is empty (the password is the first line)", file.display());
    }
    // MQTT carries each in a 16-bit length: longer would be cut off on the wire.
    for (what, v) in [("--username", &c.username), ("the password", &c.password)] {
        if let Some(v) = v.as_ref().filter(|v| v.len() > u16::MAX as usize) {
            bail!("{what} is {} bytes; MQTT allows at most 65535", v.len());
        }
    }
    jetlink::fleet::broker::mqtt_options(&c, "check")?;
    Ok(c)
}

#[cfg(not(feature = "fleet"))]
pub(crate) fn fleet(_: &FleetArgs) -> Result<()> {
    bail!("this build was made without the `fleet` feature")
}

#[cfg(feature = "fleet")]
pub(crate) fn fleet(a: &FleetArgs) -> Result<()> {
    match &a.what {
        FleetCmd::Aggregate(a) => aggregate(a),
        FleetCmd::Status(a) => status(a),
    }
}

#[cfg(feature = "fleet")]
fn aggregate(a: &AggregateArgs) -> Result<()> {
    use jetlink::fleet::aggregate::{AggregateOptions, Aggregator};
    let cfg = config(&a.broker)?;
    let key = jetlink::signing::read_private_key(&a.key)?;
    let (manifest, _) = load_workload(&a.manifest)?;
    let bundle = Bundle::load_for(&a.bundle, &manifest)?;
    let hash = jetlink::fleet::model_hash(&bundle);
    // Versions start from the clock so that a restarted aggregator is not refused as a rollback.
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() * 1000;
    let opts = AggregateOptions {
        key: key.clone(),
        model_hash: hash,
        period: std::time::Duration::from_secs_f64(a.period_s),
        min_boards: a.min_boards,
        rounds: a.rounds,
        start_version: start,
        shapes: jetlink::fleet::fuse::target_shapes(&bundle.links, &bundle.ensembles),
        boards: match &a.boards {
            None => None,
            Some(p) => {
                let text = jetlink::input::read_to_string(p, "--boards", jetlink::input::limit::TEXT)?;
                let mut ids = std::collections::BTreeMap::new();
                for (n, line) in text.lines().enumerate().map(|(n, l)| (n + 1, l.trim())) {
                    if line.is_empty() || line.starts_with('#') {
                        continue;
                    }
                    let at = || format!("--boards {} line {n}", p.display());
                    let mut words = line.split_whitespace();
                    let id = words.next().expect("a line that is not empty has a word");
                    let group = words.next();
                    if let Some(extra) = words.next() {
                        bail!(
                            "{}: {extra:?} after the board id and its group (one board a line: ID [GROUP])",
                            at()
                        );
                    }
                    jetlink::fleet::check_name("--boards", id)
                        .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
                    if let Some(g) = group {
                        jetlink::fleet::check_name("group", g)
                            .map_err(|e| anyhow::anyhow!("{}: {e}", at()))?;
                    }
                    // A board listed twice is a typo or two boards sharing an id: both unsafe.
                    if ids.insert(id.to_string(), group.map(str::to_owned)).is_some() {
                        bail!("{}: board {id:?} is listed twice", at());
                    }
                }
                if ids.is_empty() {
                    bail!("--boards {}: lists no board (every upload would be refused)", p.display());
                }
                Some(ids)
            }
        },
        forget_after: (a.forget_after_rounds > 0).then_some(a.forget_after_rounds),
        poll: std::time::Duration::from_millis(50),
    };
    // SIGTERM or SIGINT ends the run like its last round: the aggregator stops and its counts are
    // printed. Installed before the banner and the wait for the broker, so that a signal during the
    // wait is reported too.
    let stop = stop_on_signals()?;
    println!(
        "fleet {:?} on {}:{}: aggregating models {} (bundle {}), fleet key {}",
        cfg.fleet,
        cfg.host,
        cfg.port,
        jetlink::bundle::hex(&hash),
        a.bundle.display(),
        jetlink::bundle::hex(&key.verifying_key().to_bytes())
    );
    let (host, port) = (cfg.host.clone(), cfg.port);
    let agg = Aggregator::start(cfg, opts)?;
    let until = Instant::now() + std::time::Duration::from_secs_f64(a.broker.connect_timeout());
    // Connected and subscribed: uploads published from now on reach it.
    while !agg.stats().subscribed {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            drop(agg.stop());
            bail!(
                "fleet aggregate: stopped by a signal ({}) while waiting for broker {host}:{port}; nothing was aggregated",
                super::stop_signal_name()
            );
        }
        if Instant::now() >= until || agg.is_finished() {
            let why = agg.stats().connection_error.unwrap_or_else(|| "no answer".into());
            drop(agg.stop());
            bail!(
                "fleet aggregate: broker {host}:{port} not reached within {:.1} s: {why}",
                a.broker.connect_timeout()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    println!("connected and subscribed; waiting for link updates");
    let mut shown = 0;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let st = agg.stats();
        for r in st.rounds.iter().skip(shown) {
            let groups = match r.groups {
                0 => String::new(),
                n => format!(" and {n} group update(s) of {} bytes in all", r.group_bytes),
            };
            println!(
                "version {}: {} boards, {} targets, {} bytes{groups}, averaged and signed in {:.0} us",
                r.version, r.boards, r.targets, r.bytes, r.aggregate_us
            );
        }
        shown = st.rounds.len();
        if agg.is_finished() || stop.load(std::sync::atomic::Ordering::Relaxed) {
            break;
        }
    }
    let st = agg.stop()?;
    println!(
        "{} updates, {} for other models, {} undecodable, {} refused by the checks, {} board(s) forgotten{}",
        st.updates,
        st.incompatible,
        st.undecodable,
        st.refused,
        st.forgotten,
        st.last_refusal.map(|r| format!(" (last: {r})")).unwrap_or_default()
    );
    Ok(())
}

#[cfg(feature = "fleet")]
fn status(a: &StatusArgs) -> Result<()> {
    use jetlink::fleet::msg::{GLOBAL_MAGIC, GlobalLinks, SummaryMsg};
    use rumqttc::{Event, Packet, QoS};
    let cfg = config(&a.broker)?;
    let id = format!("status-{}", std::process::id());
    let link = jetlink::fleet::broker::MqttLink::open(jetlink::fleet::broker::mqtt_options(&cfg, &id)?, 64);
    let client = &link.client;
    let broker = format!("broker {}:{}", cfg.host, cfg.port);
    // Connected first, within --connect-timeout-s: a broker that refuses, fails TLS or never
    // answers is an error naming it and the cause, not an empty fleet.
    let connect_by = Instant::now() + std::time::Duration::from_secs_f64(a.broker.connect_timeout());
    loop {
        let left = connect_by.saturating_duration_since(Instant::now());
        match link.recv_timeout(left) {
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("{broker}: {e}"),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                bail!("{broker}: no answer within {} s (--connect-timeout-s)", a.broker.connect_timeout())
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => bail!("{broker}: the connection ended"),
        }
    }
    // The groups' whole updates too (retained, `jetlink/<fleet>/global/<group>/links`).
    let group_links = cfg.topic_global(Some("+"), "links");
    for topic in [cfg.topic_all("summary"), cfg.topic_global_links(), group_links] {
        client
            .subscribe(topic, QoS::AtLeastOnce)
            .map_err(|e| anyhow::anyhow!("{broker}: subscribing: {e}"))?;
    }
    let until = Instant::now() + std::time::Duration::from_secs_f64(a.wait_s);
    let mut boards: std::collections::BTreeMap<String, SummaryMsg> = Default::default();
    let mut global: Option<(GlobalLinks, usize)> = None;
    let mut groups: std::collections::BTreeMap<String, (GlobalLinks, usize)> = Default::default();
    // Shown, not trusted: boards check the signature; here only the body is read.
    let body = |b: &[u8]| {
        (b.len() > GLOBAL_MAGIC.len() + 72 && &b[..8] == GLOBAL_MAGIC)
            .then(|| jetlink::binfile::decode_whole::<GlobalLinks>(&b[8..b.len() - 72]).ok())
            .flatten()
            .map(|g| (g, b.len()))
    };
    // Messages on the summary topics that are not summaries this build can show, and why the last.
    let (mut refused, mut last_refusal) = (0u64, String::new());
    while Instant::now() < until {
        match link.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                let levels: Vec<&str> = p.topic.split('/').collect();
                if p.topic == cfg.topic_global_links() {
                    global = body(&p.payload).or(global);
                } else if levels.len() == 5 && levels[2] == "global" {
                    // jetlink/<fleet>/global/<group>/links
                    if let Some(g) = body(&p.payload) {
                        groups.insert(levels[3].to_string(), g);
                    }
                } else {
                    // jetlink/<fleet>/<board>/summary: the board the topic names.
                    let topic_board = p.topic.rsplit('/').nth(1).unwrap_or("");
                    let m = jetlink::binfile::decode_whole::<SummaryMsg>(&p.payload)
                        .map_err(|e| format!("does not decode ({e})"))
                        .and_then(|m| m.check(topic_board).map(|_| m));
                    match m {
                        Ok(m) => {
                            boards.insert(m.board.clone(), m);
                        }
                        Err(why) => {
                            refused += 1;
                            // Shown escaped: a topic is the sender's text.
                            last_refusal = format!("{}: {why}", p.topic.escape_default());
                        }
                    }
                }
            }
            Ok(Err(e)) => bail!("{broker}: {e}"),
            _ => {}
        }
    }
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs();
    println!("fleet {:?} on {}:{}: {} boards", cfg.fleet, cfg.host, cfg.port, boards.len());
    println!(
        "{:<20} {:>10} {:>9} {:>9} {:>10} {:>9} {:>14} {:>8}",
        "board", "last seen", "summary", "period", "acc kept", "exec sv", "link version", "dropped"
    );
    let pct = |m: u16| if m == 0xFFFF { "-".to_string() } else { format!("{:.1}%", m as f64 / 10.0) };
    for (b, m) in &boards {
        let s = &m.summary;
        println!(
            "{:<20} {:>9}s {:>9} {:>9} {:>10} {:>9} {:>14} {:>8}",
            b,
            now.saturating_sub(m.queued_unix_s),
            s.seq,
            s.period,
            pct(s.accuracy_milli),
            pct(s.executions_saved_milli),
            s.link_version,
            s.dropped
        );
    }
    match global {
        Some((g, len)) => println!(
            "global links: version {}, {} boards, {} targets, models {}, {len} bytes (signature not checked here)",
            g.version,
            g.boards,
            g.targets.len(),
            jetlink::bundle::hex(&g.model_hash)
        ),
        None => println!("global links: none published yet"),
    }
    for (name, (g, len)) in &groups {
        println!(
            "group {}: version {}, {} boards, {} targets, {len} bytes (signature not checked here)",
            name.escape_default(),
            g.version,
            g.boards,
            g.targets.len()
        );
    }
    if refused > 0 {
        println!("{refused} messages on the summary topics refused (last: {last_refusal})");
    }
    let _ = client.disconnect();
    Ok(())
}

/// The tap of the loop that joined a fleet, kept for loops rebuilt by a bundle reload.
pub(crate) static FLEET_TAP: std::sync::OnceLock<Arc<jetlink::fleet::tap::FleetTap>> =
    std::sync::OnceLock::new();

/// Start the fleet client for `jetlink run` when `--fleet` is given; returns it (stopped on drop).
#[cfg(feature = "fleet")]
pub(crate) fn join(
    j: &JoinArgs,
    board: &jetlink::board::Board,
    bundle: &Bundle,
    state: &jetlink::signing::RollbackState,
) -> Result<Option<jetlink::fleet::client::FleetClient>> {
    if j.broker.fleet.is_none() && j.broker.broker.is_none() {
        refuse_fleet_flags(j)?;
        return Ok(None);
    }
    let mut cfg = config(&j.broker)?;
    if let Some(g) = &j.group {
        jetlink::fleet::check_name("--group", g).map_err(anyhow::Error::msg)?;
    }
    cfg.group = j.group.clone();
    let key = j.fleet_key.as_deref().context("--fleet-key PUBLIC_KEY_HEX is needed to join a fleet")?;
    let fleet_key =
        jetlink::signing::parse_public_key(key).map_err(|e| anyhow::anyhow!("--fleet-key: {e}"))?;
    let id = j.board_id.clone().unwrap_or_else(|| board.name.to_string());
    jetlink::fleet::check_name("--board-id", &id).map_err(anyhow::Error::msg)?;
    let predictor = jetlink::links::Predictor::new(bundle);
    let ring = jetlink::control::AdaptSettings::default().ring;
    let tap =
        FLEET_TAP.get_or_init(|| Arc::new(jetlink::fleet::tap::FleetTap::new(&predictor, ring))).clone();
    let opts = jetlink::fleet::client::ClientOptions {
        board: id.clone(),
        fleet_key,
        model_hash: jetlink::fleet::model_hash(bundle),
        kinds: jetlink::links::LinkModel::kinds(bundle),
        scorings: jetlink::links::LinkModel::scorings(bundle),
        poll: std::time::Duration::from_millis(50),
        tasks: jetlink::fleet::tasks::TaskCosts::of_bundle(bundle),
        state: Some(state.for_fleet(&cfg.fleet)),
    };
    println!(
        "fleet {:?}: board {id}{} via {}:{}{}, models {}",
        cfg.fleet,
        cfg.group.as_ref().map_or(String::new(), |g| format!(" in group {g:?}")),
        cfg.host,
        cfg.port,
        if cfg.ca.is_some() { " (TLS)" } else { "" },
        jetlink::bundle::hex(&opts.model_hash)
    );
    let (host, port) = (cfg.host.clone(), cfg.port);
    let client = jetlink::fleet::client::FleetClient::start(cfg, opts, tap, predictor)?;
    let wait = std::time::Duration::from_secs_f64(j.broker.connect_timeout());
    let until = Instant::now() + wait;
    // In slices, so that SIGTERM during the wait is obeyed at once (the loop then stops at its
    // first tick, with its summary).
    while !client.wait_for(std::time::Duration::from_millis(100), |s| s.connected) {
        if Instant::now() >= until || super::run::stop_requested() {
            break;
        }
    }
    if !client.stats().connected && !super::run::stop_requested() {
        let why = client.stats().connection_error.unwrap_or_else(|| "no answer".into());
        if !j.fleet_optional {
            drop(client.stop());
            bail!(
                "fleet: broker {host}:{port} not reached within {wait:?}: {why} (--fleet-optional runs without it)"
            );
        }
        eprintln!(
            "warning: fleet: broker {host}:{port} not reached within {wait:?}: {why}; running on, summaries kept until it answers"
        );
    }
    Ok(Some(client))
}

#[cfg(not(feature = "fleet"))]
pub(crate) fn join(
    j: &JoinArgs,
    _: &jetlink::board::Board,
    _: &Bundle,
    _: &jetlink::signing::RollbackState,
) -> Result<Option<()>> {
    if j.broker.fleet.is_some() || j.broker.broker.is_some() {
        bail!("--fleet/--broker: this build was made without the `fleet` feature");
    }
    refuse_fleet_flags(j)?;
    Ok(None)
}
