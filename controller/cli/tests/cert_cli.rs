//! `trireme cert ...` as an operator runs it: the real binary, a real CA
//! directory.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

const TRIREME: &str = env!("CARGO_BIN_EXE_trireme");

fn trireme(args: &[&str]) -> Output {
    Command::new(TRIREME)
        .args(args)
        .env_remove("TRIREME_CA_DIR")
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

fn ok(args: &[&str]) -> String {
    let out = trireme(args);
    assert!(
        out.status.success(),
        "trireme {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn fails(args: &[&str]) -> String {
    let out = trireme(args);
    assert!(!out.status.success(), "trireme {args:?} should fail");
    String::from_utf8(out.stderr).unwrap()
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn ls_json(dir: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&ok(&["cert", "ls", "--dir", dir, "--output", "json"])).unwrap()
}

#[test]
fn cert_cli_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let dir = ca.to_str().unwrap();

    let out = ok(&["cert", "init-ca", "--dir", dir]);
    assert!(out.contains("created CA"), "{out}");
    assert_eq!(mode(&ca.join("ca.key")), 0o600);
    assert!(ca.join("ca.pem").exists() && ca.join("crl.pem").exists());
    let ca_pem = std::fs::read(ca.join("ca.pem")).unwrap();

    // Never overwrites an existing CA.
    let err = fails(&["cert", "init-ca", "--dir", dir]);
    assert!(err.contains("refusing to overwrite"), "{err}");
    assert_eq!(std::fs::read(ca.join("ca.pem")).unwrap(), ca_pem);

    let out = ok(&[
        "cert", "issue", "--dir", dir, "--role", "agent", "--name", "db-1",
    ]);
    assert!(out.contains("issued agent certificate \"db-1\""), "{out}");
    assert_eq!(mode(&ca.join("db-1.key")), 0o600);
    let out_dir = tmp.path().join("ops");
    ok(&[
        "cert",
        "issue",
        "--dir",
        dir,
        "--role",
        "viewer",
        "--name",
        "alice",
        "--days",
        "7",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(out_dir.join("alice.pem").exists());
    assert_eq!(mode(&out_dir.join("alice.key")), 0o600);

    let err = fails(&[
        "cert", "issue", "--dir", dir, "--role", "admin", "--name", "x",
    ]);
    assert!(err.contains("unknown role"), "{err}");
    let err = fails(&[
        "cert", "issue", "--dir", dir, "--role", "agent", "--name", "../etc",
    ]);
    assert!(err.contains("invalid name"), "{err}");
    let err = fails(&[
        "cert", "issue", "--dir", dir, "--role", "agent", "--name", "db-1",
    ]);
    assert!(err.contains("refusing to overwrite"), "{err}");

    let certs = ls_json(dir);
    assert_eq!(certs.len(), 2);
    assert_eq!(certs[0]["name"], "db-1");
    assert_eq!(certs[0]["role"], "agent");
    assert_eq!(certs[0]["status"], "valid");
    assert_eq!(certs[0]["revoked"], false);
    assert_eq!(certs[1]["name"], "alice");
    assert_eq!(certs[1]["role"], "viewer");
    let serial = certs[0]["serial"].as_str().unwrap().to_string();

    let text = ok(&["cert", "ls", "--dir", dir]);
    assert!(text.starts_with("SERIAL"), "{text}");
    assert!(text.contains(&serial) && text.contains("alice"), "{text}");

    let crl_before = std::fs::read(ca.join("crl.pem")).unwrap();
    let out = ok(&["cert", "revoke", "--dir", dir, "--serial", &serial]);
    assert!(out.contains(&format!("serial {serial}")), "{out}");
    assert_ne!(std::fs::read(ca.join("crl.pem")).unwrap(), crl_before);
    let err = fails(&["cert", "revoke", "--dir", dir, "--serial", &serial]);
    assert!(err.contains("already revoked"), "{err}");
    ok(&["cert", "revoke", "--dir", dir, "--name", "alice"]);
    let err = fails(&["cert", "revoke", "--dir", dir, "--name", "nobody"]);
    assert!(err.contains("no certificate with name"), "{err}");
    let err = fails(&["cert", "revoke", "--dir", dir]);
    assert!(err.contains("--serial") || err.contains("--name"), "{err}");

    let certs = ls_json(dir);
    assert!(certs
        .iter()
        .all(|c| c["revoked"] == true && c["status"] == "revoked"));

    // A directory without a CA says how to make one.
    let empty = tmp.path().join("empty");
    let err = fails(&["cert", "ls", "--dir", empty.to_str().unwrap()]);
    assert!(err.contains("trireme cert init-ca"), "{err}");
}
