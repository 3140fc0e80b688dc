//! Key scopes, end to end: a real controller and real agents. An agent
//! certificate gets the keys of the job it runs and nothing else: a restore
//! exactly the keys of its snapshot, a backup the index keys and its
//! parent's. Requests outside are refused, audited, and the jobs still run.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::fleet::{make_data, AgentSpec, Fleet};
use trireme_net::tls::{client_config, connect, ClientTls, Role, TlsFiles};
use trireme_proto::v1::key_service_client::KeyServiceClient;
use trireme_proto::v1::{JobKeysRequest, UnwrapDataKeysRequest};
use trireme_testkit::tree;

/// The wrapped key in a snapshot manifest's header, read from a file://
/// location (docs/format.md §5: magic, version, u16 LE length, key).
fn manifest_key(loc: &Path, snap: &str) -> Vec<u8> {
    let bytes = std::fs::read(loc.join("snapshots").join(snap)).unwrap();
    assert_eq!(&bytes[..4], b"TRSN");
    let w = u16::from_le_bytes([bytes[5], bytes[6]]) as usize;
    bytes[7..7 + w].to_vec()
}

/// A key service client presenting agent `name`'s certificate.
async fn key_client(f: &Fleet, name: &str) -> KeyServiceClient<tonic::transport::Channel> {
    let files = TlsFiles::in_dir(&f.ca, name);
    let tls = ClientTls {
        config: Arc::new(client_config(&files).unwrap()),
        server_name: "localhost".into(),
        server_role: Some(Role::Controller),
    };
    KeyServiceClient::new(connect(&f.addr().to_string(), tls).await.unwrap())
}

/// Stop or continue an agent process (its job then waits, still assigned).
fn signal(f: &Fleet, agent: &str, sig: &str) {
    let pid = f.agents[agent].id().to_string();
    let st = Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(st.success(), "kill {sig} {pid}");
}

