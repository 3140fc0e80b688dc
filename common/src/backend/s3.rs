//! The `s3://` backend: a bucket (and key prefix) on Amazon S3 or an
//! S3-compatible store such as Garage or MinIO, through `aws-sdk-s3`.
//!
//! Every upload carries the SHA-256 of its bytes (`x-amz-checksum-sha256`) so
//! the store verifies it before accepting the object, and the same hash, in
//! hex, as user metadata `sha256`, so that [`Backend::head`] can return the
//! whole-object hash even for multipart uploads (whose S3 checksum is a
//! checksum of checksums). Objects above [`S3Settings::multipart_threshold`]
//! are uploaded in parts, each with its own SHA-256.
//!
//! Throttling (429, 503 `SlowDown`), 5xx answers, timeouts and network
//! failures are retried by the SDK's standard retry strategy with exponential
//! backoff, up to [`S3Settings::max_attempts`] attempts; what still fails is
//! reported as a temporary [`Error::Storage`].

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::interceptors::InterceptorContext;
use aws_sdk_s3::config::retry::{ClassifyRetry, RetryAction, RetryConfig};
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
    SharedCredentialsProvider,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ChecksumAlgorithm, ChecksumMode, ChecksumType, CompletedMultipartUpload, CompletedPart,
};
use aws_sdk_s3::Client;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};

use super::{Backend, ListedObject, ObjectKey, ObjectKind, ObjectMeta};
use crate::error::{Error, Result};
use crate::location::{CredentialSource, S3Credentials};

/// One MiB.
const MIB: u64 = 1024 * 1024;
/// The smallest part S3 accepts in a multipart upload (all parts but the last).
const MIN_PART_SIZE: u64 = 5 * MIB;
/// The most parts S3 accepts in one multipart upload.
const MAX_PARTS: u64 = 10_000;
/// How many parts of one multipart upload are sent at once.
const PART_CONCURRENCY: usize = 4;
/// The slowest upload rate an upload attempt is given time for: an attempt
/// sending `n` bytes may last [`S3Settings::attempt_timeout`] plus `n` divided
/// by this rate (stalled transfers are cut earlier by the SDK's stalled-stream
/// protection).
const MIN_UPLOAD_RATE: u64 = 256 * 1024;
/// The user metadata entry (`x-amz-meta-sha256`) holding the object's hex SHA-256.
const SHA256_METADATA: &str = "sha256";

/// Settings of an S3 location, parsed from its URL by [`crate::Location`].
///
/// Build one with [`S3Settings::new`] and adjust the fields; the defaults are
/// AWS's (region `us-east-1`, virtual-hosted-style addressing, HTTPS only,
/// credentials from the environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Settings {
    /// The bucket.
    pub bucket: String,
    /// Key prefix inside the bucket: empty, or ending in `/`.
    pub prefix: String,
    /// The endpoint URL of an S3-compatible store, e.g.
    /// `http://127.0.0.1:3900`; `None` for AWS itself.
    pub endpoint: Option<String>,
    /// The signing region (Garage's default is `garage`).
    pub region: String,
    /// Address buckets as `endpoint/bucket/key` rather than `bucket.endpoint/key`.
    pub path_style: bool,
    /// Allow a plain `http://` endpoint (credentials and data then travel
    /// unencrypted on the wire: for local test servers only).
    pub allow_http: bool,
    /// Static credentials, or `None` to read them from `AWS_ACCESS_KEY_ID`,
    /// `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` when the backend is opened.
    pub credentials: Option<S3Credentials>,
    /// The file the credentials were read from, if any (kept to name the
    /// location; the secret itself is never displayed).
    pub credentials_file: Option<PathBuf>,
    /// Where credentials come from when [`S3Settings::credentials`] is
    /// `None`: the environment, or the AWS SDK's default chain.
    pub credential_source: CredentialSource,
    /// Objects larger than this many bytes are uploaded in parts.
    pub multipart_threshold: u64,
    /// Size of each part of a multipart upload (at least 5 MiB; raised when an
    /// object would need more than 10,000 parts).
    pub part_size: u64,
    /// Attempts per request, the first included, before a retryable failure
    /// (throttling, 5xx, timeout, network) is reported.
    pub max_attempts: u32,
    /// How long to wait for a TCP/TLS connection to the store.
    pub connect_timeout: Duration,
    /// How long one attempt of one request may take until the answer's
    /// headers arrive. Uploads get this plus their size at 256 KiB/s; the
    /// body of a download is covered by the SDK's stalled-stream protection
    /// (an error after 5 s without progress) instead.
    pub attempt_timeout: Duration,
}

