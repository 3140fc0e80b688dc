//! The monitoring files in `deploy/monitoring` checked by the real
//! Prometheus tool (`promtool`, installed by deploy/dev/prereqs.sh): the
//! alert rules load, their unit tests pass, the example Prometheus config
//! is valid, and the Grafana dashboard is JSON whose panels name a data
//! source through the `datasource` variable (so it can be provisioned from
//! a file, where `__inputs` are never filled in).

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
    assert!(text.contains("SUCCESS: 25 rules found"), "{text}");
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
