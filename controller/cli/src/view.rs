//! How each API message looks: a table row, a `key: value` listing, and a
//! JSON object. The JSON shapes are the CLI's stable interface for scripts
//! (documented in the README's CLI section); they change only by adding
//! fields.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use trireme_proto::v1::{
    AgentInfo, JobInfo, JobKind, JobProgress, JobState, JobSummary, LocationInfo, PingReply,
    PolicyInfo, SnapshotCopy, SnapshotHold, SnapshotInfo, SourceEntry, SourceProtection, SourceRef,
    StatusReply, VerifyReply, VerifyRequest,
};

use crate::output::{
    age, duration, elapsed, fields, json_str, json_time, or_dash, rate, size, table, time,
};

/// Snapshot ids in tables: as many hex digits as `Id::short` (enough for a
/// prefix the controller resolves).
const SHORT_SNAPSHOT: usize = 8;

/// A job state as a lowercase word.
pub fn state_name(state: i32) -> &'static str {
    match JobState::try_from(state) {
        Ok(JobState::Queued) => "queued",
        Ok(JobState::Running) => "running",
        Ok(JobState::Succeeded) => "succeeded",
        Ok(JobState::Failed) => "failed",
        Ok(JobState::Cancelled) => "cancelled",
        Ok(JobState::Unspecified) | Err(_) => "unknown",
    }
}

/// Whether a job in this state will not change any more.
pub fn is_final(state: i32) -> bool {
    matches!(
        JobState::try_from(state),
        Ok(JobState::Succeeded | JobState::Failed | JobState::Cancelled)
    )
}

/// A job kind as a lowercase word.
pub fn kind_name(kind: i32) -> &'static str {
    match JobKind::try_from(kind) {
        Ok(JobKind::Backup) => "backup",
        Ok(JobKind::Restore) => "restore",
        Ok(JobKind::Check) => "check",
        Ok(JobKind::Unspecified) | Err(_) => "unknown",
    }
}

/// The first line of `s`, cut to `max` characters (with `…`).
fn first_line(s: &str, max: usize) -> String {
    let l = s.lines().next().unwrap_or("");
    if l.chars().count() > max {
        format!(
            "{}…",
            l.chars().take(max.saturating_sub(1)).collect::<String>()
        )
    } else {
        l.to_string()
    }
}

fn short(id: &str, n: usize) -> String {
    if id.is_empty() {
        "-".into()
    } else {
        id.chars().take(n).collect()
    }
}

/// `agent/source`, `-` when unset.
pub fn source_text(s: Option<&SourceRef>) -> String {
    match s {
        Some(s) if !s.agent.is_empty() || !s.source.is_empty() => {
            format!("{}/{}", s.agent, s.source)
        }
        _ => "-".into(),
    }
}

pub fn source_json(s: Option<&SourceRef>) -> Value {
    match s {
        Some(s) if !s.agent.is_empty() || !s.source.is_empty() => {
            json!({ "agent": s.agent, "name": s.source })
        }
        _ => Value::Null,
    }
}