impl S3Settings {
    /// Settings for `bucket` and `prefix` (normalised to empty or ending in
    /// `/`), everything else at its default.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        let mut prefix = prefix.into();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        S3Settings {
            bucket: bucket.into(),
            prefix,
            endpoint: None,
            region: "us-east-1".into(),
            path_style: false,
            allow_http: false,
            credentials: None,
            credentials_file: None,
            credential_source: CredentialSource::Env,
            multipart_threshold: 64 * MIB,
            part_size: 16 * MIB,
            max_attempts: 6,
            connect_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(30),
        }
    }

    /// The location URL of these settings, without any secret: parameters at
    /// their default are left out.
    pub fn url(&self) -> String {
        let mut url = format!("s3://{}/{}", self.bucket, self.prefix);
        let mut params: Vec<String> = Vec::new();
        if let Some(endpoint) = &self.endpoint {
            params.push(format!("endpoint={}", query_value(endpoint)));
        }
        if self.region != "us-east-1" {
            params.push(format!("region={}", query_value(&self.region)));
        }
        if self.path_style != self.endpoint.is_some() {
            params.push(format!("path_style={}", self.path_style));
        }
        if self.allow_http {
            params.push("allow_http=true".into());
        }
        if let Some(path) = &self.credentials_file {
            params.push(format!(
                "credentials_file={}",
                query_value(&path.to_string_lossy())
            ));
        } else if self.credential_source == CredentialSource::DefaultChain {
            params.push("credentials=default".into());
        }
        if !params.is_empty() {
            url.push('?');
            url.push_str(&params.join("&"));
        }
        url
    }
}

/// `value` for a URL query: readable (`:` and `/` kept), with the characters
/// that would change how the query parses percent-encoded.
fn query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, '%' | '&' | '#' | '+') || c.is_whitespace() || c.is_control() {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// An S3 (or S3-compatible) bucket and prefix.
pub struct S3Backend {
    client: Client,
    settings: S3Settings,
    url: String,
}

impl fmt::Debug for S3Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Backend").field("url", &self.url).finish()
    }
}

/// Retries `429 Too Many Requests` as throttling (the SDK's own classifiers
/// retry 500, 502, 503, 504 and the throttling error codes such as
/// `SlowDown`, but not a bare 429, which some S3-compatible stores send).
#[derive(Debug)]
struct TooManyRequestsClassifier;

impl ClassifyRetry for TooManyRequestsClassifier {
    fn classify_retry(&self, ctx: &InterceptorContext) -> RetryAction {
        match ctx.response() {
            Some(response) if response.status().as_u16() == 429 => RetryAction::throttling_error(),
            _ => RetryAction::NoActionIndicated,
        }
    }

    fn name(&self) -> &'static str {
        "HTTP 429 Too Many Requests"
    }
}

/// What went wrong in one S3 request, before it is turned into an [`Error`].
struct Failure {
    /// HTTP status of the answer, when there was one.
    status: Option<u16>,
    /// S3 error code (`NoSuchKey`, `SlowDown`, …), when there was one.
    code: Option<String>,
    /// Human-readable description.
    message: String,
    /// Whether a later retry may succeed.
    temporary: bool,
}

