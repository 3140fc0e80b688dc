//! Fleet benchmark: many simulated agents in this process against one real
//! `trireme-controller` process, over mTLS on loopback.
//!
//! ```sh
//! cargo bench -p trireme-controller --bench fleet                    # 1,000 agents
//! cargo bench -p trireme-controller --bench fleet -- --agents 200    # a quick run
//! ```
//!
//! Flags (after `--`): `--agents N` (default 1000), `--controller-bin PATH`
//! (default: the `trireme-controller` cargo built next to this bench, i.e.
//! the release build), `--connect-concurrency N` (agents registering at
//! once, default 100), `--rpc-concurrency N` (RunBackup calls in flight,
//! default 50), `--full` (the manual burst asks for full backups; the
//! default is incremental, for which the controller looks up each source's
//! parent snapshot), `--keep` (keep the temporary directory, with the
//! controller's log and catalog).
//!
//! What it does, in order:
//!
//! 1. **Setup** (untimed): a CA, the controller's and an operator's
//!    certificates and one agent certificate per simulated agent; a master
//!    key; a controller with one `file://` location, `heartbeat_interval =
//!    "10s"`, its log (level `info`) in a file. The controller runs as its
//!    own process, so its memory is its own (`/proc/PID/status`).
//! 2. **Registration**: every agent dials (TLS), calls `Register`, opens its
//!    `Session` and sends `Hello`; at most `--connect-concurrency` agents do
//!    this at once. An agent counts as connected when the `Session` call
//!    returns, which the controller does after it has processed the `Hello`
//!    and put the agent in its table of connected agents. Reported: wall time
//!    until every agent is connected, then until `Status` says
//!    `agents_connected == N`, and per-agent percentiles of each step.
//!    Agents then heartbeat every `heartbeat_interval_secs` and answer every
//!    `JobAssignment` at once with a successful `JobResult` (a fresh random
//!    snapshot id).
//! 3. **Cron burst**: one `ApplyPolicy` with a `* * * * *` policy for every
//!    agent's source, applied at least 5 s before a minute boundary. At the
//!    boundary (the slot) the scheduler queues one job per source. Latency of
//!    a job = the time its agent receives the `JobAssignment` minus the slot
//!    (wall clock; one machine, one clock). Also: time from the slot until
//!    every result is acknowledged. The policies are then re-applied with a
//!    yearly schedule so no further minute fires, and the bench waits until
//!    the controller reports no queued or running job.
//! 4. **Manual burst**: one `RunBackup` per source, `--rpc-concurrency` in
//!    flight over one operator connection. Latency of a job = assignment
//!    receipt minus the start of its `RunBackup` call.
//! 5. **Resources**: the controller's VmRSS, VmHWM, threads, CPU time and
//!    bytes written to storage (`/proc/PID/io`) after each phase; the
//!    catalog's size on disk; the controller's log size and its warnings.
//! 6. SIGTERM to the controller with the agents still connected (as in a
//!    real restart), and the time it takes to exit; if it is still running
//!    after 30 s the agents hang up and it gets 30 s more, then SIGKILL.
//!    The temporary directory is removed (unless `--keep`).
//!
//! The open-files limit is raised to about 2 × N + 256 when the hard limit
//! allows (each side holds one socket per agent).
//!
//! The report is Markdown on stdout (progress goes to stderr), ready to
//! paste into `bench/RESULTS.md`. The simulated agents share the machine's
//! CPUs with the controller; the report gives this process's CPU time too.
//!
//! Run by `cargo test --benches` (no `--bench` flag), it only says so and
//! exits: a 1,000-agent run is not a test. To run the built binary
//! directly, pass `--bench` yourself.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use futures::StreamExt;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;
use trireme_net::tls::{ca, client_config, connect, ClientTls, Role, TlsFiles};
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::agent_service_client::AgentServiceClient;
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::operator_service_client::OperatorServiceClient;
use trireme_proto::v1::{
    AgentMessage, ApplyPolicyRequest, ControllerMessage, Heartbeat, Hello, JobResult, JobSummary,
    RegisterRequest, RunBackupRequest, SourceInfo, SourceRef, StatusReply, StatusRequest,
};

/// The one source every simulated agent reports.
const SOURCE: &str = "data";
/// The controller's heartbeat interval (its config).
const HEARTBEAT: &str = "10s";
/// Longest wait for any one phase.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);
/// Policies are applied at least this long before the minute boundary.
const SLOT_MARGIN_SECS: u64 = 5;

