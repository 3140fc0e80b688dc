//! Location URLs: `file:///path` or `s3://bucket/prefix?endpoint=…`.
//!
//! An S3 location is `s3://BUCKET[/PREFIX][?PARAM=VALUE&…]` with these
//! parameters, all optional:
//!
//! | parameter | meaning | default |
//! | --- | --- | --- |
//! | `endpoint` | URL of an S3-compatible store, e.g. `https://s3.example.com` | AWS |
//! | `region` | signing region (`garage` for Garage) | `us-east-1` |
//! | `path_style` | `true`: `endpoint/bucket/key`; `false`: `bucket.endpoint/key` | `true` with an endpoint, else `false` |
//! | `allow_http` | `true` to accept a plain `http://` endpoint | `false` |
//! | `credentials_file` | file (mode 600) with `access_key_id = …` and `secret_access_key = …` lines | `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` from the environment |
//! | `credentials` | `env`: `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` (/ `AWS_SESSION_TOKEN`) of the process; `default`: the AWS SDK's default chain, tried in order: those variables, the shared profile files (`AWS_PROFILE`, `~/.aws/credentials`), web identity (`AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`: EKS IRSA), ECS container credentials, the EC2 instance profile; temporary credentials are renewed before they expire | `env` (not with `credentials_file`) |
//!
//! The credentials are resolved where the URL is used: an agent resolves
//! those of the `agent_url` it is sent on its own host (its file, its
//! environment, its node's role), never the controller's.
//!
//! Example: `s3://trireme/hosts/web1?endpoint=http://127.0.0.1:3900&region=garage&allow_http=true&credentials_file=/etc/trireme/s3.creds`.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::{DynBackend, FileBackend, S3Backend, S3Settings};
use crate::error::{Error, Result};

/// The query parameters an `s3://` URL accepts.
const S3_PARAMS: [&str; 6] = [
    "endpoint",
    "region",
    "path_style",
    "allow_http",
    "credentials_file",
    "credentials",
];

