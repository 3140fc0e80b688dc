//! Where the controller's master key lives, and the one place a key
//! provider is built from it.
//!
//! The top-level `key_file` is the local provider. `[key_service]` is a
//! table tagged by `provider`; each provider takes its own settings and
//! nothing else (serde refuses another provider's setting by name and lists
//! the ones it takes):
//!
//! ```toml
//! [key_service]
//! provider = "vault-transit"                 # or "aws-kms", or "local" (with key_file)
//! address = "https://vault.example.com:8200"
//! key = "trireme"
//! token_file = "/etc/trireme/vault.token"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use trireme_common::{DynKeyProvider, LocalKeyFile};
use trireme_kms::aws_kms::{AwsKms, AwsKmsSettings};
use trireme_kms::vault::{VaultSettings, VaultTransit};

use crate::error::{Error, Result};

/// `[key_service]` as written: one variant per `provider`.
#[derive(Debug, Deserialize)]
#[serde(tag = "provider", rename_all = "kebab-case")]
pub(super) enum RawKeyService {
    /// `provider = "local"`: the top-level `key_file`.
    Local(RawLocal),
    /// `provider = "vault-transit"`.
    VaultTransit(RawVault),
    /// `provider = "aws-kms"`.
    AwsKms(RawAwsKms),
}

/// The local provider takes no settings of its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocal {}

/// Vault transit settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawVault {
    /// `https://vault.example.com:8200`.
    address: String,
    /// The transit engine's mount (default `transit`).
    mount: Option<String>,
    /// The transit key's name.
    key: String,
    /// A file (mode 0600) holding the token.
    token_file: PathBuf,
    /// `X-Vault-Namespace`.
    namespace: Option<String>,
    /// PEM CA certificates for https (else the system roots).
    ca_file: Option<PathBuf>,
    /// How long one attempt may take (default 10s).
    timeout: Option<String>,
    /// Accept a plain `http://` address (default false; the replies carry
    /// plaintext data keys).
    #[serde(default)]
    allow_http: bool,
}

/// AWS KMS settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAwsKms {
    /// Key id, key ARN, `alias/NAME` or alias ARN.
    key_id: String,
    /// The key's region.
    region: String,
    /// Another endpoint (VPC endpoint).
    endpoint: Option<String>,
    /// Credentials file (mode 0600); else the SDK's default chain.
    credentials_file: Option<PathBuf>,
    /// How long one attempt may take (default 10s).
    timeout: Option<String>,
    /// Accept a plain `http://` endpoint (default false).
    #[serde(default)]
    allow_http: bool,
}

fn timeout(t: Option<&str>) -> std::result::Result<Duration, String> {
    match t {
        None => Ok(Duration::from_secs(10)),
        Some(t) => humantime::parse_duration(t)
            .map_err(|e| format!("[key_service] timeout = {t:?}: {e}; write e.g. \"10s\"")),
    }
}

impl RawKeyService {
    fn provider(&self) -> &'static str {
        match self {
            RawKeyService::Local(_) => "local",
            RawKeyService::VaultTransit(_) => "vault-transit",
            RawKeyService::AwsKms(_) => "aws-kms",
        }
    }

    /// The typed key source; `key_file` is the top-level setting, `abs`
    /// anchors relative paths.
    pub(super) fn resolve(
        self,
        key_file: Option<PathBuf>,
        abs: impl Fn(&Path) -> PathBuf,
    ) -> std::result::Result<KeySource, String> {
        let provider = self.provider();
        match (self, key_file) {
            (RawKeyService::Local(RawLocal {}), Some(key_file)) => Ok(KeySource::Local { key_file }),
            (RawKeyService::Local(_), None) => Err(
                "[key_service] provider = \"local\" needs the top-level key_file = \"/etc/trireme/master.key\" (create it with `trireme-controller keygen --key-file ...`)".into(),
            ),
            (_, Some(f)) => Err(format!(
                "both key_file ({}) and [key_service] provider = {provider:?} are set: the controller has exactly one master key; \
                 remove key_file to use {provider}, or remove [key_service] to keep the local key file",
                f.display(),
            )),
            (RawKeyService::VaultTransit(r), None) => {
                let mut v = VaultSettings::new(&r.address, &r.key, &abs(&r.token_file));
                if let Some(m) = r.mount {
                    v.mount = m;
                }
                v.namespace = r.namespace;
                v.ca_file = r.ca_file.as_deref().map(&abs);
                v.timeout = timeout(r.timeout.as_deref())?;
                v.allow_http = r.allow_http;
                v.validate().map_err(|e| format!("[key_service] {e}"))?;
                Ok(KeySource::VaultTransit(v))
            }
            (RawKeyService::AwsKms(r), None) => {
                let mut a = AwsKmsSettings::new(&r.key_id, &r.region);
                a.endpoint = r.endpoint;
                a.credentials_file = r.credentials_file.as_deref().map(&abs);
                a.timeout = timeout(r.timeout.as_deref())?;
                a.allow_http = r.allow_http;
                a.validate().map_err(|e| format!("[key_service] {e}"))?;
                Ok(KeySource::AwsKms(a))
            }
        }
    }
}