impl Failure {
    fn from_sdk<E>(err: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        match err {
            SdkError::ServiceError(service) => {
                let status = service_status(err);
                let code = err.code().map(str::to_string);
                let temporary = match (status, code.as_deref()) {
                    (
                        _,
                        Some(
                            "SlowDown"
                            | "Throttling"
                            | "ThrottlingException"
                            | "RequestTimeout"
                            | "InternalError"
                            | "ServiceUnavailable",
                        ),
                    ) => true,
                    (Some(s), _) => s == 429 || s >= 500,
                    _ => false,
                };
                let mut message = match (status, &code) {
                    (Some(s), Some(c)) => format!("HTTP {s} {c}"),
                    (Some(s), None) => format!("HTTP {s}"),
                    (None, Some(c)) => c.clone(),
                    (None, None) => "error".to_string(),
                };
                match err.message() {
                    Some(m) if !m.is_empty() => {
                        message.push_str(": ");
                        message.push_str(m);
                    }
                    _ => {
                        let detail = error_chain(service.err());
                        message.push_str(": ");
                        message.push_str(&detail);
                    }
                }
                if let Some(hint) = hint(status, code.as_deref()) {
                    message.push_str(" (");
                    message.push_str(hint);
                    message.push(')');
                }
                if temporary {
                    message.push_str(" (temporary: retry later)");
                }
                Failure {
                    status,
                    code,
                    message,
                    temporary,
                }
            }
            SdkError::TimeoutError(_) => Failure {
                status: None,
                code: None,
                message: format!("timed out: {}", error_chain(err)),
                temporary: true,
            },
            SdkError::DispatchFailure(dispatch) => Failure {
                status: None,
                code: None,
                message: format!("cannot reach the store: {}", error_chain(err)),
                // A user error (e.g. a malformed request) will not get better.
                temporary: !dispatch.is_user(),
            },
            SdkError::ResponseError(_) => Failure {
                status: service_status(err),
                code: None,
                message: format!("bad or interrupted answer: {}", error_chain(err)),
                temporary: true,
            },
            _ => Failure {
                status: None,
                code: None,
                message: error_chain(err),
                temporary: false,
            },
        }
    }

    /// Whether the object is absent (a missing bucket is not: that is an error).
    fn is_not_found(&self) -> bool {
        match self.code.as_deref() {
            Some("NoSuchKey" | "NotFound") => true,
            Some("NoSuchBucket" | "NoSuchUpload") => false,
            _ => self.status == Some(404),
        }
    }
}

/// An error and its sources, `outer: inner: …`, each said once.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !text.is_empty() && !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// The HTTP status of an SDK error's raw answer, if it got one.
fn service_status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// What an operator can do about a well-known refusal.
fn hint(status: Option<u16>, code: Option<&str>) -> Option<&'static str> {
    match (status, code) {
        (_, Some("InvalidAccessKeyId")) => {
            Some("the access key id is not known to the store: check the credentials")
        }
        (_, Some("SignatureDoesNotMatch")) => {
            Some("the secret access key is wrong, or the region does not match the store's")
        }
        (_, Some("AccessDenied")) | (Some(403), None) => {
            Some("the credentials are refused or lack permission on the bucket")
        }
        (_, Some("NoSuchBucket")) => Some("the bucket does not exist: create it first"),
        (_, Some("AuthorizationHeaderMalformed")) => {
            Some("check the region parameter of the location URL")
        }
        (_, Some("BadDigest" | "InvalidDigest" | "XAmzContentSHA256Mismatch")) => {
            Some("the store computed a different SHA-256 than was sent: the data changed in transit or the checksum given is wrong")
        }
        _ => None,
    }
}

fn hex_sha256(sha256: &[u8; 32]) -> String {
    hex::encode(sha256)
}

fn b64_sha256(sha256: &[u8]) -> String {
    BASE64.encode(sha256)
}

fn sha256_of(data: &[u8]) -> [u8; 32] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// The whole-object SHA-256 from HEAD's answer: Trireme's metadata first, then
/// the store's checksum if it is a full-object one (a multipart composite
/// checksum, `…-N`, is a hash of the parts' hashes and is ignored).
fn stored_sha256(
    metadata: Option<&HashMap<String, String>>,
    checksum: Option<&str>,
    checksum_type: Option<&ChecksumType>,
) -> Option<[u8; 32]> {
    if let Some(hex_value) = metadata.and_then(|m| {
        m.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(SHA256_METADATA))
            .map(|(_, v)| v)
    }) {
        let mut out = [0u8; 32];
        if hex::decode_to_slice(hex_value.trim(), &mut out).is_ok() {
            return Some(out);
        }
    }
    let checksum = checksum?;
    if checksum.contains('-') || matches!(checksum_type, Some(ChecksumType::Composite)) {
        return None;
    }
    let bytes = BASE64.decode(checksum.trim()).ok()?;
    bytes.try_into().ok()
}

