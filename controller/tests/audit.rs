//! The audit log, MFA and the recovery key, against a real controller
//! process and the real `trireme` / `trireme-controller` binaries: also a
//! prune needing a code like a restore, the back-off after wrong codes, and
//! a revoked agent losing its open session.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::fleet::{bin, make_data, wait_for, AgentSpec, Fleet};
use trireme_controller::mfa::{code_at, secret_from_base32, STEP_SECS};
use trireme_controller::Catalog;
use trireme_net::tls::{ca, Role};
use trireme_testkit::tree;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The start of the current TOTP step, after waiting until at least 12 s
/// of it are left (so a few CLI calls all see the same step).
fn quiet_step() -> u64 {
    loop {
        let now = unix_now();
        let left = STEP_SECS - now % STEP_SECS;
        if left >= 12 {
            return now - now % STEP_SECS;
        }
        std::thread::sleep(Duration::from_secs(left));
    }
}

fn policy_file(f: &Fleet, n: u32) -> String {
    let p = f.dir.join(format!("policy-{n}.toml"));
    Fleet::write_file(
        &p,
        &format!(
            "[[policy]]\nsource = \"web-{n}/files\"\nschedule = \"0 3 * * *\"\nretention = \"daily-7\"\n"
        ),
    );
    p.to_str().unwrap().to_string()
}

