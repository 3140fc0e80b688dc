//! mTLS end to end: a real tonic server with the `Health` service on
//! 127.0.0.1:0 behind `tls::serve`, certificates from `tls::ca`, real
//! rustls clients.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tonic::Code;
use trireme_common::tls::{
    self, ca, client_config, Authorizer, ClientTls, HealthService, ReloadingServerConfig, Role,
    TlsFiles,
};
use trireme_proto::v1::health_client::HealthClient;
use trireme_proto::v1::health_server::HealthServer;
use trireme_proto::v1::{PingReply, PingRequest};

/// A CA directory with the controller's server certificate (`localhost`).
struct Pki {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        ca::init_ca(&dir).unwrap();
        ca::issue(&dir, Role::Controller, "localhost", 30, &dir).unwrap();
        Pki { _tmp: tmp, dir }
    }

    fn issue(&self, role: Role, name: &str) -> ca::Issued {
        ca::issue(&self.dir, role, name, 30, &self.dir).unwrap()
    }

    fn files(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, name)
    }
}

struct TestServer {
    addr: SocketAddr,
    tls: Arc<ReloadingServerConfig>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<trireme_common::Result<()>>>,
}

impl TestServer {
    /// The Health service; with `require`, behind an interceptor that admits
    /// only those roles.
    async fn start(pki: &Pki, require: Option<&'static [Role]>) -> Self {
        let tls = Arc::new(ReloadingServerConfig::new(pki.files("localhost")).unwrap());
        let authz = Authorizer::new(tls.clone());
        let health = HealthService::new(authz.clone());
        let routes = match require {
            None => tonic::service::Routes::new(HealthServer::new(health)),
            Some(roles) => tonic::service::Routes::new(HealthServer::with_interceptor(
                health,
                authz.require(roles),
            )),
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(tls::serve(routes, listener, tls.clone(), async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            tls,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let res = tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("server stops on its shutdown signal");
        res.unwrap().unwrap();
    }
}

async fn channel(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<tonic::transport::Channel, String> {
    tls::connect(
        &addr.to_string(),
        ClientTls {
            config: Arc::new(config),
            server_name: "localhost".into(),
            server_role: Some(Role::Controller),
        },
    )
    .await
    .map_err(|e| e.to_string())
}

/// Connect with `files` and ping once. With TLS 1.3 the server's refusal of
/// the client certificate can surface at connect or at the first RPC.
async fn ping_with(addr: SocketAddr, config: rustls::ClientConfig) -> Result<PingReply, String> {
    let ch = channel(addr, config).await?;
    ping_on(&ch).await.map_err(|s| status_chain(&s))
}

/// Code, message and every source: a transport failure's reason is in the sources.
fn status_chain(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let mut cur = std::error::Error::source(s);
    while let Some(e) = cur {
        out.push_str(&format!(": {e}"));
        cur = e.source();
    }
    out
}

async fn ping_on(ch: &tonic::transport::Channel) -> Result<PingReply, tonic::Status> {
    HealthClient::new(ch.clone())
        .ping(PingRequest {})
        .await
        .map(|r| r.into_inner())
}

async fn ping(addr: SocketAddr, files: &TlsFiles) -> Result<PingReply, String> {
    ping_with(addr, client_config(files).unwrap()).await
}

fn no_client_cert_config(ca_pem: &Path) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in tls::config::load_certs(ca_pem).unwrap() {
        roots.add(c).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(tls::config::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    cfg
}

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

/// Log lines captured for one test (`tracing` output as text).
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Wait (bounded) for a line containing every one of `needles`.
    async fn wait_for(&self, needles: &[&str]) -> String {
        for _ in 0..100 {
            if let Some(l) = self
                .text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no log line with {needles:?} in:\n{}", self.text());
    }
}

#[tokio::test]
async fn every_refusal_is_logged_with_who_which_rpc_and_why() {
    let logs = LogBuf::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    pki.issue(Role::Viewer, "vera");
    let server = TestServer::start(&pki, Some(&[Role::Operator])).await;

    ping(server.addr, &pki.files("vera")).await.unwrap_err();
    let line = logs
        .wait_for(&["WARN", "refused an RPC", "who=vera", "role=viewer"])
        .await;
    assert!(line.contains("rpc=/trireme.v1.Health/Ping"), "{line}");
    assert!(line.contains("needs operator"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    ping_with(server.addr, no_client_cert_config(&pki.dir.join("ca.pem")))
        .await
        .unwrap_err();
    let line = logs
        .wait_for(&["WARN", "refused a TLS connection", "no certificate"])
        .await;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    server.shutdown().await;
}
