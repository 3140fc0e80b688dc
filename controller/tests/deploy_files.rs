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
    for overlay in [
        "base",
        "overlays/example",
        "overlays/cert-manager",
        "overlays/bootstrap-token",
    ] {
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

    // overlays/bootstrap-token: the agent's config (enrolls with the token
    // when its node has no certificate yet) and the controller's (with
    // enroll_listen) load too.
    let out = Command::new(&agent)
        .args(["check-config", "--config"])
        .arg(moved("agent.bt-node-1.toml"))
        .env_remove("TRIREME_BOOTSTRAP_TOKEN_FILE")
        .env_remove("TRIREME_ENROLL_CONTROLLER")
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "agent.bt-node-1.toml: {text}");
    assert!(
        text.contains("agent         bt-node-1 (host bt-node-1)"),
        "{text}"
    );
    let out = Command::new(support::fleet::bin("trireme-controller"))
        .args(["check-config", "--config"])
        .arg(moved("controller.bootstrap.toml"))
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "controller.bootstrap.toml: {text}");
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

/// `deploy/compose/docker-compose.yml` (Trireme's own layout on one host)
/// without Docker: valid against the Compose Specification's JSON schema
/// (deploy/compose/compose-spec.json, validated with python3's jsonschema),
/// every volume, config and dependency a service names exists; its `init`
/// script run with the real binaries (paths moved to a temp dir) writes
/// configurations both `check-config`s accept; and its `garage-init.sh`
/// run against three fresh Garage servers started from the file's own
/// Garage configuration gives each the layout, the bucket and both keys,
/// after which the agent's key writes a repository there.
#[test]
fn compose_file_is_valid_and_its_init_scripts_work() {
    let compose = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/compose");
    let check = r#"
import json, sys, yaml, jsonschema
d = sys.argv[1]
schema = json.load(open(d + "/compose-spec.json"))
doc = yaml.safe_load(open(d + "/docker-compose.yml"))
errors = [f"{list(e.path)}: {e.message}" for e in jsonschema.Draft7Validator(schema).iter_errors(doc)]
services = {}
for name, s in doc["services"].items():
    vols = []
    for v in s.get("volumes", []):
        src = v.split(":")[0] if isinstance(v, str) else v.get("source", "")
        vols.append(src)
    deps = s.get("depends_on", {})
    services[name] = {
        "image": s.get("image", ""),
        "volumes": vols,
        "configs": [c if isinstance(c, str) else c["source"] for c in s.get("configs", [])],
        "depends_on": list(deps) if isinstance(deps, (list, dict)) else [],
        "command": s.get("command", []),
        "environment": s.get("environment", {}),
    }
print(json.dumps({
    "errors": errors,
    "services": services,
    "volumes": list(doc.get("volumes", {})),
    "configs": doc.get("configs", {}),
}))
"#;
    let out = Command::new("python3")
        .args(["-c", check])
        .arg(&compose)
        .output()
        .expect("python3 with PyYAML and jsonschema");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["errors"], serde_json::json!([]), "compose-spec schema");
    let services = v["services"].as_object().unwrap();
    let declared: Vec<&str> = v["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap())
        .collect();
    let configs = v["configs"].as_object().unwrap();
    let mut used = std::collections::BTreeSet::new();
    for (name, s) in services {
        let image = s["image"].as_str().unwrap();
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or("");
        assert!(
            !tag.is_empty() && tag != "latest" && !tag.contains('/'),
            "{name}: pin the image ({image})"
        );
        for vol in s["volumes"].as_array().unwrap() {
            let vol = vol.as_str().unwrap();
            assert!(
                declared.contains(&vol),
                "{name}: volume {vol} is not a declared named volume"
            );
            used.insert(vol.to_string());
        }
        for c in s["configs"].as_array().unwrap() {
            let c = c.as_str().unwrap();
            let def = &configs[c];
            assert!(def.is_object(), "{name}: config {c} is not declared");
            if let Some(file) = def["file"].as_str() {
                assert!(compose.join(file).is_file(), "{c}: {file} is missing");
            }
        }
        for d in s["depends_on"].as_array().unwrap() {
            assert!(
                services.contains_key(d.as_str().unwrap()),
                "{name} depends on {d}"
            );
        }
    }
    for vol in &declared {
        assert!(used.contains(*vol), "volume {vol} is declared but unused");
    }
    // The layout: the datastores keep their data in named volumes, the
    // agent reads Redis's, and three Garage servers each have their own.
    let vols = |s: &str| services[s]["volumes"].to_string();
    assert!(vols("redis").contains("redis-data"));
    assert!(vols("postgres").contains("postgres-data"));
    assert!(vols("trireme-agent").contains("redis-data"));
    for n in 1..=3 {
        assert!(vols(&format!("garage-{n}")).contains(&format!("\"garage-{n}\"")));
    }
    assert!(!vols("trireme-agent").contains("docker.sock"));

    // The init script, outside Docker: compose's `$$` is `$`; every path
    // under this test's temp dir; ownership changes left out (they need
    // root and the images' users).
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    for d in ["etc", "mnt/redis", "controller", "agent"] {
        std::fs::create_dir_all(t.join(d)).unwrap();
    }
    let script = services["init"]["command"][0]
        .as_str()
        .unwrap()
        .replace("$$", "$")
        .replace("/etc/trireme", &t.join("etc").display().to_string())
        .replace(
            "/var/lib/trireme-controller",
            &t.join("controller").display().to_string(),
        )
        .replace(
            "/var/lib/trireme-agent",
            &t.join("agent").display().to_string(),
        )
        .replace("/mnt/redis", &t.join("mnt/redis").display().to_string())
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("chown ") {
                ":"
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let bin_dir = support::fleet::bin("trireme");
    let path = format!(
        "{}:{}",
        bin_dir.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let run_init = || {
        let out = Command::new("sh")
            .args(["-euc", &script])
            .env("PATH", &path)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "init: {text}");
        text
    };
    let text = run_init();
    let etc = t.join("etc");
    assert!(
        text.contains("agent         agent-1 (host agent-1)"),
        "{text}"
    );
    assert!(
        text.contains("source        redis (redis)")
            && text.contains("source        postgres (command)"),
        "{text}"
    );
    // Three locations on one host meet the configured protection rule.
    assert!(!text.contains("warning"), "{text}");
    let controller_toml = std::fs::read_to_string(etc.join("controller/controller.toml")).unwrap();
    assert_eq!(controller_toml.matches("[[location]]").count(), 3);
    for f in [
        "controller/s3.credentials",
        "agent/s3.credentials",
        "garage/rpc_secret",
        "garage/admin_token",
        "agent/pg.env",
        "controller/master.key",
    ] {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(etc.join(f)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o077, 0, "{f}: mode {mode:o}");
    }
    // A second start changes nothing it made.
    let key = std::fs::read(etc.join("agent/s3.credentials")).unwrap();
    run_init();
    assert_eq!(
        std::fs::read(etc.join("agent/s3.credentials")).unwrap(),
        key
    );

    // Three fresh Garage servers from the file's own configuration (ports
    // and paths moved), then garage-init.sh as the compose file runs it.
    let garage = trireme_testkit::garage::garage_binary();
    let template = configs["garage-toml"]["content"].as_str().unwrap();
    let mut servers = Vec::new();
    let mut admins = Vec::new();
    let mut s3_ports = Vec::new();
    for n in 1..=3 {
        let dir = t.join(format!("garage-{n}"));
        std::fs::create_dir_all(&dir).unwrap();
        let [s3, rpc, admin] = [0; 3].map(|_| trireme_testkit::ports::free_port());
        let toml = template
            .replace("/var/lib/garage", &dir.display().to_string())
            .replace("/etc/trireme", &etc.display().to_string())
            .replace("[::]:3900", &format!("127.0.0.1:{s3}"))
            .replace("[::]:3901", &format!("127.0.0.1:{rpc}"))
            .replace("127.0.0.1:3901", &format!("127.0.0.1:{rpc}"))
            .replace("[::]:3903", &format!("127.0.0.1:{admin}"));
        std::fs::write(dir.join("garage.toml"), toml).unwrap();
        let log = std::fs::File::create(dir.join("garage.log")).unwrap();
        let child = Command::new(&garage)
            .arg("-c")
            .arg(dir.join("garage.toml"))
            .arg("server")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        servers.push(KillOnDrop(child));
        admins.push(format!("http://127.0.0.1:{admin}"));
        s3_ports.push(s3);
    }
    let env = &services["garage-init"]["environment"];
    let key_files = env["KEY_FILES"]
        .as_str()
        .unwrap()
        .replace("/etc/trireme", &etc.display().to_string());
    let token = env["ADMIN_TOKEN_FILE"]
        .as_str()
        .unwrap()
        .replace("/etc/trireme", &etc.display().to_string());
    let garage_init = || {
        let out = Command::new("sh")
            .arg(compose.join("garage-init.sh"))
            .env("GARAGE_ADMINS", admins.join(" "))
            .env("ADMIN_TOKEN_FILE", &token)
            .env("KEY_FILES", &key_files)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "garage-init.sh: {text}");
        text
    };
    let text = garage_init();
    assert_eq!(text.matches("layout applied").count(), 3, "{text}");
    assert_eq!(
        text.matches("key for the agent imported").count(),
        3,
        "{text}"
    );
    // Run again: nothing to do.
    let again = garage_init();
    assert_eq!(again.matches("layout already set").count(), 3, "{again}");
    assert!(!again.contains("imported"), "{again}");
    // Garage's own CLI agrees: both keys may read and write the bucket.
    for n in 1..=3 {
        let cfg = t.join(format!("garage-{n}/garage.toml"));
        let out = Command::new(&garage)
            .arg("-c")
            .arg(&cfg)
            .args(["bucket", "info", "trireme"])
            .output()
            .unwrap();
        let info = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{info}");
        for who in ["trireme-agent", "trireme-controller"] {
            assert!(
                info.lines().any(|l| l.starts_with("RW") && l.contains(who)),
                "garage-{n}: {info}"
            );
        }
    }
    // The agent's own location URL (garage-1, moved to this host) with its
    // key: a repository is created there, and the controller's key reads it.
    let agent_url = |who: &str, port: u16| {
        format!(
            "s3://trireme/?endpoint=http://127.0.0.1:{port}&region=garage&allow_http=true&credentials_file={}",
            etc.join(format!("{who}/s3.credentials")).display()
        )
    };
    let agent = support::fleet::bin("trireme-agent");
    let out = Command::new(&agent)
        .args(["keygen", "--key-file"])
        .arg(t.join("local.key"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let out = Command::new(&agent)
        .args([
            "init",
            "--location",
            &agent_url("agent", s3_ports[0]),
            "--key-file",
        ])
        .arg(t.join("local.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(&agent)
        .args([
            "snapshots",
            "--location",
            &agent_url("controller", s3_ports[0]),
            "--key-file",
        ])
        .arg(t.join("local.key"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(servers);
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