fn details_text(d: &std::collections::HashMap<String, String>) -> String {
    let sorted: BTreeMap<_, _> = d.iter().collect();
    if sorted.is_empty() {
        return "-".into();
    }
    sorted
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn details_json(d: &std::collections::HashMap<String, String>) -> Value {
    json!(d.iter().collect::<BTreeMap<_, _>>())
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

// ---- agents and sources ----

/// `agents ls` as a table.
pub fn agents_table(agents: &[AgentInfo]) -> String {
    let rows = agents
        .iter()
        .map(|a| {
            let sources: Vec<&str> = a.sources.iter().map(|s| s.name.as_str()).collect();
            vec![
                a.name.clone(),
                if a.connected { "connected" } else { "offline" }.into(),
                or_dash(&a.hostname),
                or_dash(&a.version),
                time(a.last_seen_unix),
                time(a.certificate_not_after_unix),
                if sources.is_empty() {
                    "-".into()
                } else {
                    sources.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATE",
            "HOSTNAME",
            "VERSION",
            "LAST SEEN",
            "CERT EXPIRES",
            "SOURCES",
        ],
        rows,
    )
}

/// An agent as JSON.
pub fn agent_json(a: &AgentInfo) -> Value {
    json!({
        "name": a.name,
        "connected": a.connected,
        "hostname": json_str(&a.hostname),
        "version": json_str(&a.version),
        "last_seen": json_time(a.last_seen_unix),
        "certificate_not_after": json_time(a.certificate_not_after_unix),
        "sources": a.sources.iter().map(|s| json!({
            "name": s.name,
            "kind": json_str(&s.kind),
            "details": details_json(&s.details),
        })).collect::<Vec<_>>(),
    })
}

/// `sources ls` as a table.
pub fn sources_table(sources: &[SourceEntry]) -> String {
    let rows = sources
        .iter()
        .map(|e| {
            let s = e.source.clone().unwrap_or_default();
            vec![
                e.agent.clone(),
                s.name,
                or_dash(&s.kind),
                or_dash(&e.policy),
                details_text(&s.details),
            ]
        })
        .collect();
    table(&["AGENT", "SOURCE", "KIND", "POLICY", "DETAILS"], rows)
}

/// A source as JSON.
pub fn source_entry_json(e: &SourceEntry) -> Value {
    let s = e.source.clone().unwrap_or_default();
    json!({
        "agent": e.agent,
        "name": s.name,
        "kind": json_str(&s.kind),
        "policy": json_str(&e.policy),
        "details": details_json(&s.details),
    })
}

// ---- policies ----

/// The fields of a policy the table shows, read from its TOML (a
/// `[[policy]]` table); missing ones are `-`.
fn policy_summary(toml_text: &str) -> [String; 4] {
    let table: Option<toml::Table> = toml::from_str(toml_text).ok();
    let policy = table.as_ref().and_then(|t| match t.get("policy") {
        Some(toml::Value::Array(a)) => a.first().and_then(toml::Value::as_table),
        Some(toml::Value::Table(t)) => Some(t),
        _ => None,
    });
    let get = |k: &str| {
        policy
            .and_then(|p| p.get(k))
            .map(|v| match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                _ => "-".into(),
            })
            .unwrap_or_else(|| "-".into())
    };
    [
        get("schedule"),
        get("timezone"),
        get("mode"),
        get("retention"),
    ]
}

/// `policy ls` as a table.
pub fn policies_table(policies: &[PolicyInfo]) -> String {
    let rows = policies
        .iter()
        .map(|p| {
            let [schedule, tz, mode, retention] = policy_summary(&p.toml);
            vec![
                p.name.clone(),
                schedule,
                tz,
                mode,
                retention,
                time(p.next_run_unix),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "SCHEDULE",
            "TIMEZONE",
            "MODE",
            "RETENTION",
            "NEXT RUN",
        ],
        rows,
    )
}

/// A policy as JSON.
pub fn policy_json(p: &PolicyInfo) -> Value {
    json!({
        "name": p.name,
        "next_run": json_time(p.next_run_unix),
        "toml": p.toml,
    })
}

// ---- jobs ----

/// One line of progress: `read 1.2 GiB, uploaded 300.0 MiB, 1234 files, 45.6 MiB/s`.
pub fn progress_text(p: &JobProgress) -> String {
    let read = if p.bytes_total > 0 {
        format!(
            "read {} of {} ({:.0}%)",
            size(p.bytes_read),
            size(p.bytes_total),
            100.0 * p.bytes_read as f64 / p.bytes_total as f64
        )
    } else {
        format!("read {}", size(p.bytes_read))
    };
    format!(
        "{read}, uploaded {}, {} files, {}",
        size(p.bytes_uploaded),
        p.files,
        rate(p.bytes_per_sec)
    )
}

fn progress_json(p: &JobProgress) -> Value {
    json!({
        "bytes_read": p.bytes_read,
        "bytes_uploaded": p.bytes_uploaded,
        "files": p.files,
        "bytes_per_sec": p.bytes_per_sec,
        "bytes_total": if p.bytes_total > 0 { json!(p.bytes_total) } else { Value::Null },
    })
}

/// A job summary as `key: value` rows.
pub fn summary_fields(s: &JobSummary) -> Vec<(&'static str, String)> {
    let mut v = vec![
        (
            "files",
            format!(
                "{} ({} unchanged), {} dirs, {} others",
                s.files, s.files_unchanged, s.dirs, s.others
            ),
        ),
        ("size", size(s.bytes)),
        ("read", size(s.bytes_read)),
        (
            "new",
            format!("{} in {} chunks", size(s.new_bytes), s.new_chunks),
        ),
        (
            "uploaded",
            format!("{} in {} packs", size(s.uploaded_bytes), s.packs),
        ),
    ];
    if s.errors > 0 {
        v.push((
            "errors",
            format!(
                "{} entries could not be read (named in the agent's log)",
                s.errors
            ),
        ));
    }
    if s.duration_secs > 0.0 {
        v.push(("took", duration(s.duration_secs)));
    }
    v
}

/// A job summary as JSON.
pub fn summary_json(s: &JobSummary) -> Value {
    json!({
        "files": s.files,
        "dirs": s.dirs,
        "others": s.others,
        "bytes": s.bytes,
        "files_unchanged": s.files_unchanged,
        "bytes_read": s.bytes_read,
        "new_chunks": s.new_chunks,
        "new_bytes": s.new_bytes,
        "packs": s.packs,
        "uploaded_bytes": s.uploaded_bytes,
        "errors": s.errors,
        "duration_secs": s.duration_secs,
    })
}

/// What a job table's INFO column says: progress, result or error.
fn job_info_text(j: &JobInfo) -> String {
    match JobState::try_from(j.state) {
        Ok(JobState::Running) => j
            .progress
            .as_ref()
            .map_or_else(|| "starting".into(), progress_text),
        Ok(JobState::Succeeded) if !j.snapshot_id.is_empty() => {
            format!("snapshot {}", short(&j.snapshot_id, SHORT_SNAPSHOT))
        }
        Ok(JobState::Failed | JobState::Cancelled) if !j.error_message.is_empty() => {
            first_line(&j.error_message, 80)
        }
        _ if !j.restore_target.is_empty() => format!(
            "snapshot {} to {}",
            short(&j.restore_snapshot_id, SHORT_SNAPSHOT),
            j.restore_target
        ),
        _ => "-".into(),
    }
}

/// How long a job ran (so far, when running).
fn job_took(j: &JobInfo) -> String {
    if j.finished_unix != 0 {
        elapsed(j.started_unix, j.finished_unix)
    } else if j.started_unix != 0 {
        elapsed(j.started_unix, now())
    } else {
        "-".into()
    }
}

/// `jobs ls` as a table.
pub fn jobs_table(jobs: &[JobInfo]) -> String {
    let rows = jobs
        .iter()
        .map(|j| {
            vec![
                j.id.clone(),
                kind_name(j.kind).into(),
                source_text(j.source.as_ref()),
                or_dash(&j.agent),
                state_name(j.state).into(),
                time(j.created_unix),
                job_took(j),
                job_info_text(j),
            ]
        })
        .collect();
    table(
        &[
            "ID", "KIND", "SOURCE", "AGENT", "STATE", "CREATED", "TOOK", "INFO",
        ],
        rows,
    )
}

/// `jobs show` (and the end of `jobs watch`) as a listing.
pub fn job_fields(j: &JobInfo) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("job", j.id.clone()),
        ("kind", kind_name(j.kind).into()),
        ("state", state_name(j.state).into()),
        ("source", source_text(j.source.as_ref())),
        ("agent", or_dash(&j.agent)),
    ];
    if !j.mode.is_empty() {
        rows.push(("mode", j.mode.clone()));
    }
    if !j.restore_snapshot_id.is_empty() || !j.restore_target.is_empty() {
        rows.push(("restores", or_dash(&j.restore_snapshot_id)));
        rows.push(("to", or_dash(&j.restore_target)));
        if !j.restore_selection.is_empty() {
            rows.push(("selection", j.restore_selection.clone()));
        }
    }
    rows.push(("trigger", or_dash(&j.trigger)));
    if j.attempt > 1 {
        rows.push(("attempt", j.attempt.to_string()));
    }
    rows.push(("created", time(j.created_unix)));
    rows.push(("started", time(j.started_unix)));
    rows.push(("finished", time(j.finished_unix)));
    if j.started_unix != 0 {
        rows.push(("took", job_took(j)));
    }
    if let Some(p) = j.progress.as_ref().filter(|_| !is_final(j.state)) {
        rows.push(("progress", progress_text(p)));
    }
    if !j.snapshot_id.is_empty() {
        rows.push(("snapshot", j.snapshot_id.clone()));
    }
    if !j.error_message.is_empty() {
        rows.push(("error", j.error_message.clone()));
    }
    for c in &j.checks {
        rows.push(("checked", c.clone()));
    }
    if let Some(s) = &j.summary {
        // The job's own start and end say how long it took.
        let took_known = j.started_unix != 0 && j.finished_unix != 0;
        rows.extend(
            summary_fields(s)
                .into_iter()
                .filter(|(k, _)| !(took_known && *k == "took")),
        );
    }
    fields(&rows)
}

/// One line naming a job: `backup job ID (web-1/www, full)` or
/// `restore job ID (snapshot 5eedc0ff of web-1/www to web-2:/srv/restore)`.
pub fn job_headline(j: &JobInfo) -> String {
    let what = if j.restore_target.is_empty() {
        let mut w = source_text(j.source.as_ref());
        if !j.mode.is_empty() {
            w.push_str(&format!(", {}", j.mode));
        }
        w
    } else {
        format!(
            "snapshot {} of {} to {}:{}",
            short(&j.restore_snapshot_id, SHORT_SNAPSHOT),
            source_text(j.source.as_ref()),
            or_dash(&j.agent),
            j.restore_target
        )
    };
    format!("{} job {} ({what})", kind_name(j.kind), j.id)
}

/// A job as JSON.
pub fn job_json(j: &JobInfo) -> Value {
    let restore = if j.restore_snapshot_id.is_empty() && j.restore_target.is_empty() {
        Value::Null
    } else {
        json!({
            "snapshot_id": json_str(&j.restore_snapshot_id),
            "target": json_str(&j.restore_target),
            "selection": json_str(&j.restore_selection),
            "checks": j.checks,
        })
    };
    json!({
        "id": j.id,
        "kind": kind_name(j.kind),
        "state": state_name(j.state),
        "source": source_json(j.source.as_ref()),
        "agent": json_str(&j.agent),
        "mode": json_str(&j.mode),
        "trigger": json_str(&j.trigger),
        "attempt": j.attempt,
        "created": json_time(j.created_unix),
        "started": json_time(j.started_unix),
        "finished": json_time(j.finished_unix),
        "progress": j.progress.as_ref().map_or(Value::Null, progress_json),
        "error": json_str(&j.error_message),
        "snapshot_id": json_str(&j.snapshot_id),
        "restore": restore,
        "summary": j.summary.as_ref().map_or(Value::Null, summary_json),
    })
}

// ---- snapshots ----

/// `snapshots ls` as a table.
pub fn snapshots_table(snapshots: &[SnapshotInfo]) -> String {
    let rows = snapshots
        .iter()
        .map(|s| {
            let sum = s.summary.unwrap_or_default();
            let verified = s
                .copies
                .iter()
                .filter(|c| copy_state(c) == Some("verified"))
                .count();
            vec![
                short(&s.id, SHORT_SNAPSHOT),
                source_text(s.source.as_ref()),
                time(s.time_unix),
                size(s.size),
                sum.files.to_string(),
                size(sum.new_bytes),
                // One copy per location once replication ran; before that
                // the snapshot is at least due at the primary.
                format!("{verified}/{}", s.copies.len().max(1)),
                if s.protected { "yes" } else { "no" }.to_string(),
                hold_cell(s.hold.as_ref()),
                if s.tags.is_empty() {
                    "-".to_string()
                } else {
                    s.tags.join(",")
                },
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "SOURCE",
            "TIME",
            "SIZE",
            "FILES",
            "NEW",
            "VERIFIED",
            "PROTECTED",
            "HELD",
            "TAGS",
        ],
        rows,
    )
}

/// The HELD column: `yes`, `until T`, `expired`, or `-`.
fn hold_cell(h: Option<&SnapshotHold>) -> String {
    match h {
        None => "-".into(),
        Some(h) if !h.active => "expired".into(),
        Some(h) if h.until_unix != 0 => format!("until {}", time(h.until_unix)),
        Some(_) => "yes".into(),
    }
}

/// A hold in `snapshots show`.
fn hold_text(h: &SnapshotHold) -> String {
    format!(
        "{} by {} since {}{}: {}",
        if h.active { "held" } else { "expired hold" },
        h.by,
        time(h.since_unix),
        if h.until_unix != 0 {
            format!(" until {}", time(h.until_unix))
        } else {
            String::new()
        },
        h.reason
    )
}

/// `snapshots show` as a listing.
pub fn snapshot_fields(s: &SnapshotInfo) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("snapshot", s.id.clone()),
        ("source", source_text(s.source.as_ref())),
        ("agent", or_dash(&s.agent)),
        ("time", time(s.time_unix)),
        ("parent", or_dash(&s.parent_id)),
        ("size", size(s.size)),
    ];
    if let Some(sum) = &s.summary {
        rows.extend(
            summary_fields(sum)
                .into_iter()
                .filter(|(k, _)| *k != "size"),
        );
    }
    if !s.datastore_position.is_empty() {
        let pos: BTreeMap<_, _> = s.datastore_position.iter().collect();
        let text = pos
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("\n");
        rows.push(("position", text));
    }
    if !s.depends_on.is_empty() {
        let text = s
            .depends_on
            .iter()
            .map(|d| format!("{} ({} chain)", d.id, d.chain))
            .collect::<Vec<_>>()
            .join("\n");
        rows.push(("depends on", text));
    }
    let copies = if s.copies.is_empty() {
        "none yet".to_string()
    } else {
        s.copies
            .iter()
            .map(copy_text)
            .collect::<Vec<_>>()
            .join("\n")
    };
    rows.push(("copies", copies));
    rows.push((
        "protected",
        if s.protected {
            "yes (its verified copies meet the controller's protection rule)"
        } else {
            "no (its verified copies do not meet the controller's protection rule yet)"
        }
        .into(),
    ));
    rows.push(("hold", s.hold.as_ref().map_or("-".into(), hold_text)));
    rows.push((
        "tags",
        if s.tags.is_empty() {
            "-".into()
        } else {
            s.tags.join(", ")
        },
    ));
    fields(&rows)
}

/// A snapshot as JSON.
pub fn snapshot_json(s: &SnapshotInfo) -> Value {
    json!({
        "id": s.id,
        "source": source_json(s.source.as_ref()),
        "agent": json_str(&s.agent),
        "time": json_time(s.time_unix),
        "parent_id": json_str(&s.parent_id),
        "size": s.size,
        "summary": s.summary.as_ref().map_or(Value::Null, summary_json),
        "datastore_position": details_json(&s.datastore_position),
        "depends_on": s.depends_on.iter().map(|d| json!({
            "id": d.id,
            "chain": d.chain,
        })).collect::<Vec<_>>(),
        "copies": s.copies.iter().map(|c| json!({
            "location": c.location,
            "state": copy_state(c).map_or(Value::Null, |s| Value::String(s.into())),
            "detail": json_str(&c.detail),
            "verified": c.verified,
            "verified_at": json_time(c.verified_unix),
        })).collect::<Vec<_>>(),
        "hold": s.hold.as_ref().map_or(Value::Null, |h| json!({
            "reason": h.reason,
            "by": h.by,
            "since": json_time(h.since_unix),
            "until": json_time(h.until_unix),
            "active": h.active,
        })),
        "held": s.hold.as_ref().is_some_and(|h| h.active),
        "tags": s.tags,
        "protected": s.protected,
    })
}

/// A copy's state: `pending`, `copying`, `copied`, `verified`, `failed` or
/// `incomplete`
/// (a controller without copy states only says verified or not: `None`).
fn copy_state(c: &SnapshotCopy) -> Option<&str> {
    if !c.state.is_empty() {
        Some(&c.state)
    } else if c.verified {
        Some("verified")
    } else {
        None
    }
}

/// One copy in `snapshots show`: `primary: verified 2025-11-25T06:28:20Z`,
/// `offsite: failed (bucket unreachable)`, `offsite: copying`.
fn copy_text(c: &SnapshotCopy) -> String {
    let state = match copy_state(c) {
        Some("verified") if c.verified_unix != 0 => {
            format!("verified {}", time(c.verified_unix))
        }
        Some(state) => state.to_string(),
        None => "not verified".into(),
    };
    let mut extra = Vec::new();
    if !c.detail.is_empty() {
        extra.push(c.detail.clone());
    }
    if c.verified_unix != 0 && copy_state(c) != Some("verified") {
        extra.push(format!("last verified {}", time(c.verified_unix)));
    }
    if extra.is_empty() {
        format!("{}: {state}", c.location)
    } else {
        format!("{}: {state} ({})", c.location, extra.join("; "))
    }
}

// ---- locations and verification ----

/// The DEEP ROUND column: when the last full round ended, and how far the
/// current one is.
fn deep_round_text(l: &LocationInfo) -> String {
    let p = l.deep_round_progress;
    let pct = if p.is_finite() && p > 0.0 {
        Some((p.min(1.0) * 100.0).floor() as u32)
    } else {
        None
    };
    match (l.last_deep_round_unix, pct) {
        (0, None) => "-".into(),
        (0, Some(pct)) => format!("{pct}% of the first"),
        (t, None) => time(t),
        (t, Some(pct)) => format!("{} ({pct}% of the next)", time(t)),
    }
}

/// `locations ls` as a table.
pub fn locations_table(locations: &[LocationInfo]) -> String {
    let rows = locations
        .iter()
        .map(|l| {
            vec![
                l.name.clone(),
                [l.role.as_str(), l.region.as_str(), l.provider.as_str()]
                    .iter()
                    .filter(|x| !x.is_empty())
                    .copied()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .chars()
                    .take(40)
                    .collect::<String>(),
                if l.reachable {
                    "reachable"
                } else {
                    "unreachable"
                }
                .into(),
                l.objects.to_string(),
                size(l.bytes),
                time(l.last_sync_unix),
                time(l.last_quick_verify_unix),
                deep_round_text(l),
                format!("{}/{}", l.problems_found, l.problems_repaired),
                if l.last_error.is_empty() {
                    "-".into()
                } else {
                    first_line(&l.last_error, 80)
                },
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "LABELS",
            "STATE",
            "OBJECTS",
            "SIZE",
            "LAST SYNC",
            "QUICK VERIFIED",
            "DEEP ROUND",
            "PROBLEMS",
            "ERROR",
        ],
        rows,
    )
}

/// A location as JSON.
pub fn location_json(l: &LocationInfo) -> Value {
    json!({
        "name": l.name,
        "url": json_str(&l.url),
        "role": json_str(&l.role),
        "region": json_str(&l.region),
        "provider": json_str(&l.provider),
        "reachable": l.reachable,
        "last_error": json_str(&l.last_error),
        "objects": l.objects,
        "bytes": l.bytes,
        "last_sync": json_time(l.last_sync_unix),
        "last_quick_verify": json_time(l.last_quick_verify_unix),
        "last_deep_round": json_time(l.last_deep_round_unix),
        "deep_round_progress": if l.deep_round_progress.is_finite() {
            l.deep_round_progress
        } else {
            0.0
        },
        "problems_found": l.problems_found,
        "problems_repaired": l.problems_repaired,
        "incidents": l.incidents,
    })
}

/// What a `verify` covered: `deep, every location`, `quick, location
/// offsite, snapshot 5eedc0ff`.
fn verify_scope(req: &VerifyRequest) -> String {
    let mut s = vec![if req.deep {
        "deep (re-read and re-hashed)".to_string()
    } else {
        "quick (every object is there)".to_string()
    }];
    s.push(if req.location.is_empty() {
        "every location".into()
    } else {
        format!("location {}", req.location)
    });
    if !req.snapshot_id.is_empty() {
        s.push(format!("snapshot {}", req.snapshot_id));
    }
    s.join(", ")
}

/// `verify` as a listing: what was checked, then every problem, repair and
/// copy left damaged, one per line.
pub fn verify_fields(req: &VerifyRequest, r: &VerifyReply) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join("\n")
        }
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("verified", verify_scope(req)),
        ("objects checked", r.objects_checked.to_string()),
        ("bytes re-read", size(r.bytes_read)),
    ];
    if r.objects_copied > 0 || r.bytes_copied > 0 {
        rows.push((
            "copied",
            format!(
                "{} objects ({}) to locations that lacked them",
                r.objects_copied,
                size(r.bytes_copied)
            ),
        ));
    }
    rows.push(("problems", list(&r.problems)));
    if !r.repaired.is_empty() || !r.problems.is_empty() {
        rows.push(("repaired", list(&r.repaired)));
    }
    if !r.unrepaired.is_empty() {
        rows.push(("unrepaired", list(&r.unrepaired)));
    }
    let copies = |n: usize| if n == 1 { "copy" } else { "copies" };
    let outcome = match (r.problems.len(), r.repaired.len(), r.unrepaired.len()) {
        (0, 0, 0) => "all copies are good".to_string(),
        (_, 0, 0) => "problems reported above; no damaged copy is left".to_string(),
        (_, n, 0) => format!(
            "{n} damaged {} repaired from good copies; no damaged copy is left",
            copies(n)
        ),
        (_, _, n) => format!(
            "{n} damaged {} could NOT be repaired: no good copy is left at any location",
            copies(n)
        ),
    };
    rows.push(("result", outcome));
    fields(&rows)
}

