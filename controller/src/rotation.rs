//! Master-key rotation without re-encrypting data: the key table.
//!
//! Every wrapped data key is embedded in content-addressed objects, so a
//! rotation does not rewrite them. It writes a [`KeyTable`] instead: for
//! each wrapped key stored anywhere (every location, and the catalog's MFA
//! secrets), the same data key wrapped under the new master key. The
//! controller reads through it ([`Rewrapped`]); the table is kept in the
//! catalog (`key_tables`) and at every location (`keys/table-<key id>`),
//! so a catalog rebuilt from one location with only the new key still
//! opens everything.
//!
//! - [`effective`]: the provider the controller uses (its key plus its
//!   table, from the catalog or else from a location).
//! - [`rotate`]: `trireme-controller key rotate` (offline).
//! - [`verify`]: `trireme-controller key verify` (offline): every stored key
//!   opens at every location; then superseded tables are removed.

pub mod collect;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use trireme_common::crypto::sha256;
use trireme_common::keys::{entry_hash, find_table, table_name_for, KeyCache, SealedTable};
use trireme_common::{
    DynBackend, DynKeyProvider, KeyProvider, KeyTable, ObjectKey, ObjectKind, Rewrapped, WrappedKey,
};

use crate::audit::Event;
use crate::catalog::Catalog;
use crate::config::LocationConfig;
use crate::error::{Error, Result};

use collect::{collect, unreachable, Found};

/// How many keys are unwrapped and wrapped at once.
const CONCURRENCY: usize = 16;
/// Most problems listed in one message.
const LIST_MAX: usize = 10;

/// A key table as the catalog keeps it (`key_tables`, by object name): the
/// object's bytes, MAC included, so it is checked again when loaded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredKeyTable {
    /// The `keys/table-*` object's bytes.
    #[serde(with = "serde_bytes")]
    pub bytes: Vec<u8>,
    /// When the catalog got it.
    pub stored: DateTime<Utc>,
}

