//! An agent's `Session` messages through the controller's own session code
//! (`server::agents::fuzz_session`, the entry the `agent_message` fuzz
//! target drives), in process against a real catalog and `file://`
//! locations: what a lying or broken agent sends is refused or acknowledged
//! without being believed. The same paths across real processes are in
//! `agent_paths.rs`; this file pins the in-process entry and what fuzzing
//! found.

mod support;

use support::fleet::Fleet;
use trireme_controller::jobs::{self, JobState};
use trireme_controller::server::agents::fuzz_session;
use trireme_controller::{BackupMode, SourceId};
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::{
    AgentMessage, ControllerMessage, Hello, JobProgress, JobResult, SourceInfo,
};

fn hello(name: &str) -> AgentMessage {
    hello_running(name, &[])
}

/// A Hello from an agent that says it runs `running`.
fn hello_running(name: &str, running: &[&str]) -> AgentMessage {
    AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            agent_name: name.into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            hostname: "h".into(),
            sources: vec![SourceInfo {
                name: "files".into(),
                kind: "volume".into(),
                ..Default::default()
            }],
            running_job_ids: running.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        })),
    }
}

fn result(job: &str, ok: bool, snapshot: &str) -> AgentMessage {
    AgentMessage {
        msg: Some(AgentMsg::Result(JobResult {
            job_id: job.into(),
            ok,
            snapshot_id: snapshot.into(),
            location: "loc1".into(),
            ..Default::default()
        })),
    }
}

fn acks(replies: &[ControllerMessage]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|m| match &m.msg {
            Some(CtlMsg::Ack(a)) => Some(a.job_id.clone()),
            _ => None,
        })
        .collect()
}

fn assigned(replies: &[ControllerMessage]) -> Vec<String> {
    replies
        .iter()
        .filter_map(|m| match &m.msg {
            Some(CtlMsg::Assign(a)) => Some(a.job_id.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_in_a_session_are_refused_or_acknowledged_never_believed() {
    let f = Fleet::new();
    let shared = f.open_in_process().await;

    // A session must open with a Hello that names the certificate's agent.
    let err = fuzz_session(&shared, "web-1", vec![result("x", true, "")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let err = fuzz_session(&shared, "web-1", vec![hello("web-2")])
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err}");
    assert!(err.message().contains("\"web-1\""), "{err}");
    assert!(shared.catalog.sources().is_empty());

    // An honest Hello registers the agent's sources.
    fuzz_session(&shared, "web-1", vec![hello("web-1")])
        .await
        .unwrap();
    assert_eq!(shared.catalog.sources().len(), 1);

    // A job for web-1/files is dispatched when web-1 connects; web-2 then
    // claims it with a success, and web-1 with a snapshot that no location
    // holds, then with a malformed id.
    let source = SourceId::new("web-1", "files").unwrap();
    let job = jobs::enqueue_manual(
        &shared.catalog,
        &source,
        BackupMode::Full,
        "op",
        shared.now(),
    )
    .unwrap();
    let id = job.id.to_string();
    let replies = fuzz_session(&shared, "web-1", vec![hello("web-1")])
        .await
        .unwrap();
    assert_eq!(assigned(&replies), [id.as_str()]);

    let fake = "ab".repeat(32);
    let replies = fuzz_session(
        &shared,
        "web-2",
        vec![hello("web-2"), result(&id, true, &fake)],
    )
    .await
    .unwrap();
    // Acknowledged (it can never be accepted), and not believed.
    assert_eq!(acks(&replies), [id.as_str()]);
    let j = shared.catalog.jobs().get(&job.id).unwrap().unwrap();
    assert!(!j.state.is_terminal(), "{:?}", j.state);

    // Progress for a job that is not the agent's, a malformed job id, a
    // path in a job id: nothing recorded, each result acknowledged.
    let progress = AgentMessage {
        msg: Some(AgentMsg::Progress(JobProgress {
            job_id: id.clone(),
            ..Default::default()
        })),
    };
    let replies = fuzz_session(
        &shared,
        "web-2",
        vec![
            hello("web-2"),
            progress,
            result("not-a-job", true, &fake),
            result("../../etc/passwd", false, ""),
        ],
    )
    .await
    .unwrap();
    assert_eq!(acks(&replies), ["not-a-job", "../../etc/passwd"]);

    let replies = fuzz_session(
        &shared,
        "web-1",
        vec![hello_running("web-1", &[&id]), result(&id, true, &fake)],
    )
    .await
    .unwrap();
    assert_eq!(acks(&replies), [id.as_str()]);
    let j = shared.catalog.jobs().get(&job.id).unwrap().unwrap();
    match &j.state {
        JobState::Failed { reason, .. } => assert!(reason.contains("snapshot"), "{reason}"),
        other => panic!("a success naming a snapshot no location holds was believed: {other:?}"),
    }
    assert!(shared.catalog.snapshots().is_empty());

    // A second result for the finished job changes nothing.
    let replies = fuzz_session(
        &shared,
        "web-1",
        vec![hello("web-1"), result(&id, true, "zz")],
    )
    .await
    .unwrap();
    assert_eq!(acks(&replies), [id.as_str()]);
    let again = shared.catalog.jobs().get(&job.id).unwrap().unwrap();
    assert_eq!(format!("{:?}", again.state), format!("{:?}", j.state));
    assert!(shared.catalog.snapshots().is_empty());
}

/// An agent of a version the controller does not work with is refused at
/// session start, saying which side to upgrade; nothing is registered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_of_an_incompatible_version_is_refused_at_session_start() {
    let f = Fleet::new();
    let shared = f.open_in_process().await;
    for (version, says) in [
        ("99.0.0", "upgrade the controller first"),
        ("dev", "no version this controller can read"),
    ] {
        let mut h = hello("web-1");
        if let Some(AgentMsg::Hello(x)) = &mut h.msg {
            x.agent_version = version.into();
        }
        let e = fuzz_session(&shared, "web-1", vec![h]).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{version}");
        assert!(e.message().contains(says), "{version}: {}", e.message());
    }
    assert!(
        shared
            .catalog
            .agents()
            .get(&"web-1".to_string())
            .unwrap()
            .is_none(),
        "a refused agent is not registered"
    );
    // Its own version: welcome.
    fuzz_session(&shared, "web-1", vec![hello("web-1")])
        .await
        .unwrap();
}
