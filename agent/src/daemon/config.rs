//! The agent's configuration file (TOML).
//!
//! ```toml
//! controller = "controller.example.com:7443"
//! state_dir = "/var/lib/trireme-agent"   # unreported results live here
//! max_concurrent_jobs = 2
//!
//! [tls]
//! dir = "/etc/trireme/tls"               # ca.pem, <name>.pem, <name>.key
//! name = "web-1"                         # the agent's name = its certificate's
//!
//! # Optional: without a certificate and key yet, enroll at start with a
//! # bootstrap token (`trireme agents token create`); env
//! # TRIREME_BOOTSTRAP_TOKEN_FILE and TRIREME_ENROLL_CONTROLLER override.
//! # bootstrap_token_file = "/etc/trireme/bootstrap-token"
//! # enroll_controller = "controller.example.com:7444"   # the controller's enroll_listen
//!
//! [[source]]
//! name = "uploads"
//! kind = "volume"
//! path = "/srv/uploads"
//! pre_hook = ["/usr/local/bin/flush-uploads"]   # optional, argv
//! post_hook = ["/usr/local/bin/resume-uploads"] # optional, argv; runs even when the backup failed
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use trireme_net::tls::TlsFiles;

pub use crate::sources::{SourceConfig, KINDS as SUPPORTED_KINDS};

/// A validated agent configuration.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// The controller, `host:port`.
    pub controller: String,
    /// The name the controller's certificate carries (default: the host part of `controller`).
    pub server_name: String,
    /// This agent's name (its certificate's name).
    pub name: String,
    /// Host name reported to the controller and recorded in snapshots.
    pub hostname: String,
    /// Where unreported results are kept.
    pub state_dir: PathBuf,
    /// Jobs run at once; more wait on the agent.
    pub max_concurrent_jobs: usize,
    /// Client certificate files.
    pub tls: TlsFiles,
    /// The sources of this host.
    pub sources: Vec<SourceConfig>,
    /// Longest wait between reconnection attempts.
    pub max_backoff: Duration,
    /// How long a hook may run.
    pub hook_timeout: Duration,
    /// Plain-HTTP Prometheus `/metrics` endpoint (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// Upload budget shared by all jobs, bytes per second (none: no limit).
    pub upload_bytes_per_sec: Option<u64>,
    /// Niceness for the agent and everything it runs (none: unchanged).
    pub cpu_nice: Option<i32>,
    /// I/O class for the agent and everything it runs.
    pub io_priority: super::limits::IoPriority,
    /// Enroll at start with this bootstrap token when the certificate and
    /// key are missing (`bootstrap_token_file`, or env
    /// `TRIREME_BOOTSTRAP_TOKEN_FILE`).
    pub bootstrap_token_file: Option<PathBuf>,
    /// The controller's enrollment listener, `host:port`
    /// (`enroll_controller`, or env `TRIREME_ENROLL_CONTROLLER`); needed
    /// with a bootstrap token.
    pub enroll_controller: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    controller: String,
    server_name: Option<String>,
    hostname: Option<String>,
    state_dir: PathBuf,
    max_concurrent_jobs: Option<usize>,
    max_backoff: Option<String>,
    hook_timeout: Option<String>,
    metrics_listen: Option<String>,
    upload_bytes_per_sec: Option<toml::Value>,
    cpu_nice: Option<i32>,
    io_priority: Option<String>,
    bootstrap_token_file: Option<PathBuf>,
    enroll_controller: Option<String>,
    tls: RawTls,
    #[serde(default, rename = "source")]
    sources: Vec<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    dir: Option<PathBuf>,
    name: String,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    ca: Option<PathBuf>,
}

fn host_name() -> String {
    rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned()
}

fn valid_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 128
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        bail!("{what} {name:?} must be 1–128 characters of letters, digits, '-', '_' or '.'");
    }
    Ok(())
}

