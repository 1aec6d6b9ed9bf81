//! Progress and warning reports from the library.
//!
//! The library never prints. Long-running operations take a `&dyn Progress`
//! and report through it; the command-line layer implements it with progress
//! bars on a terminal, and [`NoProgress`] ignores everything.

/// Receives progress and warnings from long-running operations.
pub trait Progress: Sync {
    /// A new phase begins with this many bytes of work (0 when unknown).
    fn begin(&self, _phase: &str, _total_bytes: u64) {}
    /// Work on a named item (tensor, file) begins.
    fn item(&self, _name: &str) {}
    /// This many more bytes of work are done.
    fn advance(&self, _bytes: u64) {}
    /// The current phase is over.
    fn finish(&self) {}
    /// Something the user should know that does not stop the job.
    fn warn(&self, _msg: &str) {}
}

/// Discards all reports.
pub struct NoProgress;

impl Progress for NoProgress {}

/// Collects warnings (for tests and `--json` summaries).
#[derive(Default)]
pub struct CollectWarnings(pub std::sync::Mutex<Vec<String>>);

impl Progress for CollectWarnings {
    fn warn(&self, msg: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(msg.to_string());
    }
}
