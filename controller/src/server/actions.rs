//! What operators do to the running controller, one function per action of
//! `OperatorService`: each checks what was asked, changes the catalog,
//! puts the action into the audit chain, then wakes what must act on it
//! (watchers, the scheduler, agents, the replication loop), in that order.
//! The handlers in [`super::operator`] check the caller's role and second
//! factor first, and turn what these return into replies
//! ([`super::convert`]). Nothing here names a gRPC message.

use std::net::SocketAddr;
use std::sync::Arc;

use trireme_net::Identity;

use super::agents::{dispatch_soon, send_cancel};
use super::{blocking, Shared};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::jobs::{self, Job, JobEvent, JobKind};
use crate::mfa::{Enrollment, MfaError, Passed};
use crate::policy::{self, BackupMode};
use crate::rebuild::RebuildReport;
use crate::recovery::DrillRecord;
use crate::snapshots::{CopyState, SnapshotRecord};
use crate::status::{FleetStatus, Live};
use crate::views::{self, AgentView};
use crate::SourceId;

pub mod holds;
pub mod outcomes;
pub use outcomes::{AuditCheck, MirrorCheck, PolicyApplied, RestoreAsk, Verified, VerifyAsk};

/// Who asks: the certificate's identity and the connection's address.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's certificate.
    pub id: Identity,
    /// Where the call came from.
    pub peer: Option<SocketAddr>,
}

impl Caller {
    /// Record that the caller did `action` (`detail` says to what).
    fn done(&self, shared: &Shared, action: &str, detail: String) {
        shared.audit(Event::by(&self.id, action, detail).from_peer(self.peer));
    }

    /// Record a refusal of `action` to the caller (who gets `why` too).
    fn refused(&self, shared: &Shared, action: &str, why: &str) {
        shared.audit(
            Event::by(&self.id, action, "")
                .refused(why)
                .from_peer(self.peer),
        );
    }
}

/// How the second factor was passed, for the audit entry.
pub fn mfa_note(p: Passed) -> &'static str {
    match p {
        Passed::Code => " (with a TOTP code)",
        Passed::NotEnrolled => " (no second factor: not enrolled)",
    }
}

/// The second factor for a sensitive `action`: `code`, the TOTP code the
/// request carries ([`crate::mfa::TOTP_HEADER`]). Refusals are audited; those of a
/// backed-off name (too many wrong codes) are counted into one entry per
/// back-off instead ([`super::audit_mfa_bursts`]).
///
/// # Errors
/// The refusal.
pub async fn second_factor(
    shared: &Shared,
    caller: &Caller,
    code: Option<&str>,
    action: &str,
) -> std::result::Result<Passed, MfaError> {
    shared
        .mfa
        .check(&caller.id.name, code, action, shared.now())
        .await
        .inspect_err(|e| {
            if let MfaError::Denied(m) = e {
                shared.audit(
                    Event::by(&caller.id, action, "second factor")
                        .refused(m.clone())
                        .from_peer(caller.peer),
                );
            }
        })
}

/// The fleet's state now (`trireme status`).
///
/// # Errors
/// Catalog errors.
pub fn status(shared: &Shared) -> Result<FleetStatus> {
    let volumes = shared
        .volumes
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    crate::status::fleet(
        &shared.catalog,
        &Live {
            now: shared.now(),
            locations: shared.locations.len(),
            protection: &shared.protection,
            drills: &shared.drills,
            location_names: &shared
                .locations
                .iter()
                .map(|l| l.name.clone())
                .collect::<Vec<_>>(),
            connected: &|name| shared.agents.is_connected(name),
            volumes: &volumes,
            location_states: &shared.replicator.states(),
            certificates: &shared.authz.files().expiry(),
        },
    )
}

/// Every agent, with whether it is connected now.
///
/// # Errors
/// Catalog errors.
pub fn agents(shared: &Shared) -> Result<Vec<AgentView>> {
    views::agents(&shared.catalog, &|name| {
        shared.agents.info(name).map(|c| c.last_seen)
    })
}

