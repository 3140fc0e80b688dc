//! Holds, tags and forgetting one snapshot.
//!
//! A *hold* keeps a snapshot out of every prune (legal-hold style) until an
//! operator lifts it or its `until` time passes; keeping it keeps what it
//! depends on too ([`crate::prune::decide`] treats a held snapshot as
//! staying, and [`crate::retention::needed`] keeps its chain). *Tags* are
//! free labels operators and backups put on snapshots, for listing.
//!
//! Both are controller state, in the `snapshot_marks` table (snapshot id →
//! [`Marks`]), apart from the snapshot records that replication rewrites.
//! They are not written to the locations: a catalog rebuilt from a location
//! has no holds and no tags.
//!
//! [`forget_refusal`] says why a snapshot may not be forgotten now (held,
//! needed by another snapshot, or the newest copy of its source that
//! verified); [`forget`] removes one: its manifest at every location and
//! its catalog record. The packs only it used stay until the next prune.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use trireme_common::{Id, ObjectKey, ObjectKind};

use crate::catalog::{abort, Catalog, TableDef, Tree, Tx, TxTree};
use crate::error::{Error, Result};
use crate::prune::PendingPrune;
use crate::replication::{verified_copies, Replicator};
use crate::snapshots::SnapshotRecord;

/// A location that does not answer a delete within this time keeps the
/// manifest for a later prune.
const DELETE_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest tag, in bytes.
const TAG_MAX: usize = 64;

/// A hold on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hold {
    /// Why (e.g. a case number).
    pub reason: String,
    /// Who placed it (certificate name).
    pub by: String,
    /// When.
    pub since: DateTime<Utc>,
    /// When it ends by itself (none: when lifted).
    #[serde(default)]
    pub until: Option<DateTime<Utc>>,
}

impl Hold {
    /// Whether the hold still holds at `now`.
    pub fn active(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|u| now < u)
    }

    /// `held by NAME since T[ until T]: REASON`, for prune's plan and refusals.
    pub fn describe(&self) -> String {
        format!(
            "held by {} since {}{}: {}",
            self.by,
            self.since.format("%Y-%m-%dT%H:%M:%SZ"),
            self.until
                .map(|u| format!(" until {}", u.format("%Y-%m-%dT%H:%M:%SZ")))
                .unwrap_or_default(),
            self.reason
        )
    }
}

/// What operators put on a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marks {
    /// Its hold, if any (an expired one stays until lifted or replaced).
    #[serde(default)]
    pub hold: Option<Hold>,
    /// Its tags.
    #[serde(default)]
    pub tags: BTreeSet<String>,
}

impl Marks {
    /// The hold, if it is active at `now`.
    pub fn active_hold(&self, now: DateTime<Utc>) -> Option<&Hold> {
        self.hold.as_ref().filter(|h| h.active(now))
    }

    fn is_empty(&self) -> bool {
        self.hold.is_none() && self.tags.is_empty()
    }
}

/// Holds and tags by snapshot id.
pub const MARKS: TableDef<Id, Marks> = TableDef::new("snapshot_marks");

impl Catalog {
    /// Holds and tags by snapshot id.
    pub fn marks(&self) -> Tree<Id, Marks> {
        self.table(&MARKS)
    }

    /// The holds and tags of snapshot `id` (none: empty).
    ///
    /// # Errors
    /// Catalog errors.
    pub fn marks_of(&self, id: &Id) -> Result<Marks> {
        Ok(self.marks().get(id)?.unwrap_or_default())
    }

    /// The holds active at `now`, by snapshot.
    ///
    /// # Errors
    /// Catalog errors.
    pub fn active_holds(&self, now: DateTime<Utc>) -> Result<BTreeMap<Id, Hold>> {
        Ok(self
            .marks()
            .entries()?
            .into_iter()
            .filter_map(|(id, m)| m.hold.filter(|h| h.active(now)).map(|h| (id, h)))
            .collect())
    }
}

impl<'a> Tx<'a> {
    /// Holds and tags by snapshot id, in this transaction.
    pub fn marks(&self) -> TxTree<'a, Id, Marks> {
        self.table(&MARKS)
    }
}

