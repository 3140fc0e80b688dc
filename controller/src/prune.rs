//! Retention and prune across locations.
//!
//! [`prune`] decides, per source with a policy, which snapshots its
//! retention class keeps ([`crate::retention::select`]), adds the safety
//! rules, and removes the rest at every location that is up to date, with
//! the engine of [`trireme_common::prune`]. The rules:
//!
//! - a source's newest snapshot, its newest snapshot verified at every
//!   location and its newest snapshot verified at any location are always
//!   kept, whatever the class says;
//! - a snapshot that stays keeps every snapshot it depends on, transitively
//!   (a TiDB incremental keeps its full backup and the incrementals
//!   between; [`crate::retention::needed`]), whatever their source; each
//!   is reported as "needed by" the staying snapshot that needs it;
//! - a snapshot with an active hold ([`crate::holds`]) stays, and so
//!   does everything it depends on; it is reported as held;
//! - a source without a policy, or whose class is not defined, keeps
//!   everything;
//! - nothing runs while a job is queued or running (the caller holds job
//!   dispatch for the duration, and the replicator's pass lock is held so
//!   no copy runs meanwhile);
//! - a location is skipped, with the reason reported, when it cannot be
//!   listed, when a kept snapshot is not verified there or its manifest is
//!   missing there (a snapshot incomplete at every location, whose copies
//!   replication cannot complete anywhere, does not count: no location is
//!   behind another for it), when it lacks a snapshot another location
//!   holds, or
//!   when its repository cannot be read completely. Nothing is deleted at a
//!   skipped location.
//!
//! Before deleting anything, the objects to delete are recorded as
//! *tombstones* in the catalog: replication does not copy them back from a
//! skipped location. A removed snapshot then leaves the catalog; the
//! locations that may still hold it (skipped, stopped part-way by an error,
//! or refusing because it is locked) are remembered in the `pruning` tree
//! and pruned of it by later runs, once they are up to date. A tombstone is
//! dropped once no location holds its object.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::prune::{self as engine, IndexSealer, PrunePlan};
use trireme_common::{DynKeyProvider, Id, ObjectKey, ObjectKind, Repository};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::replication::{verified_copies, Replicator};
use crate::retention::{needed, select, NeededBy, RetentionClass};
use crate::snapshots::{CopyState, SnapshotRecord};
use crate::sources::SourceId;

/// A location that does not answer a listing within this time is skipped.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// A snapshot removed from the catalog that skipped locations still hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingPrune {
    /// Its source.
    pub source: SourceId,
    /// Its backup time.
    pub time: DateTime<Utc>,
    /// Locations still holding it (or unknown: they were unreachable).
    pub locations: BTreeSet<String>,
    /// When it was removed elsewhere.
    pub since: DateTime<Utc>,
}

/// What to prune.
#[derive(Debug, Clone, Default)]
pub struct PruneRequest {
    /// Only report what would go.
    pub dry_run: bool,
    /// Only this source's snapshots (default: every source with a policy).
    pub source: Option<SourceId>,
}

/// One snapshot in a prune's verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The snapshot.
    pub id: Id,
    /// Its source.
    pub source: SourceId,
    /// Its backup time.
    pub time: DateTime<Utc>,
    /// Why it goes, or why it stays (the rules that keep it, or the
    /// snapshot that needs it).
    pub reason: String,
    /// For a snapshot that stays only because a staying snapshot depends on
    /// it: that snapshot and the chain.
    pub needed_by: Option<NeededBy>,
    /// Whether it stays (also) because of an active hold.
    pub held: bool,
}

/// What happened (or would happen) at one location.
#[derive(Debug, Clone, Default)]
pub struct LocationOutcome {
    /// The location's name.
    pub name: String,
    /// Why it was skipped (nothing deleted there), when it was.
    pub skipped: Option<String>,
    /// An error part-way (what was done is counted; the repository stays
    /// readable).
    pub error: Option<String>,
    /// Snapshot manifests removed (or to remove).
    pub snapshots_removed: Vec<Id>,
    /// Packs deleted (or to delete).
    pub packs_deleted: u64,
    /// Index objects deleted (or to replace).
    pub index_deleted: u64,
    /// Index objects written (0 or 1).
    pub index_written: u64,
    /// Bytes freed (or to free: packs only in a dry run).
    pub bytes_freed: u64,
    /// Objects the store refused to delete because they are locked.
    pub locked: Vec<String>,
    /// Kept packs that also hold unreferenced chunks (not repacked).
    pub mixed_packs: u64,
    /// Unreferenced bytes inside those packs.
    pub unused_bytes: u64,
    /// Packs no index lists (left alone).
    pub unindexed_packs: u64,
}

