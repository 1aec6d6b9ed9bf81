//! Terminal output helpers: JSON printing and progress bars that go quiet
//! when stderr is not a terminal, with `--quiet`, or with `--json`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use ggufkit::progress::Progress;

/// Prints a JSON value on stdout, pretty and newline-terminated.
pub fn print_json(v: &serde_json::Value) {
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let _ = serde_json::to_writer_pretty(&mut out, v);
    let _ = writeln!(out);
    let _ = out.flush();
}

/// Progress bars on stderr for a person at a terminal; warnings always go to stderr.
pub struct TermProgress {
    bar: Mutex<Option<ProgressBar>>,
    enabled: bool,
    quiet: bool,
}

impl TermProgress {
    /// Bars are shown only when stderr is a terminal and neither `quiet` nor `json`.
    pub fn new(quiet: bool, json: bool) -> Self {
        TermProgress { bar: Mutex::new(None), enabled: !quiet && !json && std::io::stderr().is_terminal(), quiet }
    }
}

impl Progress for TermProgress {
    fn begin(&self, phase: &str, total_bytes: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix:>10} [{bar:30}] {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} eta {eta:<4} {wide_msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(phase.to_string());
        *self.bar.lock().unwrap_or_else(|e| e.into_inner()) = Some(bar);
    }
    fn item(&self, name: &str) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.set_message(name.to_string());
        }
    }
    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            b.inc(bytes);
        }
    }
    fn finish(&self) {
        if let Some(b) = self.bar.lock().unwrap_or_else(|e| e.into_inner()).take() {
            b.finish_and_clear();
        }
    }
    fn warn(&self, msg: &str) {
        if self.quiet {
            return;
        }
        let line = format!("ggufkit: warning: {msg}");
        match self.bar.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}
