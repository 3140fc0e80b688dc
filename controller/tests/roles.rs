//! Who may do what, against a real controller process and the real `trireme`
//! binary (the CLI tests' fake operator service only checks the CLI's side):
//! every command that changes something is refused to a viewer with exit
//! code 3 and a message naming the role it needs, and each refusal is in the
//! audit log; every read is open to a viewer; an agent's certificate opens
//! nothing on the operator service; and a refused change leaves the catalog
//! as it was.

mod support;

use std::process::Output;

use serde_json::Value;
use support::fleet::Fleet;
use trireme_net::tls::{ca, Role};

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const JOB: &str = "0193a0b1-0000-7000-8000-000000000002";

#[test]
fn every_change_needs_the_operator_role_and_every_read_is_open_to_viewers() {
    let mut f = Fleet::new();
    ca::issue(&f.ca, Role::Agent, "web-1", 30, &f.ca).unwrap();
    f.start_controller();
    let policy = f.dir.join("p.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"web-1/files\"\nschedule = \"0 3 * * *\"\nretention = \"daily-7\"\n",
    );
    let policy = policy.to_str().unwrap().to_string();
    let export = f.dir.join("export.key");
    let export = export.to_str().unwrap().to_string();
    let pass = f.dir.join("passphrase");
    Fleet::write_file(&pass, "correct horse battery staple 42\n");
    std::fs::set_permissions(&pass, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let pass = pass.to_str().unwrap().to_string();

    // (arguments, the action name the controller refuses and audits)
    let changes: Vec<(Vec<&str>, &str)> = vec![
        (vec!["policy", "apply", "-f", &policy], "policy apply"),
        (vec!["backup", "run", "web-1/files"], "backup run"),
        (vec!["jobs", "cancel", JOB], "job cancel"),
        (
            vec!["restore", "deadbeef", "--to", "web-1:/tmp/x"],
            "restore",
        ),
        (
            vec!["restore-test", "run", "web-1/files"],
            "restore-test run",
        ),
        (vec!["drill", "run"], "drill run"),
        (vec!["dump", "deadbeef", "/etc/hosts"], "dump"),
        (
            vec!["catalog", "rebuild", "--from", "loc2"],
            "catalog rebuild",
        ),
        (vec!["verify"], "verify"),
        (vec!["prune"], "prune"),
        (vec!["prune", "--dry-run"], "prune"),
        (
            vec!["snapshots", "hold", "deadbeef", "--reason", "case 1"],
            "snapshot hold",
        ),
        (vec!["snapshots", "unhold", "deadbeef"], "snapshot unhold"),
        (
            vec!["snapshots", "tag", "deadbeef", "--add", "x"],
            "snapshot tag",
        ),
        (vec!["snapshots", "forget", "deadbeef"], "snapshot forget"),
        (vec!["mfa", "enroll"], "mfa enroll"),
        (vec!["mfa", "confirm", "123456"], "mfa confirm"),
        (
            vec![
                "key",
                "export",
                "--out",
                &export,
                "--passphrase-file",
                &pass,
            ],
            "key export",
        ),
    ];
    for (args, _) in &changes {
        let out = f.cli_as("viewer", args);
        assert_eq!(
            out.status.code(),
            Some(3),
            "viewer {args:?}: {}",
            text(&out)
        );
        let msg = text(&out);
        assert!(
            msg.contains("needs the operator role, but viewer has the viewer role"),
            "viewer {args:?}: {msg}"
        );
    }
    assert!(
        !std::path::Path::new(&export).exists(),
        "a refused key export wrote {export}"
    );

    // Nothing the viewer asked for happened.
    let policies = f.cli_json(&["policy", "ls"]);
    assert_eq!(policies.as_array().map(Vec::len), Some(0), "{policies}");
    let jobs = f.cli_json(&["jobs", "ls"]);
    assert_eq!(jobs.as_array().map(Vec::len), Some(0), "{jobs}");

    // Each refusal is audited, by the viewer's name, with its action.
    let out = f.cli_as("viewer", &["audit", "ls", "--json", "--limit", "1000"]);
    assert!(out.status.success(), "{}", text(&out));
    let entries: Vec<Value> = serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    for (args, action) in &changes {
        let refused = entries
            .iter()
            .filter(|e| {
                e["actor"] == "viewer" && e["action"] == *action && e["outcome"] == "refused"
            })
            .count();
        let want = changes.iter().filter(|(_, a)| a == action).count();
        assert_eq!(
            refused, want,
            "refusals of {action} ({args:?}) in the audit log: {entries:#?}"
        );
    }

    // Every read is open to a viewer.
    for args in [
        &["agents", "ls"][..],
        &["sources", "ls"],
        &["policy", "ls"],
        &["jobs", "ls"],
        &["snapshots", "ls"],
        &[
            "snapshots",
            "ls",
            "--tag",
            "x",
            "--host",
            "web-1",
            "--since",
            "7d",
        ],
        &["locations", "ls"],
        &["restore-test", "ls"],
        &["drill", "ls"],
        &["status"],
        &["audit", "ls"],
        &["audit", "verify"],
        &["find", "*.json"],
        &[
            "find",
            "/srv/**",
            "--source",
            "web-1/files",
            "--since",
            "7d",
        ],
    ] {
        let out = f.cli_as("viewer", args);
        assert!(out.status.success(), "viewer {args:?}: {}", text(&out));
    }
    // A read of something absent is "not found", not a refusal.
    let out = f.cli_as("viewer", &["jobs", "show", JOB]);
    assert!(!out.status.success());
    assert_ne!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("not found"), "{}", text(&out));
    // The looks inside snapshots are reads too: an unknown snapshot is "not
    // found" to a viewer, not a refusal.
    for args in [
        &["ls", "deadbeef"][..],
        &["ls", "deadbeef", "/etc", "-R", "-l"],
        &["diff", "deadbeef", "cafebabe"],
        &["stats", "deadbeef"],
        &["stats", "--source", "web-1/files"],
    ] {
        let out = f.cli_as("viewer", args);
        assert!(!out.status.success(), "viewer {args:?}: {}", text(&out));
        assert_ne!(
            out.status.code(),
            Some(3),
            "viewer {args:?}: {}",
            text(&out)
        );
        assert!(
            text(&out).contains("not found") || text(&out).contains("no snapshot"),
            "viewer {args:?}: {}",
            text(&out)
        );
    }

    // An agent's certificate opens nothing on the operator service, not even
    // a read.
    for args in [
        &["jobs", "ls"][..],
        &["backup", "run", "web-1/files"],
        &["ls", "deadbeef"],
        &["diff", "deadbeef", "cafebabe"],
        &["find", "*.json"],
        &["stats"],
    ] {
        let out = f.cli_as("web-1", args);
        assert_eq!(out.status.code(), Some(3), "agent {args:?}: {}", text(&out));
        assert!(
            text(&out).contains("has the agent role"),
            "agent {args:?}: {}",
            text(&out)
        );
    }

    // The operator may do what the viewer may not (here: apply the policy).
    let out = f.cli_as("op", &["policy", "apply", "-f", &policy]);
    assert!(out.status.success(), "{}", text(&out));
    let policies = f.cli_json(&["policy", "ls"]);
    assert_eq!(policies.as_array().map(Vec::len), Some(1), "{policies}");

    // A passphrase file others can read is refused before anything is
    // asked of the controller, the fix named once.
    let out = f.cli_as(
        "op",
        &[
            "key",
            "export",
            "--out",
            &export,
            "--passphrase-file",
            "/dev/null",
        ],
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert_eq!(msg.matches("run `chmod 600 /dev/null`").count(), 1, "{msg}");
    assert!(!std::path::Path::new(&export).exists());
}
