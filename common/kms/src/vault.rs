//! A [`KeyProvider`] backed by HashiCorp Vault's transit secrets engine: the
//! master key never leaves Vault. Calls, as Vault's transit API documents
//! them (all `POST`, header `X-Vault-Token`, and `X-Vault-Namespace` when a
//! namespace is set):
//!
//! | operation | path | body | reply `data` |
//! | --- | --- | --- | --- |
//! | generate | `/v1/<mount>/datakey/plaintext/<key>` | `{"bits":256}` | `plaintext` (base64), `ciphertext` |
//! | unwrap | `/v1/<mount>/decrypt/<key>` | `{"ciphertext":"vault:v1:…"}` | `plaintext` (base64) |
//! | wrap | `/v1/<mount>/encrypt/<key>` | `{"plaintext":"<base64>"}` | `ciphertext` |
//!
//! Wrapped keys are `2 (scheme) || <Vault's ciphertext string, "vault:vN:…">`
//! (docs/format.md §3.3). Vault keeps old versions of a transit key after
//! `rotate`, so new data keys use the new version while old ones still
//! unwrap (until `min_decryption_version` is raised).
//!
//! The token is read from `token_file` (mode 0600) on every call, so a token
//! that Vault Agent renews into that file is picked up without a restart.
//! Connection failures, timeouts and 5xx/429 answers are retried twice;
//! 4xx answers are reported at once with Vault's `errors` and what to do.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};

use trireme_common::crypto::DataKey;
use trireme_common::error::{Error, Result};
use trireme_common::keys::{check_scheme, KeyProvider, WrappedKey, SCHEME_VAULT_TRANSIT_V1};

/// Attempts per call, the first included.
const ATTEMPTS: u32 = 3;
/// Wait before the first retry (doubled for the next).
const FIRST_BACKOFF: Duration = Duration::from_millis(250);

/// Where Vault is and which transit key to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VaultSettings {
    /// `https://vault.example.com:8200` (`http://` only with `allow_http`).
    pub address: String,
    /// Where the transit engine is mounted (default `transit`).
    pub mount: String,
    /// The transit key's name.
    pub key: String,
    /// A file (mode 0600) holding the Vault token.
    pub token_file: PathBuf,
    /// Vault Enterprise / OpenBao namespace, sent as `X-Vault-Namespace`.
    pub namespace: Option<String>,
    /// PEM CA certificates trusted for https instead of the system roots
    /// (as Vault's own `VAULT_CACERT`).
    pub ca_file: Option<PathBuf>,
    /// How long one attempt (connect, TLS, request, reply) may take.
    pub timeout: Duration,
    /// Accept a plain `http://` address. Vault's replies carry plaintext
    /// data keys, so this is for a dev server on the same host only.
    pub allow_http: bool,
}

impl VaultSettings {
    /// Settings with the default mount (`transit`), no namespace, the
    /// system roots, a 10 s timeout and https only.
    pub fn new(address: &str, key: &str, token_file: &Path) -> Self {
        VaultSettings {
            address: address.to_string(),
            mount: "transit".into(),
            key: key.to_string(),
            token_file: token_file.to_path_buf(),
            namespace: None,
            ca_file: None,
            timeout: Duration::from_secs(10),
            allow_http: false,
        }
    }

