//! Every mapping between the controller's domain types and the gRPC
//! messages of `trireme.v1` (what the handlers decode from requests and
//! encode into replies and agent messages). Plain field mapping: what to
//! show or store is decided in the domain modules ([`crate::views`],
//! [`crate::status`], [`super::actions`], [`super::reports`]).
//! The summary counters shared with the agent convert in
//! `trireme_net::wire`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use tonic::Status;
use trireme_common::{Id, WrappedKey};
use trireme_net::wire::{summary_from_wire, summary_to_wire};
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::{
    AgentInfo, ApplyPolicyReply, AuditEntry as WireAuditEntry, AuditMirrorCheck, CancelJob,
    ControllerMessage, DrillInfo, ExportKeyReply, ForgetSnapshotReply, GenerateDataKeyReply,
    HoldSnapshotRequest, JobAssignment, JobInfo, JobKeysReply, JobKind as WireJobKind, JobProgress,
    JobResult, JobState as WireJobState, KeyPair, ListAgentsReply, ListAuditReply,
    ListAuditRequest, ListDrillsReply, ListJobsReply, ListJobsRequest, ListLocationsReply,
    ListPoliciesReply, ListRestoreTestsReply, ListRestoreTestsRequest, ListSnapshotsReply,
    ListSnapshotsRequest, ListSourcesReply, LocationInfo, LocationRef, MfaConfirmReply,
    MfaEnrollReply, PolicyInfo, PruneLocation, PruneReply, PruneRequest, PruneSnapshot,
    RebuildCatalogReply, RegisterReply, RestoreRequest, RestoreTestInfo, ResultAck,
    RunDrillRequest, SnapshotCopy, SnapshotDependency, SnapshotHold, SnapshotInfo, SourceEntry,
    SourceInfo, SourceProtection, SourceRecovery, SourceRef, StatusReply, UnwrapDataKeysReply,
    VerifyAuditReply, VerifyReply, VerifyRequest, VolumeUsage,
};

use super::actions::outcomes::{AuditCheck, PolicyApplied, RestoreAsk, Verified, VerifyAsk};
use super::grants::JobGrant;
use super::reports::JobReport;
use super::LocationConfig;
use crate::audit::AuditEntry;
use crate::error::{Error, Result};
use crate::jobs::{Job, JobKind, JobState, Progress, RestorePurpose, Trigger};
use crate::mfa::{Enrollment, MfaError};
use crate::policy::BackupMode;
use crate::prune::{LocationOutcome, PruneOutcome, Verdict};
use crate::rebuild::RebuildReport;
use crate::recovery::{DrillRecord, RestoreTestRecord};
use crate::replication::LocationState;
use crate::snapshots::{CopyState, SnapshotRecord};
use crate::sources::SourceRecord;
use crate::status::{FleetStatus, Volume};
use crate::views::{
    self, AgentView, JobFilter, JobView, PolicyView, SnapshotFilter, SnapshotView, SourceView,
    StateFilter,
};
use crate::SourceId;

fn unix(t: DateTime<Utc>) -> i64 {
    t.timestamp()
}

impl From<MfaError> for Status {
    fn from(e: MfaError) -> Self {
        match e {
            MfaError::Denied(m) => Status::permission_denied(m),
            MfaError::Throttled(m) => Status::resource_exhausted(m),
            MfaError::Internal(e) => e.into(),
        }
    }
}

// ---- operator: requests ----

/// A source as `agent/source`.
///
/// # Errors
/// No source given, or an invalid name.
pub fn source_id(r: Option<&SourceRef>) -> Result<SourceId> {
    let r = r.ok_or_else(|| Error::BadRequest("give a source as agent/source".into()))?;
    SourceId::new(r.agent.clone(), r.source.clone())
}

/// A `ListJobs` state filter (none: every state, also for values this
/// controller does not know).
pub fn state_filter(state: i32) -> Option<StateFilter> {
    match WireJobState::try_from(state).ok()? {
        WireJobState::Unspecified => None,
        WireJobState::Queued => Some(StateFilter::Queued),
        WireJobState::Running => Some(StateFilter::Running),
        WireJobState::Succeeded => Some(StateFilter::Succeeded),
        WireJobState::Failed => Some(StateFilter::Failed),
        WireJobState::Cancelled => Some(StateFilter::Cancelled),
    }
}