fn audit_entries(f: &Fleet, who: &str, extra: &[&str]) -> Vec<Value> {
    let mut args = vec!["audit", "ls", "--json", "--limit", "1000"];
    args.extend_from_slice(extra);
    let out = f.cli_as(who, &args);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn sensitive_actions_need_a_fresh_totp_code() {
    let mut f = Fleet::new();
    ca::issue(&f.ca, Role::Operator, "op2", 30, &f.ca).unwrap();
    f.controller_extra = "[mfa]\nrequired = true\n".into();
    f.start_controller();
    let p1 = policy_file(&f, 1);

    // Required, not enrolled: refused, saying how to enroll.
    let out = f.cli_as("op", &["policy", "apply", "-f", &p1]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("policy apply is a sensitive action")
            && msg.contains("requires MFA")
            && msg.contains("trireme mfa enroll"),
        "{msg}"
    );

    // A viewer cannot enroll.
    let out = f.cli_as("viewer", &["mfa", "enroll"]);
    assert!(!out.status.success(), "{}", text(&out));

    // Enroll and confirm.
    let enrolled = f.cli_json(&["mfa", "enroll"]);
    assert_eq!(enrolled["account"], "op");
    let uri = enrolled["otpauth_uri"].as_str().unwrap();
    assert!(
        uri.starts_with("otpauth://totp/Trireme:op?secret="),
        "{uri}"
    );
    let secret = secret_from_base32(enrolled["secret"].as_str().unwrap()).unwrap();
    let step = quiet_step();
    let code = |offset: i64| code_at(&secret, (step as i64 + offset * STEP_SECS as i64) as u64);
    let out = f.cli_as("op", &["mfa", "confirm", &code(-1)]);
    assert!(out.status.success(), "{}", text(&out));

    // Enrolled: no code, a clear message naming the action and the flag.
    let out = f.cli_as("op", &["policy", "apply", "-f", &p1]);
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains(
            "policy apply is a sensitive action: pass --totp <code> from your authenticator"
        ),
        "{msg}"
    );
    // A restore too (checked before the snapshot is even looked up).
    let out = f.cli_as("op", &["restore", "deadbeef", "--to", "web-1:/tmp/x"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("restore is a sensitive action: pass --totp <code>"),
        "{}",
        text(&out)
    );
    // Restore tests, drills and catalog rebuilds too.
    for (args, action) in [
        (
            &["restore-test", "run", "web-1/files"][..],
            "restore-test run",
        ),
        (&["drill", "run"][..], "drill run"),
        (
            &["catalog", "rebuild", "--from", "loc2"][..],
            "catalog rebuild",
        ),
    ] {
        let out = f.cli_as("op", args);
        assert!(!out.status.success());
        assert!(
            text(&out).contains(&format!(
                "{action} is a sensitive action: pass --totp <code>"
            )),
            "{}",
            text(&out)
        );
    }
    // A wrong code.
    let wrong = if code(0) == "000000" {
        "111111"
    } else {
        "000000"
    };
    let out = f.cli_as("op", &["--totp", wrong, "policy", "apply", "-f", &p1]);
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong or expired"), "{}", text(&out));

    // A valid code: done.
    let out = f.cli_as("op", &["policy", "apply", "-f", &p1, "--totp", &code(0)]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("applied web-1/files"), "{}", text(&out));
    // The same code again is a replay.
    let p2 = policy_file(&f, 2);
    let out = f.cli_as("op", &["policy", "apply", "-f", &p2, "--totp", &code(0)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("already used"), "{}", text(&out));
    // The next code, from the environment this time.
    let out = Command::new(bin("trireme"))
        .args(["--controller", &format!("127.0.0.1:{}", f.port)])
        .args(["--server-name", "localhost", "--tls-dir"])
        .arg(&f.ca)
        .args(["--name", "op", "policy", "apply", "-f", &p2])
        .env("TRIREME_TOTP", code(1))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    // Another operator who never enrolled is refused (required = true).
    let out = f.cli_as("op2", &["policy", "apply", "-f", &p2]);
    assert!(!out.status.success());
    assert!(text(&out).contains("requires MFA"), "{}", text(&out));

    // Everything above is in the audit log, refusals with where they came from.
    let entries = audit_entries(&f, "viewer", &[]);
    let find = |action: &str, outcome: &str, actor: &str| {
        entries
            .iter()
            .filter(|e| e["action"] == action && e["outcome"] == outcome && e["actor"] == actor)
            .count()
    };
    assert_eq!(find("policy apply", "refused", "op"), 4, "{entries:#?}");
    assert_eq!(find("policy apply", "ok", "op"), 2, "{entries:#?}");
    assert_eq!(find("restore", "refused", "op"), 1, "{entries:#?}");
    assert_eq!(find("mfa enroll", "refused", "viewer"), 1, "{entries:#?}");
    assert_eq!(find("mfa confirm", "ok", "op"), 1, "{entries:#?}");
    assert_eq!(find("policy apply", "refused", "op2"), 1, "{entries:#?}");
    for e in &entries {
        assert!(e["peer"].as_str().unwrap().starts_with("127.0.0.1:"), "{e}");
    }
    let replay = entries
        .iter()
        .find(|e| {
            e["reason"]
                .as_str()
                .is_some_and(|r| r.contains("already used"))
        })
        .unwrap();
    assert_eq!(replay["role"], "operator");
    assert!(entries.iter().any(|e| e["target"]
        .as_str()
        .unwrap_or("")
        .contains("with a TOTP code")));
    // Filters.
    let only_op2 = audit_entries(&f, "op", &["--actor", "op2"]);
    assert_eq!(only_op2.len(), 1, "{only_op2:#?}");
    assert!(audit_entries(&f, "op", &["--since", "2099-01-01T00:00:00Z"]).is_empty());
    assert_eq!(
        audit_entries(&f, "op", &["--since", "1h"]).len(),
        entries.len()
    );

    // The chain verifies, and reaches every location's mirror.
    wait_for("the audit mirror", Duration::from_secs(30), || {
        let out = f.cli_as("viewer", &["audit", "verify"]);
        let t = text(&out);
        (out.status.success()
            && t.contains("chain:")
            && t.contains("intact")
            && t.matches("agrees").count() == 3
            && !t.contains("(0 entries compared)"))
        .then_some(())
    });
    // A lost authenticator: the enrollment is reset offline, audited, and
    // the operator must enroll again (required = true).
    f.kill_controller();
    let out = Command::new(bin("trireme-controller"))
        .args(["mfa", "reset", "--name", "op", "--config"])
        .arg(f.dir.join("controller.toml"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    f.start_controller();
    let out = f.cli_as("op", &["policy", "apply", "-f", &p2, "--totp", &code(1)]);
    assert!(text(&out).contains("requires MFA"), "{}", text(&out));
    let entries = audit_entries(&f, "op", &[]);
    assert!(
        entries
            .iter()
            .any(|e| e["action"] == "mfa reset" && e["target"] == "op" && e["peer"] == "local"),
        "{entries:#?}"
    );
    for i in 1..=3 {
        let dir = f.location(i).join("audit");
        assert!(
            std::fs::read_dir(&dir).unwrap().count() >= 1,
            "{}",
            dir.display()
        );
    }
}

/// Make a few audit entries: operator actions and a refusal.
fn some_entries(f: &Fleet) {
    for n in 1..=3 {
        let p = policy_file(f, n);
        f.cli(&["policy", "apply", "-f", &p]);
    }
    let p = policy_file(f, 4);
    let out = f.cli_as("viewer", &["policy", "apply", "-f", &p]);
    assert!(!out.status.success());
}

fn offline_verify(f: &Fleet) -> Output {
    Command::new(bin("trireme-controller"))
        .args(["audit", "verify", "--data-dir"])
        .arg(f.dir.join("controller"))
        .output()
        .unwrap()
}

#[test]
fn an_edited_or_removed_entry_is_named_by_audit_verify() {
    let mut f = Fleet::new();
    f.start_controller();
    some_entries(&f);
    let out = f.cli(&["audit", "verify"]);
    assert!(out.contains("intact (4 entries)"), "{out}");
    f.kill_controller();

    // The verification itself is entry 5.
    let out = offline_verify(&f);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("intact (5 entries)"), "{}", text(&out));

    // Edit entry 3 in the catalog: who applied the policy.
    let catalog_dir = f.dir.join("controller").join("catalog");
    let original = {
        let c = Catalog::open(&catalog_dir).unwrap();
        let mut e = c.audit().entries().get(&3).unwrap().unwrap();
        let original = e.clone();
        assert_eq!(e.actor, "op");
        e.actor = "someone-else".into();
        c.audit().entries().insert(&3, &e).unwrap();
        c.flush().unwrap();
        original
    };
    let out = offline_verify(&f);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("BROKEN at entry 3") && t.contains("does not match its hash"),
        "{t}"
    );
    // The running controller says the same through the CLI.
    f.start_controller();
    let out = f.cli_as("viewer", &["audit", "verify"]);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(t.contains("the audit log is broken at entry 3"), "{t}");
    f.kill_controller();

    // Put it back and remove entry 2 instead.
    {
        let c = Catalog::open(&catalog_dir).unwrap();
        c.audit().entries().insert(&3, &original).unwrap();
        assert!(c.audit().entries().remove(&2).unwrap());
        c.flush().unwrap();
    }
    let out = offline_verify(&f);
    assert!(!out.status.success());
    let t = text(&out);
    assert!(
        t.contains("BROKEN at entry 2") && t.contains("entry 2 is missing"),
        "{t}"
    );
    f.start_controller();
    let out = f.cli_as("op", &["audit", "verify", "-o", "json"]);
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["first_broken_seq"], 2);
}

#[test]
fn a_chain_broken_while_the_controller_was_stopped_is_told_at_start() {
    let hook = support::receiver::Receiver::start(Vec::new());
    let mut f = Fleet::new();
    f.controller_extra = format!(
        "[[notify]]\nname = \"oncall\"\nkind = \"webhook\"\nurl = \"http://{}/hook\"\nevents = [\"audit_chain_broken\"]\n",
        hook.addr
    );
    f.start_controller();
    some_entries(&f);
    let log = f.controller_log();
    // The check at start has run (intact: nothing told) once the
    // notification watcher looked twice; stop cleanly.
    std::thread::sleep(Duration::from_secs(6));
    f.stop_controller();
    assert!(hook.requests().is_empty(), "{:?}", hook.requests());

    // An attacker with the catalog's files and the controller stopped
    // rewrites who applied policy 2 (entry 3).
    let catalog_dir = f.dir.join("controller").join("catalog");
    {
        let c = Catalog::open(&catalog_dir).unwrap();
        let mut e = c.audit().entries().get(&3).unwrap().unwrap();
        assert_eq!(e.actor, "op");
        e.actor = "someone-else".into();
        c.audit().entries().insert(&3, &e).unwrap();
        c.flush().unwrap();
    }
    f.start_controller();
    let (path, headers, body) = wait_for(
        "the webhook to be told of the break",
        Duration::from_secs(30),
        || hook.requests().first().cloned(),
    );
    assert_eq!(path, "/hook");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k == "x-trireme-event" && v == "audit_chain_broken"),
        "{headers:?}"
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["event"], "audit_chain_broken", "{v}");
    assert_eq!(v["subject"], "audit", "{v}");
    assert_eq!(
        v["title"], "the audit log's hash chain is broken at entry 3",
        "{v}"
    );
    assert!(
        v["text"]
            .as_str()
            .unwrap()
            .starts_with("entry 3 does not match its hash")
            && v["text"].as_str().unwrap().contains("trireme audit verify"),
        "{v}"
    );
    // Logged, and recorded in the (broken) chain with the delivery.
    assert!(
        Fleet::log_text(&log).contains("the audit log's hash chain is broken"),
        "{}",
        Fleet::log_text(&log)
    );
    let entries = audit_entries(&f, "op", &[]);
    let found = entries.iter().any(|e| {
        e["action"] == "audit chain check"
            && e["target"] == "entry 3"
            && e.to_string().contains("does not match its hash")
    });
    assert!(found, "{entries:?}");
    wait_for(
        "the delivery to be audited",
        Duration::from_secs(20),
        || {
            audit_entries(&f, "op", &["--actor", "notify"])
                .iter()
                .any(|e| e["target"] == "audit_chain_broken audit to oncall")
                .then_some(())
        },
    );
    // Told once, not at every look.
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(hook.requests().len(), 1, "{:?}", hook.requests());
}