/// Apply the policy file `toml` (all or nothing), then wake the scheduler.
///
/// # Errors
/// An invalid file; catalog errors.
pub fn apply_policy(
    shared: &Shared,
    caller: &Caller,
    passed: Passed,
    toml: &str,
) -> Result<PolicyApplied> {
    let file = policy::parse_policy_file("policy", toml)?;
    let policies = &file.policies;
    let now = shared.now();
    let origin = format!("applied by {}", caller.id.name);
    let report = blocking(|| policy::apply_policy_file(&shared.catalog, &file, &origin, now))?;
    caller.done(
        shared,
        "policy apply",
        format!(
            "{} policies: {}{}",
            policies.len(),
            policies
                .iter()
                .map(|p| p.source.to_string())
                .collect::<Vec<_>>()
                .join(", "),
            mfa_note(passed)
        ),
    );
    shared.scheduler.wake();
    let warnings = report
        .unknown_sources
        .iter()
        .map(|s| format!("no agent has reported source {s} yet: its backups wait until one does (check the agent's config and name)"))
        .chain(file.warnings.iter().cloned())
        .collect();
    Ok(PolicyApplied { report, warnings })
}

/// Queue a backup of `source` now and send it to its agent.
///
/// # Errors
/// No policy or agent for the source, a job already under way, catalog
/// errors.
pub fn run_backup(
    shared: &Arc<Shared>,
    caller: &Caller,
    source: &SourceId,
    mode: BackupMode,
    tags: &[String],
) -> Result<Job> {
    let now = shared.now();
    let job = blocking(|| {
        jobs::enqueue_manual_tagged(&shared.catalog, source, mode, &caller.id.name, tags, now)
    })?;
    let tagged = if job.tags.is_empty() {
        String::new()
    } else {
        format!(" tags {}", job.tags.join(","))
    };
    caller.done(
        shared,
        "backup run",
        format!("{source} {mode} job {}{tagged}", job.id),
    );
    shared.job_changed(job.id);
    dispatch_soon(shared, job.agent().to_string());
    Ok(job)
}

/// Cancel the job `id` (or unique id prefix) and tell its agent.
///
/// # Errors
/// No such job, an ambiguous prefix, a job that already ended, catalog
/// errors.
pub fn cancel_job(shared: &Shared, caller: &Caller, id: &str) -> Result<Job> {
    let job = views::find_job(&shared.catalog, id)?;
    let reason = format!("cancelled by {}", caller.id.name);
    let now = shared.now();
    let updated = blocking(|| {
        crate::lifecycle::update_job(
            &shared.catalog,
            &job.id,
            &JobEvent::Cancel {
                reason: reason.clone(),
            },
            now,
        )
    })?;
    caller.done(shared, "job cancel", job.id.to_string());
    send_cancel(shared, job.agent(), &job.id, &reason);
    shared.job_changed(job.id);
    shared.scheduler.wake();
    Ok(updated.job)
}

/// Queue a restore and send it to its agent.
///
/// # Errors
/// No such snapshot or agent, no target, catalog errors.
pub fn restore(
    shared: &Arc<Shared>,
    caller: &Caller,
    passed: Passed,
    ask: &RestoreAsk,
) -> Result<Job> {
    let snap = views::find_snapshot(&shared.catalog, &ask.snapshot)?;
    let to_agent = if ask.to_agent.is_empty() {
        snap.agent.clone()
    } else {
        ask.to_agent.clone()
    };
    if shared.catalog.agents().get(&to_agent)?.is_none() {
        return Err(Error::Missing(format!(
            "no agent named {to_agent:?} has registered; see `trireme agents ls`"
        )));
    }
    if ask.target.is_empty() {
        return Err(Error::BadRequest(
            "give a restore target: --to agent:/path/to/empty/dir, or --to agent:source:<name> to restore into one of the agent's datastores".into(),
        ));
    }
    let mut job = Job::restore(
        snap.source.clone(),
        snap.id,
        to_agent.clone(),
        ask.target.clone(),
        &caller.id.name,
        shared.now(),
    );
    if let JobKind::Restore { selection, .. } = &mut job.kind {
        **selection = ask.selection.clone();
    }
    blocking(|| {
        shared
            .catalog
            .transaction_durable(|tx| jobs::create_in(tx, &job))
    })?;
    caller.done(
        shared,
        "restore",
        format!(
            "snapshot {} of {} to {to_agent}:{}{} job {}{}",
            snap.id.short(),
            snap.source,
            ask.target,
            if ask.selection.is_all() {
                String::new()
            } else {
                format!(" ({})", ask.selection.describe())
            },
            job.id,
            mfa_note(passed)
        ),
    );
    shared.job_changed(job.id);
    dispatch_soon(shared, to_agent);
    Ok(job)
}