/// Check a tag: 1 to 64 characters of letters, digits and `._:=-`.
///
/// # Errors
/// [`Error::InvalidValue`] saying what to write instead.
pub fn check_tag(tag: &str) -> Result<()> {
    let ok = !tag.is_empty()
        && tag.len() <= TAG_MAX
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._:=-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            "tag",
            tag,
            format!("a tag is 1 to {TAG_MAX} letters, digits and . _ : = -"),
        ))
    }
}

/// Change snapshot `id`'s marks with `f`, in one transaction that checks
/// the snapshot is in the catalog; the marks after.
fn update(catalog: &Catalog, id: &Id, f: impl Fn(&mut Marks) -> Result<()>) -> Result<Marks> {
    catalog.transaction_durable(|tx| {
        if tx.snapshots().get(id)?.is_none() {
            return Err(abort(Error::not_found("snapshot", id.to_hex())));
        }
        let mut m = tx.marks().get(id)?.unwrap_or_default();
        f(&mut m).map_err(abort)?;
        if m.is_empty() {
            tx.marks().remove(id)?;
        } else {
            tx.marks().insert(id, &m)?;
        }
        Ok(m)
    })
}

/// Hold snapshot `id` for `by` (replacing a hold it has).
///
/// # Errors
/// No reason, an `until` not after `now`, no such snapshot, catalog errors.
pub fn hold(
    catalog: &Catalog,
    id: &Id,
    reason: &str,
    until: Option<DateTime<Utc>>,
    by: &str,
    now: DateTime<Utc>,
) -> Result<Marks> {
    let reason = reason.trim();
    if reason.is_empty() {
        return Err(Error::BadRequest(
            "a hold needs a reason (--reason TEXT, e.g. a case number)".into(),
        ));
    }
    if let Some(u) = until.filter(|u| *u <= now) {
        return Err(Error::invalid(
            "until",
            u.to_rfc3339(),
            "a hold must end in the future (or give no --until: until unheld)",
        ));
    }
    let h = Hold {
        reason: reason.to_string(),
        by: by.to_string(),
        since: now,
        until,
    };
    update(catalog, id, |m| {
        m.hold = Some(h.clone());
        Ok(())
    })
}

/// Lift snapshot `id`'s hold; the hold lifted.
///
/// # Errors
/// A snapshot that is not held, no such snapshot, catalog errors.
pub fn unhold(catalog: &Catalog, id: &Id) -> Result<Hold> {
    let before = catalog.marks_of(id)?.hold;
    update(catalog, id, |m| match m.hold.take() {
        Some(_) => Ok(()),
        None => Err(Error::Precondition(format!(
            "snapshot {} is not held",
            id.short()
        ))),
    })?;
    before.ok_or_else(|| Error::Precondition(format!("snapshot {} is not held", id.short())))
}

/// Add `add` to and remove `remove` from snapshot `id`'s tags.
///
/// # Errors
/// An invalid tag, nothing asked, no such snapshot, catalog errors.
pub fn tag(catalog: &Catalog, id: &Id, add: &[String], remove: &[String]) -> Result<Marks> {
    if add.is_empty() && remove.is_empty() {
        return Err(Error::BadRequest("give tags to --add or --remove".into()));
    }
    for t in add.iter().chain(remove) {
        check_tag(t)?;
    }
    update(catalog, id, |m| {
        for t in remove {
            m.tags.remove(t);
        }
        m.tags.extend(add.iter().cloned());
        Ok(())
    })
}

/// Why snapshot `s` may not be forgotten at `now` (`locations`: how many
/// there are), if it may not: an active hold; another snapshot in the
/// catalog depends on it; or it is its source's newest snapshot verified at
/// every location, or at any location (the last verified copy).
///
/// # Errors
/// Catalog errors.
pub fn forget_refusal(
    catalog: &Catalog,
    s: &SnapshotRecord,
    locations: usize,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    if let Some(h) = catalog.marks_of(&s.id)?.active_hold(now) {
        return Ok(Some(format!(
            "snapshot {} is {}; lift the hold first (`trireme snapshots unhold {}`)",
            s.id.short(),
            h.describe(),
            s.id.short()
        )));
    }
    let all = catalog.snapshots().values()?;
    if let Some((by, chain)) = all.iter().find_map(|o| {
        o.depends_on
            .iter()
            .find(|d| d.snapshot == s.id && o.id != s.id)
            .map(|d| (o, d.chain.clone()))
    }) {
        return Ok(Some(format!(
            "snapshot {} of {} needs it to restore ({chain} chain); forget that one first",
            by.id.short(),
            by.source
        )));
    }
    let mut mine: Vec<&SnapshotRecord> = all.iter().filter(|o| o.source == s.source).collect();
    mine.sort_by_key(|o| (o.time, o.id));
    let newest_full = mine
        .iter()
        .rev()
        .find(|o| locations > 0 && verified_copies(o) >= locations);
    let newest_any = mine.iter().rev().find(|o| verified_copies(o) >= 1);
    if newest_full.is_some_and(|o| o.id == s.id) {
        return Ok(Some(format!(
            "it is the newest snapshot of {} verified at every location (the last verified copy of its source)",
            s.source
        )));
    }
    if newest_any.is_some_and(|o| o.id == s.id) {
        return Ok(Some(format!(
            "it is the newest snapshot of {} verified at any location (the last verified copy of its source)",
            s.source
        )));
    }
    Ok(None)
}

