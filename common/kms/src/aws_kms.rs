//! A [`KeyProvider`] backed by AWS KMS, through the official SDK: the master
//! key is a KMS key that never leaves KMS.
//!
//! - generate: `GenerateDataKey` (KeySpec `AES_256`);
//! - unwrap: `Decrypt`, passing the configured `KeyId` so a data key wrapped
//!   under another KMS key is refused rather than silently decrypted;
//! - wrap: `Encrypt`.
//!
//! All three carry the encryption context `{"purpose": "trireme data key
//! v1"}` ([`ENCRYPTION_CONTEXT`]): KMS binds it to the ciphertext, key
//! policies can require it, and CloudTrail shows it. Wrapped keys are
//! `3 (scheme) || CiphertextBlob` (docs/format.md §3.4).
//!
//! Credentials come from `credentials_file` (the format of S3 locations'
//! `credentials_file=`, mode 0600) or else the SDK's default chain
//! (environment, shared profile, web identity, ECS and EC2 instance roles).
//! The SDK's standard retry strategy (3 attempts) covers connection errors,
//! throttling and 5xx answers.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_sdk_kms::config::Credentials;
use aws_sdk_kms::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_kms::primitives::Blob;
use aws_sdk_kms::types::DataKeySpec;

use trireme_common::crypto::DataKey;
use trireme_common::error::{Error, Result};
use trireme_common::keys::{check_scheme, KeyProvider, WrappedKey, SCHEME_AWS_KMS_V1};
use trireme_common::location::S3Credentials;

/// The encryption context of every KMS call: (key, value).
pub const ENCRYPTION_CONTEXT: (&str, &str) = ("purpose", "trireme data key v1");

/// Attempts per call, the first included.
const ATTEMPTS: u32 = 3;

/// Which KMS key, where, and with which credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsKmsSettings {
    /// Key id, key ARN, `alias/NAME` or alias ARN.
    pub key_id: String,
    /// The key's region, e.g. `eu-west-1`.
    pub region: String,
    /// Another endpoint than the region's, e.g. a VPC endpoint
    /// (`https://vpce-….kms.eu-west-1.vpce.amazonaws.com`).
    pub endpoint: Option<String>,
    /// A credentials file (mode 0600) with `access_key_id` and
    /// `secret_access_key` lines; else the SDK's default chain.
    pub credentials_file: Option<PathBuf>,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Accept a plain `http://` endpoint. KMS replies carry plaintext data
    /// keys, so this is for a local test server only.
    pub allow_http: bool,
}

impl AwsKmsSettings {
    /// Settings with the region's endpoint, the default credential chain, a
    /// 10 s timeout per attempt and https only.
    pub fn new(key_id: &str, region: &str) -> Self {
        AwsKmsSettings {
            key_id: key_id.to_string(),
            region: region.to_string(),
            endpoint: None,
            credentials_file: None,
            timeout: Duration::from_secs(10),
            allow_http: false,
        }
    }

    /// Check the settings without touching the network or files.
    ///
    /// # Errors
    /// A message naming the setting at fault and what it should look like.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let id = &self.key_id;
        if id.is_empty() || id.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!(
                "key_id = {id:?} is not a KMS key: write a key id, a key ARN, \"alias/NAME\" or an alias ARN"
            ));
        }
        let r = &self.region;
        if r.is_empty()
            || !r
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "region = {r:?} is not an AWS region: write e.g. \"eu-west-1\""
            ));
        }
        if let Some(ep) = &self.endpoint {
            let url = url::Url::parse(ep).map_err(|e| {
                format!("endpoint = {ep:?} is not a URL ({e}): write e.g. \"https://kms.eu-west-1.amazonaws.com\"")
            })?;
            if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
                return Err(format!(
                    "endpoint = {ep:?} must be an http(s) URL with a host, e.g. \"https://kms.eu-west-1.amazonaws.com\""
                ));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(format!(
                    "endpoint = {ep:?} carries credentials: use credentials_file"
                ));
            }
            if url.scheme() == "http" && !self.allow_http {
                return Err(format!(
                    "endpoint = {ep:?} is plain http: KMS replies carry plaintext data keys, so they would cross the network unencrypted; \
                     use https://, or set allow_http = true (a local test server only)"
                ));
            }
        }
        if self.timeout.is_zero() {
            return Err("timeout must be positive, e.g. \"10s\"".into());
        }
        Ok(())
    }
}

/// AWS KMS as the key service.
pub struct AwsKms {
    client: aws_sdk_kms::Client,
    settings: AwsKmsSettings,
}

impl fmt::Debug for AwsKms {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AwsKms({})", self.describe())
    }
}

