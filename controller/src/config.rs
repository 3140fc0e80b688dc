//! The controller's configuration file (TOML): typed, validated, and
//! importable by domain code (it depends on nothing of the controller but
//! its error type).
//!
//! ```toml
//! listen = "0.0.0.0:7443"
//! data_dir = "/var/lib/trireme-controller"   # the catalog lives in data_dir/catalog
//! key_file = "/etc/trireme/master.key"        # `trireme-controller keygen`, or a [key_service]
//! heartbeat_interval = "10s"
//! key_check_interval = "60s"                  # how often the master key's service is probed (metrics)
//! agent_timeout = "5m"
//!
//! [tls]
//! dir = "/etc/trireme/tls"   # holds ca.pem, crl.pem, <name>.pem, <name>.key
//! name = "controller.example.com"
//!
//! [mfa]
//! required = true   # sensitive actions need a TOTP code from every operator
//! max_failures = 5  # wrong codes (per certificate name, 15 min) before a back-off
//! backoff = "5m"    # codes are then refused unchecked; doubles in a row, up to 1h
//!
//! [[location]]
//! name = "primary"
//! url = "s3://trireme/prod?endpoint=https://s3.eu-west-1.amazonaws.com&region=eu-west-1"
//! region = "eu-west-1"     # labels the protection rule counts
//! provider = "aws"
//!
//! [protection]
//! min_locations = 3                   # verified copies a protected snapshot needs
//! distinct = ["region", "provider"]   # copies span 2+ of each (default ["region"])
//! ```
//!
//! Instead of `key_file`, the master key can live in an external KMS:
//!
//! ```toml
//! [key_service]
//! provider = "vault-transit"                 # or "aws-kms"
//! address = "https://vault.example.com:8200"
//! key = "trireme"
//! token_file = "/etc/trireme/vault.token"
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use trireme_common::Location;
use trireme_net::tls::TlsFiles;

use crate::error::{Error, Result};

pub mod enroll;
mod key_provider;
pub mod notify;

pub use key_provider::KeySource;
use key_provider::RawKeyService;
pub use notify::{EventKind, NotifyKind, NotifyTarget};

/// A validated controller configuration.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Where the catalog lives.
    pub data_dir: PathBuf,
    /// Where the master key is: the local key file or an external KMS.
    pub key_source: KeySource,
    /// TLS files of the controller's server certificate.
    pub tls: TlsFiles,
    /// Locations, primary first.
    pub locations: Vec<LocationConfig>,
    /// How often agents send heartbeats; a session silent for three of these
    /// is considered dead.
    pub heartbeat_interval: Duration,
    /// How often the master key's service is checked (a data key generated
    /// and unwrapped), for `trireme_key_service_up`.
    pub key_check_interval: Duration,
    /// Replication and verification timing.
    pub replication: crate::replication::ReplicationSettings,
    /// Where to serve Prometheus metrics (plain HTTP `/metrics`); off when unset.
    pub metrics_listen: Option<SocketAddr>,
    /// The enrollment listener (`enroll_listen`); off when unset.
    pub enroll: Option<enroll::EnrollSettings>,
    /// How long an agent may stay disconnected before its assigned and
    /// running jobs are failed (and retried per policy). Also how long after
    /// a restart the controller waits for agents to confirm their jobs.
    pub agent_timeout: Duration,
    /// Second factor for sensitive actions (`[mfa]`).
    pub mfa: crate::mfa::MfaSettings,
    /// `[retention] prune_every`: apply retention (`trireme prune`) this
    /// often on its own; unset: only when an operator runs it.
    pub prune_every: Option<Duration>,
    /// `[[notify]]`: who is told about failures and results.
    pub notify: Vec<NotifyTarget>,
    /// `[protection]`: when a snapshot's copies count as protected.
    pub protection: crate::protection::ProtectionRule,
    /// `[drills]`: DR drills on a schedule, and who takes part.
    pub drills: crate::drills::DrillSettings,
    /// How often a sample of each source's data volume is kept for its
    /// growth projection (days until 75% full).
    pub volume_sample_every: Duration,
}

