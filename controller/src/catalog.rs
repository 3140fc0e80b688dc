//! The controller's catalog: one sled database of typed tables. It knows no
//! domain: the domain modules declare their tables ([`TableDef`]) and own
//! their records; the catalog opens the database, checks its format
//! version, hands out typed tables and runs transactions.
//!
//! [`Catalog::open`] is the only way in. Each table maps a typed key to a
//! CBOR-encoded value (see [`Key`]). Multi-table updates go through
//! [`Catalog::transaction`]: it sees the [transactional](TABLES) tables
//! through a [`Tx`] and commits all or nothing. Writes that must survive a
//! `kill -9` (a finished job, a fired schedule slot, a recorded snapshot)
//! use [`Catalog::transaction_durable`], which flushes before returning.
//!
//! A domain module declares a table as a constant and gives the catalog
//! (and, for a transactional table, [`Tx`]) an accessor, e.g. in `jobs`:
//!
//! ```text
//! pub const JOBS: TableDef<JobId, Job> = TableDef::new("jobs");
//! impl Catalog {
//!     pub fn jobs(&self) -> Tree<JobId, Job> { self.table(&JOBS) }
//! }
//! ```
//!
//! Key layout (all keys are byte strings; `agent/source` is UTF-8). The
//! owner is the module that declares the table and defines its records:
//!
//! | table       | key                          | value                      | owner |
//! |-------------|------------------------------|----------------------------|-------|
//! | `meta`      | `format`                     | catalog format version     | catalog |
//! | `meta`      | `dependencies`               | 1 once older snapshot records got their `depends_on` | snapshots |
//! | `agents`    | agent name                   | `AgentRecord`              | sources |
//! | `sources`   | `agent/source`               | `SourceRecord`             | sources |
//! | `policies`  | `agent/source`               | `PolicyRecord`             | policy |
//! | `schedule`  | `agent/source`               | `SourceSchedule`           | schedule |
//! | `active`    | `agent/source`               | `JobId` of the source's one unfinished job | jobs |
//! | `jobs`      | job id, 16 bytes (UUIDv7, so time-ordered) | `Job`        | jobs |
//! | `job_counts` | job state name              | how many jobs are in that state (kept with every change) | jobs |
//! | `snapshots` | snapshot id, 32 bytes        | `SnapshotRecord`           | snapshots |
//! | `snapshot_marks` | snapshot id, 32 bytes   | `Marks`: hold and tags (controller state, not at the locations) | holds |
//! | `locations` | location name                | `LocationState`            | replication |
//! | `audit`     | sequence number, 8 bytes big-endian | `AuditEntry`        | audit |
//! | `audit_mirror` | location name             | last sequence number mirrored there | audit |
//! | `mfa`       | operator certificate name    | `MfaRecord`                | mfa |
//! | `restore_tests` | job id                   | `RestoreTestRecord`        | recovery |
//! | `restore_test_slots` | `agent/source`      | last restore-test slot handled | recovery |
//! | `drills`    | drill id                     | `DrillRecord`              | recovery |
//! | `drill_slots` | `schedule`                 | last drill-schedule slot handled | drills |
//! | `volume_samples` | `agent/source`          | `Samples`: the data volume's usage, one per `volume_sample_every` | growth |
//! | `retention` | class name                   | `RetentionClass`           | retention |
//! | `pruning`   | snapshot id, 32 bytes        | `PendingPrune`: removed, still at skipped locations | prune |
//! | `tombstones`| object path                  | when prune deleted it (replication must not copy it back) | prune |
//! | `issued_keys` | SHA-256 of a wrapped data key, hex | `IssuedKey`: the backup job it was generated for | attribution |
//! | `index_objects` | index object name (64 hex) | `IndexRecord`: the checked job (or the controller) that wrote it; only these are believed | attribution |
//! | `custody`   | `controller_key`, `config`, `held/<location>` | hex of the wrapped controller key and of the authentic repository config; when a location was last seen holding it | custody |
//! | `key_tables`| key table name (`table-<key id>`) | `StoredKeyTable`: a master-key rotation's table, as at the locations | rotation |
//! | `bootstrap_tokens` | token id (16 hex digits) | `BootstrapToken`: BLAKE3 of the token (never the token), scope, expiry, uses left, names enrolled | bootstrap |
//!
//! A table must be listed in [`TABLES`] to be opened; [`Catalog::table`]
//! panics on a table that is not (a programming error every test of the
//! table's owner finds).