/// What [`forget`] did.
#[derive(Debug, Clone)]
pub struct Forgotten {
    /// The snapshot, as the catalog had it.
    pub record: SnapshotRecord,
    /// Locations whose manifest was deleted (or held none).
    pub removed_at: Vec<String>,
    /// Locations where the delete failed, with why: a later prune removes
    /// it there.
    pub pending: Vec<(String, String)>,
}

/// Forget snapshot `id` now: check [`forget_refusal`], tombstone its
/// manifest (replication must not copy it back), delete the manifest at
/// every location, and drop its catalog record and marks; locations where
/// the delete failed are remembered for the next prune (as prune does for
/// skipped locations). The caller must hold job dispatch and have checked
/// that no job is under way ([`crate::prune::check_idle`]).
///
/// # Errors
/// [`Error::Precondition`] with the refusal; no such snapshot; catalog errors.
pub async fn forget(
    catalog: &Catalog,
    replicator: &Replicator,
    id: &Id,
    now: DateTime<Utc>,
) -> Result<Forgotten> {
    let _no_pass = replicator.exclusive().await;
    let sites = replicator.sites();
    let record = catalog
        .snapshots()
        .get(id)?
        .ok_or_else(|| Error::not_found("snapshot", id.to_hex()))?;
    if let Some(why) = forget_refusal(catalog, &record, sites.len(), now)? {
        return Err(Error::Precondition(format!(
            "cannot forget snapshot {}: {why}",
            id.short()
        )));
    }
    let key = ObjectKey::new(ObjectKind::Snapshot, id.to_hex());
    catalog.tombstones().insert(&key.path(), &now)?;
    catalog.flush()?;
    let (mut removed_at, mut pending) = (Vec::new(), Vec::new());
    for site in sites {
        match tokio::time::timeout(DELETE_TIMEOUT, site.backend.delete(&key)).await {
            Ok(Ok(())) => removed_at.push(site.name.clone()),
            Ok(Err(e)) => pending.push((site.name.clone(), e.to_string())),
            Err(_) => pending.push((
                site.name.clone(),
                format!("no answer within {}s", DELETE_TIMEOUT.as_secs()),
            )),
        }
        replicator.forget(&site.name, std::slice::from_ref(&key));
    }
    // The source's newest other snapshot becomes the parent of its next
    // incremental backup, if this one was.
    let newest_other = catalog
        .snapshots_of(&record.source)?
        .into_iter()
        .rev()
        .find(|o| o.id != *id)
        .map(|o| (o.time, o.id));
    catalog.transaction_durable(|tx| {
        tx.snapshots().remove(id)?;
        tx.marks().remove(id)?;
        if let Some(mut st) = tx.schedule().get(&record.source)? {
            if st.last_snapshot.is_some_and(|(_, l)| l == *id) {
                st.last_snapshot = newest_other;
                tx.schedule().insert(&record.source, &st)?;
            }
        }
        Ok(())
    })?;
    if !pending.is_empty() {
        catalog.pruning().insert(
            id,
            &PendingPrune {
                source: record.source.clone(),
                time: record.time,
                locations: pending.iter().map(|(l, _)| l.clone()).collect(),
                since: now,
            },
        )?;
        catalog.flush()?;
    }
    Ok(Forgotten {
        record,
        removed_at,
        pending,
    })
}

#[cfg(test)]
mod tests;
