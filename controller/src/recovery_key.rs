//! The recovery copy of the master key (`key export` / `key import`): the
//! format, the export and import and the passphrase prompts are shared with
//! the `trireme` CLI in [`trireme_client::recovery_key`], re-exported here;
//! this module adds the controller's part, which key file.

use std::path::Path;

pub use trireme_client::recovery_key::*;

/// The key file of `source` for `key export` / `key import` (`command`):
/// refused for the external KMS providers.
///
/// # Errors
/// [`RecoveryError::ExternalKms`] naming the provider.
pub fn local_key_file<'a>(
    source: &'a crate::config::KeySource,
    command: &'static str,
) -> Result<&'a Path> {
    source.key_file().ok_or_else(|| RecoveryError::ExternalKms {
        command,
        provider: source.describe(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_for_external_kms() {
        use crate::config::KeySource;
        use trireme_kms::aws_kms::AwsKmsSettings;
        let local = KeySource::Local {
            key_file: "/etc/trireme/master.key".into(),
        };
        assert_eq!(
            local_key_file(&local, "export").unwrap(),
            Path::new("/etc/trireme/master.key")
        );
        let kms = KeySource::AwsKms(AwsKmsSettings::new("alias/trireme", "eu-west-1"));
        let e = local_key_file(&kms, "import").unwrap_err().to_string();
        assert!(
            e.contains("key import")
                && e.contains("aws-kms: key alias/trireme")
                && e.contains("KMS's own"),
            "{e}"
        );
    }
}