/// Which jobs `ListJobs` asks for.
pub fn job_filter(r: ListJobsRequest) -> JobFilter {
    JobFilter {
        state: state_filter(r.state),
        limit: views::page(r.limit),
        agent: r.agent,
        source: r.source,
    }
}

/// Which snapshots `ListSnapshots` asks for.
pub fn snapshot_filter(r: ListSnapshotsRequest) -> SnapshotFilter {
    let source = r.source.unwrap_or_default();
    let time = |t: i64| (t != 0).then(|| DateTime::from_timestamp(t, 0)).flatten();
    SnapshotFilter {
        agent: source.agent,
        source: source.source,
        tags: r.tags,
        since: time(r.since_unix),
        until: time(r.until_unix),
        limit: views::page(r.limit),
    }
}

/// A hold as asked: the snapshot, the reason, and when it ends.
pub fn hold_ask(r: HoldSnapshotRequest) -> (String, String, Option<DateTime<Utc>>) {
    let until = (r.until_unix != 0)
        .then(|| DateTime::from_timestamp(r.until_unix, 0))
        .flatten();
    (r.id, r.reason, until)
}

/// A snapshot with its hold and tags as the CLI shows it, at `now` (an
/// expired hold shows as inactive), and whether `rule` counts it protected.
pub fn snapshot_view_info(
    v: &SnapshotView,
    now: DateTime<Utc>,
    rule: &crate::protection::ProtectionRule,
) -> SnapshotInfo {
    let mut info = snapshot_info(&v.record);
    info.protected = rule.met_by(v.record.verified_locations());
    info.hold = v.marks.hold.as_ref().map(|h| SnapshotHold {
        reason: h.reason.clone(),
        by: h.by.clone(),
        since_unix: unix(h.since),
        until_unix: h.until.map_or(0, unix),
        active: h.active(now),
    });
    info.tags = v.marks.tags.iter().cloned().collect();
    info
}

/// What a forget did.
pub fn forget_reply(f: &crate::holds::Forgotten, note: &str) -> ForgetSnapshotReply {
    ForgetSnapshotReply {
        id: f.record.id.to_hex(),
        source: Some(source_ref(&f.record.source)),
        time_unix: unix(f.record.time),
        removed_at: f.removed_at.clone(),
        pending: f.pending.iter().map(|(l, e)| format!("{l}: {e}")).collect(),
        note: note.to_string(),
    }
}

/// The one source `ListRestoreTests` asks about, if any.
///
/// # Errors
/// An invalid source name.
pub fn restore_tests_of(r: &ListRestoreTestsRequest) -> Result<Option<SourceId>> {
    match &r.source {
        Some(s) if !s.agent.is_empty() => Some(source_id(Some(s))).transpose(),
        _ => Ok(None),
    }
}

/// A restore as asked.
///
/// # Errors
/// [`Error::BadRequest`] for a bad `--path`, glob or overwrite mode.
pub fn restore_ask(r: RestoreRequest) -> Result<RestoreAsk> {
    Ok(RestoreAsk {
        selection: crate::jobs::RestoreSelection::new(&r.path, r.include, r.exclude, &r.overwrite)?,
        snapshot: r.snapshot_id,
        to_agent: r.to_agent,
        target: r.target,
    })
}

/// A verification as asked.
pub fn verify_ask(r: VerifyRequest) -> VerifyAsk {
    VerifyAsk {
        deep: r.deep,
        location: r.location,
        snapshot: r.snapshot_id,
    }
}

/// The agent and source names a prune is limited to (both empty: none).
pub fn prune_source(r: &PruneRequest) -> (String, String) {
    r.source
        .as_ref()
        .map(|s| (s.agent.clone(), s.source.clone()))
        .unwrap_or_default()
}

/// `ListAudit`'s filter: entries since a time, by an actor.
pub fn audit_filter(r: &ListAuditRequest) -> (Option<DateTime<Utc>>, Option<&str>) {
    let since = (r.since_unix != 0)
        .then(|| DateTime::<Utc>::from_timestamp(r.since_unix, 0))
        .flatten();
    let actor = (!r.actor.is_empty()).then_some(r.actor.as_str());
    (since, actor)
}

/// A drill's location: empty for the usual ones.
pub fn drill_location(r: RunDrillRequest) -> (Option<String>, crate::drills::DrillPeople) {
    (
        (!r.location.is_empty()).then_some(r.location),
        crate::drills::DrillPeople {
            roles: r.roles.into_iter().collect(),
            channel: r.channel,
            participants: r.participants,
            failover: Vec::new(),
            rollback: Vec::new(),
        },
    )
}