/// Where an S3 location's credentials come from (URL parameters
/// `credentials_file=` and `credentials=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CredentialSource {
    /// A credentials file (`credentials_file=`), or static credentials set
    /// in [`S3Settings::credentials`].
    File,
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` of the process
    /// (`credentials=env`, the default without a file).
    #[default]
    Env,
    /// The AWS SDK's default chain (`credentials=default`): environment,
    /// profile files, web identity (IRSA), ECS, instance profile.
    DefaultChain,
}

/// Static S3 credentials: an access key and, for temporary credentials, a
/// session token.
///
/// Its `Debug` output shows the access key id only: the secret and the
/// session token are never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct S3Credentials {
    /// The access key id (not secret, e.g. `AKIA…` or Garage's `GK…`).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: String,
    /// The session token of temporary credentials, if any.
    pub session_token: Option<String>,
}

impl S3Credentials {
    /// Read credentials from the standard environment variables
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and (optional)
    /// `AWS_SESSION_TOKEN`.
    ///
    /// # Errors
    /// A message naming the missing variables when the key id or the secret
    /// is unset or empty.
    pub fn from_env() -> std::result::Result<Self, String> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Read a credentials file (the format of `credentials_file=` in a
    /// location URL): `access_key_id = …`, `secret_access_key = …` and
    /// optionally `session_token = …`. Also used for AWS KMS credentials.
    ///
    /// # Errors
    /// A message naming the file when it is unreadable, accessible to group
    /// or others, or malformed (values are never quoted).
    pub fn from_file(path: &Path) -> std::result::Result<Self, String> {
        read_credentials_file(path)
    }

    /// As [`S3Credentials::from_env`], reading variables through `lookup`.
    ///
    /// # Errors
    /// As [`S3Credentials::from_env`].
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
    ) -> std::result::Result<Self, String> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        let id = get("AWS_ACCESS_KEY_ID");
        let secret = get("AWS_SECRET_ACCESS_KEY");
        match (id, secret) {
            (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
                access_key_id,
                secret_access_key,
                session_token: get("AWS_SESSION_TOKEN"),
            }),
            (id, secret) => {
                let missing: Vec<&str> = [
                    id.is_none().then_some("AWS_ACCESS_KEY_ID"),
                    secret.is_none().then_some("AWS_SECRET_ACCESS_KEY"),
                ]
                .into_iter()
                .flatten()
                .collect();
                Err(format!(
                    "no S3 credentials: {} not set; set AWS_ACCESS_KEY_ID and \
                     AWS_SECRET_ACCESS_KEY, or add credentials_file=/path/to/file \
                     (mode 600, lines `access_key_id = …` and `secret_access_key = …`) \
                     to the location URL",
                    missing.join(" and ")
                ))
            }
        }
    }
}

impl fmt::Debug for S3Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// A parsed location URL.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "parsed once per command; plain variants keep matching simple"
)]
pub enum Location {
    /// A directory on this machine (or a mount).
    File(PathBuf),
    /// An S3 or S3-compatible bucket.
    S3(S3Settings),
}

impl Location {
    /// Parse a location URL. For an `s3://` URL with `credentials_file`, the
    /// file is read now (and refused if group- or world-readable).
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] naming what is wrong and how to fix it.
    pub fn parse(url: &str) -> Result<Self> {
        Self::parse_with(url, true)
    }

    /// Parse a location URL that is used on another host (an agent's
    /// `agent_url`, checked by the controller): everything is checked but
    /// its `credentials_file`, which is a path on that other host and is
    /// read there. The settings then carry no credentials.
    ///
    /// # Errors
    /// As [`Location::parse`], but for the credentials file's contents.
    pub fn parse_elsewhere(url: &str) -> Result<Self> {
        Self::parse_with(url, false)
    }

    fn parse_with(url: &str, read_files: bool) -> Result<Self> {
        let bad = |reason: &str| Error::InvalidLocation {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(bad(
                    "a file:// location needs an absolute path, e.g. file:///var/lib/trireme/repo",
                ));
            }
            return Ok(Location::File(PathBuf::from(path)));
        }
        if let Some(rest) = url.strip_prefix("s3://") {
            return parse_s3(rest, read_files)
                .map(Location::S3)
                .map_err(|reason| bad(&reason));
        }
        Err(bad(
            "unknown scheme: use file:///path or s3://bucket/prefix",
        ))
    }

    /// Open a backend for this location.
    ///
    /// # Errors
    /// When the S3 client cannot be set up (see [`S3Backend::new`]).
    pub async fn open(&self) -> Result<DynBackend> {
        Ok(match self {
            Location::File(p) => Arc::new(FileBackend::new(p.clone())),
            Location::S3(s) => Arc::new(S3Backend::new(s.clone()).await?),
        })
    }
}

impl fmt::Display for Location {
    /// The URL of the location; never includes credentials (only the
    /// credentials file's path, if one was given).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::File(p) => write!(f, "file://{}", p.display()),
            Location::S3(s) => f.write_str(&s.url()),
        }
    }
}