impl AwsKms {
    /// A provider for the KMS key `settings` name. Reads the credentials
    /// file when one is set (refused unless only its owner can read it);
    /// does not contact KMS.
    ///
    /// # Errors
    /// [`Error::Key`] for bad settings or a bad credentials file.
    pub async fn new(settings: AwsKmsSettings) -> Result<Self> {
        settings
            .validate()
            .map_err(|e| Error::Key(format!("aws-kms: {e}")))?;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(settings.region.clone()))
            .retry_config(RetryConfig::standard().with_max_attempts(ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(settings.timeout.min(Duration::from_secs(5)))
                    .operation_attempt_timeout(settings.timeout)
                    .build(),
            );
        if let Some(ep) = &settings.endpoint {
            loader = loader.endpoint_url(ep.trim_end_matches('/'));
        }
        if let Some(file) = &settings.credentials_file {
            let c =
                S3Credentials::from_file(file).map_err(|e| Error::Key(format!("aws-kms: {e}")))?;
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id,
                c.secret_access_key,
                c.session_token,
                None,
                "trireme-credentials-file",
            ));
        }
        let config = loader.load().await;
        Ok(AwsKms {
            client: aws_sdk_kms::Client::new(&config),
            settings,
        })
    }

    /// `key K in region R (endpoint E)`, for messages.
    pub fn describe(&self) -> String {
        let s = &self.settings;
        format!(
            "KMS key {} in {}{}",
            s.key_id,
            s.region,
            s.endpoint
                .as_deref()
                .map(|e| format!(" (endpoint {e})"))
                .unwrap_or_default()
        )
    }

    fn endpoint(&self) -> String {
        match &self.settings.endpoint {
            Some(e) => e.clone(),
            None => format!("the AWS KMS endpoint of region {}", self.settings.region),
        }
    }

    /// An operator's message for a failed `action` (`GenerateDataKey`,
    /// `Decrypt`, `Encrypt`).
    fn error<E, R>(&self, action: &str, err: SdkError<E, R>) -> Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: fmt::Debug + 'static,
    {
        let s = &self.settings;
        let key = &s.key_id;
        let service = match &err {
            SdkError::ServiceError(e) => e.err(),
            SdkError::TimeoutError(_) => {
                return Error::KeyUnavailable(format!(
                    "AWS KMS at {} did not answer kms:{action} within {:?} (after {ATTEMPTS} attempts)",
                    self.endpoint(),
                    s.timeout
                ))
            }
            SdkError::DispatchFailure(d) if d.is_io() || d.is_timeout() => {
                return Error::KeyUnavailable(format!(
                    "cannot reach AWS KMS at {} for kms:{action} on key {key} (after {ATTEMPTS} attempts): {}; \
                     check region/endpoint and that this host can reach it",
                    self.endpoint(),
                    chain(&err)
                ))
            }
            _ => {
                return Error::Key(format!(
                    "kms:{action} on key {key} at {} failed: {}; if this is about credentials, set [key_service] credentials_file or give the SDK credentials (environment, profile, instance role)",
                    self.endpoint(),
                    chain(&err)
                ))
            }
        };
        let code = service.code().unwrap_or("unknown error");
        let msg = service.message().unwrap_or("no message");
        let needs = "allow kms:GenerateDataKey, kms:Decrypt and kms:Encrypt on this key to these credentials \
                     (key policy or IAM policy; the calls carry the encryption context purpose = \"trireme data key v1\")";
        match code {
            "AccessDeniedException" => Error::Key(format!(
                "AWS KMS denied kms:{action} on key {key} ({code}: {msg}): {needs}{}",
                if action == "Decrypt" {
                    "; KMS also answers so when the data key was wrapped under another KMS key"
                } else {
                    ""
                }
            )),
            "IncorrectKeyException" => Error::WrongKey(format!(
                "this data key was wrapped under another KMS key than {key} ({code}: {msg}): configure the key that wrote this repository"
            )),
            "NotFoundException" => Error::Key(format!(
                "AWS KMS has no key {key} in region {} ({code}: {msg}): check key_id (a key id, key ARN, alias/NAME or alias ARN) and region",
                s.region
            )),
            "DisabledException" => Error::Key(format!(
                "AWS KMS key {key} is disabled ({code}: {msg}): enable it (`aws kms enable-key --key-id ...`); nothing can be backed up or restored until then"
            )),
            "KMSInvalidStateException" => Error::Key(format!(
                "AWS KMS key {key} cannot be used in its current state ({code}: {msg}); if it is pending deletion, cancel that (`aws kms cancel-key-deletion`) and enable it"
            )),
            "InvalidCiphertextException" => Error::Key(format!(
                "AWS KMS could not decrypt this data key with key {key} ({code}: {msg}): it is damaged or was wrapped with another encryption context"
            )),
            "InvalidKeyUsageException" => Error::Key(format!(
                "AWS KMS key {key} cannot do kms:{action} ({code}: {msg}): Trireme needs a symmetric encryption key (KeySpec SYMMETRIC_DEFAULT, usage ENCRYPT_DECRYPT)"
            )),
            "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException"
            | "InvalidClientTokenId" => Error::Key(format!(
                "AWS KMS did not accept the credentials ({code}: {msg}): check [key_service] credentials_file or the SDK's credential sources"
            )),
            "KeyUnavailableException" | "KMSInternalException" | "DependencyTimeoutException"
            | "ThrottlingException" | "LimitExceededException" => Error::KeyUnavailable(format!(
                "AWS KMS could not do kms:{action} on key {key} now ({code}: {msg})"
            )),
            _ => Error::Key(format!(
                "AWS KMS refused kms:{action} on key {key} ({code}: {msg})"
            )),
        }
    }

    fn data_key(&self, action: &str, plain: Option<&Blob>) -> Result<DataKey> {
        let bytes = plain.map(Blob::as_ref).unwrap_or_default();
        let raw: [u8; 32] = bytes.try_into().map_err(|_| {
            Error::Key(format!(
                "AWS KMS answered kms:{action} with a {}-byte key; Trireme's data keys are 32 bytes",
                bytes.len()
            ))
        })?;
        Ok(DataKey::from_bytes(raw))
    }

    fn wrapped(action: &str, blob: Option<&Blob>) -> Result<WrappedKey> {
        let blob = blob
            .map(Blob::as_ref)
            .filter(|b| !b.is_empty())
            .ok_or_else(|| {
                Error::Key(format!(
                    "AWS KMS answered kms:{action} without a CiphertextBlob"
                ))
            })?;
        let mut out = Vec::with_capacity(1 + blob.len());
        out.push(SCHEME_AWS_KMS_V1);
        out.extend_from_slice(blob);
        Ok(WrappedKey(out))
    }
}

