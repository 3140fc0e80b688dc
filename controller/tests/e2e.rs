//! End-to-end: a real `trireme-controller`, real `trireme-agent` processes
//! and the `trireme` CLI on loopback, with mTLS, three `file://` locations
//! and real backups.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::fleet::{make_data, wait_for, AgentSpec, Fleet, Proxy};
use support::receiver::Receiver;
use trireme_net::tls::{ca, Role};
use trireme_testkit::tree;

fn job(f: &Fleet, id: &str) -> Value {
    f.cli_json(&["jobs", "show", id])
}

fn wait_job_state(f: &Fleet, id: &str, states: &[&str], timeout: Duration) -> Value {
    wait_for(&format!("job {id} to be {states:?}"), timeout, || {
        let j = job(f, id);
        states.contains(&j["state"].as_str()?).then_some(j)
    })
}

/// Count snapshot objects at a file:// location.
fn snapshot_objects(loc: &Path) -> usize {
    std::fs::read_dir(loc.join("snapshots")).map_or(0, |d| d.count())
}

#[test]
fn fleet_manual_and_scheduled_backups_restore_to_another_agent() {
    let mut f = Fleet::new();
    let data = f.dir.join("data-a");
    make_data(&data, 12, 300_000, 1);
    let other = f.dir.join("data-b");
    make_data(&other, 2, 1000, 2);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.start_agent(&AgentSpec::volume("web-2", "logs", &other));
    f.wait_connected(&["web-1", "web-2"]);

    let sources = f.cli_json(&["sources", "ls"]);
    assert_eq!(sources.as_array().unwrap().len(), 2, "{sources}");

    // A manual backup, watched to the end by the CLI.
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snaps = f.cli_json(&["snapshots", "ls", "web-1/files"]);
    assert_eq!(snaps.as_array().unwrap().len(), 1, "{snaps}");
    assert_eq!(snapshot_objects(&f.location(1)), 1);

    // A schedule: every minute. Change the data so the scheduled snapshot differs.
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"web-1/files\"\nschedule = \"* * * * *\"\nretention = \"daily-7\"\n",
    );
    let out = f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    assert!(out.contains("web-1/files"), "{out}");
    std::fs::write(data.join("d0/new.txt"), "written after the first backup\n").unwrap();
    let scheduled = wait_for(
        "a scheduled backup to succeed",
        Duration::from_secs(150),
        || {
            let jobs = f.cli_json(&["jobs", "ls", "--source", "files", "--state", "succeeded"]);
            jobs.as_array()?
                .iter()
                .find(|j| {
                    j["trigger"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("schedule"))
                })
                .cloned()
        },
    );
    let snap = scheduled["snapshot_id"].as_str().unwrap().to_string();
    assert_eq!(snap.len(), 64, "{scheduled}");

    // Restore the scheduled snapshot on the other agent: byte-identical.
    let target = f.dir.join("restored-on-web-2");
    let out = f.cli(&[
        "restore",
        &snap[..12],
        "--to",
        &format!("web-2:{}", target.display()),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    let want = tree(&data);
    let got = tree(&target);
    assert_eq!(want.len(), got.len());
    assert!(want == got, "restored tree differs from the source");
    assert!(got.contains_key(Path::new("d0/new.txt")));

    // The restore ran on web-2 and fetched keys for that job only.
    let log = Fleet::log_text(&f.controller_log());
    assert!(
        log.contains("data keys granted") && log.contains("agent=web-2"),
        "audit lines missing"
    );
}

#[test]
fn refusals_are_clear_and_logged() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 1, 1000, 3);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);

    let fail = |who: &str, args: &[&str]| -> String {
        let out = f.cli_as(who, args);
        assert!(!out.status.success(), "{who} {args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };

    // A viewer reads but cannot run a backup: refused, exit code 3.
    assert!(f.cli_as("viewer", &["jobs", "ls"]).status.success());
    assert_eq!(
        f.cli_as("viewer", &["backup", "run", "web-1/files"])
            .status
            .code(),
        Some(3)
    );
    let e = fail("viewer", &["backup", "run", "web-1/files"]);
    assert!(
        e.contains("permission denied") && e.contains("operator role"),
        "{e}"
    );

    // An agent certificate cannot call operator RPCs.
    let e = fail("web-1", &["agents", "ls"]);
    assert!(
        e.contains("permission denied") && e.contains("agent role"),
        "{e}"
    );

    // A certificate from another CA.
    let other = f.dir.join("other-ca");
    ca::init_ca(&other).unwrap();
    ca::issue(&other, Role::Operator, "mallory", 30, &other).unwrap();
    std::fs::copy(other.join("mallory.pem"), f.ca.join("mallory.pem")).unwrap();
    std::fs::copy(other.join("mallory.key"), f.ca.join("mallory.key")).unwrap();
    // TLS 1.3 checks the client's certificate after the client finished its
    // half of the handshake: the CLI sees either the fatal alert or the
    // closed connection, and names the certificate either way.
    let refused_cert = |e: &str| {
        (e.contains("the controller refused your certificate")
            || e.contains("it does so when it refuses your certificate"))
            && e.contains("not from its CA")
    };
    let out = f.cli_as("mallory", &["status"]);
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        refused_cert(&e),
        "another CA's certificate must be refused, saying so: {e}"
    );
    assert_eq!(out.status.code(), Some(3), "{e}");
    // Nothing listening: unreachable, exit code 4.
    let out = std::process::Command::new(support::fleet::bin("trireme"))
        .args([
            "--controller",
            &format!("127.0.0.1:{}", trireme_testkit::ports::free_port()),
        ])
        .args(["--server-name", "localhost", "--tls-dir"])
        .arg(&f.ca)
        .args(["--name", "op", "status"])
        .output()
        .unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("cannot reach the controller"), "{e}");
    assert_eq!(out.status.code(), Some(4), "{e}");

    // An expired certificate.
    let now = std::time::SystemTime::now();
    ca::issue_between(
        &f.ca,
        Role::Operator,
        "old-op",
        now - Duration::from_secs(10 * 86400),
        now - Duration::from_secs(86400),
        &f.ca,
    )
    .unwrap();
    let e = fail("old-op", &["status"]);
    assert!(refused_cert(&e), "{e}");

    // A revoked certificate: refused once the controller reloads its CRL.
    ca::issue(&f.ca, Role::Operator, "leaver", 30, &f.ca).unwrap();
    assert!(f.cli_as("leaver", &["status"]).status.success());
    ca::revoke(&f.ca, &ca::RevokeTarget::Name("leaver".into())).unwrap();
    wait_for(
        "the revoked certificate to be refused",
        Duration::from_secs(20),
        || (!f.cli_as("leaver", &["status"]).status.success()).then_some(()),
    );

    // No client certificate at all: the handshake is refused.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = f.addr();
    let ca_pem = f.ca.join("ca.pem");
    let refused = rt.block_on(async move { support::no_cert_handshake(addr, &ca_pem).await });
    assert!(refused, "a client without a certificate must be refused");

    let log = wait_for(
        "refusals in the controller log",
        Duration::from_secs(10),
        || {
            let log = Fleet::log_text(&f.controller_log());
            (log.contains("no certificate")
                && log.contains("revoked")
                && log.contains("expired")
                && log.contains("not issued by this server's CA")
                && log.matches("refused an RPC").count() >= 2)
                .then_some(log)
        },
    );
    assert!(log.contains("who=viewer"), "the viewer's refusal names it");

    // An agent certificate speaking for another agent's name (a tampered
    // agent: the real one always uses its certificate's name).
    let files = trireme_net::tls::TlsFiles::in_dir(&f.ca, "web-1");
    let tls = trireme_net::tls::ClientTls {
        config: std::sync::Arc::new(trireme_net::tls::client_config(&files).unwrap()),
        server_name: "localhost".into(),
        server_role: Some(Role::Controller),
    };
    let addr = f.addr().to_string();
    let err = rt.block_on(async move {
        let channel = trireme_net::tls::connect(&addr, tls).await.unwrap();
        trireme_proto::v1::agent_service_client::AgentServiceClient::new(channel)
            .register(trireme_proto::v1::RegisterRequest {
                agent_name: "web-9".into(),
                ..Default::default()
            })
            .await
            .unwrap_err()
    });
    assert_eq!(err.code(), tonic::Code::PermissionDenied, "{err:?}");

    // Handshake refusals and the name claim are in the audit chain too, not
    // only in the log.
    let refused_in = |entries: &[Value], actor: &str, action: &str, reason: &str| {
        entries.iter().any(|e| {
            e["actor"] == actor
                && e["action"] == action
                && e["outcome"] == "refused"
                && e["reason"].as_str().is_some_and(|r| r.contains(reason))
                && e["peer"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("127.0.0.1:"))
        })
    };
    let t = std::time::Instant::now();
    let entries = loop {
        let out = f.cli(&["audit", "ls", "--json", "--limit", "1000"]);
        let entries = serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        if refused_in(
            &entries,
            "(tls handshake)",
            "connection refused",
            "no certificate",
        ) && refused_in(&entries, "(tls handshake)", "connection refused", "expired")
            && refused_in(
                &entries,
                "(tls handshake)",
                "connection refused",
                "not issued by this server's CA",
            )
            && refused_in(
                &entries,
                "web-1",
                "agent register",
                "calls itself \"web-9\"",
            )
        {
            break entries;
        }
        let refusals: Vec<&Value> = entries
            .iter()
            .filter(|e| e["outcome"] == "refused")
            .collect();
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "refusals missing from the audit chain; it has: {refusals:#?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(!entries.is_empty());
    let out = f.cli(&["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");
}

#[test]
fn controller_killed_mid_job_resumes_and_schedule_continues() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 4, 100_000, 4);
    f.start_controller();
    // The pre-hook keeps the job running long enough to kill the controller.
    f.start_agent(&AgentSpec {
        name: "db-1".into(),
        sources: vec![(
            "db".into(),
            data.clone(),
            vec!["sleep".into(), "6".into()],
            Vec::new(),
        )],
        via: None,
        extra: String::new(),
        settings: String::new(),
    });
    f.wait_connected(&["db-1"]);
    let j = f.cli_json(&["backup", "run", "db-1/db"]);
    let id = j["id"].as_str().unwrap().to_string();
    wait_job_state(&f, &id, &["running"], Duration::from_secs(20));

    f.kill_controller();
    f.start_controller();
    let done = wait_job_state(&f, &id, &["succeeded", "failed"], Duration::from_secs(60));
    assert_eq!(
        done["state"], "succeeded",
        "the agent kept running it and reported: {done}"
    );
    assert_eq!(
        f.cli_json(&["snapshots", "ls"]).as_array().unwrap().len(),
        1
    );

    // The schedule goes on after the restart.
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"db-1/db\"\nschedule = \"* * * * *\"\nretention = \"daily-7\"\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    f.kill_controller();
    f.start_controller();
    wait_for(
        "a scheduled backup after the restart",
        Duration::from_secs(150),
        || {
            let jobs = f.cli_json(&["jobs", "ls", "--state", "succeeded"]);
            (jobs.as_array()?.len() >= 2).then_some(())
        },
    );
    // One snapshot per successful job, in the catalog and in the repository.
    let ok = f.cli_json(&["jobs", "ls", "--state", "succeeded"]);
    let snaps = f.cli_json(&["snapshots", "ls"]);
    assert_eq!(
        snaps.as_array().unwrap().len(),
        ok.as_array().unwrap().len()
    );
    assert_eq!(
        snapshot_objects(&f.location(1)),
        ok.as_array().unwrap().len()
    );
}