fn main() -> std::process::ExitCode {
    let args = match Args::parse(std::env::args().skip(1).collect()) {
        Ok(Parsed::Run(a)) => a,
        Ok(Parsed::NotBench) => {
            eprintln!("fleet: a benchmark, not a test; run it with `cargo bench -p trireme-controller --bench fleet`");
            return std::process::ExitCode::SUCCESS;
        }
        Ok(Parsed::Help) => {
            eprintln!("{USAGE}");
            return std::process::ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("fleet: {e:#}\n{USAGE}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
        .and_then(|rt| rt.block_on(run(&args)));
    match result {
        Ok(report) => {
            println!("{report}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("fleet: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: cargo bench -p trireme-controller --bench fleet -- [--agents N] \
[--controller-bin PATH] [--connect-concurrency N] [--rpc-concurrency N] [--full] [--keep]";

// ---------------------------------------------------------------- arguments

struct Args {
    agents: usize,
    controller_bin: PathBuf,
    connect_concurrency: usize,
    rpc_concurrency: usize,
    full: bool,
    keep: bool,
    /// The arguments as given (without cargo's `--bench`), for the report.
    given: Vec<String>,
}

enum Parsed {
    Run(Args),
    /// Started without `--bench`: by `cargo test`, not `cargo bench`.
    NotBench,
    Help,
}

impl Args {
    fn parse(raw: Vec<String>) -> Result<Parsed> {
        let mut a = Args {
            agents: 1000,
            controller_bin: PathBuf::from(env!("CARGO_BIN_EXE_trireme-controller")),
            connect_concurrency: 100,
            rpc_concurrency: 50,
            full: false,
            keep: false,
            given: raw.iter().filter(|f| *f != "--bench").cloned().collect(),
        };
        if !raw.iter().any(|f| f == "--bench") {
            return Ok(Parsed::NotBench);
        }
        let mut it = a.given.clone().into_iter();
        while let Some(flag) = it.next() {
            let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
            match flag.as_str() {
                "--agents" => a.agents = count(&flag, &value()?)?,
                "--connect-concurrency" => a.connect_concurrency = count(&flag, &value()?)?,
                "--rpc-concurrency" => a.rpc_concurrency = count(&flag, &value()?)?,
                "--controller-bin" => a.controller_bin = PathBuf::from(value()?),
                "--full" => a.full = true,
                "--keep" => a.keep = true,
                "--help" | "-h" => return Ok(Parsed::Help),
                other => bail!("unknown argument {other:?}"),
            }
        }
        if !a.controller_bin.is_file() {
            bail!(
                "no controller binary at {}: build it with `cargo build --release -p trireme-controller --bin trireme-controller` or pass --controller-bin",
                a.controller_bin.display()
            );
        }
        Ok(Parsed::Run(a))
    }

    fn command(&self) -> String {
        let mut c = "cargo bench -p trireme-controller --bench fleet".to_string();
        if !self.given.is_empty() {
            c.push_str(" -- ");
            c.push_str(&self.given.join(" "));
        }
        c
    }
}

fn count(flag: &str, v: &str) -> Result<usize> {
    match v.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => bail!("{flag} {v:?}: expected a positive number"),
    }
}

fn agent_name(i: usize) -> String {
    format!("agent-{:04}", i + 1)
}

// ---------------------------------------------------------------- the run

async fn run(args: &Args) -> Result<String> {
    let n = args.agents;
    let machine = Machine::read();
    raise_open_files_limit(n)?;
    let tmp = tempfile::Builder::new()
        .prefix("trireme-fleet-")
        .tempdir()
        .context("creating a temporary directory")?;
    let dir = tmp.path().to_path_buf();
    let fs_type = filesystem_of(&dir);

    eprintln!("fleet: issuing {} certificates in {}", n + 2, dir.display());
    let tls_dir = dir.join("tls");
    let t = Instant::now();
    {
        let tls_dir = tls_dir.clone();
        tokio::task::spawn_blocking(move || make_pki(&tls_dir, n))
            .await
            .context("certificate task")??;
    }
    let pki_time = t.elapsed();

    let mut controller = Controller::start(&args.controller_bin, &dir).await?;
    let version = controller.version.clone();
    let mut operator = operator_client(&controller.addr, &tls_dir).await?;
    let mut samples = vec![("started, idle", controller.sample()?, self_cpu())];

    // Registration.
    eprintln!(
        "fleet: registering {n} agents, {} at a time",
        args.connect_concurrency
    );
    let (events_tx, events_rx) = mpsc::unbounded_channel();
    let mut tally = Tally::new(n, events_rx);
    let sim = Arc::new(Sim {
        addr: controller.addr.clone(),
        tls_dir: tls_dir.clone(),
    });
    let gate = Arc::new(Semaphore::new(args.connect_concurrency));
    let start = Instant::now();
    let agents: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(simulated_agent(
                sim.clone(),
                i,
                gate.clone(),
                events_tx.clone(),
            ))
        })
        .collect();
    drop(events_tx);
    tally
        .wait("every agent to connect", start + PHASE_TIMEOUT, |t| {
            t.connected + t.connect_errors.len() >= n
        })
        .await?;
    let all_sessions = start.elapsed();
    if let Some((agent, e)) = tally.connect_errors.first() {
        bail!(
            "{} of {n} agents could not connect; the first, {}: {e}",
            tally.connect_errors.len(),
            agent_name(*agent)
        );
    }
    let status = wait_status(&mut operator, "Status to count every agent", |s| {
        s.agents_connected as usize >= n
    })
    .await?;
    let all_status = start.elapsed();
    let registration = Registration {
        all_sessions,
        all_status,
        agents_total: status.agents_total,
        steps: tally.connect_times.clone(),
    };
    samples.push(("after registration", controller.sample()?, self_cpu()));

    // Cron burst.
    let cron = cron_burst(&mut operator, &mut tally, n).await?;
    samples.push(("after the cron burst", controller.sample()?, self_cpu()));

    // Manual burst.
    let manual = manual_burst(&mut operator, &mut tally, args).await?;
    let t = Instant::now();
    let status = operator
        .status(StatusRequest {})
        .await
        .context("Status")?
        .into_inner();
    let status_time = t.elapsed();
    samples.push(("after the manual burst", controller.sample()?, self_cpu()));
    let catalog = dir_size(&dir.join("data"));
    let self_hwm = proc_status(Path::new("/proc/self/status"))
        .map(|s| s.hwm_kib)
        .unwrap_or(0);

    // Stop the controller with the agents still connected, as in a restart.
    eprintln!("fleet: stopping the controller (SIGTERM)");
    let stopped = controller.stop(&agents).await?;
    for a in &agents {
        a.abort();
    }
    let log = LogSummary::read(&controller.log);
    if args.keep {
        let kept = tmp.keep();
        eprintln!("fleet: kept {}", kept.display());
    }

    let report = Report {
        args,
        machine: &machine,
        fs_type: &fs_type,
        version: &version,
        pki_time,
        registration,
        cron,
        manual,
        samples,
        catalog,
        status_time,
        jobs_failed: status.jobs_failed_24h,
        session_ends: tally.ended,
        cancels: tally.cancels,
        stopped,
        log,
        self_hwm,
    };
    Ok(report.render())
}

/// Issue the CA, the controller's, the operator's and one certificate per
/// agent into `dir`.
fn make_pki(dir: &Path, agents: usize) -> Result<()> {
    ca::init_ca(dir).context("creating the CA")?;
    ca::issue(dir, Role::Controller, "localhost", 30, dir).context("controller certificate")?;
    ca::issue(dir, Role::Operator, "bench-op", 30, dir).context("operator certificate")?;
    for i in 0..agents {
        let name = agent_name(i);
        ca::issue(dir, Role::Agent, &name, 30, dir)
            .with_context(|| format!("certificate of {name}"))?;
    }
    Ok(())
}

fn client_tls(tls_dir: &Path, name: &str) -> Result<ClientTls> {
    let mut files = TlsFiles::in_dir(tls_dir, name);
    files.crl = None;
    Ok(ClientTls {
        config: Arc::new(client_config(&files).with_context(|| format!("TLS files of {name}"))?),
        server_name: "localhost".into(),
        server_role: Some(Role::Controller),
    })
}

async fn operator_client(addr: &str, tls_dir: &Path) -> Result<OperatorServiceClient<Channel>> {
    let channel = connect(addr, client_tls(tls_dir, "bench-op")?)
        .await
        .context("operator connection")?;
    Ok(OperatorServiceClient::new(channel))
}

/// Poll `Status` every 100 ms until `done` says so.
async fn wait_status(
    op: &mut OperatorServiceClient<Channel>,
    what: &str,
    done: impl Fn(&StatusReply) -> bool,
) -> Result<StatusReply> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let s = op
            .status(StatusRequest {})
            .await
            .context("Status")?
            .into_inner();
        if done(&s) {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!(
                "timed out waiting for {what}: agents connected {}/{}, jobs queued {}, running {}",
                s.agents_connected,
                s.agents_total,
                s.jobs_queued,
                s.jobs_running
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn policies(n: usize, schedule: &str) -> String {
    let mut toml = String::new();
    for i in 0..n {
        let _ = write!(
            toml,
            "[[policy]]\nsource = \"{}/{SOURCE}\"\nschedule = \"{schedule}\"\nretention = \"daily-7\"\n\n",
            agent_name(i)
        );
    }
    toml
}

fn unix_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// Apply an every-minute policy to every source and measure the burst of
/// jobs the next minute boundary queues.
async fn cron_burst(
    op: &mut OperatorServiceClient<Channel>,
    tally: &mut Tally,
    n: usize,
) -> Result<CronBurst> {
    let into_minute = unix_secs(SystemTime::now()) % 60.0;
    if into_minute > (60 - SLOT_MARGIN_SECS) as f64 {
        let wait = 61.0 - into_minute;
        eprintln!("fleet: {wait:.0} s to the next minute + 1 s before applying policies");
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
    }
    let first_index = tally.assignments.len();
    let t = Instant::now();
    let applied_at = SystemTime::now();
    op.apply_policy(ApplyPolicyRequest {
        toml: policies(n, "* * * * *"),
    })
    .await
    .context("ApplyPolicy (every minute)")?;
    let apply_time = t.elapsed();
    let slot_unix = ((unix_secs(applied_at) / 60.0).floor() + 1.0) * 60.0;
    let slot = UNIX_EPOCH + Duration::from_secs_f64(slot_unix);
    let to_slot = slot.duration_since(SystemTime::now()).unwrap_or_default();
    if apply_time.as_secs() >= SLOT_MARGIN_SECS {
        eprintln!(
            "fleet: warning: ApplyPolicy took {apply_time:?}; the slot may not be the one assumed"
        );
    }
    eprintln!(
        "fleet: cron burst: {n} policies applied in {:.0} ms; the slot is in {:.1} s",
        ms(apply_time),
        to_slot.as_secs_f64()
    );
    let deadline = Instant::now() + to_slot + PHASE_TIMEOUT;
    // The first job each agent receives from now on is its slot's job.
    tally
        .wait(
            "the cron jobs to be assigned and acknowledged",
            deadline,
            |t| {
                let jobs = t.first_per_agent(first_index);
                jobs.len() >= n && jobs.iter().all(|d| t.acked.contains_key(&d.job))
            },
        )
        .await?;
    let jobs = tally.first_per_agent(first_index);
    let since_slot = |w: SystemTime| w.duration_since(slot).unwrap_or_default();
    let latencies: Vec<Duration> = jobs.iter().map(|d| since_slot(d.at.wall)).collect();
    let all_acked = jobs
        .iter()
        .map(|d| since_slot(tally.acked[&d.job].wall))
        .max()
        .unwrap_or_default();
    let early = jobs.iter().filter(|d| d.at.wall < slot).count();

    // Stop the minute schedule, then let any job of a later slot finish.
    op.apply_policy(ApplyPolicyRequest {
        toml: policies(n, "0 0 1 1 *"),
    })
    .await
    .context("ApplyPolicy (yearly)")?;
    wait_status(op, "the cron jobs to end", |s| {
        s.jobs_queued == 0 && s.jobs_running == 0
    })
    .await?;
    tally.drain();
    let extra = tally.assignments.len() - first_index - n;
    Ok(CronBurst {
        apply_time,
        latencies,
        all_acked,
        early,
        extra,
    })
}

/// One `RunBackup` per source, `--rpc-concurrency` in flight.
async fn manual_burst(
    op: &mut OperatorServiceClient<Channel>,
    tally: &mut Tally,
    args: &Args,
) -> Result<ManualBurst> {
    let (n, concurrency, full) = (args.agents, args.rpc_concurrency, args.full);
    eprintln!("fleet: manual burst: {n} RunBackup calls, {concurrency} in flight");
    let start = Instant::now();
    let calls: Vec<_> = futures::stream::iter(0..n)
        .map(|i| {
            let mut op = op.clone();
            async move {
                let t = Instant::now();
                let r = op
                    .run_backup(RunBackupRequest {
                        source: Some(SourceRef {
                            agent: agent_name(i),
                            source: SOURCE.into(),
                        }),
                        full,
                        tags: Vec::new(),
                    })
                    .await;
                (i, t, t.elapsed(), r)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let calls_done = start.elapsed();
    let mut started = HashMap::new();
    let mut rpc = Vec::new();
    let mut errors = Vec::new();
    for (i, t, took, r) in calls {
        match r {
            Ok(job) => {
                started.insert(job.into_inner().id, t);
                rpc.push(took);
            }
            Err(s) => errors.push(format!("{}: {}", agent_name(i), s.message())),
        }
    }
    if started.is_empty() {
        bail!(
            "every RunBackup failed; the first: {}",
            errors.first().map_or("", String::as_str)
        );
    }
    tally
        .wait(
            "the manual jobs to be assigned and acknowledged",
            Instant::now() + PHASE_TIMEOUT,
            |t| {
                started
                    .keys()
                    .all(|j| t.assigned.contains_key(j) && t.acked.contains_key(j))
            },
        )
        .await?;
    let latencies = started
        .iter()
        .map(|(j, t)| tally.assignments[tally.assigned[j]].at.mono - *t)
        .collect();
    let all_acked = started
        .keys()
        .map(|j| tally.acked[j].mono - start)
        .max()
        .unwrap_or_default();
    Ok(ManualBurst {
        rpc,
        calls_done,
        latencies,
        all_acked,
        errors,
    })
}

// ---------------------------------------------------------------- simulated agents

/// What every simulated agent needs.
struct Sim {
    addr: String,
    tls_dir: PathBuf,
}

/// A moment, on both clocks.
#[derive(Debug, Clone, Copy)]
struct Stamp {
    mono: Instant,
    wall: SystemTime,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }
}

/// How long each step of one agent's registration took.
#[derive(Debug, Clone, Copy, Default)]
struct ConnectTimes {
    /// TCP + TLS handshake.
    connect: Duration,
    /// The `Register` RPC.
    register: Duration,
    /// `Session` with `Hello` until the controller answers.
    session: Duration,
}

/// What the simulated agents tell the bench.
enum Event {
    Connected {
        times: ConnectTimes,
    },
    ConnectFailed {
        agent: usize,
        error: String,
    },
    Assigned {
        agent: usize,
        job: String,
        at: Stamp,
    },
    Acked {
        job: String,
        at: Stamp,
    },
    Cancelled,
    SessionEnded,
}

/// An agent's open session.
struct Session {
    _client: AgentServiceClient<Channel>,
    outbound: mpsc::Sender<AgentMessage>,
    inbound: Streaming<ControllerMessage>,
    heartbeat: Duration,
}

/// One simulated agent: register (at most `gate`'s permits at once), then
/// heartbeat and answer every assignment with a success until aborted.
async fn simulated_agent(
    sim: Arc<Sim>,
    agent: usize,
    gate: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
) {
    let Ok(permit) = gate.acquire_owned().await else {
        return;
    };
    let session = open_session(&sim, agent).await;
    drop(permit);
    match session {
        Ok((times, session)) => {
            let _ = events.send(Event::Connected { times });
            serve_session(agent, session, &events).await;
        }
        Err(e) => {
            let _ = events.send(Event::ConnectFailed {
                agent,
                error: format!("{e:#}"),
            });
        }
    }
}

fn sources() -> Vec<SourceInfo> {
    vec![SourceInfo {
        name: SOURCE.into(),
        kind: "volume".into(),
        details: [("path".to_string(), "/srv/data".to_string())].into(),
        ..Default::default()
    }]
}

async fn open_session(sim: &Sim, agent: usize) -> Result<(ConnectTimes, Session)> {
    let name = agent_name(agent);
    let tls = client_tls(&sim.tls_dir, &name)?;
    let t0 = Instant::now();
    let channel = connect(&sim.addr, tls).await.context("connecting")?;
    let t1 = Instant::now();
    let mut client = AgentServiceClient::new(channel);
    let reply = client
        .register(RegisterRequest {
            agent_name: name.clone(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            hostname: name.clone(),
            sources: sources(),
        })
        .await
        .context("Register")?
        .into_inner();
    let t2 = Instant::now();
    let (outbound, rx) = mpsc::channel(16);
    let hello = Hello {
        agent_name: name.clone(),
        agent_version: env!("CARGO_PKG_VERSION").into(),
        hostname: name,
        sources: sources(),
        max_concurrent_jobs: 1,
        ..Default::default()
    };
    outbound
        .send(AgentMessage {
            msg: Some(AgentMsg::Hello(hello)),
        })
        .await
        .context("queueing Hello")?;
    let inbound = client
        .session(ReceiverStream::new(rx))
        .await
        .context("Session")?
        .into_inner();
    let t3 = Instant::now();
    Ok((
        ConnectTimes {
            connect: t1 - t0,
            register: t2 - t1,
            session: t3 - t2,
        },
        Session {
            _client: client,
            outbound,
            inbound,
            heartbeat: Duration::from_secs(u64::from(reply.heartbeat_interval_secs.max(1))),
        },
    ))
}

fn success(job_id: String) -> AgentMessage {
    let snapshot_id = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    let now_ns = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos(),
    )
    .unwrap_or(0);
    AgentMessage {
        msg: Some(AgentMsg::Result(JobResult {
            job_id,
            ok: true,
            snapshot_id,
            summary: Some(JobSummary {
                files: 1,
                bytes: 4096,
                bytes_read: 4096,
                new_chunks: 1,
                new_bytes: 4096,
                packs: 1,
                uploaded_bytes: 4096,
                duration_secs: 0.001,
                ..Default::default()
            }),
            snapshot_time_ns: now_ns,
            location: "loc1".into(),
            ..Default::default()
        })),
    }
}

async fn serve_session(agent: usize, mut s: Session, events: &mpsc::UnboundedSender<Event>) {
    let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + s.heartbeat, s.heartbeat);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let out = tokio::select! {
            m = s.inbound.message() => match m {
                Ok(Some(ControllerMessage { msg: Some(CtlMsg::Assign(a)) })) => {
                    let _ = events.send(Event::Assigned {
                        agent,
                        job: a.job_id.clone(),
                        at: Stamp::now(),
                    });
                    success(a.job_id)
                }
                Ok(Some(ControllerMessage { msg: Some(CtlMsg::Ack(a)) })) => {
                    let _ = events.send(Event::Acked { job: a.job_id, at: Stamp::now() });
                    continue;
                }
                Ok(Some(ControllerMessage { msg: Some(CtlMsg::Cancel(_)) })) => {
                    let _ = events.send(Event::Cancelled);
                    continue;
                }
                Ok(Some(ControllerMessage { msg: None })) => continue,
                Ok(None) | Err(_) => break,
            },
            _ = beat.tick() => AgentMessage {
                msg: Some(AgentMsg::Heartbeat(Heartbeat {
                    unix_time: unix_secs(SystemTime::now()) as i64,
                    running_job_ids: Vec::new(),
                    volumes: Vec::new(),
                })),
            },
        };
        if s.outbound.send(out).await.is_err() {
            break;
        }
    }
    let _ = events.send(Event::SessionEnded);
}

/// One job delivered to an agent.
struct Delivery {
    agent: usize,
    job: String,
    at: Stamp,
}

/// Everything the agents reported, folded as it arrives.
struct Tally {
    rx: mpsc::UnboundedReceiver<Event>,
    connected: usize,
    connect_times: Vec<ConnectTimes>,
    connect_errors: Vec<(usize, String)>,
    /// Every assignment, in arrival order.
    assignments: Vec<Delivery>,
    /// Job id → index in `assignments`.
    assigned: HashMap<String, usize>,
    acked: HashMap<String, Stamp>,
    cancels: usize,
    /// Sessions that ended.
    ended: usize,
}

impl Tally {
    fn new(agents: usize, rx: mpsc::UnboundedReceiver<Event>) -> Tally {
        Tally {
            rx,
            connected: 0,
            connect_times: Vec::with_capacity(agents),
            connect_errors: Vec::new(),
            assignments: Vec::new(),
            assigned: HashMap::new(),
            acked: HashMap::new(),
            cancels: 0,
            ended: 0,
        }
    }

    fn fold(&mut self, e: Event) {
        match e {
            Event::Connected { times, .. } => {
                self.connected += 1;
                self.connect_times.push(times);
            }
            Event::ConnectFailed { agent, error } => self.connect_errors.push((agent, error)),
            Event::Assigned { agent, job, at } => {
                self.assigned.insert(job.clone(), self.assignments.len());
                self.assignments.push(Delivery { agent, job, at });
            }
            Event::Acked { job, at } => {
                self.acked.insert(job, at);
            }
            Event::Cancelled => self.cancels += 1,
            Event::SessionEnded => self.ended += 1,
        }
    }

    /// Fold whatever has arrived.
    fn drain(&mut self) {
        while let Ok(e) = self.rx.try_recv() {
            self.fold(e);
        }
    }

    /// Fold events until `done` holds, or fail at `deadline`.
    async fn wait(
        &mut self,
        what: &str,
        deadline: Instant,
        done: impl Fn(&Tally) -> bool,
    ) -> Result<()> {
        loop {
            self.drain();
            if done(self) {
                return Ok(());
            }
            if self.ended > 0 {
                bail!(
                    "{} agent session(s) ended while waiting for {what}: see the controller's log (run with --keep)",
                    self.ended
                );
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.rx.recv()).await {
                Ok(Some(e)) => self.fold(e),
                Ok(None) => bail!("every simulated agent stopped while waiting for {what}"),
                Err(_) => bail!(
                    "timed out waiting for {what}: {} agents connected, {} jobs assigned, {} acknowledged",
                    self.connected,
                    self.assignments.len(),
                    self.acked.len()
                ),
            }
        }
    }

    /// Each agent's first assignment at or after index `from`.
    fn first_per_agent(&self, from: usize) -> Vec<&Delivery> {
        let mut seen = BTreeMap::new();
        for d in &self.assignments[from..] {
            seen.entry(d.agent).or_insert(d);
        }
        seen.into_values().collect()
    }
}

// ---------------------------------------------------------------- the controller process

struct Controller {
    child: tokio::process::Child,
    pid: u32,
    addr: String,
    log: PathBuf,
    version: String,
}

impl Controller {
    /// Write a key and a config into `dir` and start the controller; return
    /// once it answers `Status`.
    async fn start(bin: &Path, dir: &Path) -> Result<Controller> {
        let version = std::process::Command::new(bin)
            .arg("--version")
            .output()
            .with_context(|| format!("running {}", bin.display()))?;
        let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
        let key = dir.join("master.key");
        let out = std::process::Command::new(bin)
            .args(["keygen", "--key-file"])
            .arg(&key)
            .output()
            .context("trireme-controller keygen")?;
        if !out.status.success() {
            bail!(
                "trireme-controller keygen failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let location = dir.join("loc1");
        let config = dir.join("controller.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = \"data\"\nkey_file = \"master.key\"\n\
                 heartbeat_interval = \"{HEARTBEAT}\"\n\n[tls]\ndir = \"tls\"\nname = \"localhost\"\n\n\
                 [[location]]\nname = \"loc1\"\nurl = \"file://{}\"\n",
                location.display()
            ),
        )
        .context("writing controller.toml")?;
        let log = dir.join("controller.log");
        let log_file = std::fs::File::create(&log).context("creating controller.log")?;
        let child = tokio::process::Command::new(bin)
            .args(["--log", "info", "run", "--config"])
            .arg(&config)
            .env_remove("RUST_LOG")
            .stdout(log_file.try_clone().context("controller.log")?)
            .stderr(log_file)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id().context("the controller exited at once")?;
        let mut c = Controller {
            child,
            pid,
            addr: format!("127.0.0.1:{port}"),
            log,
            version,
        };
        c.wait_ready(&dir.join("tls")).await?;
        Ok(c)
    }

    async fn wait_ready(&mut self, tls_dir: &Path) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().context("controller status")? {
                bail!(
                    "the controller exited ({status}) at start:\n{}",
                    LogSummary::tail(&self.log, 20)
                );
            }
            if let Ok(mut op) = operator_client(&self.addr, tls_dir).await {
                if op.status(StatusRequest {}).await.is_ok() {
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the controller did not answer within 60 s:\n{}",
                    LogSummary::tail(&self.log, 20)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn sample(&self) -> Result<ProcSample> {
        ProcSample::read(self.pid)
    }

    /// SIGTERM with the agents still connected, as in a real restart. If
    /// the controller is still running after [`STOP_GRACE`], disconnect the
    /// agents and give it [`STOP_GRACE`] more; then SIGKILL.
    async fn stop(&mut self, agents: &[tokio::task::JoinHandle<()>]) -> Result<Stopped> {
        let pid = rustix::process::Pid::from_raw(self.pid as i32).context("controller pid")?;
        let t = Instant::now();
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("sending SIGTERM to the controller")?;
        let exited = |s: std::io::Result<std::process::ExitStatus>| {
            s.map_or_else(|e| format!("wait failed: {e}"), |s| s.to_string())
        };
        if let Ok(s) = tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            return Ok(Stopped {
                with_agents: Some(t.elapsed()),
                after_disconnect: None,
                status: exited(s),
            });
        }
        for a in agents {
            a.abort();
        }
        let t2 = Instant::now();
        match tokio::time::timeout(STOP_GRACE, self.child.wait()).await {
            Ok(s) => Ok(Stopped {
                with_agents: None,
                after_disconnect: Some(t2.elapsed()),
                status: exited(s),
            }),
            Err(_) => {
                let _ = self.child.kill().await;
                Ok(Stopped {
                    with_agents: None,
                    after_disconnect: None,
                    status: "killed (SIGKILL)".into(),
                })
            }
        }
    }
}

/// How long the controller gets to exit after SIGTERM, with the agents
/// connected, then again after they disconnect.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// How the controller stopped.
struct Stopped {
    /// Exited this long after SIGTERM while the agents were connected.
    with_agents: Option<Duration>,
    /// Exited this long after the agents disconnected.
    after_disconnect: Option<Duration>,
    /// Its exit status.
    status: String,
}

impl Stopped {
    fn describe(&self) -> String {
        let grace = STOP_GRACE.as_secs();
        match (self.with_agents, self.after_disconnect) {
            (Some(t), _) => format!("exited ({}) {:.2} s after SIGTERM", self.status, t.as_secs_f64()),
            (None, Some(t)) => format!(
                "still running {grace} s after SIGTERM; exited ({}) {:.2} s after the agents disconnected",
                self.status,
                t.as_secs_f64()
            ),
            (None, None) => format!(
                "still running {grace} s after SIGTERM and {grace} s after the agents disconnected: {}",
                self.status
            ),
        }
    }
}

// ---------------------------------------------------------------- measurements

/// What `/proc/PID/{status,stat,io}` say about a process.
#[derive(Debug, Clone, Copy, Default)]
struct ProcSample {
    rss_kib: u64,
    hwm_kib: u64,
    threads: u64,
    /// User + system CPU time.
    cpu: Duration,
    /// Bytes the process caused to be written to storage (`/proc/PID/io`).
    write_bytes: Option<u64>,
}

impl ProcSample {
    fn read(pid: u32) -> Result<ProcSample> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        let mut s = proc_status(&dir.join("status"))?;
        s.cpu = proc_cpu(&dir.join("stat"))?;
        s.write_bytes = std::fs::read_to_string(dir.join("io")).ok().and_then(|io| {
            io.lines()
                .find_map(|l| l.strip_prefix("write_bytes:"))
                .and_then(|v| v.trim().parse().ok())
        });
        Ok(s)
    }
}

fn proc_status(path: &Path) -> Result<ProcSample> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok(ProcSample {
        rss_kib: field("VmRSS:"),
        hwm_kib: field("VmHWM:"),
        threads: field("Threads:"),
        ..Default::default()
    })
}

/// utime + stime from `/proc/PID/stat` (in USER_HZ = 100 ticks per second).
fn proc_cpu(path: &Path) -> Result<Duration> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let after_name = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of stat(5); `after_name` starts at field 3.
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Ok(Duration::from_millis((tick(11) + tick(12)) * 10))
}

fn self_cpu() -> Duration {
    proc_cpu(Path::new("/proc/self/stat")).unwrap_or_default()
}

/// Apparent and allocated bytes of the files under `dir`.
fn dir_size(dir: &Path) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let mut total = (0, 0);
    let Ok(entries) = std::fs::read_dir(dir) else {
        return total;
    };
    for e in entries.flatten() {
        let Ok(m) = e.metadata() else { continue };
        if m.is_dir() {
            let (a, b) = dir_size(&e.path());
            total.0 += a;
            total.1 += b;
        } else {
            total.0 += m.len();
            total.1 += m.blocks() * 512;
        }
    }
    total
}

/// 1,000 TLS connections need about as many descriptors on each side.
fn raise_open_files_limit(agents: usize) -> Result<()> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = agents as u64 * 2 + 256;
    let cur = getrlimit(Resource::Nofile);
    if cur.current.is_none_or(|c| c >= want) {
        return Ok(());
    }
    if cur.maximum.is_some_and(|m| m < want) {
        bail!(
            "{agents} agents need about {want} open files but the hard limit is {}: raise it (ulimit -Hn) or use fewer --agents",
            cur.maximum.unwrap_or(0)
        );
    }
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: cur.maximum,
        },
    )
    .context("raising the open-files limit")
}

/// Nearest-rank percentile; `q` in 0..=1.
fn pct(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `p50 / p99 / max` in milliseconds.
fn spread(values: &[Duration]) -> String {
    let mut v = values.to_vec();
    v.sort();
    format!(
        "{:.1} / {:.1} / {:.1}",
        ms(pct(&v, 0.50)),
        ms(pct(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default())
    )
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------- machine facts

struct Machine {
    nproc: usize,
    kernel: String,
    cpu: String,
    ram_gib: f64,
    load_start: String,
}

impl Machine {
    fn read() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        Machine {
            nproc: std::thread::available_parallelism().map_or(0, |n| n.get()),
            kernel: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            cpu: cpuinfo
                .lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|l| l.split_once(':'))
                .map_or("unknown".into(), |(_, v)| v.trim().to_string()),
            ram_gib: meminfo
                .lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<f64>().ok())
                .map_or(0.0, |kib| kib / 1024.0 / 1024.0),
            load_start: load_average(),
        }
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The filesystem type of the mount that holds `path`.
fn filesystem_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at).then(|| (at.len(), fs.to_string()))
        })
        .max_by_key(|(len, _)| *len)
        .map_or("unknown".into(), |(_, fs)| fs)
}

