//! One function per command that talks to the controller: build the
//! request, call, print.

use std::io::{IsTerminal, Read};
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use trireme_client::{recovery_key, with_totp, Controller};
use trireme_proto::v1::{
    ApplyPolicyRequest, CancelJobRequest, GetJobRequest, GetSnapshotRequest, JobInfo, JobState,
    ListAgentsRequest, ListJobsRequest, ListLocationsRequest, ListPoliciesRequest,
    ListSnapshotsRequest, ListSourcesRequest, PingRequest, RestoreRequest, RunBackupRequest,
    SourceRef, StatusRequest, VerifyReply, VerifyRequest,
};

use crate::output::{list, one, print_json, println, Format};
use crate::{
    audit, browse, holds, prune, recovery, view, watch, AgentsCmd, BackupCmd, CatalogCmd, Command,
    GlobalArgs, JobsCmd, KeyCmd, LocationsCmd, PolicyCmd, RestoreArgs, SnapshotsCmd, SourcesCmd,
    VerifyArgs,
};

/// The `snapshots ls` request: the positional AGENT/SOURCE, `--host` and
/// `--source` (a name, or AGENT/SOURCE) must agree.
///
/// # Errors
/// Filters that contradict each other.
pub fn snapshot_filter(
    source: Option<crate::SourceArg>,
    f: crate::SnapshotFilterArgs,
    limit: u32,
) -> anyhow::Result<ListSnapshotsRequest> {
    let mut agent = source.as_ref().map(|s| s.agent.clone()).unwrap_or_default();
    let mut name = source.map(|s| s.source).unwrap_or_default();
    let set = |slot: &mut String, v: String, what: &str| -> anyhow::Result<()> {
        if !slot.is_empty() && *slot != v {
            bail!("two different {what}s asked for: {slot} and {v}");
        }
        *slot = v;
        Ok(())
    };
    if let Some(h) = f.host {
        set(&mut agent, h, "agent")?;
    }
    if let Some(s) = f.source_name {
        match s.split_once('/') {
            Some((a, n)) => {
                set(&mut agent, a.to_string(), "agent")?;
                set(&mut name, n.to_string(), "source")?;
            }
            None => set(&mut name, s, "source")?,
        }
    }
    if let (Some(a), Some(b)) = (f.since, f.until) {
        if a > b {
            bail!("--since {a} is after --until {b}: nothing can match");
        }
    }
    Ok(ListSnapshotsRequest {
        source: (!agent.is_empty() || !name.is_empty()).then_some(SourceRef {
            agent,
            source: name,
        }),
        limit,
        tags: f.tags,
        since_unix: f.since.map_or(0, |t| t.timestamp()),
        until_unix: f.until.map_or(0, |t| t.timestamp()),
    })
}