#[test]
fn agent_killed_mid_backup_fails_then_retry_succeeds() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 60, 4_000_000, 5);
    f.start_controller();
    let agent = AgentSpec {
        name: "kv-1".into(),
        sources: vec![("kv".into(), data.clone(), Vec::new(), Vec::new())],
        via: None,
        extra: String::new(),
        settings: String::new(),
    };
    f.start_agent(&agent);
    f.wait_connected(&["kv-1"]);
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"kv-1/kv\"\nschedule = \"* * * * *\"\nretention = \"daily-7\"\nmax_retries = 3\nretry_backoff = \"1s\"\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);
    // Wait for the scheduled run to be uploading (its first pack appears at
    // the primary; polled every 10 ms, the backup takes seconds), then
    // SIGKILL the agent before it writes its snapshot.
    let packs = f.location(1).join("packs");
    let start = std::time::Instant::now();
    loop {
        let n = walkdir::WalkDir::new(&packs)
            .into_iter()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_file())
            .count();
        if n > 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(150),
            "the scheduled backup never uploaded"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    f.kill_agent("kv-1");
    assert_eq!(
        snapshot_objects(&f.location(1)),
        0,
        "killed before its snapshot was written"
    );
    let first = wait_for(
        "the killed job in the catalog",
        Duration::from_secs(10),
        || f.cli_json(&["jobs", "ls"]).as_array()?.last().cloned(),
    );
    let first_id = first["id"].as_str().unwrap().to_string();
    f.start_agent(&agent);
    let failed = wait_job_state(&f, &first_id, &["failed"], Duration::from_secs(30));
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("reconnected without this job"),
        "{failed}"
    );
    // The retry runs and succeeds.
    let retry = wait_for("the retry to succeed", Duration::from_secs(120), || {
        let jobs = f.cli_json(&["jobs", "ls", "--state", "succeeded"]);
        jobs.as_array()?
            .iter()
            .find(|j| {
                j["trigger"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("retry"))
            })
            .cloned()
    });
    assert_eq!(retry["attempt"], 2, "{retry}");
    // The snapshot is whole: restore it and compare.
    let snap = retry["snapshot_id"].as_str().unwrap();
    let target = f.dir.join("restored");
    let out = f.cli(&[
        "restore",
        snap,
        "--to",
        &format!("kv-1:{}", target.display()),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    assert!(tree(&data) == tree(&target), "restored tree differs");
}

#[test]
fn network_cut_agent_reconnects_and_reports_kept_result() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 3, 100_000, 6);
    f.start_controller();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let proxy = rt.block_on(Proxy::start(f.addr()));
    let agent = AgentSpec {
        name: "mq-1".into(),
        // The post-hook holds the job open after its data is uploaded (keys
        // fetched): the cut comes while it is running and it finishes during the cut.
        sources: vec![(
            "mq".into(),
            data.clone(),
            Vec::new(),
            vec!["sleep".into(), "4".into()],
        )],
        via: Some(proxy.addr),
        extra: String::new(),
        settings: String::new(),
    };
    f.start_agent(&agent);
    f.wait_connected(&["mq-1"]);
    let j = f.cli_json(&["backup", "run", "mq-1/mq"]);
    let id = j["id"].as_str().unwrap().to_string();
    wait_for("the data to be uploaded", Duration::from_secs(30), || {
        let j = job(&f, &id);
        (j["progress"]["bytes_uploaded"].as_u64()? > 0).then_some(())
    });

    // Cut the link. The job finishes meanwhile; its result is kept on disk,
    // even across an agent restart.
    proxy.cut();
    let spool = f.dir.join("agent-mq-1/results");
    wait_for(
        "the result to be kept in the spool",
        Duration::from_secs(30),
        || (std::fs::read_dir(&spool).ok()?.count() > 0).then_some(()),
    );
    f.kill_agent("mq-1");
    let retries = |f: &Fleet| {
        Fleet::log_text(&f.agent_log("mq-1"))
            .matches("waiting before reconnecting")
            .count()
    };
    let before = retries(&f);
    f.start_agent(&agent);
    // The restarted agent keeps dialling through the cut (max_backoff 2 s):
    // three failed attempts, and still nothing reached the controller.
    wait_for(
        "the restarted agent to fail three reconnection attempts during the cut",
        Duration::from_secs(30),
        || (retries(&f) >= before + 3).then_some(()),
    );
    assert_eq!(
        job(&f, &id)["state"],
        "running",
        "nothing reported during the cut"
    );
    proxy.heal();

    let done = wait_job_state(&f, &id, &["succeeded", "failed"], Duration::from_secs(30));
    assert_eq!(done["state"], "succeeded", "{done}");
    wait_for(
        "the spool to empty after the ack",
        Duration::from_secs(10),
        || (std::fs::read_dir(&spool).ok()?.count() == 0).then_some(()),
    );
    drop(rt);
}

