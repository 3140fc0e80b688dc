//! Daemon mode: the agent dials the controller, registers, and holds one
//! `Session` stream; jobs come down, heartbeats, progress and results go up.
//! The session is re-established after any failure, with exponential
//! backoff and full jitter, forever.

pub mod config;
pub mod enroll;
pub mod inbound;
mod keys;
pub mod limits;
pub mod metrics;
mod runner;
mod spool;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::sync::mpsc;
use trireme_net::tls::{client_config, connect, ClientTls};
use trireme_net::Role;
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::agent_service_client::AgentServiceClient;
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::{
    AgentMessage, Heartbeat, Hello, RegisterRequest, SourceInfo, SourceKindInfo,
};

pub use config::AgentConfig;
use runner::Runner;
use spool::Spool;

/// First reconnection delay; it doubles up to the configured maximum.
const BASE_BACKOFF: Duration = Duration::from_millis(500);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(30);
/// How often running jobs report progress.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);

/// Enroll with the bootstrap token; a controller that cannot be reached is
/// tried again (with backoff up to `max_backoff`), a refusal is returned.
async fn enroll_until_done(e: &enroll::Enrollment, max_backoff: Duration) -> Result<()> {
    let mut wait = BASE_BACKOFF;
    loop {
        match enroll::enroll(e).await {
            Ok(got) => {
                tracing::info!(
                    name = %e.name,
                    serial = %got.serial,
                    not_after = got.not_after_unix,
                    cert = %e.tls.cert.display(),
                    "enrolled with the bootstrap token: certificate issued by the controller"
                );
                return Ok(());
            }
            Err(err) if err.downcast_ref::<enroll::Refused>().is_some() => return Err(err),
            Err(err)
                if err.to_string().contains("readable by group")
                    || err.to_string().contains("CA certificate")
                    || err.to_string().contains("token file") =>
            {
                return Err(err)
            }
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), retry_in = ?wait, "cannot enroll yet");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(max_backoff);
            }
        }
    }
}

/// Run the agent until `shutdown` completes.
///
/// # Errors
/// Startup errors (TLS files, state directory); connection problems are
/// retried, not returned.
pub async fn run(
    config: AgentConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    if let Some(token_file) = &config.bootstrap_token_file {
        if enroll::needed(&config.tls)? {
            let e = enroll::Enrollment {
                address: config.enroll_controller.clone().unwrap_or_default(),
                server_name: config.server_name.clone(),
                name: config.name.clone(),
                tls: config.tls.clone(),
                token_file: token_file.clone(),
            };
            tokio::select! {
                r = enroll_until_done(&e, config.max_backoff) => r?,
                () = &mut shutdown => return Ok(()),
            }
        } else {
            tracing::info!(cert = %config.tls.cert.display(), "certificate present: not enrolling (bootstrap_token_file is not used)");
        }
    }
    let tls = ClientTls {
        config: Arc::new(client_config(&config.tls).with_context(|| {
            format!(
                "cannot load the agent's certificate {} (issue one with `trireme cert issue --role agent --name {}`)",
                config.tls.cert.display(),
                config.name
            )
        })?),
        server_name: config.server_name.clone(),
        server_role: Some(Role::Controller),
    };
    // Before anything else starts: every thread and child inherits it.
    limits::apply_priority(config.cpu_nice, config.io_priority)?;
    let spool = Spool::open(&config.state_dir)?;
    let runner = Arc::new(Runner::new(config.clone(), tls.clone(), spool));
    let (_stop_metrics, stop_rx) = tokio::sync::watch::channel(false);
    if let Some(addr) = config.metrics_listen {
        let m = runner.metrics.clone();
        let files = config.tls.clone();
        let metrics: trireme_net::metrics_http::Render =
            Arc::new(move || Ok(m.render_with_certificates(&files)));
        // Ready while a session with the controller is open.
        let r = runner.clone();
        let ready: trireme_net::metrics_http::Render = Arc::new(move || {
            if r.connected.load(std::sync::atomic::Ordering::Relaxed) {
                Ok("ready: connected to the controller".into())
            } else {
                Err("not connected to the controller (see the agent's log)".into())
            }
        });
        let endpoints = trireme_net::metrics_http::Endpoints { metrics, ready };
        let serve = trireme_net::metrics_http::serve(addr, endpoints, stop_rx);
        // A bind failure is logged; the agent runs on without metrics.
        tokio::spawn(async move {
            if let Err(e) = serve.await {
                tracing::error!(error = %e, "metrics endpoint stopped");
            }
        });
    }
    tracing::info!(agent = %config.name, controller = %config.controller, sources = config.sources.len(),
        max_jobs = config.max_concurrent_jobs, upload_bytes_per_sec = ?config.upload_bytes_per_sec,
        cpu_nice = ?config.cpu_nice, io_priority = ?config.io_priority, "trireme-agent started");
    let mut failures = 0u32;
    loop {
        let began = Instant::now();
        let outcome = tokio::select! {
            () = &mut shutdown => return Ok(()),
            r = session(&config, &tls, &runner) => r,
        };
        runner
            .connected
            .store(false, std::sync::atomic::Ordering::Relaxed);
        match outcome {
            Ok(()) => tracing::warn!("the controller closed the session; reconnecting"),
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "session with the controller failed; reconnecting")
            }
        }
        if began.elapsed() >= STABLE_SESSION {
            failures = 0;
        }
        let delay = backoff(failures, config.max_backoff);
        failures = failures.saturating_add(1);
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "waiting before reconnecting"
        );
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

