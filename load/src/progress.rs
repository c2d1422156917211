//! The progress bar: an `indicatif` bar on stderr, hidden when stderr is not a terminal or when
//! the user asked for quiet output. Workloads report phases and positions; drawing is rate
//! limited by indicatif itself.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::IsTerminal;

/// A progress bar that may be hidden.
#[derive(Debug)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Progress {
    /// A bar on stderr when `enabled` and stderr is a terminal; otherwise a no-op.
    pub fn new(enabled: bool) -> Progress {
        if !enabled || !std::io::stderr().is_terminal() {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        Progress { bar: Some(bar) }
    }

    /// Starts a phase with `len` steps (0: a spinner).
    pub fn phase(&self, name: &str, len: u64) {
        if let Some(b) = &self.bar {
            let style = if len > 0 {
                ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos}/{len} {msg}")
            } else {
                ProgressStyle::with_template("{prefix:>10} {spinner} {msg}")
            };
            if let Ok(s) = style {
                b.set_style(s.progress_chars("=> "));
            }
            b.set_prefix(name.to_string());
            b.set_length(len);
            b.set_position(0);
            b.set_message("");
        }
    }

    /// Sets the position within the phase.
    pub fn set(&self, pos: u64) {
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
    }

    /// Sets the trailing message.
    pub fn message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    /// Removes the bar.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
