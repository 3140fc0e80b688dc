//! mTLS end to end: a real tonic server with the `Health` service on
//! 127.0.0.1:0 behind `tls::serve`, certificates from `tls::ca`, real
//! rustls clients.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::Code;
use trireme_net::tls::{
    self, ca, client_config, Authorizer, HealthService, ReloadingServerConfig, Role, TlsFiles,
};
use trireme_proto::v1::health_server::HealthServer;
use trireme_testkit::pki::*;

#[tokio::test]
async fn valid_agent_pings_and_server_sees_its_name_and_role() {
    let pki = Pki::new();
    let agent = pki.issue(Role::Agent, "db-1");
    let server = TestServer::start(&pki, None).await;

    let reply = ping(server.addr, &pki.files("db-1")).await.unwrap();
    assert_eq!(reply.name, "db-1");
    assert_eq!(reply.role, "agent");
    assert_eq!(reply.serial, agent.cert.serial);
    assert_eq!(reply.server_version, env!("CARGO_PKG_VERSION"));

    // Another role on the same server.
    pki.issue(Role::Viewer, "alice");
    let reply = ping(server.addr, &pki.files("alice")).await.unwrap();
    assert_eq!(
        (reply.name.as_str(), reply.role.as_str()),
        ("alice", "viewer")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn no_client_certificate_is_refused() {
    let pki = Pki::new();
    let server = TestServer::start(&pki, None).await;
    let err = ping_with(server.addr, no_client_cert_config(&pki.dir.join("ca.pem")))
        .await
        .unwrap_err();
    assert!(
        err.contains("CertificateRequired"),
        "refusal should say a certificate is required: {err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn certificate_from_another_ca_is_refused() {
    let pki = Pki::new();
    let other = Pki::new();
    other.issue(Role::Operator, "mallory");
    let server = TestServer::start(&pki, None).await;
    // Mallory trusts the real CA (so she can talk to the server) but her
    // certificate comes from her own CA.
    let files = TlsFiles {
        ca: pki.dir.join("ca.pem"),
        crl: None,
        ..other.files("mallory")
    };
    let err = ping(server.addr, &files).await.unwrap_err();
    assert!(err.contains("UnknownCA"), "{err}");
    // The same name issued by the right CA works.
    pki.issue(Role::Operator, "mallory");
    ping(server.addr, &pki.files("mallory")).await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn expired_certificate_is_refused() {
    let pki = Pki::new();
    let day = Duration::from_secs(86_400);
    let now = SystemTime::now();
    ca::issue_between(
        &pki.dir,
        Role::Agent,
        "old-host",
        now - 10 * day,
        now - day,
        &pki.dir,
    )
    .unwrap();
    let server = TestServer::start(&pki, None).await;
    let err = ping(server.addr, &pki.files("old-host")).await.unwrap_err();
    assert!(err.contains("CertificateExpired"), "{err}");
    let listed = ca::list(&pki.dir).unwrap();
    let old = listed.iter().find(|c| c.name == "old-host").unwrap();
    assert_eq!(old.status(), "expired");
    server.shutdown().await;
}

#[tokio::test]
async fn revoked_certificate_is_refused_after_crl_update_without_restart() {
    let pki = Pki::new();
    pki.issue(Role::Agent, "db-2");
    pki.issue(Role::Agent, "db-3");
    let server = TestServer::start(&pki, None).await;
    let files = pki.files("db-2");

    // A connection opened before the revocation.
    let open = channel(server.addr, client_config(&files).unwrap())
        .await
        .unwrap();
    assert_eq!(ping_on(&open).await.unwrap().name, "db-2");
    assert_eq!(server.tls.generation(), 1);

    let revoked = ca::revoke(&pki.dir, &ca::RevokeTarget::Name("db-2".into())).unwrap();
    assert_eq!(revoked.len(), 1);

    // New connections are refused at the handshake, by the same server.
    let err = ping(server.addr, &files).await.unwrap_err();
    assert!(err.contains("CertificateRevoked"), "{err}");
    assert_eq!(server.tls.generation(), 2, "the CRL was reloaded once");
    // The connection opened before is refused at its next RPC.
    let status = ping_on(&open).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(status.message().contains("revoked"), "{}", status.message());
    // Others are unaffected.
    assert_eq!(
        ping(server.addr, &pki.files("db-3")).await.unwrap().name,
        "db-3"
    );

    // A damaged CRL does not take effect: the previous one stays in force.
    // (An empty or PEM-less file must not silently switch revocation off.)
    let db2 = client_config(&files).unwrap();
    let db3 = client_config(&pki.files("db-3")).unwrap();
    for junk in [
        "not a CRL\n",
        "",
        "-----BEGIN X509 CRL-----\nAAAA\n-----END X509 CRL-----\n",
    ] {
        std::fs::write(pki.dir.join("crl.pem"), junk).unwrap();
        assert_eq!(
            ping_with(server.addr, db3.clone()).await.unwrap().name,
            "db-3"
        );
        let err = ping_with(server.addr, db2.clone()).await.unwrap_err();
        assert!(
            err.contains("CertificateRevoked"),
            "db-2 stays revoked: {err}"
        );
        assert_eq!(server.tls.generation(), 2);
    }
    server.shutdown().await;
}

#[tokio::test]
async fn viewer_calling_an_operator_method_is_permission_denied() {
    let pki = Pki::new();
    pki.issue(Role::Viewer, "vera");
    pki.issue(Role::Operator, "otto");
    pki.issue(Role::Agent, "db-4");
    let server = TestServer::start(&pki, Some(&[Role::Operator])).await;

    let ch = channel(server.addr, client_config(&pki.files("vera")).unwrap())
        .await
        .unwrap();
    let status = ping_on(&ch).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(
        status.message(),
        "/trireme.v1.Health/Ping needs the operator role, but vera has the viewer role"
    );
    let err = ping(server.addr, &pki.files("db-4")).await.unwrap_err();
    assert!(err.starts_with("PermissionDenied"), "{err}");

    let reply = ping(server.addr, &pki.files("otto")).await.unwrap();
    assert_eq!(
        (reply.name.as_str(), reply.role.as_str()),
        ("otto", "operator")
    );
    server.shutdown().await;
}

#[tokio::test]
async fn client_refuses_a_server_without_the_controller_role() {
    let pki = Pki::new();
    pki.issue(Role::Agent, "db-5");
    // A server presenting an agent certificate for "localhost".
    let tmp = tempfile::tempdir().unwrap();
    ca::issue(&pki.dir, Role::Agent, "localhost", 30, tmp.path()).unwrap();
    let files = TlsFiles {
        cert: tmp.path().join("localhost.pem"),
        key: tmp.path().join("localhost.key"),
        ..pki.files("localhost")
    };
    let tls = Arc::new(ReloadingServerConfig::new(files).unwrap());
    let routes = tonic::service::Routes::new(HealthServer::new(HealthService::new(
        Authorizer::new(tls.clone()),
    )));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tls::serve(routes, listener, tls, async {
        let _ = stopped.await;
    }));

    let err = ping(addr, &pki.files("db-5")).await.unwrap_err();
    assert!(err.contains("expected"), "{err}");
    assert!(err.contains("controller"), "{err}");
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}
