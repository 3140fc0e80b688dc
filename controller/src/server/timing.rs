//! Histograms the controller keeps between scrapes (`/metrics` builds its
//! gauges from the catalog at each scrape, these it cannot): how long gRPC
//! calls take to answer, and how long notification deliveries take.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, Registry};
use tonic::body::Body;
use tonic::codegen::http;
use tonic::codegen::Service;
use tonic::server::NamedService;

/// Buckets of `trireme_rpc_duration_seconds`: 1 ms to 60 s.
pub const RPC_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0, 30.0, 60.0,
];

/// Buckets of `trireme_notification_delivery_duration_seconds`: 10 ms to
/// 5 minutes (a delivery retried 5 times with its waits takes over 15 s).
pub const NOTIFY_BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0, 60.0, 300.0,
];

/// The controller's histograms.
#[derive(Clone)]
pub struct Histograms {
    /// gRPC calls by method.
    pub rpc: HistogramVec,
    /// Notification deliveries by target kind and outcome.
    pub notify: HistogramVec,
}

impl Default for Histograms {
    fn default() -> Self {
        let h = |name: &str, help: &str, buckets: &[f64], labels: &[&str]| {
            HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                labels,
            )
            .expect("valid histogram")
        };
        Histograms {
            rpc: h(
                "trireme_rpc_duration_seconds",
                "How long the controller took to answer a gRPC call, by method (to the response headers: for a stream, until it starts)",
                &RPC_BUCKETS,
                &["method"],
            ),
            notify: h(
                "trireme_notification_delivery_duration_seconds",
                "How long a notification delivery took, its retries included, by target kind and outcome",
                &NOTIFY_BUCKETS,
                &["kind", "outcome"],
            ),
        }
    }
}

impl Histograms {
    /// Add them to a scrape's registry.
    ///
    /// # Errors
    /// A name already registered there.
    pub fn register(&self, reg: &Registry) -> prometheus::Result<()> {
        reg.register(Box::new(self.rpc.clone()))?;
        reg.register(Box::new(self.notify.clone()))
    }
}

/// A gRPC service whose calls are timed into
/// `trireme_rpc_duration_seconds`. Calls to methods the service does not
/// have (answered `Unimplemented`) count as method `other`, so a caller
/// cannot grow the label set.
#[derive(Clone)]
pub struct Timed<S> {
    inner: S,
    rpc: HistogramVec,
}

impl<S> Timed<S> {
    /// Time `inner`'s calls into `h.rpc`.
    pub fn new(inner: S, h: &Histograms) -> Self {
        Timed {
            inner,
            rpc: h.rpc.clone(),
        }
    }
}

impl<S: NamedService> NamedService for Timed<S> {
    const NAME: &'static str = S::NAME;
}

impl<S> Service<http::Request<Body>> for Timed<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future =
        Pin<Box<dyn Future<Output = Result<http::Response<Body>, Infallible>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let method = req.uri().path().to_string();
        let start = Instant::now();
        let rpc = self.rpc.clone();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let r = fut.await;
            if let Ok(resp) = &r {
                // 12: Unimplemented, the answer for an unknown method.
                let unknown = resp
                    .headers()
                    .get("grpc-status")
                    .is_some_and(|v| v.as_bytes() == b"12");
                let label = if unknown { "other" } else { method.as_str() };
                rpc.with_label_values(&[label])
                    .observe(start.elapsed().as_secs_f64());
            }
            r
        })
    }
}