/// `verify` as JSON.
pub fn verify_json(req: &VerifyRequest, r: &VerifyReply) -> Value {
    json!({
        "deep": req.deep,
        "location": json_str(&req.location),
        "snapshot_id": json_str(&req.snapshot_id),
        "objects_checked": r.objects_checked,
        "bytes_read": r.bytes_read,
        "objects_copied": r.objects_copied,
        "bytes_copied": r.bytes_copied,
        "problems": r.problems,
        "repaired": r.repaired,
        "unrepaired": r.unrepaired,
        "ok": r.unrepaired.is_empty(),
    })
}

// ---- status ----

/// `status` as a listing.
pub fn status_fields(addr: &str, ping: &PingReply, st: &StatusReply) -> String {
    let problems = if st.problems.is_empty() {
        "none".to_string()
    } else {
        st.problems.join("\n")
    };
    fields(&[
        ("state", or_dash(&st.state)),
        (
            "controller",
            format!("{addr} (version {})", or_dash(&st.version)),
        ),
        (
            "you",
            format!("{} ({}, serial {})", ping.name, ping.role, ping.serial),
        ),
        (
            "agents",
            format!("{} connected of {}", st.agents_connected, st.agents_total),
        ),
        (
            "jobs",
            format!(
                "{} running, {} queued, {} failed in the last 24h",
                st.jobs_running, st.jobs_queued, st.jobs_failed_24h
            ),
        ),
        ("rule", or_dash(&st.protection_rule)),
        ("protection", protection_text(st, now())),
        ("recovery", recovery_text(st)),
        ("problems", problems),
    ])
}

