//! What the controller vouches for with a key no agent can obtain: its
//! **controller key** and the repository **config**.
//!
//! The controller key is a controller-marked data key
//! ([`trireme_common::keys::CONTROLLER_KEY_MARK`]), made with the key
//! provider's `wrap`, which agents cannot call; agents only ever get random
//! data keys from `GenerateDataKey`, so nothing an agent makes verifies as a
//! controller key. It is kept wrapped in the catalog (tree `custody`) and in
//! the config at every location (`controller_key`), so a controller rebuilt
//! from a location finds it again with the master key alone.
//!
//! It authenticates:
//! - the config (`controller_mac`, `docs/format.md` §4): the controller
//!   keeps the authentic config in its catalog, tells agents its SHA-256 with
//!   every job (they refuse another), and puts it back where a location's
//!   copy was altered ([`check_configs`]);
//! - per-job attribution keys ([`Custody::job_mac_key`]) that let index
//!   objects and manifests be tied to the job that wrote them.
//!
//! Key tables carry their own controller-marked MAC key
//! (`common/src/keys/table.rs`).

use chrono::{DateTime, Utc};
use trireme_common::backend::ObjectKey;
use trireme_common::crypto::{sha256, DataKey};
use trireme_common::format::RepoConfig;
use trireme_common::keys::{generate_controller_key, unwrap_controller_key};
use trireme_common::{ChunkerParams, DynBackend, DynKeyProvider, Repository, WrappedKey};

use crate::catalog::Catalog;
use crate::error::{Error, Result};

const KEY_ENTRY: &str = "controller_key";
const CONFIG_ENTRY: &str = "config";
const HELD_PREFIX: &str = "held/";

/// The controller key and the authentic config.
pub struct Custody {
    key: DataKey,
    config: Vec<u8>,
    config_sha: [u8; 32],
}

impl std::fmt::Debug for Custody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Custody(config {})", hex::encode(&self.config_sha[..8]))
    }
}

impl Custody {
    /// The attribution key of job `job` (a UUID's 16 bytes) run by `agent`:
    /// only the controller and the agent running that job ever hold it.
    pub fn job_mac_key(&self, job: &[u8; 16], agent: &str) -> [u8; 32] {
        trireme_common::attribution::job_key(self.key.as_bytes(), job, agent)
    }

    /// The key that authenticates the audit log's mirror segments.
    pub fn audit_mirror_key(&self) -> [u8; 32] {
        mirror_key(&self.key)
    }

    /// The config's bytes as the controller holds them.
    pub fn config_bytes(&self) -> &[u8] {
        &self.config
    }

    /// Their SHA-256.
    pub fn config_sha256(&self) -> [u8; 32] {
        self.config_sha
    }
}

/// The audit mirror key of the controller key in `catalog` (for the
/// offline `audit verify`), or `None` when the catalog holds none.
///
/// # Errors
/// Key provider errors; a catalog key that is not a controller key.
pub async fn audit_mirror_key(
    catalog: &Catalog,
    provider: &DynKeyProvider,
) -> Result<Option<[u8; 32]>> {
    let Some(w) = entry(catalog, KEY_ENTRY)? else {
        return Ok(None);
    };
    let k =
        unwrap_controller_key(&**provider, &WrappedKey(w), "the catalog's controller key").await?;
    Ok(Some(mirror_key(&k)))
}

/// The audit mirror key derived from the controller key.
fn mirror_key(controller_key: &DataKey) -> [u8; 32] {
    trireme_common::attribution::controller_subkey(
        controller_key.as_bytes(),
        "trireme audit mirror mac v1",
    )
}

/// What [`prepare`] did at a location worth an audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigRepair {
    /// The location.
    pub location: String,
    /// What was found and done.
    pub what: String,
}

fn entry(catalog: &Catalog, name: &str) -> Result<Option<Vec<u8>>> {
    Ok(catalog
        .custody()
        .get(&name.to_string())?
        .and_then(|h| hex::decode(h).ok()))
}