/// What [`prune`] did.
#[derive(Debug, Clone, Default)]
pub struct PruneOutcome {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Snapshots removed (or to remove), with why.
    pub removed: Vec<Verdict>,
    /// Snapshots kept, with why.
    pub kept: Vec<Verdict>,
    /// Per location.
    pub locations: Vec<LocationOutcome>,
    /// Remarks: sources kept whole (no policy, undefined class), snapshots
    /// still pending at skipped locations.
    pub notes: Vec<String>,
}

/// Refuse to prune while any job is queued or running: a backup could
/// reuse a chunk of a pack about to be deleted, and a restore could be
/// reading a snapshot about to go.
///
/// # Errors
/// [`Error::PruneRefused`] naming the unfinished jobs.
pub fn check_idle(catalog: &Catalog) -> Result<()> {
    let busy = catalog.active().entries()?;
    if busy.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = busy
        .iter()
        .take(5)
        .map(|(s, j)| format!("{j} ({s})"))
        .collect();
    Err(Error::PruneRefused(format!(
        "{} job(s) are queued or running: {}{}; prune runs when no backup or restore is under way (wait, or cancel them)",
        busy.len(),
        list.join(", "),
        if busy.len() > 5 { ", …" } else { "" }
    )))
}

/// Which snapshots go, by retention, the safety rules and the dependency
/// chains. `locations` is the number of locations (for "verified at every
/// location").
///
/// # Errors
/// Catalog errors.
pub fn decide(
    catalog: &Catalog,
    only: Option<&SourceId>,
    locations: usize,
    now: DateTime<Utc>,
) -> Result<(Vec<Verdict>, Vec<Verdict>, Vec<String>)> {
    let all = catalog.snapshots().values()?;
    let mut by_source: BTreeMap<SourceId, Vec<&SnapshotRecord>> = BTreeMap::new();
    for s in &all {
        if only.is_none_or(|o| *o == s.source) {
            by_source.entry(s.source.clone()).or_default().push(s);
        }
    }
    let verdict = |s: &SnapshotRecord, reason: String| Verdict {
        id: s.id,
        source: s.source.clone(),
        time: s.time,
        reason,
        needed_by: None,
        held: false,
    };
    let holds = catalog.active_holds(now)?;
    let (mut removed, mut kept, mut notes) = (Vec::new(), Vec::new(), Vec::new());
    for (source, mut snaps) in by_source {
        snaps.sort_by_key(|s| (s.time, s.id));
        let policy = catalog.policies().get(&source)?.map(|r| r.policy);
        let class: Option<RetentionClass> = match &policy {
            Some(p) => catalog.retention().get(&p.retention)?,
            None => None,
        };
        let (Some(policy), Some(class)) = (policy.as_ref(), class) else {
            notes.push(match &policy {
                None => format!(
                    "{source}: no policy, so no retention class: keeping its {} snapshot(s)",
                    snaps.len()
                ),
                Some(p) => format!(
                    "{source}: retention class {:?} is not defined (add a [retention.{}] table to the policy file and apply it): keeping its {} snapshot(s)",
                    p.retention,
                    p.retention,
                    snaps.len()
                ),
            });
            kept.extend(
                snaps
                    .iter()
                    .map(|s| verdict(s, "no retention class".into())),
            );
            continue;
        };
        let times: Vec<(Id, DateTime<Utc>)> = snaps.iter().map(|s| (s.id, s.time)).collect();
        let sel = select(&times, &class, now, policy.timezone.0);
        // Safety: the newest copies that verified good stay.
        let newest_full = snaps
            .iter()
            .rev()
            .find(|s| locations > 0 && verified_copies(s) >= locations)
            .map(|s| s.id);
        let newest_any = snaps
            .iter()
            .rev()
            .find(|s| verified_copies(s) >= 1)
            .map(|s| s.id);
        let record = |id: &Id| {
            *snaps
                .iter()
                .find(|s| s.id == *id)
                .expect("selected from snaps")
        };
        for (id, why) in sel.keep {
            kept.push(verdict(record(&id), why.join(", ")));
        }
        for (id, why) in sel.remove {
            let s = record(&id);
            if Some(id) == newest_full {
                kept.push(verdict(
                    s,
                    "newest snapshot verified at every location".into(),
                ));
            } else if Some(id) == newest_any {
                kept.push(verdict(
                    s,
                    "newest snapshot verified at any location".into(),
                ));
            } else if let Some(h) = holds.get(&id) {
                kept.push(verdict(s, h.describe()));
            } else {
                removed.push(verdict(s, why));
            }
        }
    }

    // Chains: what a staying snapshot (of any source) needs stays too.
    let candidates: BTreeSet<Id> = removed.iter().map(|v| v.id).collect();
    let graph: Vec<(Id, DateTime<Utc>, &[trireme_common::Dependency])> = all
        .iter()
        .map(|s| (s.id, s.time, s.depends_on.as_slice()))
        .collect();
    let needed = needed(&graph, &candidates);
    let mut still_removed = Vec::new();
    for mut v in removed {
        match needed.get(&v.id) {
            Some(n) => {
                let by = all.iter().find(|s| s.id == n.snapshot);
                v.reason = match by {
                    Some(b) if b.source != v.source => format!(
                        "needed by {} of {} ({} chain)",
                        n.snapshot.short(),
                        b.source,
                        n.chain
                    ),
                    _ => n.to_string(),
                };
                v.needed_by = Some(n.clone());
                kept.push(v);
            }
            None => still_removed.push(v),
        }
    }
    let mut removed = still_removed;
    // A staying snapshot whose chain the catalog lacks does not restore.
    let known: HashSet<Id> = all.iter().map(|s| s.id).collect();
    for v in &kept {
        let Some(s) = all.iter().find(|s| s.id == v.id) else {
            continue;
        };
        for d in s.depends_on.iter().filter(|d| !known.contains(&d.snapshot)) {
            notes.push(format!(
                "snapshot {} of {} needs {} ({} chain), which is not in the catalog: it does not restore (make a full backup)",
                s.id.short(),
                s.source,
                d.snapshot.short(),
                d.chain
            ));
        }
    }
    // Held snapshots say so, whatever else keeps them.
    for v in &mut kept {
        if let Some(h) = holds.get(&v.id) {
            v.held = true;
            let text = h.describe();
            if v.reason != text {
                v.reason = format!("{}; {text}", v.reason);
            }
        }
    }
    removed.sort_by(|a, b| (&a.source, a.time).cmp(&(&b.source, b.time)));
    kept.sort_by(|a, b| (&a.source, a.time).cmp(&(&b.source, b.time)));
    Ok((removed, kept, notes))
}

