//! The `Prune` RPC's work: hold job dispatch, check that no job is under
//! way, run [`crate::prune::prune`], and put what it deleted into the audit
//! chain. The handler in [`super::operator`] checks the role and the second
//! factor (audited, as for a restore: deleting backups is as sensitive as
//! reading them back) and turns the outcome into its reply
//! ([`super::convert::prune_reply`]).
//!
//! A dry run deletes nothing: it needs the operator role but no second
//! factor, and is audited too. The `[retention] prune_every` loop is
//! authorised by the controller's own configuration; its runs are audited
//! as by `scheduler` when they delete anything or fail.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use trireme_common::DynKeyProvider;
use trireme_net::Identity;

use super::agents::dispatch_soon;
use super::Shared;
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::prune::{self, PruneOutcome};
use crate::sources::SourceId;

/// The audit log's action name of every prune, manual or scheduled.
pub const ACTION: &str = "prune";

/// Most snapshot ids one audit entry lists (the rest are counted).
const AUDIT_IDS: usize = 100;

/// Run a prune for `who` (whose role and second factor were checked;
/// `mfa` says how, for the audit entry) and audit it: what it deleted, or
/// why it was refused or failed. `source`: the agent and source names of
/// the one source to prune (both empty: every source).
///
/// # Errors
/// An invalid source name, [`Error::PruneRefused`] while jobs are under
/// way, catalog errors.
pub async fn run(
    shared: &Arc<Shared>,
    who: &Identity,
    peer: Option<SocketAddr>,
    mfa: &str,
    dry_run: bool,
    source: (String, String),
) -> Result<PruneOutcome> {
    let audit = |event: Event| shared.audit(event.from_peer(peer));
    let source = match source {
        (agent, name) if !(agent.is_empty() && name.is_empty()) => {
            Some(SourceId::new(agent, name).inspect_err(|e| {
                audit(Event::by(who, ACTION, "").refused(e.to_string()));
            })?)
        }
        _ => None,
    };
    let req = prune::PruneRequest { dry_run, source };
    match prune_now(shared, &req).await {
        Ok(outcome) => {
            let event = Event::by(who, ACTION, format!("{}{mfa}", summary(&req, &outcome)));
            audit(match location_errors(&outcome) {
                Some(errors) => event.problem(errors),
                None => event,
            });
            Ok(outcome)
        }
        Err(e) => {
            let target = scope(&req);
            audit(match &e {
                Error::PruneRefused(why) => Event::by(who, ACTION, target).refused(why.clone()),
                e => Event::by(who, ACTION, target).problem(e.to_string()),
            });
            Err(e)
        }
    }
}

/// What was asked: `dry run` or `prune`, and of which source.
fn scope(req: &prune::PruneRequest) -> String {
    format!(
        "{} of {}",
        if req.dry_run { "dry run" } else { "prune" },
        req.source
            .as_ref()
            .map_or_else(|| "every source".to_string(), ToString::to_string)
    )
}

/// The audit entry's target: what was asked, which snapshots were removed
/// (or would be), and what each location deleted or why it was skipped.
pub fn summary(req: &prune::PruneRequest, o: &PruneOutcome) -> String {
    let mut ids: Vec<String> = o
        .removed
        .iter()
        .take(AUDIT_IDS)
        .map(|v| format!("{} ({})", v.id.to_hex(), v.source))
        .collect();
    if o.removed.len() > AUDIT_IDS {
        ids.push(format!("and {} more", o.removed.len() - AUDIT_IDS));
    }
    let verb = if o.dry_run { "would remove" } else { "removed" };
    let mut text = format!(
        "{}: {verb} {} snapshot(s){}{}",
        scope(req),
        o.removed.len(),
        if ids.is_empty() { "" } else { ": " },
        ids.join(", ")
    );
    for l in &o.locations {
        text.push_str(&format!("; {}: ", l.name));
        if let Some(why) = &l.skipped {
            text.push_str(&format!("skipped ({why})"));
            continue;
        }
        text.push_str(&format!(
            "{} snapshot(s), {} pack(s), {} index object(s) {}, {} bytes {}",
            l.snapshots_removed.len(),
            l.packs_deleted,
            l.index_deleted,
            if o.dry_run { "to delete" } else { "deleted" },
            l.bytes_freed,
            if o.dry_run { "to free" } else { "freed" },
        ));
        if let Some(e) = &l.error {
            text.push_str(&format!(", stopped part-way: {e}"));
        }
    }
    if o.dry_run {
        text.push_str("; nothing deleted");
    }
    text
}

