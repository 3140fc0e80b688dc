//! Serving tonic routes over mTLS, dialling such a server, and the per-RPC
//! role check.
//!
//! The server accepts TCP, runs the rustls handshake with the *current*
//! [`ReloadingServerConfig`] (so certificate and CRL changes apply to new
//! connections at once), and hands the TLS streams to tonic. Handlers learn
//! who is calling from `request.peer_certs()` through [`authorize`] or an
//! [`Authorizer`]. Every refusal — at the handshake or at an RPC — is logged
//! with `tracing::warn!`: who (peer address, certificate name), which RPC,
//! and why.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::service::{Interceptor, Routes};
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Request, Status};

use super::{identity_from_cert, Identity, ReloadingServerConfig, Role};
use trireme_common::error::{Error, Result};

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC method path (`/trireme.v1.Health/Ping`) of a request, put in the
/// request extensions by [`serve`] so refusals can name the RPC.
#[derive(Debug, Clone)]
pub struct RpcMethod(pub Arc<str>);

/// Serve `routes` on `listener` over mTLS until `shutdown` completes.
///
/// # Errors
/// [`Error::Tls`] when the server stops on a transport error.
pub async fn serve<F>(
    routes: Routes,
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    shutdown: F,
) -> Result<()>
where
    F: Future<Output = ()>,
{
    let incoming = tls_incoming(listener, tls.clone(), move || tls.current());
    serve_incoming(routes, incoming, shutdown).await
}

/// Serve `routes` on `listener` over TLS *without* asking clients for a
/// certificate, with the server certificate of `tls` (followed on disk like
/// [`serve`]'s). Only for the controller's enrollment listener: whatever
/// `routes` holds is open to anyone who can connect, so it must hold
/// nothing but the enrollment service.
///
/// # Errors
/// [`Error::Tls`] when the server stops on a transport error, or the
/// certificate files do not make a server configuration.
pub async fn serve_without_client_auth<F>(
    routes: Routes,
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    shutdown: F,
) -> Result<()>
where
    F: Future<Output = ()>,
{
    let first = super::config::server_config_without_client_auth(tls.files())?;
    let cached = std::sync::Mutex::new((tls.generation(), Arc::new(first)));
    let source = tls.clone();
    let current = move || {
        let mut c = cached
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let generation = source.generation();
        if generation != c.0 {
            match super::config::server_config_without_client_auth(source.files()) {
                Ok(cfg) => *c = (generation, Arc::new(cfg)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot reload the enrollment listener's certificate; keeping the previous one");
                }
            }
        }
        c.1.clone()
    };
    let incoming = tls_incoming(listener, tls, current);
    serve_incoming(routes, incoming, shutdown).await
}

async fn serve_incoming<F>(
    routes: Routes,
    incoming: tokio_stream::wrappers::ReceiverStream<
        std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>,
    >,
    shutdown: F,
) -> Result<()>
where
    F: Future<Output = ()>,
{
    let tag: fn(http::Request<Body>) -> http::Request<Body> = tag_rpc_method;
    Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(30)))
        .http2_keepalive_timeout(Some(Duration::from_secs(20)))
        .layer(tower::util::MapRequestLayer::new(tag))
        .add_routes(routes)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
        .map_err(|e| Error::Tls(format!("gRPC server stopped: {}", error_chain(&e))))
}

fn tag_rpc_method(mut req: http::Request<Body>) -> http::Request<Body> {
    let path: Arc<str> = Arc::from(req.uri().path());
    req.extensions_mut().insert(RpcMethod(path));
    req
}

/// Accept TCP connections and complete TLS handshakes concurrently; yield
/// the streams that pass. Stops when the receiver (the server) is dropped.
fn tls_incoming(
    listener: TcpListener,
    tls: Arc<ReloadingServerConfig>,
    config: impl Fn() -> Arc<rustls::ServerConfig> + Send + Sync + 'static,
) -> tokio_stream::wrappers::ReceiverStream<
    std::io::Result<tokio_rustls::server::TlsStream<TcpStream>>,
> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let config = Arc::new(config);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => break,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let tx = tx.clone();
            let tls = tls.clone();
            let acceptor = TlsAcceptor::from(config());
            tokio::spawn(async move {
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                    }
                    Ok(Err(e)) => {
                        let reason = handshake_refusal(&e);
                        tracing::warn!(peer = %peer, reason = %reason, "refused a TLS connection");
                        // A peer that hung up before saying anything (a port
                        // probe, a TCP health check) was not refused anything.
                        if e.kind() != std::io::ErrorKind::UnexpectedEof {
                            tls.refused(peer, &reason);
                        }
                    }
                    Err(_) => {
                        let reason = "the TLS handshake did not finish in time";
                        tracing::warn!(peer = %peer, reason, "refused a TLS connection");
                        tls.refused(peer, reason);
                    }
                }
            });
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// An operator-readable reason for a failed server-side handshake.
fn handshake_refusal(e: &std::io::Error) -> String {
    use rustls::{CertificateError as C, Error as R};
    let Some(r) = e.get_ref().and_then(|i| i.downcast_ref::<R>()) else {
        return e.to_string();
    };
    match r {
        R::NoCertificatesPresented => "the client presented no certificate".into(),
        R::InvalidCertificate(C::Expired | C::ExpiredContext { .. }) => {
            format!("the client certificate has expired ({r})")
        }
        R::InvalidCertificate(C::NotValidYet | C::NotValidYetContext { .. }) => {
            format!("the client certificate is not valid yet ({r})")
        }
        R::InvalidCertificate(C::Revoked) => "the client certificate has been revoked".into(),
        R::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => {
            format!("the client certificate was not issued by this server's CA ({r})")
        }
        other => other.to_string(),
    }
}

/// How a client reaches a Trireme server.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The rustls configuration (see [`client_config`](super::client_config)).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry (its `--name` at issue).
    pub server_name: String,
    /// The role the server's certificate must carry, normally
    /// [`Role::Controller`]; `None` accepts any Trireme role.
    pub server_role: Option<Role>,
}

/// Dial `addr` (`host:port`) over mTLS and open a gRPC channel.
///
/// # Errors
/// [`Error::Tls`] with the whole error chain when the connection, the
/// handshake or the server's role check fails. With TLS 1.3 a server that
/// refuses *this client's* certificate may only say so on the first RPC.
pub async fn connect(addr: &str, tls: ClientTls) -> Result<Channel> {
    let server_name = ServerName::try_from(tls.server_name.clone())
        .map_err(|e| Error::Tls(format!("invalid server name {:?}: {e}", tls.server_name)))?;
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::Tls(format!("invalid server address {addr:?}: {e}")))?
        .connect_timeout(Duration::from_secs(10))
        // Long-lived streams (the agent's session) notice a dead link.
        .http2_keep_alive_interval(Duration::from_secs(15))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let connector = TlsConnector::from(tls.config.clone());
    let want_role = tls.server_role;
    let channel = endpoint
        .connect_with_connector(tower::service_fn(move |uri: Uri| {
            let connector = connector.clone();
            let server_name = server_name.clone();
            async move {
                let host = uri.host().unwrap_or("localhost").trim_matches(['[', ']']);
                let port = uri.port_u16().unwrap_or(443);
                let tcp = TcpStream::connect((host, port)).await?;
                let _ = tcp.set_nodelay(true);
                let stream = connector.connect(server_name, tcp).await?;
                if let Some(want) = want_role {
                    check_server_role(stream.get_ref().1.peer_certificates(), want)?;
                }
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .map_err(|e| Error::Tls(format!("cannot connect to {addr}: {}", error_chain(&e))))?;
    Ok(channel)
}

fn check_server_role(
    certs: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    want: Role,
) -> std::io::Result<()> {
    let denied = |msg: String| std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg);
    let leaf = certs
        .and_then(|c| c.first())
        .ok_or_else(|| denied("the server presented no certificate".into()))?;
    let id = identity_from_cert(leaf).map_err(|e| denied(e.to_string()))?;
    if id.role != want {
        return Err(denied(format!(
            "the server's certificate {id} has role {} but a {want} was expected: wrong address, or a misissued certificate",
            id.role
        )));
    }
    Ok(())
}

/// `Display` of an error and all its sources, joined with `: `.
pub(crate) fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let m = c.to_string();
        if !s.contains(&m) {
            s.push_str(": ");
            s.push_str(&m);
        }
        cur = c.source();
    }
    s
}

