//! The audit log's hash chain, verified by the running controller: at
//! start and every [`EVERY`] (`trireme audit verify` checks it on demand,
//! with the mirrors too). A break is logged, recorded in the audit log
//! itself, and told to `[[notify]]` targets as `audit_chain_broken`
//! (`notices.rs` reads [`ChainHealth::broken`]).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{blocking, Shared};
use crate::audit::Broken;

/// How often the chain is verified after the check at start.
pub const EVERY: Duration = Duration::from_secs(3600);

/// The last verification's outcome.
#[derive(Debug, Default)]
pub struct ChainHealth {
    broken: Mutex<Option<Broken>>,
}

impl ChainHealth {
    /// The first broken entry the last verification found (`None`: intact,
    /// or not verified yet).
    pub fn broken(&self) -> Option<Broken> {
        self.broken
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Record a verification's outcome; whether it is a break not seen by
    /// the previous one.
    fn set(&self, now: Option<Broken>) -> bool {
        let mut g = self.broken.lock().unwrap_or_else(|e| e.into_inner());
        let new = now.is_some() && *g != now;
        *g = now;
        new
    }
}

/// Verify the chain once and record the outcome in `shared.audit_chain`; a
/// newly found break is logged and recorded in the audit log.
pub fn check(shared: &Shared) {
    let report = blocking(|| shared.catalog.audit().verify());
    let broken = report.broken.clone();
    if shared.audit_chain.set(broken.clone()) {
        if let Some(b) = broken {
            tracing::error!(entry = b.seq, problem = %b.problem, verified = report.checked,
                "the audit log's hash chain is broken: it was changed outside the controller; `trireme audit verify` compares it with the mirrors at the locations");
            shared.record(
                crate::audit::Event::controller("audit chain check", format!("entry {}", b.seq))
                    .problem(b.problem),
            );
        }
    }
}

/// Verify at start and every `every` until `stop`.
pub async fn run(shared: Arc<Shared>, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tick.tick() => check(&shared),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_break_is_new_once() {
        let h = ChainHealth::default();
        let b = |seq| Broken {
            seq,
            problem: format!("entry {seq} does not match its hash"),
        };
        assert!(!h.set(None));
        assert!(h.set(Some(b(3))));
        assert!(!h.set(Some(b(3))), "the same break again");
        assert_eq!(h.broken(), Some(b(3)));
        assert!(h.set(Some(b(2))), "another entry");
        assert!(!h.set(None));
        assert_eq!(h.broken(), None);
    }
}