/// A manual backup's mode.
pub fn backup_mode(full: bool) -> BackupMode {
    if full {
        BackupMode::Full
    } else {
        BackupMode::Incremental
    }
}

// ---- operator: replies ----

/// A source as `agent/source`.
pub fn source_ref(s: &SourceId) -> SourceRef {
    SourceRef {
        agent: s.agent.clone(),
        source: s.name.clone(),
    }
}

/// A job as the CLI shows it (a running job's rate as of now).
pub fn job_info(view: &JobView) -> JobInfo {
    let (job, snapshot) = (&view.job, view.snapshot.as_ref());
    let mut info = JobInfo {
        id: job.id.to_string(),
        source: Some(source_ref(&job.source)),
        created_unix: unix(job.created),
        attempt: job.attempt,
        agent: job.agent().to_string(),
        trigger: match &job.trigger {
            Trigger::Schedule { missed, .. } if *missed > 0 => {
                format!("schedule (catching up {missed} missed)")
            }
            Trigger::Schedule { .. } => "schedule".into(),
            Trigger::Retry { previous, .. } => format!("retry of {previous}"),
            Trigger::Manual { by } => format!("manual by {by}"),
        },
        ..Default::default()
    };
    match &job.kind {
        JobKind::Backup => {
            info.set_kind(WireJobKind::Backup);
            info.mode = job.mode.to_string();
        }
        JobKind::Restore {
            snapshot,
            target,
            selection,
            ..
        } => {
            info.set_kind(WireJobKind::Restore);
            info.restore_snapshot_id = snapshot.to_hex();
            info.restore_target = target.clone();
            info.restore_selection = selection.describe();
        }
    }
    let state = match &job.state {
        JobState::Queued => WireJobState::Queued,
        JobState::Assigned { .. } => WireJobState::Running,
        JobState::Running {
            started, progress, ..
        } => {
            info.started_unix = unix(*started);
            let secs = (Utc::now() - *started).num_milliseconds().max(1) as f64 / 1000.0;
            info.progress = Some(JobProgress {
                job_id: job.id.to_string(),
                bytes_read: progress.bytes_done,
                bytes_uploaded: progress.bytes_uploaded,
                files: progress.files_done,
                bytes_per_sec: progress.bytes_done as f64 / secs,
                bytes_total: progress.bytes_total.unwrap_or(0),
            });
            WireJobState::Running
        }
        JobState::Succeeded { snapshot, finished } => {
            info.finished_unix = unix(*finished);
            info.snapshot_id = snapshot.to_hex();
            WireJobState::Succeeded
        }
        JobState::Failed { reason, finished } => {
            info.finished_unix = unix(*finished);
            info.error_message = reason.clone();
            WireJobState::Failed
        }
        JobState::Cancelled { reason, finished } => {
            info.finished_unix = unix(*finished);
            info.error_message = reason.clone();
            WireJobState::Cancelled
        }
    };
    info.set_state(state);
    if let Some(s) = snapshot.filter(|_| job.is_backup()) {
        let secs = match &job.state {
            JobState::Succeeded { finished, .. } if s.job.is_some() => {
                (*finished - s.time).num_milliseconds().max(0) as f64 / 1000.0
            }
            _ => 0.0,
        };
        info.summary = Some(summary_to_wire(&s.summary, secs));
    }
    info.checks.clone_from(&job.checks);
    info
}

/// A snapshot as the CLI shows it.
pub fn snapshot_info(s: &SnapshotRecord) -> SnapshotInfo {
    SnapshotInfo {
        id: s.id.to_hex(),
        source: Some(source_ref(&s.source)),
        time_unix: unix(s.time),
        parent_id: String::new(),
        summary: Some(summary_to_wire(&s.summary, 0.0)),
        datastore_position: s.position.clone().into_iter().collect(),
        copies: s
            .copies
            .iter()
            .map(|(loc, c)| {
                let (state, verified, at, detail) = match c {
                    CopyState::Verified { at } => ("verified", true, unix(*at), String::new()),
                    CopyState::Copied { at } => ("copied", false, unix(*at), String::new()),
                    CopyState::Copying { since } => ("copying", false, unix(*since), String::new()),
                    CopyState::Damaged { at, reason } => {
                        ("failed", false, unix(*at), reason.clone())
                    }
                    CopyState::Incomplete { at, reason } => {
                        ("incomplete", false, unix(*at), reason.clone())
                    }
                    CopyState::Pending => ("pending", false, 0, String::new()),
                };
                SnapshotCopy {
                    location: loc.clone(),
                    verified,
                    verified_unix: if verified { at } else { 0 },
                    state: state.to_string(),
                    detail,
                }
            })
            .collect(),
        agent: s.agent.clone(),
        size: s.size,
        depends_on: s
            .depends_on
            .iter()
            .map(|d| SnapshotDependency {
                id: d.snapshot.to_hex(),
                chain: d.chain.clone(),
            })
            .collect(),
        hold: None,
        tags: Vec::new(),
        // Set by the caller that knows the rule.
        protected: false,
    }
}

