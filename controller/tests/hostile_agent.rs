//! A hostile agent: a client holding a real, valid agent certificate that
//! speaks the Session protocol itself and does what a compromised host
//! could try. Each attack is refused, audited, and the victim's newest
//! snapshot still restores byte for byte (checked from the location alone
//! with the agent's local mode and the master key, not through the
//! controller).

mod support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::Value;
use support::fleet::{make_data, wait_for, AgentSpec, Fleet};
use support::session::Session;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use trireme_common::attribution::Attribution;
use trireme_common::backend::{ObjectKey, ObjectKind};
use trireme_common::crypto::DataKey;
use trireme_common::format::{seal_object, sealed_object_key, INDEX_MAGIC, SNAPSHOT_MAGIC};
use trireme_common::{
    BackupInput, BackupOptions, ContentKind, Error as CommonError, Id, KeyProvider, Location,
    Repository, SnapshotManifest, Summary, WrappedKey,
};
use trireme_proto::v1::key_service_client::KeyServiceClient;
use trireme_proto::v1::{GenerateDataKeyRequest, JobAssignment, JobKeysRequest, JobResult};
use trireme_testkit::tree;

/// The keys the key service hands one job, as a key provider: what a
/// compromised agent can do with them.
#[derive(Debug)]
struct JobKeys {
    client: Mutex<KeyServiceClient<Channel>>,
    job: String,
    granted: HashMap<WrappedKey, [u8; 32]>,
    /// The job's attribution key: what it signs its own objects with.
    attribution: Attribution,
    /// What the job may load of the index.
    limits: trireme_common::IndexLimits,
    /// Data keys generated ahead (a slow agent has its keys before the
    /// controller gives its job up).
    ahead: std::sync::Mutex<Vec<(DataKey, WrappedKey)>>,
}

impl JobKeys {
    async fn fetch(channel: Channel, job: &str) -> JobKeys {
        let mut client = KeyServiceClient::new(channel);
        let reply = client
            .job_keys(JobKeysRequest { job_id: job.into() })
            .await
            .unwrap()
            .into_inner();
        let uuid = uuid::Uuid::parse_str(job).unwrap();
        let limits = trireme_common::IndexLimits {
            objects: reply
                .index_limited
                .then(|| reply.index_objects.iter().cloned().collect()),
            packs: reply.packs_limited.then(|| {
                reply
                    .packs
                    .iter()
                    .map(|p| Id(p.as_slice().try_into().unwrap()))
                    .collect()
            }),
        };
        JobKeys {
            limits,
            ahead: std::sync::Mutex::new(Vec::new()),
            attribution: Attribution {
                job: *uuid.as_bytes(),
                agent: "web-2".into(),
                key: reply.attribution_key.as_slice().try_into().unwrap(),
            },
            client: Mutex::new(client),
            job: job.into(),
            granted: reply
                .keys
                .into_iter()
                .map(|p| {
                    (
                        WrappedKey(p.wrapped_key),
                        p.data_key.as_slice().try_into().unwrap(),
                    )
                })
                .collect(),
        }
    }
}

impl JobKeys {
    /// Generate `n` data keys now, to use later.
    async fn prefetch(&self, n: usize) {
        for _ in 0..n {
            let k = self.generate_now().await.unwrap();
            self.ahead.lock().unwrap().push(k);
        }
    }

    /// A new data key from the key service.
    async fn generate_now(&self) -> trireme_common::Result<(DataKey, WrappedKey)> {
        let r = self
            .client
            .lock()
            .await
            .generate_data_key(GenerateDataKeyRequest {
                job_id: self.job.clone(),
            })
            .await
            .map_err(|s| CommonError::Key(s.message().to_string()))?
            .into_inner();
        Ok((
            DataKey::from_bytes(r.data_key.as_slice().try_into().unwrap()),
            WrappedKey(r.wrapped_key),
        ))
    }
}