/// Static credentials for the SDK.
fn static_credentials(c: S3Credentials) -> Credentials {
    Credentials::new(
        c.access_key_id,
        c.secret_access_key,
        c.session_token,
        None,
        "trireme",
    )
}

impl S3Backend {
    /// Set up a client for the bucket described by `settings`. No request is
    /// sent: a wrong bucket or credentials show on first use.
    ///
    /// # Errors
    /// [`Error::InvalidLocation`] when the settings are inconsistent (an
    /// `http://` endpoint without `allow_http`, parts under 5 MiB, no
    /// attempts) or when no credentials are given and the environment has
    /// none.
    pub async fn new(settings: S3Settings) -> Result<Self> {
        let url = settings.url();
        let bad = |reason: String| Error::InvalidLocation {
            url: url.clone(),
            reason,
        };
        if settings.bucket.is_empty() {
            return Err(bad("the bucket name is empty".into()));
        }
        if !settings.prefix.is_empty() && !settings.prefix.ends_with('/') {
            return Err(bad(format!(
                "the prefix {:?} must be empty or end in '/'",
                settings.prefix
            )));
        }
        if let Some(endpoint) = &settings.endpoint {
            let lower = endpoint.to_ascii_lowercase();
            if lower.starts_with("http://") {
                if !settings.allow_http {
                    return Err(bad(format!(
                        "endpoint {endpoint} is plain http: use https, or add allow_http=true \
                         to accept unencrypted traffic (local test servers only)"
                    )));
                }
            } else if !lower.starts_with("https://") {
                return Err(bad(format!(
                    "endpoint {endpoint} must start with https:// (or http:// with allow_http=true)"
                )));
            }
        }
        if settings.part_size < MIN_PART_SIZE {
            return Err(bad(format!(
                "part size {} is below S3's minimum of 5 MiB ({MIN_PART_SIZE} bytes)",
                settings.part_size
            )));
        }
        if settings.max_attempts == 0 {
            return Err(bad("max_attempts must be at least 1".into()));
        }
        let credentials =
            match (&settings.credentials, settings.credential_source) {
                (Some(c), _) => SharedCredentialsProvider::new(static_credentials(c.clone())),
                (None, CredentialSource::DefaultChain) => SharedCredentialsProvider::new(
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(Region::new(settings.region.clone()))
                        .build()
                        .await,
                ),
                (None, CredentialSource::File) => return Err(bad(
                    "the credentials file was not read here (the URL was checked for another host)"
                        .into(),
                )),
                (None, CredentialSource::Env) => SharedCredentialsProvider::new(
                    static_credentials(S3Credentials::from_env().map_err(bad)?),
                ),
            };
        let mut config = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .credentials_provider(credentials)
            .force_path_style(settings.path_style)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(RetryConfig::standard().with_max_attempts(settings.max_attempts))
            .retry_classifier(TooManyRequestsClassifier)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.connect_timeout)
                    .operation_attempt_timeout(settings.attempt_timeout)
                    .build(),
            );
        if let Some(endpoint) = &settings.endpoint {
            config = config.endpoint_url(endpoint.trim_end_matches('/'));
        }
        Ok(S3Backend {
            client: Client::from_conf(config.build()),
            settings,
            url,
        })
    }

    /// The settings this backend was opened with.
    pub fn settings(&self) -> &S3Settings {
        &self.settings
    }

    /// Per-request config giving an upload of `len` bytes time to go through.
    fn upload_config(&self, len: u64) -> aws_sdk_s3::config::Builder {
        let timeout = self.settings.attempt_timeout
            + Duration::from_millis(len.saturating_mul(1000) / MIN_UPLOAD_RATE);
        aws_sdk_s3::config::Builder::new().timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .build(),
        )
    }

    /// The key in the bucket of a repository object.
    fn bucket_key(&self, key: &ObjectKey) -> String {
        format!("{}{}", self.settings.prefix, key.path())
    }

    fn error(&self, key: &str, failure: Failure) -> Error {
        Error::Storage {
            location: self.url.clone(),
            key: key.to_string(),
            message: failure.message,
            temporary: failure.temporary,
        }
    }

    fn not_found(&self, key: &ObjectKey) -> Error {
        Error::NotFound {
            key: key.path(),
            location: self.url.clone(),
        }
    }

    /// Map an SDK error of a request about `key`, absent objects to `NotFound`.
    fn object_error<E>(&self, key: &ObjectKey, err: &SdkError<E, HttpResponse>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let failure = Failure::from_sdk(err);
        if failure.is_not_found() {
            self.not_found(key)
        } else {
            self.error(&key.path(), failure)
        }
    }

    async fn put_single(&self, key: &ObjectKey, data: Bytes, sha256: [u8; 32]) -> Result<()> {
        let config = self.upload_config(data.len() as u64);
        self.client
            .put_object()
            .bucket(&self.settings.bucket)
            .key(self.bucket_key(key))
            .content_type("application/octet-stream")
            .checksum_sha256(b64_sha256(&sha256))
            .metadata(SHA256_METADATA, hex_sha256(&sha256))
            .body(ByteStream::from(data))
            .customize()
            .config_override(config)
            .send()
            .await
            .map_err(|e| self.error(&key.path(), Failure::from_sdk(&e)))?;
        Ok(())
    }

    async fn put_multipart(&self, key: &ObjectKey, data: Bytes, sha256: [u8; 32]) -> Result<()> {
        // The store verifies each part's checksum, but S3 has no full-object
        // SHA-256 for multipart uploads: check the whole here, so that the
        // `sha256` metadata is never wrong. Hash the parts in the same pass.
        let len = data.len() as u64;
        let part_size = self.settings.part_size.max(len.div_ceil(MAX_PARTS));
        let parts: Vec<Bytes> = (0..len.div_ceil(part_size))
            .map(|i| {
                let start = (i * part_size) as usize;
                let end = ((i + 1) * part_size).min(len) as usize;
                data.slice(start..end)
            })
            .collect();
        let to_hash = parts.clone();
        let (actual, part_hashes) = tokio::task::spawn_blocking(move || {
            let whole = sha256_of(&data);
            let parts: Vec<[u8; 32]> = to_hash.iter().map(|p| sha256_of(p)).collect();
            (whole, parts)
        })
        .await
        .map_err(|e| Error::Pipeline(format!("hashing task failed: {e}")))?;
        if actual != sha256 {
            return Err(Error::corrupt(
                key.path(),
                format!(
                    "refusing to upload: the data's SHA-256 is {} but {} was given",
                    hex::encode(actual),
                    hex::encode(sha256)
                ),
            ));
        }
        let bucket_key = self.bucket_key(key);
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(&bucket_key)
            .content_type("application/octet-stream")
            .checksum_algorithm(ChecksumAlgorithm::Sha256)
            .metadata(SHA256_METADATA, hex_sha256(&sha256))
            .send()
            .await
            .map_err(|e| self.error(&key.path(), Failure::from_sdk(&e)))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(self.error(
                &key.path(),
                Failure {
                    status: None,
                    code: None,
                    message: "the store started a multipart upload without an upload id".into(),
                    temporary: false,
                },
            ));
        };
        match self
            .upload_parts(key, &bucket_key, &upload_id, parts, part_hashes)
            .await
        {
            Ok(()) => Ok(()),
            Err(e) => {
                // Best effort: the store would otherwise keep the parts.
                if let Err(abort) = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.settings.bucket)
                    .key(&bucket_key)
                    .upload_id(&upload_id)
                    .send()
                    .await
                {
                    tracing::warn!(
                        key = %bucket_key,
                        upload_id,
                        "could not abort failed multipart upload: {}",
                        error_chain(&abort)
                    );
                }
                Err(e)
            }
        }
    }

    async fn upload_parts(
        &self,
        key: &ObjectKey,
        bucket_key: &str,
        upload_id: &str,
        parts: Vec<Bytes>,
        part_hashes: Vec<[u8; 32]>,
    ) -> Result<()> {
        let uploads = parts
            .into_iter()
            .zip(part_hashes)
            .enumerate()
            .map(|(i, (part, hash))| {
                let part_number = i32::try_from(i + 1).expect("at most 10,000 parts");
                async move {
                    let config = self.upload_config(part.len() as u64);
                    let checksum = b64_sha256(&hash);
                    let out = self
                        .client
                        .upload_part()
                        .bucket(&self.settings.bucket)
                        .key(bucket_key)
                        .upload_id(upload_id)
                        .part_number(part_number)
                        .checksum_sha256(&checksum)
                        .body(ByteStream::from(part))
                        .customize()
                        .config_override(config)
                        .send()
                        .await
                        .map_err(|e| {
                            let mut f = Failure::from_sdk(&e);
                            f.message = format!("part {part_number}: {}", f.message);
                            self.error(&key.path(), f)
                        })?;
                    Ok::<_, Error>(
                        CompletedPart::builder()
                            .part_number(part_number)
                            .set_e_tag(out.e_tag().map(str::to_string))
                            .checksum_sha256(out.checksum_sha256().unwrap_or(&checksum))
                            .build(),
                    )
                }
            });
        let mut parts: Vec<CompletedPart> = futures::stream::iter(uploads)
            .buffer_unordered(PART_CONCURRENCY)
            .try_collect()
            .await?;
        parts.sort_by_key(|p| p.part_number());
        self.client
            .complete_multipart_upload()
            .bucket(&self.settings.bucket)
            .key(bucket_key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.error(&key.path(), Failure::from_sdk(&e)))?;
        Ok(())
    }
}