/// A source an agent reported, by its name.
fn source_info(name: String, s: SourceRecord) -> SourceInfo {
    SourceInfo {
        name,
        kind: s.kind,
        details: s.details.into_iter().collect(),
        kind_info: s
            .drill_rank
            .map(|drill_rank| trireme_proto::v1::SourceKindInfo { drill_rank }),
    }
}

/// An agent as the CLI shows it.
fn agent_info(a: AgentView) -> AgentInfo {
    AgentInfo {
        connected: a.connected,
        last_seen_unix: unix(a.last_seen),
        certificate_not_after_unix: a.record.certificate_not_after.map_or(0, unix),
        name: a.name,
        version: a.record.version,
        hostname: a.record.hostname,
        sources: a
            .sources
            .into_iter()
            .map(|(id, s)| source_info(id.name, s))
            .collect(),
    }
}

/// Every agent.
pub fn agents_reply(agents: Vec<AgentView>) -> ListAgentsReply {
    ListAgentsReply {
        agents: agents.into_iter().map(agent_info).collect(),
    }
}

/// Sources with their policies' schedules.
pub fn sources_reply(sources: Vec<SourceView>) -> ListSourcesReply {
    ListSourcesReply {
        sources: sources.into_iter().map(source_entry).collect(),
    }
}

/// Policies with their next runs.
pub fn policies_reply(policies: Vec<PolicyView>) -> ListPoliciesReply {
    ListPoliciesReply {
        policies: policies.into_iter().map(policy_info).collect(),
    }
}

/// Jobs with their snapshots.
pub fn jobs_reply(jobs: &[JobView]) -> ListJobsReply {
    ListJobsReply {
        jobs: jobs.iter().map(job_info).collect(),
    }
}

/// Snapshots.
pub fn snapshots_reply(
    snapshots: &[SnapshotView],
    now: DateTime<Utc>,
    rule: &crate::protection::ProtectionRule,
) -> ListSnapshotsReply {
    ListSnapshotsReply {
        snapshots: snapshots
            .iter()
            .map(|v| snapshot_view_info(v, now, rule))
            .collect(),
    }
}

/// Every location with its state after the last pass (none yet: the
/// default state).
pub fn locations_reply(
    locations: &[LocationConfig],
    states: &BTreeMap<String, LocationState>,
) -> ListLocationsReply {
    ListLocationsReply {
        locations: locations
            .iter()
            .map(|l| location_info(l, states.get(&l.name).cloned().unwrap_or_default()))
            .collect(),
    }
}

/// Restore tests.
pub fn restore_tests_reply(tests: &[RestoreTestRecord]) -> ListRestoreTestsReply {
    ListRestoreTestsReply {
        tests: tests.iter().map(restore_test_info).collect(),
    }
}

/// Drills, without their reports.
pub fn drills_reply(drills: &[DrillRecord]) -> ListDrillsReply {
    ListDrillsReply {
        drills: drills.iter().map(|d| drill_info(d, false)).collect(),
    }
}

/// Audit log entries.
pub fn audit_reply(entries: Vec<AuditEntry>) -> ListAuditReply {
    ListAuditReply {
        entries: entries.into_iter().map(audit_entry).collect(),
    }
}

/// A confirmed TOTP enrollment of `account`.
pub fn mfa_confirm_reply(account: String) -> MfaConfirmReply {
    MfaConfirmReply { account }
}

/// The master key's export and the key's id.
pub fn export_key_reply(export: String, key_id: String) -> ExportKeyReply {
    ExportKeyReply { export, key_id }
}

/// A source with its policy's schedule.
fn source_entry(s: SourceView) -> SourceEntry {
    SourceEntry {
        agent: s.id.agent.clone(),
        source: Some(source_info(s.id.name, s.record)),
        policy: s.schedule,
    }
}