// ---------------------------------------------------------------- the report

struct Registration {
    all_sessions: Duration,
    all_status: Duration,
    agents_total: u32,
    steps: Vec<ConnectTimes>,
}

struct CronBurst {
    apply_time: Duration,
    latencies: Vec<Duration>,
    all_acked: Duration,
    /// Assignments received before the slot (should be 0).
    early: usize,
    /// Jobs of later slots that came before the schedule was switched off.
    extra: usize,
}

struct ManualBurst {
    rpc: Vec<Duration>,
    calls_done: Duration,
    latencies: Vec<Duration>,
    all_acked: Duration,
    errors: Vec<String>,
}

struct LogSummary {
    bytes: u64,
    lines: usize,
    warnings: BTreeMap<String, usize>,
}

impl LogSummary {
    fn read(path: &Path) -> LogSummary {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let mut warnings = BTreeMap::new();
        for l in text.lines() {
            if let Some(i) = l.find(" WARN ").or_else(|| l.find(" ERROR ")) {
                // Level, target and message, without the fields (`key=value`).
                let msg: Vec<&str> = l[i..]
                    .split_whitespace()
                    .take_while(|w| !w.contains('='))
                    .collect();
                *warnings.entry(msg.join(" ")).or_insert(0) += 1;
            }
        }
        LogSummary {
            bytes: text.len() as u64,
            lines: text.lines().count(),
            warnings,
        }
    }

