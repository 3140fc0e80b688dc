//! A small HTTP/1.1 client for outgoing POSTs (notifications): `http://`,
//! or `https://` verified against the system's CA certificates, one
//! connection per request, with a deadline.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};

/// POST `body` to `url` with `headers`; the status and the response body
/// (at most 64 KiB of it). `Err` says what failed: name, connection, TLS,
/// or the deadline.
pub async fn post(
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
    deadline: Duration,
) -> Result<(u16, String), String> {
    tokio::time::timeout(deadline, post_once(url, headers, body))
        .await
        .map_err(|_| format!("no answer from {} within {deadline:?}", host_of(url)))?
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| url.to_string())
}

async fn post_once(
    url: &str,
    headers: &[(&str, String)],
    body: Bytes,
) -> Result<(u16, String), String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let tls = match u.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("{url:?}: scheme {other} is not http or https")),
    };
    let host = u
        .host_str()
        .ok_or_else(|| format!("{url:?} has no host"))?
        .to_string();
    let port = u
        .port_or_known_default()
        .unwrap_or(if tls { 443 } else { 80 });
    let authority = match u.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.clone(),
    };
    let mut path = u.path().to_string();
    if let Some(q) = u.query() {
        path.push('?');
        path.push_str(q);
    }
    let mut req = hyper::Request::post(path)
        .header(hyper::header::HOST, &authority)
        .header(
            hyper::header::USER_AGENT,
            concat!("trireme/", env!("CARGO_PKG_VERSION")),
        );
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let req = req
        .body(Full::new(body))
        .map_err(|e| format!("building the request: {e}"))?;
    let tcp = tokio::net::TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let resp = if tls {
        let name =
            rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
                .map_err(|_| format!("{host:?} is not a valid TLS server name"))?;
        let stream = tokio_rustls::TlsConnector::from(client_config())
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS handshake with {authority} failed: {e}"))?;
        send(hyper_util::rt::TokioIo::new(stream), req).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), req).await
    }
    .map_err(|e| format!("HTTP exchange with {authority} failed: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&body[..body.len().min(64 * 1024)]).into_owned();
    Ok((status, text))
}

/// TLS to public endpoints: the system's CA certificates.
fn client_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
            let config =
                rustls::ClientConfig::builder_with_provider(crate::tls::config::provider())
                    .with_safe_default_protocol_versions()
                    .expect("the provider supports TLS 1.2 and 1.3")
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

async fn send<IO>(
    io: hyper_util::rt::TokioIo<IO>,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    let conn = tokio::spawn(conn);
    let resp = sender.send_request(req).await;
    if resp.is_err() {
        conn.abort();
    }
    resp
}