#[async_trait]
impl KeyProvider for JobKeys {
    async fn generate(&self) -> trireme_common::Result<(DataKey, WrappedKey)> {
        if let Some(k) = self.ahead.lock().unwrap().pop() {
            return Ok(k);
        }
        self.generate_now().await
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> trireme_common::Result<DataKey> {
        self.granted
            .get(wrapped)
            .map(|k| DataKey::from_bytes(*k))
            .ok_or_else(|| CommonError::Key("not granted to this job".into()))
    }

    async fn wrap(&self, _: &DataKey) -> trireme_common::Result<WrappedKey> {
        Err(CommonError::Key("agents cannot wrap".into()))
    }
}

/// Queue a backup of web-2/uploads and take its assignment on the hostile
/// session: the job id and the assignment.
async fn start_job(f: &Fleet, hostile: &mut Session) -> (String, JobAssignment) {
    let job = f.cli_json(&["backup", "run", "web-2/uploads"]);
    let id = job["id"].as_str().unwrap().to_string();
    let a = hostile.next_job().await;
    assert_eq!(a.job_id, id, "the job just queued");
    (id, a)
}

fn wait_job(f: &Fleet, id: &str, states: &[&str]) -> Value {
    support::fleet::wait_for(
        &format!("job {id} in {states:?}"),
        Duration::from_secs(60),
        || {
            let j = f.cli_json(&["jobs", "show", id]);
            states.iter().any(|s| j["state"] == *s).then_some(j)
        },
    )
}

fn snapshot_ids(f: &Fleet, source: &str) -> Vec<String> {
    f.cli_json(&["snapshots", "ls", source])
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

/// A victim `web-1/uploads` with one verified backup, and a hostile
/// `web-2` session registering `web-2/uploads`. Returns the victim's
/// snapshot id.
async fn victim_and_attacker(f: &mut Fleet, data: &std::path::Path) -> (String, Session) {
    make_data(data, 4, 300_000, 21);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "uploads", data));
    f.wait_connected(&["web-1"]);
    let out = f.cli(&["backup", "run", "web-1/uploads", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let victim = snapshot_ids(f, "web-1/uploads").pop().unwrap();
    let hostile = Session::open(f, "web-2", "uploads", Vec::new()).await;
    f.wait_connected(&["web-1", "web-2"]);
    (victim, hostile)
}

/// The victim's snapshot restores byte for byte from the primary location
/// alone (local mode, master key): nothing the attacker did touched it.
fn victim_restores(f: &Fleet, victim: &str, data: &std::path::Path, n: usize) {
    let target = f.dir.join(format!("victim-restore-{n}"));
    let restored = f.restore_alone(&f.locations[0], &victim[..16], &target);
    assert_eq!(
        restored,
        tree(data),
        "the victim's snapshot restores byte for byte"
    );
}

fn audit_text(f: &Fleet) -> String {
    let out = f.cli_as("op", &["audit", "ls", "--json", "--limit", "1000"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn manifest(source: &str, host: &str, started_ns: i64, tree: Vec<Id>) -> SnapshotManifest {
    SnapshotManifest {
        source: source.into(),
        source_kind: "volume".into(),
        host: host.into(),
        started_ns,
        finished_ns: started_ns + 1_000_000,
        parent: None,
        content: ContentKind::Tree,
        tree,
        position: Default::default(),
        tags: Vec::new(),
        summary: Summary::default(),
        job: None,
        mac: None,
    }
}

fn now_ns() -> i64 {
    chrono::Utc::now().timestamp_nanos_opt().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_claim_another_hosts_snapshot() {
    let mut f = Fleet::new();
    let data = f.dir.join("web-1-uploads");
    let (victim, mut hostile) = victim_and_attacker(&mut f, &data).await;

    // web-2 takes a backup job and reports web-1's snapshot as its result,
    // with a far-future time (which would make it its own parent).
    let (job_id, _) = start_job(&f, &mut hostile).await;
    hostile
        .report(JobResult {
            job_id: job_id.clone(),
            ok: true,
            snapshot_id: victim.clone(),
            snapshot_time_ns: 4_102_444_800_000_000_000, // 2100-01-01
            location: "loc1".into(),
            ..Default::default()
        })
        .await;
    let j = wait_job(&f, &job_id, &["failed"]);
    let reason = j["error"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.contains("sealed with a key generated for job") && reason.contains("web-1/uploads"),
        "{j:#}"
    );
    assert!(
        snapshot_ids(&f, "web-2/uploads").is_empty(),
        "nothing recorded for web-2"
    );
    let shown = f.cli_json(&["snapshots", "show", &victim[..16]]);
    assert_eq!(shown["source"]["agent"], "web-1", "{shown:#}");
    let audit = audit_text(&f);
    assert!(
        audit.contains("backup result") && audit.contains("not recorded"),
        "the refusal is audited: {audit}"
    );
    victim_restores(&f, &victim, &data, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_cannot_record_a_manifest_of_its_own_that_is_false() {
    let mut f = Fleet::new();
    let data = f.dir.join("web-1-uploads");
    let (victim, mut hostile) = victim_and_attacker(&mut f, &data).await;
    let backend = Location::parse(&f.locations[0])
        .unwrap()
        .open()
        .await
        .unwrap();

    // (1) A manifest sealed with the job's own key but dated 1970: the
    // time would drop it (or, claimed as another's, a victim) out of
    // retention.
    let (job_id, a) = start_job(&f, &mut hostile).await;
    let keys = Arc::new(JobKeys::fetch(hostile.channel.clone(), &a.job_id).await);
    let repo = Repository::open(backend.clone(), keys.clone())
        .await
        .unwrap();
    repo.set_attribution(keys.attribution.clone());
    let session = repo.new_session_key().await.unwrap();
    let (old, _) = repo
        .write_snapshot(
            &session,
            &manifest("uploads", "web-2", 1_000_000_000, Vec::new()),
        )
        .await
        .unwrap();
    hostile.report(ok_result(&job_id, &old)).await;
    let j = wait_job(&f, &job_id, &["failed"]);
    let reason = j["error"].as_str().unwrap_or_default();
    assert!(reason.contains("outside the job's run"), "{j:#}");

    // (2) A manifest of its own source whose tree is web-1's chunks (read
    // from the index objects a backup is given): recording it would put
    // web-1's pack keys into web-2's restore scope.
    let (job_id, a) = start_job(&f, &mut hostile).await;
    let keys = Arc::new(JobKeys::fetch(hostile.channel.clone(), &a.job_id).await);
    let repo = Arc::new(
        Repository::open(backend.clone(), keys.clone())
            .await
            .unwrap(),
    );
    repo.set_attribution(keys.attribution.clone());
    // Every chunk id is in the index objects a backup is given; which of
    // them form web-1's tree stream the test reads with the master key
    // (an attacker would try the last chunks of web-1's last pack).
    let any_chunk = {
        let mut ids = Vec::new();
        for o in backend.list(ObjectKind::Index).await.unwrap() {
            if let Ok(ix) = repo.read_index(&o.key).await {
                ids.extend(ix.packs.iter().flat_map(|p| p.blobs.iter().map(|b| b.id)));
            }
        }
        ids
    };
    assert!(
        !any_chunk.is_empty(),
        "a backup's keys open the index objects"
    );
    let master = Arc::new(trireme_common::LocalKeyFile::load(&f.dir.join("master.key")).unwrap());
    let stolen = Repository::open(backend.clone(), master)
        .await
        .unwrap()
        .read_snapshot(&Id::from_hex(&victim).unwrap())
        .await
        .unwrap()
        .manifest
        .tree;
    assert!(stolen.iter().all(|c| any_chunk.contains(c)));
    let session = repo.new_session_key().await.unwrap();
    let (forged, _) = repo
        .write_snapshot(&session, &manifest("uploads", "web-2", now_ns(), stolen))
        .await
        .unwrap();
    hostile.report(ok_result(&job_id, &forged)).await;
    let j = wait_job(&f, &job_id, &["failed"]);
    let reason = j["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("packs no job of agent web-2 wrote"),
        "{j:#}"
    );
    assert!(snapshot_ids(&f, "web-2/uploads").is_empty());
    assert!(
        backend
            .head(&ObjectKey::new(ObjectKind::Snapshot, forged.to_hex()))
            .await
            .unwrap()
            .is_some(),
        "the forged manifest is at the location, but not in the catalog"
    );
    victim_restores(&f, &victim, &data, 2);
}

/// Write `bytes` at `key` in a `file://` location, as an agent with write
/// access to the location can.
fn plant(dir: &std::path::Path, key: &str, bytes: &[u8]) {
    let p = dir.join(key);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Restore `snap` through the controller onto web-1 and compare.
fn fleet_restore(f: &Fleet, snap: &str, data: &std::path::Path, n: usize) {
    let target = f.dir.join(format!("fleet-restore-{n}"));
    let job = f.cli_json(&[
        "restore",
        &snap[..16],
        "--to",
        &format!("web-1:{}", target.display()),
    ]);
    let j = wait_job(f, job["id"].as_str().unwrap(), &["succeeded", "failed"]);
    assert_eq!(j["state"], "succeeded", "{j:#}");
    assert_eq!(tree(&target), tree(data), "restored through the controller");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_forged_index_object_deletes_nothing_and_misleads_no_restore() {
    let mut f = Fleet::new();
    let data = f.dir.join("web-1-uploads");
    let (first, mut hostile) = victim_and_attacker(&mut f, &data).await;
    // A second backup of web-1 (one file changed): prune removes the first.
    std::fs::write(data.join("d0/changed.bin"), vec![5u8; 200_000]).unwrap();
    let out = f.cli(&["backup", "run", "web-1/uploads", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let victim = snapshot_ids(&f, "web-1/uploads")
        .into_iter()
        .find(|s| *s != first)
        .unwrap();
    let loc1 = std::path::PathBuf::from(f.locations[0].trim_start_matches("file://"));

    // web-2, during a backup job of its own, reads the index objects it is
    // given and plants, at every location, index objects that list each of
    // web-1's packs with no chunks: sealed with web-1's own index key (it
    // holds it), and one attributed to its own job.
    let (job_id, a) = start_job(&f, &mut hostile).await;
    let keys = Arc::new(JobKeys::fetch(hostile.channel.clone(), &a.job_id).await);
    let backend = Location::parse(&f.locations[0])
        .unwrap()
        .open()
        .await
        .unwrap();
    let repo = Repository::open(backend.clone(), keys.clone())
        .await
        .unwrap();
    let mut planted = Vec::new();
    for o in backend.list(ObjectKind::Index).await.unwrap() {
        let raw = std::fs::read(loc1.join(o.key.path())).unwrap();
        let (wrapped, _) = sealed_object_key(&o.key.path(), &raw, INDEX_MAGIC).unwrap();
        let Some(k) = keys.granted.get(&wrapped) else {
            continue;
        };
        let real = repo.read_index(&o.key).await.unwrap();
        let mut forged = trireme_common::index::IndexFile::default();
        for p in &real.packs {
            let mut empty = p.clone();
            empty.blobs.clear();
            forged.packs.push(empty);
        }
        let sealed = seal_object(INDEX_MAGIC, &DataKey::from_bytes(*k), &wrapped, &forged);
        planted.push(sealed);
        // The same claims, attributed to web-2's own job.
        use trireme_common::attribution::Attributable;
        forged.attribute(&keys.attribution);
        planted.push(seal_object(
            INDEX_MAGIC,
            &DataKey::from_bytes(*k),
            &wrapped,
            &forged,
        ));
    }
    assert!(
        !planted.is_empty(),
        "web-2 could seal with web-1's index keys"
    );
    for i in 1..=3 {
        let dir = std::path::PathBuf::from(f.locations[i - 1].trim_start_matches("file://"));
        for bytes in &planted {
            let name = hex::encode(trireme_common::crypto::sha256(bytes));
            plant(&dir, &format!("index/{name}"), bytes);
        }
    }
    hostile
        .report(JobResult {
            job_id: job_id.clone(),
            ok: false,
            error_message: "gave up".into(),
            ..Default::default()
        })
        .await;
    wait_job(&f, &job_id, &["failed"]);

    // verify reports them (audited), and leaves them in place.
    let out = f.cli_as("op", &["verify"]);
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("not attributed to a job the controller checked"),
        "{text}"
    );
    assert!(audit_text(&f).contains("unattributed object"));

    // Retention keeps one snapshot: prune removes the first, and deletes
    // none of the packs the newest needs, whatever the forged claims say.
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"web-1/uploads\"\nschedule = \"0 0 1 1 *\"\nretention = \"one\"\n\n[retention.one]\nkeep_last = 1\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let done = f.cli_json(&["prune"]);
    assert_eq!(done["dry_run"], false, "{done}");
    assert!(
        snapshot_ids(&f, "web-1/uploads") == vec![victim.clone()],
        "{done}"
    );
    victim_restores(&f, &victim, &data, 3);
    fleet_restore(&f, &victim, &data, 3);
    for bytes in &planted {
        let name = hex::encode(trireme_common::crypto::sha256(bytes));
        assert!(
            loc1.join("index").join(&name).exists(),
            "a planted object is left in place"
        );
    }
}

/// A key table as `docs/format.md` §3.5 lays it out, MAC'd with `mac_key`
/// (whose wrapped form is `mac_wrapped`): one entry mapping `from` to `to`.
fn forged_table(
    key_id: &str,
    mac_wrapped: &[u8],
    mac_key: &[u8; 32],
    from: &[u8],
    to: &[u8],
) -> Vec<u8> {
    let mut out = b"TRKT".to_vec();
    out.push(1);
    out.extend_from_slice(&chrono::Utc::now().timestamp().to_le_bytes());
    out.push(key_id.len() as u8);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(&(mac_wrapped.len() as u16).to_le_bytes());
    out.extend_from_slice(mac_wrapped);
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&trireme_common::crypto::sha256(from));
    out.extend_from_slice(&(to.len() as u16).to_le_bytes());
    out.extend_from_slice(to);
    let mac = blake3::keyed_hash(
        &blake3::derive_key("trireme key table mac v1", mac_key),
        &out,
    );
    out.extend_from_slice(mac.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_planted_key_table_and_a_rewritten_config_are_refused() {
    let mut f = Fleet::new();
    let data = f.dir.join("web-1-uploads");
    let (victim, mut hostile) = victim_and_attacker(&mut f, &data).await;
    let (job_id, a) = start_job(&f, &mut hostile).await;
    let keys = Arc::new(JobKeys::fetch(hostile.channel.clone(), &a.job_id).await);

    // A key table named for the master key, MAC'd with a data key the
    // agent got from GenerateDataKey, remapping web-1's manifest key to
    // another data key: before controller keys, it verified.
    let (mac_key, mac_wrapped) = keys.generate().await.unwrap();
    let (_, other) = keys.generate().await.unwrap();
    let loc1 = std::path::PathBuf::from(f.locations[0].trim_start_matches("file://"));
    let raw = std::fs::read(loc1.join("snapshots").join(&victim)).unwrap();
    let victim_key = sealed_object_key(&victim, &raw, SNAPSHOT_MAGIC)
        .unwrap()
        .0
         .0;
    let key_id = trireme_common::LocalKeyFile::load(&f.dir.join("master.key"))
        .unwrap()
        .key_id();
    let table = forged_table(
        &key_id,
        &mac_wrapped.0,
        mac_key.as_bytes(),
        &victim_key,
        &other.0,
    );

    // And a config of its own (a new repository id and id key, with a
    // valid id-key MAC, no controller MAC).
    let cfg_bytes = std::fs::read(loc1.join("config")).unwrap();
    let mut cfg = trireme_common::format::RepoConfig::decode(&cfg_bytes).unwrap();
    let (id_key, id_wrapped) = keys.generate().await.unwrap();
    cfg.id = uuid::Uuid::new_v4();
    cfg.id_key = id_wrapped.0.clone();
    cfg.controller_key = None;
    cfg.controller_mac = None;
    cfg.mac = cfg.compute_mac(id_key.as_bytes());
    let forged_cfg = cfg.encode();
    for i in 1..=3 {
        let dir = std::path::PathBuf::from(f.locations[i - 1].trim_start_matches("file://"));
        plant(&dir, &format!("keys/table-{key_id}"), &table);
        plant(&dir, "config", &forged_cfg);
    }
    hostile
        .report(JobResult {
            job_id: job_id.clone(),
            ok: false,
            error_message: "gave up".into(),
            ..Default::default()
        })
        .await;
    wait_job(&f, &job_id, &["failed"]);

    // The controller puts the authentic config back (audited) within a
    // replication pass, and a restart neither refuses to start nor uses
    // the table.
    wait_for("the config put back", Duration::from_secs(30), || {
        (std::fs::read(loc1.join("config")).unwrap() == cfg_bytes).then_some(())
    });
    assert!(audit_text(&f).contains("config repaired"));
    f.stop_controller();
    for i in 1..=3 {
        let dir = std::path::PathBuf::from(f.locations[i - 1].trim_start_matches("file://"));
        plant(&dir, "config", &forged_cfg);
    }
    f.start_controller();
    f.wait_connected(&["web-1"]);
    let log = Fleet::log_text(&f.controller_log());
    assert!(log.contains("refused a key table"), "{log}");
    assert!(log.contains("not a controller key"), "{log}");
    for i in 1..=3 {
        let dir = std::path::PathBuf::from(f.locations[i - 1].trim_start_matches("file://"));
        assert_eq!(
            std::fs::read(dir.join("config")).unwrap(),
            cfg_bytes,
            "loc{i}"
        );
    }
    let audit = audit_text(&f);
    assert!(
        audit.contains("key table refused") && audit.contains("config repaired"),
        "{audit}"
    );
    victim_restores(&f, &victim, &data, 4);
    fleet_restore(&f, &victim, &data, 4);
    // A new backup of web-1 works on the authentic config.
    let out = f.cli(&["backup", "run", "web-1/uploads", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
}

/// A backup of `dir` as a real agent makes it, through the engine, with
/// the keys and limits the controller hands the job: what an honest (but
/// slow) agent writes.
async fn engine_backup(
    f: &Fleet,
    hostile: &Session,
    job: &str,
) -> (
    Arc<trireme_common::IndexedRepo>,
    BackupOptions,
    Arc<JobKeys>,
) {
    let keys = Arc::new(JobKeys::fetch(hostile.channel.clone(), job).await);
    let backend = Location::parse(&f.locations[0])
        .unwrap()
        .open()
        .await
        .unwrap();
    let repo = Repository::open(backend, keys.clone()).await.unwrap();
    repo.set_attribution(keys.attribution.clone());
    let repo = Arc::new(repo);
    let granted = keys.granted.keys().cloned().collect();
    let indexed = repo
        .load_index_limited(&granted, &keys.limits)
        .await
        .unwrap();
    (
        Arc::new(indexed),
        BackupOptions::new("uploads", "volume", "web-2"),
        keys,
    )
}

/// A backup job of web-2 run to the end by the engine and reported, as an
/// honest agent does; the snapshot it recorded.
async fn honest_backup(f: &Fleet, hostile: &mut Session, dir: &std::path::Path) -> Id {
    let (id, a) = start_job(f, hostile).await;
    let (indexed, opts, _) = engine_backup(f, hostile, &a.job_id).await;
    let snap = indexed
        .backup(BackupInput::Tree(dir.to_path_buf()), opts)
        .await
        .unwrap();
    hostile.report(ok_result(&id, &snap.id)).await;
    assert_eq!(
        wait_job(f, &id, &["succeeded", "failed"])["state"],
        "succeeded"
    );
    snap.id
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_result_whose_packs_were_pruned_is_not_recorded() {
    let mut f = Fleet::new();
    let data = f.dir.join("web-1-uploads");
    let (_, mut hostile) = victim_and_attacker(&mut f, &data).await;
    let mine = f.dir.join("web-2-uploads");
    make_data(&mine, 3, 200_000, 31);

    // web-2's first backup, recorded.
    honest_backup(&f, &mut hostile, &mine).await;

    // A second job loads the index (web-2's first packs in it), then is
    // slow: the controller gives it up (cancelled).
    let (j2, a) = start_job(&f, &mut hostile).await;
    let (slow, opts2, slow_keys) = engine_backup(&f, &hostile, &a.job_id).await;
    slow_keys.prefetch(2).await;
    f.cli(&["jobs", "cancel", &j2]);
    wait_job(&f, &j2, &["cancelled"]);

    // A third backup with other data, recorded; retention keeps one, and
    // prune removes the first snapshot and its packs.
    let other = f.dir.join("web-2-other");
    make_data(&other, 2, 150_000, 32);
    let s3 = honest_backup(&f, &mut hostile, &other).await;
    // (Retention also keeps the newest snapshot verified everywhere: wait
    // until that is the third.)
    support::fleet::wait_verified(&f, &s3.to_hex(), 3, Duration::from_secs(60));
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"web-2/uploads\"\nschedule = \"0 0 1 1 *\"\nretention = \"one\"\n\n[retention.one]\nkeep_last = 1\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    let done = f.cli_json(&["prune"]);
    assert_eq!(
        snapshot_ids(&f, "web-2/uploads"),
        vec![s3.to_hex()],
        "{done}"
    );

    // The slow job now finishes: its manifest references the first
    // snapshot's chunks (deduplicated against the index it loaded), whose
    // packs are gone. Its late result is refused, and nothing in the
    // catalog fails to restore.
    let s2 = slow
        .backup(BackupInput::Tree(mine.clone()), opts2)
        .await
        .unwrap();
    assert_eq!(
        s2.manifest.summary.new_chunks, 0,
        "the slow job deduplicated against the first snapshot's packs"
    );
    hostile.report(ok_result(&j2, &s2.id)).await;
    let audit = wait_for("the late result refused", Duration::from_secs(30), || {
        let a = audit_text(&f);
        a.contains(&format!("job {j2}")).then_some(a)
    });
    // (Prune removed the packs and the index objects that listed them: the
    // chunks are in no believed index any more.)
    let line = audit
        .lines()
        .find(|l| l.contains(&format!("job {j2}")) && l.contains("not recorded"))
        .unwrap_or_else(|| panic!("no refusal of job {j2}: {audit}"));
    assert!(
        line.contains("is in no index") || line.contains("not at the location"),
        "{line}"
    );
    assert_eq!(wait_job(&f, &j2, &["cancelled"])["state"], "cancelled");
    assert_eq!(snapshot_ids(&f, "web-2/uploads"), vec![s3.to_hex()]);
    for id in snapshot_ids(&f, "web-2/uploads")
        .into_iter()
        .chain(snapshot_ids(&f, "web-1/uploads"))
    {
        let target = f.dir.join(format!("late-{}", &id[..8]));
        f.restore_alone(&f.locations[0], &id[..16], &target);
    }
}

fn ok_result(job: &str, snap: &Id) -> JobResult {
    JobResult {
        job_id: job.into(),
        ok: true,
        snapshot_id: snap.to_hex(),
        location: "loc1".into(),
        ..Default::default()
    }
}
