//! Refusals are logged with who, which RPC and why. In its own test binary:
//! `tracing` caches per-callsite interest process-wide, and other tests
//! hitting the same callsites without a subscriber on a parallel thread could
//! make this test's scoped subscriber miss events.

use std::sync::Arc;
use std::time::Duration;

use trireme_net::tls::Role;
use trireme_testkit::pki::*;

/// Log lines captured for one test (`tracing` output as text).
#[derive(Clone, Default)]
struct LogBuf(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Wait (bounded) for a line containing every one of `needles`.
    async fn wait_for(&self, needles: &[&str]) -> String {
        for _ in 0..100 {
            if let Some(l) = self
                .text()
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
            {
                return l.to_string();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no log line with {needles:?} in:\n{}", self.text());
    }
}

#[tokio::test]
async fn every_refusal_is_logged_with_who_which_rpc_and_why() {
    let logs = LogBuf::default();
    let w = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || w.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let pki = Pki::new();
    pki.issue(Role::Viewer, "vera");
    let server = TestServer::start(&pki, Some(&[Role::Operator])).await;

    ping(server.addr, &pki.files("vera")).await.unwrap_err();
    let line = logs
        .wait_for(&["WARN", "refused an RPC", "who=vera", "role=viewer"])
        .await;
    assert!(line.contains("rpc=/trireme.v1.Health/Ping"), "{line}");
    assert!(line.contains("needs operator"), "{line}");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");

    ping_with(server.addr, no_client_cert_config(&pki.dir.join("ca.pem")))
        .await
        .unwrap_err();
    let line = logs
        .wait_for(&["WARN", "refused a TLS connection", "no certificate"])
        .await;
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
    server.shutdown().await;
}
