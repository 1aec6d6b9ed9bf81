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

/// Passes every report on, with `label` after each phase name (`eval` →
/// `eval Q4_K_M`): one bar per output when a phase runs once per output.
pub struct Labeled<'a> {
    pub inner: &'a dyn Progress,
    pub label: &'a str,
}

impl Progress for Labeled<'_> {
    fn begin(&self, phase: &str, total_bytes: u64) {
        self.inner.begin(&format!("{phase} {}", self.label), total_bytes)
    }
    fn item(&self, name: &str) {
        self.inner.item(name)
    }
    fn advance(&self, bytes: u64) {
        self.inner.advance(bytes)
    }
    fn finish(&self) {
        self.inner.finish()
    }
    fn warn(&self, msg: &str) {
        self.inner.warn(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Phases(Mutex<Vec<String>>);
    impl Progress for Phases {
        fn begin(&self, phase: &str, _total: u64) {
            self.0.lock().unwrap().push(phase.to_string());
        }
    }

    #[test]
    fn labeled_names_the_phase() {
        let p = Phases::default();
        let l = Labeled { inner: &p, label: "Q4_K_M" };
        l.begin("eval", 10);
        l.advance(5);
        assert_eq!(*p.0.lock().unwrap(), vec!["eval Q4_K_M".to_string()]);
    }
}
