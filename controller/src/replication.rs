//! Replication and verification across locations.
//!
//! A *pass* makes every reachable location hold every object any location
//! holds ([`trireme_common::replicate::sync_to`]), after checking with a HEAD
//! the objects it has not verified since the controller started, and moves a
//! rolling deep verification forward by a budget so that every copy is
//! re-read within the configured window. A snapshot's copy at a location
//! becomes *verified* when a pass that started after the snapshot was
//! recorded finished that location completely and the objects that
//! snapshot needs are there: its manifest and every pack holding a chunk it
//! references ([`trireme_common::replicate::snapshot_objects`], read with
//! the master key), each present with the size the index records and its
//! checksum checked by this process (HEAD: size, and the store's SHA-256
//! against the name; or read back when it was copied there).
//! A snapshot some of whose objects are at no location (a pack deleted
//! before it was copied anywhere, chunks no index lists, a manifest gone)
//! cannot be completed: its copies are marked *incomplete* with what is
//! missing, an incident is recorded at each location and in the audit log,
//! and it is checked again at every pass. Damaged copies (missing, truncated, corrupt) are
//! rewritten from a copy that verified good and the incident is recorded.
//! Nothing is ever deleted here, and objects prune deleted (tombstones in
//! the catalog, see [`crate::prune`]) are not copied back.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::replicate::{self, Listing, Problem, SnapshotObjects};
use trireme_common::scope::KeyedIndex;
use trireme_common::{DynBackend, DynKeyProvider, Id, ObjectKey, ObjectKind, Repository};

use crate::catalog::Catalog;
use crate::error::Result;
use crate::snapshots::CopyState;

/// Objects copied or checked at once per location.
const CONCURRENCY: usize = 8;
/// Incidents kept per location.
const MAX_INCIDENTS: usize = 50;
/// A location that cannot be listed within this time is skipped this pass.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the catalog keeps about a location.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LocationState {
    /// Reachable at the last pass.
    pub reachable: bool,
    /// The last error, empty when the last pass went well.
    #[serde(default)]
    pub last_error: String,
    /// Objects and bytes at the last listing.
    pub objects: u64,
    /// Bytes.
    pub bytes: u64,
    /// When a pass last completed this location.
    pub last_sync: Option<DateTime<Utc>>,
    /// When every object here was last HEAD-checked.
    pub last_quick_verify: Option<DateTime<Utc>>,
    /// When the rolling deep verification last finished a round.
    pub last_deep_round: Option<DateTime<Utc>>,
    /// When the current round started.
    pub deep_round_started: Option<DateTime<Utc>>,
    /// The last key deep-verified in the current round (path), empty at the start.
    #[serde(default)]
    pub deep_cursor: String,
    /// Share of the location's bytes the current round has re-read, 0..1.
    #[serde(default)]
    pub deep_progress: f64,
    /// Damaged copies found here, in all.
    pub problems_found: u64,
    /// Of which repaired.
    pub problems_repaired: u64,
    /// Recent incidents, newest first.
    #[serde(default)]
    pub incidents: Vec<String>,
}

/// Settings of replication and verification.
#[derive(Debug, Clone, Copy)]
pub struct ReplicationSettings {
    /// Time between passes (a new snapshot starts one soon).
    pub every: Duration,
    /// Every copy is fully re-read within this window.
    pub deep_window: Duration,
    /// Every object is HEAD-checked at least this often.
    pub quick_every: Duration,
}

impl Default for ReplicationSettings {
    fn default() -> Self {
        ReplicationSettings {
            every: Duration::from_secs(60),
            deep_window: Duration::from_secs(30 * 86400),
            quick_every: Duration::from_secs(24 * 3600),
        }
    }
}

/// One location as the replicator sees it.
pub struct Site {
    /// Name.
    pub name: String,
    /// Storage.
    pub backend: DynBackend,
    /// Bandwidth cap for writes to it.
    pub pacer: Option<replicate::Pacer>,
}

/// What a pass or an on-demand verification did.
#[derive(Debug, Default, Clone)]
pub struct PassReport {
    /// Objects checked (HEAD or re-read).
    pub checked: u64,
    /// Bytes re-read.
    pub bytes_read: u64,
    /// Objects copied, bytes copied.
    pub copied: u64,
    /// Bytes copied.
    pub copied_bytes: u64,
    /// "location: problem", damaged copies found.
    pub problems: Vec<String>,
    /// Damaged copies rewritten from good ones.
    pub repaired: Vec<String>,
    /// Copies that could not be (re)written.
    pub unrepaired: Vec<String>,
}