/// Where the controller's master key lives (`key_file` or `[key_service]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A master key file on this host (`key_file`).
    Local {
        /// The key file.
        key_file: PathBuf,
    },
    /// HashiCorp Vault's transit engine (`provider = "vault-transit"`).
    VaultTransit(VaultSettings),
    /// AWS KMS (`provider = "aws-kms"`).
    AwsKms(AwsKmsSettings),
}

impl KeySource {
    /// The `provider` name: `local`, `vault-transit` or `aws-kms`.
    pub fn provider(&self) -> &'static str {
        match self {
            KeySource::Local { .. } => "local",
            KeySource::VaultTransit(_) => "vault-transit",
            KeySource::AwsKms(_) => "aws-kms",
        }
    }

    /// The key file, for the local provider only.
    pub fn key_file(&self) -> Option<&Path> {
        match self {
            KeySource::Local { key_file } => Some(key_file),
            _ => None,
        }
    }

    /// One line for operators, e.g. `aws-kms: key alias/trireme in eu-west-1`.
    pub fn describe(&self) -> String {
        match self {
            KeySource::Local { key_file } => format!("local: key file {}", key_file.display()),
            KeySource::VaultTransit(v) => format!(
                "vault-transit: key {} at {} (mount {}{}), token from {}",
                v.key,
                v.address,
                v.mount,
                v.namespace
                    .as_deref()
                    .map(|n| format!(", namespace {n}"))
                    .unwrap_or_default(),
                v.token_file.display()
            ),
            KeySource::AwsKms(a) => format!(
                "aws-kms: key {} in {}{}, credentials from {}",
                a.key_id,
                a.region,
                a.endpoint
                    .as_deref()
                    .map(|e| format!(" (endpoint {e})"))
                    .unwrap_or_default(),
                a.credentials_file.as_ref().map_or_else(
                    || "the SDK's default chain".to_string(),
                    |f| f.display().to_string()
                )
            ),
        }
    }

    /// The key provider this names, checked: it must generate a data key,
    /// unwrap it, wrap it again and unwrap that to the same bytes.
    ///
    /// # Errors
    /// [`Error::KeyProvider`] naming the provider: the key file or KMS
    /// client cannot be set up, or the start-up check failed.
    pub async fn build(&self) -> Result<DynKeyProvider> {
        let fail = |message: String| Error::KeyProvider {
            provider: self.describe(),
            message,
        };
        let provider: DynKeyProvider = match self {
            KeySource::Local { key_file } => {
                Arc::new(LocalKeyFile::load(key_file).map_err(|e| fail(e.to_string()))?)
            }
            KeySource::VaultTransit(s) => {
                Arc::new(VaultTransit::new(s.clone()).map_err(|e| fail(e.to_string()))?)
            }
            KeySource::AwsKms(s) => Arc::new(
                AwsKms::new(s.clone())
                    .await
                    .map_err(|e| fail(e.to_string()))?,
            ),
        };
        self_check(&provider).await.map_err(|e| {
            fail(format!(
                "the start-up check (generate a data key, unwrap it, wrap it again) failed: {e}. \
                 The controller does not start without a working master key (docs/security.md, \"Key providers\")"
            ))
        })?;
        tracing::info!(provider = %self.describe(), "master key provider ready");
        Ok(provider)
    }
}

/// Generate → unwrap → wrap → unwrap, comparing the keys.
async fn self_check(p: &DynKeyProvider) -> trireme_common::Result<()> {
    let (key, wrapped) = p.generate().await?;
    let back = p.unwrap(&wrapped).await?;
    let rewrapped = p.wrap(&key).await?;
    let again = p.unwrap(&rewrapped).await?;
    if back.as_bytes() != key.as_bytes() || again.as_bytes() != key.as_bytes() {
        return Err(trireme_common::Error::Key(
            "the provider unwrapped a data key to other bytes than it generated".into(),
        ));
    }
    Ok(())
}