impl AgentConfig {
    /// Read and validate a configuration file; relative paths are relative
    /// to its directory.
    ///
    /// # Errors
    /// What is wrong, naming the file and the field.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the agent configuration {}", path.display()))?;
        Self::parse(path, &text).with_context(|| format!("agent configuration {}", path.display()))
    }

    /// Parse configuration text; `path` anchors relative paths.
    ///
    /// # Errors
    /// What is wrong.
    pub fn parse(path: &Path, text: &str) -> Result<Self> {
        let raw: Raw = toml::from_str(text)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let abs = |p: &Path| {
            if p.is_absolute() {
                p.to_path_buf()
            } else {
                base.join(p)
            }
        };
        let Some((host, port)) = raw.controller.rsplit_once(':') else {
            bail!(
                "controller = {:?} needs a port, e.g. \"controller.example.com:7443\"",
                raw.controller
            );
        };
        if port.parse::<u16>().is_err() || host.is_empty() {
            bail!(
                "controller = {:?} is not host:port, e.g. \"controller.example.com:7443\"",
                raw.controller
            );
        }
        valid_name("tls.name", &raw.tls.name)?;
        let tls = match (&raw.tls.dir, &raw.tls.cert, &raw.tls.key, &raw.tls.ca) {
            (_, Some(cert), Some(key), Some(ca)) => TlsFiles {
                cert: abs(cert),
                key: abs(key),
                ca: abs(ca),
                crl: None,
            },
            (Some(dir), ..) => {
                let mut f = TlsFiles::in_dir(&abs(dir), &raw.tls.name);
                f.crl = None;
                f
            }
            _ => bail!(
                "[tls] needs `dir` (holding ca.pem and the files of `trireme cert issue --role agent --name {}`) or `cert`, `key` and `ca`",
                raw.tls.name
            ),
        };
        let mut sources: Vec<SourceConfig> = Vec::new();
        for table in raw.sources {
            let s = crate::sources::parse_source(table, base)?;
            valid_name("source name", &s.name)?;
            if sources.iter().any(|x| x.name == s.name) {
                bail!("source {:?} is listed twice", s.name);
            }
            sources.push(s);
        }
        let dur = |field: &str, v: &Option<String>, d: Duration| -> Result<Duration> {
            v.as_deref().map_or(Ok(d), |s| {
                humantime::parse_duration(s)
                    .with_context(|| format!("{field} = {s:?}: write e.g. \"30s\" or \"5m\""))
            })
        };
        let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let bootstrap_token_file = env("TRIREME_BOOTSTRAP_TOKEN_FILE")
            .map(PathBuf::from)
            .or(raw.bootstrap_token_file.as_deref().map(abs));
        let enroll_controller = env("TRIREME_ENROLL_CONTROLLER")
            .map(|v| v.to_string_lossy().into_owned())
            .or(raw.enroll_controller);
        if bootstrap_token_file.is_some() && enroll_controller.is_none() {
            bail!("bootstrap_token_file needs enroll_controller = \"controller.example.com:7444\" (the controller's enroll_listen address; env TRIREME_ENROLL_CONTROLLER)");
        }
        if let Some(a) = &enroll_controller {
            if a.rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                bail!("enroll_controller = {a:?} is not host:port, e.g. \"controller.example.com:7444\"");
            }
        }
        let max_concurrent_jobs = raw.max_concurrent_jobs.unwrap_or(2);
        if max_concurrent_jobs == 0 {
            bail!("max_concurrent_jobs must be at least 1");
        }
        Ok(AgentConfig {
            server_name: raw
                .server_name
                .unwrap_or_else(|| host.trim_matches(['[', ']']).to_string()),
            controller: raw.controller,
            name: raw.tls.name,
            hostname: raw.hostname.unwrap_or_else(host_name),
            state_dir: abs(&raw.state_dir),
            max_concurrent_jobs,
            tls,
            sources,
            max_backoff: dur("max_backoff", &raw.max_backoff, Duration::from_secs(60))?,
            hook_timeout: dur("hook_timeout", &raw.hook_timeout, Duration::from_secs(3600))?,
            metrics_listen: raw
                .metrics_listen
                .as_deref()
                .map(|a| {
                    a.parse().with_context(|| {
                        format!("metrics_listen = {a:?} is not an address; write e.g. \"127.0.0.1:9101\"")
                    })
                })
                .transpose()?,
            upload_bytes_per_sec: raw
                .upload_bytes_per_sec
                .as_ref()
                .map(super::limits::parse_rate)
                .transpose()?,
            cpu_nice: match raw.cpu_nice {
                Some(n) if !(-20..=19).contains(&n) => {
                    bail!("cpu_nice = {n}: write a niceness from -20 (first) to 19 (last), e.g. 10")
                }
                n => n,
            },
            io_priority: raw
                .io_priority
                .as_deref()
                .map(str::parse)
                .transpose()?
                .unwrap_or_default(),
            bootstrap_token_file,
            enroll_controller,
        })
    }

    /// The names of the sources, for messages.
    pub fn source_names(&self) -> String {
        self.sources
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The source named `name`.
    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
controller = "localhost:7443"
state_dir = "state"
[tls]
dir = "tls"
name = "web-1"
[[source]]
name = "files"
kind = "volume"
path = "/srv/files"
"#;

    #[test]
    fn parses() {
        let c = AgentConfig::parse(Path::new("/etc/trireme/agent.toml"), GOOD).unwrap();
        assert_eq!(c.server_name, "localhost");
        assert_eq!(c.state_dir, Path::new("/etc/trireme/state"));
        assert_eq!(c.tls.cert, Path::new("/etc/trireme/tls/web-1.pem"));
        assert_eq!(c.sources[0].details()["path"], "/srv/files");
        assert_eq!(c.sources[0].kind(), "volume");
    }

    #[test]
    fn errors_name_the_problem() {
        let p = Path::new("a.toml");
        let e = |t: String| format!("{:#}", AgentConfig::parse(p, &t).unwrap_err());
        assert!(e(GOOD.replace("localhost:7443", "localhost")).contains("needs a port"));
        assert!(e(GOOD.replace("\"volume\"", "\"oracle\"")).contains("supported: volume, kafka"));
        assert!(e(GOOD.replace("path = \"/srv/files\"", "")).contains("needs `path`"));
        assert!(e(format!(
            "{GOOD}\n[[source]]\nname = \"files\"\nkind = \"volume\"\npath = \"/x\"\n"
        ))
        .contains("listed twice"));
        assert!(e(GOOD.replace("state_dir", "state_dri")).contains("state_dri"));
    }

    #[test]
    fn the_shipped_example_parses() {
        let p = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../deploy/examples/agent.toml"
        ));
        let c = AgentConfig::load(p).unwrap();
        assert_eq!(c.name, "web-1");
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[1].post_hook.len(), 2);
    }
}
