//! A server TLS configuration that follows its files: a renewed certificate,
//! a new CA bundle or a new CRL takes effect on the next connection, without
//! a restart.
//!
//! Each call to [`ReloadingServerConfig::current`] stats the files (a few
//! microseconds) and rebuilds the configuration when any file's mtime, size
//! or inode changed. A change that does not load (a half-copied key, a
//! certificate that does not match its key, a malformed CRL) is logged as an
//! error and the previous configuration stays in force; the same broken
//! state is not retried until the files change again.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use rustls::ServerConfig;

use super::config::{load_crls, server_config, TlsFiles};
use trireme_common::error::{Error, Result};

/// (mtime, size, inode) of each file; `None` for a missing file.
type Fingerprint = Vec<Option<(SystemTime, u64, u64)>>;

/// Told of each connection refused at the TLS handshake: the peer and an
/// operator-readable reason (e.g. to put it in an audit log).
pub type RefusalObserver = Arc<dyn Fn(std::net::SocketAddr, &str) + Send + Sync>;

/// The current server configuration, reloaded when its files change.
pub struct ReloadingServerConfig {
    files: TlsFiles,
    state: Mutex<State>,
    observer: std::sync::OnceLock<RefusalObserver>,
}

impl std::fmt::Debug for ReloadingServerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingServerConfig")
            .field("files", &self.files)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct State {
    config: Arc<ServerConfig>,
    revoked: Arc<HashSet<String>>,
    /// The fingerprint last looked at (loaded or not).
    seen: Fingerprint,
    /// How many times a configuration was loaded (1 after `new`).
    generation: u64,
}

impl ReloadingServerConfig {
    /// Load the configuration once.
    ///
    /// # Errors
    /// As [`server_config`]: at start-up a bad file is fatal.
    pub fn new(files: TlsFiles) -> Result<Self> {
        let seen = fingerprint(&files);
        let (config, revoked) = load(&files)?;
        Ok(Self {
            files,
            state: Mutex::new(State {
                config,
                revoked,
                seen,
                generation: 1,
            }),
            observer: std::sync::OnceLock::new(),
        })
    }

    /// Tell `observer` of every connection refused at the handshake (set
    /// once; later calls are ignored).
    pub fn observe_refusals(&self, observer: RefusalObserver) {
        let _ = self.observer.set(observer);
    }

    /// Report a handshake refusal to the observer, if any.
    pub(crate) fn refused(&self, peer: std::net::SocketAddr, reason: &str) {
        if let Some(o) = self.observer.get() {
            o(peer, reason);
        }
    }

    /// The files this configuration follows.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// The configuration for a new connection, reloaded first if the files changed.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.refreshed().config.clone()
    }

    /// Whether the current CRL lists this serial (lowercase hex, as in
    /// [`Identity::serial`](super::Identity::serial)). Lets a server refuse
    /// RPCs on connections opened before a revocation.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.refreshed().revoked.contains(serial)
    }

    /// Every serial the current CRL lists (lowercase hex), reloaded first if
    /// the files changed: for checking many open connections at once.
    pub fn revoked_serials(&self) -> Arc<HashSet<String>> {
        self.refreshed().revoked.clone()
    }

    /// How many configurations have been loaded so far (starts at 1).
    pub fn generation(&self) -> u64 {
        self.refreshed().generation
    }

    /// Check the files now and reload if they changed. Returns whether a new
    /// configuration is in force.
    ///
    /// # Errors
    /// When the changed files do not load; the previous configuration stays.
    pub fn reload_if_changed(&self) -> Result<bool> {
        let mut st = self.lock();
        let fp = fingerprint(&self.files);
        if fp == st.seen {
            return Ok(false);
        }
        st.seen = fp;
        let (config, revoked) = load(&self.files)?;
        st.config = config;
        st.revoked = revoked;
        st.generation += 1;
        tracing::info!(
            cert = %self.files.cert.display(),
            generation = st.generation,
            revoked = st.revoked.len(),
            "reloaded TLS certificates and CRL"
        );
        Ok(true)
    }

    fn refreshed(&self) -> MutexGuard<'_, State> {
        if let Err(e) = self.reload_if_changed() {
            tracing::error!(
                error = %e,
                "TLS files changed but do not load; keeping the previous certificates and CRL \
                 (fix the files: they are retried when they change again)"
            );
        }
        self.lock()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated
        // (fields are assigned after loading), so a poisoned lock is usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn fingerprint(files: &TlsFiles) -> Fingerprint {
    files
        .all()
        .into_iter()
        .map(|p| {
            std::fs::metadata(p).ok().map(|m| {
                (
                    m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                    m.len(),
                    m.ino(),
                )
            })
        })
        .collect()
}

fn load(files: &TlsFiles) -> Result<(Arc<ServerConfig>, Arc<HashSet<String>>)> {
    let config = server_config(files)?;
    let revoked = match &files.crl {
        Some(p) => revoked_serials(p)?,
        None => HashSet::new(),
    };
    Ok((Arc::new(config), Arc::new(revoked)))
}

/// Serials (lowercase hex) listed in the CRL file.
fn revoked_serials(path: &Path) -> Result<HashSet<String>> {
    let mut out = HashSet::new();
    for der in load_crls(path)? {
        let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| Error::Certificate {
            path: path.to_path_buf(),
            reason: format!("not a valid CRL: {e}"),
        })?;
        out.extend(
            crl.iter_revoked_certificates()
                .map(|r| super::serial_hex(r.raw_serial())),
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::{ca, Role};

    #[test]
    fn follows_crl_and_keeps_old_config_on_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        ca::init_ca(d).unwrap();
        ca::issue(d, Role::Controller, "localhost", 1, d).unwrap();
        let agent = ca::issue(d, Role::Agent, "db-1", 1, d).unwrap();
        let r = ReloadingServerConfig::new(TlsFiles::in_dir(d, "localhost")).unwrap();
        assert_eq!(r.generation(), 1);
        assert!(!r.is_revoked(&agent.cert.serial));

        assert!(r.revoked_serials().is_empty());
        ca::revoke(d, &ca::RevokeTarget::Name("db-1".into())).unwrap();
        assert!(r.is_revoked(&agent.cert.serial));
        assert_eq!(r.generation(), 2);
        assert!(r.revoked_serials().contains(&agent.cert.serial));
        assert_eq!(r.generation(), 2, "no reload without a change");

        // A broken CRL keeps the previous state, and is not retried until it changes.
        std::fs::write(
            d.join("crl.pem"),
            "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
        )
        .unwrap();
        assert!(r.reload_if_changed().is_err());
        assert!(!r.reload_if_changed().unwrap());
        assert!(r.is_revoked(&agent.cert.serial));
        assert_eq!(r.generation(), 2);
    }
}