    /// Check the settings without touching the network or files.
    ///
    /// # Errors
    /// A message naming the setting at fault and what it should look like.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let endpoint = Endpoint::parse(&self.address)?;
        if !endpoint.https && !self.allow_http {
            return Err(format!(
                "address = {:?} is plain http: Vault's replies carry plaintext data keys, so they would cross the network unencrypted; \
                 use https://, or set allow_http = true (a dev server on this host only)",
                self.address
            ));
        }
        let name_ok = |s: &str, slash: bool| {
            !s.is_empty()
                && s.chars().all(|c| {
                    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (slash && c == '/')
                })
                && !s.starts_with('/')
                && !s.ends_with('/')
                && !s.split('/').any(|p| p.is_empty() || p == "." || p == "..")
        };
        if !name_ok(&self.mount, true) {
            return Err(format!(
                "mount = {:?} is not a Vault mount path: write e.g. \"transit\" (letters, digits, - _ . and / between parts)",
                self.mount
            ));
        }
        if !name_ok(&self.key, false) {
            return Err(format!(
                "key = {:?} is not a transit key name: write e.g. \"trireme\" (letters, digits, - _ .)",
                self.key
            ));
        }
        if let Some(ns) = &self.namespace {
            if ns.is_empty() || !ns.chars().all(|c| c.is_ascii_graphic()) {
                return Err(format!(
                    "namespace = {ns:?} is not a Vault namespace: write e.g. \"ops\" or \"ops/backups\", or leave it out"
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err("timeout must be positive, e.g. \"10s\"".into());
        }
        Ok(())
    }
}

/// The parsed `address`.
#[derive(Debug, Clone)]
struct Endpoint {
    https: bool,
    /// Host name or IP address, without brackets.
    host: String,
    port: u16,
    /// `host:port` as the `Host` header.
    authority: String,
}

impl Endpoint {
    fn parse(address: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| {
            format!("address = {address:?} {why}: write e.g. \"https://vault.example.com:8200\"")
        };
        let url = url::Url::parse(address).map_err(|e| bad(&format!("is not a URL ({e})")))?;
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            _ => {
                return Err(bad(
                    "must start with https:// (or http:// with allow_http = true)",
                ))
            }
        };
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("carries credentials; put the token in token_file"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad(
                "must be only scheme, host and port (the API paths are added)",
            ));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_string(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(bad("has no host")),
        };
        let port = url
            .port_or_known_default()
            .ok_or_else(|| bad("has no port"))?;
        let authority = match host.parse::<IpAddr>() {
            Ok(IpAddr::V6(_)) => format!("[{host}]:{port}"),
            _ => format!("{host}:{port}"),
        };
        Ok(Endpoint {
            https,
            host,
            port,
            authority,
        })
    }
}

/// One of the three transit operations.
#[derive(Debug, Clone, Copy)]
enum Op {
    Generate,
    Decrypt,
    Encrypt,
}

impl Op {
    /// The path segment after the mount.
    fn path(self) -> &'static str {
        match self {
            Op::Generate => "datakey/plaintext",
            Op::Decrypt => "decrypt",
            Op::Encrypt => "encrypt",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Op::Generate => "generate a data key",
            Op::Decrypt => "unwrap (decrypt) a data key",
            Op::Encrypt => "wrap (encrypt) a data key",
        }
    }
}

/// What went wrong in one attempt: worth retrying or not.
enum Failure {
    Temporary(String),
    Permanent(Error),
}

/// Vault's transit engine as the key service.
pub struct VaultTransit {
    settings: VaultSettings,
    endpoint: Endpoint,
    tls: Option<tokio_rustls::TlsConnector>,
}

impl fmt::Debug for VaultTransit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VaultTransit({})", self.describe())
    }
}

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

impl VaultTransit {
    /// A provider for the transit key `settings` name. Reads the token file
    /// (refused unless only its owner can read it) and, for https, the CA
    /// file or the system roots; does not contact Vault.
    ///
    /// # Errors
    /// [`Error::Key`] for bad settings or an unreadable, too open or empty
    /// token file; [`Error::Certificate`] for an unreadable CA file.
    pub fn new(settings: VaultSettings) -> Result<Self> {
        settings
            .validate()
            .map_err(|e| Error::Key(format!("vault-transit: {e}")))?;
        let endpoint = Endpoint::parse(&settings.address).map_err(Error::Key)?;
        read_token(&settings.token_file)?;
        let tls = if endpoint.https {
            let mut roots = rustls::RootCertStore::empty();
            match &settings.ca_file {
                Some(ca) => {
                    for c in trireme_net::tls::config::load_certs(ca)? {
                        roots.add(c).map_err(|e| Error::Certificate {
                            path: ca.clone(),
                            reason: format!("not a usable CA certificate: {e}"),
                        })?;
                    }
                }
                None => {
                    let found = rustls_native_certs::load_native_certs();
                    let (added, _) = roots.add_parsable_certificates(found.certs);
                    if added == 0 {
                        return Err(Error::Key(format!(
                            "vault-transit: no system CA certificates found to check {}'s certificate{}; set ca_file to the CA that signed it",
                            settings.address,
                            found.errors.first().map(|e| format!(" ({e})")).unwrap_or_default()
                        )));
                    }
                }
            }
            let config =
                rustls::ClientConfig::builder_with_provider(trireme_net::tls::config::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| Error::Tls(e.to_string()))?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
        } else {
            None
        };
        Ok(VaultTransit {
            settings,
            endpoint,
            tls,
        })
    }

