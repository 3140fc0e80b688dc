//! An agent session spoken by the test itself over mTLS with a real agent
//! certificate: the Hello (with one `volume` source and any pending
//! results), heartbeats until told to go silent, and whatever messages a
//! test wants to send, honest or not. Used where a real `trireme-agent`
//! would never say what the test needs said.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use trireme_net::tls::{client_config, connect, ClientTls, Role, TlsFiles};
use trireme_proto::v1::agent_message::Msg as AgentMsg;
use trireme_proto::v1::agent_service_client::AgentServiceClient;
use trireme_proto::v1::controller_message::Msg as CtlMsg;
use trireme_proto::v1::{
    AgentMessage, ControllerMessage, Heartbeat, Hello, JobAssignment, JobResult, SourceInfo,
};

use super::fleet::Fleet;

/// How long any wait below may take before the test fails.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// A session spoken by the test itself, with a real agent certificate.
pub struct Session {
    tx: mpsc::Sender<AgentMessage>,
    rx: tonic::Streaming<ControllerMessage>,
    /// The mTLS channel, for the agent's other services (KeyService).
    pub channel: Channel,
    /// Sends a heartbeat every 500 ms while set (the controller closes a
    /// session silent for three heartbeat intervals).
    beating: Option<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Open a session as `name` (certificate issued when missing), with
    /// one `volume` source `source` and `pending` results handed over in
    /// the Hello.
    pub async fn open(f: &Fleet, name: &str, source: &str, pending: Vec<JobResult>) -> Session {
        if !f.ca.join(format!("{name}.pem")).exists() {
            trireme_net::tls::ca::issue(&f.ca, Role::Agent, name, 365, &f.ca).unwrap();
        }
        let tls = ClientTls {
            config: Arc::new(client_config(&TlsFiles::in_dir(&f.ca, name)).unwrap()),
            server_name: "localhost".into(),
            server_role: Some(Role::Controller),
        };
        let channel = connect(&f.addr().to_string(), tls).await.unwrap();
        let (tx, rx) = mpsc::channel(16);
        tx.send(AgentMessage {
            msg: Some(AgentMsg::Hello(Hello {
                agent_name: name.into(),
                agent_version: env!("CARGO_PKG_VERSION").into(),
                hostname: name.into(),
                sources: vec![SourceInfo {
                    name: source.into(),
                    kind: "volume".into(),
                    details: HashMap::new(),
                    ..Default::default()
                }],
                max_concurrent_jobs: 1,
                pending_results: pending,
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let rx = AgentServiceClient::new(channel.clone())
            .session(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        let beat = tx.clone();
        let beating = tokio::spawn(async move {
            loop {
                let h = AgentMessage {
                    msg: Some(AgentMsg::Heartbeat(Heartbeat {
                        unix_time: chrono::Utc::now().timestamp(),
                        ..Default::default()
                    })),
                };
                if beat.send(h).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        Session {
            tx,
            rx,
            channel,
            beating: Some(beating),
        }
    }

    /// Stop the heartbeats: from now on the session sends nothing (its
    /// stream stays open).
    pub fn go_silent(&mut self) {
        if let Some(h) = self.beating.take() {
            h.abort();
        }
    }

    pub async fn send(&self, msg: AgentMsg) {
        self.tx.send(AgentMessage { msg: Some(msg) }).await.unwrap();
    }

    /// Report a job's result, as the agent does when the job ends.
    pub async fn report(&self, r: JobResult) {
        self.send(AgentMsg::Result(r)).await;
    }

    /// The next controller message matching `want`, others skipped; panics
    /// naming `what` after [`DEADLINE`] or when the session ends first.
    pub async fn next_where<T>(&mut self, what: &str, want: impl Fn(CtlMsg) -> Option<T>) -> T {
        let wait = tokio::time::timeout(DEADLINE, async {
            loop {
                match self.rx.message().await {
                    Ok(Some(ControllerMessage { msg: Some(m) })) => {
                        if let Some(v) = want(m) {
                            return v;
                        }
                    }
                    Ok(Some(_)) => {}
                    Ok(None) => panic!("the session ended while waiting for {what}"),
                    Err(s) => panic!("the session broke while waiting for {what}: {s}"),
                }
            }
        });
        wait.await
            .unwrap_or_else(|_| panic!("timed out after {DEADLINE:?} waiting for {what}"))
    }

    pub async fn next_job(&mut self) -> JobAssignment {
        self.next_where("a job assignment", |m| match m {
            CtlMsg::Assign(a) => Some(a),
            _ => None,
        })
        .await
    }

    /// Wait for the controller to acknowledge the result of `job` (the
    /// agent may forget it).
    pub async fn acked(&mut self, job: &str) {
        let what = format!("the ack of the result of job {job}");
        self.next_where(&what, |m| match m {
            CtlMsg::Ack(a) if a.job_id == job => Some(()),
            _ => None,
        })
        .await;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.go_silent();
    }
}
