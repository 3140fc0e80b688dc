//! Helpers of the controller's integration tests (a fleet of real
//! processes, the br stand-in, redis, a hand-spoken agent session). The helpers shared with the other
//! crates' tests (Garage, moto, free ports, test data) are `trireme_testkit`.

#![allow(dead_code)]

pub mod br;
pub mod fleet;
pub mod receiver;
pub mod redis;
pub mod session;
pub mod totp;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

/// Dial `addr` over TLS trusting `ca_pem` but presenting no client
/// certificate; true when the server refuses (at the handshake or at the
/// first read, as TLS 1.3 servers report it after the client's Finished).
pub async fn no_cert_handshake(addr: SocketAddr, ca_pem: &Path) -> bool {
    use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca_pem).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let Ok(mut tls) = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
    else {
        return true;
    };
    // An HTTP/2 preface; a server that accepted us would answer with SETTINGS.
    let _ = tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
    let mut buf = [0u8; 64];
    !matches!(
        tokio::time::timeout(std::time::Duration::from_secs(5), tls.read(&mut buf)).await,
        Ok(Ok(n)) if n > 0
    )
}
