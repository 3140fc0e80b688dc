//! Is the master key's service (the key file, Vault transit, AWS KMS)
//! usable right now? Every `key_check_interval` a data key is generated and
//! unwrapped again; the outcome is `trireme_key_service_up` and the time of
//! the last success `trireme_key_service_last_success_timestamp_seconds`.
//! Jobs need the service for every data key, and a restarting controller
//! to open its master key, so an unreachable KMS is an alert, not a log line.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use chrono::Utc;
use trireme_common::KeyProvider;

/// The last probe's outcome.
#[derive(Debug)]
pub struct KeyHealth {
    /// `local`, `vault-transit` or `aws-kms`.
    pub provider: &'static str,
    /// 1 up, 0 down, -1 not probed yet.
    up: AtomicI64,
    /// Unix seconds of the last success (0: none yet).
    last_ok: AtomicI64,
    /// What the last failure said.
    last_error: Mutex<Option<String>>,
}

impl KeyHealth {
    /// Not probed yet.
    pub fn new(provider: &'static str) -> Self {
        KeyHealth {
            provider,
            up: AtomicI64::new(-1),
            last_ok: AtomicI64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// 1, 0, or `None` before the first probe.
    pub fn up(&self) -> Option<i64> {
        Some(self.up.load(Ordering::Relaxed)).filter(|v| *v >= 0)
    }

    /// Unix seconds of the last success, if any.
    pub fn last_success(&self) -> Option<i64> {
        Some(self.last_ok.load(Ordering::Relaxed)).filter(|v| *v > 0)
    }

    /// Probe once: generate a data key and unwrap it again.
    pub async fn probe(&self, keys: &dyn KeyProvider) {
        let outcome = async {
            let (key, wrapped) = keys.generate().await?;
            let back = keys.unwrap(&wrapped).await?;
            if back.as_bytes() != key.as_bytes() {
                return Err(trireme_common::Error::Key(
                    "the key service unwrapped a data key to other bytes".into(),
                ));
            }
            Ok(())
        };
        let outcome = tokio::time::timeout(Duration::from_secs(60), outcome)
            .await
            .unwrap_or_else(|_| Err(trireme_common::Error::Key("no answer within 60 s".into())));
        let mut last_error = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Ok(()) => {
                if self.up.swap(1, Ordering::Relaxed) == 0 {
                    tracing::info!(
                        provider = self.provider,
                        "the master key's service answers again"
                    );
                }
                self.last_ok
                    .store(Utc::now().timestamp(), Ordering::Relaxed);
                *last_error = None;
            }
            Err(e) => {
                if self.up.swap(0, Ordering::Relaxed) != 0 {
                    tracing::error!(provider = self.provider, error = %e,
                        "the master key's service does not answer: jobs cannot get data keys, and a restarted controller cannot open its master key");
                }
                *last_error = Some(e.to_string());
            }
        }
    }
}

/// Probe every `every` until `stop` turns true.
pub async fn run(
    health: std::sync::Arc<KeyHealth>,
    keys: std::sync::Arc<trireme_common::Rewrapped>,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.wait_for(|v| *v) => return,
            _ = tick.tick() => {}
        }
        health.probe(keys.current().as_ref()).await;
    }
}
