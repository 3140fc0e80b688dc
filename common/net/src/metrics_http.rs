//! A plain-HTTP endpoint shared by the controller and the agents:
//! `/metrics` (Prometheus text format), `/healthz` (the process answers)
//! and `/readyz` (it can do its work: the caller says). The metrics text is
//! rendered at each scrape by the caller's function, so values are never
//! stale and cost nothing between scrapes. Keep it on a private network: it
//! names hosts, sources and locations (no data, no keys).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};

use trireme_common::error::{Error, Result};

/// Renders the metrics text, or says why it cannot.
pub type Render = Arc<dyn Fn() -> std::result::Result<String, String> + Send + Sync>;

/// What the endpoint serves: the metrics text, and readiness (`Ok`: what is
/// ready, one line; `Err`: why not).
#[derive(Clone)]
pub struct Endpoints {
    /// `/metrics`.
    pub metrics: Render,
    /// `/readyz`: 200 with `Ok`'s text, 503 with `Err`'s.
    pub ready: Render,
}

/// Serve `/metrics`, `/healthz` and `/readyz` on `addr` until `stop` turns
/// true.
///
/// # Errors
/// When the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    render: Endpoints,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<()> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| Error::io("listening for metrics on", addr.to_string(), e))?;
    tracing::info!(%addr, "serving Prometheus metrics at /metrics, and /healthz, /readyz");
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

fn respond(render: &Endpoints, path: &str) -> Response<Full<Bytes>> {
    let (status, body, ctype) = match path {
        "/metrics" => match tokio::task::block_in_place(|| (render.metrics)()) {
            Ok(text) => (StatusCode::OK, text, "text/plain; version=0.0.4"),
            Err(e) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("{e}\n"),
                "text/plain",
            ),
        },
        "/healthz" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        "/readyz" => match (render.ready)() {
            Ok(text) => (StatusCode::OK, format!("{text}\n"), "text/plain"),
            Err(e) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {e}\n"),
                "text/plain",
            ),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "served here: /metrics, /healthz, /readyz\n".to_string(),
            "text/plain",
        ),
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(ctype),
    );
    r
}