/// Who is calling, and may they call this RPC? Reads the peer certificate
/// the TLS handshake verified, and checks its role against `allowed`.
///
/// Returns `Unauthenticated` when there is no certificate (the server is not
/// behind [`serve`]) or it carries no Trireme identity, `PermissionDenied`
/// when the role is not allowed; every refusal is logged. This does not
/// consult the CRL: use [`Authorizer`] for that on long-lived connections.
///
/// # Errors
/// The [`Status`] to return to the caller.
pub fn authorize<T>(
    request: &Request<T>,
    allowed: &[Role],
) -> std::result::Result<Identity, Status> {
    check(request, allowed, None)
}

/// [`authorize`] plus a revocation check against the current CRL, so a
/// certificate revoked while its connection stays open is refused at its
/// next RPC. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Authorizer {
    tls: Arc<ReloadingServerConfig>,
}

impl Authorizer {
    /// An authorizer following the server's TLS files.
    pub fn new(tls: Arc<ReloadingServerConfig>) -> Self {
        Self { tls }
    }

    /// The server's TLS files.
    pub fn files(&self) -> &super::TlsFiles {
        self.tls.files()
    }

    /// See [`authorize`]; a revoked certificate gets `Unauthenticated`.
    ///
    /// # Errors
    /// The [`Status`] to return to the caller.
    pub fn authorize<T>(
        &self,
        request: &Request<T>,
        allowed: &[Role],
    ) -> std::result::Result<Identity, Status> {
        check(request, allowed, Some(&self.tls))
    }

    /// Whether the current CRL lists `serial` (as in [`Identity::serial`]):
    /// for streams that outlive the RPC's own check.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.tls.is_revoked(serial)
    }

    /// Every serial the current CRL lists: for checking many open streams
    /// at once (e.g. every connected agent's session).
    pub fn revoked_serials(&self) -> Arc<std::collections::HashSet<String>> {
        self.tls.revoked_serials()
    }

    /// A tonic interceptor that admits only `allowed` roles and puts the
    /// caller's [`Identity`] in the request extensions, e.g.
    /// `HealthServer::with_interceptor(svc, authz.require(&[Role::Operator]))`.
    pub fn require(&self, allowed: &'static [Role]) -> RequireRoles {
        RequireRoles {
            authz: self.clone(),
            allowed,
        }
    }
}

/// The interceptor made by [`Authorizer::require`].
#[derive(Debug, Clone)]
pub struct RequireRoles {
    authz: Authorizer,
    allowed: &'static [Role],
}

impl Interceptor for RequireRoles {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        let id = self.authz.authorize(&request, self.allowed)?;
        request.extensions_mut().insert(id);
        Ok(request)
    }
}

fn check<T>(
    request: &Request<T>,
    allowed: &[Role],
    tls: Option<&ReloadingServerConfig>,
) -> std::result::Result<Identity, Status> {
    let rpc = request
        .extensions()
        .get::<RpcMethod>()
        .map(|m| m.0.to_string())
        .unwrap_or_else(|| "(unknown RPC)".into());
    let peer = request
        .remote_addr()
        .map(|a: SocketAddr| a.to_string())
        .unwrap_or_else(|| "(unknown address)".into());
    let certs = request.peer_certs();
    let Some(leaf) = certs.as_ref().and_then(|c| c.first()) else {
        tracing::warn!(%peer, %rpc, reason = "no client certificate", "refused an RPC");
        return Err(Status::unauthenticated(format!(
            "{rpc} needs a client certificate: connect over mTLS with a certificate from `trireme cert issue`"
        )));
    };
    let id = identity_from_cert(leaf).map_err(|e| {
        tracing::warn!(%peer, %rpc, reason = %e, "refused an RPC");
        Status::unauthenticated(e.to_string())
    })?;
    if tls.is_some_and(|t| t.is_revoked(&id.serial)) {
        tracing::warn!(%peer, who = %id.name, role = %id.role, serial = %id.serial, %rpc,
            reason = "certificate revoked", "refused an RPC");
        return Err(Status::unauthenticated(format!(
            "the certificate of {id} has been revoked; ask an operator for a new one"
        )));
    }
    if !allowed.contains(&id.role) {
        let need = allowed
            .iter()
            .map(|r| r.as_str())
            .collect::<Vec<_>>()
            .join(" or ");
        tracing::warn!(%peer, who = %id.name, role = %id.role, serial = %id.serial, %rpc,
            reason = %format!("role {} not allowed (needs {need})", id.role), "refused an RPC");
        return Err(Status::permission_denied(format!(
            "{rpc} needs the {need} role, but {} has the {} role",
            id.name, id.role
        )));
    }
    Ok(id)
}