/// The replicator: shared by the background loop and on-demand requests
/// (one pass at a time).
pub struct Replicator {
    catalog: Catalog,
    sites: Vec<Site>,
    settings: ReplicationSettings,
    /// The master key: snapshots' manifests and trees are read to know the
    /// objects each needs.
    keys: DynKeyProvider,
    /// The last index read at each location (index objects are immutable:
    /// a refresh reads only new ones).
    indexes: tokio::sync::Mutex<HashMap<String, Arc<KeyedIndex>>>,
    /// The objects each snapshot not yet verified everywhere needs.
    needs: Mutex<HashMap<Id, Arc<SnapshotObjects>>>,
    /// Objects whose checksum was read back at each location since start.
    verified: Mutex<HashMap<String, HashSet<ObjectKey>>>,
    /// Known damaged copies, per location, to rewrite.
    damaged: Mutex<HashMap<String, HashSet<ObjectKey>>>,
    running: tokio::sync::Mutex<()>,
    /// Believe every readable index object (engine tests; repositories
    /// written outside fleet mode), not only the ones the catalog records.
    believe_all: bool,
}

impl Replicator {
    /// A replicator over `sites` (primary first), reading snapshots with
    /// the master key `keys`.
    pub fn new(
        catalog: Catalog,
        sites: Vec<Site>,
        settings: ReplicationSettings,
        keys: DynKeyProvider,
    ) -> Self {
        Replicator {
            catalog,
            sites,
            settings,
            keys,
            indexes: tokio::sync::Mutex::default(),
            needs: Mutex::default(),
            verified: Mutex::default(),
            damaged: Mutex::default(),
            running: tokio::sync::Mutex::new(()),
            believe_all: false,
        }
    }

    /// Believe every readable index object, not only those the catalog
    /// records as written by checked jobs (for repositories written by the
    /// engine directly, as in the engine-level tests).
    #[must_use]
    pub fn believing_every_index_object(mut self) -> Self {
        self.believe_all = true;
        self
    }

    /// The settings.
    pub fn settings(&self) -> ReplicationSettings {
        self.settings
    }

    /// The locations, primary first.
    pub fn sites(&self) -> &[Site] {
        &self.sites
    }

    /// Hold off passes and on-demand verifications until the guard drops
    /// (prune deletes objects meanwhile).
    pub async fn exclusive(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.running.lock().await
    }

    /// Forget what this process knows about `keys` at `location` (prune
    /// deleted them): they are neither "verified" there, so not missed as
    /// gone, nor "damaged", so not rewritten.
    pub fn forget(&self, location: &str, keys: &[ObjectKey]) {
        if let Some(set) = Self::lock(&self.verified).get_mut(location) {
            keys.iter().for_each(|k| {
                set.remove(k);
            });
        }
        if let Some(set) = Self::lock(&self.damaged).get_mut(location) {
            keys.iter().for_each(|k| {
                set.remove(k);
            });
        }
    }

    /// The locations' names, primary first.
    pub fn names(&self) -> Vec<String> {
        self.sites.iter().map(|s| s.name.clone()).collect()
    }

    fn state(&self, name: &str) -> LocationState {
        self.catalog
            .locations()
            .get(&name.to_string())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn save(&self, name: &str, st: &LocationState) {
        if let Err(e) = self.catalog.locations().insert(&name.to_string(), st) {
            tracing::error!(location = %name, error = %e, "cannot record the location's state");
        }
    }

    fn incident(&self, st: &mut LocationState, now: DateTime<Utc>, text: String) {
        self.record_incident(
            st,
            now,
            "copy damaged",
            "a copy at a location is missing or corrupt",
            text,
        );
    }

    fn record_incident(
        &self,
        st: &mut LocationState,
        now: DateTime<Utc>,
        action: &str,
        problem: &str,
        text: String,
    ) {
        tracing::warn!(target: "trireme::audit", incident = %text, "{action}");
        let event = crate::audit::Event::controller(action, text.clone()).problem(problem);
        if let Err(e) = self.catalog.audit().append_lazy(event, now) {
            tracing::error!(error = %e, "cannot append to the audit log");
        }
        st.incidents
            .insert(0, format!("{} {text}", now.format("%Y-%m-%dT%H:%M:%SZ")));
        st.incidents.truncate(MAX_INCIDENTS);
    }

    fn lock<'a, T>(m: &'a Mutex<T>) -> std::sync::MutexGuard<'a, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One pass: verify what is due, copy what is missing or damaged, mark
    /// snapshot copies verified.
    ///
    /// # Errors
    /// Catalog errors; storage problems are recorded per location.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<PassReport> {
        let _one = self.running.lock().await;
        let mut report = PassReport::default();
        let snapshots_before: Vec<_> = self.catalog.snapshots().keys()?;