/// A policy with its next run.
fn policy_info(p: PolicyView) -> PolicyInfo {
    PolicyInfo {
        name: p.source.to_string(),
        toml: p.toml,
        next_run_unix: p.next_run.map_or(0, unix),
    }
}

/// What applying a policy file did, per source, and the warnings.
pub fn apply_policy_reply(a: PolicyApplied) -> ApplyPolicyReply {
    let r = &a.report;
    let applied = r
        .created
        .iter()
        .map(|s| format!("{s} (new)"))
        .chain(r.updated.iter().map(|s| format!("{s} (updated)")))
        .chain(r.unchanged.iter().map(|s| format!("{s} (unchanged)")))
        .collect();
    ApplyPolicyReply {
        applied,
        warnings: a.warnings,
    }
}

/// A location with its state after the last pass.
fn location_info(l: &LocationConfig, st: LocationState) -> LocationInfo {
    LocationInfo {
        name: l.name.clone(),
        url: l.location.to_string(),
        reachable: st.reachable,
        last_error: st.last_error,
        objects: st.objects,
        bytes: st.bytes,
        last_sync_unix: st.last_sync.map_or(0, unix),
        last_quick_verify_unix: st.last_quick_verify.map_or(0, unix),
        last_deep_round_unix: st.last_deep_round.map_or(0, unix),
        deep_round_progress: st.deep_progress,
        problems_found: st.problems_found,
        problems_repaired: st.problems_repaired,
        incidents: st.incidents.iter().take(10).cloned().collect(),
        role: l.role.clone(),
        region: l.region.clone(),
        provider: l.provider.clone(),
    }
}

/// The fleet's state.
pub fn status_reply(s: FleetStatus) -> StatusReply {
    StatusReply {
        version: s.version,
        agents_total: s.agents_total as u32,
        agents_connected: s.agents_connected as u32,
        jobs_queued: s.jobs_queued as u32,
        jobs_running: s.jobs_running as u32,
        jobs_failed_24h: s.jobs_failed_24h as u32,
        locations_total: s.locations_total as u32,
        protection: s
            .protection
            .iter()
            .map(|p| SourceProtection {
                source: Some(source_ref(&p.source)),
                snapshot_id: p.full.as_ref().map(|s| s.id.to_hex()).unwrap_or_default(),
                snapshot_time_unix: p.full.as_ref().map_or(0, |s| unix(s.time)),
                newest_snapshot_id: p.newest.id.to_hex(),
                newest_verified_copies: p.newest_verified as u32,
                newest_shortfall: p.newest_shortfall.clone(),
            })
            .collect(),
        recovery: s
            .recovery
            .iter()
            .map(|h| {
                let t = h.last_test.as_ref();
                SourceRecovery {
                    source: Some(source_ref(&h.source)),
                    state: if h.red() { "red" } else { "green" }.to_string(),
                    rpo_secs: h.rpo.map_or(0.0, |d| d.as_secs_f64()),
                    age_secs: h.age.map_or(-1.0, |d| d.as_secs_f64()),
                    rto_secs: h.rto.map_or(0.0, |d| d.as_secs_f64()),
                    last_test_unix: t.and_then(|t| t.finished).map_or(0, unix),
                    last_test_ok: t.is_some_and(|t| t.ok),
                    last_test_secs: t.map_or(0.0, |t| t.duration_secs),
                    problems: h.problems.clone(),
                }
            })
            .collect(),
        problems: s.problems,
        protection_rule: s.protection_rule,
        rule_problems: s.rule_problems,
        state: s.state,
    }
}

/// What a verification found.
pub fn verify_reply(v: Verified) -> VerifyReply {
    VerifyReply {
        objects_checked: v.report.checked,
        bytes_read: v.report.bytes_read,
        problems: v.problems,
        repaired: v.report.repaired,
        unrepaired: v.report.unrepaired,
        objects_copied: v.report.copied,
        bytes_copied: v.report.copied_bytes,
    }
}

/// What a catalog rebuild found and did.
pub fn rebuild_reply(r: RebuildReport) -> RebuildCatalogReply {
    RebuildCatalogReply {
        found: r.found as u32,
        added: r.added as u32,
        known: r.known as u32,
        sources_added: r.sources_added as u32,
        skipped: r.skipped,
    }
}