/// The location named `name`.
fn location<'a>(shared: &'a Shared, name: &str) -> Result<&'a super::LocationConfig> {
    shared
        .locations
        .iter()
        .find(|l| l.name == name)
        .ok_or_else(|| Error::Missing(format!("no location {name:?}; see `trireme locations ls`")))
}

/// Rebuild the catalog from the snapshots at location `name` (its key
/// table first, when the controller has none), then let replication find
/// and verify the other copies.
///
/// # Errors
/// An unknown location; storage, key and catalog errors.
pub async fn rebuild_catalog(
    shared: &Shared,
    caller: &Caller,
    passed: Passed,
    name: &str,
) -> Result<RebuildReport> {
    let loc = location(shared, name)?;
    let backend = loc.location.open().await.map_err(Error::from)?;
    // A rotated repository opens with its key table: the location's copy
    // when the controller has none yet (a new controller after a disaster).
    let adopted = crate::rotation::adopt_from(
        &shared.catalog,
        &shared.master_key,
        name,
        &backend,
        shared.now(),
    )
    .await?;
    let keys: trireme_common::DynKeyProvider = shared.master_key.clone();
    let repo =
        trireme_common::Repository::from_config(backend, keys, shared.custody.config_bytes())
            .await
            .map_err(Error::from)?;
    let r = crate::rebuild::rebuild(&shared.catalog, &repo, &shared.custody, name, shared.now())
        .await?;
    caller.done(
        shared,
        "catalog rebuild",
        format!(
            "from {name}: {} snapshots found, {} added, {} known, {} sources added{}{}",
            r.found,
            r.added,
            r.known,
            r.sources_added,
            adopted
                .map(|t| format!(", key table keys/{t} loaded"))
                .unwrap_or_default(),
            mfa_note(passed)
        ),
    );
    // Let the replication pass find and verify the other copies.
    shared.replicate_now.notify_one();
    Ok(r)
}

/// Start a restore test of `source` now.
///
/// # Errors
/// No policy, no staging target, no snapshot verified everywhere, target
/// busy.
pub fn run_restore_test(
    shared: &Arc<Shared>,
    caller: &Caller,
    passed: Passed,
    source: &SourceId,
) -> Result<Job> {
    let job = super::recovery::run_test_now(shared, source, &caller.id.name)?;
    caller.done(
        shared,
        "restore-test run",
        format!("{source} job {}{}", job.id, mfa_note(passed)),
    );
    Ok(job)
}

/// Start a drill, from `location` only or from the usual locations.
///
/// # Errors
/// An unknown location; no source with a staging target; catalog errors.
pub fn run_drill(
    shared: &Arc<Shared>,
    caller: &Caller,
    passed: Passed,
    location: Option<String>,
    people: &crate::drills::DrillPeople,
) -> Result<DrillRecord> {
    let drill =
        super::recovery::start_drill(shared, location.clone(), &caller.id.name, people, false)?;
    caller.done(
        shared,
        "drill run",
        format!(
            "{} from {} ({} sources){}",
            drill.id,
            location.as_deref().unwrap_or("the usual locations"),
            drill.steps.len(),
            mfa_note(passed)
        ),
    );
    Ok(drill)
}

