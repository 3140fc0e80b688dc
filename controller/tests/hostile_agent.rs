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
use support::fleet::{make_data, tree, AgentSpec, Fleet};
use tokio::sync::{mpsc, Mutex};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use trireme_common::attribution::Attribution;
use trireme_common::backend::{ObjectKey, ObjectKind};
use trireme_common::crypto::DataKey;
use trireme_common::tls::{client_config, connect, ClientTls, Role, TlsFiles};
use trireme_common::{
    ContentKind, Error as CommonError, Id, KeyProvider, Location, Repository, SnapshotManifest,
    Summary, WrappedKey,
};
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::agent_service_client::AgentServiceClient;
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::key_service_client::KeyServiceClient;
use trireme_proto::v1::{
    AgentMessage, GenerateDataKeyRequest, Hello, JobAssignment, JobKeysRequest, JobResult,
    SourceInfo,
};

fn tls_for(f: &Fleet, name: &str) -> ClientTls {
    let files = TlsFiles::in_dir(&f.ca, name);
    ClientTls {
        config: Arc::new(client_config(&files).unwrap()),
        server_name: "localhost".into(),
        server_role: Some(Role::Controller),
    }
}

/// One hostile Session: it registers `source` and answers jobs as it likes.
struct Hostile {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<trireme_proto::v1::ControllerMessage>,
    channel: Channel,
}

impl Hostile {
    async fn connect(f: &Fleet, name: &str, source: &str) -> Hostile {
        if !f.ca.join(format!("{name}.pem")).exists() {
            trireme_common::tls::ca::issue(&f.ca, Role::Agent, name, 30, &f.ca).unwrap();
        }
        let channel = connect(&f.addr().to_string(), tls_for(f, name))
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(16);
        tx.send(AgentMessage {
            msg: Some(AgentMsg::Hello(Hello {
                agent_name: name.into(),
                agent_version: "hostile".into(),
                hostname: name.into(),
                sources: vec![SourceInfo {
                    name: source.into(),
                    kind: "volume".into(),
                    details: HashMap::new(),
                }],
                max_concurrent_jobs: 1,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let rx = AgentServiceClient::new(channel.clone())
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Hostile { tx, rx, channel }
    }

    async fn next_job(&mut self) -> JobAssignment {
        let wait = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                match self.rx.message().await.unwrap().and_then(|m| m.msg) {
                    Some(CtlMsg::Assign(a)) => return a,
                    Some(_) => continue,
                    None => panic!("the session ended before a job came"),
                }
            }
        });
        wait.await.expect("a job within 60 s")
    }

    async fn report(&self, r: JobResult) {
        self.tx
            .send(AgentMessage {
                msg: Some(AgentMsg::Result(r)),
            })
            .await
            .unwrap();
    }
}

/// The keys the key service hands one job, as a key provider: what a
/// compromised agent can do with them.
#[derive(Debug)]
struct JobKeys {
    client: Mutex<KeyServiceClient<Channel>>,
    job: String,
    granted: HashMap<WrappedKey, [u8; 32]>,
    /// The job's attribution key: what it signs its own objects with.
    attribution: Attribution,
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
        JobKeys {
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

#[async_trait]
impl KeyProvider for JobKeys {
    async fn generate(&self) -> trireme_common::Result<(DataKey, WrappedKey)> {
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
async fn victim_and_attacker(f: &mut Fleet, data: &std::path::Path) -> (String, Hostile) {
    make_data(data, 4, 300_000, 21);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "uploads", data));
    f.wait_connected(&["web-1"]);
    let out = f.cli(&["backup", "run", "web-1/uploads", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let victim = snapshot_ids(f, "web-1/uploads").pop().unwrap();
    let hostile = Hostile::connect(f, "web-2", "uploads").await;
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
    let job = f.cli_json(&["backup", "run", "web-2/uploads"]);
    let job_id = job["id"].as_str().unwrap().to_string();
    let a = hostile.next_job().await;
    assert_eq!(a.job_id, job_id);
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
    let job = f.cli_json(&["backup", "run", "web-2/uploads"]);
    let job_id = job["id"].as_str().unwrap().to_string();
    let a = hostile.next_job().await;
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
    hostile
        .report(JobResult {
            job_id: job_id.clone(),
            ok: true,
            snapshot_id: old.to_hex(),
            location: "loc1".into(),
            ..Default::default()
        })
        .await;
    let j = wait_job(&f, &job_id, &["failed"]);
    let reason = j["error"].as_str().unwrap_or_default();
    assert!(reason.contains("outside the job's run"), "{j:#}");

    // (2) A manifest of its own source whose tree is web-1's chunks (read
    // from the index objects a backup is given): recording it would put
    // web-1's pack keys into web-2's restore scope.
    let job = f.cli_json(&["backup", "run", "web-2/uploads"]);
    let job_id = job["id"].as_str().unwrap().to_string();
    let a = hostile.next_job().await;
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
    hostile
        .report(JobResult {
            job_id: job_id.clone(),
            ok: true,
            snapshot_id: forged.to_hex(),
            location: "loc1".into(),
            ..Default::default()
        })
        .await;
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
