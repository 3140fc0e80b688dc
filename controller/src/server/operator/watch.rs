//! `WatchJob`: a job's state each time it changes (and every 2 s while it
//! runs: the rate shown moves), until it ends, the watcher goes away, or
//! the watcher's certificate is revoked (audited).

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::broadcast::error::RecvError;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;
use trireme_net::Identity;
use trireme_proto::v1::JobInfo;

use crate::jobs::Job;
use crate::server::{convert, Shared};
use crate::views;

/// The stream of `job`'s states for `who`.
pub(super) fn watch(
    shared: Arc<Shared>,
    who: Identity,
    peer: Option<SocketAddr>,
    job: Job,
) -> ReceiverStream<Result<JobInfo, Status>> {
    let mut events = shared.job_events.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        let id = job.id;
        let mut last = None;
        loop {
            // A certificate revoked while it watches: the stream ends.
            if shared.authz.is_revoked(&who.serial) {
                let why =
                    format!("the certificate of {who} has been revoked; the watch was closed");
                shared.audit(
                    crate::audit::Event::by(&who, "jobs watch", id.to_string())
                        .refused(why.clone())
                        .from_peer(peer),
                );
                let _ = tx.send(Err(Status::unauthenticated(why))).await;
                return;
            }
            let current = match shared.catalog.jobs().get(&id) {
                Ok(Some(j)) => j,
                Ok(None) => return,
                Err(e) => {
                    let _ = tx.send(Err(Status::from(e))).await;
                    return;
                }
            };
            let ended = current.state.is_terminal();
            let info = convert::job_info(&views::job_view(&shared.catalog, current));
            if last.as_ref() != Some(&info) {
                if tx.send(Ok(info.clone())).await.is_err() {
                    return;
                }
                last = Some(info);
            }
            if ended {
                return;
            }
            // Wake on this job's events; at least every 2 s (the rate shown moves).
            let deadline = tokio::time::sleep(std::time::Duration::from_secs(2));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    e = events.recv() => match e {
                        Ok(j) if j == id => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