/// Run a command that needs the controller.
///
/// # Errors
/// Connection and RPC errors, worded for the operator.
pub async fn run(global: &GlobalArgs, command: Command) -> anyhow::Result<()> {
    let format = Format::from(global.output);
    // Check what can be checked before dialling.
    let policy_text = match &command {
        Command::Policy(PolicyCmd::Apply { file }) => Some(read_policy(file)?),
        _ => None,
    };
    let totp = global.totp.as_deref();
    let mut c = Controller::connect(&global.settings()).await?;
    match command {
        Command::Agents(AgentsCmd::Token(cmd)) => crate::tokens::run(&mut c, format, cmd).await,
        Command::Agents(AgentsCmd::Ls) => {
            let r = c
                .operator
                .list_agents(ListAgentsRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            list(
                format,
                &r.agents,
                view::agent_json,
                view::agents_table,
                "no agents have registered yet",
            )
        }
        Command::Sources(SourcesCmd::Ls { agent }) => {
            let r = c
                .operator
                .list_sources(ListSourcesRequest {
                    agent: agent.unwrap_or_default(),
                })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            list(
                format,
                &r.sources,
                view::source_entry_json,
                view::sources_table,
                "no sources",
            )
        }
        Command::Policy(PolicyCmd::Apply { .. }) => {
            let toml = policy_text.unwrap_or_default();
            let r = c
                .operator
                .apply_policy(with_totp(ApplyPolicyRequest { toml }, totp)?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            match format {
                Format::Json => print_json(
                    &serde_json::json!({ "applied": r.applied, "warnings": r.warnings }),
                    false,
                ),
                Format::Table => {
                    for w in &r.warnings {
                        eprintln!("warning: {w}");
                    }
                    if r.applied.is_empty() {
                        println("no policies applied")
                    } else {
                        println(&format!("applied {}", r.applied.join(", ")))
                    }
                }
            }
        }
        Command::Policy(PolicyCmd::Ls) => {
            let r = c
                .operator
                .list_policies(ListPoliciesRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            list(
                format,
                &r.policies,
                view::policy_json,
                view::policies_table,
                "no policies; add some with `trireme policy apply -f FILE`",
            )
        }
        Command::Backup(BackupCmd::Run {
            source,
            full,
            wait,
            tags,
        }) => {
            let job = c
                .operator
                .run_backup(RunBackupRequest {
                    source: Some(source.into()),
                    full,
                    tags,
                })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            started(&mut c, format, job, wait).await
        }
        Command::Restore(RestoreArgs {
            platform: true,
            to,
            wait,
            from,
            at,
            ..
        }) => {
            let d = c
                .operator
                .restore_platform(with_totp(
                    trireme_proto::v1::RestorePlatformRequest {
                        to,
                        from_location: from.unwrap_or_default(),
                        at_unix: at.map_or(0, |t| t.timestamp()),
                    },
                    totp,
                )?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            recovery::follow_drill(&mut c, format, d, wait).await
        }
        Command::Restore(RestoreArgs {
            snapshot,
            to,
            wait,
            part,
            ..
        }) => {
            let snapshot = snapshot.unwrap_or_default();
            let to = crate::parse_restore_to(&to).map_err(|e| anyhow::anyhow!("--to {e}"))?;
            let job = c
                .operator
                .restore(with_totp(
                    RestoreRequest {
                        snapshot_id: snapshot,
                        to_agent: to.agent,
                        target: to.target,
                        path: part.path.unwrap_or_default(),
                        include: part.include,
                        exclude: part.exclude,
                        overwrite: part.overwrite.unwrap_or_default(),
                    },
                    totp,
                )?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            started(&mut c, format, job, wait).await
        }
        Command::Jobs(JobsCmd::Ls {
            agent,
            source,
            state,
            limit,
        }) => {
            let r = c
                .operator
                .list_jobs(ListJobsRequest {
                    agent: agent.unwrap_or_default(),
                    source: source.unwrap_or_default(),
                    state: state.map_or(JobState::Unspecified, Into::into) as i32,
                    limit: limit.unwrap_or(0),
                })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            list(format, &r.jobs, view::job_json, view::jobs_table, "no jobs")
        }
        Command::Jobs(JobsCmd::Show { id }) => {
            let job = c
                .operator
                .get_job(GetJobRequest { id })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(format, view::job_json(&job), || view::job_fields(&job))
        }
        Command::Jobs(JobsCmd::Cancel { id }) => {
            let job = c
                .operator
                .cancel_job(CancelJobRequest { id })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(format, view::job_json(&job), || {
                let state = view::state_name(job.state);
                if job.state == JobState::Cancelled as i32 {
                    format!("cancelled {}", view::job_headline(&job))
                } else if view::is_final(job.state) {
                    format!("{} had already {state}", view::job_headline(&job))
                } else {
                    format!(
                        "asked {} to stop {}; it is {state} until it does",
                        or_agent(&job.agent),
                        view::job_headline(&job)
                    )
                }
            })
        }
        Command::Jobs(JobsCmd::Watch { id }) => watch::watch(&mut c, format, &id).await,
        Command::Snapshots(SnapshotsCmd::Ls {
            source,
            filter,
            limit,
        }) => {
            let req = snapshot_filter(source, filter, limit.unwrap_or(0))?;
            let r = c
                .operator
                .list_snapshots(req)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            list(
                format,
                &r.snapshots,
                view::snapshot_json,
                view::snapshots_table,
                "no snapshots",
            )
        }
        Command::Snapshots(
            cmd @ (SnapshotsCmd::Hold { .. }
            | SnapshotsCmd::Unhold { .. }
            | SnapshotsCmd::Tag { .. }
            | SnapshotsCmd::Forget { .. }),
        ) => holds::run(&mut c, format, cmd).await,
        Command::Snapshots(SnapshotsCmd::Show { id }) => {
            let s = c
                .operator
                .get_snapshot(GetSnapshotRequest { id })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(format, view::snapshot_json(&s), || {
                view::snapshot_fields(&s)
            })
        }
        Command::Locations(LocationsCmd::Ls) => {
            let r = c
                .operator
                .list_locations(ListLocationsRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            list(
                format,
                &r.locations,
                view::location_json,
                view::locations_table,
                "no locations configured",
            )
        }
        Command::Verify(VerifyArgs {
            deep,
            location,
            snapshot,
        }) => {
            let req = VerifyRequest {
                deep,
                location: location.unwrap_or_default(),
                snapshot_id: snapshot.unwrap_or_default(),
            };
            // No deadline: a deep verification reads everything back.
            let spinner = verify_spinner(deep);
            let r = c.operator.verify(req.clone()).await;
            if let Some(bar) = spinner {
                bar.finish_and_clear();
            }
            let r = r.map_err(|s| c.error(s))?.into_inner();
            one(format, view::verify_json(&req, &r), || {
                view::verify_fields(&req, &r)
            })?;
            verify_outcome(&r)
        }
        Command::Status => {
            // One after the other: when the controller refuses this
            // certificate, only the first RPC learns why.
            let ping = c
                .health
                .ping(PingRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            let status = c
                .operator
                .status(StatusRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(format, view::status_json(&c.addr, &ping, &status), || {
                view::status_fields(&c.addr, &ping, &status)
            })
        }
        Command::Audit(cmd) => audit::audit(&mut c, format, cmd).await,
        Command::Mfa(cmd) => audit::mfa(&mut c, format, cmd, totp).await,
        Command::Key(KeyCmd::Export {
            out,
            passphrase_file,
        }) => {
            if out.exists() {
                anyhow::bail!("{} exists; give a new file", out.display());
            }
            let passphrase = recovery_key::ask_passphrase(passphrase_file.as_deref(), true)?;
            let r = c
                .operator
                .export_key(with_totp(
                    trireme_proto::v1::ExportKeyRequest { passphrase },
                    totp,
                )?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            recovery_key::write_new(&out, r.export.as_bytes())?;
            one(
                format,
                serde_json::json!({ "key_id": r.key_id, "file": out.display().to_string() }),
                || {
                    format!(
                        "wrote master key {} to {}, wrapped by your passphrase; keep it offline and apart from the passphrase",
                        r.key_id,
                        out.display()
                    )
                },
            )
        }
        Command::Key(KeyCmd::Import { .. }) => {
            unreachable!("`key import` runs locally (cli::run)")
        }
        Command::RestoreTest(cmd) => recovery::restore_test(&mut c, format, cmd).await,
        Command::Drill(cmd) => recovery::drill(&mut c, format, cmd).await,
        Command::Catalog(CatalogCmd::Rebuild { from }) => {
            let r = c
                .operator
                .rebuild_catalog(with_totp(
                    trireme_proto::v1::RebuildCatalogRequest {
                        location: from.clone(),
                    },
                    totp,
                )?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(
                format,
                serde_json::json!({
                    "found": r.found, "added": r.added, "known": r.known,
                    "sources_added": r.sources_added, "skipped": r.skipped,
                }),
                || {
                    let mut t = format!(
                        "rebuilt from {from}: {} snapshots found, {} added, {} already known, {} sources added",
                        r.found, r.added, r.known, r.sources_added
                    );
                    for s in &r.skipped {
                        t.push_str(&format!("\nskipped: {s}"));
                    }
                    t.push_str("\npolicies are not stored at the locations: apply them again (`trireme policy apply`)");
                    t
                },
            )
        }
        Command::Prune(args) => prune::run(&mut c, format, args).await,
        Command::Ls(a) => browse::ls(&mut c, format, a).await,
        Command::Diff(a) => browse::diff(&mut c, format, a).await,
        Command::Find(a) => browse::find(&mut c, format, a).await,
        Command::Stats(a) => browse::stats(&mut c, format, a).await,
        Command::Dump(a) => browse::dump(&mut c, a, totp).await,
        Command::Cert(_) | Command::Completions { .. } | Command::Man { .. } => {
            unreachable!("handled without a controller")
        }
    }
}

/// A new job: print it, then follow it when asked.
async fn started(
    c: &mut Controller,
    format: Format,
    job: JobInfo,
    wait: bool,
) -> anyhow::Result<()> {
    if !wait {
        return one(format, view::job_json(&job), || {
            format!(
                "started {}: {}",
                view::job_headline(&job),
                view::state_name(job.state)
            )
        });
    }
    // With --wait -o json, the watch's first line is the job itself.
    if format == Format::Table {
        println(&format!("started {}", view::job_headline(&job)))?;
    }
    watch::watch(c, format, &job.id).await
}

/// A spinner on stderr while `verify` runs, when stderr is a terminal.
fn verify_spinner(deep: bool) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {elapsed:>4} {msg}") {
        bar.set_style(style);
    }
    bar.set_message(if deep {
        "deep verification: re-reading every object (this can take long)"
    } else {
        "quick verification"
    });
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

/// Ok when no damaged copy is left, else the error that makes the exit code 1.
fn verify_outcome(r: &VerifyReply) -> anyhow::Result<()> {
    let n = r.unrepaired.len();
    match r.unrepaired.first() {
        None => Ok(()),
        Some(first) => {
            let more = if n > 1 {
                format!(" and {} more", n - 1)
            } else {
                String::new()
            };
            Err(anyhow!(
                "{n} damaged {} could not be repaired, because no good copy is left at any \
                 location: {first}{more} (listed as unrepaired)",
                if n == 1 { "copy" } else { "copies" }
            ))
        }
    }
}

fn or_agent(agent: &str) -> &str {
    if agent.is_empty() {
        "the agent"
    } else {
        agent
    }
}

/// The policy file's text (`-`: standard input).
fn read_policy(file: &Path) -> anyhow::Result<String> {
    let text = if file == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the policy from standard input")?;
        s
    } else {
        std::fs::read_to_string(file)
            .with_context(|| format!("reading the policy file {}", file.display()))?
    };
    if text.trim().is_empty() {
        let what = if file == Path::new("-") {
            "standard input".to_string()
        } else {
            file.display().to_string()
        };
        bail!(
            "the policy in {what} is empty; a policy file is [[policy]] tables, each with \
             source, schedule and retention"
        );
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_fails_only_on_unrepaired_copies() {
        let mut r = VerifyReply {
            problems: vec!["primary: chunks/ab: hash mismatch".into()],
            repaired: vec!["primary: chunks/ab".into()],
            ..Default::default()
        };
        assert!(verify_outcome(&r).is_ok());
        r.unrepaired = vec!["offsite: chunks/cd".into(), "offsite: chunks/ef".into()];
        let err = verify_outcome(&r).unwrap_err().to_string();
        assert!(
            err.starts_with("2 damaged copies could not be repaired")
                && err.contains("offsite: chunks/cd and 1 more"),
            "{err}"
        );
    }
}
