//! systemd service notifications (the sd_notify protocol) without libsystemd: `READY=1` once the
//! loop is prepared, `WATCHDOG=1` at half the unit's `WatchdogSec=`. A no-op outside systemd.
//! Sending allocates nothing, so it may sit next to the control loop.

use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// Half of `WatchdogSec=` (systemd's advice), when the watchdog is on for this process.
    every: Option<Duration>,
    last: Instant,
}

impl Notifier {
    /// From `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket); `None` when not run by
    /// systemd with `Type=notify`.
    pub fn from_env() -> Option<Notifier> {
        let path = std::env::var_os("NOTIFY_SOCKET")?;
        let addr = match path.as_bytes().strip_prefix(b"@") {
            Some(name) => SocketAddr::from_abstract_name(name).ok()?,
            None => SocketAddr::from_pathname(&path).ok()?,
        };
        let sock = UnixDatagram::unbound().ok()?;
        let for_us = std::env::var("WATCHDOG_PID").map_or(true, |p| p.parse() == Ok(std::process::id()));
        let every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Some(Notifier { sock, addr, every, last: Instant::now() })
    }

    fn send(&self, msg: &str) {
        // Best effort: a lost datagram only delays readiness or one watchdog ping.
        let _ = self.sock.send_to_addr(msg.as_bytes(), &self.addr);
    }

    /// The loop is prepared and about to tick.
    pub fn ready(&mut self) {
        self.send("READY=1");
        self.last = Instant::now();
    }

    /// Call once per tick: pings the watchdog when half its interval has passed.
    pub fn tick(&mut self) {
        if let Some(every) = self.every {
            if self.last.elapsed() >= every {
                self.send("WATCHDOG=1");
                self.last = Instant::now();
            }
        }
    }

    /// The loop is ending (after the summary, before exit).
    pub fn stopping(&self) {
        self.send("STOPPING=1");
    }
}