/// Exponential backoff with full jitter: uniform in [0, min(max, base·2ⁿ)],
/// at least 100 ms, so a fleet reconnecting after a controller restart
/// spreads out instead of arriving at once.
fn backoff(failures: u32, max: Duration) -> Duration {
    let cap = BASE_BACKOFF
        .saturating_mul(1u32 << failures.min(16))
        .min(max);
    let r = jitter();
    Duration::from_millis(100).max(cap.mul_f64(r))
}

/// A random number in [0, 1) (std's per-process random hasher keys).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// The sources as registered: each with its kind's description, so the
/// controller need not know kinds.
fn sources(config: &AgentConfig) -> Vec<SourceInfo> {
    config
        .sources
        .iter()
        .map(|s| SourceInfo {
            name: s.name.clone(),
            kind: s.kind().to_string(),
            details: s.details().into_iter().collect(),
            kind_info: Some(SourceKindInfo {
                drill_rank: s.spec.kind().drill_rank,
            }),
        })
        .collect()
}

/// One session: connect, register, say hello, then serve until it breaks.
async fn session(config: &AgentConfig, tls: &ClientTls, runner: &Arc<Runner>) -> Result<()> {
    let channel = connect(&config.controller, tls.clone()).await?;
    let mut client = AgentServiceClient::new(channel);
    let reply = client
        .register(RegisterRequest {
            agent_name: config.name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: config.hostname.clone(),
            sources: sources(config),
        })
        .await
        .map_err(|s| anyhow::anyhow!("registration refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    let heartbeat = Duration::from_secs(u64::from(reply.heartbeat_interval_secs.max(1)));
    let (tx, rx) = mpsc::channel::<AgentMessage>(256);
    let pending = runner.spool().all();
    let mut sent: HashSet<String> = pending.iter().map(|r| r.job_id.clone()).collect();
    tx.send(AgentMessage {
        msg: Some(AgentMsg::Hello(Hello {
            agent_name: config.name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            hostname: config.hostname.clone(),
            sources: sources(config),
            running_job_ids: runner.running_ids(),
            pending_results: pending,
            max_concurrent_jobs: u32::try_from(config.max_concurrent_jobs).unwrap_or(u32::MAX),
        })),
    })
    .await?;
    let mut inbound = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("session refused ({:?}): {}", s.code(), s.message()))?
        .into_inner();
    tracing::info!(controller = %config.controller, heartbeat_secs = heartbeat.as_secs(), "connected to the controller");
    runner
        .connected
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut beat = tokio::time::interval(heartbeat);
    let mut progress = tokio::time::interval(PROGRESS_EVERY);
    // A dead link is caught by HTTP/2 keepalive (see `connect`) and by the
    // controller's own liveness check, which closes silent sessions.
    loop {
        tokio::select! {
            m = inbound.message() => {
                let m = m.map_err(|s| anyhow::anyhow!("session broke ({:?}): {}", s.code(), s.message()))?;
                let Some(m) = m else { return Ok(()) };
                match m.msg {
                    Some(CtlMsg::Assign(a)) => match inbound::check_assignment(&a) {
                        Ok(()) => {
                            tracing::info!(job = %a.job_id, source = %a.source_name, "job assigned");
                            runner.start(a);
                        }
                        Err(why) => tracing::error!(source = %a.source_name, "{why}"),
                    },
                    Some(CtlMsg::Cancel(c)) => runner.cancel(&c.job_id, &c.reason),
                    Some(CtlMsg::Ack(a)) => {
                        runner.spool().remove(&a.job_id);
                        sent.remove(&a.job_id);
                        tracing::debug!(job = %a.job_id, "result acknowledged");
                    }
                    None => {}
                }
            }
            _ = beat.tick() => {
                let running = runner.running_ids();
                runner.metrics.set_running(running.len());
                let hb = Heartbeat {
                    unix_time: chrono_now(),
                    running_job_ids: running,
                    volumes: runner.metrics.volumes(&config.sources),
                };
                tx.send(AgentMessage { msg: Some(AgentMsg::Heartbeat(hb)) }).await?;
            }
            _ = progress.tick() => {
                for p in runner.progress() {
                    tx.send(AgentMessage { msg: Some(AgentMsg::Progress(p)) }).await?;
                }
            }
            () = runner.progress_now.notified() => {
                for p in runner.progress() {
                    tx.send(AgentMessage { msg: Some(AgentMsg::Progress(p)) }).await?;
                }
            }
            () = runner.results_ready.notified() => {
                for r in runner.spool().all() {
                    if sent.insert(r.job_id.clone()) {
                        tracing::info!(job = %r.job_id, ok = r.ok, "reporting job result");
                        tx.send(AgentMessage { msg: Some(AgentMsg::Result(r)) }).await?;
                    }
                }
            }
        }
    }
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let max = Duration::from_secs(60);
        for n in 0..40 {
            let d = backoff(n, max);
            assert!(d <= max && d >= Duration::from_millis(100), "{n}: {d:?}");
        }
        let samples: HashSet<u128> = (0..20).map(|_| backoff(10, max).as_millis()).collect();
        assert!(samples.len() > 10, "jitter spreads delays: {samples:?}");
        let small: u128 = (0..50).map(|_| backoff(0, max).as_millis()).max().unwrap();
        assert!(small <= 500, "first retry is quick: {small}");
    }
}
