//! Agents' certificates from bootstrap tokens, on real processes: a real
//! controller with `enroll_listen`, the real `trireme` CLI making tokens,
//! real `trireme-agent` processes enrolling (at start and by hand). The
//! issued certificates are checked with `openssl verify` and `openssl
//! x509`; every refusal's message and audit entry are checked; the
//! enrollment listener is tried by a hostile client for every other
//! service, and the main listener still refuses a client without a
//! certificate.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::fleet::{bin, make_data, wait_for, AgentSpec, Fleet};
use trireme_net::tls::{connect, ClientTls};
use trireme_net::Role;

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A fleet whose controller enrolls agents on its own port, signing with
/// the fleet's CA.
fn fleet() -> (Fleet, u16) {
    let mut f = Fleet::new();
    let port = trireme_testkit::ports::free_port();
    f.controller_extra = format!(
        "enroll_listen = \"127.0.0.1:{port}\"\nenroll_ca_dir = \"{}\"\n",
        f.ca.display()
    );
    f.start_controller();
    wait_for("the enrollment listener", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    });
    (f, port)
}

/// `trireme agents token create ARGS` as the operator: the token.
fn token(f: &Fleet, args: &[&str]) -> String {
    let mut a = vec!["agents", "token", "create"];
    a.extend_from_slice(args);
    let v = f.cli_json(&a);
    let t = v["token"].as_str().unwrap().to_string();
    assert!(t.starts_with("trb1."), "{v}");
    t
}