        // 1. List every location, at once; one that does not answer in
        //    LIST_TIMEOUT is skipped this pass (the store's client would
        //    otherwise retry for a minute and hold up every other copy).
        let lists = futures::future::join_all(self.sites.iter().map(|site| async move {
            match tokio::time::timeout(LIST_TIMEOUT, replicate::list_all(&site.backend)).await {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err(format!("no answer within {}s", LIST_TIMEOUT.as_secs())),
            }
        }))
        .await;
        let mut listings: Vec<Option<Listing>> = Vec::new();
        for (site, listed) in self.sites.iter().zip(lists) {
            let mut st = self.state(&site.name);
            match listed {
                Ok(l) => {
                    st.reachable = true;
                    st.objects = l.len() as u64;
                    st.bytes = l.values().sum();
                    listings.push(Some(l));
                }
                Err(e) => {
                    st.reachable = false;
                    st.last_error = format!("cannot list: {e}");
                    tracing::warn!(location = %site.name, error = %e, "location unreachable; its copies wait");
                    listings.push(None);
                }
            }
            self.save(&site.name, &st);
        }

        // 2. Per location: quick-check what is unverified (or all, when due),
        //    and a slice of the rolling deep verification.
        for (i, site) in self.sites.iter().enumerate() {
            let Some(listing) = &listings[i] else {
                continue;
            };
            let mut st = self.state(&site.name);
            let quick_due = st.last_quick_verify.is_none_or(|t| {
                now - t >= chrono::Duration::from_std(self.settings.quick_every).unwrap_or_default()
            });
            if quick_due {
                Self::lock(&self.verified).remove(&site.name);
            }
            let todo: Vec<(ObjectKey, u64)> = {
                let v = Self::lock(&self.verified);
                let known = v.get(&site.name);
                listing
                    .iter()
                    .filter(|(k, _)| !known.is_some_and(|s| s.contains(*k)))
                    .map(|(k, s)| (k.clone(), *s))
                    .collect()
            };
            let quick = replicate::verify(&site.backend, &todo, false, CONCURRENCY).await;
            report.checked += quick.objects;
            let mut bad: HashSet<ObjectKey> = HashSet::new();
            for p in &quick.problems {
                bad.insert(p.key.clone());
            }
            {
                let mut v = Self::lock(&self.verified);
                let set = v.entry(site.name.clone()).or_default();
                for (k, _) in &todo {
                    if !bad.contains(k) {
                        set.insert(k.clone());
                    }
                }
            }
            if quick_due {
                st.last_quick_verify = Some(now);
            }
            // Objects verified here before and gone now.
            let gone: Vec<ObjectKey> = Self::lock(&self.verified)
                .get(&site.name)
                .map(|set| {
                    set.iter()
                        .filter(|k| !listing.contains_key(*k))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            for key in gone {
                let p = Problem {
                    key,
                    fault: replicate::Fault::Missing,
                };
                self.found(&site.name, &p, &mut st, now, &mut report);
            }
            let deep = self.deep_slice(site, listing, &mut st, now).await;
            report.checked += deep.objects;
            report.bytes_read += deep.bytes_read;
            for p in quick.problems.iter().chain(&deep.problems) {
                self.found(&site.name, p, &mut st, now, &mut report);
            }
            self.save(&site.name, &st);
        }

        // 3. Copy: every reachable location gets what the others have, and
        //    its damaged copies rewritten from good ones. Objects prune
        //    deleted (tombstones) are not offered: a location that prune
        //    skipped must not bring them back elsewhere.
        let tombstones: HashSet<String> = self.catalog.tombstones().keys()?.into_iter().collect();
        let sources: Vec<(usize, DynBackend, Listing)> = listings
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                l.as_ref()
                    .map(|l| (i, self.sites[i].backend.clone(), l.clone()))
            })
            .collect();
        let mut complete: Vec<bool> = vec![false; self.sites.len()];
        // Each reachable location's objects once copying is done.
        let mut current: Vec<Option<Listing>> = listings.clone();
        for (i, site) in self.sites.iter().enumerate() {
            if listings[i].is_none() {
                continue;
            }
            let redo = Self::lock(&self.damaged)
                .get(&site.name)
                .cloned()
                .unwrap_or_default();
            // Good sources only: a copy known damaged at a source is not offered.
            let mut srcs = Vec::new();
            let mut index_of = Vec::new();
            for (j, b, l) in &sources {
                if *j == i {
                    continue;
                }
                let dmg = Self::lock(&self.damaged)
                    .get(&self.sites[*j].name)
                    .cloned()
                    .unwrap_or_default();
                let l: Listing = l
                    .iter()
                    .filter(|(k, _)| !dmg.contains(*k) && !tombstones.contains(&k.path()))
                    .map(|(k, s)| (k.clone(), *s))
                    .collect();
                srcs.push((b.clone(), l));
                index_of.push(*j);
            }
            if srcs.is_empty() {
                complete[i] = redo.is_empty();
                continue;
            }
            self.mark_copying(&snapshots_before, &site.name, now);
            let mut st = self.state(&site.name);
            match replicate::sync_to(
                &site.backend,
                &srcs,
                &redo,
                CONCURRENCY,
                site.pacer.as_ref(),
            )
            .await
            {
                Ok(r) => {
                    report.copied += r.copied;
                    report.copied_bytes += r.bytes;
                    for (src, p) in &r.bad_sources {
                        let name = self.sites[index_of[*src]].name.clone();
                        let mut sst = self.state(&name);
                        self.found(&name, p, &mut sst, now, &mut report);
                        self.save(&name, &sst);
                    }
                    let failed: HashSet<ObjectKey> =
                        r.failed.iter().map(|(k, _)| k.clone()).collect();
                    for k in redo.iter().filter(|k| !failed.contains(*k)) {
                        // Only what another location offered was rewritten.
                        let text = if srcs.iter().any(|(_, l)| l.contains_key(k)) {
                            st.problems_repaired += 1;
                            let text = format!("{}: {k} repaired from a good copy", site.name);
                            report.repaired.push(text.clone());
                            text
                        } else {
                            let text = format!(
                                "{}: {k} cannot be repaired: no other location holds a good copy (a snapshot that needs it is marked incomplete)",
                                site.name
                            );
                            report.unrepaired.push(text.clone());
                            text
                        };
                        self.incident(&mut st, now, text);
                        if let Some(set) = Self::lock(&self.damaged).get_mut(&site.name) {
                            set.remove(k);
                        }
                    }
                    for (k, e) in &r.failed {
                        report.unrepaired.push(format!("{}: {k}: {e}", site.name));
                    }
                    let after = replicate::list_all(&site.backend).await.ok();
                    if r.is_complete() {
                        st.last_error.clear();
                        st.last_sync = Some(now);
                        complete[i] = true;
                        // Everything copied was read back.
                        let after = after.clone().unwrap_or_default();
                        st.objects = after.len() as u64;
                        st.bytes = after.values().sum();
                        let mut v = Self::lock(&self.verified);
                        let set = v.entry(site.name.clone()).or_default();
                        set.extend(after.into_keys());
                    } else {
                        st.last_error = format!(
                            "{} objects could not be copied here, e.g. {}",
                            r.failed.len(),
                            r.failed
                                .first()
                                .map(|(k, e)| format!("{k}: {e}"))
                                .unwrap_or_default()
                        );
                    }
                    if let Some(after) = after {
                        current[i] = Some(after);
                    }
                }
                Err(e) => {
                    st.reachable = false;
                    st.last_error = format!("cannot copy here: {e}");
                }
            }
            self.save(&site.name, &st);
        }

