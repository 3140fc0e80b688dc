//! The AWS KMS key provider, through the official SDK, against a real moto
//! server (an independent implementation of the KMS API; not AWS itself):
//! round trips by key id and alias, the encryption context, and the errors
//! an operator sees.

use std::time::Duration;

use trireme_common::crypto::DataKey;
use trireme_common::keys::{KeyProvider, LocalKeyFile, WrappedKey};
use trireme_common::Error;
use trireme_kms::aws_kms::{AwsKms, AwsKmsSettings, ENCRYPTION_CONTEXT};
use trireme_testkit::moto::Moto;

#[tokio::test]
async fn round_trip_by_id_and_alias() {
    let moto = Moto::start();
    let id = moto.create_key(Some("alias/trireme")).await;
    let by_id = AwsKms::new(moto.settings(&id)).await.unwrap();
    let by_alias = AwsKms::new(moto.settings("alias/trireme")).await.unwrap();

    let (key, wrapped) = by_id.generate().await.unwrap();
    assert_eq!(wrapped.0[0], 3, "scheme byte");
    assert!(wrapped.0.len() > 1 + 32, "{wrapped:?}");
    assert_eq!(
        by_id.unwrap(&wrapped).await.unwrap().as_bytes(),
        key.as_bytes()
    );
    assert_eq!(
        by_alias.unwrap(&wrapped).await.unwrap().as_bytes(),
        key.as_bytes()
    );

    let other = DataKey::generate();
    let w = by_alias.wrap(&other).await.unwrap();
    assert_eq!(w.0[0], 3);
    assert_eq!(by_id.unwrap(&w).await.unwrap().as_bytes(), other.as_bytes());

    // The blob after the scheme byte is KMS's own ciphertext, bound to the
    // encryption context: KMS decrypts it with the context, not without.
    let kms = moto.client().await;
    let (ck, cv) = ENCRYPTION_CONTEXT;
    let plain = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(&wrapped.0[1..]))
        .encryption_context(ck, cv)
        .send()
        .await
        .unwrap();
    assert_eq!(plain.plaintext().unwrap().as_ref(), key.as_bytes());
    let without = kms
        .decrypt()
        .ciphertext_blob(aws_sdk_kms::primitives::Blob::new(&wrapped.0[1..]))
        .send()
        .await;
    assert!(without.is_err(), "decrypted without the encryption context");
}

#[tokio::test]
async fn errors_name_the_key_and_the_cause() {
    let moto = Moto::start();
    let id = moto.create_key(None).await;
    let other_id = moto.create_key(None).await;
    let p = AwsKms::new(moto.settings(&id)).await.unwrap();

    // A key id that does not exist.
    let missing = AwsKms::new(moto.settings("alias/nope")).await.unwrap();
    let e = missing.generate().await.unwrap_err().to_string();
    assert!(
        e.contains("NotFoundException") && e.contains("alias/nope") && e.contains("check key_id"),
        "{e}"
    );
    let e = missing
        .wrap(&DataKey::generate())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("NotFoundException") && e.contains("no key alias/nope"),
        "{e}"
    );

    // A data key wrapped under another KMS key: refused (moto answers
    // AccessDeniedException here, AWS IncorrectKeyException).
    let other = AwsKms::new(moto.settings(&other_id)).await.unwrap();
    let (_, w) = other.generate().await.unwrap();
    let e = p.unwrap(&w).await.unwrap_err().to_string();
    assert!(
        e.contains(&id) && e.contains("kms:Decrypt") && e.contains("another KMS key"),
        "{e}"
    );

    // A damaged blob.
    let (_, mut w) = p.generate().await.unwrap();
    let n = w.0.len();
    w.0[n - 1] ^= 1;
    let e = p.unwrap(&w).await.unwrap_err().to_string();
    assert!(
        e.contains("InvalidCiphertextException") && e.contains("damaged"),
        "{e}"
    );

    // A key of the local key file's scheme: refused by name.
    let dir = tempfile::tempdir().unwrap();
    let local = LocalKeyFile::create(&dir.path().join("master.key")).unwrap();
    let (_, w1) = local.generate().await.unwrap();
    let e = p.unwrap(&w1).await.unwrap_err();
    assert!(matches!(e, Error::WrongKey(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("key scheme 1")
            && e.contains("local key file")
            && e.contains("AWS KMS (scheme 3)"),
        "{e}"
    );
    // ...and the local key file refuses KMS's by name.
    let (_, w3) = p.generate().await.unwrap();
    let e = local.unwrap(&w3).await.unwrap_err().to_string();
    assert!(e.contains("key scheme 3") && e.contains("AWS KMS"), "{e}");
    let e = p
        .unwrap(&WrappedKey(vec![3]))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("damaged"), "{e}");
}

#[tokio::test]
async fn unreachable_endpoint_is_named() {
    let port = trireme_testkit::ports::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("kms.creds");
    std::fs::write(&creds, "access_key_id = a\nsecret_access_key = b\n").unwrap();
    std::fs::set_permissions(&creds, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let mut s = AwsKmsSettings::new("alias/trireme", "eu-west-1");
    s.endpoint = Some(endpoint.clone());
    s.credentials_file = Some(creds);
    s.timeout = Duration::from_secs(2);
    s.allow_http = true;
    let p = AwsKms::new(s).await.unwrap();
    let e = p.generate().await.unwrap_err();
    assert!(e.is_temporary(), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("cannot reach AWS KMS")
            && e.contains(&endpoint)
            && e.contains("kms:GenerateDataKey"),
        "{e}"
    );
}