/// Parse what follows `s3://`; the error is the reason, for `InvalidLocation`.
fn parse_s3(rest: &str, read_files: bool) -> std::result::Result<S3Settings, String> {
    if rest.contains('#') {
        return Err("an s3:// location cannot contain '#'".into());
    }
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let (bucket, prefix) = path.split_once('/').unwrap_or((path, ""));
    check_bucket(bucket)?;
    let prefix = normalise_prefix(prefix)?;
    let mut settings = S3Settings::new(bucket, prefix);

    let mut seen: Vec<String> = Vec::new();
    let mut path_style: Option<bool> = None;
    for (name, value) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let name = name.into_owned();
        let value = value.into_owned();
        if !S3_PARAMS.contains(&name.as_str()) {
            return Err(format!(
                "unknown parameter {name:?}: an s3:// location accepts only {}",
                S3_PARAMS.join(", ")
            ));
        }
        if seen.contains(&name) {
            return Err(format!("parameter {name:?} is given twice: keep one"));
        }
        seen.push(name.clone());
        match name.as_str() {
            "endpoint" => settings.endpoint = Some(check_endpoint(&value)?),
            "region" => {
                if value.is_empty() || value.chars().any(|c| c.is_whitespace() || c == '/') {
                    return Err(format!(
                        "region {value:?} is not a region name, e.g. us-east-1 (or garage for Garage)"
                    ));
                }
                settings.region = value;
            }
            "path_style" => path_style = Some(parse_bool(&name, &value)?),
            "allow_http" => settings.allow_http = parse_bool(&name, &value)?,
            "credentials_file" => {
                if value.is_empty() {
                    return Err(
                        "credentials_file is empty: give the path of the credentials file".into(),
                    );
                }
                let path = PathBuf::from(&value);
                if !path.is_absolute() {
                    return Err(format!(
                        "credentials_file {value:?} is relative: give an absolute path"
                    ));
                }
                if read_files {
                    settings.credentials = Some(read_credentials_file(&path)?);
                }
                settings.credentials_file = Some(path);
                settings.credential_source = CredentialSource::File;
            }
            "credentials" => {
                settings.credential_source = match value.as_str() {
                    "env" => CredentialSource::Env,
                    "default" => CredentialSource::DefaultChain,
                    _ => {
                        return Err(format!(
                            "credentials={value:?}: use credentials=env (AWS_ACCESS_KEY_ID / \
                             AWS_SECRET_ACCESS_KEY of the process) or credentials=default (the AWS \
                             SDK's chain: environment, profile, web identity / IRSA, ECS, instance \
                             profile), or credentials_file=/path"
                        ))
                    }
                }
            }
            _ => unreachable!("checked against S3_PARAMS"),
        }
    }
    if seen.iter().any(|s| s == "credentials") && seen.iter().any(|s| s == "credentials_file") {
        return Err(
            "both credentials= and credentials_file= are given: keep one (a file, or env / default)"
                .into(),
        );
    }
    settings.path_style = path_style.unwrap_or(settings.endpoint.is_some());
    if let Some(endpoint) = &settings.endpoint {
        if endpoint.to_ascii_lowercase().starts_with("http://") && !settings.allow_http {
            return Err(format!(
                "endpoint {endpoint} is plain http, which sends data and signatures unencrypted: \
                 use an https:// endpoint, or add allow_http=true to the URL (local test servers only)"
            ));
        }
    }
    Ok(settings)
}

/// Check a bucket name against S3's naming rules (loosely: also accepting
/// the upper case and underscores of legacy buckets).
fn check_bucket(bucket: &str) -> std::result::Result<(), String> {
    if bucket.is_empty() {
        return Err("the bucket is missing: write s3://BUCKET or s3://BUCKET/PREFIX".into());
    }
    if bucket.len() < 3 || bucket.len() > 63 {
        return Err(format!(
            "bucket name {bucket:?} must be 3 to 63 characters long"
        ));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "bucket name {bucket:?} contains {c:?}: bucket names use only letters, digits, '.', '-' \
             (put credentials in credentials_file= or the environment, never in the URL)"
        ));
    }
    Ok(())
}

/// Normalise a key prefix to empty or `a/b/`; `.` and `..` segments are refused.
fn normalise_prefix(prefix: &str) -> std::result::Result<String, String> {
    let segments: Vec<&str> = prefix.split('/').filter(|s| !s.is_empty()).collect();
    if let Some(s) = segments.iter().find(|s| **s == "." || **s == "..") {
        return Err(format!(
            "the prefix {prefix:?} contains a {s:?} segment: give a plain path such as hosts/web1"
        ));
    }
    if let Some(c) = prefix.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the prefix {prefix:?} contains the control character {c:?}"
        ));
    }
    Ok(if segments.is_empty() {
        String::new()
    } else {
        format!("{}/", segments.join("/"))
    })
}