        // 4. Snapshot copies: verified where a complete location holds the
        //    objects the snapshot needs, checked.
        let mut reads: HashMap<usize, IndexRead> = HashMap::new();
        for id in snapshots_before {
            let Some(mut rec) = self.catalog.snapshots().get(&id)? else {
                continue;
            };
            let due = self.sites.iter().enumerate().any(|(i, site)| {
                complete[i]
                    && !matches!(rec.copies.get(&site.name), Some(CopyState::Verified { .. }))
            });
            let needs = if due {
                Some(self.needs_of(&id, &current, &mut reads).await)
            } else {
                None
            };
            let mut changed = false;
            for (i, site) in self.sites.iter().enumerate() {
                let state = if complete[i] {
                    match (rec.copies.get(&site.name), &needs) {
                        (Some(CopyState::Verified { .. }), _) | (_, None) => continue,
                        (_, Some(n)) => self.copy_state(i, n, &current, &tombstones, now).await,
                    }
                } else if listings[i].is_none() {
                    match rec.copies.get(&site.name) {
                        Some(CopyState::Verified { .. }) => continue,
                        _ => CopyState::Pending,
                    }
                } else {
                    let err = self.state(&site.name).last_error;
                    CopyState::Damaged {
                        at: now,
                        reason: err,
                    }
                };
                let before = rec.copies.get(&site.name);
                if same_state(before, &state) {
                    continue;
                }
                if let CopyState::Incomplete { reason, .. } = &state {
                    if !matches!(before, Some(CopyState::Incomplete { .. })) {
                        let mut st = self.state(&site.name);
                        self.record_incident(
                            &mut st,
                            now,
                            "copy incomplete",
                            "a snapshot's copy cannot be completed: objects it needs are at no location",
                            format!(
                                "{}: snapshot {} of {} is incomplete: {reason}",
                                site.name,
                                id.short(),
                                rec.source
                            ),
                        );
                        self.save(&site.name, &st);
                    }
                }
                rec.copies.insert(site.name.clone(), state);
                changed = true;
            }
            if changed {
                self.catalog.snapshots().insert(&id, &rec)?;
            }
            let everywhere = self
                .sites
                .iter()
                .all(|site| matches!(rec.copies.get(&site.name), Some(CopyState::Verified { .. })));
            if everywhere {
                Self::lock(&self.needs).remove(&id);
            }
        }
        {
            let known: HashSet<Id> = self.catalog.snapshots().keys()?.into_iter().collect();
            Self::lock(&self.needs).retain(|id, _| known.contains(id));
        }
        // A damaged verified copy (found by verification) is no longer verified.
        self.unverify_damaged(now)?;
        self.catalog.flush()?;
        Ok(report)
    }

    /// The objects snapshot `id` needs, read at the first location that
    /// holds its manifest and can read it (`current`: each location's
    /// objects, `None` when unreachable); remembered once known. `reads`
    /// keeps this pass's index loads. The error says why it cannot be
    /// known, and whether that may pass.
    async fn needs_of(
        &self,
        id: &Id,
        current: &[Option<Listing>],
        reads: &mut HashMap<usize, IndexRead>,
    ) -> Needs {
        if let Some(n) = Self::lock(&self.needs).get(id) {
            return Needs::Known(n.clone());
        }
        let manifest = ObjectKey::new(ObjectKind::Snapshot, id.to_hex());
        let mut errors = Vec::new();
        let mut temporary = false;
        for (i, site) in self.sites.iter().enumerate() {
            if !current[i]
                .as_ref()
                .is_some_and(|l| l.contains_key(&manifest))
            {
                continue;
            }
            let loaded = match reads.entry(i) {
                std::collections::hash_map::Entry::Occupied(e) => e.get().clone(),
                std::collections::hash_map::Entry::Vacant(v) => {
                    let r = self
                        .index_at(site)
                        .await
                        .map_err(|e| (e.to_string(), e.is_temporary()));
                    v.insert(r).clone()
                }
            };
            let index = match loaded {
                Ok(index) => index,
                Err((e, temp)) => {
                    temporary |= temp;
                    errors.push(format!("{}: cannot read its index: {e}", site.name));
                    continue;
                }
            };
            match replicate::snapshot_objects(index.indexed(), id).await {
                Ok(n) => {
                    let n = Arc::new(n);
                    Self::lock(&self.needs).insert(*id, n.clone());
                    return Needs::Known(n);
                }
                Err(e) => {
                    temporary |= e.is_temporary();
                    errors.push(format!("{}: {e}", site.name));
                }
            }
        }
        let reason = if errors.is_empty() {
            format!("its manifest {manifest} is at no location")
        } else {
            format!(
                "it cannot be read at any location holding it ({})",
                errors.join("; ")
            )
        };
        if temporary {
            Needs::NotNow(reason)
        } else {
            Needs::Unreadable(reason)
        }
    }

    /// The repository at `site` with its index, refreshed from the last read.
    async fn index_at(&self, site: &Site) -> trireme_common::Result<Arc<KeyedIndex>> {
        let repo = Arc::new(Repository::open(site.backend.clone(), self.keys.clone()).await?);
        let mut cache = self.indexes.lock().await;
        // The index objects the controller believes (as prune and key
        // scopes do): a planted object lists nothing a copy needs.
        let catalog = self.catalog.clone();
        let all = self.believe_all;
        let believe = move |n: &str, f: Option<&trireme_common::index::IndexFile>| {
            if all {
                f.is_some()
            } else {
                crate::attribution::believed(&catalog, n)
            }
        };
        let index = Arc::new(
            KeyedIndex::refresh(&repo, cache.get(&site.name).map(|i| &**i), &believe).await?,
        );
        cache.insert(site.name.clone(), index.clone());
        Ok(index)
    }

    /// The state of a snapshot's copy at location `i`, whose copying is
    /// complete: verified when every object it needs is there with the
    /// right size and checksum.
    async fn copy_state(
        &self,
        i: usize,
        needs: &Needs,
        current: &[Option<Listing>],
        tombstones: &HashSet<String>,
        now: DateTime<Utc>,
    ) -> CopyState {
        let all_reachable = current.iter().all(Option::is_some);
        let unreachable = || {
            self.sites
                .iter()
                .zip(current)
                .filter(|(_, l)| l.is_none())
                .map(|(s, _)| s.name.clone())
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Missing everywhere: incomplete, unless an unreachable location
        // may hold it (then wait).
        let nowhere = |reason: String| {
            if all_reachable {
                CopyState::Incomplete {
                    at: now,
                    reason: format!("{reason}: the copy cannot be completed"),
                }
            } else {
                tracing::info!(location = %self.sites[i].name, %reason, unreachable = %unreachable(), "a snapshot's objects may be at an unreachable location; waiting");
                CopyState::Pending
            }
        };
        let n = match needs {
            Needs::Known(n) => n,
            Needs::Unreadable(reason) => return nowhere(reason.clone()),
            Needs::NotNow(reason) => {
                return CopyState::Damaged {
                    at: now,
                    reason: format!("its objects cannot be checked now: {reason}"),
                }
            }
        };
        if let Some(c) = n.unindexed.first() {
            return CopyState::Incomplete {
                at: now,
                reason: format!(
                    "{} chunk(s) it references are listed by no index object, e.g. {}: the copy cannot be completed",
                    n.unindexed.len(),
                    c.to_hex()
                ),
            };
        }
        let here = current[i].as_ref().expect("complete locations are listed");
        let missing: Vec<&ObjectKey> = n
            .objects
            .iter()
            .filter(|(k, size)| here.get(*k) != Some(*size))
            .map(|(k, _)| k)
            .collect();
        if !missing.is_empty() {
            let (nowhere_keys, elsewhere): (Vec<&ObjectKey>, Vec<&ObjectKey>) =
                missing.iter().partition(|k| {
                    !current
                        .iter()
                        .flatten()
                        .any(|l| l.get(**k) == n.objects.get(**k))
                });
            if let Some(k) = nowhere_keys.first() {
                return nowhere(format!(
                    "{} object(s) it needs are at no location, e.g. {k}",
                    nowhere_keys.len()
                ));
            }
            let k = elsewhere[0];
            let why = if tombstones.contains(&k.path()) {
                "deleted here by prune"
            } else {
                "not copied here"
            };
            return CopyState::Damaged {
                at: now,
                reason: format!(
                    "{} object(s) it needs are missing here, e.g. {k} ({why})",
                    elsewhere.len()
                ),
            };
        }
        // HEAD what this process has not read the checksum of here yet
        // (objects present when the pass started were checked in step 2,
        // copies were read back as they were written).
        let site = &self.sites[i];
        let objects: Vec<(ObjectKey, u64)> = {
            let v = Self::lock(&self.verified);
            let known = v.get(&site.name);
            n.objects
                .iter()
                .filter(|(k, _)| !known.is_some_and(|set| set.contains(*k)))
                .map(|(k, s)| (k.clone(), *s))
                .collect()
        };
        let checked = replicate::verify(&site.backend, &objects, false, CONCURRENCY).await;
        if let Some(p) = checked.problems.first() {
            let reason = format!(
                "{} object(s) it needs failed their check here, e.g. {p}",
                checked.problems.len()
            );
            let mut st = self.state(&site.name);
            let mut ignored = PassReport::default();
            for p in &checked.problems {
                self.found(&site.name, p, &mut st, now, &mut ignored);
            }
            self.save(&site.name, &st);
            return CopyState::Damaged { at: now, reason };
        }
        Self::lock(&self.verified)
            .entry(site.name.clone())
            .or_default()
            .extend(objects.into_iter().map(|(k, _)| k));
        CopyState::Verified { at: now }
    }

    fn found(
        &self,
        loc: &str,
        p: &Problem,
        st: &mut LocationState,
        now: DateTime<Utc>,
        report: &mut PassReport,
    ) {
        let newly = Self::lock(&self.damaged)
            .entry(loc.to_string())
            .or_default()
            .insert(p.key.clone());
        if let Some(set) = Self::lock(&self.verified).get_mut(loc) {
            set.remove(&p.key);
        }
        let text = format!("{loc}: {p}");
        report.problems.push(text.clone());
        if newly {
            st.problems_found += 1;
            self.incident(st, now, text);
        }
    }

    fn mark_copying(&self, ids: &[trireme_common::Id], loc: &str, now: DateTime<Utc>) {
        for id in ids {
            if let Ok(Some(mut rec)) = self.catalog.snapshots().get(id) {
                if matches!(
                    rec.copies.get(loc),
                    None | Some(CopyState::Pending | CopyState::Copied { .. })
                ) {
                    rec.copies
                        .insert(loc.to_string(), CopyState::Copying { since: now });
                    let _ = self.catalog.snapshots().insert(id, &rec);
                }
            }
        }
    }

    fn unverify_damaged(&self, now: DateTime<Utc>) -> Result<()> {
        let damaged: Vec<String> = Self::lock(&self.damaged)
            .iter()
            .filter(|(_, s)| !s.is_empty())
            .map(|(l, _)| l.clone())
            .collect();
        if damaged.is_empty() {
            return Ok(());
        }
        for mut rec in self.catalog.snapshots().values()? {
            let mut changed = false;
            for loc in &damaged {
                if matches!(rec.copies.get(loc), Some(CopyState::Verified { .. })) {
                    rec.copies.insert(
                        loc.clone(),
                        CopyState::Damaged {
                            at: now,
                            reason: "objects found damaged; repair pending".into(),
                        },
                    );
                    changed = true;
                }
            }
            if changed {
                self.catalog.snapshots().insert(&rec.id, &rec)?;
            }
        }
        Ok(())
    }

    /// Re-read the next slice of objects at `site` so that a whole round
    /// takes about `deep_window`.
    async fn deep_slice(
        &self,
        site: &Site,
        listing: &Listing,
        st: &mut LocationState,
        now: DateTime<Utc>,
    ) -> replicate::VerifyReport {
        let total: u64 = listing.values().sum();
        let share =
            self.settings.every.as_secs_f64() / self.settings.deep_window.as_secs_f64().max(1.0);
        let budget = ((total as f64 * share).ceil() as u64).max(1);
        if st.deep_round_started.is_none() {
            st.deep_round_started = Some(now);
        }
        let mut slice = Vec::new();
        let mut taken = 0u64;
        for (k, s) in listing {
            if k.path() <= st.deep_cursor && !st.deep_cursor.is_empty() {
                continue;
            }
            if taken >= budget {
                break;
            }
            taken += s;
            slice.push((k.clone(), *s));
        }
        let r = replicate::verify(&site.backend, &slice, true, CONCURRENCY).await;
        match slice.last() {
            Some((k, _)) if listing.range(k.clone()..).nth(1).is_some() => {
                st.deep_cursor = k.path()
            }
            _ => {
                st.deep_cursor.clear();
                st.last_deep_round = Some(now);
                st.deep_round_started = None;
            }
        }
        r
    }

    /// Verify now: every object at `only` (or every location), quick or
    /// deep; then a pass repairs what was found.
    ///
    /// # Errors
    /// Catalog errors.
    pub async fn verify_now(
        &self,
        deep: bool,
        only: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<PassReport> {
        let mut report = PassReport::default();
        {
            let _one = self.running.lock().await;
            for site in &self.sites {
                if only.is_some_and(|o| o != site.name) {
                    continue;
                }
                let mut st = self.state(&site.name);
                let listing = match replicate::list_all(&site.backend).await {
                    Ok(l) => l,
                    Err(e) => {
                        report
                            .unrepaired
                            .push(format!("{}: cannot list: {e}", site.name));
                        continue;
                    }
                };
                // Expected sizes: the most common size among all locations.
                let objects: Vec<(ObjectKey, u64)> =
                    listing.iter().map(|(k, s)| (k.clone(), *s)).collect();
                let r = replicate::verify(&site.backend, &objects, deep, CONCURRENCY).await;
                report.checked += r.objects;
                report.bytes_read += r.bytes_read;
                for p in &r.problems {
                    self.found(&site.name, p, &mut st, now, &mut report);
                }
                if deep {
                    st.last_deep_round = Some(now);
                    st.deep_cursor.clear();
                    st.deep_round_started = None;
                }
                st.last_quick_verify = Some(now);
                self.save(&site.name, &st);
            }
        }
        // Objects missing at one location but present at others are found
        // (and copied) by the pass.
        let pass = self.pass(now).await?;
        report.checked += pass.checked;
        report.bytes_read += pass.bytes_read;
        report.copied += pass.copied;
        report.copied_bytes += pass.copied_bytes;
        for p in pass.problems {
            if !report.problems.contains(&p) {
                report.problems.push(p);
            }
        }
        report.repaired.extend(pass.repaired);
        report.unrepaired.extend(pass.unrepaired);
        Ok(report)
    }

    /// Every location's state.
    pub fn states(&self) -> BTreeMap<String, LocationState> {
        self.sites
            .iter()
            .map(|s| (s.name.clone(), self.state(&s.name)))
            .collect()
    }
}

/// A location's index as read in one pass, or why not (and whether that
/// may pass).
type IndexRead = std::result::Result<Arc<KeyedIndex>, (String, bool)>;

/// What a pass knows of the objects one snapshot needs.
enum Needs {
    /// They are known.
    Known(Arc<SnapshotObjects>),
    /// They cannot be known: its manifest or tree is at no location, or
    /// unreadable wherever it is.
    Unreadable(String),
    /// Not now (a storage outage, the key service unavailable).
    NotNow(String),
}

/// Whether a copy already is in `state` (the same kind with the same
/// reason: only the time differs).
fn same_state(before: Option<&CopyState>, state: &CopyState) -> bool {
    match (before, state) {
        (Some(CopyState::Pending), CopyState::Pending) => true,
        (Some(CopyState::Damaged { reason: a, .. }), CopyState::Damaged { reason: b, .. })
        | (
            Some(CopyState::Incomplete { reason: a, .. }),
            CopyState::Incomplete { reason: b, .. },
        ) => a == b,
        (Some(b), s) => b == s,
        (None, _) => false,
    }
}

/// A source's 3-2-1 state: its newest snapshot, and the newest one verified
/// at every location.
#[derive(Debug, Clone)]
pub struct Protection {
    /// The source.
    pub source: crate::sources::SourceId,
    /// Its newest snapshot.
    pub newest: crate::snapshots::SnapshotRecord,
    /// At how many locations the newest snapshot is verified.
    pub newest_verified: usize,
    /// What keeps the newest snapshot from being protected (empty: it is).
    pub newest_shortfall: Vec<String>,
    /// The newest snapshot whose verified copies meet the protection rule.
    pub full: Option<crate::snapshots::SnapshotRecord>,
}

/// Locations where a snapshot's copy is verified.
pub fn verified_copies(s: &crate::snapshots::SnapshotRecord) -> usize {
    s.copies
        .values()
        .filter(|c| matches!(c, CopyState::Verified { .. }))
        .count()
}

/// The 3-2-1 state of every source with snapshots under the protection
/// rule.
///
/// # Errors
/// Catalog errors.
pub fn protection(
    catalog: &Catalog,
    rule: &crate::protection::ProtectionRule,
) -> Result<Vec<Protection>> {
    let mut by_source: BTreeMap<crate::sources::SourceId, Vec<crate::snapshots::SnapshotRecord>> =
        BTreeMap::new();
    for snap in catalog.snapshots().values()? {
        by_source.entry(snap.source.clone()).or_default().push(snap);
    }
    Ok(by_source
        .into_iter()
        .filter_map(|(source, mut snaps)| {
            snaps.sort_by_key(|s| (s.time, s.id));
            let full = snaps
                .iter()
                .rev()
                .find(|s| rule.met_by(s.verified_locations()))
                .cloned();
            let newest = snaps.pop()?;
            Some(Protection {
                source,
                newest_verified: verified_copies(&newest),
                newest_shortfall: rule.shortfall(newest.verified_locations()),
                newest,
                full,
            })
        })
        .collect())
}

/// Replication and verification state by location name.
pub const LOCATIONS: crate::catalog::TableDef<String, LocationState> =
    crate::catalog::TableDef::new("locations");

impl crate::catalog::Catalog {
    /// Replication and verification state by location name.
    pub fn locations(&self) -> crate::catalog::Tree<String, LocationState> {
        self.table(&LOCATIONS)
    }
}

#[cfg(test)]
mod tests;