fn wait_state(f: &Fleet, id: &str, states: &[&str]) -> Value {
    let t = std::time::Instant::now();
    loop {
        let last = f.cli_json(&["jobs", "show", id]);
        if states.iter().any(|s| last["state"] == *s) {
            return last;
        }
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "job {id} is not {states:?} after 90s: {last:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn snapshot_ids(f: &Fleet, source: &str) -> Vec<String> {
    let v = f.cli_json(&["snapshots", "ls", source]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_agent_gets_only_the_keys_of_the_job_it_runs() {
    let mut f = Fleet::new();
    let a = f.dir.join("data-a");
    make_data(&a, 4, 200_000, 11);
    let b = f.dir.join("data-b");
    make_data(&b, 3, 100_000, 12);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("db-1", "a", &a));
    f.start_agent(&AgentSpec::volume("db-2", "b", &b));
    f.wait_connected(&["db-1", "db-2"]);
    for src in ["db-1/a", "db-2/b"] {
        let out = f.cli(&["backup", "run", src, "--wait"]);
        assert!(out.contains("succeeded"), "{out}");
    }
    let first_a = snapshot_ids(&f, "db-1/a");
    // An incremental backup of a: its unchanged files stay in the first
    // backup's packs.
    std::fs::write(a.join("d0/added.txt"), "after the first backup\n").unwrap();
    let out = f.cli(&["backup", "run", "db-1/a", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snaps_a = snapshot_ids(&f, "db-1/a");
    let snaps_b = snapshot_ids(&f, "db-2/b");
    assert_eq!((snaps_a.len(), snaps_b.len()), (2, 1));
    let loc = f.location(1);
    let key_b = manifest_key(&loc, &snaps_b[0]);

    // A restore of a's newest snapshot (the incremental), held while db-1
    // is stopped.
    let newest_a = snaps_a
        .iter()
        .find(|id| !first_a.contains(id))
        .expect("the incremental snapshot")
        .clone();
    let key_a = manifest_key(&loc, &newest_a);
    signal(&f, "db-1", "-STOP");
    let target = f.dir.join("restored-a");
    let job = f.cli_json(&[
        "restore",
        &newest_a[..12],
        "--to",
        &format!("db-1:{}", target.display()),
    ]);
    let job_id = job["id"].as_str().unwrap().to_string();
    wait_state(&f, &job_id, &["assigned", "running"]);

    let mut k1 = key_client(&f, "db-1").await;
    let scope = k1
        .job_keys(JobKeysRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scope.snapshots, vec![newest_a.clone()]);
    let wrapped: Vec<&Vec<u8>> = scope.keys.iter().map(|k| &k.wrapped_key).collect();
    assert!(
        wrapped.contains(&&key_a),
        "the snapshot's own key is granted"
    );
    assert!(!wrapped.contains(&&key_b), "another source's key is not");
    assert!(scope.keys.iter().all(|k| k.data_key.len() == 32));

    // Asking for another snapshot's key: refused, naming the scope.
    let err = k1
        .unwrap_data_keys(UnwrapDataKeysRequest {
            job_id: job_id.clone(),
            wrapped_keys: vec![key_b.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    assert!(
        err.message().contains("outside the key scope of job")
            && err.message().contains(&newest_a[..8]),
        "{}",
        err.message()
    );
    // One key outside fails the whole call, even next to one inside.
    let err = k1
        .unwrap_data_keys(UnwrapDataKeysRequest {
            job_id: job_id.clone(),
            wrapped_keys: vec![key_a.clone(), key_b.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    let ok = k1
        .unwrap_data_keys(UnwrapDataKeysRequest {
            job_id: job_id.clone(),
            wrapped_keys: vec![key_a.clone()],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ok.data_keys.len(), 1);

    // Another agent's certificate gets nothing for this job.
    let mut k2 = key_client(&f, "db-2").await;
    let err = k2
        .job_keys(JobKeysRequest {
            job_id: job_id.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied);
    assert!(err.message().contains("belongs to agent db-1"), "{err:?}");

    // The restore itself runs on the scoped keys alone: byte-identical.
    signal(&f, "db-1", "-CONT");
    wait_state(&f, &job_id, &["succeeded"]);
    assert!(tree(&a) == tree(&target), "restored tree differs");

    // A backup of b, held: index keys and b's own parent, not a's keys.
    signal(&f, "db-2", "-STOP");
    std::fs::write(b.join("d0/more.txt"), "b changed\n").unwrap();
    let job = f.cli_json(&["backup", "run", "db-2/b"]);
    let backup_id = job["id"].as_str().unwrap().to_string();
    wait_state(&f, &backup_id, &["assigned", "running"]);
    let scope = k2
        .job_keys(JobKeysRequest {
            job_id: backup_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(scope.snapshots, vec![snaps_b[0].clone()], "the parent");
    let wrapped: Vec<&Vec<u8>> = scope.keys.iter().map(|k| &k.wrapped_key).collect();
    assert!(wrapped.contains(&&key_b));
    assert!(
        !wrapped.contains(&&key_a),
        "a backup of b gets no key of a's data"
    );
    let err = k2
        .unwrap_data_keys(UnwrapDataKeysRequest {
            job_id: backup_id.clone(),
            wrapped_keys: vec![key_a.clone()],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");
    signal(&f, "db-2", "-CONT");
    wait_state(&f, &backup_id, &["succeeded"]);

    // The refusals and grants are in the audit chain, with who and why.
    let out = f.cli(&[
        "audit", "ls", "--json", "--limit", "1000", "--actor", "db-1",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let entries = v.as_array().unwrap();
    assert!(
        entries.iter().any(|e| e["action"] == "key request"
            && e["outcome"] == "refused"
            && e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("outside the key scope"))),
        "{entries:#?}"
    );
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "data keys granted" && e["outcome"] == "ok"),
        "{entries:#?}"
    );
    let out = f.cli(&["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");
}
