//! A test PKI and a `Health` server behind `tls::serve`, for the mTLS tests.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use trireme_net::tls::{
    self, ca, client_config, Authorizer, ClientTls, HealthService, ReloadingServerConfig, Role,
    TlsFiles,
};
use trireme_proto::v1::health_client::HealthClient;
use trireme_proto::v1::health_server::HealthServer;
use trireme_proto::v1::{PingReply, PingRequest};

/// A CA directory with the controller's server certificate (`localhost`).
pub struct Pki {
    _tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

impl Pki {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ca");
        ca::init_ca(&dir).unwrap();
        ca::issue(&dir, Role::Controller, "localhost", 30, &dir).unwrap();
        Pki { _tmp: tmp, dir }
    }

    pub fn issue(&self, role: Role, name: &str) -> ca::Issued {
        ca::issue(&self.dir, role, name, 30, &self.dir).unwrap()
    }

    pub fn files(&self, name: &str) -> TlsFiles {
        TlsFiles::in_dir(&self.dir, name)
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

pub struct TestServer {
    pub addr: SocketAddr,
    pub tls: Arc<ReloadingServerConfig>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<trireme_common::Result<()>>>,
}

impl TestServer {
    /// The Health service; with `require`, behind an interceptor that admits
    /// only those roles.
    pub async fn start(pki: &Pki, require: Option<&'static [Role]>) -> Self {
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

    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let res = tokio::time::timeout(Duration::from_secs(10), self.task.take().unwrap())
            .await
            .expect("server stops on its shutdown signal");
        res.unwrap().unwrap();
    }
}

pub async fn channel(
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
pub async fn ping_with(
    addr: SocketAddr,
    config: rustls::ClientConfig,
) -> Result<PingReply, String> {
    let ch = channel(addr, config).await?;
    ping_on(&ch).await.map_err(|s| status_chain(&s))
}

/// Code, message and every source: a transport failure's reason is in the sources.
pub fn status_chain(s: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", s.code(), s.message());
    let mut cur = std::error::Error::source(s);
    while let Some(e) = cur {
        out.push_str(&format!(": {e}"));
        cur = e.source();
    }
    out
}

pub async fn ping_on(ch: &tonic::transport::Channel) -> Result<PingReply, tonic::Status> {
    HealthClient::new(ch.clone())
        .ping(PingRequest {})
        .await
        .map(|r| r.into_inner())
}

pub async fn ping(addr: SocketAddr, files: &TlsFiles) -> Result<PingReply, String> {
    ping_with(addr, client_config(files).unwrap()).await
}

pub fn no_client_cert_config(ca_pem: &Path) -> rustls::ClientConfig {
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