fn parse_bool(name: &str, value: &str) -> std::result::Result<bool, String> {
    match value {
        "true" | "1" | "yes" => Ok(true),
        "false" | "0" | "no" => Ok(false),
        _ => Err(format!("parameter {name}={value:?} must be true or false")),
    }
}

/// Check an endpoint URL: http(s), a host, no path beyond `/`, no query.
fn check_endpoint(value: &str) -> std::result::Result<String, String> {
    let example =
        "e.g. endpoint=https://s3.example.com or endpoint=http://127.0.0.1:3900&allow_http=true";
    let parsed = url::Url::parse(value)
        .map_err(|e| format!("endpoint {value:?} is not a URL ({e}): {example}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!(
            "endpoint {value:?} must start with https:// or http://: {example}"
        ));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(format!("endpoint {value:?} has no host: {example}"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "endpoint {value:?} carries credentials: remove them and use credentials_file= \
             or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(format!(
            "endpoint {value:?} has a query or fragment: URL-encode it (%3F, %26) or remove it"
        ));
    }
    if parsed.path() != "/" && !parsed.path().is_empty() {
        return Err(format!(
            "endpoint {value:?} has a path: give only scheme, host and port; \
             put the key prefix after the bucket, s3://BUCKET/PREFIX"
        ));
    }
    Ok(value.trim_end_matches('/').to_string())
}

/// Read a credentials file: `access_key_id = …`, `secret_access_key = …` and
/// optionally `session_token = …`, one per line, values bare or quoted;
/// blank lines and `#` comments are ignored. Refused if group- or
/// world-accessible.
fn read_credentials_file(path: &Path) -> std::result::Result<S3Credentials, String> {
    let shown = path.display();
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot read credentials file {shown}: {e}"))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(format!(
            "credentials file {shown} is accessible to group or others (mode {:03o}): \
             run `chmod 600 {shown}`",
            mode & 0o777
        ));
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read credentials file {shown}: {e}"))?;
    parse_credentials(&text).map_err(|e| format!("credentials file {shown}: {e}"))
}

/// Parse the text of a credentials file (see [`read_credentials_file`]).
/// Errors never quote values.
fn parse_credentials(text: &str) -> std::result::Result<S3Credentials, String> {
    let mut id = None;
    let mut secret = None;
    let mut token = None;
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with('[') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!(
                "line {} is not `name = value`; expected access_key_id = … and secret_access_key = …",
                n + 1
            ));
        };
        let name = name.trim();
        let value = unquote(value.trim());
        if value.is_empty() {
            return Err(format!("line {}: {name} is empty", n + 1));
        }
        let slot = match name {
            "access_key_id" | "aws_access_key_id" => &mut id,
            "secret_access_key" | "aws_secret_access_key" => &mut secret,
            "session_token" | "aws_session_token" => &mut token,
            other => {
                return Err(format!(
                    "line {}: unknown setting {other:?}; expected access_key_id, secret_access_key \
                     and optionally session_token",
                    n + 1
                ))
            }
        };
        if slot.is_some() {
            return Err(format!("line {}: {name} is given twice", n + 1));
        }
        *slot = Some(value.to_string());
    }
    match (id, secret) {
        (Some(access_key_id), Some(secret_access_key)) => Ok(S3Credentials {
            access_key_id,
            secret_access_key,
            session_token: token,
        }),
        (None, _) => Err("no access_key_id line (expected `access_key_id = …`)".into()),
        (_, None) => Err("no secret_access_key line (expected `secret_access_key = …`)".into()),
    }
}

/// Fuzzing entry point: [`parse_credentials`] on untrusted text (the
/// credentials file named by `credentials_file=`), without touching the
/// file system. Not part of the API.
#[doc(hidden)]
pub fn fuzz_parse_credentials(text: &str) -> std::result::Result<S3Credentials, String> {
    parse_credentials(text)
}