/// An error and its sources, `a: b: c`, each once.
fn chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![err.to_string()];
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = e.source();
    }
    parts.join(": ")
}

#[async_trait::async_trait]
impl KeyProvider for AwsKms {
    async fn generate(&self) -> Result<(DataKey, WrappedKey)> {
        let (k, v) = ENCRYPTION_CONTEXT;
        let out = self
            .client
            .generate_data_key()
            .key_id(&self.settings.key_id)
            .key_spec(DataKeySpec::Aes256)
            .encryption_context(k, v)
            .send()
            .await
            .map_err(|e| self.error("GenerateDataKey", e))?;
        Ok((
            self.data_key("GenerateDataKey", out.plaintext())?,
            Self::wrapped("GenerateDataKey", out.ciphertext_blob())?,
        ))
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey> {
        let blob = check_scheme(wrapped, SCHEME_AWS_KMS_V1, "AWS KMS")?;
        if blob.is_empty() {
            return Err(Error::Key(
                "damaged wrapped key: scheme 3 with no KMS ciphertext".into(),
            ));
        }
        let (k, v) = ENCRYPTION_CONTEXT;
        let out = self
            .client
            .decrypt()
            .key_id(&self.settings.key_id)
            .ciphertext_blob(Blob::new(blob))
            .encryption_context(k, v)
            .send()
            .await
            .map_err(|e| self.error("Decrypt", e))?;
        self.data_key("Decrypt", out.plaintext())
    }

    async fn wrap(&self, key: &DataKey) -> Result<WrappedKey> {
        let (k, v) = ENCRYPTION_CONTEXT;
        let out = self
            .client
            .encrypt()
            .key_id(&self.settings.key_id)
            .plaintext(Blob::new(key.as_bytes().as_slice()))
            .encryption_context(k, v)
            .send()
            .await
            .map_err(|e| self.error("Encrypt", e))?;
        Self::wrapped("Encrypt", out.ciphertext_blob())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_checked() {
        let ok = AwsKmsSettings::new("alias/trireme", "eu-west-1");
        assert_eq!(ok.validate(), Ok(()));
        for (s, needle) in [
            (AwsKmsSettings::new("", "eu-west-1"), "key_id"),
            (AwsKmsSettings::new("alias/x y", "eu-west-1"), "key_id"),
            (AwsKmsSettings::new("alias/x", "EU West"), "region"),
            (
                AwsKmsSettings {
                    endpoint: Some("kms.example".into()),
                    ..ok.clone()
                },
                "endpoint",
            ),
            (
                AwsKmsSettings {
                    endpoint: Some("https://a:b@kms.example".into()),
                    ..ok.clone()
                },
                "credentials",
            ),
        ] {
            let e = s.validate().unwrap_err();
            assert!(e.contains(needle), "{s:?}: {e}");
        }
    }

    #[tokio::test]
    async fn plain_http_needs_allow_http() {
        let mut s = AwsKmsSettings::new("alias/trireme", "eu-west-1");
        s.endpoint = Some("http://kms.internal:4566".into());
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("\"http://kms.internal:4566\" is plain http")
                && e.contains("allow_http = true"),
            "{e}"
        );
        let e = AwsKms::new(s.clone()).await.unwrap_err().to_string();
        assert!(e.contains("allow_http = true"), "{e}");
        s.allow_http = true;
        assert_eq!(s.validate(), Ok(()));
        s.endpoint = Some("HTTPS://kms.internal".into());
        s.allow_http = false;
        assert_eq!(s.validate(), Ok(()));
    }

    #[tokio::test]
    async fn credentials_file_must_be_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("kms.creds");
        std::fs::write(&p, "access_key_id = a\nsecret_access_key = b\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut s = AwsKmsSettings::new("alias/x", "eu-west-1");
        s.credentials_file = Some(p.clone());
        let e = AwsKms::new(s.clone()).await.unwrap_err().to_string();
        assert!(e.contains("chmod 600"), "{e}");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        AwsKms::new(s).await.unwrap();
    }
}