/// Start a platform restore (every source with a target, in dependency
/// order, stopping at the first failure); audited like a restore.
///
/// # Errors
/// A bad target or time, an unknown location, no source with a target;
/// catalog errors.
pub fn restore_platform(
    shared: &Arc<Shared>,
    caller: &Caller,
    passed: Passed,
    r: &trireme_proto::v1::RestorePlatformRequest,
) -> Result<DrillRecord> {
    let to = crate::recovery::PlatformTarget::parse(&r.to)?;
    let location = (!r.from_location.is_empty()).then(|| r.from_location.clone());
    let at = match r.at_unix {
        0 => None,
        t => Some(
            chrono::DateTime::from_timestamp(t, 0)
                .ok_or_else(|| Error::BadRequest(format!("--at: {t} is not a time")))?,
        ),
    };
    let d = super::recovery::start_platform(shared, to, location.clone(), at, &caller.id.name)?;
    caller.done(
        shared,
        "restore platform",
        format!(
            "{} to {} from {}{} ({} sources){}",
            d.id,
            to.name(),
            location.as_deref().unwrap_or("the usual locations"),
            at.map(|t| format!(" at {}", t.to_rfc3339()))
                .unwrap_or_default(),
            d.steps.len(),
            mfa_note(passed)
        ),
    );
    Ok(d)
}

/// Record lessons learned (and participants) on a drill; audited.
///
/// # Errors
/// An unknown drill; nothing to record; catalog errors.
pub fn annotate_drill(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    lessons: &[String],
    participants: &[String],
) -> Result<DrillRecord> {
    let d = blocking(|| {
        crate::drills::annotate(
            &shared.catalog,
            id,
            &caller.id.name,
            lessons,
            participants,
            shared.now(),
        )
    })?;
    caller.done(
        shared,
        "drill annotate",
        format!(
            "{}: {} lesson(s), {} participant(s) added",
            d.id,
            lessons.len(),
            participants.len()
        ),
    );
    Ok(d)
}

/// Verify the locations now (and repair what can be), then report.
///
/// # Errors
/// An unknown location or snapshot; catalog errors.
pub async fn verify(shared: &Shared, caller: &Caller, ask: &VerifyAsk) -> Result<Verified> {
    let only = (!ask.location.is_empty()).then_some(ask.location.as_str());
    if let Some(l) = only {
        location(shared, l)?;
    }
    let snapshot: Option<SnapshotRecord> = if ask.snapshot.is_empty() {
        None
    } else {
        Some(views::find_snapshot(&shared.catalog, &ask.snapshot)?)
    };
    caller.done(
        shared,
        "verify",
        format!(
            "deep={} location={} snapshot={}",
            ask.deep, ask.location, ask.snapshot
        ),
    );
    let mut report = shared
        .replicator
        .verify_now(ask.deep, only, shared.now())
        .await?;
    let mut problems = std::mem::take(&mut report.problems);
    let sites: Vec<(String, trireme_common::DynBackend)> = shared
        .audit_mirrors
        .iter()
        .filter(|(n, _)| only.is_none_or(|o| o == n))
        .cloned()
        .collect();
    for p in crate::attribution::unbelieved_index_objects(&shared.catalog, &sites).await {
        shared.record(Event::controller("unattributed object", "verify").problem(p.clone()));
        problems.push(p);
    }
    if let Some(s) = snapshot {
        // Report on this snapshot's copies after the repair pass.
        if let Some(rec) = shared.catalog.snapshots().get(&s.id)? {
            for (loc, c) in &rec.copies {
                if !matches!(c, CopyState::Verified { .. }) {
                    problems.push(format!(
                        "snapshot {}: copy at {loc} is not verified ({c:?})",
                        s.id.short()
                    ));
                }
            }
        }
    }
    Ok(Verified { report, problems })
}