fn unquote(value: &str) -> &str {
    for q in ['"', '\''] {
        if let Some(inner) = value.strip_prefix(q).and_then(|v| v.strip_suffix(q)) {
            return inner;
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn s3(url: &str) -> S3Settings {
        match Location::parse(url) {
            Ok(Location::S3(s)) => s,
            other => panic!("{url}: {other:?}"),
        }
    }

    fn reason(url: &str) -> String {
        match Location::parse(url) {
            Err(Error::InvalidLocation { reason, .. }) => reason,
            other => panic!("{url} should be refused, got {other:?}"),
        }
    }

    fn creds_file(text: &str, mode: u32) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        std::fs::set_permissions(f.path(), std::fs::Permissions::from_mode(mode)).unwrap();
        f
    }

    #[test]
    fn credentials_from_environment() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let c = S3Credentials::from_lookup(env(&[
            ("AWS_ACCESS_KEY_ID", "id"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
        ]))
        .unwrap();
        assert_eq!(c.access_key_id, "id");
        assert_eq!(c.secret_access_key, "secret");
        assert_eq!(c.session_token, None);
        let err = S3Credentials::from_lookup(env(&[("AWS_ACCESS_KEY_ID", "id")])).unwrap_err();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY not set"), "{err}");
        let err = S3Credentials::from_lookup(env(&[])).unwrap_err();
        assert!(
            err.contains("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY not set"),
            "{err}"
        );
    }

    #[test]
    fn file_locations() {
        assert_eq!(
            Location::parse("file:///var/repo").unwrap(),
            Location::File("/var/repo".into())
        );
        assert!(reason("file://relative").contains("absolute path"));
        assert!(reason("ftp://x").contains("unknown scheme"));
    }

    #[test]
    fn s3_bucket_only() {
        let s = s3("s3://my-bucket");
        assert_eq!(s.bucket, "my-bucket");
        assert_eq!(s.prefix, "");
        assert_eq!(s.endpoint, None);
        assert_eq!(s.region, "us-east-1");
        assert!(!s.path_style);
        assert!(!s.allow_http);
        assert_eq!(s.credentials, None);
        assert_eq!(s3("s3://my-bucket/").prefix, "");
    }

    #[test]
    fn s3_prefix_is_normalised() {
        assert_eq!(s3("s3://bkt/a").prefix, "a/");
        assert_eq!(s3("s3://bkt/a/b/").prefix, "a/b/");
        assert_eq!(s3("s3://bkt//a//b").prefix, "a/b/");
        assert!(reason("s3://bkt/a/../b").contains("\"..\" segment"));
        assert!(reason("s3://bkt/./b").contains("\".\" segment"));
    }

    #[test]
    fn s3_with_endpoint() {
        let s = s3(
            "s3://trireme/hosts/web1?endpoint=http://127.0.0.1:3900&region=garage&allow_http=true",
        );
        assert_eq!(s.bucket, "trireme");
        assert_eq!(s.prefix, "hosts/web1/");
        assert_eq!(s.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
        assert_eq!(s.region, "garage");
        assert!(s.path_style, "path style defaults to true with an endpoint");
        assert!(s.allow_http);

        let s = s3("s3://trireme?endpoint=https://s3.example.com/&path_style=false");
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.com"));
        assert!(!s.path_style);
        assert!(!s.allow_http);

        // Percent-encoded values are decoded.
        let s = s3("s3://trireme?endpoint=https%3A%2F%2Fs3.example.com%3A9000");
        assert_eq!(s.endpoint.as_deref(), Some("https://s3.example.com:9000"));
        assert!(s3("s3://trireme?path_style=true").path_style);
    }

    #[test]
    fn s3_refusals() {
        assert!(reason("s3://").contains("bucket is missing"));
        assert!(reason("s3:///prefix").contains("bucket is missing"));
        assert!(reason("s3://?region=x").contains("bucket is missing"));
        assert!(reason("s3://ab").contains("3 to 63"));
        assert!(reason("s3://key:secret@bucket").contains("never in the URL"));
        let r = reason("s3://bkt?endpoint=http://127.0.0.1:3900");
        assert!(r.contains("allow_http=true"), "{r}");
        let r = reason("s3://bkt?endpoint=HTTP://h:1&allow_http=false");
        assert!(r.contains("allow_http=true"), "{r}");
        let r = reason("s3://bkt?endpont=https://h");
        assert!(r.contains("unknown parameter \"endpont\""), "{r}");
        assert!(r.contains("endpoint, region"), "{r}");
        assert!(reason("s3://bkt?region=a&region=b").contains("twice"));
        assert!(reason("s3://bkt?path_style=maybe").contains("true or false"));
        assert!(reason("s3://bkt?endpoint=ftp://h").contains("https://"));
        assert!(reason("s3://bkt?endpoint=not%20a%20url").contains("not a URL"));
        assert!(reason("s3://bkt?endpoint=https://h/path").contains("has a path"));
        assert!(reason("s3://bkt?endpoint=https://u:p@h").contains("carries credentials"));
        assert!(reason("s3://bkt?region=").contains("region"));
        assert!(reason("s3://bkt#frag").contains('#'));
        assert!(reason("s3://bkt?credentials_file=").contains("empty"));
    }

    #[test]
    fn credentials_file_is_read() {
        let f = creds_file(
            "# Garage key\naccess_key_id = GK123\nsecret_access_key = \"s3cr3t\"\n",
            0o600,
        );
        let url = format!(
            "s3://trireme/p?endpoint=http://127.0.0.1:3900&allow_http=true&region=garage&credentials_file={}",
            f.path().display()
        );
        let s = s3(&url);
        let c = s.credentials.clone().unwrap();
        assert_eq!(c.access_key_id, "GK123");
        assert_eq!(c.secret_access_key, "s3cr3t");
        assert_eq!(c.session_token, None);
        assert_eq!(s.credentials_file.as_deref(), Some(f.path()));
        // Display never shows the secret, and parses back to the same settings.
        let loc = Location::S3(s);
        let shown = loc.to_string();
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(!format!("{loc:?}").contains("s3cr3t"));
        assert_eq!(Location::parse(&shown).unwrap(), loc);
    }

    #[test]
    fn odd_credentials_paths_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a b&c+d%e#f");
        std::fs::write(&path, "access_key_id = a\nsecret_access_key = b\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut settings = S3Settings::new("bkt", "");
        settings.credentials = Some(read_credentials_file(&path).unwrap());
        settings.credentials_file = Some(path.clone());
        settings.credential_source = CredentialSource::File;
        let loc = Location::S3(settings);
        let parsed = Location::parse(&loc.to_string()).unwrap();
        assert_eq!(parsed, loc, "{loc}");
    }

    #[test]
    fn credential_sources() {
        assert_eq!(s3("s3://bkt").credential_source, CredentialSource::Env);
        assert_eq!(
            s3("s3://bkt?credentials=env").credential_source,
            CredentialSource::Env
        );
        let chain = s3("s3://bkt/p?region=eu-west-1&credentials=default");
        assert_eq!(chain.credential_source, CredentialSource::DefaultChain);
        assert!(chain.credentials.is_none());
        // The URL names the chain, and parses back to it.
        assert_eq!(
            chain.url(),
            "s3://bkt/p/?region=eu-west-1&credentials=default"
        );
        assert_eq!(s3(&chain.url()), chain);
        let r = reason("s3://bkt?credentials=instance");
        assert!(
            r.contains("credentials=env") && r.contains("credentials=default"),
            "{r}"
        );
        let f = creds_file("access_key_id = a\nsecret_access_key = b\n", 0o600);
        let r = reason(&format!(
            "s3://bkt?credentials=default&credentials_file={}",
            f.path().display()
        ));
        assert!(r.contains("keep one"), "{r}");
        assert!(reason("s3://bkt?credentials_file=relative/creds").contains("absolute"));
    }

    #[test]
    fn a_url_for_another_host_does_not_read_its_credentials_file() {
        // Not there, or not readable here: fine, it is the other host's file.
        let loc =
            Location::parse_elsewhere("s3://bkt?credentials_file=/nonexistent/creds").unwrap();
        let Location::S3(s) = loc else { panic!() };
        assert_eq!(
            s.credentials_file.as_deref(),
            Some(Path::new("/nonexistent/creds"))
        );
        assert!(s.credentials.is_none());
        assert_eq!(s.credential_source, CredentialSource::File);
        // Everything else is still checked.
        assert!(Location::parse_elsewhere("s3://bkt?credentials=nope").is_err());
        assert!(Location::parse_elsewhere("s3://b?endpoint=http://h:1").is_err());
        // Parsed here, the same URL reads the file and says what is wrong.
        assert!(Location::parse("s3://bkt?credentials_file=/nonexistent/creds").is_err());
    }

    #[test]
    fn credentials_file_refusals() {
        let f = creds_file("access_key_id = a\nsecret_access_key = b\n", 0o644);
        let r = reason(&format!("s3://bkt?credentials_file={}", f.path().display()));
        assert!(r.contains(&f.path().display().to_string()), "{r}");
        assert!(r.contains("chmod 600"), "{r}");
        assert!(r.contains("644"), "{r}");

        let f = creds_file("access_key_id = a\nsecret_access_key = b\n", 0o640);
        assert!(
            reason(&format!("s3://bkt?credentials_file={}", f.path().display()))
                .contains("chmod 600")
        );

        let r = reason("s3://bkt?credentials_file=/nonexistent/creds");
        assert!(
            r.contains("cannot read credentials file /nonexistent/creds"),
            "{r}"
        );

        let f = creds_file("access_key_id = a\n", 0o600);
        let r = reason(&format!("s3://bkt?credentials_file={}", f.path().display()));
        assert!(r.contains("no secret_access_key"), "{r}");

        let f = creds_file(
            "access_key_id = a\nsecret_access_key = topsecret\npassword = x\n",
            0o600,
        );
        let r = reason(&format!("s3://bkt?credentials_file={}", f.path().display()));
        assert!(r.contains("unknown setting \"password\""), "{r}");
        assert!(!r.contains("topsecret"), "{r}");
    }

    #[test]
    fn credentials_text_formats() {
        let c = parse_credentials(
            "[default]\naws_access_key_id='id'\naws_secret_access_key = sec=ret\nsession_token = tok\n",
        )
        .unwrap();
        assert_eq!(c.access_key_id, "id");
        assert_eq!(c.secret_access_key, "sec=ret");
        assert_eq!(c.session_token.as_deref(), Some("tok"));
        assert!(parse_credentials("secret_access_key = x")
            .unwrap_err()
            .contains("no access_key_id"));
        assert!(parse_credentials("garbage").unwrap_err().contains("line 1"));
        assert!(
            parse_credentials("access_key_id = a\naccess_key_id = b\nsecret_access_key = c")
                .unwrap_err()
                .contains("twice")
        );
    }

    #[test]
    fn display_round_trips() {
        for url in [
            "s3://bkt/",
            "s3://bkt/a/b/",
            "s3://bkt/?endpoint=https://s3.example.com",
            "s3://bkt/x/?endpoint=http://127.0.0.1:3900&region=garage&allow_http=true",
            "s3://bkt/?endpoint=https://h&path_style=false",
            "s3://bkt/?path_style=true",
        ] {
            let loc = Location::parse(url).unwrap();
            assert_eq!(loc.to_string(), url);
            assert_eq!(Location::parse(&loc.to_string()).unwrap(), loc);
        }
    }
}
