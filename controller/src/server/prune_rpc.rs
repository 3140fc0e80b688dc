//! The `Prune` RPC's work: hold job dispatch, check that no job is under
//! way, run [`crate::prune::prune`], and turn the outcome into its reply.
//! The handler in [`super::operator`] only checks the role.

use std::sync::Arc;
use std::time::Duration;

use tonic::Status;
use trireme_common::{DynKeyProvider, Identity};
use trireme_proto::v1::{PruneLocation, PruneReply, PruneRequest, PruneSnapshot};

use super::agents::dispatch_soon;
use super::Shared;
use crate::catalog::SourceId;
use crate::error::{Error, Result};
use crate::prune::{self, LocationOutcome, PruneOutcome, Verdict};

/// Run a prune for `who`.
///
/// # Errors
/// `InvalidArgument` for a bad source, `FailedPrecondition` while jobs are
/// under way, catalog errors.
pub async fn run(
    shared: &Arc<Shared>,
    who: &Identity,
    r: PruneRequest,
) -> Result<PruneReply, Status> {
    let source = match &r.source {
        Some(s) if !(s.agent.is_empty() && s.source.is_empty()) => {
            Some(SourceId::new(s.agent.clone(), s.source.clone())?)
        }
        _ => None,
    };
    let req = prune::PruneRequest {
        dry_run: r.dry_run,
        source,
    };
    let outcome = prune_now(shared, &req).await?;
    tracing::info!(
        target: "trireme::audit",
        who = %who.name, role = %who.role, serial = %who.serial,
        action = "prune",
        dry_run = req.dry_run,
        source = %req.source.as_ref().map(|s| s.to_string()).unwrap_or_default(),
        removed = outcome.removed.len(),
        "operator action"
    );
    Ok(to_wire(&outcome))
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
/// under way, try again a little later.
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
        match prune_now(&shared, &prune::PruneRequest::default()).await {
            Ok(o) => {
                wait = every;
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
                wait = every;
            }
        }
    }
}

fn snapshot(v: &Verdict) -> PruneSnapshot {
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
    }
}

fn location(o: &LocationOutcome) -> PruneLocation {
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

/// The outcome as the wire reply.
pub fn to_wire(o: &PruneOutcome) -> PruneReply {
    PruneReply {
        dry_run: o.dry_run,
        removed: o.removed.iter().map(snapshot).collect(),
        kept: o.kept.iter().map(snapshot).collect(),
        locations: o.locations.iter().map(location).collect(),
        notes: o.notes.clone(),
    }
}
