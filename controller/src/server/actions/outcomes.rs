//! What operators ask of [`super`]'s actions and what they answer, as
//! plain domain values ([`crate::server::convert`] maps them to and from
//! the gRPC messages).

use crate::audit::VerifyReport;
use crate::policy::ApplyReport;
use crate::replication::PassReport;

/// What applying a policy file did.
#[derive(Debug, Clone)]
pub struct PolicyApplied {
    /// Which policies were created, changed or already so.
    pub report: ApplyReport,
    /// What the operator should know (sources no agent reported yet, the
    /// file's own warnings).
    pub warnings: Vec<String>,
}

/// A restore as asked.
#[derive(Debug, Clone, Default)]
pub struct RestoreAsk {
    /// The snapshot id or unique prefix.
    pub snapshot: String,
    /// The agent that restores; empty: the snapshot's own.
    pub to_agent: String,
    /// Where it restores to (a path, or `source:<name>`).
    pub target: String,
    /// Which part, and over what.
    pub selection: crate::jobs::RestoreSelection,
}

/// A verification as asked.
#[derive(Debug, Clone, Default)]
pub struct VerifyAsk {
    /// Re-read and check every object, not only its presence and size.
    pub deep: bool,
    /// Only this location; empty: every one.
    pub location: String,
    /// Report on this snapshot's copies too (id or unique prefix); empty:
    /// none.
    pub snapshot: String,
}

/// What a verification found.
#[derive(Debug, Clone, Default)]
pub struct Verified {
    /// The verification pass (its problems are in `problems`).
    pub report: PassReport,
    /// Every problem: the pass's, unattributed index objects, the asked
    /// snapshot's copies not verified.
    pub problems: Vec<String>,
}

/// One location's copy of the audit log compared with the chain.
#[derive(Debug, Clone, Default)]
pub struct MirrorCheck {
    /// The location.
    pub location: String,
    /// Entries compared.
    pub entries_compared: u64,
    /// Disagreements.
    pub problems: Vec<String>,
    /// Why the mirror could not be read, if it could not.
    pub error: String,
}

/// What checking the audit log found.
#[derive(Debug, Clone)]
pub struct AuditCheck {
    /// The chain's own check.
    pub chain: VerifyReport,
    /// Each location's mirror.
    pub mirrors: Vec<MirrorCheck>,
}
