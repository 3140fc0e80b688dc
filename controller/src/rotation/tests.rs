use std::path::{Path, PathBuf};

use trireme_common::{
    BackupInput, BackupOptions, ChunkerParams, LocalKeyFile, Repository, RestoreOptions, Snapshot,
};

use super::*;
use crate::config::ControllerConfig;

struct Setup {
    dir: tempfile::TempDir,
    catalog: Catalog,
    locations: Vec<LocationConfig>,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let mut text = format!(
            "data_dir = \"{d}/data\"\nkey_file = \"{d}/k0\"\n[tls]\ndir = \"{d}/tls\"\nname = \"localhost\"\n",
            d = d.display()
        );
        for i in 1..=2 {
            text.push_str(&format!(
                "[[location]]\nname = \"loc{i}\"\nurl = \"file://{}/loc{i}\"\n",
                d.display()
            ));
        }
        let config = ControllerConfig::parse(&d.join("c.toml"), &text).unwrap();
        let catalog = Catalog::open(d.join("catalog")).unwrap();
        Setup {
            locations: config.locations,
            catalog,
            dir,
        }
    }

    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    fn key(&self, name: &str) -> DynKeyProvider {
        Arc::new(LocalKeyFile::create(&self.path(name)).unwrap())
    }

    fn backend(&self, i: usize) -> DynBackend {
        Arc::new(trireme_common::backend::FileBackend::new(
            self.path(&format!("loc{i}")),
        ))
    }

    async fn backup(
        &self,
        keys: DynKeyProvider,
        src: &Path,
        parent: Option<&Snapshot>,
    ) -> Snapshot {
        let repo = Arc::new(Repository::open(self.backend(1), keys).await.unwrap());
        let mut o = BackupOptions::new("files", "volume", "h");
        o.parent = parent.map(|p| p.id);
        o.pack_size = 64 * 1024;
        let s = repo
            .load_index()
            .await
            .unwrap()
            .backup(BackupInput::Tree(src.to_path_buf()), o)
            .await
            .unwrap();
        copy_dir(&self.path("loc1"), &self.path("loc2"));
        s
    }

    async fn restore(&self, keys: DynKeyProvider, i: usize, snap: &Snapshot, to: &str) -> Vec<u8> {
        let repo = Arc::new(Repository::open(self.backend(i), keys).await.unwrap());
        let snap = repo.read_snapshot(&snap.id).await.unwrap();
        let target = self.path(to);
        repo.load_index()
            .await
            .unwrap()
            .restore_to_dir(&snap, &target, &RestoreOptions::default())
            .await
            .unwrap();
        std::fs::read(target.join("f")).unwrap()
    }

    async fn rotate(
        &self,
        old: &DynKeyProvider,
        new: &DynKeyProvider,
        skip: &[String],
    ) -> Result<RotateReport> {
        rotate(RotateRequest {
            catalog: &self.catalog,
            locations: &self.locations,
            skip,
            old: old.clone(),
            new: new.clone(),
            who: "test".into(),
            now: Utc::now(),
        })
        .await
    }

    async fn verify(&self, keys: &DynKeyProvider) -> VerifyReport {
        verify(
            &self.catalog,
            &self.locations,
            keys.clone(),
            "test".into(),
            Utc::now(),
        )
        .await
        .unwrap()
    }
}