mod tree;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sled::transaction::{
    ConflictableTransactionError, ConflictableTransactionResult, TransactionError, Transactional,
    TransactionalTree,
};

use crate::error::{Error, Result};

pub use tree::{Key, Tree, TxTree};

/// The catalog format this build reads and writes.
pub const CATALOG_FORMAT: u32 = 1;

/// Every table of the catalog, and whether [`Catalog::transaction`] spans
/// it. The key layout and the owner of each is in the module docs.
pub const TABLES: &[(&str, bool)] = &[
    ("meta", false),
    ("agents", true),
    ("sources", true),
    ("policies", true),
    ("schedule", true),
    ("active", true),
    ("jobs", true),
    ("snapshots", true),
    ("locations", false),
    ("audit", false),
    ("audit_mirror", false),
    ("mfa", false),
    ("restore_tests", false),
    ("restore_test_slots", false),
    ("drills", false),
    ("drill_slots", false),
    ("volume_samples", false),
    ("retention", true),
    ("pruning", false),
    ("tombstones", false),
    ("key_tables", false),
    ("issued_keys", false),
    ("custody", false),
    ("index_objects", false),
    ("snapshot_marks", true),
    ("job_counts", true),
    ("bootstrap_tokens", true),
];

/// The catalog's own table: its format version and one-time upgrade marks.
pub const META: TableDef<String, u32> = TableDef::new("meta");

/// Result of a step inside a catalog transaction: `?` works on both catalog
/// reads and domain errors turned into aborts with [`abort`].
pub type TxResult<T> = ConflictableTransactionResult<T, Error>;

/// Abort the current transaction with a domain error.
pub fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

/// A table's name and the types of its keys and values: declared as a
/// constant by the module that owns the records.
pub struct TableDef<K, V> {
    name: &'static str,
    _types: std::marker::PhantomData<fn() -> (K, V)>,
}

impl<K, V> TableDef<K, V> {
    /// A table called `name` (it must be in [`TABLES`]).
    pub const fn new(name: &'static str) -> Self {
        TableDef {
            name,
            _types: std::marker::PhantomData,
        }
    }

    /// The table's name.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

struct Opened {
    tree: sled::Tree,
    /// Serialises read-modify-write sequences outside transactions (the
    /// audit log's appends): see [`Catalog::write_lock`].
    lock: Arc<Mutex<()>>,
}

/// The controller's catalog. Cloning is cheap and shares the database.
#[derive(Clone)]
pub struct Catalog {
    db: sled::Db,
    path: PathBuf,
    tables: Arc<HashMap<&'static str, Opened>>,
    /// The transactional tables and their names, in [`TABLES`] order.
    transactional: Arc<(Vec<sled::Tree>, Vec<&'static str>)>,
}

impl fmt::Debug for Catalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Catalog").field("path", &self.path).finish()
    }
}

/// The transactional tables inside one transaction; domain modules reach
/// theirs with [`Tx::table`] (or the accessor they define on `Tx`).
pub struct Tx<'a> {
    trees: &'a [TransactionalTree],
    names: &'a [&'static str],
}

impl<'a> Tx<'a> {
    /// Table `def` inside this transaction.
    ///
    /// # Panics
    /// When `def` is not a transactional table of [`TABLES`] (a programming
    /// error).
    pub fn table<K: Key, V: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        def: &TableDef<K, V>,
    ) -> TxTree<'a, K, V> {
        let i = self
            .names
            .iter()
            .position(|n| *n == def.name)
            .unwrap_or_else(|| panic!("catalog table {} is not transactional", def.name));
        TxTree::new(&self.trees[i], def.name)
    }
}

