//! The controller's agent handling (`server::agents`, `server::reports`)
//! on the paths an honest agent rarely takes: a result for a job the
//! catalog does not know, a result sent by an agent that does not hold the
//! job, a success with a malformed snapshot id, an agent that goes silent
//! while it holds a job (`agent_timeout`), and a cancel that must stop a real
//! agent's dump program. A real controller process each time; the odd
//! messages come from a hand-written session client holding a valid agent
//! certificate, the rest from real `trireme-agent` processes and the
//! `trireme` CLI.

mod support;

use std::path::Path;

use serde_json::Value;
use support::fleet::{wait_for, AgentSpec, Fleet};
use support::session::{Session, DEADLINE};
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::{JobProgress, JobResult};

fn job_state(f: &Fleet, id: &str) -> Value {
    f.cli_json(&["jobs", "show", id])
}

fn wait_job(f: &Fleet, id: &str, states: &[&str]) -> Value {
    wait_for(&format!("job {id} in {states:?}"), DEADLINE, || {
        let j = job_state(f, id);
        states.iter().any(|s| j["state"] == *s).then_some(j)
    })
}

fn snapshots(f: &Fleet, source: &str) -> Vec<Value> {
    f.cli_json(&["snapshots", "ls", source])
        .as_array()
        .unwrap()
        .clone()
}