/// The locations that stopped part-way, if any.
fn location_errors(o: &PruneOutcome) -> Option<String> {
    let errors: Vec<String> = o
        .locations
        .iter()
        .filter_map(|l| l.error.as_ref().map(|e| format!("{}: {e}", l.name)))
        .collect();
    (!errors.is_empty()).then(|| format!("stopped part-way at {}", errors.join("; ")))
}

/// Whether a prune deleted anything anywhere.
fn deleted_anything(o: &PruneOutcome) -> bool {
    !o.dry_run
        && (!o.removed.is_empty()
            || o.locations.iter().any(|l| {
                !l.snapshots_removed.is_empty() || l.packs_deleted > 0 || l.index_deleted > 0
            }))
}

/// Prune now: hold job dispatch, refuse while a job is under way, prune,
/// then send agents the jobs queued meanwhile.
///
/// # Errors
/// [`Error::PruneRefused`] while jobs are under way; catalog errors.
pub async fn prune_now(shared: &Arc<Shared>, req: &prune::PruneRequest) -> Result<PruneOutcome> {
    // No job starts while the prune runs (dispatch takes the gate's read
    // side), and none may be under way when it starts.
    let gate = shared.prune_gate.write().await;
    let outcome = async {
        prune::check_idle(&shared.catalog)?;
        let keys: DynKeyProvider = shared.master_key.clone();
        prune::prune(
            &shared.catalog,
            &shared.replicator,
            keys,
            &prune::PruneTrust::controller(&shared.catalog, &shared.custody, shared.now()),
            req,
            shared.now(),
        )
        .await
    }
    .await;
    drop(gate);
    for agent in shared.agents.connected() {
        dispatch_soon(shared, agent);
    }
    outcome
}

/// The `[retention] prune_every` loop: prune every `every`; while jobs are
/// under way, try again a little later. A run that deleted anything, or
/// failed, goes into the audit chain as by `scheduler`; one that found
/// nothing to delete is only logged (a short `prune_every` would otherwise
/// fill the chain with no-ops).
pub async fn scheduled(
    shared: Arc<Shared>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let retry = every.min(Duration::from_secs(30));
    let mut wait = every;
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            () = tokio::time::sleep(wait) => {}
        }
        let req = prune::PruneRequest::default();
        match prune_now(&shared, &req).await {
            Ok(o) => {
                wait = every;
                if deleted_anything(&o) || location_errors(&o).is_some() {
                    let event = scheduler_event(summary(&req, &o));
                    shared.record(match location_errors(&o) {
                        Some(errors) => event.problem(errors),
                        None => event,
                    });
                }
                let skipped: Vec<String> = o
                    .locations
                    .iter()
                    .filter_map(|l| l.skipped.as_ref().map(|s| format!("{}: {s}", l.name)))
                    .collect();
                tracing::info!(
                    target: "trireme::audit",
                    action = "scheduled prune",
                    removed = o.removed.len(),
                    skipped = %skipped.join("; "),
                    "scheduled prune"
                );
                for l in o.locations.iter().filter(|l| l.error.is_some()) {
                    tracing::error!(location = %l.name, error = ?l.error, "scheduled prune stopped part-way");
                }
            }
            Err(Error::PruneRefused(why)) => {
                tracing::info!(%why, "scheduled prune postponed");
                wait = retry;
            }
            Err(e) => {
                tracing::error!(error = %e, "scheduled prune failed");
                shared.record(scheduler_event(scope(&req)).problem(e.to_string()));
                wait = every;
            }
        }
    }
}

/// A scheduled prune's audit entry: actor `scheduler`, role `controller`.
fn scheduler_event(target: String) -> Event {
    Event::actor("scheduler", "controller", ACTION, target)
}