impl Catalog {
    /// Open (or create) the catalog in directory `path`.
    ///
    /// # Errors
    /// [`Error::CatalogOpen`] when the database cannot be opened (another
    /// controller holds it, permissions), [`Error::CatalogVersion`] when a
    /// newer controller wrote it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let open_err = |source| Error::CatalogOpen {
            path: path.clone(),
            source,
        };
        let db = sled::Config::new().path(&path).open().map_err(open_err)?;
        let mut tables = HashMap::new();
        let mut transactional = (Vec::new(), Vec::new());
        for &(name, tx) in TABLES {
            let tree = db.open_tree(name).map_err(open_err)?;
            if tx {
                transactional.0.push(tree.clone());
                transactional.1.push(name);
            }
            tables.insert(
                name,
                Opened {
                    tree,
                    lock: Arc::default(),
                },
            );
        }
        let catalog = Catalog {
            tables: Arc::new(tables),
            transactional: Arc::new(transactional),
            path: path.clone(),
            db,
        };
        let key = "format".to_string();
        let meta = catalog.meta();
        let format = meta.get(&key)?;
        if let Some(v) = format.filter(|v| *v > CATALOG_FORMAT) {
            return Err(Error::CatalogVersion {
                path,
                found: v,
                supported: CATALOG_FORMAT,
            });
        }
        if format.is_none() {
            meta.insert(&key, &CATALOG_FORMAT)?;
            catalog.flush()?;
        }
        Ok(catalog)
    }

    fn opened(&self, name: &'static str) -> &Opened {
        self.tables
            .get(name)
            .unwrap_or_else(|| panic!("catalog table {name} is not in catalog::TABLES"))
    }

    /// Table `def`, typed.
    ///
    /// # Panics
    /// When `def` is not in [`TABLES`] (a programming error).
    pub fn table<K: Key, V: serde::Serialize + serde::de::DeserializeOwned>(
        &self,
        def: &TableDef<K, V>,
    ) -> Tree<K, V> {
        Tree::new(self.opened(def.name).tree.clone(), def.name)
    }

    /// The lock that serialises read-modify-write sequences on table `def`
    /// outside transactions (e.g. appending to a hash chain).
    pub fn write_lock<K, V>(&self, def: &TableDef<K, V>) -> Arc<Mutex<()>> {
        self.opened(def.name).lock.clone()
    }

    /// The catalog's format version and upgrade marks.
    pub fn meta(&self) -> Tree<String, u32> {
        self.table(&META)
    }

    /// The database itself, for flushes and checksums of its own.
    pub fn db(&self) -> &sled::Db {
        &self.db
    }

    /// The catalog directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Write everything to disk now.
    ///
    /// # Errors
    /// [`Error::Catalog`] on I/O errors.
    pub fn flush(&self) -> Result<()> {
        self.db
            .flush()
            .map(|_| ())
            .map_err(|e| Error::catalog("flush", e))
    }

    /// Run `f` as one serializable transaction over every transactional
    /// table: all its writes happen, or none. `f` may run more than once (on
    /// conflicts), so it must have no other side effects. Not flushed:
    /// durable within sled's flush interval (0.5 s), or at the next
    /// [`Catalog::flush`].
    ///
    /// # Errors
    /// The error `f` aborted with, or [`Error::Catalog`].
    pub fn transaction<T>(&self, f: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T> {
        let (trees, names) = &*self.transactional;
        let r = trees[..].transaction(|views| {
            f(&Tx {
                trees: views,
                names,
            })
        });
        match r {
            Ok(v) => Ok(v),
            Err(TransactionError::Abort(e)) => Err(e),
            Err(TransactionError::Storage(e)) => Err(Error::catalog("transaction", e)),
        }
    }

    /// [`Catalog::transaction`], then flush to disk before returning: use it
    /// for writes a crash must not lose.
    ///
    /// # Errors
    /// As [`Catalog::transaction`] and [`Catalog::flush`].
    pub fn transaction_durable<T>(&self, f: impl Fn(&Tx<'_>) -> TxResult<T>) -> Result<T> {
        let v = self.transaction(f)?;
        self.flush()?;
        Ok(v)
    }
}

#[cfg(test)]
mod tests;
