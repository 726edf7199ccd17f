//! A progress line for commands that take a while (`policy replay`, `audit export`, `scan`):
//! drawn on stderr only when stderr is a terminal, so pipes, files and CI logs stay clean.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// How often the line is redrawn, at most.
const REDRAW_EVERY: Duration = Duration::from_millis(100);

/// One task's progress: `label done/total` with a bar, or `label done` without a total.
pub struct Progress {
    label: String,
    total: Option<usize>,
    done: usize,
    /// Drawn at all (stderr is a terminal).
    shown: bool,
    last_drawn: Option<Instant>,
}

impl Progress {
    /// A progress line for `label`, out of `total` steps when known.
    pub fn new(label: impl Into<String>, total: Option<usize>) -> Progress {
        let mut progress = Progress {
            label: label.into(),
            total,
            done: 0,
            shown: std::io::stderr().is_terminal(),
            last_drawn: None,
        };
        progress.draw();
        progress
    }

    /// `steps` more are done.
    pub fn advance(&mut self, steps: usize) {
        self.done += steps;
        if self
            .last_drawn
            .is_none_or(|at| at.elapsed() >= REDRAW_EVERY)
        {
            self.draw();
        }
    }

    fn draw(&mut self) {
        if !self.shown {
            return;
        }
        let line = match self.total {
            Some(total) if total > 0 => {
                let filled = self.done.min(total) * 30 / total;
                format!(
                    "{} [{}{}] {}/{total}",
                    self.label,
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    self.done
                )
            }
            _ => format!("{} {}", self.label, self.done),
        };
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
        self.last_drawn = Some(Instant::now());
    }
}

impl Drop for Progress {
    /// Clears the line: what the command prints next starts on a clean line.
    fn drop(&mut self) {
        if self.shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}