#[test]
fn the_recovery_key_round_trips_and_a_wrong_passphrase_fails() {
    let mut f = Fleet::new();
    // Start and stop the controller once so its config and catalog exist.
    f.start_controller();
    f.kill_controller();
    let key = f.dir.join("master.key");
    let export = f.dir.join("recovery.json");
    let ctl = |args: &[&str], pass: &str| {
        Command::new(bin("trireme-controller"))
            .args(args)
            .env("TRIREME_RECOVERY_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    let cfg = f.dir.join("controller.toml");
    let (key_s, export_s, cfg_s) = (
        key.to_str().unwrap(),
        export.to_str().unwrap(),
        cfg.to_str().unwrap(),
    );

    let out = ctl(
        &["key", "export", "--key-file", key_s, "--out", export_s],
        "too short",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("at least 12"), "{}", text(&out));
    assert!(!export.exists());

    let pass = "correct horse battery staple";
    let out = ctl(
        &["key", "export", "--config", cfg_s, "--out", export_s],
        pass,
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let key_hex = std::fs::read_to_string(&key).unwrap();
    let exported = std::fs::read_to_string(&export).unwrap();
    assert!(exported.contains("argon2id"), "{exported}");
    assert!(!exported.contains(key_hex.trim().split(':').nth(1).unwrap()));
    // Never over an existing export.
    let out = ctl(
        &["key", "export", "--key-file", key_s, "--out", export_s],
        pass,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refusing to overwrite"),
        "{}",
        text(&out)
    );

    // Wrong passphrase: a clear error, no file.
    let restored = f.dir.join("restored.key");
    let restored_s = restored.to_str().unwrap();
    let out = ctl(
        &["key", "import", "--in", export_s, "--key-file", restored_s],
        "not the passphrase at all",
    );
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong passphrase"), "{}", text(&out));
    assert!(!restored.exists());

    // Right passphrase (from a file this time): the same key bytes, 0600.
    let pass_file = f.dir.join("pass.txt");
    std::fs::write(&pass_file, format!("{pass}\n")).unwrap();
    std::fs::set_permissions(&pass_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = Command::new(bin("trireme-controller"))
        .args(["key", "import", "--in", export_s, "--key-file", restored_s])
        .arg("--passphrase-file")
        .arg(&pass_file)
        .env_remove("TRIREME_RECOVERY_PASSPHRASE")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read(&restored).unwrap(),
        std::fs::read(&key).unwrap()
    );
    assert_eq!(
        std::fs::metadata(&restored).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Import never overwrites a key file.
    let out = ctl(
        &["key", "import", "--in", export_s, "--key-file", key_s],
        pass,
    );
    assert!(!out.status.success());
    assert!(
        text(&out).contains("refusing to overwrite"),
        "{}",
        text(&out)
    );

    // The export through --config, with the controller stopped, is audited.
    let c = Catalog::open(f.dir.join("controller").join("catalog")).unwrap();
    let entries = c.audit().list(None, None, 100).unwrap();
    let e = entries
        .iter()
        .find(|e| e.action == "key export")
        .expect("the export is audited");
    assert_eq!(e.peer, "local");
    assert!(e.target.contains("recovery.json"), "{e:?}");
    assert_eq!(c.audit().verify().broken, None);
}

#[test]
fn the_restored_key_opens_the_repository() {
    // The imported key is the one the controller's repository needs: a
    // controller started on it accepts the existing locations.
    let mut f = Fleet::new();
    f.start_controller();
    f.kill_controller();
    let key = f.dir.join("master.key");
    let export = f.dir.join("recovery.json");
    let pass = "twelve chars or more";
    let run = |args: &[&str]| {
        let out = Command::new(bin("trireme-controller"))
            .args(args)
            .env("TRIREME_RECOVERY_PASSPHRASE", pass)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out));
    };
    run(&[
        "key",
        "export",
        "--key-file",
        key.to_str().unwrap(),
        "--out",
        export.to_str().unwrap(),
    ]);
    std::fs::remove_file(&key).unwrap();
    run(&[
        "key",
        "import",
        "--in",
        export.to_str().unwrap(),
        "--key-file",
        key.to_str().unwrap(),
    ]);
    f.start_controller();
    let out = f.cli(&["status"]);
    assert!(out.contains("version"), "{out}");
}

#[test]
fn a_restore_needs_a_code_and_key_grants_are_audited() {
    let mut f = Fleet::new();
    let data = f.dir.join("data");
    make_data(&data, 3, 50_000, 7);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snaps = f.cli_json(&["snapshots", "ls", "web-1/files"]);
    let snap = snaps[0]["id"].as_str().unwrap().to_string();

    let enrolled = f.cli_json(&["mfa", "enroll"]);
    let secret = secret_from_base32(enrolled["secret"].as_str().unwrap()).unwrap();
    let step = quiet_step();
    let code = |offset: i64| code_at(&secret, (step as i64 + offset * STEP_SECS as i64) as u64);
    f.cli(&["mfa", "confirm", &code(-1)]);

    let target = f.dir.join("restored");
    let to = format!("web-1:{}", target.display());
    let out = f.cli_as("op", &["restore", &snap[..12], "--to", &to]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("restore is a sensitive action: pass --totp <code>"),
        "{}",
        text(&out)
    );
    assert!(!target.exists());
    let out = f.cli(&[
        "restore",
        &snap[..12],
        "--to",
        &to,
        "--wait",
        "--totp",
        &code(0),
    ]);
    assert!(out.contains("succeeded"), "{out}");
    assert!(tree(&data) == tree(&target), "restored tree differs");

    // A copy damaged at a location: found and repaired by `verify --deep`,
    // and the controller's findings are in the chain.
    let v = f.cli_json(&["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    let damaged = f.location(2).join("snapshots").join(&snap);
    let good = std::fs::read(&damaged).unwrap();
    let mut bytes = good.clone();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&damaged, &bytes).unwrap();
    // The background passes' rolling deep verification may get there first.
    wait_for(
        "the damaged copy to be repaired",
        Duration::from_secs(30),
        || {
            f.cli_json(&["verify", "--deep"]);
            (std::fs::read(&damaged).ok()? == good).then_some(())
        },
    );

    let entries = audit_entries(&f, "op", &[]);
    assert!(
        entries.iter().any(|e| e["action"] == "copy damaged"
            && e["actor"] == "controller"
            && e["outcome"] == "problem"
            && e["target"].as_str().unwrap().contains(&snap)),
        "{entries:#?}"
    );
    let has = |action: &str, actor: &str, outcome: &str| {
        entries
            .iter()
            .any(|e| e["action"] == action && e["actor"] == actor && e["outcome"] == outcome)
    };
    assert!(has("backup run", "op", "ok"), "{entries:#?}");
    assert!(has("restore", "op", "refused"), "{entries:#?}");
    assert!(has("restore", "op", "ok"), "{entries:#?}");
    assert!(has("data key generated", "web-1", "ok"), "{entries:#?}");
    assert!(has("data keys granted", "web-1", "ok"), "{entries:#?}");
    let restore = entries
        .iter()
        .find(|e| e["action"] == "restore" && e["outcome"] == "ok")
        .unwrap();
    assert!(
        restore["target"]
            .as_str()
            .unwrap()
            .contains("with a TOTP code"),
        "{restore}"
    );
    let grant = entries
        .iter()
        .find(|e| e["action"] == "data keys granted")
        .unwrap();
    assert_eq!(grant["role"], "agent");
    assert!(
        grant["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
        "{grant}"
    );
    let out = f.cli(&["audit", "verify"]);
    assert!(out.contains("intact"), "{out}");
}

#[test]
fn key_export_from_the_operator_cli_needs_a_code_and_imports_on_a_new_host() {
    let mut f = Fleet::new();
    f.start_controller();
    let enrolled = f.cli_json(&["mfa", "enroll"]);
    let secret = secret_from_base32(enrolled["secret"].as_str().unwrap()).unwrap();
    let step = quiet_step();
    let code = |offset: i64| code_at(&secret, (step as i64 + offset * STEP_SECS as i64) as u64);
    f.cli(&["mfa", "confirm", &code(-1)]);

    let pass = f.dir.join("passphrase");
    std::fs::write(&pass, "correct horse battery staple\n").unwrap();
    std::fs::set_permissions(&pass, std::fs::Permissions::from_mode(0o600)).unwrap();
    let export = f.dir.join("recovery.json");
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = ["key", "export", "--out"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.push(export.display().to_string());
        a.push("--passphrase-file".into());
        a.push(pass.display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let argv = args(&[]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = f.cli_as("op", &argv);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("key export is a sensitive action: pass --totp <code>"),
        "{}",
        text(&out)
    );
    assert!(!export.exists(), "nothing written without the code");
    let out = f.cli_as("viewer", &argv);
    assert!(!out.status.success());
    assert!(text(&out).contains("operator role"), "{}", text(&out));

    let c = code(0);
    let argv = args(&["--totp", &c]);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = f.cli(&argv);
    assert!(out.contains("wrote master key"), "{out}");
    assert_eq!(
        std::fs::metadata(&export).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let body = std::fs::read_to_string(&export).unwrap();
    assert!(
        body.contains("argon2id") && !body.contains("trireme-master-key-v1"),
        "{body}"
    );

    // On a new host: `trireme key import` gives back the same key.
    let imported = f.dir.join("imported.key");
    let out = Command::new(bin("trireme"))
        .args(["key", "import", "--in"])
        .arg(&export)
        .arg("--key-file")
        .arg(&imported)
        .arg("--passphrase-file")
        .arg(&pass)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        std::fs::read_to_string(&imported).unwrap().trim(),
        std::fs::read_to_string(f.dir.join("master.key"))
            .unwrap()
            .trim()
    );

    let entries = audit_entries(&f, "op", &[]);
    let export_entries: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "key export")
        .collect();
    assert!(
        export_entries
            .iter()
            .any(|e| e["outcome"] == "refused" && e["actor"] == "op"),
        "{export_entries:#?}"
    );
    assert!(
        export_entries.iter().any(|e| e["outcome"] == "ok"
            && e["actor"] == "op"
            && e["target"]
                .as_str()
                .is_some_and(|t| t.contains("with a TOTP code"))),
        "{export_entries:#?}"
    );
}

/// A six-digit code that none of `codes` is.
fn wrong_code(codes: &[String]) -> String {
    (0..10)
        .map(|d| d.to_string().repeat(6))
        .find(|c| !codes.contains(c))
        .unwrap()
}

fn count(entries: &[Value], f: impl Fn(&Value) -> bool) -> usize {
    entries.iter().filter(|e| f(e)).count()
}

#[test]
fn a_prune_needs_a_code_like_a_restore_and_is_audited_with_what_it_deleted() {
    let mut f = Fleet::new();
    f.controller_extra = "[mfa]\nrequired = true\n".into();
    let data = f.dir.join("data");
    make_data(&data, 2, 50_000, 11);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    for i in 0..2 {
        std::fs::write(data.join(format!("change-{i}.txt")), format!("change {i}")).unwrap();
        let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
        assert!(out.contains("succeeded"), "{out}");
    }
    let ids = |f: &Fleet| -> Vec<String> {
        f.cli_json(&["snapshots", "ls", "web-1/files"])
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    let before = ids(&f);
    assert_eq!(before.len(), 2);

    let enrolled = f.cli_json(&["mfa", "enroll"]);
    let secret = secret_from_base32(enrolled["secret"].as_str().unwrap()).unwrap();
    let step = quiet_step();
    let code = |offset: i64| code_at(&secret, (step as i64 + offset * STEP_SECS as i64) as u64);
    f.cli(&["mfa", "confirm", &code(-1)]);
    let policy = f.dir.join("policy.toml");
    Fleet::write_file(
        &policy,
        "[[policy]]\nsource = \"web-1/files\"\nschedule = \"0 0 1 1 *\"\nretention = \"one\"\n\n[retention.one]\nkeep_last = 1\n",
    );
    f.cli(&[
        "policy",
        "apply",
        "-f",
        policy.to_str().unwrap(),
        "--totp",
        &code(0),
    ]);

    // A viewer may not prune; an operator without a code or with a wrong
    // one is refused; nothing is deleted.
    let out = f.cli_as("viewer", &["prune"]);
    assert!(!out.status.success());
    assert!(text(&out).contains("operator role"), "{}", text(&out));
    let out = f.cli_as("op", &["prune"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("prune is a sensitive action: pass --totp <code>"),
        "{}",
        text(&out)
    );
    let wrong = wrong_code(&[code(-1), code(0), code(1), code(2)]);
    let out = f.cli_as("op", &["prune", "--totp", &wrong]);
    assert!(!out.status.success());
    assert!(text(&out).contains("wrong or expired"), "{}", text(&out));
    assert_eq!(ids(&f), before, "a refused prune deleted something");

    // A dry run deletes nothing and needs no code.
    let dry = f.cli_json(&["prune", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    let doomed = dry["removed"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(dry["removed"].as_array().unwrap().len(), 1, "{dry}");
    assert_eq!(ids(&f), before);
    assert!(f.location(1).join("snapshots").join(&doomed).exists());

    // With a code: done, at every location.
    let done = f.cli_json(&["prune", "--totp", &code(1)]);
    assert_eq!(done["dry_run"], false);
    assert_eq!(done["removed"][0]["id"], doomed.as_str(), "{done}");
    let left = ids(&f);
    assert_eq!(left.len(), 1);
    assert!(!left.contains(&doomed));
    assert!(!f.location(1).join("snapshots").join(&doomed).exists());

    let entries = audit_entries(&f, "viewer", &["--actor", "op"]);
    let prunes: Vec<&Value> = entries.iter().filter(|e| e["action"] == "prune").collect();
    assert_eq!(
        count(&entries, |e| e["action"] == "prune"
            && e["outcome"] == "refused"),
        2,
        "{prunes:#?}"
    );
    assert!(
        prunes.iter().any(|e| e["outcome"] == "refused"
            && e["target"] == "second factor"
            && e["reason"].as_str().unwrap().contains("wrong or expired")),
        "{prunes:#?}"
    );
    let dry_entry = prunes
        .iter()
        .find(|e| e["outcome"] == "ok" && e["target"].as_str().unwrap().starts_with("dry run"))
        .unwrap_or_else(|| panic!("{prunes:#?}"));
    let t = dry_entry["target"].as_str().unwrap();
    assert!(
        t.contains(&format!("would remove 1 snapshot(s): {doomed}"))
            && t.contains("nothing deleted")
            && t.contains("no second factor needed"),
        "{t}"
    );
    let done_entry = prunes
        .iter()
        .find(|e| e["outcome"] == "ok" && e["target"].as_str().unwrap().starts_with("prune of"))
        .unwrap_or_else(|| panic!("{prunes:#?}"));
    let t = done_entry["target"].as_str().unwrap();
    assert!(
        t.starts_with(&format!(
            "prune of every source: removed 1 snapshot(s): {doomed} (web-1/files)"
        )) && t.contains("loc1: 1 snapshot(s)")
            && t.contains("loc3: 1 snapshot(s)")
            && t.contains("with a TOTP code"),
        "{t}"
    );
    assert!(
        done_entry["peer"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{done_entry}"
    );
    let viewer = audit_entries(&f, "viewer", &["--actor", "viewer"]);
    assert_eq!(
        count(&viewer, |e| e["action"] == "prune"
            && e["outcome"] == "refused"),
        1,
        "{viewer:#?}"
    );
}

#[test]
fn wrong_codes_back_the_name_off_and_the_chain_counts_the_burst_once() {
    let mut f = Fleet::new();
    ca::issue(&f.ca, Role::Operator, "op2", 30, &f.ca).unwrap();
    f.controller_extra = "[mfa]\nmax_failures = 3\nbackoff = \"4s\"\n".into();
    f.start_controller();
    let p1 = policy_file(&f, 1);
    let enrolled = f.cli_json(&["mfa", "enroll"]);
    let secret = secret_from_base32(enrolled["secret"].as_str().unwrap()).unwrap();
    let step = quiet_step();
    let code = |offset: i64| code_at(&secret, (step as i64 + offset * STEP_SECS as i64) as u64);
    f.cli(&["mfa", "confirm", &code(-1)]);
    let wrong = wrong_code(&[code(-1), code(0), code(1), code(2)]);

    for i in 1..=3 {
        let out = f.cli_as("op", &["policy", "apply", "-f", &p1, "--totp", &wrong]);
        assert!(!out.status.success());
        let t = text(&out);
        assert!(t.contains("wrong or expired"), "{t}");
        assert_eq!(
            t.contains("3 wrong codes for op") && t.contains("refused without being checked until"),
            i == 3,
            "attempt {i}: {t}"
        );
    }
    let op_entries = || audit_entries(&f, "viewer", &["--actor", "op"]);
    let before = op_entries();
    assert_eq!(
        count(&before, |e| e["target"] == "second factor"
            && e["outcome"] == "refused"),
        3,
        "{before:#?}"
    );

    // Backed off: every code, even the right one, is refused unchecked with
    // when to try again; none of these adds to the chain.
    let backed_off = Instant::now();
    for c in [code(0), wrong.clone(), code(0), code(1), wrong.clone()] {
        let out = f.cli_as("op", &["policy", "apply", "-f", &p1, "--totp", &c]);
        assert!(!out.status.success());
        let t = text(&out);
        assert!(
            t.contains("too many wrong TOTP codes for op")
                && t.contains("refused without being checked until")
                && t.contains("try again after that"),
            "{t}"
        );
    }
    assert!(
        backed_off.elapsed() < Duration::from_secs(3),
        "too slow to test a 4 s back-off"
    );
    assert_eq!(op_entries().len(), before.len(), "guesses grew the chain");
    // Only that name is backed off.
    let out = f.cli_as("op2", &["policy", "apply", "-f", &p1]);
    assert!(out.status.success(), "{}", text(&out));

    // When the back-off ends: one entry, with the count.
    let burst = wait_for(
        "the back-off's audit entry",
        Duration::from_secs(20),
        || {
            op_entries()
                .into_iter()
                .find(|e| e["action"] == "second factor" && e["target"] == "TOTP back-off")
        },
    );
    assert_eq!(burst["outcome"], "refused");
    assert!(
        burst["reason"]
            .as_str()
            .unwrap()
            .starts_with("5 attempt(s) refused without checking the code"),
        "{burst}"
    );
    assert_eq!(op_entries().len(), before.len() + 1);
    // The right code works again (the refused attempts did not use it up).
    let out = f.cli_as("op", &["policy", "apply", "-f", &p1, "--totp", &code(0)]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn revoking_an_agent_closes_its_open_session_within_seconds() {
    let mut f = Fleet::new();
    let (d1, d2) = (f.dir.join("d1"), f.dir.join("d2"));
    make_data(&d1, 1, 1000, 5);
    make_data(&d2, 1, 1000, 6);
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &d1));
    f.start_agent(&AgentSpec::volume("web-2", "files", &d2));
    f.wait_connected(&["web-1", "web-2"]);
    let connected = |f: &Fleet, name: &str| {
        f.cli_json(&["agents", "ls"])
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == name && a["connected"] == true)
    };
    // Left alone, a session stays open (heartbeats every second).
    std::thread::sleep(Duration::from_secs(3));
    assert!(connected(&f, "web-1"));

    let out = Command::new(bin("trireme"))
        .args(["cert", "revoke", "--dir"])
        .arg(&f.ca)
        .args(["--name", "web-1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let revoked = Instant::now();
    wait_for("web-1's session to end", Duration::from_secs(15), || {
        (!connected(&f, "web-1")).then_some(())
    });
    assert!(
        revoked.elapsed() < Duration::from_secs(5),
        "the session outlived the revocation by {:?}",
        revoked.elapsed()
    );
    let entries = audit_entries(&f, "viewer", &["--actor", "web-1"]);
    let closed = entries
        .iter()
        .find(|e| e["action"] == "agent session" && e["target"] == "session closed")
        .unwrap_or_else(|| panic!("{entries:#?}"));
    assert_eq!(closed["outcome"], "refused");
    assert_eq!(closed["role"], "agent");
    assert!(
        closed["reason"]
            .as_str()
            .unwrap()
            .contains("is revoked (CRL)"),
        "{closed}"
    );
    assert!(closed["peer"].as_str().unwrap().starts_with("127.0.0.1:"));

    // It cannot come back: the agent keeps dialling (max_backoff 2s) and
    // its handshakes are refused; the other agent is untouched. Wait until
    // it has dialled again and been refused.
    wait_for(
        "web-1's redial to be refused as revoked",
        Duration::from_secs(30),
        || {
            audit_entries(&f, "viewer", &[])
                .iter()
                .any(|e| {
                    e["action"] == "connection refused"
                        && e["reason"].as_str().unwrap_or("").contains("revoked")
                })
                .then_some(())
        },
    );
    assert!(!connected(&f, "web-1"));
    assert!(connected(&f, "web-2"));
    let all = audit_entries(&f, "viewer", &[]);
    assert_eq!(
        count(&all, |e| e["target"] == "session closed"),
        1,
        "{all:#?}"
    );
    let agent_log = Fleet::log_text(&f.agent_log("web-1"));
    assert!(agent_log.contains("has been revoked"), "{agent_log}");
    assert!(Fleet::log_text(&f.controller_log())
        .contains("closed the session of an agent whose certificate was revoked"));
}