/// The master key under a recovery passphrase, for a cleared operator;
/// audited either way. Returns the export's text and the key's id.
///
/// # Errors
/// A key provider other than a local key file, a short passphrase, I/O
/// errors.
pub async fn export_key(
    shared: &Shared,
    caller: &Caller,
    passed: Passed,
    passphrase: String,
) -> Result<(String, String)> {
    let action = "key export";
    let refuse = |why: String| {
        caller.refused(shared, action, &why);
        why
    };
    let key_file = crate::recovery_key::local_key_file(&shared.key_source, "export")
        .map_err(|e| Error::Precondition(refuse(e.to_string())))?
        .to_path_buf();
    // argon2id takes a moment and 64 MiB: off the async workers.
    let (text, key_id) =
        tokio::task::spawn_blocking(move || crate::recovery_key::export(&key_file, &passphrase))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| match e {
                e @ crate::recovery_key::RecoveryError::ShortPassphrase(_) => {
                    Error::BadRequest(refuse(e.to_string()))
                }
                e => Error::Internal(refuse(e.to_string())),
            })?;
    caller.done(
        shared,
        action,
        format!("master key {key_id}{}", mfa_note(passed)),
    );
    Ok((text, key_id))
}

/// Check the audit chain and compare it with each location's mirror; the
/// check itself is audited (with what it found).
pub async fn verify_audit(shared: &Shared, caller: &Caller) -> AuditCheck {
    let chain = blocking(|| shared.catalog.audit().verify());
    let mut mirrors = Vec::new();
    for (name, backend) in &shared.audit_mirrors {
        let mut check = MirrorCheck {
            location: name.clone(),
            ..Default::default()
        };
        let mac_key = shared.custody.audit_mirror_key();
        match crate::audit::compare_mirror(&shared.catalog.audit(), backend, Some(&mac_key)).await {
            Ok((n, problems)) => {
                check.entries_compared = n;
                check.problems = problems;
            }
            Err(e) => check.error = e.to_string(),
        }
        mirrors.push(check);
    }
    let mirror_problems: usize = mirrors.iter().map(|m| m.problems.len()).sum();
    let mut event = Event::by(
        &caller.id,
        "audit verify",
        format!("{} entries", chain.checked),
    )
    .from_peer(caller.peer);
    if let Some(b) = &chain.broken {
        event = event.problem(b.problem.clone());
    } else if mirror_problems > 0 {
        event = event.problem(format!("{mirror_problems} disagreements with the mirrors"));
    }
    shared.audit(event);
    AuditCheck { chain, mirrors }
}

/// Start (or, with the current `code`, replace) the caller's TOTP
/// enrollment; audited.
///
/// # Errors
/// The refusal (audited when denied).
pub async fn mfa_enroll(
    shared: &Shared,
    caller: &Caller,
    code: Option<&str>,
) -> std::result::Result<Enrollment, MfaError> {
    let action = "mfa enroll";
    match shared.mfa.enroll(&caller.id.name, code, shared.now()).await {
        Ok(e) => {
            caller.done(shared, action, "new TOTP secret (unconfirmed)".into());
            Ok(e)
        }
        Err(MfaError::Denied(m)) => {
            caller.refused(shared, action, &m);
            Err(MfaError::Denied(m))
        }
        Err(e) => Err(e),
    }
}

/// Confirm the caller's TOTP enrollment with a first `code`; audited.
///
/// # Errors
/// The refusal (audited when denied).
pub async fn mfa_confirm(
    shared: &Shared,
    caller: &Caller,
    code: &str,
) -> std::result::Result<(), MfaError> {
    let action = "mfa confirm";
    match shared
        .mfa
        .confirm(&caller.id.name, code, shared.now())
        .await
    {
        Ok(()) => {
            caller.done(shared, action, "TOTP enrollment confirmed".into());
            Ok(())
        }
        Err(MfaError::Denied(m)) => {
            caller.refused(shared, action, &m);
            Err(MfaError::Denied(m))
        }
        Err(e) => Err(e),
    }
}