#[async_trait]
impl Backend for S3Backend {
    fn location(&self) -> &str {
        &self.url
    }

    async fn put(&self, key: &ObjectKey, data: Bytes, sha256: [u8; 32]) -> Result<()> {
        if data.len() as u64 > self.settings.multipart_threshold {
            self.put_multipart(key, data, sha256).await
        } else {
            self.put_single(key, data, sha256).await
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes> {
        let out = self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.bucket_key(key))
            .send()
            .await
            .map_err(|e| self.object_error(key, &e))?;
        let expected = out.content_length();
        let body = out.body.collect().await.map_err(|e| {
            self.error(
                &key.path(),
                Failure {
                    status: None,
                    code: None,
                    message: format!("download interrupted: {}", error_chain(&e)),
                    temporary: true,
                },
            )
        })?;
        let bytes = body.into_bytes();
        if let Some(expected) = expected {
            if u64::try_from(expected).ok() != Some(bytes.len() as u64) {
                return Err(Error::corrupt(
                    key.path(),
                    format!(
                        "truncated: the store announced {expected} bytes and sent {}",
                        bytes.len()
                    ),
                ));
            }
        }
        Ok(bytes)
    }

    async fn get_range(&self, key: &ObjectKey, offset: u64, length: u64) -> Result<Bytes> {
        let truncated = |size: Option<u64>| {
            Error::corrupt(
                key.path(),
                match size {
                    Some(size) => format!(
                        "truncated: cannot read {length} bytes at offset {offset} of a {size}-byte object"
                    ),
                    None => format!("truncated: cannot read {length} bytes at offset {offset}"),
                },
            )
        };
        if length == 0 {
            return match self.head(key).await? {
                None => Err(self.not_found(key)),
                Some(meta) if offset > meta.size => Err(truncated(Some(meta.size))),
                Some(_) => Ok(Bytes::new()),
            };
        }
        let last = offset
            .checked_add(length - 1)
            .ok_or_else(|| truncated(None))?;
        let out = match self
            .client
            .get_object()
            .bucket(&self.settings.bucket)
            .key(self.bucket_key(key))
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.status == Some(416) || failure.code.as_deref() == Some("InvalidRange") {
                    return Err(truncated(None));
                }
                return Err(self.object_error(key, &e));
            }
        };
        let ranged = out.content_range().is_some();
        let body = out.body.collect().await.map_err(|e| {
            self.error(
                &key.path(),
                Failure {
                    status: None,
                    code: None,
                    message: format!("download interrupted: {}", error_chain(&e)),
                    temporary: true,
                },
            )
        })?;
        let mut bytes = body.into_bytes();
        if !ranged && offset > 0 || bytes.len() as u64 > length {
            // The store ignored the Range header and sent the whole object.
            let size = bytes.len() as u64;
            if size < offset + length {
                return Err(truncated(Some(size)));
            }
            bytes = bytes.slice(offset as usize..(offset + length) as usize);
        }
        if (bytes.len() as u64) < length {
            return Err(truncated(None));
        }
        Ok(bytes)
    }

    async fn head(&self, key: &ObjectKey) -> Result<Option<ObjectMeta>> {
        let out = match self
            .client
            .head_object()
            .bucket(&self.settings.bucket)
            .key(self.bucket_key(key))
            .checksum_mode(ChecksumMode::Enabled)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_not_found() {
                    return Ok(None);
                }
                return Err(self.error(&key.path(), failure));
            }
        };
        Ok(Some(ObjectMeta {
            size: out
                .content_length()
                .and_then(|l| u64::try_from(l).ok())
                .unwrap_or(0),
            sha256: stored_sha256(out.metadata(), out.checksum_sha256(), out.checksum_type()),
        }))
    }

    async fn list(&self, kind: ObjectKind) -> Result<Vec<ListedObject>> {
        if kind == ObjectKind::Config {
            let key = ObjectKey::config();
            return Ok(self
                .head(&key)
                .await?
                .map(|meta| ListedObject {
                    key,
                    size: meta.size,
                })
                .into_iter()
                .collect());
        }
        let list_prefix = format!("{}{}", self.settings.prefix, kind.prefix());
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.settings.bucket)
            .prefix(&list_prefix)
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(kind.prefix(), Failure::from_sdk(&e)))?;
            for object in page.contents() {
                let Some(path) = object
                    .key()
                    .and_then(|k| k.strip_prefix(self.settings.prefix.as_str()))
                else {
                    continue;
                };
                let Some(key) = ObjectKey::from_path(path) else {
                    continue;
                };
                if key.kind != kind {
                    continue;
                }
                out.push(ListedObject {
                    key,
                    size: object
                        .size()
                        .and_then(|s| u64::try_from(s).ok())
                        .unwrap_or(0),
                });
            }
        }
        Ok(out)
    }

    async fn delete(&self, key: &ObjectKey) -> Result<()> {
        match self
            .client
            .delete_object()
            .bucket(&self.settings.bucket)
            .key(self.bucket_key(key))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let failure = Failure::from_sdk(&e);
                if failure.is_not_found() {
                    return Ok(());
                }
                Err(self.error(&key.path(), failure))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_debug_hides_secrets() {
        let c = S3Credentials {
            access_key_id: "GKexample".into(),
            secret_access_key: "very-secret".into(),
            session_token: Some("token-secret".into()),
        };
        let s = format!("{c:?}");
        assert!(s.contains("GKexample"));
        assert!(!s.contains("very-secret"), "{s}");
        assert!(!s.contains("token-secret"), "{s}");
        let mut settings = S3Settings::new("b", "p");
        settings.credentials = Some(c);
        let s = format!("{settings:?}");
        assert!(!s.contains("very-secret"), "{s}");
        assert!(!settings.url().contains("very-secret"));
    }

    #[test]
    fn head_checksum_choice() {
        let sha = sha256_of(b"hello");
        let mut meta = HashMap::new();
        meta.insert("sha256".to_string(), hex::encode(sha));
        assert_eq!(stored_sha256(Some(&meta), None, None), Some(sha));
        let b64 = b64_sha256(&sha);
        assert_eq!(stored_sha256(None, Some(&b64), None), Some(sha));
        assert_eq!(
            stored_sha256(None, Some(&b64), Some(&ChecksumType::FullObject)),
            Some(sha)
        );
        assert_eq!(stored_sha256(None, Some(&format!("{b64}-3")), None), None);
        assert_eq!(
            stored_sha256(None, Some(&b64), Some(&ChecksumType::Composite)),
            None
        );
        assert_eq!(stored_sha256(None, None, None), None);
    }

    #[tokio::test]
    async fn http_endpoint_needs_allow_http() {
        let mut s = S3Settings::new("bucket", "");
        s.endpoint = Some("http://127.0.0.1:3900".into());
        s.path_style = true;
        s.credentials = Some(S3Credentials {
            access_key_id: "a".into(),
            secret_access_key: "b".into(),
            session_token: None,
        });
        let err = S3Backend::new(s.clone()).await.unwrap_err();
        assert!(err.to_string().contains("allow_http=true"), "{err}");
        s.allow_http = true;
        S3Backend::new(s).await.unwrap();
    }
}