/// One location.
#[derive(Debug, Clone)]
pub struct LocationConfig {
    /// Label, e.g. `primary`, `eu-west`, `other-provider`.
    pub name: String,
    /// The parsed URL (the controller's access: it may delete).
    pub location: Location,
    /// The URL as written.
    pub url: String,
    /// The URL sent to agents (default `url`): give agents write-only
    /// credentials here, e.g. another `credentials_file`.
    pub agent_url: String,
    /// `primary`, `secondary`, `tertiary`… (a label).
    pub role: String,
    /// Region label, e.g. `eu-west-1`.
    pub region: String,
    /// Provider label, e.g. `aws`, `ovh`, `on-prem`.
    pub provider: String,
    /// Replication writes to this location at most this many bytes per second.
    pub max_bytes_per_sec: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    listen: Option<String>,
    data_dir: PathBuf,
    key_file: Option<PathBuf>,
    key_service: Option<RawKeyService>,
    tls: RawTls,
    #[serde(default, rename = "location")]
    locations: Vec<RawLocation>,
    heartbeat_interval: Option<String>,
    key_check_interval: Option<String>,
    agent_timeout: Option<String>,
    metrics_listen: Option<String>,
    enroll_listen: Option<String>,
    enroll_ca_dir: Option<PathBuf>,
    enroll_cert_days: Option<u32>,
    #[serde(default)]
    replication: RawReplication,
    #[serde(default)]
    mfa: RawMfa,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default, rename = "notify")]
    notify: Vec<notify::RawNotify>,
    #[serde(default)]
    protection: RawProtection,
    #[serde(default)]
    drills: RawDrills,
    volume_sample_every: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDrills {
    schedule: Option<String>,
    stale_after: Option<String>,
    #[serde(default)]
    channel: String,
    #[serde(default)]
    participants: Vec<String>,
    #[serde(default)]
    roles: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    failover: Vec<String>,
    #[serde(default)]
    rollback: Vec<String>,
}