/// Which index objects a prune believes (see [`trireme_common::scope::Belief`]).
pub type BeliefFn<'a> =
    dyn Fn(&str, Option<&trireme_common::index::IndexFile>) -> bool + Send + Sync + 'a;
/// Told the names of the index objects a prune wrote.
pub type WroteFn<'a> = dyn Fn(&[String]) -> Result<()> + Send + Sync + 'a;

/// What a prune believes and how it writes: which index objects it plans
/// with, the config it opens locations with, and the attribution of the
/// index objects it writes.
pub struct PruneTrust<'a> {
    /// Which index objects to believe ([`trireme_common::scope::Belief`]).
    pub believe: Box<BeliefFn<'a>>,
    /// The authentic config bytes (else each location's own is read).
    pub config: Option<Vec<u8>>,
    /// The attribution of the index objects prune writes.
    pub attribution: Option<trireme_common::attribution::Attribution>,
    /// Called with the names of the index objects prune wrote.
    pub wrote: Box<WroteFn<'a>>,
}

impl<'a> PruneTrust<'a> {
    /// The controller's: believe only the index objects recorded in the
    /// catalog, open locations with the authentic config, attribute what it
    /// writes to the controller and record it as believed.
    pub fn controller(
        catalog: &'a Catalog,
        custody: &'a crate::custody::Custody,
        now: DateTime<Utc>,
    ) -> Self {
        use trireme_common::attribution::{Attribution, CONTROLLER_JOB};
        PruneTrust {
            believe: Box::new(move |n, _| crate::attribution::believed(catalog, n)),
            config: Some(custody.config_bytes().to_vec()),
            attribution: Some(Attribution {
                job: CONTROLLER_JOB,
                agent: String::new(),
                key: custody.job_mac_key(&CONTROLLER_JOB, ""),
            }),
            wrote: Box::new(move |names| {
                crate::attribution::believe(catalog, names.iter().cloned(), None, now)
            }),
        }
    }

