//! `trireme restore-test …` and `trireme drill …`.

use std::time::Duration;

use anyhow::bail;
use serde_json::{json, Value};
use trireme_proto::v1::{
    AnnotateDrillRequest, DrillInfo, GetDrillRequest, ListDrillsRequest, ListRestoreTestsRequest,
    RestoreTestInfo, RunDrillRequest, RunRestoreTestRequest, SourceRef,
};

use trireme_client::{with_totp, Controller};

use crate::output::{
    duration, json_str, json_time, list, one, or_dash, println, table, time, Format,
};
use crate::{watch, DrillCmd, RestoreTestCmd};

/// `trireme restore-test …`
pub async fn restore_test(
    c: &mut Controller,
    format: Format,
    cmd: RestoreTestCmd,
) -> anyhow::Result<()> {
    match cmd {
        RestoreTestCmd::Run { source, wait } => {
            let source: SourceRef = source.into();
            let job = c
                .operator
                .run_restore_test(with_totp(
                    RunRestoreTestRequest {
                        source: Some(source.clone()),
                    },
                    c.totp.as_deref(),
                )?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            if !wait {
                return one(format, json!({ "job_id": job.id }), || {
                    format!(
                        "started restore test of {}/{}: job {} (follow it with `trireme jobs watch {}`)",
                        source.agent, source.source, job.id, job.id
                    )
                });
            }
            if format == Format::Table {
                println(&format!(
                    "started restore test of {}/{}: job {}",
                    source.agent, source.source, job.id
                ))?;
            }
            // The job's own outcome is printed by the watch; the test's
            // verdict (checks, RTO) is settled by the controller just after.
            let watched = watch::watch(c, Format::Table, &job.id).await;
            let test = loop {
                let tests = c
                    .operator
                    .list_restore_tests(ListRestoreTestsRequest {
                        source: Some(source.clone()),
                        limit: 50,
                    })
                    .await
                    .map_err(|s| c.error(s))?
                    .into_inner()
                    .tests;
                match tests.into_iter().find(|t| t.job_id == job.id) {
                    Some(t) if t.finished_unix != 0 => break t,
                    _ => tokio::time::sleep(Duration::from_millis(500)).await,
                }
            };
            one(format, test_json(&test), || test_fields(&test))?;
            if !test.ok {
                return Err(trireme_client::Failure::JobFailed.wrap(anyhow::anyhow!(
                    "restore test of {}/{} failed: {}",
                    source.agent,
                    source.source,
                    test.error
                )));
            }
            watched
        }
        RestoreTestCmd::Ls { source, limit } => {
            let tests = c
                .operator
                .list_restore_tests(ListRestoreTestsRequest {
                    source: source.map(Into::into),
                    limit: limit.unwrap_or(0),
                })
                .await
                .map_err(|s| c.error(s))?
                .into_inner()
                .tests;
            list(
                format,
                &tests,
                test_json,
                tests_table,
                "no restore tests yet",
            )
        }
    }
}

/// `trireme drill …`
pub async fn drill(c: &mut Controller, format: Format, cmd: DrillCmd) -> anyhow::Result<()> {
    match cmd {
        DrillCmd::Run {
            location,
            wait,
            roles,
            channel,
            participants,
        } => {
            let mut role_map = std::collections::HashMap::new();
            for r in roles {
                let (role, who) = r
                    .split_once('=')
                    .filter(|(k, v)| !k.trim().is_empty() && !v.trim().is_empty())
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "--role {r:?}: write ROLE=NAME, e.g. --role incident_commander=alice"
                        )
                    })?;
                role_map.insert(role.trim().to_string(), who.trim().to_string());
            }
            let d = c
                .operator
                .run_drill(with_totp(
                    RunDrillRequest {
                        location: location.unwrap_or_default(),
                        roles: role_map,
                        channel: channel.unwrap_or_default(),
                        participants,
                    },
                    c.totp.as_deref(),
                )?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            follow_drill(c, format, d, wait).await
        }
        DrillCmd::Annotate {
            id,
            lessons,
            participants,
        } => {
            let d = c
                .operator
                .annotate_drill(AnnotateDrillRequest {
                    id,
                    lessons,
                    participants,
                })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(format, drill_json(&d), || {
                format!(
                    "{}: {} lesson(s) recorded, participants: {}",
                    d.id,
                    d.lessons.len(),
                    if d.participants.is_empty() {
                        "-".to_string()
                    } else {
                        d.participants.join(", ")
                    }
                )
            })
        }
        DrillCmd::Ls => {
            let drills = c
                .operator
                .list_drills(ListDrillsRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner()
                .drills;
            list(format, &drills, drill_json, drills_table, "no drills yet")
        }
        DrillCmd::Show { id, html } => {
            let d = c
                .operator
                .get_drill(GetDrillRequest { id })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(format, drill_json(&d), || {
                if html {
                    d.html.clone()
                } else {
                    d.markdown.clone()
                }
            })
        }
    }
}

fn source_text(s: Option<&SourceRef>) -> String {
    s.map_or("-".into(), |s| format!("{}/{}", s.agent, s.source))
}

fn verdict(ok: bool, finished: i64) -> &'static str {
    match (finished, ok) {
        (0, _) => "running",
        (_, true) => "passed",
        (_, false) => "FAILED",
    }
}