/// The `protection` lines of `status`, one per source:
/// `web-1/www  newest 5eedc0ff 2/3 verified, not protected; last protected: 4a1b2c3d at TIME (2h 5m ago)`.
fn protection_text(st: &StatusReply, now: i64) -> String {
    if st.protection.is_empty() {
        return "no snapshots yet".into();
    }
    // A controller that does not say how many locations it has has one.
    let total = st.locations_total.max(1);
    let names: Vec<String> = st
        .protection
        .iter()
        .map(|p| source_text(p.source.as_ref()))
        .collect();
    let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    st.protection
        .iter()
        .zip(&names)
        .map(|(p, name)| {
            let newest = if p.newest_snapshot_id.is_empty() {
                "no snapshots yet".to_string()
            } else {
                format!(
                    "newest {} {}/{total} verified{}",
                    short(&p.newest_snapshot_id, SHORT_SNAPSHOT),
                    p.newest_verified_copies,
                    if p.newest_shortfall.is_empty() {
                        ", protected"
                    } else {
                        ", not protected"
                    }
                )
            };
            let last = if p.snapshot_id.is_empty() {
                "none yet".to_string()
            } else {
                let ago = if p.snapshot_time_unix == 0 {
                    String::new()
                } else {
                    format!(" ({} ago)", age(now - p.snapshot_time_unix))
                };
                format!(
                    "{} at {}{ago}",
                    short(&p.snapshot_id, SHORT_SNAPSHOT),
                    time(p.snapshot_time_unix)
                )
            };
            format!("{name:<w$}  {newest}; last protected: {last}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn protection_json(p: &SourceProtection) -> Value {
    json!({
        "source": source_json(p.source.as_ref()),
        "snapshot_id": json_str(&p.snapshot_id),
        "snapshot_time": json_time(p.snapshot_time_unix),
        "newest_snapshot_id": json_str(&p.newest_snapshot_id),
        "newest_verified_copies": p.newest_verified_copies,
        "newest_shortfall": p.newest_shortfall,
    })
}

/// `status` as JSON.
pub fn status_json(addr: &str, ping: &PingReply, st: &StatusReply) -> Value {
    json!({
        "controller": addr,
        "version": json_str(&st.version),
        "you": { "name": ping.name, "role": ping.role, "serial": ping.serial },
        "agents": { "total": st.agents_total, "connected": st.agents_connected },
        "jobs": {
            "running": st.jobs_running,
            "queued": st.jobs_queued,
            "failed_24h": st.jobs_failed_24h,
        },
        "state": json_str(&st.state),
        "protection_rule": json_str(&st.protection_rule),
        "rule_problems": st.rule_problems,
        "locations_total": st.locations_total,
        "protection": st.protection.iter().map(protection_json).collect::<Vec<_>>(),
        "recovery": recovery_json(st),
        "problems": st.problems,
    })
}

/// The `recovery` lines of `status`: per source, RPO and RTO, red or green.
pub fn recovery_text(st: &StatusReply) -> String {
    if st.recovery.is_empty() {
        return "no sources with policies".into();
    }
    let names: Vec<String> = st
        .recovery
        .iter()
        .map(|r| {
            r.source
                .as_ref()
                .map_or("-".into(), |s| format!("{}/{}", s.agent, s.source))
        })
        .collect();
    let w = names.iter().map(|n| n.chars().count()).max().unwrap_or(0);
    st.recovery
        .iter()
        .zip(&names)
        .map(|(r, name)| {
            let rpo = if r.rpo_secs > 0.0 {
                let age = if r.age_secs < 0.0 {
                    "no 3/3 snapshot".to_string()
                } else {
                    format!("{} old", duration(r.age_secs))
                };
                format!("RPO {} ({age})", duration(r.rpo_secs))
            } else {
                "RPO -".to_string()
            };
            let rto = match (r.rto_secs > 0.0, r.last_test_unix) {
                (_, 0) if r.rto_secs > 0.0 => {
                    format!("RTO {} (never tested)", duration(r.rto_secs))
                }
                (_, 0) => "RTO - (never tested)".to_string(),
                (has_rto, t) => format!(
                    "RTO {} (last test {} {}, took {})",
                    if has_rto {
                        duration(r.rto_secs)
                    } else {
                        "-".into()
                    },
                    time(t),
                    if r.last_test_ok { "passed" } else { "FAILED" },
                    duration(r.last_test_secs)
                ),
            };
            format!("{:<w$}  {:<5}  {rpo}; {rto}", name, r.state.to_uppercase())
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The `recovery` part of `status -o json`.
pub fn recovery_json(st: &StatusReply) -> Value {
    Value::Array(
        st.recovery
            .iter()
            .map(|r| {
                json!({
                    "source": r.source.as_ref().map(|s| json!({"agent": s.agent, "name": s.source})),
                    "state": r.state,
                    "rpo_secs": (r.rpo_secs > 0.0).then_some(r.rpo_secs),
                    "age_secs": (r.age_secs >= 0.0).then_some(r.age_secs),
                    "rto_secs": (r.rto_secs > 0.0).then_some(r.rto_secs),
                    "last_test": json_time(r.last_test_unix),
                    "last_test_ok": (r.last_test_unix != 0).then_some(r.last_test_ok),
                    "last_test_secs": (r.last_test_unix != 0).then_some(r.last_test_secs),
                    "problems": r.problems,
                })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use trireme_proto::v1::SnapshotDependency;

    #[test]
    fn job_json_shape() {
        let mut j = JobInfo {
            id: "0193".into(),
            source: Some(SourceRef {
                agent: "web-1".into(),
                source: "www".into(),
            }),
            created_unix: 1_764_052_020,
            ..Default::default()
        };
        j.set_kind(JobKind::Backup);
        j.set_state(JobState::Running);
        let v = job_json(&j);
        assert_eq!(v["state"], "running");
        assert_eq!(v["kind"], "backup");
        assert_eq!(v["source"], json!({"agent": "web-1", "name": "www"}));
        assert_eq!(v["created"], "2025-11-25T06:27:00Z");
        assert_eq!(v["started"], Value::Null);
        assert_eq!(v["error"], Value::Null);
        assert_eq!(v["summary"], Value::Null);
        assert!(jobs_table(&[j]).contains("running"));
    }

    #[test]
    fn copies_show_their_state() {
        let c = |location: &str, state: &str, verified_unix: i64, detail: &str| SnapshotCopy {
            location: location.into(),
            verified: state == "verified",
            verified_unix,
            state: state.into(),
            detail: detail.into(),
        };
        let s = SnapshotInfo {
            id: "5eedc0ffee".into(),
            copies: vec![
                c("primary", "verified", 1_764_052_100, ""),
                c("offsite", "failed", 0, "hash mismatch"),
                c("cold", "copying", 0, ""),
                c("far", "incomplete", 0, "packs/ab is at no location"),
            ],
            depends_on: vec![SnapshotDependency {
                id: "ab".repeat(32),
                chain: "tidb".into(),
            }],
            ..Default::default()
        };
        let f = snapshot_fields(&s);
        assert!(
            f.contains("far: incomplete (packs/ab is at no location)"),
            "{f}"
        );
        assert!(
            f.contains("depends on:") && f.contains(&format!("{} (tidb chain)", "ab".repeat(32))),
            "{f}"
        );
        assert!(f.contains("primary: verified 2025-11-25T06:28:20Z"), "{f}");
        assert!(f.contains("offsite: failed (hash mismatch)"), "{f}");
        assert!(f.contains("cold: copying"), "{f}");
        assert!(snapshots_table(std::slice::from_ref(&s)).contains("1/4"));
        let v = snapshot_json(&s);
        assert_eq!(v["depends_on"][0]["chain"], "tidb");
        assert_eq!(v["copies"][3]["state"], "incomplete");
        assert_eq!(v["copies"][1]["state"], "failed");
        assert_eq!(v["copies"][1]["detail"], "hash mismatch");
        assert_eq!(v["copies"][0]["detail"], Value::Null);
        // No copies yet; a controller without copy states.
        let none = SnapshotInfo::default();
        assert!(snapshots_table(&[none]).contains("0/1"));
        let old = SnapshotCopy {
            location: "primary".into(),
            verified: true,
            verified_unix: 1_764_052_100,
            ..Default::default()
        };
        assert_eq!(copy_state(&old), Some("verified"));
        assert_eq!(copy_text(&old), "primary: verified 2025-11-25T06:28:20Z");
    }

    #[test]
    fn protection_lines() {
        let now = 1_764_052_020 + 2 * 3600 + 5 * 60;
        let st = StatusReply {
            locations_total: 3,
            protection: vec![
                SourceProtection {
                    source: Some(SourceRef {
                        agent: "web-1".into(),
                        source: "www".into(),
                    }),
                    snapshot_id: "4a1b2c3d4e".into(),
                    snapshot_time_unix: 1_764_052_020,
                    newest_snapshot_id: "5eedc0ffee".into(),
                    newest_verified_copies: 2,
                    newest_shortfall: vec!["verified at 2 of the 3 locations".into()],
                },
                SourceProtection {
                    source: Some(SourceRef {
                        agent: "db-1".into(),
                        source: "pg".into(),
                    }),
                    newest_snapshot_id: "77777777aa".into(),
                    newest_verified_copies: 1,
                    ..Default::default()
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            protection_text(&st, now),
            "web-1/www  newest 5eedc0ff 2/3 verified, not protected; last protected: 4a1b2c3d at 2025-11-25T06:27:00Z (2h 5m ago)\n\
             db-1/pg    newest 77777777 1/3 verified, protected; last protected: none yet"
        );
        let v = status_json("ctl:7443", &PingReply::default(), &st);
        assert_eq!(v["locations_total"], 3);
        assert_eq!(v["protection"][1]["snapshot_id"], Value::Null);
        assert_eq!(v["protection"][0]["snapshot_time"], "2025-11-25T06:27:00Z");
        assert_eq!(
            protection_text(&StatusReply::default(), now),
            "no snapshots yet"
        );
    }

    #[test]
    fn locations_and_verify() {
        let l = LocationInfo {
            name: "offsite".into(),
            reachable: false,
            last_error: "connection refused\nmore".into(),
            objects: 12,
            bytes: 1536,
            last_deep_round_unix: 1_764_052_020,
            deep_round_progress: 0.25,
            problems_found: 3,
            problems_repaired: 2,
            incidents: vec!["x".into()],
            ..Default::default()
        };
        let t = locations_table(std::slice::from_ref(&l));
        let row = t.lines().nth(1).unwrap();
        for want in [
            "offsite",
            "unreachable",
            "1.5 KiB",
            "2025-11-25T06:27:00Z (25% of the next)",
            "3/2",
            "connection refused",
        ] {
            assert!(row.contains(want), "{want}: {t}");
        }
        assert!(!row.contains("more"), "{t}");
        let v = location_json(&l);
        assert_eq!(v["last_sync"], Value::Null);
        assert_eq!(v["incidents"], json!(["x"]));
        assert_eq!(v["url"], Value::Null);

        let req = VerifyRequest {
            deep: true,
            ..Default::default()
        };
        let r = VerifyReply {
            objects_checked: 10,
            bytes_read: 2048,
            problems: vec!["primary: a: hash mismatch".into()],
            repaired: vec!["primary: a".into()],
            objects_copied: 2,
            bytes_copied: 1024,
            ..Default::default()
        };
        let f = verify_fields(&req, &r);
        assert!(
            f.contains("deep (re-read and re-hashed), every location"),
            "{f}"
        );
        assert!(f.contains("primary: a: hash mismatch"), "{f}");
        assert!(f.contains("1 damaged copy repaired"), "{f}");
        assert!(f.contains("2 objects (1.0 KiB) to locations"), "{f}");
        assert!(!f.contains("unrepaired"), "{f}");
        assert_eq!(verify_json(&req, &r)["ok"], true);
    }

    #[test]
    fn policy_columns_come_from_the_toml() {
        let t = "[[policy]]\nsource = \"a/b\"\nschedule = \"0 2 * * *\"\nmode = \"full\"\nretention = \"daily-30\"\ntimezone = \"UTC\"\n";
        assert_eq!(
            policy_summary(t),
            ["0 2 * * *", "UTC", "full", "daily-30"].map(String::from)
        );
        assert_eq!(
            policy_summary("not toml ["),
            ["-", "-", "-", "-"].map(String::from)
        );
    }
}