    /// `transit key K at https://… (mount M, namespace N)`, for messages.
    pub fn describe(&self) -> String {
        let s = &self.settings;
        format!(
            "transit key {} at {} (mount {}{})",
            s.key,
            s.address,
            s.mount,
            s.namespace
                .as_deref()
                .map(|n| format!(", namespace {n}"))
                .unwrap_or_default()
        )
    }

    fn api_path(&self, op: Op) -> String {
        format!(
            "{}/{}/{}",
            self.settings.mount,
            op.path(),
            self.settings.key
        )
    }

    /// POST `body` for `op`, with retries; the reply's `data` object.
    async fn call(&self, op: Op, body: Value) -> Result<Value> {
        let body = Bytes::from(body.to_string());
        let mut delay = FIRST_BACKOFF;
        let mut last = String::new();
        for attempt in 1..=ATTEMPTS {
            let token = read_token(&self.settings.token_file)?;
            let once = self.post(op, &token, body.clone());
            match tokio::time::timeout(self.settings.timeout, once).await {
                Ok(Ok(data)) => return Ok(data),
                Ok(Err(Failure::Permanent(e))) => return Err(e),
                Ok(Err(Failure::Temporary(why))) => last = why,
                Err(_) => last = format!("no answer within {:?} (timeout)", self.settings.timeout),
            }
            tracing::debug!(attempt, error = %last, vault = %self.settings.address, "vault call failed; retrying");
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        Err(Error::KeyUnavailable(format!(
            "cannot {} with Vault {}: {last} (after {ATTEMPTS} attempts; is Vault running and reachable, and is [key_service] address right?)",
            op.what(),
            self.describe()
        )))
    }

    /// One attempt.
    async fn post(&self, op: Op, token: &str, body: Bytes) -> std::result::Result<Value, Failure> {
        let ep = &self.endpoint;
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| Failure::Temporary(format!("cannot connect to {}: {e}", ep.authority)))?;
        let _ = tcp.set_nodelay(true);
        let mut req = hyper::Request::post(format!("/v1/{}", self.api_path(op)))
            .header(hyper::header::HOST, &ep.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("X-Vault-Request", "true");
        match hyper::header::HeaderValue::from_str(token) {
            Ok(mut v) => {
                v.set_sensitive(true);
                req = req.header("X-Vault-Token", v);
            }
            Err(_) => {
                return Err(Failure::Permanent(Error::Key(format!(
                    "vault-transit: token_file {} holds characters a token cannot have",
                    self.settings.token_file.display()
                ))))
            }
        }
        if let Some(ns) = &self.settings.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        let req = req
            .body(Full::new(body))
            .map_err(|e| Failure::Permanent(Error::Key(format!("vault request: {e}"))))?;
        let resp = match &self.tls {
            None => send(hyper_util::rt::TokioIo::new(tcp), req).await,
            Some(connector) => {
                let name = rustls::pki_types::ServerName::try_from(ep.host.clone()).map_err(|_| {
                    Failure::Permanent(Error::Key(format!(
                        "vault-transit: {:?} is not a valid TLS server name",
                        ep.host
                    )))
                })?;
                let tls = connector.connect(name, tcp).await.map_err(|e| {
                    Failure::Permanent(Error::Key(format!(
                        "TLS handshake with Vault at {} failed: {e}{}",
                        self.settings.address,
                        if self.settings.ca_file.is_some() {
                            " (is ca_file the CA that signed Vault's certificate, and does the certificate name this host?)"
                        } else {
                            " (set ca_file to the CA that signed Vault's certificate if it is not a public one)"
                        }
                    )))
                })?;
                send(hyper_util::rt::TokioIo::new(tls), req).await
            }
        }
        .map_err(|e| Failure::Temporary(format!("HTTP exchange with {} failed: {e}", ep.authority)))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Temporary(format!("reading Vault's reply failed: {e}")))?
            .to_bytes();
        let v: Option<Value> = serde_json::from_slice(&bytes).ok();
        if status.is_success() {
            return match v.as_ref().map(|v| &v["data"]) {
                Some(d @ Value::Object(_)) => Ok(d.clone()),
                _ => Err(Failure::Permanent(Error::Key(format!(
                    "Vault at {} answered {} with HTTP {status} but no JSON `data` object: is address a Vault server?",
                    self.settings.address,
                    self.api_path(op)
                )))),
            };
        }
        let errors = v
            .as_ref()
            .and_then(|v| v["errors"].as_array())
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .filter(|e| !e.is_empty())
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)]).into_owned()
            });
        Err(self.refusal(op, status, &errors))
    }

    /// The error for a non-2xx answer.
    fn refusal(&self, op: Op, status: hyper::StatusCode, errors: &str) -> Failure {
        let s = &self.settings;
        let path = self.api_path(op);
        let code = status.as_u16();
        if code == 429 || status.is_server_error() {
            return Failure::Temporary(format!("HTTP {status} on {path}: {errors}"));
        }
        let head = format!(
            "Vault at {} refused to {} with transit key {} (HTTP {status} on {path})",
            s.address,
            op.what(),
            s.key
        );
        Failure::Permanent(match code {
            403 => Error::Key(format!(
                "{head}: {errors}. The token in {} is invalid or expired, or its policy lacks capability \"update\" on path \"{path}\"{}; \
                 Trireme's policy needs path \"{m}/datakey/plaintext/{k}\", \"{m}/decrypt/{k}\" and \"{m}/encrypt/{k}\" with capabilities = [\"update\"]",
                s.token_file.display(),
                s.namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default(),
                m = s.mount,
                k = s.key,
            )),
            404 => Error::Key(format!(
                "{head}: {errors}. Is the transit secrets engine enabled at mount {m:?}{}? (`vault secrets enable -path={m} transit`)",
                s.namespace.as_deref().map(|n| format!(" in namespace {n}")).unwrap_or_default(),
                m = s.mount,
            )),
            400 if matches!(op, Op::Decrypt) && errors.contains("message authentication failed") => {
                Error::WrongKey(format!(
                    "{head}: {errors}. This data key was wrapped by another transit key (or by a key of this name that was deleted and re-created)"
                ))
            }
            400 if errors.contains("encryption key not found") => Error::Key(format!(
                "{head}: {errors}. There is no transit key {k:?} at mount {m:?}: fix `key`, or create it with `vault write -f {m}/keys/{k}`",
                m = s.mount,
                k = s.key,
            )),
            _ => Error::Key(format!("{head}: {errors}")),
        })
    }

    fn data_key(&self, data: &Value, op: Op) -> Result<DataKey> {
        let raw = data["plaintext"]
            .as_str()
            .and_then(|p| b64().decode(p).ok())
            .ok_or_else(|| {
                Error::Key(format!(
                    "Vault's answer to {} has no base64 `plaintext`",
                    self.api_path(op)
                ))
            })?;
        let len = raw.len();
        let raw: [u8; 32] = raw.try_into().map_err(|_| {
            Error::Key(format!(
                "Vault's answer to {} holds a {len}-byte key; Trireme's data keys are 32 bytes",
                self.api_path(op)
            ))
        })?;
        Ok(DataKey::from_bytes(raw))
    }

    fn wrapped(&self, data: &Value, op: Op) -> Result<WrappedKey> {
        let ct = data["ciphertext"]
            .as_str()
            .filter(|c| c.starts_with("vault:v"))
            .ok_or_else(|| {
                Error::Key(format!(
                    "Vault's answer to {} has no `ciphertext` of the form vault:vN:…",
                    self.api_path(op)
                ))
            })?;
        let mut out = Vec::with_capacity(1 + ct.len());
        out.push(SCHEME_VAULT_TRANSIT_V1);
        out.extend_from_slice(ct.as_bytes());
        Ok(WrappedKey(out))
    }
}

