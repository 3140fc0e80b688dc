//! What an agent sends on its `Session` stream, through the controller's own
//! session code: prost decoding of a sequence of length-delimited
//! `AgentMessage`s, then `server::agents::fuzz_session` — the Hello checks,
//! registration, `settle`, dispatch, and each message's handler
//! (`handle_result`, `handle_progress`, heartbeats) — against a real
//! catalog and `file://` locations opened once by `server::open`.
//!
//! The first byte is a mode: bit 0 puts an honest Hello of `web-1` first
//! (so the fuzzer reaches the handlers behind it), bit 1 replaces every job
//! id in the messages with that of a job queued for `web-1/files` (ids are
//! random UUIDs the fuzzer cannot guess), bit 2 sends the session as
//! `web-2` (an agent holding no job).
//!
//! Beyond "no panic": no message sequence makes the controller record a
//! snapshot (no location holds one, so any success is a lie), and the queued
//! job never ends as succeeded.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use trireme_controller::jobs::{self, JobId, JobState};
use trireme_controller::server::agents::fuzz_session;
use trireme_controller::server::Shared;
use trireme_controller::{BackupMode, SourceId};
use trireme_proto::v1::agent_message::Msg;
use trireme_proto::v1::{AgentMessage, Hello, SourceInfo};

struct Fixture {
    rt: tokio::runtime::Runtime,
    shared: Arc<Shared>,
    job: std::sync::Mutex<JobId>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("trireme-fuzz-session-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca");
        trireme_net::tls::ca::init_ca(&ca).unwrap();
        trireme_net::tls::ca::issue(&ca, trireme_net::Role::Controller, "localhost", 30, &ca)
            .unwrap();
        let key = dir.join("master.key");
        trireme_common::keys::LocalKeyFile::create(&key).unwrap();
        let mut text = format!(
            "listen = \"127.0.0.1:1\"\ndata_dir = \"{d}/controller\"\nkey_file = \"{k}\"\n[tls]\ndir = \"{ca}\"\nname = \"localhost\"\n",
            d = dir.display(),
            k = key.display(),
            ca = ca.display()
        );
        for i in 1..=3 {
            text.push_str(&format!(
                "[[location]]\nname = \"loc{i}\"\nurl = \"file://{}/loc{i}\"\n",
                dir.display()
            ));
        }
        let path = dir.join("controller.toml");
        let config = trireme_controller::config::ControllerConfig::parse(&path, &text).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let shared = rt.block_on(trireme_controller::server::open(&config)).unwrap().0;
        rt.block_on(fuzz_session(&shared, "web-1", vec![hello("web-1", vec![])]))
            .unwrap();
        let job = queue(&shared);
        Fixture {
            rt,
            shared,
            job: std::sync::Mutex::new(job),
        }
    })
}

fn queue(shared: &Shared) -> JobId {
    let source = SourceId::new("web-1", "files").unwrap();
    jobs::enqueue_manual(&shared.catalog, &source, BackupMode::Full, "fuzz", shared.now())
        .unwrap()
        .id
}

fn hello(name: &str, running: Vec<String>) -> AgentMessage {
    AgentMessage {
        msg: Some(Msg::Hello(Hello {
            agent_name: name.into(),
            agent_version: trireme_controller::VERSION.into(),
            sources: vec![SourceInfo {
                name: "files".into(),
                kind: "volume".into(),
                ..Default::default()
            }],
            running_job_ids: running,
            ..Default::default()
        })),
    }
}

fn set_job_ids(m: &mut AgentMessage, id: &str) {
    match &mut m.msg {
        Some(Msg::Hello(h)) => {
            for j in &mut h.running_job_ids {
                *j = id.to_string();
            }
            for r in &mut h.pending_results {
                r.job_id = id.to_string();
            }
        }
        Some(Msg::Heartbeat(h)) => {
            for j in &mut h.running_job_ids {
                *j = id.to_string();
            }
        }
        Some(Msg::Progress(p)) => p.job_id = id.to_string(),
        Some(Msg::Result(r)) => r.job_id = id.to_string(),
        None => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let mut msgs = Vec::new();
    while !rest.is_empty() && msgs.len() < 16 {
        match AgentMessage::decode_length_delimited(&mut rest) {
            Ok(m) => {
                // What decodes re-encodes to bytes that decode to the same.
                let bytes = m.encode_to_vec();
                let again = AgentMessage::decode(bytes.as_slice()).expect("re-decode");
                assert_eq!(again.encode_to_vec(), bytes);
                msgs.push(m);
            }
            Err(_) => break,
        }
    }
    let f = fixture();
    let job = *f.job.lock().unwrap();
    let agent = if mode & 4 != 0 { "web-2" } else { "web-1" };
    if mode & 2 != 0 {
        for m in &mut msgs {
            set_job_ids(m, &job.to_string());
        }
    }
    if mode & 1 != 0 {
        msgs.insert(0, hello(agent, vec![job.to_string()]));
    }
    let _ = f.rt.block_on(fuzz_session(&f.shared, agent, msgs));

    assert!(
        f.shared.catalog.snapshots().is_empty(),
        "a snapshot no location holds was recorded"
    );
    let state = f.shared.catalog.jobs().get(&job).unwrap().unwrap().state;
    assert!(
        !matches!(state, JobState::Succeeded { .. }),
        "a lie made the job succeed: {state:?}"
    );
    if state.is_terminal() {
        *f.job.lock().unwrap() = queue(&f.shared);
    }
});
