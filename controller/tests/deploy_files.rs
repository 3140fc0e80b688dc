//! The monitoring files in `deploy/monitoring` checked by the real
//! Prometheus tool (`promtool`, installed by deploy/dev/prereqs.sh): the
//! alert rules load, their unit tests pass, the example Prometheus config
//! is valid, and the Grafana dashboard is JSON whose panels name a data
//! source through the `datasource` variable (so it can be provisioned from
//! a file, where `__inputs` are never filled in); and the Kubernetes package
//! renders, validates and yields configurations the binaries accept.

mod support;

use std::path::PathBuf;
use std::process::Command;

fn monitoring() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/monitoring")
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(monitoring())
        .output()
        .expect("promtool (package prometheus; deploy/dev/prereqs.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}: {text}");
    text
}

#[test]
fn alert_rules_load_and_their_unit_tests_pass() {
    let text = promtool(&["check", "rules", "trireme-alerts.yml"]);
    assert!(text.contains("SUCCESS: 30 rules found"), "{text}");
    let text = promtool(&["test", "rules", "trireme-alerts.test.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn prometheus_config_is_valid() {
    let text = promtool(&["check", "config", "--syntax-only", "prometheus.yml"]);
    assert!(text.contains("SUCCESS"), "{text}");
}

#[test]
fn dashboard_names_its_data_source_through_a_variable() {
    let text = std::fs::read_to_string(monitoring().join("grafana-dashboard.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(d.get("__inputs").is_none(), "no import-only inputs");
    assert!(!text.contains("DS_PROMETHEUS"));
    let vars = d["templating"]["list"].as_array().unwrap();
    assert!(
        vars.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "{vars:#?}"
    );
    // Every panel and query names its data source by that variable.
    let mut uids = Vec::new();
    fn walk(v: &serde_json::Value, uids: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(ds) = m.get("datasource") {
                    if let Some(u) = ds.get("uid").and_then(|u| u.as_str()) {
                        uids.push(u.to_string());
                    }
                }
                m.values().for_each(|x| walk(x, uids));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, uids)),
            _ => {}
        }
    }
    walk(&d["panels"], &mut uids);
    assert!(uids.len() > 40, "{}", uids.len());
    assert!(uids.iter().all(|u| u == "${datasource}"), "{uids:?}");
}

/// The Kubernetes package (`deploy/kubernetes`): every overlay renders with
/// `kubectl kustomize` and validates with `kubernetes-validate --strict`,
/// and the properties `check.py` asserts hold (PSS labels, no `latest`, one
/// controller replica with a headless Service, agents only on labelled
/// nodes with their own node's key, least capabilities, HTTP probes, the
/// PrometheusRule equal to trireme-alerts.yml). Then the configurations
/// the agent's init script renders (for a node with its own file and one
/// without) and the controller's are loaded by the real binaries'
/// `check-config`, with the absolute paths moved into a temp dir.
#[test]
fn kubernetes_package_renders_validates_and_its_configs_load() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("rendered");
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("python3")
        .arg(root.join("deploy/kubernetes/check.py"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .expect("python3");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "deploy/kubernetes/check.py (needs kubectl and kubernetes-validate: deploy/dev/prereqs.sh): {text}"
    );
    for overlay in ["base", "overlays/example", "overlays/cert-manager"] {
        assert!(
            text.contains(&format!("{overlay}: rendered, validated")),
            "{text}"
        );
    }

    // The files the configs name, under the temp dir.
    let t = tmp.path();
    let ca_dir = t.join("tls");
    trireme_net::tls::ca::init_ca(&ca_dir).unwrap();
    for name in ["db-1", "plain-node"] {
        trireme_net::tls::ca::issue(&ca_dir, trireme_net::tls::Role::Agent, name, 30, &ca_dir)
            .unwrap();
    }
    trireme_net::tls::ca::issue(
        &ca_dir,
        trireme_net::tls::Role::Controller,
        "trireme-controller.trireme.svc",
        30,
        &ca_dir,
    )
    .unwrap();
    let secret = |path: &std::path::Path, text: &str| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    };
    secret(&t.join("secrets/redis-password"), "pw\n");
    secret(&t.join("secrets/mongo-backup.yaml"), "password: pw\n");
    for loc in ["primary", "other-region", "other-provider"] {
        secret(
            &t.join(format!("keys/s3-{loc}.credentials")),
            "access_key_id = a\nsecret_access_key = b\n",
        );
    }
    for d in ["mnt/redis", "mnt/kafka", "state", "data"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    let moved = |file: &str| {
        let text = std::fs::read_to_string(out_dir.join(file)).unwrap();
        let text = text
            .replace("/etc/trireme/tls", &ca_dir.display().to_string())
            .replace("/run/secrets/", &format!("{}/secrets/", t.display()))
            .replace("/run/trireme/", &format!("{}/keys/", t.display()))
            .replace("/mnt/", &format!("{}/mnt/", t.display()))
            .replace(
                "/var/lib/trireme-agent",
                &t.join("state").display().to_string(),
            )
            .replace(
                "/var/lib/trireme-controller",
                &t.join("data").display().to_string(),
            );
        let path = t.join(file);
        std::fs::write(&path, text).unwrap();
        path
    };
    let agent = support::fleet::bin("trireme-agent");
    for (file, name, sources) in [
        ("agent.db-1.toml", "db-1", 3),
        ("agent.plain-node.toml", "plain-node", 0),
    ] {
        let out = Command::new(&agent)
            .args(["check-config", "--config"])
            .arg(moved(file))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{file}: {text}");
        assert!(
            text.contains(&format!("agent         {name} (host {name})")),
            "{text}"
        );
        assert_eq!(
            text.lines().filter(|l| l.starts_with("source ")).count(),
            sources,
            "{text}"
        );
    }
    let keygen = Command::new(support::fleet::bin("trireme-controller"))
        .args(["keygen", "--key-file"])
        .arg(t.join("keys/master.key"))
        .output()
        .unwrap();
    assert!(keygen.status.success());
    let out = Command::new(support::fleet::bin("trireme-controller"))
        .args(["check-config", "--config"])
        .arg(moved("controller.toml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "controller.toml: {text}");
    // Agents resolve their own credentials (the SDK's chain on their
    // node): no warning that they share the controller's.
    assert!(!text.contains("warning"), "{text}");
}

/// The Swarm stack as Docker's own Compose loader reads it (`docker stack
/// config`, no daemon needed): agents only on labelled nodes (which have
/// /etc/trireme), the agents' and the controller's S3 credentials attached
/// as secrets, and no Docker socket in the agent.
#[test]
fn swarm_stack_loads_and_agents_get_what_they_need() {
    let stack = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/swarm/trireme-stack.yml");
    let out = Command::new("docker")
        .args(["stack", "config", "-c"])
        .arg(&stack)
        .output()
        .expect("the docker CLI");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "docker stack config: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("node.labels.trireme.agent == true"), "{text}");
    assert!(!text.contains("docker.sock"), "{text}");
    for secret in ["s3-agent.credentials", "s3-primary.credentials"] {
        assert!(
            text.contains(&format!("target: {secret}")),
            "{secret}: {text}"
        );
    }
}