fn set_entry(catalog: &Catalog, name: &str, bytes: &[u8]) -> Result<()> {
    catalog
        .custody()
        .insert(&name.to_string(), &hex::encode(bytes))
}

async fn read_config(b: &DynBackend) -> Result<Option<Vec<u8>>> {
    match b.get(&ObjectKey::config()).await {
        Ok(bytes) => Ok(Some(bytes.to_vec())),
        Err(trireme_common::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

async fn put_config(b: &DynBackend, bytes: &[u8]) -> Result<()> {
    b.put(
        &ObjectKey::config(),
        bytes::Bytes::copy_from_slice(bytes),
        sha256(bytes),
    )
    .await?;
    Ok(())
}

/// At start: the controller key (from the catalog, else from a location's
/// config, else new), the authentic config (the catalog's, else the first
/// location's that verifies, upgraded with the controller fields when it
/// predates them, else a new repository at the first location), and every
/// location holding exactly it: a missing config is copied; one that was
/// ours and was altered (or a legacy one being upgraded) is put back, and
/// reported in the returned list; a location holding another repository
/// stops the start, as before.
///
/// # Errors
/// A location that cannot be read or holds another repository; key
/// provider errors (a wrong master key is refused here).
pub async fn prepare(
    catalog: &Catalog,
    locations: &[(String, DynBackend)],
    provider: DynKeyProvider,
    now: DateTime<Utc>,
) -> Result<(Custody, Vec<ConfigRepair>)> {
    let mut found = Vec::with_capacity(locations.len());
    for (_, b) in locations {
        found.push(read_config(b).await?);
    }
    let mut key: Option<(DataKey, WrappedKey)> = match entry(catalog, KEY_ENTRY)? {
        Some(w) => {
            let w = WrappedKey(w);
            let k = unwrap_controller_key(&*provider, &w, "the catalog's controller key").await?;
            Some((k, w))
        }
        None => None,
    };
    // A rebuilt controller finds its key in a config that vouches for itself.
    if key.is_none() {
        for bytes in found.iter().flatten() {
            let Ok(cfg) = RepoConfig::decode(bytes) else {
                continue;
            };
            let Some(w) = cfg.wrapped_controller_key() else {
                continue;
            };
            if let Ok(k) =
                unwrap_controller_key(&*provider, &w, "the config's controller key").await
            {
                if cfg.verify_controller_mac(k.as_bytes()).is_ok() {
                    key = Some((k, w));
                    break;
                }
            }
        }
    }
    let (key, wrapped) = match key {
        Some(k) => k,
        None => generate_controller_key(&*provider).await?,
    };
    set_entry(catalog, KEY_ENTRY, &wrapped.0)?;

    let mut authentic = entry(catalog, CONFIG_ENTRY)?;
    if authentic.is_none() {
        for bytes in found.iter().flatten() {
            let Ok(mut cfg) = RepoConfig::decode(bytes) else {
                continue;
            };
            if cfg.controller_mac.is_some() {
                if cfg.verify_controller_mac(key.as_bytes()).is_ok() {
                    authentic = Some(bytes.clone());
                    break;
                }
                continue;
            }
            // A config from before controller MACs: upgrade it if it opens
            // under this master key.
            let Ok(id_key) = provider.unwrap(&cfg.wrapped_id_key()).await else {
                continue;
            };
            if cfg.verify_mac(id_key.as_bytes()).is_err() {
                continue;
            }
            cfg.seal_controlled(id_key.as_bytes(), key.as_bytes(), &wrapped);
            authentic = Some(cfg.encode());
            break;
        }
    }
    let authentic = match authentic {
        Some(a) => a,
        None if found.iter().all(Option::is_none) => {
            let (name, b) = &locations[0];
            let repo = Repository::init_controlled(
                b.clone(),
                provider.clone(),
                ChunkerParams::default(),
                Some((&key, &wrapped)),
            )
            .await?;
            tracing::info!(location = %name, repo = %repo.config().id, "created the repository");
            found[0] = read_config(b).await?;
            found[0].clone().expect("just written")
        }
        None => {
            return Err(Error::Rotation(
                "no location holds a repository config this controller can open: the configs there were made under another master key, or are damaged; check `key_file`/[key_service] and the location URLs".into(),
            ))
        }
    };
    // Opening checks the master key against the config's id key.
    Repository::from_config(locations[0].1.clone(), provider.clone(), &authentic).await?;
    let auth_cfg = RepoConfig::decode(&authentic)?;
    set_entry(catalog, CONFIG_ENTRY, &authentic)?;
    let mut repairs = Vec::new();
    for ((name, b), have) in locations.iter().zip(found) {
        let held = catalog
            .custody()
            .get(&format!("{HELD_PREFIX}{name}"))?
            .is_some();
        match have {
            Some(h) if h == authentic => {}
            None => {
                put_config(b, &authentic).await?;
                tracing::info!(location = %name, "copied the repository config");
            }
            Some(h) => {
                let same_repo = RepoConfig::decode(&h).is_ok_and(|c| c.id == auth_cfg.id);
                if !held && !same_repo {
                    return Err(Error::Io {
                        context: format!(
                            "location {name:?} holds a different repository than the one this controller keeps"
                        ),
                        source: std::io::Error::other(
                            "every location must hold copies of one repository: point it at an empty bucket/prefix or directory",
                        ),
                    });
                }
                let legacy = RepoConfig::decode(&h).is_ok_and(|c| c.controller_mac.is_none())
                    && same_repo
                    && !held;
                put_config(b, &authentic).await?;
                let what = if legacy {
                    "upgraded the config with the controller key and MAC (format 1.1)".to_string()
                } else {
                    format!(
                        "the config there was not the one this controller vouches for (SHA-256 {} instead of {}): it was altered; put back the authentic one",
                        hex::encode(&sha256(&h)[..8]),
                        hex::encode(&sha256(&authentic)[..8])
                    )
                };
                tracing::warn!(location = %name, "{what}");
                repairs.push(ConfigRepair {
                    location: name.clone(),
                    what,
                });
            }
        }
        catalog
            .custody()
            .insert(&format!("{HELD_PREFIX}{name}"), &now.to_rfc3339())?;
    }
    let config_sha = sha256(&authentic);
    Ok((
        Custody {
            key,
            config: authentic,
            config_sha,
        },
        repairs,
    ))
}

/// Compare every location's config with the authentic one and put it back
/// where it differs or is missing (an agent with write access to a location
/// altered it). Returns what was repaired.
///
/// # Errors
/// None: a location that cannot be read or written is logged and skipped.
pub async fn check_configs(
    custody: &Custody,
    locations: &[(String, DynBackend)],
) -> Vec<ConfigRepair> {
    let mut repairs = Vec::new();
    for (name, b) in locations {
        let have = match read_config(b).await {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(location = %name, error = %e, "cannot read the repository config");
                continue;
            }
        };
        if have.as_deref() == Some(custody.config_bytes()) {
            continue;
        }
        let what = match &have {
            None => "the config was missing; put back the authentic one".to_string(),
            Some(h) => format!(
                "the config there was not the one this controller vouches for (SHA-256 {} instead of {}): it was altered; put back the authentic one",
                hex::encode(&sha256(h)[..8]),
                hex::encode(&custody.config_sha[..8])
            ),
        };
        match put_config(b, custody.config_bytes()).await {
            Ok(()) => {
                tracing::warn!(location = %name, "{what}");
                repairs.push(ConfigRepair {
                    location: name.clone(),
                    what,
                });
            }
            Err(e) => {
                tracing::error!(location = %name, error = %e, "cannot put back the repository config")
            }
        }
    }
    repairs
}

/// The controller key and the authentic config, hex, and when each location was last seen holding it.
pub const CUSTODY: crate::catalog::TableDef<String, String> =
    crate::catalog::TableDef::new("custody");

impl crate::catalog::Catalog {
    /// The controller key and the authentic config, hex, and when each location was last seen holding it.
    pub fn custody(&self) -> crate::catalog::Tree<String, String> {
        self.table(&CUSTODY)
    }
}