fn test_json(t: &RestoreTestInfo) -> Value {
    json!({
        "job_id": t.job_id,
        "source": t.source.as_ref().map(|s| json!({"agent": s.agent, "name": s.source})),
        "snapshot_id": t.snapshot_id,
        "target": t.target,
        "started": json_time(t.started_unix),
        "finished": json_time(t.finished_unix),
        "duration_secs": t.duration_secs,
        "rto_secs": (t.rto_secs > 0.0).then_some(t.rto_secs),
        "result": verdict(t.ok, t.finished_unix).to_lowercase(),
        "checks": t.checks,
        "error": json_str(&t.error),
        "drill_id": json_str(&t.drill_id),
        "location": json_str(&t.location),
    })
}

fn tests_table(tests: &[RestoreTestInfo]) -> String {
    table(
        &[
            "FINISHED", "SOURCE", "SNAPSHOT", "TARGET", "TOOK", "RTO", "RESULT",
        ],
        tests
            .iter()
            .map(|t| {
                vec![
                    time(t.finished_unix),
                    source_text(t.source.as_ref()),
                    t.snapshot_id.chars().take(8).collect(),
                    t.target.clone(),
                    if t.finished_unix == 0 {
                        "-".into()
                    } else {
                        duration(t.duration_secs)
                    },
                    if t.rto_secs > 0.0 {
                        duration(t.rto_secs)
                    } else {
                        "-".into()
                    },
                    match verdict(t.ok, t.finished_unix) {
                        "FAILED" => format!("FAILED: {}", t.error),
                        v => v.to_string(),
                    },
                ]
            })
            .collect(),
    )
}

fn test_fields(t: &RestoreTestInfo) -> String {
    let mut rows = vec![
        ("source", source_text(t.source.as_ref())),
        ("snapshot", t.snapshot_id.clone()),
        ("target", t.target.clone()),
        ("result", verdict(t.ok, t.finished_unix).to_string()),
        ("took", duration(t.duration_secs)),
        (
            "rto",
            if t.rto_secs > 0.0 {
                duration(t.rto_secs)
            } else {
                "-".into()
            },
        ),
    ];
    for c in &t.checks {
        rows.push(("checked", c.clone()));
    }
    if !t.error.is_empty() {
        rows.push(("error", t.error.clone()));
    }
    crate::output::fields(&rows)
}

/// A drill or platform restore just started: say so, or with `wait`
/// follow it to the end and print its report (an error if it failed).
///
/// # Errors
/// The controller's errors; a drill or platform restore that failed.
pub async fn follow_drill(
    c: &mut Controller,
    format: Format,
    d: DrillInfo,
    wait: bool,
) -> anyhow::Result<()> {
    let what = if d.platform.is_empty() {
        "drill"
    } else {
        "platform restore"
    };
    if !wait {
        return one(format, drill_json(&d), || {
            format!(
                "started {what} {} ({} sources); see `trireme drill show {}`",
                d.id, d.steps_total, d.id
            )
        });
    }
    if format == Format::Table {
        println(&format!(
            "started {what} {} ({} sources)",
            d.id, d.steps_total
        ))?;
    }
    let done = loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let d = c
            .operator
            .get_drill(GetDrillRequest { id: d.id.clone() })
            .await
            .map_err(|s| c.error(s))?
            .into_inner();
        if d.finished_unix != 0 {
            break d;
        }
    };
    one(format, drill_json(&done), || done.markdown.clone())?;
    if !done.ok {
        bail!(
            "{what} {} failed ({} of {} sources); the report above says what",
            done.id,
            done.steps_failed,
            done.steps_total
        );
    }
    Ok(())
}

fn drill_json(d: &DrillInfo) -> Value {
    json!({
        "id": d.id,
        "location": json_str(&d.location),
        "by": d.by,
        "started": json_time(d.started_unix),
        "finished": json_time(d.finished_unix),
        "result": verdict(d.ok, d.finished_unix).to_lowercase(),
        "sources": d.steps_total,
        "failed": d.steps_failed,
        "markdown": json_str(&d.markdown),
        "scheduled": d.scheduled,
        "platform": json_str(&d.platform),
        "at": json_time(d.at_unix),
        "roles": d.roles.iter().collect::<std::collections::BTreeMap<_, _>>(),
        "channel": json_str(&d.channel),
        "participants": d.participants,
        "lessons": d.lessons.iter().map(|l| json!({
            "at": json_time(l.at_unix),
            "by": l.by,
            "text": l.text,
        })).collect::<Vec<_>>(),
    })
}

fn drills_table(drills: &[DrillInfo]) -> String {
    table(
        &["ID", "STARTED", "LOCATION", "BY", "SOURCES", "RESULT"],
        drills
            .iter()
            .map(|d| {
                vec![
                    d.id.clone(),
                    time(d.started_unix),
                    or_dash(&d.location),
                    d.by.clone(),
                    d.steps_total.to_string(),
                    match verdict(d.ok, d.finished_unix) {
                        "FAILED" => format!("FAILED ({} of {})", d.steps_failed, d.steps_total),
                        v => v.to_string(),
                    },
                ]
            })
            .collect(),
    )
}