/// Copy the repository objects (not `audit/` or `keys/`) from one directory to another.
fn copy_dir(from: &Path, to: &Path) {
    for e in walkdir::WalkDir::new(from) {
        let e = e.unwrap();
        let rel = e.path().strip_prefix(from).unwrap();
        if rel.starts_with("keys") {
            continue;
        }
        let dst = to.join(rel);
        if e.file_type().is_dir() {
            std::fs::create_dir_all(&dst).unwrap();
        } else if !dst.exists() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}

async fn init(s: &Setup, k0: &DynKeyProvider) {
    Repository::init(s.backend(1), k0.clone(), ChunkerParams::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn rotations_rewrap_every_stored_key_and_the_second_supersedes_the_first() {
    let s = Setup::new();
    let (k0, k1, k2) = (s.key("k0"), s.key("k1"), s.key("k2"));
    init(&s, &k0).await;
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"first version").unwrap();
    let s1 = s.backup(k0.clone(), &src, None).await;
    std::fs::write(src.join("f"), b"second version").unwrap();
    let s2 = s.backup(k0.clone(), &src, Some(&s1)).await;
    // An MFA secret sealed under a data key of the old master key.
    let (_, mfa_key) = k0.generate().await.unwrap();
    s.catalog
        .mfa()
        .insert(
            &"op".to_string(),
            &crate::mfa::MfaRecord {
                wrapped_key: mfa_key.0.clone(),
                sealed_secret: Vec::new(),
                confirmed: true,
                created: Utc::now(),
                last_step: None,
            },
        )
        .unwrap();

    let r = s.rotate(&k0, &k1, &[]).await.unwrap();
    assert_eq!(r.written, ["loc1", "loc2"]);
    assert_eq!(r.mfa, 1);
    // The id key, two backups' data keys (packs and manifest) and index
    // keys (index objects), the MFA key.
    assert_eq!(r.entries, 6, "{r:?}");
    assert_eq!(
        r.table,
        format!("keys/table-{}", k1.master_key_id().unwrap())
    );
    assert!(s.path("loc2/keys").join(&r.table[5..]).exists());

    // The new key alone opens nothing old; with its table, everything.
    let err = Repository::open(s.backend(2), k1.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, trireme_common::Error::WrongKey(_)), "{err}");
    let eff: DynKeyProvider = Arc::new(
        effective(&s.catalog, &s.locations, k1.clone(), Utc::now())
            .await
            .unwrap(),
    );
    assert_eq!(s.restore(eff.clone(), 2, &s1, "r1").await, b"first version");
    assert!(eff.unwrap(&mfa_key).await.is_ok());
    // A fresh catalog (a disaster) finds the table at a location.
    let fresh = Catalog::open(s.path("fresh")).unwrap();
    let eff2 = effective(&fresh, &s.locations, k1.clone(), Utc::now())
        .await
        .unwrap();
    assert!(eff2.table().is_some());
    assert_eq!(fresh.key_tables().len(), 1);

    // Running it again is harmless.
    let again = s.rotate(&k0, &k1, &[]).await.unwrap();
    assert_eq!(again.entries, 6);
    let v = s.verify(&k1).await;
    assert!(v.ok(), "{v:?}");
    assert!(v.removed.is_empty());

    // A backup under the new key, then a second rotation.
    std::fs::write(src.join("f"), b"third version").unwrap();
    let s3 = s.backup(eff.clone(), &src, Some(&s2)).await;
    let r2 = s.rotate(&k1, &k2, &[]).await.unwrap();
    // The six carried over, and the third backup's data and index keys.
    assert_eq!(r2.entries, 8, "{r2:?}");
    assert_eq!(
        r2.supersedes,
        [format!("table-{}", k1.master_key_id().unwrap())]
    );
    let v = s.verify(&k2).await;
    assert!(v.ok(), "{v:?}");
    assert_eq!(v.removed.len(), 3, "{v:?}");
    assert!(!s.path("loc1/keys").join(&r.table[5..]).exists());
    let eff: DynKeyProvider = Arc::new(
        effective(&s.catalog, &s.locations, k2.clone(), Utc::now())
            .await
            .unwrap(),
    );
    assert_eq!(s.restore(eff.clone(), 2, &s1, "r2").await, b"first version");
    assert_eq!(s.restore(eff.clone(), 1, &s3, "r3").await, b"third version");
    // The first new key, its table gone, no longer opens the oldest keys.
    let v = s.verify(&k1).await;
    assert!(!v.ok(), "{v:?}");
}

#[tokio::test]
async fn rotation_refuses_unreachable_locations_and_tampered_tables_are_named() {
    let s = Setup::new();
    let (k0, k1) = (s.key("k0"), s.key("k1"));
    init(&s, &k0).await;
    let src = s.path("src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("f"), b"data").unwrap();
    s.backup(k0.clone(), &src, None).await;

    let err = s.rotate(&k0, &k0, &[]).await.unwrap_err().to_string();
    assert!(err.contains("both configurations use master key"), "{err}");
    let err = s
        .rotate(&k0, &k1, &["nope".into()])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("no location \"nope\""), "{err}");

    // loc2 is away (its path is not a directory): refused, named.
    std::fs::rename(s.path("loc2"), s.path("loc2.away")).unwrap();
    std::fs::write(s.path("loc2"), b"not a directory").unwrap();
    let err = s.rotate(&k0, &k1, &[]).await.unwrap_err().to_string();
    assert!(
        err.contains("location loc2") && err.contains("--skip-location loc2"),
        "{err}"
    );
    assert!(s.catalog.key_tables().is_empty());
    // Left out explicitly: done, and said so.
    let r = s.rotate(&k0, &k1, &["loc2".into()]).await.unwrap();
    assert_eq!(r.written, ["loc1"]);
    assert_eq!(r.skipped, ["loc2"]);
    // Back: verify writes the table there and checks every key.
    std::fs::remove_file(s.path("loc2")).unwrap();
    std::fs::rename(s.path("loc2.away"), s.path("loc2")).unwrap();
    let v = s.verify(&k1).await;
    assert!(v.ok(), "{v:?}");
    assert!(v.locations[1].table_written, "{v:?}");

    // A tampered table: named when loaded.
    let name = format!("table-{}", k1.master_key_id().unwrap());
    let p = s.path("loc1/keys").join(&name);
    let mut bytes = std::fs::read(&p).unwrap();
    let at = bytes.len() - 40;
    bytes[at] ^= 0x55;
    std::fs::write(&p, &bytes).unwrap();
    let err = table_at(&s.backend(1), k1.as_ref())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("keys/{name}")) && err.contains("MAC"),
        "{err}"
    );
    let v = s.verify(&k1).await;
    assert!(!v.ok());
    assert!(
        v.locations[0].problems.iter().any(|p| p.contains(&name)),
        "{v:?}"
    );
    // The controller (a fresh catalog) skips it for another location's good copy.
    let fresh = Catalog::open(s.path("fresh")).unwrap();
    let eff = effective(&fresh, &s.locations, k1.clone(), Utc::now())
        .await
        .unwrap();
    assert!(eff.table().is_some());
}
