//! The `s3://` backend against a real Garage server (started by
//! `deploy/dev/garage.sh` through `trireme_testkit::garage`).
//!
//! Needs Garage installed: `deploy/dev/garage.sh install`.

use std::time::{Duration, Instant};

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use bytes::Bytes;
use futures::StreamExt as _;
use trireme_common::backend::S3Backend;
use trireme_common::location::S3Credentials;
use trireme_common::{Backend, Error, Location, ObjectKey, ObjectKind};
use trireme_testkit::garage::Garage;

fn sha256(data: &[u8]) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().try_into().unwrap()
}

/// `len` test bytes for `seed`, as the backend takes them.
fn data(len: usize, seed: u64) -> Bytes {
    Bytes::from(trireme_testkit::noise(seed, len))
}

/// A content-addressed key of `kind` for `bytes`.
fn key_for(kind: ObjectKind, bytes: &[u8]) -> ObjectKey {
    ObjectKey::new(kind, hex::encode(sha256(bytes)))
}

async fn open(garage: &Garage, prefix: &str) -> S3Backend {
    S3Backend::new(garage.settings(1, prefix)).await.unwrap()
}

/// A raw SDK client on instance 1, to look at what the backend stored.
fn raw_client(garage: &Garage) -> aws_sdk_s3::Client {
    let inst = garage.instance(1);
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(inst.region.clone()))
        .endpoint_url(&inst.endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(
            &inst.access_key_id,
            &inst.secret_access_key,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

#[tokio::test]
async fn put_get_range_head_list_delete() {
    let garage = Garage::start(1);
    // Opened through the URL, as the agent does.
    let backend = Location::parse(&garage.location_url(1, "repo/a"))
        .unwrap()
        .open()
        .await
        .unwrap();
    assert!(backend
        .location()
        .starts_with("s3://trireme/repo/a/?endpoint=http://127.0.0.1:"));

    let pack = data(300_000, 1);
    let pack_key = key_for(ObjectKind::Pack, &pack);
    let index = data(1000, 2);
    let index_key = key_for(ObjectKind::Index, &index);
    let snap = data(10, 3);
    let snap_key = key_for(ObjectKind::Snapshot, &snap);
    let config = Bytes::from_static(b"repository config");

    backend
        .put(&pack_key, pack.clone(), sha256(&pack))
        .await
        .unwrap();
    backend
        .put(&index_key, index.clone(), sha256(&index))
        .await
        .unwrap();
    backend
        .put(&snap_key, snap.clone(), sha256(&snap))
        .await
        .unwrap();
    backend
        .put(&ObjectKey::config(), config.clone(), sha256(&config))
        .await
        .unwrap();
    // Putting the same object again is harmless.
    backend
        .put(&pack_key, pack.clone(), sha256(&pack))
        .await
        .unwrap();

    assert_eq!(backend.get(&pack_key).await.unwrap(), pack);
    assert_eq!(backend.get(&ObjectKey::config()).await.unwrap(), config);
    assert_eq!(
        backend.get_range(&pack_key, 1234, 5000).await.unwrap(),
        pack.slice(1234..6234)
    );
    assert_eq!(
        backend
            .get_range(&pack_key, 0, pack.len() as u64)
            .await
            .unwrap(),
        pack
    );
    assert_eq!(
        backend
            .get_range(&pack_key, pack.len() as u64 - 10, 10)
            .await
            .unwrap(),
        pack.slice(pack.len() - 10..)
    );
    assert!(backend.get_range(&pack_key, 7, 0).await.unwrap().is_empty());

    // Ranges past the end: truncated.
    for (offset, len) in [(pack.len() as u64 - 10, 11), (pack.len() as u64 + 5, 3)] {
        match backend.get_range(&pack_key, offset, len).await {
            Err(Error::Corrupt { key, reason }) => {
                assert_eq!(key, pack_key.path());
                assert!(reason.contains("truncated"), "{reason}");
            }
            other => panic!("range {offset}+{len} past the end: {other:?}"),
        }
    }

    let meta = backend.head(&pack_key).await.unwrap().unwrap();
    assert_eq!(meta.size, pack.len() as u64);
    assert_eq!(meta.sha256, Some(sha256(&pack)));
    let meta = backend.head(&ObjectKey::config()).await.unwrap().unwrap();
    assert_eq!(meta.size, config.len() as u64);
    assert_eq!(meta.sha256, Some(sha256(&config)));

    // The object is where the prefix says, and the server kept the checksum.
    let raw = raw_client(&garage);
    let head = raw
        .head_object()
        .bucket("trireme")
        .key(format!("repo/a/{}", pack_key.path()))
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_length(), Some(pack.len() as i64));
    let want_b64 = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(sha256(&pack))
    };
    assert_eq!(
        head.checksum_sha256(),
        Some(want_b64.as_str()),
        "Garage should keep the x-amz-checksum-sha256 it verified"
    );

    // Strangers under the prefix and objects of other prefixes are not listed.
    for stray in [
        "repo/a/packs/zz/.tmp-1",
        "repo/a/index/sub/dir",
        "repo/ab/index/x",
        "repo/b/index/y",
    ] {
        raw.put_object()
            .bucket("trireme")
            .key(stray)
            .body(Bytes::from_static(b"x").into())
            .send()
            .await
            .unwrap();
    }

    let listed = |kind| {
        let backend = backend.clone();
        async move {
            let mut v: Vec<(ObjectKey, u64)> = backend
                .list(kind)
                .await
                .unwrap()
                .into_iter()
                .map(|o| (o.key, o.size))
                .collect();
            v.sort();
            v
        }
    };
    assert_eq!(
        listed(ObjectKind::Pack).await,
        vec![(pack_key.clone(), pack.len() as u64)]
    );
    assert_eq!(
        listed(ObjectKind::Index).await,
        vec![(index_key.clone(), 1000)]
    );
    assert_eq!(
        listed(ObjectKind::Snapshot).await,
        vec![(snap_key.clone(), 10)]
    );
    assert_eq!(
        listed(ObjectKind::Config).await,
        vec![(ObjectKey::config(), config.len() as u64)]
    );

    backend.delete(&pack_key).await.unwrap();
    backend.delete(&pack_key).await.unwrap(); // absent: fine
    assert!(backend.head(&pack_key).await.unwrap().is_none());
    assert!(listed(ObjectKind::Pack).await.is_empty());

    // Another prefix of the same bucket is another repository.
    let other = open(&garage, "repo/b").await;
    let other_index: Vec<ObjectKey> = other
        .list(ObjectKind::Index)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o.key)
        .collect();
    assert_eq!(other_index, vec![ObjectKey::new(ObjectKind::Index, "y")]);
    assert!(other.list(ObjectKind::Config).await.unwrap().is_empty());
    assert!(other.head(&index_key).await.unwrap().is_none());
}

