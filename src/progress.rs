//! Progress of a long command (recording, training, writing a stream): a bar on a terminal, and off
//! one (a log, CI, a service, ssh without a tty) a line on stderr every few seconds, so that a
//! command that takes minutes is never silent.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

/// How often a line is printed off a terminal.
const EVERY: Duration = Duration::from_secs(10);

pub struct Progress {
    bar: indicatif::ProgressBar,
    what: String,
    unit: &'static str,
    total: u64,
    done: u64,
    start: Instant,
    last_line: Instant,
    lines: bool,
}

impl Progress {
    /// `total` `unit`s of `what` (a total of 0: unknown); `show` false shows nothing.
    pub fn new(what: &str, unit: &'static str, total: u64, show: bool) -> Progress {
        let terminal = std::io::stderr().is_terminal();
        let bar = if show && terminal {
            let b = if total > 0 {
                indicatif::ProgressBar::new(total)
            } else {
                indicatif::ProgressBar::new_spinner()
            };
            b.set_style(
                indicatif::ProgressStyle::with_template(&format!(
                    "{{prefix}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{elapsed}} (eta {{eta}})"
                ))
                .expect("a valid template")
                .progress_chars("=> "),
            );
            b.set_prefix(what.to_string());
            b
        } else {
            indicatif::ProgressBar::hidden()
        };
        let now = Instant::now();
        Progress {
            bar,
            what: what.into(),
            unit,
            total,
            done: 0,
            start: now,
            last_line: now,
            lines: show && !terminal,
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        self.bar.inc(n);
        if self.lines && self.last_line.elapsed() >= EVERY {
            self.last_line = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// The line printed off a terminal: done, total, share, elapsed and an estimate of what is left.
    pub fn line(&self) -> String {
        let s = self.start.elapsed().as_secs_f64();
        if self.total == 0 {
            return format!("{}: {} {}, {s:.0} s", self.what, self.done, self.unit);
        }
        let share = self.done as f64 / self.total as f64;
        let eta = if self.done > 0 { s / share - s } else { f64::NAN };
        format!(
            "{}: {}/{} {} ({:.0}%), {s:.0} s, about {eta:.0} s left",
            self.what,
            self.done,
            self.total,
            self.unit,
            100.0 * share
        )
    }

    pub fn finish(self) {
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_says_how_far_and_how_long() {
        let mut p = Progress::new("record", "frames", 200, false);
        p.inc(50);
        let l = p.line();
        assert!(l.starts_with("record: 50/200 frames (25%), ") && l.contains("s left"), "{l}");
        let mut q = Progress::new("stream", "frames", 0, false);
        q.inc(7);
        assert!(q.line().starts_with("stream: 7 frames, "), "{}", q.line());
    }
}