fn list(items: &[String]) -> String {
    let mut s = items
        .iter()
        .take(LIST_MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("; ");
    if items.len() > LIST_MAX {
        s.push_str(&format!("; and {} more", items.len() - LIST_MAX));
    }
    s
}

fn key_name(p: &dyn KeyProvider) -> String {
    p.master_key_id().unwrap_or_else(|| format!("{p:?}"))
}

/// The catalog's key tables, as candidates for [`find_table`].
///
/// # Errors
/// Catalog errors.
pub fn catalog_tables(catalog: &Catalog) -> Result<Vec<(ObjectKey, Bytes)>> {
    Ok(catalog
        .key_tables()
        .entries()?
        .into_iter()
        .map(|(name, t)| (ObjectKey::new(ObjectKind::Keys, name), Bytes::from(t.bytes)))
        .collect())
}

/// Keep `table` in the catalog (durably).
///
/// # Errors
/// Catalog errors.
pub fn store(catalog: &Catalog, table: &KeyTable, now: DateTime<Utc>) -> Result<()> {
    catalog.key_tables().insert(
        &table.name().to_string(),
        &StoredKeyTable {
            bytes: table.bytes().to_vec(),
            stored: now,
        },
    )?;
    catalog.flush()
}

/// The `keys/` objects at one location.
///
/// # Errors
/// Storage errors listing or reading them.
pub async fn location_tables(
    backend: &DynBackend,
) -> trireme_common::Result<Vec<(ObjectKey, Bytes)>> {
    let mut out = Vec::new();
    for o in backend.list(ObjectKind::Keys).await? {
        match backend.get(&o.key).await {
            Ok(b) => out.push((o.key, b)),
            Err(trireme_common::Error::NotFound { .. }) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The table at one location made for `provider`'s master key.
///
/// # Errors
/// Storage errors; a damaged or altered table, named.
pub async fn table_at(
    backend: &DynBackend,
    provider: &dyn KeyProvider,
) -> trireme_common::Result<Option<KeyTable>> {
    find_table(location_tables(backend).await?, provider).await
}

/// The provider the controller uses: `provider` with the key table made
/// for its master key, from the catalog, or else from the first location
/// that has a good one (then kept in the catalog). Without a table (never
/// rotated), keys are unwrapped by `provider` alone.
///
/// # Errors
/// A damaged or altered table in the catalog; catalog errors.
pub async fn effective(
    catalog: &Catalog,
    locations: &[LocationConfig],
    provider: DynKeyProvider,
    now: DateTime<Utc>,
) -> Result<Rewrapped> {
    let from_catalog = find_table(catalog_tables(catalog)?, provider.as_ref())
        .await
        .map_err(|e| Error::Rotation(format!("the catalog's key table: {e}")))?;
    if let Some(t) = from_catalog {
        return Ok(Rewrapped::new(provider, Some(t)));
    }
    for l in locations {
        let r = async {
            let backend = l.location.open().await?;
            table_at(&backend, provider.as_ref()).await
        }
        .await;
        match r {
            Ok(Some(t)) => {
                tracing::info!(location = %l.name, table = %t.name(), entries = t.len(), "loaded the key table of the current master key from a location");
                store(catalog, &t, now)?;
                return Ok(Rewrapped::new(provider, Some(t)));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(location = %l.name, error = %e, "cannot load a key table from this location; trying the next");
            }
        }
    }
    Ok(Rewrapped::new(provider, None))
}

/// Before a catalog rebuild from `backend` (location `name`): if it holds a
/// table for the current master key that the controller lacks, or a newer
/// one, use it from now on and keep it in the catalog. Returns its name
/// when adopted. A bad table there is an error only when the controller has
/// none of its own (else it is logged and the controller's is kept).
///
/// # Errors
/// Storage errors; a damaged or altered table at the location, named.
pub async fn adopt_from(
    catalog: &Catalog,
    keys: &Rewrapped,
    name: &str,
    backend: &DynBackend,
    now: DateTime<Utc>,
) -> Result<Option<String>> {
    let found = match table_at(backend, keys.current().as_ref()).await {
        Ok(t) => t,
        Err(e) if keys.table().is_some() => {
            tracing::warn!(location = %name, error = %e, "the location's key table is unusable; keeping the controller's (`trireme-controller key verify` repairs the location's copy)");
            None
        }
        Err(e) => return Err(Error::Rotation(format!("location {name}: {e}"))),
    };
    let Some(t) = found else {
        return Ok(None);
    };
    let newer = keys
        .table()
        .is_none_or(|cur| cur.bytes() != t.bytes() && t.created() > cur.created());
    if !newer {
        return Ok(None);
    }
    store(catalog, &t, now)?;
    let adopted = t.name().to_string();
    tracing::info!(location = %name, table = %adopted, entries = t.len(), "using the key table found at the location");
    keys.set_table(Some(t));
    Ok(Some(adopted))
}

/// Write the controller's table to `backend` when it has no object of
/// that name (a location that was away during the rotation, or added
/// since). Returns whether it wrote.
///
/// # Errors
/// Storage errors.
pub async fn mirror_to(keys: &Rewrapped, backend: &DynBackend) -> trireme_common::Result<bool> {
    let Some(t) = keys.table() else {
        return Ok(false);
    };
    let key = t.object_key();
    if backend.head(&key).await?.is_some() {
        return Ok(false);
    }
    backend
        .put(&key, t.bytes().clone(), sha256(t.bytes()))
        .await?;
    Ok(true)
}

/// What to rotate.
pub struct RotateRequest<'a> {
    /// The catalog (the controller is stopped).
    pub catalog: &'a Catalog,
    /// Every location of the configuration.
    pub locations: &'a [LocationConfig],
    /// Locations to leave out (named explicitly by the operator).
    pub skip: &'a [String],
    /// The current (old) master key.
    pub old: DynKeyProvider,
    /// The new master key.
    pub new: DynKeyProvider,
    /// Who runs it, for the audit log.
    pub who: String,
    /// Now.
    pub now: DateTime<Utc>,
}

/// What a rotation did.
#[derive(Debug, Clone, Default)]
pub struct RotateReport {
    /// The old master key's id.
    pub old_key: String,
    /// The new master key's id.
    pub new_key: String,
    /// The new table, `keys/table-…`.
    pub table: String,
    /// Its entries.
    pub entries: usize,
    /// Objects read.
    pub objects: usize,
    /// Distinct wrapped keys found at the locations and in the catalog.
    pub found: usize,
    /// Catalog MFA secrets among them.
    pub mfa: usize,
    /// Entries carried over from the previous table (keys no location
    /// read now holds).
    pub carried: usize,
    /// Keys found already wrapped under the new key (need no entry).
    pub already_new: usize,
    /// Locations the table was written to and read back from.
    pub written: Vec<String>,
    /// Locations left out.
    pub skipped: Vec<String>,
    /// Objects damaged everywhere (skipped, as readers skip them).
    pub damaged: Vec<String>,
    /// Older tables the new one supersedes (removed by `key verify`).
    pub supersedes: Vec<String>,
}

/// One stored key wrapped again: its table hash, its new wrapped form, and
/// the data key (to check the table against).
struct Rewrap {
    hash: [u8; 32],
    wrapped: WrappedKey,
    key: Vec<u8>,
}

/// Open every location but `skip`; refuse naming one that cannot be
/// reached, or that holds no repository while others do (an unmounted
/// directory, a wrong URL).
async fn reach(
    locations: &[LocationConfig],
    skip: &[String],
    action: &str,
) -> Result<Vec<(String, DynBackend)>> {
    let refuse = |l: &LocationConfig, why: String| {
        Error::Rotation(format!(
            "location {} ({}) {why}. The {action} must cover every copy: bring the location back, or leave it out explicitly with --skip-location {} (its copies then still need the old master key)",
            l.name, l.url, l.name
        ))
    };
    let mut sites = Vec::new();
    let mut empty = Vec::new();
    for l in locations.iter().filter(|l| !skip.contains(&l.name)) {
        let r = async {
            let b = l.location.open().await?;
            b.list(ObjectKind::Keys).await?;
            match b.get(&ObjectKey::config()).await {
                Ok(_) => Ok((b, true)),
                Err(trireme_common::Error::NotFound { .. }) => Ok((b, false)),
                Err(e) => Err(e),
            }
        }
        .await;
        match r {
            Ok((b, has_repo)) => {
                if !has_repo {
                    empty.push(l);
                }
                sites.push((l.name.clone(), b));
            }
            Err(e) => return Err(refuse(l, format!("cannot be reached: {e}"))),
        }
    }
    if let Some(l) = empty.first() {
        if empty.len() < sites.len() {
            return Err(refuse(
                l,
                "holds no repository (no `config` object) while the other locations do: is it mounted, is the URL right?".into(),
            ));
        }
    }
    Ok(sites)
}

/// Re-wrap every stored data key under the new master key and write the
/// new key table to every location and the catalog. Nothing the old setup
/// needs is changed: a rotation that stops midway leaves it working, and
/// running it again is safe.
///
/// # Errors
/// [`Error::Rotation`] naming what stopped it: an unknown or unreachable
/// location, keys the old master key cannot open, a failed write or
/// read-back; catalog errors.
pub async fn rotate(req: RotateRequest<'_>) -> Result<RotateReport> {
    let RotateRequest {
        catalog,
        locations,
        skip,
        old,
        new,
        who,
        now,
    } = req;
    for s in skip {
        if !locations.iter().any(|l| &l.name == s) {
            return Err(Error::Rotation(format!(
                "--skip-location {s}: the configuration has no location {s:?}"
            )));
        }
    }
    let (old_key, new_key) = (key_name(old.as_ref()), key_name(new.as_ref()));
    if old.master_key_id().is_some() && old.master_key_id() == new.master_key_id() {
        return Err(Error::Rotation(format!(
            "both configurations use master key {old_key}: make a new key (`trireme-controller keygen --key-file NEW`) and point the new configuration at it"
        )));
    }
    let sites = reach(locations, skip, "rotation").await?;
    let reached: Vec<LocationConfig> = locations
        .iter()
        .filter(|l| !skip.contains(&l.name))
        .cloned()
        .collect();
    let old_eff = Arc::new(effective(catalog, &reached, old.clone(), now).await?);
    let cache = KeyCache::new(old_eff.clone());
    let mut found = collect(&sites, &cache).await?;
    if !found.unreadable.is_empty() {
        let items: Vec<String> = found
            .unreadable
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect();
        return Err(Error::Rotation(format!(
            "{} objects cannot be read at any location, so their keys cannot be re-wrapped: {}. Nothing was changed; repair them (replication repairs a copy from a good one) and rotate again",
            items.len(),
            list(&items)
        )));
    }
    let mut mfa = 0;
    for (name, rec) in catalog.mfa().entries()? {
        mfa += 1;
        found
            .keys
            .entry(WrappedKey(rec.wrapped_key))
            .or_insert_with(|| format!("catalog: MFA secret of {name}"));
    }
    let Found {
        keys,
        objects,
        damaged,
        ..
    } = found;
    let count = keys.len();

    // Unwrap under the old key, wrap under the new.
    let results: Vec<(String, Result<Option<Rewrap>>)> = futures::stream::iter(keys)
        .map(|(w, place)| {
            let (cache, new) = (&cache, new.clone());
            async move {
                let r = async {
                    match cache.unwrap(&w).await {
                        Ok(k) => {
                            let w2 = new.wrap(&k).await?;
                            Ok(Some(Rewrap {
                                hash: entry_hash(&w),
                                wrapped: w2,
                                key: k.as_bytes().to_vec(),
                            }))
                        }
                        Err(trireme_common::Error::WrongKey(m)) => {
                            if new.unwrap(&w).await.is_ok() {
                                Ok(None)
                            } else {
                                Err(Error::from(trireme_common::Error::WrongKey(m)))
                            }
                        }
                        Err(e) => Err(e.into()),
                    }
                }
                .await;
                (place, r)
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut entries = BTreeMap::new();
    let mut expected: Vec<([u8; 32], Vec<u8>)> = Vec::new();
    let mut already_new = 0;
    let mut failed = Vec::new();
    for (place, r) in results {
        match r {
            Ok(Some(Rewrap { hash, wrapped, key })) => {
                entries.insert(hash, wrapped);
                expected.push((hash, key));
            }
            Ok(None) => already_new += 1,
            Err(e) => failed.push(format!("{place}: {e}")),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        return Err(Error::Rotation(format!(
            "{} stored keys cannot be unwrapped with the old master key {old_key} (and its key table): {}. Nothing was changed",
            failed.len(),
            list(&failed)
        )));
    }
    // Entries of the previous table that no location read now holds (a
    // skipped location's keys, say) are carried over, wrapped again.
    let mut carried = 0;
    if let Some(prev) = old_eff.table() {
        for (h, w1) in prev.entries() {
            if entries.contains_key(h) {
                continue;
            }
            let k = old.unwrap(w1).await.map_err(|e| {
                Error::Rotation(format!(
                    "an entry of the previous key table keys/{} cannot be unwrapped: {e}",
                    prev.name()
                ))
            })?;
            entries.insert(*h, new.wrap(&k).await?);
            expected.push((*h, k.as_bytes().to_vec()));
            carried += 1;
        }
    }

    // Older tables: in the catalog and at the locations.
    let new_name = table_name_for(new.master_key_id().as_deref());
    let mut older: BTreeSet<String> = catalog.key_tables().keys()?.into_iter().collect();
    for (name, b) in &sites {
        for o in b
            .list(ObjectKind::Keys)
            .await
            .map_err(|e| unreachable(name, e))?
        {
            older.insert(o.key.name);
        }
    }
    if let Some(n) = &new_name {
        older.remove(n);
    }
    let supersedes: Vec<String> = older
        .into_iter()
        .filter(|n| n.starts_with(trireme_common::keys::TABLE_PREFIX))
        .collect();

    let table = KeyTable::seal(new.as_ref(), now.timestamp(), supersedes, entries).await?;
    // Check it: the MAC, and every entry opens to the key it stands for.
    let reopened = SealedTable::parse(&table.object_key(), table.bytes().clone())?
        .open(new.as_ref())
        .await?;
    for (h, k) in &expected {
        let w2 = reopened
            .get_hash(h)
            .ok_or_else(|| Error::Rotation("the new key table lost an entry".into()))?;
        let got = new.unwrap(w2).await?;
        if got.as_bytes().as_slice() != k.as_slice() {
            return Err(Error::Rotation(
                "the new master key does not open an entry of its own table to the right key; nothing was changed".into(),
            ));
        }
    }

    // Every location, each read back; then the catalog.
    let key = table.object_key();
    let mut written = Vec::new();
    for (name, b) in &sites {
        let r = async {
            b.put(&key, table.bytes().clone(), sha256(table.bytes()))
                .await?;
            let back = b.get(&key).await?;
            if back != *table.bytes() {
                return Err(trireme_common::Error::corrupt(
                    key.path(),
                    "reads back different bytes than were written",
                ));
            }
            SealedTable::parse(&key, back)?.open(new.as_ref()).await?;
            Ok(())
        }
        .await;
        r.map_err(|e| {
            Error::Rotation(format!(
                "writing the key table {key} to location {name} failed: {e}. The old master key still works as before; fix the location and rotate again"
            ))
        })?;
        written.push(name.clone());
    }
    store(catalog, &table, now)?;

    let mut skipped = skip.to_vec();
    skipped.sort();
    let report = RotateReport {
        old_key,
        new_key,
        table: key.path(),
        entries: table.len(),
        objects,
        found: count,
        mfa,
        carried,
        already_new,
        written,
        skipped,
        damaged: damaged
            .iter()
            .map(|(p, why)| format!("{p} ({why})"))
            .collect(),
        supersedes: table.supersedes().to_vec(),
    };
    let detail = format!(
        "master key {} to {}: {} with {} entries ({} keys found in {} objects and the catalog, {} carried over), written to {}{}",
        report.old_key,
        report.new_key,
        report.table,
        report.entries,
        report.found,
        report.objects,
        report.carried,
        report.written.join(", "),
        if report.skipped.is_empty() {
            String::new()
        } else {
            format!("; skipped {} (still needs the old key)", report.skipped.join(", "))
        }
    );
    catalog.audit().append(
        Event::actor(who, "local", "key rotate", detail).from_place("local"),
        now,
    )?;
    catalog.flush()?;
    Ok(report)
}

/// What `key verify` found at one location.
#[derive(Debug, Clone, Default)]
pub struct LocationCheck {
    /// The location.
    pub name: String,
    /// Its key table, if any (`keys/table-…`).
    pub table: Option<String>,
    /// Whether the table was missing and written from the catalog.
    pub table_written: bool,
    /// Objects read.
    pub objects: usize,
    /// Wrapped keys that opened.
    pub keys: usize,
    /// What is wrong there.
    pub problems: Vec<String>,
}

/// What `key verify` found.
#[derive(Debug, Clone, Default)]
pub struct VerifyReport {
    /// The master key checked.
    pub key: String,
    /// The catalog's table for it, if any.
    pub table: Option<String>,
    /// Per location.
    pub locations: Vec<LocationCheck>,
    /// Catalog MFA secrets that opened.
    pub mfa: usize,
    /// Problems outside a location (the catalog).
    pub problems: Vec<String>,
    /// Superseded tables removed (`loc: keys/table-…`, `catalog: table-…`).
    pub removed: Vec<String>,
}

impl VerifyReport {
    /// Whether everything opened everywhere.
    pub fn ok(&self) -> bool {
        self.problems.is_empty() && self.locations.iter().all(|l| l.problems.is_empty())
    }
}

/// Check that the master key `provider` (with its key table) opens every
/// stored key at every location, each location with its own copy of the
/// table (as a rebuild from it would), and the catalog's MFA secrets. A
/// location missing the table gets the catalog's copy first. When all is
/// well, the tables the current one supersedes are removed everywhere.
///
/// # Errors
/// Catalog errors; problems found are in the report.
pub async fn verify(
    catalog: &Catalog,
    locations: &[LocationConfig],
    provider: DynKeyProvider,
    who: String,
    now: DateTime<Utc>,
) -> Result<VerifyReport> {
    let mut report = VerifyReport {
        key: key_name(provider.as_ref()),
        ..Default::default()
    };
    let cat = find_table(catalog_tables(catalog)?, provider.as_ref()).await;
    let cat = match cat {
        Ok(t) => t,
        Err(e) => {
            report
                .problems
                .push(format!("the catalog's key table: {e}"));
            None
        }
    };
    report.table = cat.as_ref().map(|t| t.object_key().path());
    let mut supersedes: BTreeSet<String> = cat
        .iter()
        .flat_map(|t| t.supersedes().iter().cloned())
        .collect();
    let mut current: BTreeSet<String> = cat.iter().map(|t| t.name().to_string()).collect();
    let mut sites = Vec::new();
    for l in locations {
        let mut check = LocationCheck {
            name: l.name.clone(),
            ..Default::default()
        };
        let backend = match l.location.open().await {
            Ok(b) => b,
            Err(e) => {
                check.problems.push(format!("cannot be reached: {e}"));
                report.locations.push(check);
                continue;
            }
        };
        if let Some(t) = verify_location(&mut check, &backend, cat.as_ref(), provider.clone()).await
        {
            current.insert(t.name().to_string());
            supersedes.extend(t.supersedes().iter().cloned());
        }
        sites.push((l.name.clone(), backend));
        report.locations.push(check);
    }
    let eff = Rewrapped::new(provider.clone(), cat);
    for (name, rec) in catalog.mfa().entries()? {
        match eff.unwrap(&WrappedKey(rec.wrapped_key)).await {
            Ok(_) => report.mfa += 1,
            Err(e) => report
                .problems
                .push(format!("the MFA secret of {name} cannot be opened: {e}")),
        }
    }
    if report.ok() {
        for name in supersedes.difference(&current) {
            let key = ObjectKey::new(ObjectKind::Keys, name.clone());
            for (loc, b) in &sites {
                if b.head(&key).await.ok().flatten().is_some() {
                    match b.delete(&key).await {
                        Ok(()) => report.removed.push(format!("{loc}: {key}")),
                        Err(e) => report
                            .problems
                            .push(format!("{loc}: cannot remove the superseded {key}: {e}")),
                    }
                }
            }
            if catalog.key_tables().remove(name)? {
                report.removed.push(format!("catalog: {name}"));
            }
        }
    }
    let outcome = if report.ok() { "verified" } else { "FAILED" };
    let detail = format!(
        "master key {}: {outcome} at {} locations{}{}",
        report.key,
        report.locations.len(),
        report
            .table
            .as_ref()
            .map(|t| format!(" with {t}"))
            .unwrap_or_default(),
        if report.removed.is_empty() {
            String::new()
        } else {
            format!("; removed {}", report.removed.join(", "))
        }
    );
    let mut event = Event::actor(who, "local", "key verify", detail).from_place("local");
    if !report.ok() {
        let first = report
            .problems
            .iter()
            .chain(report.locations.iter().flat_map(|l| l.problems.iter()))
            .next()
            .cloned()
            .unwrap_or_default();
        event = event.refused(first);
    }
    catalog.audit().append(event, now)?;
    catalog.flush()?;
    Ok(report)
}

/// One location of [`verify`]; the location's table for `provider`.
async fn verify_location(
    check: &mut LocationCheck,
    backend: &DynBackend,
    cat: Option<&KeyTable>,
    provider: DynKeyProvider,
) -> Option<KeyTable> {
    if let Some(t) = cat {
        match backend.head(&t.object_key()).await {
            Ok(Some(_)) => {}
            Ok(None) => match backend
                .put(&t.object_key(), t.bytes().clone(), sha256(t.bytes()))
                .await
            {
                Ok(()) => check.table_written = true,
                Err(e) => check
                    .problems
                    .push(format!("cannot write the missing {}: {e}", t.object_key())),
            },
            Err(e) => {
                check.problems.push(format!("cannot be reached: {e}"));
                return None;
            }
        }
    }
    let table = match table_at(backend, provider.as_ref()).await {
        Ok(t) => t,
        Err(e) => {
            check.problems.push(e.to_string());
            return None;
        }
    };
    check.table = table.as_ref().map(|t| t.object_key().path());
    if cat.is_some() && table.is_none() {
        check
            .problems
            .push("has no key table for this master key".into());
    }
    let cache = KeyCache::new(Arc::new(Rewrapped::new(provider, table.clone())));
    let site = [(check.name.clone(), backend.clone())];
    let found = match collect(&site, &cache).await {
        Ok(f) => f,
        Err(e) => {
            check.problems.push(e.to_string());
            return table;
        }
    };
    check.objects = found.objects;
    for (p, why) in &found.unreadable {
        check.problems.push(format!("{p}: {why}"));
    }
    let results: Vec<(String, trireme_common::Result<()>)> = futures::stream::iter(found.keys)
        .map(|(w, place)| {
            let cache = &cache;
            async move { (place, cache.unwrap(&w).await.map(|_| ())) }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut failed = Vec::new();
    for (place, r) in results {
        match r {
            Ok(()) => check.keys += 1,
            Err(e) => failed.push(format!("{place}: {e}")),
        }
    }
    if !failed.is_empty() {
        failed.sort();
        check.problems.push(format!(
            "{} stored keys cannot be opened with this master key: {}",
            failed.len(),
            list(&failed)
        ));
    }
    table
}

/// Key tables of master-key rotations, by object name.
pub const KEY_TABLES: crate::catalog::TableDef<String, StoredKeyTable> =
    crate::catalog::TableDef::new("key_tables");

impl crate::catalog::Catalog {
    /// Key tables of master-key rotations, by object name.
    pub fn key_tables(&self) -> crate::catalog::Tree<String, StoredKeyTable> {
        self.table(&KEY_TABLES)
    }
}

#[cfg(test)]
mod tests;
