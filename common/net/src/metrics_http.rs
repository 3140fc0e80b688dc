//! A plain-HTTP `/metrics` endpoint (Prometheus text format), shared by the
//! controller and the agents. The text is rendered at each scrape by the
//! caller's function, so values are never stale and cost nothing between
//! scrapes. Keep it on a private network: it names hosts, sources and
//! locations (no data, no keys).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use trireme_common::error::{Error, Result};

/// Renders the metrics text, or says why it cannot.
pub type Render = Arc<dyn Fn() -> std::result::Result<String, String> + Send + Sync>;

/// Serve `/metrics` on `addr` until `stop` turns true.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    render: Render,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io("listening for metrics on", addr.to_string(), e))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics");
    loop {
        let accepted = tokio::select! {
            _ = stop.wait_for(|v| *v) => None,
            a = listener.accept() => Some(a),
        };
        let tcp = match accepted {
            None => return Ok(()),
            Some(Ok((tcp, _))) => tcp,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "metrics: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let render = render.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let render = render.clone();
                async move { Ok::<_, Infallible>(respond(&render, req.uri().path())) }
            });
            let io = hyper_util::rt::TokioIo::new(tcp);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .await
            {
                tracing::debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn respond(render: &Render, path: &str) -> Response<Full<Bytes>> {
    let (status, body, ctype) = if path != "/metrics" {
        (
            StatusCode::NOT_FOUND,
            "only /metrics is served here\n".to_string(),
            "text/plain",
        )
    } else {
        match tokio::task::block_in_place(|| render()) {
            Ok(text) => (StatusCode::OK, text, "text/plain; version=0.0.4"),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e}\n"),
                "text/plain",
            ),
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}