impl RawDrills {
    fn build(self) -> std::result::Result<crate::drills::DrillSettings, String> {
        let schedule = match &self.schedule {
            None => None,
            Some(s) => Some(crate::drills::parse_schedule(s).map_err(|e| {
                format!("[drills] schedule: {e} (or \"monthly\", \"quarterly\", \"yearly\")")
            })?),
        };
        let stale_after = match &self.stale_after {
            None => crate::drills::DEFAULT_STALE_AFTER,
            Some(s) => humantime::parse_duration(s)
                .map_err(|e| format!("[drills] stale_after = {s:?}: {e}; write e.g. \"92d\""))?,
        };
        Ok(crate::drills::DrillSettings {
            schedule,
            stale_after,
            people: crate::drills::DrillPeople {
                roles: self.roles,
                channel: self.channel,
                participants: self.participants,
                failover: self.failover,
                rollback: self.rollback,
            },
        })
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawProtection {
    /// Verified copies a protected snapshot needs (default 3).
    min_locations: Option<usize>,
    /// Labels the copies must span 2+ values of (default `["region"]`).
    distinct: Option<Vec<String>>,
}

impl RawProtection {
    fn build(
        &self,
        locations: &[LocationConfig],
    ) -> std::result::Result<crate::protection::ProtectionRule, String> {
        use crate::protection::{Labels, ProtectionRule, Spread, DEFAULT_MIN_LOCATIONS};
        let min = self.min_locations.unwrap_or(DEFAULT_MIN_LOCATIONS);
        if min == 0 {
            return Err(format!(
                "[protection] min_locations must be at least 1 (default {DEFAULT_MIN_LOCATIONS})"
            ));
        }
        let distinct = match &self.distinct {
            None => vec![Spread::Region],
            Some(words) => words
                .iter()
                .map(|w| {
                    Spread::parse(w).ok_or_else(|| {
                        format!("[protection] distinct = {words:?}: {w:?} is not a location label; use \"region\" and/or \"provider\" (or [] for none)")
                    })
                })
                .collect::<std::result::Result<_, _>>()?,
        };
        Ok(ProtectionRule::new(
            min,
            distinct,
            locations.iter().map(|l| {
                (
                    l.name.clone(),
                    Labels {
                        region: l.region.clone(),
                        provider: l.provider.clone(),
                    },
                )
            }),
        ))
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawMfa {
    /// Refuse sensitive actions to operators without a confirmed TOTP
    /// enrollment (default false: they may act without a code; operators
    /// who enrolled always need one).
    #[serde(default)]
    required: bool,
    /// Wrong TOTP codes from one certificate name within 15 minutes that
    /// make the controller refuse its codes unchecked for `backoff`
    /// (default 5).
    max_failures: Option<u32>,
    /// The first back-off after `max_failures` wrong codes; each one in a
    /// row doubles, up to an hour (default "5m").
    backoff: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    prune_every: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawReplication {
    every: Option<String>,
    deep_window: Option<String>,
    quick_every: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    dir: Option<PathBuf>,
    name: Option<String>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
    crl: Option<PathBuf>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLocation {
    name: String,
    url: String,
    agent_url: Option<String>,
    role: Option<String>,
    region: Option<String>,
    provider: Option<String>,
    max_bytes_per_sec: Option<u64>,
}

/// Default port of the controller.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:7443";

/// The `credentials_file` query parameter of a location URL, if any.
fn credentials_file(url: &str) -> Option<&str> {
    url.split_once('?')?
        .1
        .split('&')
        .find_map(|kv| kv.strip_prefix("credentials_file="))
}

impl ControllerConfig {
    /// Least-privilege warnings (printed by `check-config` and logged at
    /// start): where agents would get the controller's own access to a
    /// location, which can delete and read every prefix. The controller never
    /// sends credentials, only URLs; a `credentials_file` is a path on the
    /// agent's host.
    pub fn warnings(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .protection
            .config_problems()
            .into_iter()
            .map(|p| format!("PROTECTION: {p}"))
            .collect();
        for l in &self.locations {
            if !matches!(l.location, Location::S3(_)) {
                continue;
            }
            let same_file = credentials_file(&l.url).is_some()
                && credentials_file(&l.url) == credentials_file(&l.agent_url);
            if l.agent_url == l.url || same_file {
                w.push(format!(
                    "location {:?}: agents use the same credentials as the controller (no agent_url with its own credentials_file): \
                     give agents write-only credentials that cannot delete or list other prefixes, \
                     e.g. agent_url = \"{}\" with a key whose policy allows only PutObject/GetObject on this prefix (docs/security.md)",
                    l.name,
                    match l.url.split_once('?') {
                        Some((base, _)) => format!("{base}?...&credentials_file=/etc/trireme/agent-s3.creds"),
                        None => format!("{}?credentials_file=/etc/trireme/agent-s3.creds", l.url),
                    }
                ));
            }
        }
        w
    }

    /// Read and validate a configuration file. Relative paths in it are
    /// relative to the file's directory.
    ///
    /// # Errors
    /// [`Error::Config`] naming the file and the problem.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config {
            path: path.to_path_buf(),
            message: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Parse configuration text; `path` names it in errors and anchors
    /// relative paths.
    ///
    /// # Errors
    /// [`Error::Config`].
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let raw: RawConfig = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let listen_text = raw.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
        let listen = listen_text.parse().map_err(|e| {
            bad(format!(
                "listen = {listen_text:?} is not an address ({e}); write e.g. \"0.0.0.0:7443\""
            ))
        })?;
        let tls = match (&raw.tls.dir, &raw.tls.name) {
            (Some(dir), Some(name)) => {
                let mut f = TlsFiles::in_dir(&abs(dir), name);
                if let Some(c) = &raw.tls.cert {
                    f.cert = abs(c);
                }
                if let Some(k) = &raw.tls.key {
                    f.key = abs(k);
                }
                if let Some(c) = &raw.tls.ca {
                    f.ca = abs(c);
                }
                if let Some(c) = &raw.tls.crl {
                    f.crl = Some(abs(c));
                }
                f
            }
            _ => match (&raw.tls.cert, &raw.tls.key, &raw.tls.ca) {
                (Some(cert), Some(key), Some(ca)) => TlsFiles {
                    cert: abs(cert),
                    key: abs(key),
                    ca: abs(ca),
                    crl: raw.tls.crl.as_deref().map(abs),
                },
                _ => {
                    return Err(bad(
                        "[tls] needs `dir` and `name` (files from `trireme cert issue --role controller --name <name>`), or `cert`, `key` and `ca`".into(),
                    ))
                }
            },
        };
        if raw.locations.is_empty() {
            return Err(bad(
                "no [[location]]: add at least one, e.g. [[location]] name = \"primary\" url = \"file:///var/lib/trireme/repo\"".into(),
            ));
        }
        let mut locations = Vec::new();
        for l in raw.locations {
            crate::sources::validate_name("location name", &l.name)
                .map_err(|e| bad(e.to_string()))?;
            if locations.iter().any(|x: &LocationConfig| x.name == l.name) {
                return Err(bad(format!("location {:?} is listed twice", l.name)));
            }
            let location =
                Location::parse(&l.url).map_err(|e| bad(format!("location {:?}: {e}", l.name)))?;
            // A credentials file named in `url` is a path on this host: it is
            // never sent to agents unless the operator says the same path
            // exists on their hosts too (agent_url = the same URL).
            if l.agent_url.is_none() && credentials_file(&l.url).is_some() {
                return Err(bad(format!(
                    "location {:?}: url names credentials_file={}, a file on the controller's host, and there is no agent_url: \
                     agents would be sent a path that does not exist on theirs. Add agent_url with the credentials agents \
                     resolve themselves: their own credentials_file=, credentials=env, or credentials=default \
                     (the AWS SDK's chain: web identity / IRSA, instance profile, environment); \
                     or agent_url = the same URL if every agent has that file",
                    l.name,
                    credentials_file(&l.url).unwrap_or_default()
                )));
            }
            // The agents' URL is used on their hosts: its credentials file
            // (if any) is theirs, not read here.
            if let Some(a) = &l.agent_url {
                Location::parse_elsewhere(a)
                    .map_err(|e| bad(format!("location {:?} agent_url: {e}", l.name)))?;
            }
            if l.max_bytes_per_sec == Some(0) {
                return Err(bad(format!(
                    "location {:?}: max_bytes_per_sec must be positive (leave it out for no cap)",
                    l.name
                )));
            }
            let role = l.role.unwrap_or_else(|| {
                ["primary", "secondary", "tertiary"]
                    .get(locations.len())
                    .map_or_else(
                        || format!("copy-{}", locations.len() + 1),
                        |r| r.to_string(),
                    )
            });
            locations.push(LocationConfig {
                name: l.name,
                location,
                agent_url: l.agent_url.unwrap_or_else(|| l.url.clone()),
                url: l.url,
                role,
                region: l.region.unwrap_or_default(),
                provider: l.provider.unwrap_or_default(),
                max_bytes_per_sec: l.max_bytes_per_sec,
            });
        }
        let duration = |field: &str, v: &Option<String>, default: Duration| -> Result<Duration> {
            match v {
                None => Ok(default),
                Some(s) => humantime::parse_duration(s).map_err(|e| {
                    bad(format!(
                        "{field} = {s:?}: {e}; write e.g. \"30s\" or \"5m\""
                    ))
                }),
            }
        };
        let heartbeat_interval = duration(
            "heartbeat_interval",
            &raw.heartbeat_interval,
            Duration::from_secs(10),
        )?;
        let key_check_interval = duration(
            "key_check_interval",
            &raw.key_check_interval,
            Duration::from_secs(60),
        )?;
        if key_check_interval < Duration::from_secs(1) {
            return Err(bad(
                "key_check_interval must be at least 1s (default \"60s\")".into(),
            ));
        }
        let agent_timeout = duration(
            "agent_timeout",
            &raw.agent_timeout,
            Duration::from_secs(300),
        )?;
        let d = crate::replication::ReplicationSettings::default();
        let replication = crate::replication::ReplicationSettings {
            every: duration("replication.every", &raw.replication.every, d.every)?,
            deep_window: duration(
                "replication.deep_window",
                &raw.replication.deep_window,
                d.deep_window,
            )?,
            quick_every: duration(
                "replication.quick_every",
                &raw.replication.quick_every,
                d.quick_every,
            )?,
        };
        if replication.every < Duration::from_secs(1) || replication.deep_window < replication.every
        {
            return Err(bad(
                "[replication] every must be at least 1s and deep_window at least every".into(),
            ));
        }
        let metrics_listen = match &raw.metrics_listen {
            None => None,
            Some(t) => Some(t.parse().map_err(|e| {
                bad(format!(
                    "metrics_listen = {t:?} is not an address ({e}); write e.g. \"127.0.0.1:9464\""
                ))
            })?),
        };
        if heartbeat_interval < Duration::from_secs(1) {
            return Err(bad("heartbeat_interval must be at least 1s".into()));
        }
        let enroll = enroll::build(
            raw.enroll_listen.as_deref(),
            raw.enroll_ca_dir.as_deref(),
            raw.enroll_cert_days,
            listen,
            abs,
        )
        .map_err(bad)?;
        let key_file = raw.key_file.as_deref().map(abs);
        let key_source = match raw.key_service {
            Some(ks) => ks.resolve(key_file, abs).map_err(bad)?,
            None => KeySource::Local {
                key_file: key_file.ok_or_else(|| {
                    bad("no master key: set key_file = \"/etc/trireme/master.key\" (create it with `trireme-controller keygen --key-file ...`), \
                         or a [key_service] table with provider = \"vault-transit\" or \"aws-kms\"".into())
                })?,
            },
        };
        if let KeySource::Local { key_file } = &key_source {
            for l in &locations {
                if let Location::File(dir) = &l.location {
                    if key_file.starts_with(dir) {
                        return Err(bad(format!(
                            "key_file {} is inside location {:?} ({}): the master key must never be stored with the backups it opens; move it out",
                            key_file.display(),
                            l.name,
                            dir.display()
                        )));
                    }
                }
            }
        }
        let prune_every = match &raw.retention.prune_every {
            None => None,
            Some(s) => {
                let d = duration("retention.prune_every", &Some(s.clone()), Duration::ZERO)?;
                if d < Duration::from_secs(1) {
                    return Err(bad(
                        "[retention] prune_every must be at least 1s (e.g. \"24h\"); leave it out to prune only on demand".into(),
                    ));
                }
                Some(d)
            }
        };
        let protection = raw.protection.build(&locations).map_err(bad)?;
        let drills = raw.drills.build().map_err(bad)?;
        let volume_sample_every = duration(
            "volume_sample_every",
            &raw.volume_sample_every,
            crate::growth::DEFAULT_SAMPLE_EVERY,
        )?;
        if volume_sample_every < Duration::from_secs(1) {
            return Err(bad(
                "volume_sample_every must be at least 1s (default \"1h\")".into(),
            ));
        }
        Ok(ControllerConfig {
            volume_sample_every,
            protection,
            drills,
            listen,
            data_dir: abs(&raw.data_dir),
            key_source,
            tls,
            locations,
            heartbeat_interval,
            key_check_interval,
            agent_timeout,
            replication,
            metrics_listen,
            enroll,
            mfa: crate::mfa::MfaSettings {
                required: raw.mfa.required,
                limits: mfa_limits(&raw.mfa).map_err(bad)?,
            },
            prune_every,
            notify: {
                let mut targets: Vec<NotifyTarget> = Vec::new();
                for t in raw.notify {
                    let t = t.build(base)?;
                    if targets.iter().any(|x| x.name == t.name) {
                        return Err(bad(format!("[[notify]] {:?} is listed twice", t.name)));
                    }
                    targets.push(t);
                }
                targets
            },
        })
    }
}

/// `[mfa] max_failures` and `backoff`, checked.
fn mfa_limits(raw: &RawMfa) -> std::result::Result<crate::mfa::Limits, String> {
    let mut limits = crate::mfa::Limits::default();
    if let Some(n) = raw.max_failures {
        if n == 0 {
            return Err("[mfa] max_failures must be at least 1 (default 5)".into());
        }
        limits.max_failures = n;
    }
    if let Some(b) = &raw.backoff {
        let d = humantime::parse_duration(b)
            .map_err(|e| format!("[mfa] backoff = {b:?}: {e}; write e.g. \"5m\""))?;
        if d < Duration::from_secs(1) {
            return Err("[mfa] backoff must be at least 1s (default \"5m\")".into());
        }
        limits.backoff = d;
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
listen = "127.0.0.1:7443"
data_dir = "data"
key_file = "master.key"
[protection]
min_locations = 1
distinct = []
[tls]
dir = "tls"
name = "localhost"
[[location]]
name = "primary"
url = "file:///tmp/x"
"#;

    #[test]
    fn the_protection_rule_defaults_to_three_locations_in_two_regions() {
        let p = Path::new("/etc/trireme/controller.toml");
        let text = GOOD.replace("[protection]\nmin_locations = 1\ndistinct = []\n", "");
        let c = ControllerConfig::parse(p, &text).unwrap();
        assert_eq!(c.protection.min_locations(), 3);
        assert_eq!(
            c.protection.distinct(),
            &[crate::protection::Spread::Region]
        );
        // One unlabelled location cannot meet it: a loud warning.
        let w = c.warnings();
        assert!(
            w[0].starts_with("PROTECTION: the protection rule (verified at 3 locations, in 2 or more regions) cannot be met")
                && w.iter().any(|l| l.contains("location primary has no region label")),
            "{w:?}"
        );
        for (bad, says) in [
            ("min_locations = 0", "min_locations must be at least 1"),
            ("distinct = [\"zone\"]", "\"zone\" is not a location label"),
            ("min = 2", "unknown field `min`"),
        ] {
            let e =
                ControllerConfig::parse(p, &GOOD.replace("min_locations = 1\ndistinct = []", bad))
                    .unwrap_err()
                    .to_string();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn least_privilege_is_checked() {
        let p = Path::new("/etc/trireme/controller.toml");
        // The master key inside a file:// location is refused.
        let e = ControllerConfig::parse(p, &GOOD.replace("master.key", "/tmp/x/master.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("must never be stored with the backups"), "{e}");
        // file:// locations: nothing to warn about.
        assert!(ControllerConfig::parse(p, GOOD)
            .unwrap()
            .warnings()
            .is_empty());
        // S3 with the controller's own credentials for agents: a warning.
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("s3.creds");
        std::fs::write(&creds, "access_key_id = a\nsecret_access_key = b\n").unwrap();
        std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let url = format!(
            "s3://backups/p?endpoint=http://127.0.0.1:1&region=r&allow_http=true&credentials_file={}",
            creds.display()
        );
        // Without agent_url, the controller's own credentials file would be
        // sent to agents as a path on their hosts: refused, naming the fix.
        let e = ControllerConfig::parse(p, &GOOD.replace("file:///tmp/x", &url))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a file on the controller's host")
                && e.contains("no agent_url")
                && e.contains("credentials=default"),
            "{e}"
        );
        // The same URL for agents, said explicitly: accepted, with a warning.
        let shared = format!(
            "{}agent_url = \"{url}\"\n",
            GOOD.replace("file:///tmp/x", &url)
        );
        let w = ControllerConfig::parse(p, &shared).unwrap().warnings();
        assert!(
            w.len() == 1 && w[0].contains("write-only credentials"),
            "{w:?}"
        );
        let agent_creds = dir.path().join("agent.creds");
        std::fs::copy(&creds, &agent_creds).unwrap();
        let own = shared
            .replace("agent_url = \"", "agent_url = \"X")
            .replace(&format!("X{url}"), &url.replace("s3.creds", "agent.creds"));
        assert!(ControllerConfig::parse(p, &own)
            .unwrap()
            .warnings()
            .is_empty());
        // The agents' credentials file is on their hosts: not read here, so
        // a path that does not exist on the controller is fine; and
        // credentials the agents resolve themselves (their node's role).
        for agent in [
            "credentials_file=/run/secrets/agent-s3.creds",
            "credentials=default",
            "credentials=env",
        ] {
            let text = shared.replace(
                &format!("agent_url = \"{url}\""),
                &format!(
                    "agent_url = \"s3://backups/p?endpoint=http://127.0.0.1:1&region=r&allow_http=true&{agent}\""
                ),
            );
            let c = ControllerConfig::parse(p, &text).unwrap_or_else(|e| panic!("{agent}: {e}"));
            assert!(c.locations[0].agent_url.ends_with(agent));
            assert!(c.warnings().is_empty(), "{agent}: {:?}", c.warnings());
        }
        // Still checked: a bad agent_url is named.
        let text = shared.replace(
            &format!("agent_url = \"{url}\""),
            "agent_url = \"s3://backups/p?credentials=instance\"",
        );
        let e = ControllerConfig::parse(p, &text).unwrap_err().to_string();
        assert!(
            e.contains("agent_url") && e.contains("credentials=\"instance\""),
            "{e}"
        );
    }

    #[test]
    fn parses_and_anchors_relative_paths() {
        let c = ControllerConfig::parse(Path::new("/etc/trireme/controller.toml"), GOOD).unwrap();
        assert_eq!(c.data_dir, Path::new("/etc/trireme/data"));
        assert_eq!(c.tls.cert, Path::new("/etc/trireme/tls/localhost.pem"));
        assert_eq!(c.locations[0].name, "primary");
        assert_eq!(c.agent_timeout, Duration::from_secs(300));
        assert!(!c.mfa.required);
        let c = ControllerConfig::parse(
            Path::new("/c.toml"),
            &format!("{GOOD}\n[mfa]\nrequired = true\n"),
        )
        .unwrap();
        assert!(c.mfa.required);
        assert_eq!(c.mfa.limits, crate::mfa::Limits::default());
        let c = ControllerConfig::parse(
            Path::new("/c.toml"),
            &format!("{GOOD}\n[mfa]\nmax_failures = 3\nbackoff = \"2m\"\n"),
        )
        .unwrap();
        assert_eq!(c.mfa.limits.max_failures, 3);
        assert_eq!(c.mfa.limits.backoff, Duration::from_secs(120));
        for (table, needle) in [
            ("max_failures = 0", "max_failures must be at least 1"),
            ("backoff = \"0s\"", "backoff must be at least 1s"),
            ("backoff = \"soon\"", "[mfa] backoff = \"soon\""),
        ] {
            let e =
                ControllerConfig::parse(Path::new("/c.toml"), &format!("{GOOD}\n[mfa]\n{table}\n"))
                    .unwrap_err()
                    .to_string();
            assert!(e.contains(needle), "{table}: {e}");
        }
        assert_eq!(c.prune_every, None);
        let c = ControllerConfig::parse(
            Path::new("c.toml"),
            &format!("{GOOD}[retention]\nprune_every = \"24h\"\n"),
        )
        .unwrap();
        assert_eq!(c.prune_every, Some(Duration::from_secs(86400)));
        for bad in ["\"0s\"", "\"daily\""] {
            let e = ControllerConfig::parse(
                Path::new("c.toml"),
                &format!("{GOOD}[retention]\nprune_every = {bad}\n"),
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("prune_every"), "{e}");
        }
    }

    #[test]
    fn errors_name_the_problem() {
        let p = Path::new("c.toml");
        let e = ControllerConfig::parse(
            p,
            &GOOD.replace(
                "[[location]]\nname = \"primary\"\nurl = \"file:///tmp/x\"\n",
                "",
            ),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("c.toml") && e.contains("no [[location]]"), "{e}");
        let e = ControllerConfig::parse(p, &GOOD.replace("127.0.0.1:7443", "nowhere"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("nowhere"), "{e}");
        let e = ControllerConfig::parse(p, &GOOD.replace("file:///tmp/x", "ftp://x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("location \"primary\""), "{e}");
        let e = ControllerConfig::parse(p, &format!("{GOOD}\nagent_timeout = \"soon\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent_timeout"), "{e}");
        let e = ControllerConfig::parse(p, &format!("{GOOD}\nlisten_port = 1\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_port"), "{e}");
    }
}

#[cfg(test)]
mod key_service_tests {
    use super::*;

    const BASE: &str = r#"
data_dir = "data"
[tls]
dir = "tls"
name = "localhost"
[[location]]
name = "primary"
url = "file:///tmp/x"
"#;

    fn parse(top: &str, table: &str) -> std::result::Result<KeySource, String> {
        let text = format!("{top}\n{BASE}\n{table}");
        ControllerConfig::parse(Path::new("/etc/trireme/c.toml"), &text)
            .map(|c| c.key_source)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn each_provider_parses_into_its_settings() {
        assert_eq!(
            parse("key_file = \"master.key\"", "").unwrap(),
            KeySource::Local {
                key_file: "/etc/trireme/master.key".into()
            }
        );
        assert_eq!(
            parse("key_file = \"k\"", "[key_service]\nprovider = \"local\"\n")
                .unwrap()
                .provider(),
            "local"
        );
        let v = parse(
            "",
            "[key_service]\nprovider = \"vault-transit\"\naddress = \"https://vault:8200\"\nkey = \"trireme\"\ntoken_file = \"vault.token\"\nnamespace = \"ops\"\nca_file = \"ca.pem\"\ntimeout = \"3s\"\n",
        )
        .unwrap();
        let KeySource::VaultTransit(v) = v else {
            panic!("{v:?}")
        };
        assert_eq!(v.mount, "transit");
        assert_eq!(v.token_file, Path::new("/etc/trireme/vault.token"));
        assert_eq!(v.ca_file.as_deref(), Some(Path::new("/etc/trireme/ca.pem")));
        assert_eq!(v.namespace.as_deref(), Some("ops"));
        assert_eq!(v.timeout, Duration::from_secs(3));
        let a = parse(
            "",
            "[key_service]\nprovider = \"aws-kms\"\nkey_id = \"alias/trireme\"\nregion = \"eu-west-1\"\nendpoint = \"http://127.0.0.1:4566\"\nallow_http = true\ncredentials_file = \"kms.creds\"\n",
        )
        .unwrap();
        assert!(
            a.describe().starts_with(
                "aws-kms: key alias/trireme in eu-west-1 (endpoint http://127.0.0.1:4566)"
            ),
            "{}",
            a.describe()
        );
        let KeySource::AwsKms(a) = a else {
            panic!("{a:?}")
        };
        assert_eq!(
            a.credentials_file.as_deref(),
            Some(Path::new("/etc/trireme/kms.creds"))
        );
        // The key-file placement rule is the local provider's only.
        let e = parse("key_file = \"/tmp/x/master.key\"", "").unwrap_err();
        assert!(e.contains("must never be stored with the backups"), "{e}");
    }

    #[test]
    fn mistakes_are_named() {
        let vault = "[key_service]\nprovider = \"vault-transit\"\naddress = \"https://vault:8200\"\nkey = \"trireme\"\ntoken_file = \"t\"\n";
        let aws =
            "[key_service]\nprovider = \"aws-kms\"\nkey_id = \"alias/t\"\nregion = \"eu-west-1\"\n";
        for (top, table, needles) in [
            ("", "", &["no master key", "key_file", "[key_service]"][..]),
            (
                "key_file = \"k\"",
                aws,
                &["both key_file", "aws-kms", "exactly one"][..],
            ),
            (
                "key_file = \"k\"",
                vault,
                &["both key_file", "vault-transit"][..],
            ),
            (
                "",
                "[key_service]\nprovider = \"local\"\n",
                &["needs the top-level key_file"][..],
            ),
            (
                "",
                "[key_service]\nprovider = \"gcp\"\n",
                &["unknown variant `gcp`", "`vault-transit`", "`aws-kms`"][..],
            ),
            (
                "",
                &format!("{aws}token_file = \"t\"\n"),
                &["unknown field `token_file`", "expected one of `key_id`"][..],
            ),
            (
                "",
                &format!("{vault}region = \"x\"\n"),
                &["unknown field `region`", "expected one of `address`"][..],
            ),
            (
                "",
                &aws.replace("region = \"eu-west-1\"\n", ""),
                &["missing field `region`"][..],
            ),
            (
                "",
                &vault.replace("token_file = \"t\"\n", ""),
                &["missing field `token_file`"][..],
            ),
            (
                "",
                &vault.replace("https://vault:8200", "vault:8200"),
                &["address"][..],
            ),
            ("", &format!("{aws}timeout = \"soon\"\n"), &["timeout"][..]),
            (
                "",
                &format!("{aws}endpoint = \"http://127.0.0.1:4566\"\n"),
                &[
                    "[key_service] endpoint = \"http://127.0.0.1:4566\" is plain http",
                    "allow_http = true",
                ][..],
            ),
            (
                "",
                &vault.replace("https://vault:8200", "http://vault:8200"),
                &[
                    "[key_service] address = \"http://vault:8200\" is plain http",
                    "allow_http = true",
                ][..],
            ),
            (
                "key_file = \"k\"",
                "[key_service]\nprovider = \"local\"\nallow_http = true\n",
                &["unknown field `allow_http`"][..],
            ),
            ("", &format!("{aws}tokenfile = \"t\"\n"), &["tokenfile"][..]),
        ] {
            let e = parse(top, table).unwrap_err();
            for n in needles {
                assert!(e.contains(n), "{top} {table}: {e} lacks {n}");
            }
        }
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/controller.toml"
        ));
        let c = ControllerConfig::load(p).unwrap();
        assert_eq!(c.locations.len(), 3);
        assert_eq!(c.agent_timeout, Duration::from_secs(300));
        assert!(c.mfa.required);
        assert_eq!(c.key_source.provider(), "local");
    }

    #[test]
    fn the_shipped_key_service_snippets_parse() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/examples"));
        let base = std::fs::read_to_string(dir.join("controller.toml")).unwrap();
        let base: String = base
            .lines()
            .filter(|l| !l.starts_with("key_file"))
            .map(|l| format!("{l}\n"))
            .collect();
        for (file, provider) in [
            ("key-service-vault-transit.toml", "vault-transit"),
            ("key-service-aws-kms.toml", "aws-kms"),
        ] {
            let snippet = std::fs::read_to_string(dir.join(file)).unwrap();
            let c = ControllerConfig::parse(&dir.join(file), &format!("{base}\n{snippet}"))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(c.key_source.provider(), provider, "{file}");
            // With the example's key_file as well: both, refused.
            let both = format!("key_file = \"/etc/trireme/master.key\"\n{base}\n{snippet}");
            let e = ControllerConfig::parse(&dir.join(file), &both)
                .unwrap_err()
                .to_string();
            assert!(e.contains("both key_file"), "{file}: {e}");
        }
    }
}