    /// Believe every readable index object, write unattributed (a
    /// repository outside fleet mode, and the engine's own tests).
    pub fn everything() -> Self {
        PruneTrust {
            believe: Box::new(trireme_common::scope::believe_all),
            config: None,
            attribution: None,
            wrote: Box::new(|_| Ok(())),
        }
    }
}

/// Apply retention at every location: see the module documentation. The
/// caller must hold job dispatch and have checked [`check_idle`].
///
/// # Errors
/// Catalog errors; storage problems are reported per location.
pub async fn prune(
    catalog: &Catalog,
    replicator: &Replicator,
    keys: DynKeyProvider,
    trust: &PruneTrust<'_>,
    req: &PruneRequest,
    now: DateTime<Utc>,
) -> Result<PruneOutcome> {
    let _no_pass = replicator.exclusive().await;
    let sites = replicator.sites();
    let (removed, kept, mut notes) = decide(catalog, req.source.as_ref(), sites.len(), now)?;
    let remove: BTreeSet<Id> = removed.iter().map(|v| v.id).collect();
    let all_pending = catalog.pruning().entries()?;
    // Ids that no location is to keep: removed now, or removed before (of
    // any source: they do not make a location look behind).
    let condemned: BTreeSet<Id> = remove
        .iter()
        .copied()
        .chain(all_pending.iter().map(|(id, _)| *id))
        .collect();
    let pending: Vec<(Id, PendingPrune)> = all_pending
        .into_iter()
        .filter(|(_, p)| req.source.as_ref().is_none_or(|s| *s == p.source))
        .collect();
    let all_snaps = catalog.snapshots().values()?;

    // 1. List the snapshot manifests at every location.
    let mut listed: Vec<std::result::Result<BTreeSet<Id>, String>> = Vec::new();
    for site in sites {
        let r = match tokio::time::timeout(LIST_TIMEOUT, site.backend.list(ObjectKind::Snapshot))
            .await
        {
            Ok(Ok(l)) => Ok(l.iter().filter_map(|o| Id::from_hex(&o.key.name)).collect()),
            Ok(Err(e)) => Err(format!("unreachable: {e}")),
            Err(_) => Err(format!(
                "unreachable: no answer within {}s",
                LIST_TIMEOUT.as_secs()
            )),
        };
        listed.push(r);
    }

    // 2. Which locations are up to date.
    let mut outcomes: Vec<LocationOutcome> = sites
        .iter()
        .map(|s| LocationOutcome {
            name: s.name.clone(),
            ..LocationOutcome::default()
        })
        .collect();
    for (i, site) in sites.iter().enumerate() {
        let here = match &listed[i] {
            Ok(h) => h,
            Err(e) => {
                outcomes[i].skipped = Some(e.clone());
                continue;
            }
        };
        outcomes[i].skipped = behind(&site.name, here, &all_snaps, &condemned, &listed, sites);
    }

    // 3. Plan at each location that is.
    let mut plans: Vec<Option<(Arc<Repository>, PrunePlan)>> = Vec::new();
    for (i, site) in sites.iter().enumerate() {
        if outcomes[i].skipped.is_some() {
            plans.push(None);
            continue;
        }
        let mine: BTreeSet<Id> = remove
            .iter()
            .copied()
            .chain(
                pending
                    .iter()
                    .filter(|(_, p)| p.locations.contains(&site.name))
                    .map(|(id, _)| *id),
            )
            .collect();
        let planned = async {
            let repo = match &trust.config {
                Some(c) => Repository::from_config(site.backend.clone(), keys.clone(), c).await?,
                None => Repository::open(site.backend.clone(), keys.clone()).await?,
            };
            if let Some(a) = &trust.attribution {
                repo.set_attribution(a.clone());
            }
            let repo = Arc::new(repo);
            let plan = engine::plan_believing(&repo, &mine, &*trust.believe).await?;
            Ok::<_, trireme_common::Error>((repo, plan))
        }
        .await;
        match planned {
            Ok((repo, plan)) => {
                let o = &mut outcomes[i];
                o.snapshots_removed = plan.remove.clone();
                o.packs_deleted = plan.delete_packs.len() as u64;
                o.index_deleted = plan.replace_index.len() as u64;
                o.index_written = u64::from(plan.new_index.is_some());
                o.bytes_freed = plan.pack_bytes();
                o.mixed_packs = plan.mixed_packs as u64;
                o.unused_bytes = plan.unused_bytes;
                o.unindexed_packs = plan.unindexed_packs as u64;
                plans.push(Some((repo, plan)));
            }
            Err(e) => {
                outcomes[i].skipped = Some(format!("cannot read the repository completely: {e}"));
                plans.push(None);
            }
        }
    }
    for (id, p) in &pending {
        notes.push(format!(
            "snapshot {} of {} was removed elsewhere on {}; still to prune at {}",
            id.short(),
            p.source,
            p.since.format("%Y-%m-%d %H:%M"),
            p.locations.iter().cloned().collect::<Vec<_>>().join(", ")
        ));
    }
    if req.dry_run {
        return Ok(PruneOutcome {
            dry_run: true,
            removed,
            kept,
            locations: outcomes,
            notes,
        });
    }

    // 4. Tombstones first: from now on no copy brings these back.
    let doomed: BTreeSet<ObjectKey> = plans
        .iter()
        .flatten()
        .flat_map(|(_, p)| p.deletions())
        .collect();
    for key in &doomed {
        catalog.tombstones().insert(&key.path(), &now)?;
    }
    catalog.flush()?;

    // 5. Execute.
    let sealer = IndexSealer::new();
    let mut done: Vec<Option<HashSet<Id>>> = vec![None; sites.len()];
    for (i, planned) in plans.into_iter().enumerate() {
        let Some((repo, plan)) = planned else {
            continue;
        };
        let deletions = plan.deletions();
        let o = &mut outcomes[i];
        match engine::execute(&repo, plan, &sealer).await {
            Ok(r) => {
                o.snapshots_removed = r.snapshots_removed.clone();
                o.packs_deleted = r.packs_deleted;
                o.index_deleted = r.index_deleted;
                o.index_written = u64::from(r.index_written.is_some());
                o.bytes_freed = r.bytes_freed;
                o.locked = r.locked.iter().map(|k| k.path()).collect();
                if let Some(k) = &r.index_written {
                    (trust.wrote)(std::slice::from_ref(&k.name))?;
                }
                done[i] = Some(r.snapshots_removed.into_iter().collect());
            }
            Err(e) => {
                tracing::error!(location = %sites[i].name, error = %e, "prune stopped part-way; the repository stays readable");
                o.error = Some(e.to_string());
            }
        }
        replicator.forget(&sites[i].name, &deletions);
    }

    // 6. The catalog: a removed snapshot leaves it (its objects are
    //    tombstoned: it is condemned everywhere); the locations that may
    //    still hold it (skipped, failed part-way, or locked) are
    //    remembered, and later prunes remove it there.
    let holds = |i: usize, id: &Id| match &listed[i] {
        Ok(h) => h.contains(id),
        Err(_) => true,
    };
    let mut gone = 0usize;
    for v in &removed {
        let mut left = BTreeSet::new();
        for (i, site) in sites.iter().enumerate() {
            let still = match (&outcomes[i].skipped, &done[i]) {
                // A skipped location may hold it, whatever its listing said
                // (an unmounted directory lists empty): a later prune
                // looks again and forgets it where it is absent.
                (Some(_), _) => true,
                (None, Some(removed_here)) => holds(i, &v.id) && !removed_here.contains(&v.id),
                (None, None) => holds(i, &v.id),
            };
            if still {
                left.insert(site.name.clone());
            }
        }
        let pending_entry = (!left.is_empty()).then(|| PendingPrune {
            source: v.source.clone(),
            time: v.time,
            locations: left.clone(),
            since: now,
        });
        catalog.transaction_durable(|tx| {
            tx.snapshots().remove(&v.id)?;
            tx.marks().remove(&v.id)?;
            Ok(())
        })?;
        if let Some(p) = pending_entry {
            catalog.pruning().insert(&v.id, &p)?;
            notes.push(format!(
                "snapshot {} of {} is still at {} (skipped, stopped part-way or locked); a later prune removes it there",
                v.id.short(),
                v.source,
                left.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
        gone += 1;
    }
    for (id, mut p) in pending {
        for (i, site) in sites.iter().enumerate() {
            if !p.locations.contains(&site.name) || outcomes[i].skipped.is_some() {
                continue;
            }
            if done[i].as_ref().is_some_and(|d| d.contains(&id)) || !holds(i, &id) {
                p.locations.remove(&site.name);
            }
        }
        if p.locations.is_empty() {
            catalog.pruning().remove(&id)?;
        } else {
            catalog.pruning().insert(&id, &p)?;
        }
    }
    drop_tombstones(catalog, replicator).await?;
    catalog.flush()?;
    tracing::info!(
        target: "trireme::audit",
        removed = gone,
        "pruned: {} snapshot(s) left the catalog",
        gone
    );
    Ok(PruneOutcome {
        dry_run: false,
        removed,
        kept,
        locations: outcomes,
        notes,
    })
}

/// Why location `name` (holding snapshot manifests `here`) is behind, if it is.
fn behind(
    name: &str,
    here: &BTreeSet<Id>,
    all: &[SnapshotRecord],
    condemned: &BTreeSet<Id>,
    listed: &[std::result::Result<BTreeSet<Id>, String>],
    sites: &[crate::replication::Site],
) -> Option<String> {
    for s in all.iter().filter(|s| !condemned.contains(&s.id)) {
        if incomplete_everywhere(s, sites) {
            continue;
        }
        match s.copies.get(name) {
            Some(CopyState::Verified { .. }) => {}
            other => {
                let state = match other {
                    None | Some(CopyState::Pending) => "not copied yet".to_string(),
                    Some(CopyState::Copying { .. }) => "being copied".into(),
                    Some(CopyState::Copied { .. }) => "copied, not verified yet".into(),
                    Some(CopyState::Damaged { reason, .. }) => format!("damaged: {reason}"),
                    Some(CopyState::Incomplete { reason, .. }) => {
                        format!("incomplete: {reason}")
                    }
                    Some(CopyState::Verified { .. }) => unreachable!(),
                };
                return Some(format!(
                    "behind: kept snapshot {} of {} is not verified here ({state})",
                    s.id.short(),
                    s.source
                ));
            }
        }
        if !here.contains(&s.id) {
            return Some(format!(
                "behind: kept snapshot {} of {} is missing here",
                s.id.short(),
                s.source
            ));
        }
    }
    for (other, l) in sites.iter().zip(listed) {
        let Ok(l) = l else { continue };
        if let Some(id) = l
            .iter()
            .find(|id| !condemned.contains(id) && !here.contains(id))
        {
            return Some(format!(
                "behind: snapshot {} at {} is not here yet",
                id.short(),
                other.name
            ));
        }
    }
    None
}

/// Whether replication found `s` incomplete at every location: objects it
/// needs are at none, so no location lags another for it.
fn incomplete_everywhere(s: &SnapshotRecord, sites: &[crate::replication::Site]) -> bool {
    !sites.is_empty()
        && sites
            .iter()
            .all(|site| matches!(s.copies.get(&site.name), Some(CopyState::Incomplete { .. })))
}

/// Drop the tombstones of objects no location holds any more (only when
/// every location answers).
async fn drop_tombstones(catalog: &Catalog, replicator: &Replicator) -> Result<()> {
    let tombs = catalog.tombstones().keys()?;
    'next: for path in tombs {
        let Some(key) = ObjectKey::from_path(&path) else {
            catalog.tombstones().remove(&path)?;
            continue;
        };
        for site in replicator.sites() {
            match site.backend.head(&key).await {
                Ok(None) => {}
                _ => continue 'next,
            }
        }
        catalog.tombstones().remove(&path)?;
    }
    Ok(())
}

/// Snapshots removed from the catalog by prune that skipped locations still hold.
pub const PRUNING: crate::catalog::TableDef<trireme_common::Id, PendingPrune> =
    crate::catalog::TableDef::new("pruning");

/// Objects prune deleted (by path): replication does not copy them back.
pub const TOMBSTONES: crate::catalog::TableDef<String, chrono::DateTime<chrono::Utc>> =
    crate::catalog::TableDef::new("tombstones");

impl crate::catalog::Catalog {
    /// Snapshots removed from the catalog by prune that skipped locations still hold.
    pub fn pruning(&self) -> crate::catalog::Tree<trireme_common::Id, PendingPrune> {
        self.table(&PRUNING)
    }

    /// Objects prune deleted (by path): replication does not copy them back.
    pub fn tombstones(&self) -> crate::catalog::Tree<String, chrono::DateTime<chrono::Utc>> {
        self.table(&TOMBSTONES)
    }
}

#[cfg(test)]
pub(crate) mod tests;