/// A directory holding only the CA certificate, as an agent host has
/// before it enrolls; and a 0600 file with `token` in it.
fn agent_host(f: &Fleet, name: &str, token: &str) -> (PathBuf, PathBuf) {
    let dir = f.dir.join(format!("host-{name}"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(f.ca.join("ca.pem"), dir.join("ca.pem")).unwrap();
    let token_file = dir.join("bootstrap-token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    (dir, token_file)
}

/// `trireme-agent enroll` by hand into `dir`.
fn enroll_by_hand(port: u16, dir: &Path, token_file: &Path, name: &str) -> Output {
    Command::new(bin("trireme-agent"))
        .args(["enroll", "--controller", &format!("127.0.0.1:{port}")])
        .args(["--server-name", "localhost", "--name", name])
        .arg("--ca-file")
        .arg(dir.join("ca.pem"))
        .arg("--token-file")
        .arg(token_file)
        .arg("--out")
        .arg(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The audit entries of `action`.
fn audit(f: &Fleet, action: &str) -> Vec<Value> {
    let out = f.cli_as("op", &["audit", "ls", "--json", "--limit", "1000"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == action)
        .cloned()
        .collect()
}

/// `openssl verify` of `cert` against the fleet's CA, and the name, SAN
/// and extended key usage `openssl x509` reads from it.
fn check_with_openssl(ca: &Path, cert: &Path, name: &str) {
    let v = Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(ca)
        .arg(cert)
        .output()
        .unwrap();
    assert!(v.status.success(), "openssl verify: {}", text(&v));
    assert!(text(&v).contains(": OK"), "{}", text(&v));
    let x = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-subject",
            "-ext",
            "subjectAltName,extendedKeyUsage",
            "-in",
        ])
        .arg(cert)
        .output()
        .unwrap();
    let t = text(&x);
    assert!(x.status.success(), "openssl x509: {t}");
    assert!(
        t.contains(&format!("CN = {name}")) || t.contains(&format!("CN={name}")),
        "{t}"
    );
    assert!(t.contains(&format!("DNS:{name}")), "{t}");
    assert!(t.contains("URI:urn:trireme:role:agent"), "{t}");
    assert!(t.contains("TLS Web Client Authentication"), "{t}");
}

#[test]
fn an_agent_without_a_certificate_enrolls_at_start_and_backs_up() {
    let (mut f, port) = fleet();
    let tok = token(&f, &["--agent", "web-1", "--ttl", "10m"]);
    let (host, token_file) = agent_host(&f, "web-1", &tok);
    let data = f.dir.join("data");
    make_data(&data, 20, 4096, 7);

    // The agent's own configuration: [tls] dir holds only ca.pem.
    let cfg = host.join("agent.toml");
    let write_cfg = |extra: &str| {
        std::fs::write(
            &cfg,
            format!(
                "controller = \"{addr}\"\nserver_name = \"localhost\"\nstate_dir = \"{h}/state\"\nmax_backoff = \"2s\"\n{extra}[tls]\ndir = \"{h}\"\nname = \"web-1\"\n[[source]]\nname = \"files\"\nkind = \"volume\"\npath = \"{d}\"\n",
                addr = f.addr(),
                h = host.display(),
                d = data.display(),
            ),
        )
        .unwrap();
    };
    write_cfg(&format!(
        "bootstrap_token_file = \"{}\"\nenroll_controller = \"127.0.0.1:{port}\"\n",
        token_file.display()
    ));
    let run_agent = |f: &mut Fleet| {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(f.agent_log("web-1"))
            .unwrap();
        let child = Command::new(bin("trireme-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("TRIREME_LOG", "info")
            .env_remove("RUST_LOG")
            .env_remove("TRIREME_BOOTSTRAP_TOKEN_FILE")
            .env_remove("TRIREME_ENROLL_CONTROLLER")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        f.agents.insert("web-1".into(), child);
    };
    run_agent(&mut f);
    f.wait_connected(&["web-1"]);

    let (cert, key) = (host.join("web-1.pem"), host.join("web-1.key"));
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key is written 0600");
    // No staging files left beside them.
    let left: Vec<_> = std::fs::read_dir(&host)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".enroll-"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    check_with_openssl(&f.ca.join("ca.pem"), &cert, "web-1");
    // The CA knows it: `trireme cert ls` lists it, so it can be revoked.
    let issued = trireme_net::tls::ca::list(&f.ca).unwrap();
    assert!(issued
        .iter()
        .any(|c| c.name == "web-1" && c.role == Role::Agent));
    assert!(
        !f.ca.join("web-1.key").exists(),
        "the key never left the host"
    );

    // A real backup with that certificate.
    let job = f.cli_json(&["backup", "run", "web-1/files"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    let done = wait_for("the backup", Duration::from_secs(90), || {
        let j = f.cli_json(&["jobs", "show", &job]);
        matches!(j["state"].as_str()?, "succeeded" | "failed").then_some(j)
    });
    assert_eq!(done["state"], "succeeded", "{done}");

    // Audited, and the token is used up.
    let ok: Vec<Value> = audit(&f, "agent enroll")
        .into_iter()
        .filter(|e| e["outcome"] == "ok")
        .collect();
    assert_eq!(ok.len(), 1, "{ok:?}");
    assert_eq!(ok[0]["actor"], "web-1");
    let ls = f.cli_json(&["agents", "token", "ls"]);
    let t = &ls.as_array().unwrap()[0];
    assert_eq!(t["state"], "used up", "{ls}");
    assert_eq!(t["enrolled"], serde_json::json!(["web-1"]));
    assert!(
        !ls.to_string().contains(tok.rsplit('.').next().unwrap()),
        "the secret is never listed"
    );

    // Restarted with its files in place, it does not enroll again (the
    // token is used up: enrolling would fail).
    f.kill_agent("web-1");
    let serial_before = std::fs::read(&cert).unwrap();
    run_agent(&mut f);
    wait_for(
        "the agent to log its start",
        Duration::from_secs(30),
        || {
            Fleet::log_text(&f.agent_log("web-1"))
                .contains("certificate present: not enrolling")
                .then_some(())
        },
    );
    f.wait_connected(&["web-1"]);
    assert_eq!(std::fs::read(&cert).unwrap(), serial_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn refusals_are_clear_and_audited_and_the_listener_serves_nothing_else() {
    let (mut f, port) = fleet();
    // A registered agent with a certificate issued beforehand.
    let data = f.dir.join("data");
    make_data(&data, 3, 100, 1);
    f.start_agent(&AgentSpec::volume("node-1", "files", &data));
    f.wait_connected(&["node-1"]);

    // By hand, with a glob token for two names.
    let glob = token(&f, &["--name-glob", "node-*", "--uses", "2"]);
    let (h2, t2) = agent_host(&f, "node-2", &glob);
    let out = enroll_by_hand(port, &h2, &t2, "node-2");
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("enrolled node-2"), "{}", text(&out));
    check_with_openssl(&f.ca.join("ca.pem"), &h2.join("node-2.pem"), "node-2");
    // Again, with its files there: nothing to do, nothing sent.
    let again = enroll_by_hand(port, &h2, &t2, "node-2");
    assert!(!again.status.success());
    assert!(text(&again).contains("exist already"), "{}", text(&again));

    // Refusals, each with its message and its audit entry. They all come
    // from 127.0.0.1: the fifth starts the back-off.
    let expect = |name: &str, token: &str, want: &str| {
        let (h, t) = agent_host(&f, &format!("{name}-{}", want.len()), token);
        let out = enroll_by_hand(port, &h, &t, name);
        assert!(!out.status.success(), "{name} enrolled: {}", text(&out));
        assert!(text(&out).contains(want), "{name}: {}", text(&out));
        assert!(!h.join(format!("{name}.pem")).exists());
        assert!(!h.join(format!("{name}.key")).exists());
        text(&out)
    };
    let mut wrong = glob.clone();
    let last = wrong.pop().unwrap();
    wrong.push(if last == 'a' { 'b' } else { 'a' });
    expect("node-3", &wrong, "the bootstrap token is wrong");
    expect("db-1", &glob, "does not cover the name \"db-1\"");
    expect("node-1", &glob, "already has a registered agent");
    let short = token(&f, &["--name-glob", "node-*", "--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(2100));
    expect("node-4", &short, "expired");
    let once = token(&f, &["--agent", "node-9"]);
    let (h9, t9) = agent_host(&f, "node-9", &once);
    assert!(enroll_by_hand(port, &h9, &t9, "node-9").status.success());
    check_with_openssl(&f.ca.join("ca.pem"), &h9.join("node-9.pem"), "node-9");
    let used = expect("node-9", &once, "used up");
    assert!(
        used.contains("refused unchecked"),
        "the fifth failure starts the back-off: {used}"
    );
    // Backed off: even a good token is refused unchecked now.
    let good = token(&f, &["--agent", "node-5"]);
    expect("node-5", &good, "too many failed enrollments");

    let refused: Vec<String> = audit(&f, "agent enroll")
        .into_iter()
        .filter(|e| e["outcome"] == "refused")
        .map(|e| format!("{} {}", e["actor"], e["reason"]))
        .collect();
    for want in [
        "\"node-3\" \"the bootstrap token is wrong",
        "\"db-1\" \"the bootstrap token does not cover",
        "\"node-1\" \"the name \\\"node-1\\\" already has a registered agent",
        "\"node-4\" \"the bootstrap token expired",
        "\"node-9\" \"the bootstrap token is used up",
        "\"node-5\" \"too many failed enrollments",
    ] {
        assert!(
            refused.iter().any(|r| r.starts_with(want)),
            "no audit entry {want}: {refused:#?}"
        );
    }
    let ok = audit(&f, "agent enroll")
        .into_iter()
        .filter(|e| e["outcome"] == "ok")
        .count();
    assert_eq!(ok, 2, "node-2 and node-9");

    // A token is an operator's: a viewer may not make one.
    let v = f.cli_as("viewer", &["agents", "token", "create", "--agent", "x-1"]);
    assert_eq!(v.status.code(), Some(3), "{}", text(&v));
    // Revoked tokens enroll nothing (checked before the back-off ends? no:
    // the listener is backed off for this address; the state is enough).
    let id = f.cli_json(&["agents", "token", "ls"])[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = f.cli_json(&["agents", "token", "revoke", &id]);
    assert_eq!(r["state"], "revoked", "{r}");
    assert!(!audit(&f, "bootstrap token revoke").is_empty());
    assert!(!audit(&f, "bootstrap token create").is_empty());

    // A hostile client on the enrollment listener (no certificate) tries
    // every other service: none is there.
    let config =
        trireme_net::tls::config::client_config_without_identity(&f.ca.join("ca.pem")).unwrap();
    let channel = connect(
        &format!("127.0.0.1:{port}"),
        ClientTls {
            config: Arc::new(config),
            server_name: "localhost".into(),
            server_role: Some(Role::Controller),
        },
    )
    .await
    .unwrap();
    use trireme_proto::v1 as pb;
    let codes = vec![
        pb::operator_service_client::OperatorServiceClient::new(channel.clone())
            .list_agents(pb::ListAgentsRequest {})
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        pb::bootstrap_token_service_client::BootstrapTokenServiceClient::new(channel.clone())
            .create_token(pb::CreateTokenRequest {
                agent: "evil".into(),
                ..Default::default()
            })
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        pb::key_service_client::KeyServiceClient::new(channel.clone())
            .generate_data_key(pb::GenerateDataKeyRequest::default())
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        pb::agent_service_client::AgentServiceClient::new(channel.clone())
            .register(pb::RegisterRequest::default())
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
        pb::health_client::HealthClient::new(channel.clone())
            .ping(pb::PingRequest::default())
            .await
            .map(|_| ())
            .unwrap_err()
            .code(),
    ];
    assert!(
        codes.iter().all(|c| *c == tonic::Code::Unimplemented),
        "{codes:?}"
    );
    // The main listener still refuses a client without a certificate.
    assert!(support::no_cert_handshake(f.addr(), &f.ca.join("ca.pem")).await);
}