/// A restore test as the CLI shows it.
pub fn restore_test_info(t: &RestoreTestRecord) -> RestoreTestInfo {
    RestoreTestInfo {
        job_id: t.job.to_string(),
        source: Some(source_ref(&t.source)),
        snapshot_id: t.snapshot.to_hex(),
        target: t.target.clone(),
        started_unix: unix(t.started),
        finished_unix: t.finished.map_or(0, unix),
        duration_secs: t.duration_secs,
        rto_secs: t.rto.map_or(0.0, |d| d.as_secs_f64()),
        ok: t.ok,
        checks: t.checks.clone(),
        error: t.error.clone(),
        drill_id: t.drill.clone().unwrap_or_default(),
        location: t.location.clone().unwrap_or_default(),
    }
}

/// A drill as the CLI shows it; `report`: with the Markdown and HTML.
pub fn drill_info(d: &DrillRecord, report: bool) -> DrillInfo {
    DrillInfo {
        id: d.id.clone(),
        location: d.location.clone().unwrap_or_default(),
        by: d.by.clone(),
        started_unix: unix(d.started),
        finished_unix: d.finished.map_or(0, unix),
        ok: d.ok(),
        steps_total: d.steps.len() as u32,
        steps_failed: crate::views::drill_steps_failed(d) as u32,
        markdown: if report {
            crate::recovery::report_markdown(d)
        } else {
            String::new()
        },
        html: if report {
            crate::recovery::report_html(d)
        } else {
            String::new()
        },
        scheduled: d.scheduled,
        platform: d.platform.map(|p| p.name().to_string()).unwrap_or_default(),
        at_unix: d.at.map_or(0, unix),
        roles: d
            .people
            .roles
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        channel: d.people.channel.clone(),
        participants: d.people.participants.clone(),
        lessons: d
            .lessons
            .iter()
            .map(|l| trireme_proto::v1::DrillLesson {
                at_unix: unix(l.at),
                by: l.by.clone(),
                text: l.text.clone(),
            })
            .collect(),
    }
}

