//! End-to-end with the master key in AWS KMS: a real `trireme-controller`
//! configured with `[key_service] provider = "aws-kms"` against a real moto
//! server (an implementation of the KMS API, not AWS), a real agent, a
//! backup and a byte-identical restore; and a controller that refuses to
//! start when KMS cannot be reached.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::fleet::{bin, make_data, AgentSpec, Fleet};
use trireme_testkit::moto::{Moto, REGION};
use trireme_testkit::ports::free_port;
use trireme_testkit::tree;

/// moto serves plain http on loopback: the section opts in with
/// `allow_http = true`.
fn kms_section(key_id: &str, endpoint: &str, creds: &std::path::Path, extra: &str) -> String {
    format!(
        "[key_service]\nprovider = \"aws-kms\"\nkey_id = \"{key_id}\"\nregion = \"{REGION}\"\nendpoint = \"{endpoint}\"\nallow_http = true\ncredentials_file = \"{}\"\n{extra}",
        creds.display()
    )
}

#[test]
fn backup_and_restore_with_the_master_key_in_aws_kms() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(moto.create_key(Some("alias/trireme-e2e")));
    let mut f = Fleet::new();
    f.key_section = kms_section(
        "alias/trireme-e2e",
        &moto.endpoint,
        &moto.credentials_file,
        "",
    );

    // Without the opt-in the plain-http endpoint is refused, named.
    let plain = f.dir.join("controller-plain-http.toml");
    let section = f.key_section.replace("allow_http = true\n", "");
    std::fs::write(
        &plain,
        std::fs::read_to_string(f.write_controller_config())
            .unwrap()
            .replace(&f.key_section, &section),
    )
    .unwrap();
    let out = Command::new(bin("trireme-controller"))
        .args(["check-config", "--config"])
        .arg(&plain)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains(&format!("endpoint = \"{}\" is plain http", moto.endpoint))
            && err.contains("allow_http = true"),
        "{err}"
    );

    let cfg = f.write_controller_config();

    // check-config names the provider.
    let out = Command::new(bin("trireme-controller"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!(
            "key provider  aws-kms: key alias/trireme-e2e in {REGION} (endpoint {})",
            moto.endpoint
        )),
        "{stdout}"
    );

    // key export / import are the local key file's: refused, naming the provider.
    for args in [
        &["key", "export", "--out", "x.export", "--config"][..],
        &[
            "key",
            "import",
            "--in",
            "x.export",
            "--key-file",
            "k",
            "--config",
        ][..],
    ] {
        let out = Command::new(bin("trireme-controller"))
            .args(args)
            .arg(&cfg)
            .current_dir(&f.dir)
            .env(
                "TRIREME_RECOVERY_PASSPHRASE",
                "correct horse battery staple",
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(
            err.contains("is for the local key file")
                && err.contains("aws-kms: key alias/trireme-e2e"),
            "{args:?}: {err}"
        );
        assert!(!f.dir.join("x.export").exists() && !f.dir.join("k").exists());
    }

    let data = f.dir.join("data");
    make_data(&data, 8, 200_000, 7);
    let metrics = format!("127.0.0.1:{}", free_port());
    f.controller_extra = format!("metrics_listen = \"{metrics}\"\nkey_check_interval = \"1s\"\n");
    f.start_controller();
    f.start_agent(&AgentSpec::volume("web-1", "files", &data));
    f.wait_connected(&["web-1"]);
    let log = Fleet::log_text(&f.controller_log());
    assert!(
        log.contains("master key provider ready") && log.contains("aws-kms: key alias/trireme-e2e"),
        "{log}"
    );

    let out = f.cli(&["backup", "run", "web-1/files", "--wait"]);
    assert!(out.contains("succeeded"), "{out}");
    let snaps = f.cli_json(&["snapshots", "ls", "web-1/files"]);
    let snap = snaps[0]["id"].as_str().expect("a snapshot id").to_string();

    let target = f.dir.join("restored");
    let out = f.cli(&[
        "restore",
        &snap,
        "--to",
        &format!("web-1:{}", target.display()),
        "--wait",
    ]);
    assert!(out.contains("succeeded"), "{out}");
    assert!(
        tree(&data) == tree(&target),
        "restored tree differs from the source"
    );

    // The repository's data keys are wrapped by KMS: the local master key
    // that Fleet::new made cannot open it, and says which provider can.
    let out = Command::new(bin("trireme-agent"))
        .args([
            "restore",
            &snap,
            "--location",
            &f.locations[0],
            "--key-file",
        ])
        .arg(f.dir.join("master.key"))
        .arg("--target")
        .arg(f.dir.join("restored-locally"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "a local-key restore of a KMS repository succeeded"
    );
    assert!(
        err.contains("key scheme 3") && err.contains("AWS KMS"),
        "{err}"
    );

    // The key service is probed: up while moto answers, down (and named
    // in the log) within seconds of it going away.
    let up = |text: &str| -> Option<String> {
        text.lines()
            .find(|l| l.starts_with("trireme_key_service_up{provider=\"aws-kms\"}"))
            .map(|l| l.rsplit(' ').next().unwrap().to_string())
    };
    let text = support::fleet::scrape(&metrics);
    assert_eq!(up(&text).as_deref(), Some("1"), "{text}");
    assert!(
        text.contains("trireme_key_service_last_success_timestamp_seconds{provider=\"aws-kms\"}"),
        "{text}"
    );
    drop(moto);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = support::fleet::scrape(&metrics);
        if up(&text).as_deref() == Some("0") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "trireme_key_service_up still not 0 a minute after KMS went away: {:?}",
            up(&text)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let log = Fleet::log_text(&f.controller_log());
    assert!(
        log.contains("the master key's service does not answer"),
        "{log}"
    );
}

#[test]
fn controller_refuses_to_start_when_kms_is_unreachable() {
    let mut f = Fleet::new();
    let creds = f.dir.join("kms.creds");
    std::fs::write(&creds, "access_key_id = a\nsecret_access_key = b\n").unwrap();
    std::fs::set_permissions(&creds, std::fs::Permissions::from_mode(0o600)).unwrap();
    let endpoint = format!("http://127.0.0.1:{}", free_port());
    f.key_section = kms_section("alias/trireme", &endpoint, &creds, "timeout = \"2s\"\n");
    let cfg = f.write_controller_config();
    let mut child = Command::new(bin("trireme-controller"))
        .args(["run", "--config"])
        .arg(&cfg)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > Duration::from_secs(90) {
            let _ = child.kill();
            panic!("the controller kept running without a reachable KMS");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    for needle in [
        "key provider aws-kms: key alias/trireme",
        "start-up check",
        "cannot reach AWS KMS",
        endpoint.as_str(),
        "does not start",
    ] {
        assert!(err.contains(needle), "{needle:?} not in: {err}");
    }
    assert!(
        std::net::TcpStream::connect(f.addr()).is_err(),
        "the controller listened without a master key"
    );
}