async fn send<IO>(
    io: hyper_util::rt::TokioIo<IO>,
    req: hyper::Request<Full<Bytes>>,
) -> std::result::Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await;
    if resp.is_err() {
        conn.abort();
    }
    resp
}

/// The token in `path`: refused unless only its owner can read it.
fn read_token(path: &Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let shown = path.display();
    let meta = std::fs::metadata(path).map_err(|e| {
        Error::Key(format!(
            "vault-transit: cannot read token_file {shown}: {e}"
        ))
    })?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(Error::Key(format!(
            "vault-transit: token_file {shown} is readable by group or others (mode {:03o}); run `chmod 600 {shown}`",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Key(format!(
            "vault-transit: cannot read token_file {shown}: {e}"
        ))
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::Key(format!(
            "vault-transit: token_file {shown} is empty: write the Vault token into it"
        )));
    }
    Ok(token.to_string())
}

#[async_trait::async_trait]
impl KeyProvider for VaultTransit {
    async fn generate(&self) -> Result<(DataKey, WrappedKey)> {
        let data = self.call(Op::Generate, json!({ "bits": 256 })).await?;
        Ok((
            self.data_key(&data, Op::Generate)?,
            self.wrapped(&data, Op::Generate)?,
        ))
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey> {
        let ct = check_scheme(wrapped, SCHEME_VAULT_TRANSIT_V1, "Vault transit")?;
        let ct = std::str::from_utf8(ct)
            .ok()
            .filter(|c| c.starts_with("vault:v"))
            .ok_or_else(|| {
                Error::Key(
                    "damaged wrapped key: scheme 2 but not a Vault ciphertext (vault:vN:…)".into(),
                )
            })?;
        let data = self.call(Op::Decrypt, json!({ "ciphertext": ct })).await?;
        self.data_key(&data, Op::Decrypt)
    }

    async fn wrap(&self, key: &DataKey) -> Result<WrappedKey> {
        let data = self
            .call(
                Op::Encrypt,
                json!({ "plaintext": b64().encode(key.as_bytes()) }),
            )
            .await?;
        self.wrapped(&data, Op::Encrypt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn settings_are_checked() {
        let ok = VaultSettings::new("https://vault.example.com:8200", "trireme", Path::new("/t"));
        assert_eq!(ok.validate(), Ok(()));
        let e = Endpoint::parse("https://[::1]:8200").unwrap();
        assert_eq!(
            (e.host.as_str(), e.authority.as_str()),
            ("::1", "[::1]:8200")
        );
        assert_eq!(Endpoint::parse("https://v.example").unwrap().port, 443);
        for (field, value, needle) in [
            ("address", "vault.example.com:8200", "address"),
            ("address", "ftp://v:1", "https://"),
            ("address", "https://user:pw@v:1", "credentials"),
            ("address", "https://v:1/v1/transit", "only scheme"),
            ("mount", "/transit", "mount"),
            ("mount", "a/../b", "mount"),
            ("key", "a/b", "key"),
            ("key", "", "key"),
            ("namespace", "", "namespace"),
        ] {
            let mut s = ok.clone();
            match field {
                "address" => s.address = value.into(),
                "mount" => s.mount = value.into(),
                "key" => s.key = value.into(),
                _ => s.namespace = Some(value.into()),
            }
            let e = s.validate().unwrap_err();
            assert!(e.contains(needle), "{field}={value:?}: {e}");
        }
    }

    #[test]
    fn plain_http_needs_allow_http() {
        let mut s = VaultSettings::new("http://vault.internal:8200", "trireme", Path::new("/t"));
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("\"http://vault.internal:8200\" is plain http")
                && e.contains("allow_http = true"),
            "{e}"
        );
        let e = VaultTransit::new(s.clone()).unwrap_err().to_string();
        assert!(e.contains("allow_http = true"), "{e}");
        s.allow_http = true;
        assert_eq!(s.validate(), Ok(()));
        // https needs no opt-in.
        s.address = "https://vault.internal:8200".into();
        s.allow_http = false;
        assert_eq!(s.validate(), Ok(()));
    }

    #[test]
    fn token_file_must_be_private_and_non_empty() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("token");
        std::fs::write(&p, "hvs.x\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut s = VaultSettings::new("http://127.0.0.1:8200", "k", &p);
        s.allow_http = true;
        let e = VaultTransit::new(s.clone()).unwrap_err().to_string();
        assert!(e.contains("chmod 600") && e.contains("644"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_token(&p).unwrap(), "hvs.x");
        VaultTransit::new(s.clone()).unwrap();
        std::fs::write(&p, " \n").unwrap();
        let e = VaultTransit::new(s).unwrap_err().to_string();
        assert!(e.contains("empty"), "{e}");
    }
}