#[tokio::test]
async fn missing_objects() {
    let garage = Garage::start(1);
    let backend = open(&garage, "").await;
    let key = ObjectKey::new(ObjectKind::Pack, "ab".repeat(32));
    match backend.get(&key).await {
        Err(Error::NotFound { key: k, location }) => {
            assert_eq!(k, key.path());
            assert_eq!(location, backend.location());
        }
        other => panic!("get of a missing object: {other:?}"),
    }
    assert!(matches!(
        backend.get_range(&key, 0, 10).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        backend.get_range(&key, 0, 0).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(backend.head(&key).await.unwrap(), None);
    backend.delete(&key).await.unwrap();
    assert!(backend.list(ObjectKind::Pack).await.unwrap().is_empty());
    assert!(backend.list(ObjectKind::Config).await.unwrap().is_empty());
}

#[tokio::test]
async fn multipart_upload_round_trips() {
    let garage = Garage::start(1);
    let mut settings = garage.settings(1, "mp");
    settings.multipart_threshold = 5 * 1024 * 1024;
    settings.part_size = 5 * 1024 * 1024;
    let backend = S3Backend::new(settings).await.unwrap();

    let big = data(12 * 1024 * 1024, 7);
    let key = key_for(ObjectKind::Pack, &big);
    backend.put(&key, big.clone(), sha256(&big)).await.unwrap();

    let got = backend.get(&key).await.unwrap();
    assert_eq!(got.len(), big.len());
    assert!(got == big, "multipart object read back differs");
    let off = 5 * 1024 * 1024 - 100; // across the first part boundary
    assert_eq!(
        backend.get_range(&key, off, 200).await.unwrap(),
        big.slice(off as usize..off as usize + 200)
    );
    let meta = backend.head(&key).await.unwrap().unwrap();
    assert_eq!(meta.size, big.len() as u64);
    assert_eq!(
        meta.sha256,
        Some(sha256(&big)),
        "head returns the whole-object SHA-256 of a multipart upload"
    );

    // It really went up in three parts, each with a SHA-256 checksum.
    let head = raw_client(&garage)
        .head_object()
        .bucket("trireme")
        .key(format!("mp/{}", key.path()))
        .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
        .send()
        .await
        .unwrap();
    let etag = head
        .e_tag()
        .unwrap_or_default()
        .trim_matches('"')
        .to_string();
    assert!(
        etag.ends_with("-3"),
        "multipart ETag expected, got {etag:?}"
    );
    let checksum = head.checksum_sha256().unwrap_or_default();
    assert!(
        checksum.ends_with("-3"),
        "composite SHA-256 checksum of 3 parts expected, got {checksum:?}"
    );

    // No upload is left behind.
    let uploads = raw_client(&garage)
        .list_multipart_uploads()
        .bucket("trireme")
        .send()
        .await
        .unwrap();
    assert!(uploads.uploads().is_empty(), "{:?}", uploads.uploads());

    // A wrong whole-object SHA-256 is refused before anything is sent.
    let other = data(6 * 1024 * 1024, 8);
    let other_key = key_for(ObjectKind::Pack, &other);
    match backend.put(&other_key, other.clone(), sha256(&big)).await {
        Err(Error::Corrupt { reason, .. }) => assert!(reason.contains("SHA-256"), "{reason}"),
        other => panic!("multipart put with a wrong sha256: {other:?}"),
    }
    assert!(backend.head(&other_key).await.unwrap().is_none());
}

#[tokio::test]
async fn wrong_checksum_is_refused_by_the_server() {
    let garage = Garage::start(1);
    let backend = open(&garage, "").await;
    let good = data(4096, 11);
    let bad_sha = sha256(b"something else");
    let key = key_for(ObjectKind::Index, &good);
    let started = Instant::now();
    match backend.put(&key, good.clone(), bad_sha).await {
        Err(Error::Storage {
            temporary,
            message,
            key: k,
            ..
        }) => {
            eprintln!("Garage refused the wrong checksum: {message}");
            assert!(!temporary, "a checksum mismatch is permanent: {message}");
            assert_eq!(k, key.path());
            assert!(message.contains("HTTP 400"), "{message}");
            assert!(message.contains("SHA-256"), "{message}");
        }
        other => panic!("put with a wrong sha256 should be refused by Garage: {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "a refusal is not retried"
    );
    assert!(
        backend.head(&key).await.unwrap().is_none(),
        "nothing was stored"
    );
    // The same bytes with the right checksum go through.
    backend
        .put(&key, good.clone(), sha256(&good))
        .await
        .unwrap();
    assert_eq!(backend.get(&key).await.unwrap(), good);
}

#[tokio::test]
async fn listing_paginates() {
    let garage = Garage::start(1);
    let backend = std::sync::Arc::new(open(&garage, "many").await);
    let n = 1100; // more than one ListObjectsV2 page (1000)
    let objects: Vec<Bytes> = (0..n).map(|i| data(16, 1000 + i)).collect();
    futures::stream::iter(objects.iter().cloned())
        .map(|d| {
            let backend = backend.clone();
            async move {
                backend
                    .put(&key_for(ObjectKind::Index, &d), d.clone(), sha256(&d))
                    .await
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<()>, _>>()
        .unwrap();
    let mut listed: Vec<ObjectKey> = backend
        .list(ObjectKind::Index)
        .await
        .unwrap()
        .into_iter()
        .map(|o| {
            assert_eq!(o.size, 16);
            o.key
        })
        .collect();
    listed.sort();
    let mut want: Vec<ObjectKey> = objects
        .iter()
        .map(|d| key_for(ObjectKind::Index, d))
        .collect();
    want.sort();
    assert_eq!(listed.len(), n as usize);
    assert_eq!(listed, want);
}

#[tokio::test]
async fn bad_credentials_are_a_clear_permanent_error() {
    let garage = Garage::start(1);
    let key = ObjectKey::config();
    let body = Bytes::from_static(b"x");

    // Right key id, wrong secret.
    let mut settings = garage.settings(1, "");
    settings.credentials = Some(S3Credentials {
        secret_access_key: "0".repeat(64),
        ..garage.credentials(1)
    });
    let backend = S3Backend::new(settings).await.unwrap();
    let started = Instant::now();
    match backend.put(&key, body.clone(), sha256(&body)).await {
        Err(Error::Storage {
            temporary, message, ..
        }) => {
            eprintln!("wrong secret: {message}");
            assert!(!temporary, "{message}");
            assert!(message.contains("HTTP 403"), "{message}");
            assert!(!message.contains(&"0".repeat(64)), "no secret in messages");
        }
        other => panic!("wrong secret: {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(10), "not retried");
    match backend.head(&key).await {
        Err(Error::Storage {
            temporary, message, ..
        }) => {
            assert!(!temporary);
            assert!(message.contains("HTTP 403"), "{message}");
        }
        other => panic!("head with a wrong secret must not say absent: {other:?}"),
    }
    match backend.list(ObjectKind::Pack).await {
        Err(Error::Storage {
            temporary, message, ..
        }) => {
            assert!(!temporary);
            assert!(
                message.contains("credentials") || message.contains("secret"),
                "{message}"
            );
        }
        other => panic!("list with a wrong secret: {other:?}"),
    }

    // Unknown key id.
    let mut settings = garage.settings(1, "");
    settings.credentials = Some(S3Credentials {
        access_key_id: "GK000000000000000000000000".into(),
        secret_access_key: "0".repeat(64),
        session_token: None,
    });
    let backend = S3Backend::new(settings).await.unwrap();
    match backend.get(&key).await {
        Err(Error::Storage {
            temporary, message, ..
        }) => {
            assert!(!temporary, "{message}");
            assert!(message.contains("HTTP 403"), "{message}");
        }
        other => panic!("unknown key id: {other:?}"),
    }

    // Missing bucket.
    let mut settings = garage.settings(1, "");
    settings.bucket = "no-such-bucket".into();
    let backend = S3Backend::new(settings).await.unwrap();
    match backend.put(&key, body.clone(), sha256(&body)).await {
        Err(Error::Storage {
            temporary, message, ..
        }) => {
            assert!(!temporary, "{message}");
        }
        other => panic!("missing bucket: {other:?}"),
    }
    // A missing bucket is an error, not a missing object.
    match backend.get(&key).await {
        Err(Error::Storage {
            temporary, message, ..
        }) => {
            assert!(!temporary, "{message}");
            assert!(message.contains("NoSuchBucket"), "{message}");
        }
        other => panic!("get from a missing bucket: {other:?}"),
    }
}

#[tokio::test]
async fn stopped_server_is_a_temporary_error_in_bounded_time() {
    let garage = Garage::start(1);
    let backend = open(&garage, "outage").await;
    let body = data(1000, 99);
    let key = key_for(ObjectKind::Snapshot, &body);
    backend
        .put(&key, body.clone(), sha256(&body))
        .await
        .unwrap();

    garage.stop_instance(1);
    // Default settings: 6 attempts with exponential backoff.
    let bound = Duration::from_secs(90);
    let started = Instant::now();
    let err = backend.get(&key).await.unwrap_err();
    let took = started.elapsed();
    assert!(err.is_temporary(), "server down must be temporary: {err}");
    assert!(took < bound, "took {took:?}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
    eprintln!("get with the server down failed after {took:?}: {err}");

    // Fewer attempts: faster, same kind of error, for every operation.
    let mut settings = garage.settings(1, "outage");
    settings.max_attempts = 2;
    let quick = S3Backend::new(settings).await.unwrap();
    let started = Instant::now();
    let head = quick.head(&key).await;
    assert!(
        matches!(&head, Err(e) if e.is_temporary()),
        "head with the server down is an error, not absent: {head:?}"
    );
    let put = quick.put(&key, body.clone(), sha256(&body)).await;
    assert!(matches!(&put, Err(e) if e.is_temporary()), "{put:?}");
    let list = quick.list(ObjectKind::Snapshot).await;
    assert!(matches!(&list, Err(e) if e.is_temporary()), "{list:?}");
    let del = quick.delete(&key).await;
    assert!(matches!(&del, Err(e) if e.is_temporary()), "{del:?}");
    assert!(started.elapsed() < bound);

    // Back up: the data survived the restart.
    garage.start_instance(1);
    assert_eq!(backend.get(&key).await.unwrap(), body);
}
