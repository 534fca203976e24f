//! The `apply --wait` progress line on stderr.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// A progress line redrawn in place on stderr, only in a terminal and only once
/// the wait has lasted a moment (a wait that ends at once shows nothing).
pub(super) struct ProgressLine {
    enabled: bool,
    shown: bool,
    started: Instant,
}

impl ProgressLine {
    const AFTER: Duration = Duration::from_secs(1);

    pub(super) fn new() -> Self {
        ProgressLine {
            enabled: std::io::stderr().is_terminal(),
            shown: false,
            started: Instant::now(),
        }
    }

    pub(super) fn show(&mut self, text: &str) {
        if !self.enabled || self.started.elapsed() < Self::AFTER {
            return;
        }
        let width = terminal_width();
        let text: String = text.chars().take(width.saturating_sub(1)).collect();
        let mut stderr = std::io::stderr().lock();
        let _ = write!(stderr, "\r\x1b[K{text}");
        let _ = stderr.flush();
        self.shown = true;
    }

    pub(super) fn clear(&mut self) {
        if self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }
}

/// `$COLUMNS`, else 80: a progress line longer than the terminal would wrap and
/// no longer be redrawn in place.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(80)
}