/// The audit chain's entries (`audit ls --json`).
fn audit(f: &Fleet) -> Vec<Value> {
    let out = f.cli_as("op", &["audit", "ls", "--json", "--limit", "1000"]);
    assert!(out.status.success());
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// The refused audit entries of `action` whose target names `job`.
fn refusals(f: &Fleet, action: &str, job: &str) -> Vec<Value> {
    audit(f)
        .into_iter()
        .filter(|e| {
            e["action"] == action
                && e["outcome"] == "refused"
                && e["target"].as_str().unwrap_or_default().contains(job)
        })
        .collect()
}

/// Queue a backup of `source`; its job id.
fn queue_backup(f: &Fleet, source: &str) -> String {
    f.cli_json(&["backup", "run", source])["id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_for_an_unknown_job_is_acked_and_records_nothing() {
    let mut f = Fleet::new();
    f.start_controller();
    let mut s = Session::open(&f, "web-2", "uploads", Vec::new()).await;
    f.wait_connected(&["web-2"]);

    // What the code intends (reports::handle_result): a result for a job
    // the catalog does not know is logged and ignored, and acknowledged so
    // that the agent forgets it; nothing of it reaches the catalog.
    let ghost = uuid::Uuid::new_v4().to_string();
    s.send(AgentMsg::Result(JobResult {
        job_id: ghost.clone(),
        ok: true,
        snapshot_id: "ab".repeat(32),
        location: "loc1".into(),
        ..Default::default()
    }))
    .await;
    s.acked(&ghost).await;

    let shown = f.cli_as("op", &["jobs", "show", &ghost]);
    assert!(
        !shown.status.success(),
        "no job {ghost} appears: {}",
        String::from_utf8_lossy(&shown.stdout)
    );
    let jobs = f.cli(&["--output", "json", "jobs", "ls"]);
    assert!(!jobs.contains(&ghost), "{jobs}");
    assert!(snapshots(&f, "web-2/uploads").is_empty());
    // Not a refusal either: nothing in the audit chain names it.
    let chain = audit(&f);
    assert!(
        chain.iter().all(|e| !e.to_string().contains(&ghost)),
        "{chain:#?}"
    );
    let log = Fleet::log_text(&f.controller_log());
    assert!(
        log.lines()
            .any(|l| l.contains("result for a job the catalog does not know") && l.contains(&ghost)),
        "the controller logs the stray result: {log}"
    );

    // The same in a Hello's pending results (an agent's spool after a
    // reconnect): acknowledged too.
    drop(s);
    let ghost2 = uuid::Uuid::new_v4().to_string();
    let pending = vec![JobResult {
        job_id: ghost2.clone(),
        ok: false,
        error_message: "whatever".into(),
        ..Default::default()
    }];
    let mut s = Session::open(&f, "web-2", "uploads", pending).await;
    s.acked(&ghost2).await;
    assert!(!f.cli_as("op", &["jobs", "show", &ghost2]).status.success());

    // A job id that is no id at all (a damaged spool): acknowledged too, so
    // it is not sent forever, and logged.
    let garbage = "not-a-job-id".to_string();
    s.send(AgentMsg::Result(JobResult {
        job_id: garbage.clone(),
        ok: true,
        snapshot_id: "cd".repeat(32),
        ..Default::default()
    }))
    .await;
    s.acked(&garbage).await;
    let log = Fleet::log_text(&f.controller_log());
    assert!(
        log.lines()
            .any(|l| l.contains("result with a malformed job id") && l.contains(&garbage)),
        "the controller logs the malformed id: {log}"
    );
}

/// A `command` source as TOML (`[[source]]` table) running `argv`.
fn command_source(name: &str, argv: &[&str]) -> String {
    format!("[[source]]\nname = \"{name}\"\nkind = \"command\"\nbackup = {argv:?}\n")
}

/// A real agent `name` with the given `command` sources and one job slot.
fn command_agent(name: &str, sources: &[(&str, Vec<&str>)]) -> AgentSpec {
    let mut spec = AgentSpec::volume(name, "unused", Path::new("/nonexistent"));
    spec.sources.clear();
    spec.settings = "max_concurrent_jobs = 1\n".into();
    for (src, argv) in sources {
        spec.extra.push_str(&command_source(src, argv));
    }
    spec
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_from_an_agent_that_does_not_hold_the_job_is_refused_and_audited() {
    let mut f = Fleet::new();
    f.start_controller();
    // The rightful agent: a real one, whose dump waits for the test's go.
    let go = f.dir.join("go");
    let wait_then_dump = format!(
        "while [ ! -e '{}' ]; do sleep 0.1; done; echo the data",
        go.display()
    );
    f.start_agent(&command_agent(
        "db-1",
        &[("app", vec!["sh", "-c", &wait_then_dump])],
    ));
    let mut other = Session::open(&f, "web-3", "uploads", Vec::new()).await;
    f.wait_connected(&["db-1", "web-3"]);
    let job = queue_backup(&f, "db-1/app");
    let before = wait_job(&f, &job, &["running"]);

    // web-3 reports db-1's job: failed, then succeeded with a made-up
    // snapshot. Both are refused (audited) and acknowledged, since they
    // can never be accepted; the job is untouched.
    other
        .send(AgentMsg::Result(JobResult {
            job_id: job.clone(),
            ok: false,
            error_message: "sabotage".into(),
            ..Default::default()
        }))
        .await;
    other.acked(&job).await;
    other
        .send(AgentMsg::Result(JobResult {
            job_id: job.clone(),
            ok: true,
            snapshot_id: "cd".repeat(32),
            location: "loc1".into(),
            ..Default::default()
        }))
        .await;
    other.acked(&job).await;
    let after = job_state(&f, &job);
    assert_eq!(after["state"], "running", "{after:#}");
    assert_eq!(after["agent"], before["agent"], "{after:#}");
    assert!(
        after["error"].is_null() || after["error"] == "",
        "{after:#}"
    );
    let refused = refusals(&f, "job result", &job);
    assert_eq!(refused.len(), 2, "both refusals are audited: {refused:#?}");
    for e in &refused {
        assert_eq!(e["actor"], "web-3", "{e:#}");
        assert_eq!(e["role"], "agent", "{e:#}");
        let why = e["reason"].as_str().unwrap_or_default();
        assert!(
            why.contains(&format!("job {job} belongs to agent db-1, not web-3")),
            "{e:#}"
        );
    }

    // The rightful agent still completes it.
    std::fs::write(&go, b"").unwrap();
    let done = wait_job(&f, &job, &["succeeded", "failed", "cancelled"]);
    assert_eq!(done["state"], "succeeded", "{done:#}");
    let snaps = snapshots(&f, "db-1/app");
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(!serde_json::to_string(&snaps)
        .unwrap()
        .contains(&"cd".repeat(32)));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_success_with_a_malformed_snapshot_id_is_acked_and_fails_the_job() {
    let mut f = Fleet::new();
    f.start_controller();
    let mut s = Session::open(&f, "web-2", "uploads", Vec::new()).await;
    f.wait_connected(&["web-2"]);

    // In the session: acknowledged (else a real agent's spool would send
    // it again forever), the job fails with the reason, audited.
    let job = queue_backup(&f, "web-2/uploads");
    assert_eq!(s.next_job().await.job_id, job);
    s.send(AgentMsg::Result(JobResult {
        job_id: job.clone(),
        ok: true,
        snapshot_id: "not-a-snapshot-id".into(),
        location: "loc1".into(),
        ..Default::default()
    }))
    .await;
    s.acked(&job).await;
    let j = wait_job(&f, &job, &["failed", "succeeded"]);
    assert_eq!(j["state"], "failed", "{j:#}");
    let reason = j["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("without a valid snapshot id") && reason.contains("not-a-snapshot-id"),
        "{j:#}"
    );
    assert!(snapshots(&f, "web-2/uploads").is_empty());
    let refused = refusals(&f, "backup result", &job);
    assert!(
        refused.iter().any(|e| e["actor"] == "web-2"
            && e["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("without a valid snapshot id")),
        "the refusal is audited: {refused:#?}"
    );

    // Handed over again in a Hello (the spool after a reconnect), for a
    // second job and for the one already failed: both acknowledged.
    let job2 = queue_backup(&f, "web-2/uploads");
    assert_eq!(s.next_job().await.job_id, job2);
    drop(s);
    let bad = |id: &str| JobResult {
        job_id: id.into(),
        ok: true,
        snapshot_id: "zz".repeat(32),
        location: "loc1".into(),
        ..Default::default()
    };
    let mut s = Session::open(&f, "web-2", "uploads", vec![bad(&job2), bad(&job)]).await;
    s.acked(&job2).await;
    s.acked(&job).await;
    let j2 = wait_job(&f, &job2, &["failed", "succeeded"]);
    assert_eq!(j2["state"], "failed", "{j2:#}");
    assert!(
        j2["error"]
            .as_str()
            .unwrap_or_default()
            .contains("without a valid snapshot id"),
        "{j2:#}"
    );
    assert_eq!(job_state(&f, &job)["state"], "failed");
    assert!(snapshots(&f, "web-2/uploads").is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_job_of_an_agent_silent_past_agent_timeout_fails() {
    let mut f = Fleet::new();
    f.controller_extra = "agent_timeout = \"2s\"\n".into();
    f.start_controller();
    let mut s = Session::open(&f, "web-2", "uploads", Vec::new()).await;
    f.wait_connected(&["web-2"]);
    let job = queue_backup(&f, "web-2/uploads");
    assert_eq!(s.next_job().await.job_id, job);
    s.send(AgentMsg::Progress(JobProgress {
        job_id: job.clone(),
        bytes_read: 1,
        ..Default::default()
    }))
    .await;
    wait_job(&f, &job, &["running"]);

    // Silence, the stream left open: the controller closes the session
    // (three heartbeat intervals), and agent_timeout later fails the job.
    s.go_silent();
    let j = wait_job(&f, &job, &["failed", "succeeded", "cancelled"]);
    assert_eq!(j["state"], "failed", "{j:#}");
    let reason = j["error"].as_str().unwrap_or_default();
    assert!(
        reason.contains("agent web-2 has not been connected for")
            && reason.contains("(agent_timeout 2s)")
            && reason.contains("considered lost"),
        "{j:#}"
    );
    let agents = f.cli_json(&["agents", "ls"]);
    let web2 = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "web-2")
        .unwrap();
    assert_eq!(web2["connected"], false, "{agents:#}");
}

/// Pids of the processes whose parent is `parent` (from /proc).
fn children_of(parent: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...: comm may hold spaces, so from the last ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            out.push(pid);
        }
    }
    out
}

/// Whether process `pid` exists (a zombie counts: it was not reaped).
fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Kills the given processes when the test fails (a dump left running
/// would outlive it).
struct KillIfFailed(Vec<u32>);

impl Drop for KillIfFailed {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for pid in self.0.iter().filter(|p| alive(**p)) {
                let _ = std::process::Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_stops_the_real_agents_dump_and_frees_its_slot() {
    let mut f = Fleet::new();
    f.start_controller();
    // The dump: a shell (the agent's child) whose own child does the slow
    // work, as a script's pipeline would; each writes its pid.
    let shell_pid = f.dir.join("dump-shell.pid");
    let worker_pid = f.dir.join("dump-worker.pid");
    let slow = format!(
        "echo $$ > '{}'; sleep 600 & echo $! > '{}'; wait",
        shell_pid.display(),
        worker_pid.display()
    );
    f.start_agent(&command_agent(
        "db-1",
        &[
            ("slow", vec!["sh", "-c", &slow]),
            ("quick", vec!["sh", "-c", "echo quick data"]),
        ],
    ));
    f.wait_connected(&["db-1"]);
    let agent_pid = f.agents["db-1"].id();

    let job = queue_backup(&f, "db-1/slow");
    let pid_in = |p: &Path| -> Option<u32> { std::fs::read_to_string(p).ok()?.trim().parse().ok() };
    let (shell, worker) = wait_for("the dump program and its child to start", DEADLINE, || {
        Some((pid_in(&shell_pid)?, pid_in(&worker_pid)?))
    });
    assert!(alive(shell) && alive(worker));
    let _cleanup = KillIfFailed(vec![shell, worker]);
    assert!(
        children_of(agent_pid).contains(&shell),
        "the dump program is the agent's child"
    );
    assert!(children_of(shell).contains(&worker));
    // The agent's only slot is taken: the next job waits behind the dump.
    let next = queue_backup(&f, "db-1/quick");
    assert_ne!(
        job_state(&f, &next)["state"],
        "succeeded",
        "the one slot is busy"
    );

    f.cli(&["jobs", "cancel", &job]);
    let j = wait_job(&f, &job, &["cancelled", "failed", "succeeded"]);
    assert_eq!(j["state"], "cancelled", "{j:#}");

    // The dump program and what it started are killed (and the program
    // reaped): nothing of the job runs on.
    for (what, pid) in [("dump program", shell), ("dump program's child", worker)] {
        wait_for(
            &format!("the {what} (pid {pid}) of cancelled job {job} to be gone"),
            DEADLINE,
            || (!alive(pid)).then_some(()),
        );
    }
    let log = wait_for("the agent to log the cancel", DEADLINE, || {
        let log = Fleet::log_text(&f.agent_log("db-1"));
        log.contains("cancelling job").then_some(log)
    });
    assert!(log.contains(&job), "{log}");

    // The freed slot takes the next job, which succeeds.
    let n = wait_job(&f, &next, &["succeeded", "failed", "cancelled"]);
    assert_eq!(n["state"], "succeeded", "{n:#}");
    assert_eq!(snapshots(&f, "db-1/quick").len(), 1);
    assert!(snapshots(&f, "db-1/slow").is_empty());
    wait_for("the agent to have no child process left", DEADLINE, || {
        children_of(agent_pid).is_empty().then_some(())
    });
    assert_eq!(job_state(&f, &job)["state"], "cancelled");
}
