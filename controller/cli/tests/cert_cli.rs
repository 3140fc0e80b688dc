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

/// `trireme cert renew`: a new key and certificate over the old files, same
/// name and role (as openssl reads them), a later expiry; the old serial
/// stays valid in the index; refusals name what is wrong and replace nothing.
#[test]
fn cert_renew_replaces_the_files_keeps_name_and_role() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    let ca_s = ca.to_str().unwrap();
    let out = tmp.path().join("agent-files");
    std::fs::create_dir_all(&out).unwrap();
    let out_s = out.to_str().unwrap();
    ok(&["cert", "init-ca", "--dir", ca_s]);
    ok(&[
        "cert", "issue", "--dir", ca_s, "--role", "agent", "--name", "web-1", "--days", "10",
        "--out", out_s,
    ]);
    let openssl = |args: &[&str]| -> String {
        let o = Command::new("openssl").args(args).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8(o.stdout).unwrap()
    };
    let pem = out.join("web-1.pem");
    let key = out.join("web-1.key");
    let old_key = std::fs::read(&key).unwrap();
    let old_serial = openssl(&["x509", "-serial", "-noout", "-in", pem.to_str().unwrap()]);
    let old_end = openssl(&["x509", "-enddate", "-noout", "-in", pem.to_str().unwrap()]);

    let text = ok(&[
        "cert", "renew", "--dir", ca_s, "--name", "web-1", "--days", "400", "--out", out_s,
    ]);
    assert!(
        text.contains("renewed agent certificate \"web-1\""),
        "{text}"
    );
    assert!(text.contains("trireme cert revoke"), "{text}");
    let new_serial = openssl(&["x509", "-serial", "-noout", "-in", pem.to_str().unwrap()]);
    assert_ne!(new_serial, old_serial);
    assert_ne!(
        openssl(&["x509", "-enddate", "-noout", "-in", pem.to_str().unwrap()]),
        old_end
    );
    assert_ne!(std::fs::read(&key).unwrap(), old_key, "a new key");
    assert_eq!(mode(&key), 0o600);
    // Same name and role, as openssl reads them; the key matches the certificate.
    let text_form = openssl(&["x509", "-text", "-noout", "-in", pem.to_str().unwrap()]);
    assert!(
        text_form.contains("CN=web-1") || text_form.contains("CN = web-1"),
        "{text_form}"
    );
    assert!(text_form.contains("urn:trireme:role:agent"), "{text_form}");
    let pubkey_cert = openssl(&["x509", "-pubkey", "-noout", "-in", pem.to_str().unwrap()]);
    let pubkey_key = openssl(&["pkey", "-pubout", "-in", key.to_str().unwrap()]);
    assert_eq!(pubkey_cert, pubkey_key);
    // Both are in the index, both valid: the old one until it is revoked.
    let rows = ls_json(ca_s);
    let web: Vec<_> = rows.iter().filter(|r| r["name"] == "web-1").collect();
    assert_eq!(web.len(), 2, "{rows:?}");
    assert!(web.iter().all(|r| r["status"] == "valid"), "{rows:?}");
    // No staging directory left behind.
    let left: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left.len(), 2, "{left:?}");

    // Refusals: no such certificate; a file that is not this CA's.
    let e = fails(&[
        "cert", "renew", "--dir", ca_s, "--name", "web-2", "--out", out_s,
    ]);
    assert!(e.contains("no valid certificate named \"web-2\""), "{e}");
    let other = tmp.path().join("other-ca");
    ok(&["cert", "init-ca", "--dir", other.to_str().unwrap()]);
    let foreign = tmp.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    ok(&[
        "cert",
        "issue",
        "--dir",
        other.to_str().unwrap(),
        "--role",
        "agent",
        "--name",
        "web-1",
        "--out",
        foreign.to_str().unwrap(),
    ]);
    let before = std::fs::read(foreign.join("web-1.pem")).unwrap();
    let e = fails(&[
        "cert",
        "renew",
        "--dir",
        ca_s,
        "--name",
        "web-1",
        "--out",
        foreign.to_str().unwrap(),
    ]);
    assert!(e.contains("is not a certificate this CA issued"), "{e}");
    assert_eq!(
        std::fs::read(foreign.join("web-1.pem")).unwrap(),
        before,
        "nothing replaced"
    );
}
