//! Progress of a counted job that may run for many minutes (`bench --generate` answers 500
//! questions in about half an hour): an indicatif bar on a terminal; when stderr is not a
//! terminal (a log file, CI, `nohup`), where a bar draws nothing, a plain line at most once a
//! minute and at the end, so a log shows how far the run is.
//!
//! ```
//! use std::time::Duration;
//! use metarag_engine::progress::plain_line;
//!
//! let line = plain_line("answering", 250, 1000, Duration::from_secs(60));
//! assert_eq!(line, "answering: 250/1000 (25%), 1m 0s elapsed, eta 3m 0s");
//! ```

use std::io::IsTerminal as _;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// A bar on a terminal, plain lines elsewhere, nothing when quiet.
pub struct Progress {
    bar: ProgressBar,
    plain: Option<Plain>,
}

struct Plain {
    label: String,
    len: u64,
    pos: u64,
    start: Instant,
    last: Instant,
    every: Duration,
}

impl Progress {
    /// `len` steps; `template` styles the terminal bar (indicatif syntax); `label` starts
    /// each plain line.
    pub fn new(label: &str, len: u64, template: &str, quiet: bool) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let bar = if quiet || !terminal { ProgressBar::hidden() } else { ProgressBar::new(len) };
        bar.set_style(ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()));
        let now = Instant::now();
        let plain = (!quiet && !terminal).then(|| Plain {
            label: label.to_string(),
            len,
            pos: 0,
            start: now,
            last: now,
            every: Duration::from_secs(60),
        });
        Self { bar, plain }
    }

    /// Advances by `n` steps.
    pub fn inc(&mut self, n: u64) {
        self.bar.inc(n);
        if let Some(p) = &mut self.plain {
            p.pos += n;
            let now = Instant::now();
            if now.duration_since(p.last) >= p.every || p.pos >= p.len {
                p.last = now;
                eprintln!("{}", plain_line(&p.label, p.pos, p.len, now.duration_since(p.start)));
            }
        }
    }

    /// Removes the bar (plain lines stay in the log).
    pub fn finish_and_clear(&self) {
        self.bar.finish_and_clear();
    }
}

/// One plain progress line: position, share, elapsed time and the remaining time at the
/// average pace so far.
pub fn plain_line(label: &str, pos: u64, len: u64, elapsed: Duration) -> String {
    let share = (pos.min(len) * 100).checked_div(len).unwrap_or(100);
    let mut line = format!("{label}: {pos}/{len} ({share}%), {} elapsed", short(elapsed));
    if pos > 0 && pos < len {
        let eta = elapsed.mul_f64((len - pos) as f64 / pos as f64);
        line.push_str(&format!(", eta {}", short(eta)));
    }
    line
}

/// `1h 2m`, `3m 4s` or `5s`.
fn short(d: Duration) -> String {
    let s = d.as_secs();
    match (s / 3600, s % 3600 / 60, s % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_state_position_share_and_a_proportional_eta() {
        assert_eq!(plain_line("x", 0, 10, Duration::ZERO), "x: 0/10 (0%), 0s elapsed");
        assert_eq!(plain_line("x", 10, 10, Duration::from_secs(7322)), "x: 10/10 (100%), 2h 2m elapsed");
        // a third done in 10 s: 20 s to go
        assert_eq!(plain_line("x", 1, 3, Duration::from_secs(10)), "x: 1/3 (33%), 10s elapsed, eta 20s");
        assert_eq!(plain_line("x", 0, 0, Duration::ZERO), "x: 0/0 (100%), 0s elapsed");
    }
}