    fn tail(path: &Path, n: usize) -> String {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

struct Report<'a> {
    args: &'a Args,
    machine: &'a Machine,
    fs_type: &'a str,
    version: &'a str,
    pki_time: Duration,
    registration: Registration,
    cron: CronBurst,
    manual: ManualBurst,
    samples: Vec<(&'static str, ProcSample, Duration)>,
    catalog: (u64, u64),
    status_time: Duration,
    jobs_failed: u32,
    session_ends: usize,
    cancels: usize,
    stopped: Stopped,
    log: LogSummary,
    self_hwm: u64,
}

impl Report<'_> {
    fn render(&self) -> String {
        let mut o = String::new();
        let n = self.args.agents;
        let m = self.machine;
        let _ = writeln!(o, "## Fleet: {n} simulated agents against one controller\n");
        let _ = writeln!(
            o,
            "Generated by `controller/benches/fleet.rs` on {} UTC.\n",
            chrono::Utc::now().format("%Y-%m-%d %H:%M:%S")
        );
        let _ = writeln!(o, "```\n{}\n```\n", self.args.command());
        let _ = writeln!(
            o,
            "- Machine: {} CPUs (`nproc`), {}, {:.1} GiB RAM, kernel `{}` (`uname -r`)",
            m.nproc, m.cpu, m.ram_gib, m.kernel
        );
        let _ = writeln!(
            o,
            "- Load average (1/5/15 min) at start: {}; at end: {}",
            m.load_start,
            load_average()
        );
        let _ = writeln!(
            o,
            "- Controller: `{}` ({}), its own process; catalog (sled) and log in a temporary directory on {}; heartbeat_interval {HEARTBEAT}; one `file://` location; log level info",
            self.args.controller_bin.display(),
            self.version,
            self.fs_type
        );
        let _ = writeln!(
            o,
            "- Agents: {n} tokio tasks in the bench process (same {} CPUs), one TLS connection and one certificate each, one source each; setup (CA + {} certificates) took {:.1} s, untimed",
            m.nproc,
            n + 2,
            self.pki_time.as_secs_f64()
        );

        let r = &self.registration;
        let _ = writeln!(
            o,
            "\n### Registration ({} agents at a time)\n",
            self.args.connect_concurrency
        );
        let _ = writeln!(o, "| what | value |\n|---|---:|");
        let _ = writeln!(
            o,
            "| every agent connected (last `Session` call returned) | {:.2} s |",
            r.all_sessions.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "| `Status` reports agents_connected = {n} (agents_total {}) | {:.2} s |",
            r.agents_total,
            r.all_status.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "| rate | {:.0} agents/s |",
            n as f64 / r.all_sessions.as_secs_f64().max(1e-9)
        );
        let _ = writeln!(o, "\n| per agent, ms | p50 / p99 / max |\n|---|---:|");
        let col =
            |f: fn(&ConnectTimes) -> Duration| -> Vec<Duration> { r.steps.iter().map(f).collect() };
        let _ = writeln!(o, "| TCP + TLS connect | {} |", spread(&col(|t| t.connect)));
        let _ = writeln!(o, "| `Register` | {} |", spread(&col(|t| t.register)));
        let _ = writeln!(
            o,
            "| `Session` + `Hello` until the controller answers | {} |",
            spread(&col(|t| t.session))
        );
        let _ = writeln!(
            o,
            "| total | {} |",
            spread(&col(|t| t.connect + t.register + t.session))
        );

        let c = &self.cron;
        let _ = writeln!(o, "\n### Cron burst ({n} sources, `* * * * *`)\n");
        let _ = writeln!(o, "| what | value |\n|---|---:|");
        let _ = writeln!(
            o,
            "| `ApplyPolicy` with {n} policies | {:.0} ms |",
            ms(c.apply_time)
        );
        let _ = writeln!(
            o,
            "| assignment received − slot, p50 / p99 / max | {} ms |",
            spread(&c.latencies)
        );
        let mut sorted = c.latencies.clone();
        sorted.sort();
        let _ = writeln!(
            o,
            "| first assignment after the slot | {:.1} ms |",
            ms(sorted.first().copied().unwrap_or_default())
        );
        let _ = writeln!(
            o,
            "| every result acknowledged, after the slot | {:.2} s |",
            c.all_acked.as_secs_f64()
        );
        let _ = writeln!(
            o,
            "| assignments before the slot / jobs of a later slot | {} / {} |",
            c.early, c.extra
        );

        let b = &self.manual;
        let _ = writeln!(
            o,
            "\n### Manual burst ({} `RunBackup` calls, {}, {} in flight)\n",
            b.rpc.len() + b.errors.len(),
            if self.args.full {
                "full"
            } else {
                "incremental"
            },
            self.args.rpc_concurrency
        );
        let _ = writeln!(o, "| what | value |\n|---|---:|");
        let _ = writeln!(
            o,
            "| `RunBackup` RPC, p50 / p99 / max | {} ms |",
            spread(&b.rpc)
        );
        let _ = writeln!(
            o,
            "| all calls returned | {:.2} s ({:.0} calls/s) |",
            b.calls_done.as_secs_f64(),
            b.rpc.len() as f64 / b.calls_done.as_secs_f64().max(1e-9)
        );
        let _ = writeln!(
            o,
            "| assignment received − call start, p50 / p99 / max | {} ms |",
            spread(&b.latencies)
        );
        let _ = writeln!(
            o,
            "| every result acknowledged, after the first call | {:.2} s |",
            b.all_acked.as_secs_f64()
        );
        let _ = writeln!(o, "| failed calls | {} |", b.errors.len());
        for e in b.errors.iter().take(3) {
            let _ = writeln!(o, "\n  - {e}");
        }

        let _ = writeln!(o, "\n### Controller resources\n");
        let _ = writeln!(
            o,
            "| point | VmRSS (MiB) | VmHWM (MiB) | threads | controller CPU (s, cumulative) | written to storage (MiB, cumulative) | bench process CPU (s, cumulative) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
        for (what, s, own) in &self.samples {
            let _ = writeln!(
                o,
                "| {what} | {:.1} | {:.1} | {} | {:.2} | {} | {:.2} |",
                mib(s.rss_kib),
                mib(s.hwm_kib),
                s.threads,
                s.cpu.as_secs_f64(),
                s.write_bytes
                    .map_or("n/a".into(), |b| format!("{:.1}", b as f64 / 1048576.0)),
                own.as_secs_f64()
            );
        }
        let _ = writeln!(
            o,
            "\n- Catalog on disk after {} jobs: {:.1} MiB apparent, {:.1} MiB allocated",
            self.manual.latencies.len() + self.cron.latencies.len() + self.cron.extra,
            self.catalog.0 as f64 / 1048576.0,
            self.catalog.1 as f64 / 1048576.0
        );
        let _ = writeln!(
            o,
            "- `Status` RPC at the end: {:.1} ms; jobs failed (24 h): {}; cancels received: {}; agent sessions that ended before the stop: {}",
            ms(self.status_time),
            self.jobs_failed,
            self.cancels,
            self.session_ends
        );
        let _ = writeln!(
            o,
            "- Controller log: {} lines, {:.1} MiB; warnings and errors: {}",
            self.log.lines,
            self.log.bytes as f64 / 1048576.0,
            if self.log.warnings.is_empty() {
                "none".to_string()
            } else {
                self.log
                    .warnings
                    .iter()
                    .map(|(w, k)| format!("{k}× `{w}`"))
                    .collect::<Vec<_>>()
                    .join("; ")
            }
        );
        let _ = writeln!(
            o,
            "- SIGTERM with {n} agents connected: {}",
            self.stopped.describe()
        );
        let _ = writeln!(
            o,
            "- Bench process (the {n} agents) peak RSS: {:.1} MiB",
            mib(self.self_hwm)
        );
        o
    }
}