/// An audit log entry.
fn audit_entry(e: AuditEntry) -> WireAuditEntry {
    WireAuditEntry {
        seq: e.seq,
        time: e.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        actor: e.actor,
        role: e.role,
        action: e.action,
        target: e.target,
        outcome: e.outcome.as_str().to_string(),
        reason: e.reason,
        peer: e.peer,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

/// What checking the audit log found.
pub fn verify_audit_reply(c: AuditCheck) -> VerifyAuditReply {
    let (head_seq, head_hash) = c.chain.head.unwrap_or_default();
    let broken = c.chain.broken;
    VerifyAuditReply {
        entries_checked: c.chain.checked,
        first_broken_seq: broken.as_ref().map_or(0, |b| b.seq),
        problem: broken.map(|b| b.problem).unwrap_or_default(),
        head_seq,
        head_hash,
        mirrors: c
            .mirrors
            .into_iter()
            .map(|m| AuditMirrorCheck {
                location: m.location,
                entries_compared: m.entries_compared,
                problems: m.problems,
                error: m.error,
            })
            .collect(),
    }
}

/// A new TOTP enrollment of `account`.
pub fn mfa_enroll_reply(account: String, e: Enrollment) -> MfaEnrollReply {
    MfaEnrollReply {
        account,
        secret_base32: e.secret_base32,
        otpauth_uri: e.uri,
    }
}

fn prune_snapshot(v: &Verdict) -> PruneSnapshot {
    PruneSnapshot {
        id: v.id.to_hex(),
        source: v.source.to_string(),
        time_unix: v.time.timestamp(),
        reason: v.reason.clone(),
        needed_by: v
            .needed_by
            .as_ref()
            .map(|n| n.snapshot.to_hex())
            .unwrap_or_default(),
        chain: v
            .needed_by
            .as_ref()
            .map(|n| n.chain.clone())
            .unwrap_or_default(),
        held: v.held,
    }
}

fn prune_location(o: &LocationOutcome) -> PruneLocation {
    PruneLocation {
        name: o.name.clone(),
        skipped: o.skipped.clone().unwrap_or_default(),
        error: o.error.clone().unwrap_or_default(),
        snapshots_removed: o.snapshots_removed.iter().map(|i| i.to_hex()).collect(),
        packs_deleted: o.packs_deleted,
        index_deleted: o.index_deleted,
        index_written: o.index_written,
        bytes_freed: o.bytes_freed,
        locked: o.locked.clone(),
        mixed_packs: o.mixed_packs,
        unused_bytes: o.unused_bytes,
        unindexed_packs: o.unindexed_packs,
    }
}

/// What a prune removed (or would), kept, and did at each location.
pub fn prune_reply(o: &PruneOutcome) -> PruneReply {
    PruneReply {
        dry_run: o.dry_run,
        removed: o.removed.iter().map(prune_snapshot).collect(),
        kept: o.kept.iter().map(prune_snapshot).collect(),
        locations: o.locations.iter().map(prune_location).collect(),
        notes: o.notes.clone(),
    }
}

// ---- agents ----

/// The sources an agent reports, as seen at `now`.
pub fn source_records(sources: &[SourceInfo], now: DateTime<Utc>) -> Vec<(String, SourceRecord)> {
    sources
        .iter()
        .map(|s| {
            (
                s.name.clone(),
                SourceRecord {
                    kind: s.kind.clone(),
                    details: s.details.clone().into_iter().collect(),
                    last_seen: now,
                    drill_rank: s.kind_info.as_ref().map(|k| k.drill_rank),
                },
            )
        })
        .collect()
}

/// The reply to an agent's registration.
pub fn register_reply(agent: String, heartbeat: std::time::Duration) -> RegisterReply {
    RegisterReply {
        agent_name: agent,
        heartbeat_interval_secs: u32::try_from(heartbeat.as_secs()).unwrap_or(u32::MAX),
    }
}

/// A running job's progress as its agent reports it.
pub fn progress(p: &JobProgress) -> Progress {
    Progress {
        bytes_done: p.bytes_read,
        bytes_total: (p.bytes_total > 0).then_some(p.bytes_total),
        files_done: p.files,
        bytes_uploaded: p.bytes_uploaded,
    }
}

/// A job's outcome as its agent reports it.
pub fn job_report(r: &JobResult) -> JobReport {
    JobReport {
        job_id: r.job_id.clone(),
        ok: r.ok,
        error_message: r.error_message.clone(),
        snapshot_id: r.snapshot_id.clone(),
        location: r.location.clone(),
        checks: r.checks.clone(),
        took_ms: r
            .summary
            .as_ref()
            .map(|s| (s.duration_secs * 1000.0) as u64),
    }
}

/// The parts of a result the controller does not keep, decoded as the
/// fuzz target checks them: the counters, the snapshot's time and the
/// datastore position.
pub fn result_extras(
    r: &JobResult,
) -> (
    trireme_common::manifest::Summary,
    DateTime<Utc>,
    BTreeMap<String, String>,
) {
    (
        r.summary
            .as_ref()
            .map(summary_from_wire)
            .unwrap_or_default(),
        DateTime::from_timestamp_nanos(r.snapshot_time_ns),
        r.datastore_position.clone().into_iter().collect(),
    )
}

/// The data volumes an agent reports for its sources (those with a valid
/// source name), as seen at `now`.
pub fn volumes(
    agent: &str,
    reported: &[VolumeUsage],
    now: DateTime<Utc>,
) -> Vec<(SourceId, Volume)> {
    reported
        .iter()
        .filter_map(|v| {
            let id = SourceId::new(agent.to_string(), v.source.clone()).ok()?;
            Some((
                id,
                Volume {
                    path: v.path.clone(),
                    total_bytes: v.total_bytes,
                    used_bytes: v.used_bytes,
                    at: now,
                },
            ))
        })
        .collect()
}

/// A backup's limits from its source's policy, for the agent.
pub fn with_limits(a: &mut JobAssignment, l: &crate::policy::SourceLimits) {
    a.exclude.clone_from(&l.exclude);
    a.exclude_if_present.clone_from(&l.exclude_if_present);
    a.one_file_system = l.one_file_system;
    a.upload_bytes_per_sec = l.upload_bytes_per_sec.unwrap_or(0);
}

/// A job as sent to its agent: the locations to use (every one, or the
/// one a drill is pinned to), and for an incremental backup its `parent`.
pub fn assignment(
    job: &Job,
    locations: &[LocationConfig],
    config_sha256: &[u8],
    parent: Option<Id>,
) -> JobAssignment {
    let locations = locations
        .iter()
        .map(|l| LocationRef {
            name: l.name.clone(),
            url: l.agent_url.clone(),
            config_sha256: config_sha256.to_vec(),
        })
        .collect();
    let mut a = JobAssignment {
        job_id: job.id.to_string(),
        source_name: job.source.name.clone(),
        attempt: job.attempt,
        locations,
        ..Default::default()
    };
    match &job.kind {
        JobKind::Backup => {
            a.set_kind(WireJobKind::Backup);
            a.full = job.mode == BackupMode::Full;
            a.parent_snapshot_id = parent.map(|id| id.to_hex()).unwrap_or_default();
        }
        JobKind::Restore {
            snapshot,
            target,
            purpose,
            only_location,
            selection,
            ..
        } => {
            a.set_kind(WireJobKind::Restore);
            a.snapshot_id = snapshot.to_hex();
            a.restore_target = target.clone();
            a.restore_path = selection.path.clone().unwrap_or_default();
            a.restore_include = selection.include.clone();
            a.restore_exclude = selection.exclude.clone();
            a.restore_overwrite = selection
                .overwrite
                .map(|o| o.to_string())
                .unwrap_or_default();
            a.restore_test = !matches!(purpose, RestorePurpose::Restore);
            if let Some(only) = only_location {
                a.locations.retain(|l| &l.name == only);
            }
        }
    }
    a
}

/// A controller message.
pub fn message(msg: CtlMsg) -> ControllerMessage {
    ControllerMessage { msg: Some(msg) }
}

/// "Stop job `job_id`", with why.
pub fn cancel(job_id: String, reason: String) -> CtlMsg {
    CtlMsg::Cancel(CancelJob { job_id, reason })
}

/// "The result of `job_id` is stored": the agent may forget it.
pub fn ack(job_id: &str) -> ControllerMessage {
    message(CtlMsg::Ack(ResultAck {
        job_id: job_id.to_string(),
    }))
}

// ---- keys ----

/// A new data key, in the clear and wrapped.
pub fn data_key_reply(key: &[u8], wrapped: WrappedKey) -> GenerateDataKeyReply {
    GenerateDataKeyReply {
        data_key: key.to_vec(),
        wrapped_key: wrapped.0,
    }
}

/// Data keys, in the order asked.
pub fn unwrap_reply(data_keys: Vec<Vec<u8>>) -> UnwrapDataKeysReply {
    UnwrapDataKeysReply { data_keys }
}

/// Wrapped keys as an agent sends them.
pub fn wrapped_keys(keys: Vec<Vec<u8>>) -> Vec<WrappedKey> {
    keys.into_iter().map(WrappedKey).collect()
}

/// A job's keys and what else its scope allows.
pub fn job_keys_reply(grant: JobGrant) -> JobKeysReply {
    let scope = grant.scope();
    JobKeysReply {
        snapshots: scope.snapshots.iter().map(|s| s.to_hex()).collect(),
        packs_limited: scope.packs.is_some(),
        packs: scope.packs.iter().flatten().map(|p| p.0.to_vec()).collect(),
        index_limited: scope.index_objects.is_some(),
        index_objects: scope.index_objects.iter().flatten().cloned().collect(),
        keys: grant
            .keys
            .into_iter()
            .map(|(w, k)| KeyPair {
                wrapped_key: w.0,
                data_key: k,
            })
            .collect(),
        attribution_key: grant.attribution_key,
        attribution_agent: grant.agent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_decoding_keeps_the_codes_and_messages_of_the_api() {
        let status = Status::from(source_id(None).unwrap_err());
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
        assert_eq!(status.message(), "give a source as agent/source");
        assert_eq!(state_filter(0), None);
        assert_eq!(state_filter(99), None);
        assert_eq!(
            state_filter(WireJobState::Running as i32),
            Some(StateFilter::Running)
        );
        let r = ListRestoreTestsRequest {
            source: Some(SourceRef {
                agent: String::new(),
                source: "redis".into(),
            }),
            limit: 0,
        };
        assert_eq!(restore_tests_of(&r).unwrap(), None);
    }

    #[test]
    fn results_and_errors_of_agents_map_field_by_field() {
        let r = JobResult {
            job_id: "j".into(),
            ok: true,
            snapshot_id: "ab".into(),
            location: "primary".into(),
            checks: vec!["keys: 3".into()],
            summary: Some(trireme_proto::v1::JobSummary {
                duration_secs: 1.5,
                ..Default::default()
            }),
            ..Default::default()
        };
        let report = job_report(&r);
        assert_eq!(report.took_ms, Some(1500));
        assert_eq!(report.checks, r.checks);
        let denied = Status::from(MfaError::Denied("no".into()));
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        let throttled = Status::from(MfaError::Throttled("later".into()));
        assert_eq!(throttled.code(), tonic::Code::ResourceExhausted);
    }
}