#[test]
fn sigterm_stops_the_controller_with_agents_connected() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 1, 1000, 7);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    let mut c = f.controller.take().unwrap();
    let pid = c.id().to_string();
    let t0 = std::time::Instant::now();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = wait_for(
        "the controller to exit after SIGTERM",
        Duration::from_secs(20),
        || c.try_wait().unwrap(),
    );
    assert!(status.success(), "clean exit: {status}");
    // Sessions are closed at once, not cut after the 10 s grace (the
    // controller has exited: its log is complete).
    let log = Fleet::log_text(&f.controller_log());
    assert!(
        log.contains("shutting down") && log.contains("closing the agent's session"),
        "{log}"
    );
    assert!(
        !log.contains("connections still open after 10 s"),
        "the session was not closed at shutdown ({:?} to exit): {log}",
        t0.elapsed()
    );
}

/// `sha256sum FILE`'s hex digest: an oracle outside Trireme.
fn sha256sum(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

#[test]
fn one_file_back_into_place_and_part_of_a_snapshot_elsewhere() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    // d0/f0.bin d1/f1.bin d2/f2.bin d0/f3.bin d1/f4.bin d2/f5.bin
    make_data(&data, 6, 50_000, 9);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snap = f.cli_json(&["snapshots", "ls", "web-1/files"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let f1 = data.join("d1/f1.bin");
    let f1_sum = sha256sum(&f1);

    // The live volume: one file deleted, another edited since.
    std::fs::remove_file(&f1).unwrap();
    std::fs::write(data.join("d0/f0.bin"), b"edited after the backup").unwrap();
    let before = tree(&data);

    // Into a directory that holds files, without --overwrite: the job
    // fails (a watched job that fails: exit code 5), nothing touched.
    let out = f.cli_as(
        "op",
        &["restore", &snap, "--to", "web-1:source:files", "--wait"],
    );
    assert_eq!(
        out.status.code(),
        Some(5),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = f.cli_json(&["jobs", "ls", "--state", "failed"]);
    let failed = job(&f, jobs[0]["id"].as_str().unwrap());
    assert_eq!(failed["state"], "failed", "{failed:#}");
    let why = failed["error"].as_str().unwrap_or_default();
    assert!(
        why.contains("not empty") && why.contains("--overwrite"),
        "{failed:#}"
    );
    assert!(
        tree(&data) == before,
        "a refused restore changed the volume"
    );

    // The deleted file back into place; the edited one is kept.
    let out = f.cli(&[
        "restore",
        &snap,
        "--to",
        "web-1:source:files",
        "--path",
        "d1/f1.bin",
        "--overwrite",
        "never",
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    assert_eq!(sha256sum(&f1), f1_sum, "the file came back byte for byte");
    assert_eq!(
        std::fs::read(data.join("d0/f0.bin")).unwrap(),
        b"edited after the backup"
    );
    let mut want = before.clone();
    want.insert("d1/f1.bin".into(), std::fs::read(&f1).unwrap());
    assert!(tree(&data) == want, "only the one file was written");
    let jobs = f.cli_json(&["jobs", "ls", "--state", "succeeded"]);
    let restore = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["kind"] == "restore")
        .unwrap()
        .clone();
    let shown = job(&f, restore["id"].as_str().unwrap());
    assert_eq!(
        shown["restore"]["selection"], "--path d1/f1.bin --overwrite never",
        "{shown:#}"
    );
    let checks = shown["restore"]["checks"].to_string();
    assert!(
        checks.contains("1 files") && checks.contains("0 existing files and links replaced"),
        "{checks}"
    );

    // Part of the snapshot to a new directory: globs, an exclude.
    let target = f.dir.join("part");
    let out = f.cli(&[
        "restore",
        &snap,
        "--to",
        &format!("web-1:{}", target.display()),
        "--include",
        "/d1/*",
        "--include",
        "f2.bin",
        "--exclude",
        "f4*",
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    let got: Vec<String> = tree(&target)
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(got, ["d1/f1.bin", "d2/f2.bin"]);
    assert_eq!(sha256sum(&target.join("d1/f1.bin")), f1_sum);

    // A bad glob is refused by the controller, naming it; no job.
    let n_jobs = f.cli_json(&["jobs", "ls"]).as_array().unwrap().len();
    let out = f.cli_as(
        "op",
        &[
            "restore",
            &snap,
            "--to",
            "web-1:/tmp/x",
            "--include",
            "d1/[z-",
        ],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--include \"d1/[z-\" is not a valid glob"),
        "{err}"
    );
    assert_eq!(
        f.cli_json(&["jobs", "ls"]).as_array().unwrap().len(),
        n_jobs
    );

    // The audit trail says what was restored where.
    let audit = f.cli(&["audit", "ls", "--actor", "op"]);
    assert!(
        audit.contains("to web-1:source:files (--path d1/f1.bin --overwrite never)"),
        "{audit}"
    );
}

/// Niceness (field 19) of `/proc/<path>/stat`.
fn nice_of(stat_path: &Path) -> i32 {
    let stat = std::fs::read_to_string(stat_path).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[test]
fn an_agent_keeps_to_its_upload_budget_and_priority() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 6, 1 << 20, 11);
    let seen = f.dir.join("hook-saw");
    f.start_controller();
    let agent = AgentSpec {
        name: "web-1".into(),
        // The pre-hook records the niceness and I/O class it runs with.
        sources: vec![(
            "files".into(),
            data.clone(),
            vec![
                "sh".into(),
                "-c".into(),
                format!(
                    "cat /proc/self/stat > {0}.stat && ionice -p $$ > {0}.io",
                    seen.display()
                ),
            ],
            Vec::new(),
        )],
        via: None,
        extra: String::new(),
        settings: "upload_bytes_per_sec = \"2 MiB\"\ncpu_nice = 10\nio_priority = \"idle\"\n"
            .into(),
    };
    f.start_agent(&agent);
    f.wait_connected(&["web-1"]);
    // The policy leaves more out, on top of the agent's settings.
    std::fs::write(data.join("d0/scratch.skip"), "not to be backed up").unwrap();
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"web-1/files\"\nschedule = \"0 3 * * *\"\nretention = \"r\"\nexclude = [\"*.skip\"]\n\n[retention.r]\nkeep_last = 5\n",
    );
    f.cli(&["policy", "apply", "-f", policy.to_str().unwrap()]);

    // Every thread of the agent runs at the configured priority.
    let pid = f.agents["web-1"].id();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap().path();
        assert_eq!(nice_of(&t.join("stat")), 10, "{}", t.display());
    }

    let t0 = std::time::Instant::now();
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    let took = t0.elapsed();
    assert!(out.contains("succeeded"), "{out}");
    // The packs were cut to about half a second of budget (1 MiB), and
    // came no faster than the budget (the first quarter second of it is
    // free); without one they take well under a second here.
    let packs: Vec<u64> = walkdir::WalkDir::new(f.location(1).join("packs"))
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| e.metadata().unwrap().len())
        .collect();
    assert!(packs.len() >= 3, "{packs:?}");
    assert!(packs.iter().all(|n| *n < 2 << 20), "{packs:?}");
    let uploaded: u64 = packs.iter().sum();
    assert!(uploaded > 3 << 20, "{packs:?}");
    let least = (uploaded - (512 << 10)) as f64 / f64::from(2 << 20);
    assert!(
        took.as_secs_f64() >= least * 0.95,
        "{uploaded} bytes of packs at 2 MiB/s took {took:?}"
    );

    // The policy's exclude held.
    let snap = f.cli_json(&["snapshots", "ls", "web-1/files"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let back = f.dir.join("back");
    let out = f.cli(&[
        "restore",
        &snap,
        "--to",
        &format!("web-1:{}", back.display()),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    let mut want = tree(&data);
    want.remove(Path::new("d0/scratch.skip")).unwrap();
    assert!(
        tree(&back) == want,
        "the restored tree is the source minus *.skip"
    );

    // What the agent runs inherits it.
    let hook_stat = seen.with_extension("stat");
    assert_eq!(nice_of(&hook_stat), 10);
    let io = std::fs::read_to_string(seen.with_extension("io")).unwrap();
    assert_eq!(io.trim(), "idle", "{io}");
}

#[tokio::test(flavor = "multi_thread")]
async fn standard_health_and_readiness() {
    use support::fleet::http_get;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 1, 1000, 12);
    let ctl_http = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    f.controller_extra = format!("metrics_listen = \"{ctl_http}\"\n");
    f.start_controller();
    let agent_http = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    let mut spec = AgentSpec::volume("web-1", "files", &data);
    spec.settings = format!("metrics_listen = \"{agent_http}\"\n");
    f.start_agent(&spec);
    f.wait_connected(&["web-1"]);

    // Plain HTTP, as a kubelet probes it (curl).
    for addr in [&ctl_http, &agent_http] {
        assert_eq!(http_get(addr, "/healthz"), (200, "ok\n".to_string()));
        assert_eq!(http_get(addr, "/nothing-here").0, 404);
    }
    let (status, body) = http_get(&ctl_http, "/readyz");
    assert_eq!(
        (status, body.as_str()),
        (200, "ready: 1 agents connected\n")
    );
    let agent_ready = || {
        wait_for("the agent to be ready", Duration::from_secs(20), || {
            let (s, b) = http_get(&agent_http, "/readyz");
            (s == 200).then_some(b)
        })
    };
    assert_eq!(agent_ready(), "ready: connected to the controller\n");

    // Both scrapes follow Prometheus's conventions, after a backup filled
    // in the job and location series (promtool, an independent linter).
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    for addr in [&ctl_http, &agent_http] {
        let (status, text) = http_get(addr, "/metrics");
        assert_eq!(status, 200);
        let mut lint = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("promtool is installed (deploy/dev/prereqs.sh)");
        use std::io::Write as _;
        lint.stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = lint.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics on {addr}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let text = support::fleet::scrape(&ctl_http);
    assert_eq!(
        support::fleet::sample(&text, "trireme_agent_connected{agent=\"web-1\"}"),
        1.0
    );
    // Histograms with their buckets: RPC latency per method on the
    // controller; job duration and bytes per backup on the agent.
    let buckets = |text: &str, prefix: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    };
    let session =
        "trireme_rpc_duration_seconds_bucket{method=\"/trireme.v1.AgentService/Session\",le=";
    let b = buckets(&text, session);
    assert_eq!(b.len(), 15, "14 bounds and +Inf: {b:?}");
    assert!(
        b[14].contains("le=\"+Inf\"") && !b[14].ends_with(" 0"),
        "{b:?}"
    );
    assert!(
        support::fleet::sample(
            &text,
            "trireme_rpc_duration_seconds_count{method=\"/trireme.v1.OperatorService/RunBackup\"}"
        ) >= 1.0,
        "{text}"
    );
    let agent_text = support::fleet::scrape(&agent_http);
    let b = buckets(
        &agent_text,
        "trireme_agent_job_duration_seconds_bucket{kind=\"backup\",outcome=\"succeeded\",le=",
    );
    assert_eq!(b.len(), 13, "12 bounds and +Inf: {b:?}");
    assert_eq!(
        support::fleet::sample(
            &agent_text,
            "trireme_agent_job_duration_seconds_count{kind=\"backup\",outcome=\"succeeded\"}"
        ),
        1.0
    );
    assert_eq!(
        buckets(&agent_text, "trireme_agent_backup_read_bytes_bucket{le=").len(),
        13
    );
    assert_eq!(
        support::fleet::sample(&agent_text, "trireme_agent_backup_read_bytes_sum"),
        support::fleet::sample(
            &agent_text,
            "trireme_agent_backup_bytes_read_total{source=\"web-1/files\"}"
        )
    );
    assert!(text.contains("trireme_build_info{version=\""), "{text}");
    assert!(text.contains("process_resident_memory_bytes"), "{text}");
    // Certificate expiry as openssl and date(1) read it from the files.
    let not_after = |name: &str| -> f64 {
        let pem = f.ca.join(format!("{name}.pem"));
        let out = std::process::Command::new("openssl")
            .args(["x509", "-enddate", "-noout", "-in"])
            .arg(&pem)
            .output()
            .unwrap();
        let line = String::from_utf8(out.stdout).unwrap();
        let when = line.trim().strip_prefix("notAfter=").unwrap().to_string();
        let out = std::process::Command::new("date")
            .args(["-u", "-d", &when, "+%s"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        support::fleet::sample(
            &text,
            "trireme_tls_certificate_expiry_timestamp_seconds{kind=\"cert\",name=\"localhost\"}"
        ),
        not_after("localhost")
    );
    let ca_line = text
        .lines()
        .find(|l| {
            l.starts_with(
                "trireme_tls_certificate_expiry_timestamp_seconds{kind=\"ca\",name=\"Trireme CA ",
            )
        })
        .unwrap_or_else(|| panic!("no CA expiry in {text}"));
    let ca_value: f64 = ca_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(ca_value, not_after("ca"));
    let text = support::fleet::scrape(&agent_http);
    assert!(
        text.contains("trireme_agent_build_info{version=\""),
        "{text}"
    );
    assert_eq!(
        support::fleet::sample(
            &text,
            "trireme_agent_tls_certificate_expiry_timestamp_seconds{kind=\"cert\",name=\"web-1\"}"
        ),
        not_after("web-1")
    );

    // Renewed with 10 days left (`trireme cert renew`): the controller
    // reloads the files, exports the new end, and `status` says to renew.
    assert!(f.cli_json(&["status"])["problems"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| !p.as_str().unwrap().contains("certificate")));
    let out = std::process::Command::new(support::fleet::bin("trireme"))
        .args(["cert", "renew", "--dir"])
        .arg(&f.ca)
        .args(["--name", "localhost", "--days", "10", "--out"])
        .arg(&f.ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let problem = wait_for(
        "status to warn about the renewed certificate",
        Duration::from_secs(30),
        || {
            f.cli_json(&["status"])["problems"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p.as_str())
                .find(|p| p.contains("certificate \"localhost\" expires on"))
                .map(str::to_string)
        },
    );
    assert!(
        (problem.contains("in 9 days") || problem.contains("in 10 days"))
            && problem.contains("trireme cert renew"),
        "{problem}"
    );
    assert_eq!(
        support::fleet::sample(
            &support::fleet::scrape(&ctl_http),
            "trireme_tls_certificate_expiry_timestamp_seconds{kind=\"cert\",name=\"localhost\"}"
        ),
        not_after("localhost")
    );

    // grpc.health.v1 over mTLS, as a load balancer with a certificate asks.
    let channel = {
        let files = trireme_net::tls::TlsFiles::in_dir(&f.ca, "op");
        let tls = trireme_net::tls::ClientTls {
            config: std::sync::Arc::new(trireme_net::tls::client_config(&files).unwrap()),
            server_name: "localhost".into(),
            server_role: Some(Role::Controller),
        };
        trireme_net::tls::connect(&f.addr().to_string(), tls)
            .await
            .unwrap()
    };
    let mut health = HealthClient::new(channel);
    for service in ["", "trireme.v1.OperatorService", "trireme.v1.AgentService"] {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // The controller goes away: the agent is alive but not ready.
    f.kill_controller();
    wait_for(
        "the agent's /readyz to turn 503",
        Duration::from_secs(20),
        || {
            let (s, b) = http_get(&agent_http, "/readyz");
            (s == 503 && b.contains("not connected to the controller")).then_some(())
        },
    );
    assert_eq!(http_get(&agent_http, "/healthz").0, 200);
    f.start_controller();
    f.wait_connected(&["web-1"]);
    assert_eq!(agent_ready(), "ready: connected to the controller\n");
}

#[test]
fn a_failed_job_is_told_signed_retried_and_recorded() {
    use std::os::unix::fs::PermissionsExt;
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 2, 10_000, 13);
    // The webhook answers 500 once: the delivery is retried.
    let hook = Receiver::start(vec![500]);
    let slack = Receiver::start(Vec::new());
    let secret = f.dir.join("notify.secret");
    std::fs::write(&secret, "s3cret-for-hmac\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // A real SMTP server: Python's smtpd printing every message it accepts.
    let smtp_port = trireme_testkit::ports::free_port();
    let smtp_log = f.dir.join("smtp.log");
    let mut smtpd = std::process::Command::new("python3")
        .args([
            "-u",
            "-W",
            "ignore",
            "-m",
            "smtpd",
            "-n",
            "-c",
            "DebuggingServer",
        ])
        .arg(format!("127.0.0.1:{smtp_port}"))
        .stdout(std::fs::File::create(&smtp_log).unwrap())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("python3 -m smtpd (Python 3.11's standard library)");
    wait_for("the SMTP server to listen", Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", smtp_port)).ok()
    });
    let ctl_http = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    f.controller_extra = format!(
        "metrics_listen = \"{ctl_http}\"\n[[notify]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\nsecret_file = {secret:?}\nevents = [\"job_failed\"]\n\n[[notify]]\nname = \"chat\"\nkind = \"slack\"\nurl = \"http://{}/services/T/B/X\"\n\n[[notify]]\nname = \"mail\"\nkind = \"email\"\nurl = \"smtp+insecure://127.0.0.1:{smtp_port}\"\nfrom = \"trireme@example.com\"\nto = [\"oncall@example.com\", \"backup-team@example.com\"]\nevents = [\"job_failed\"]\n",
        hook.addr, slack.addr
    );
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snap = f.cli_json(&["snapshots", "ls", "web-1/files"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A restore into the live, non-empty volume without --overwrite fails.
    let out = f.cli_as(
        "op",
        &["restore", &snap, "--to", "web-1:source:files", "--wait"],
    );
    assert_eq!(out.status.code(), Some(5));

    let (path, headers, body) = wait_for(
        "the webhook to be delivered (after one 500)",
        Duration::from_secs(30),
        || {
            let r = hook.requests();
            (r.len() >= 2).then(|| r[1].clone())
        },
    );
    assert_eq!(path, "/hook");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "job_failed", "{v}");
    assert_eq!(v["subject"], "web-1/files", "{v}");
    assert!(
        v["title"]
            .as_str()
            .unwrap()
            .contains("restore of web-1/files")
            && v["text"].as_str().unwrap().contains("not empty"),
        "{v}"
    );
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    assert_eq!(header("x-trireme-event"), "job_failed");
    // The signature, recomputed by openssl over the bytes received.
    let body_file = f.dir.join("body.json");
    std::fs::write(&body_file, &body).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-hmac", "s3cret-for-hmac", "-r"])
        .arg(&body_file)
        .output()
        .unwrap();
    let want = String::from_utf8(out.stdout).unwrap()[..64].to_string();
    assert_eq!(header("x-trireme-signature"), format!("sha256={want}"));

    // Slack got it too, as text; only the failure was told (the backup
    // that succeeded was not).
    let r = wait_for("the Slack message", Duration::from_secs(30), || {
        let r = slack.requests();
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(r.len(), 1, "{r:?}");
    assert_eq!(r[0].0, "/services/T/B/X");
    let v: Value = serde_json::from_str(&r[0].2).unwrap();
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("*[Trireme] restore of web-1/files"),
        "{v}"
    );
    // The email, as the SMTP server received it: both recipients, the
    // subject, the text and what it is about.
    let mail = wait_for("the email", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&smtp_log).unwrap_or_default();
        text.contains("END MESSAGE").then_some(text)
    });
    let _ = smtpd.kill();
    let _ = smtpd.wait();
    assert!(mail.contains("From: trireme@example.com"), "{mail}");
    assert!(
        mail.contains("To: oncall@example.com, backup-team@example.com"),
        "{mail}"
    );
    assert!(
        mail.contains("Subject: [Trireme] restore of web-1/files"),
        "{mail}"
    );
    assert!(
        mail.contains("event:   job_failed") && mail.contains("subject: web-1/files"),
        "{mail}"
    );
    assert_eq!(
        mail.matches("END MESSAGE").count(),
        1,
        "only the failure: {mail}"
    );
    // Each delivery is in the audit log.
    let audit = wait_for(
        "the deliveries in the audit log",
        Duration::from_secs(10),
        || {
            let a = f.cli(&["audit", "ls", "--actor", "notify"]);
            (a.contains("job_failed web-1/files to oncall")
                && a.contains("job_failed web-1/files to chat")
                && a.contains("job_failed web-1/files to mail"))
            .then_some(a)
        },
    );
    assert!(!audit.contains("not delivered"), "{audit}");
    // Each delivery's time, in the controller's histogram: the webhook's
    // includes its retry after the 500 (a wait of 1 s).
    let text = support::fleet::scrape(&ctl_http);
    for kind in ["webhook", "slack", "email"] {
        let series = format!(
            "trireme_notification_delivery_duration_seconds_count{{kind=\"{kind}\",outcome=\"delivered\"}}"
        );
        assert_eq!(support::fleet::sample(&text, &series), 1.0, "{kind}");
        let buckets = text
            .lines()
            .filter(|l| {
                l.starts_with(&format!(
                    "trireme_notification_delivery_duration_seconds_bucket{{kind=\"{kind}\",outcome=\"delivered\",le="
                ))
            })
            .count();
        assert_eq!(buckets, 13, "{kind}: 12 bounds and +Inf");
    }
    let webhook_secs = support::fleet::sample(
        &text,
        "trireme_notification_delivery_duration_seconds_sum{kind=\"webhook\",outcome=\"delivered\"}",
    );
    assert!(webhook_secs >= 1.0, "{webhook_secs}");
}

/// A certificate's notAfter in Unix seconds as openssl and date(1) read it.
fn openssl_not_after(pem: &Path) -> i64 {
    let out = std::process::Command::new("openssl")
        .args(["x509", "-enddate", "-noout", "-in"])
        .arg(pem)
        .output()
        .unwrap();
    let line = String::from_utf8(out.stdout).unwrap();
    let when = line.trim().strip_prefix("notAfter=").unwrap().to_string();
    let out = std::process::Command::new("date")
        .args(["-u", "-d", &when, "+%s"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn an_agents_certificate_expiry_reaches_status_metrics_and_agents_ls() {
    use support::fleet::{sample, scrape};
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 1, 1000, 21);
    let ctl_http = format!("127.0.0.1:{}", trireme_testkit::ports::free_port());
    f.controller_extra = format!("metrics_listen = \"{ctl_http}\"\n");
    f.start_controller();
    let spec = AgentSpec::volume("web-1", "files", &data);
    f.start_agent(&spec);
    f.wait_connected(&["web-1"]);
    let pem = f.ca.join("web-1.pem");
    let series = "trireme_agent_certificate_expiry_timestamp_seconds{agent=\"web-1\"}";

    // A year left: exported as openssl reads it, nothing in status.
    let year = openssl_not_after(&pem);
    assert_eq!(sample(&scrape(&ctl_http), series) as i64, year);
    let cert_problems = |f: &Fleet| -> Vec<String> {
        f.cli_json(&["status"])["problems"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|p| p.as_str())
            .filter(|p| p.contains("certificate"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(cert_problems(&f), Vec::<String>::new());

    // Renewed with 10 days left (`trireme cert renew`) and the agent
    // restarted: the controller reads the new end from its session.
    let out = std::process::Command::new(support::fleet::bin("trireme"))
        .args(["cert", "renew", "--dir"])
        .arg(&f.ca)
        .args(["--name", "web-1", "--days", "10", "--out"])
        .arg(&f.ca)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = openssl_not_after(&pem);
    assert!(short < year - 300 * 86_400, "{short} vs {year}");
    f.kill_agent("web-1");
    f.start_agent(&spec);
    wait_for(
        "the controller to export the renewed certificate's end",
        Duration::from_secs(30),
        || (sample(&scrape(&ctl_http), series) as i64 == short).then_some(()),
    );
    let problems = cert_problems(&f);
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(
        problems[0].starts_with("agent web-1: its certificate expires on ")
            && (problems[0].contains("(in 9 days)") || problems[0].contains("(in 10 days)"))
            && problems[0].contains("trireme cert renew --name web-1"),
        "{}",
        problems[0]
    );
    let when = chrono::DateTime::from_timestamp(short, 0)
        .unwrap()
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let agents = f.cli_json(&["agents", "ls"]);
    let web = agents
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "web-1")
        .unwrap_or_else(|| panic!("no web-1 in {agents}"));
    assert_eq!(web["certificate_not_after"], when.as_str(), "{web}");
    let table = f.cli(&["agents", "ls"]);
    let header = table.lines().next().unwrap();
    assert!(header.contains("CERT EXPIRES"), "{table}");
    let row = table.lines().find(|l| l.starts_with("web-1")).unwrap();
    assert!(row.contains(&when), "{table}");

    // Kept in the catalog: a restarted controller knows it while the agent
    // is away.
    f.kill_agent("web-1");
    f.stop_controller();
    f.start_controller();
    wait_for(
        "the restarted controller's metrics",
        Duration::from_secs(30),
        || {
            let (s, text) = support::fleet::http_get(&ctl_http, "/metrics");
            (s == 200).then_some(text)
        },
    );
    let text = scrape(&ctl_http);
    assert_eq!(
        sample(&text, "trireme_agent_connected{agent=\"web-1\"}"),
        0.0
    );
    assert_eq!(sample(&text, series) as i64, short);
    assert!(cert_problems(&f)
        .iter()
        .any(|p| p.starts_with("agent web-1: its certificate expires on ")));
}
