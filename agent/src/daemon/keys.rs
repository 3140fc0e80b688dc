//! Data keys from the controller's key service, for one job. Implements the
//! engine's [`KeyProvider`] seam: the repository code neither knows nor cares
//! that its keys come over the network.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::Mutex;
use tonic::transport::Channel;
use trireme_common::crypto::DataKey;
use trireme_common::{Error, Id, IndexLimits, KeyProvider, Result, WrappedKey};
use trireme_net::tls::{connect, ClientTls};
use trireme_proto::v1::key_service_client::KeyServiceClient;
use trireme_proto::v1::{GenerateDataKeyRequest, JobKeysRequest, UnwrapDataKeysRequest};

/// How long a key call keeps retrying while the controller is unreachable
/// (e.g. restarting) before the job fails.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Keys for job `job_id`, asked of the controller at `addr`.
///
/// The first unwrap fetches the job's whole key scope (`JobKeys`): a restore
/// gets exactly the keys of its snapshot, a backup the index keys and its
/// parent's. Anything else is asked for one by one, and the controller
/// refuses it.
pub struct ControllerKeys {
    addr: String,
    tls: ClientTls,
    job_id: String,
    channel: Mutex<Option<Channel>>,
    granted: tokio::sync::OnceCell<Granted>,
}

/// A job's scope as the key service handed it out.
struct Granted {
    keys: HashMap<WrappedKey, [u8; 32]>,
    /// Which index objects and packs the job may load.
    limits: IndexLimits,
    /// Backups: the job's attribution key, and the agent name it is for.
    attribution_key: Option<([u8; 32], String)>,
}

impl fmt::Debug for ControllerKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ControllerKeys(job {} at {})", self.job_id, self.addr)
    }
}

impl ControllerKeys {
    /// A provider for one job.
    pub fn new(addr: String, tls: ClientTls, job_id: String) -> Self {
        ControllerKeys {
            addr,
            tls,
            job_id,
            channel: Mutex::new(None),
            granted: tokio::sync::OnceCell::new(),
        }
    }

    /// The job's key scope, unwrapped (fetched once).
    ///
    /// # Errors
    /// When the key service refuses or stays unreachable.
    pub async fn granted(&self) -> Result<&HashMap<WrappedKey, [u8; 32]>> {
        Ok(&self.scope().await?.keys)
    }

    /// What the job may load of the index: the index objects the
    /// controller believes and, for a backup, the packs of this agent's own
    /// jobs (the only ones it may reference).
    ///
    /// # Errors
    /// As [`ControllerKeys::granted`].
    pub async fn index_limits(&self) -> Result<IndexLimits> {
        Ok(self.scope().await?.limits.clone())
    }

    /// A backup's attribution key and the agent name it attributes to, when
    /// the controller sent one.
    ///
    /// # Errors
    /// As [`ControllerKeys::granted`].
    pub async fn attribution_key(&self) -> Result<Option<([u8; 32], String)>> {
        Ok(self.scope().await?.attribution_key.clone())
    }

    async fn scope(&self) -> Result<&Granted> {
        self.granted
            .get_or_try_init(|| async {
                let job_id = self.job_id.clone();
                let reply = self
                    .with_retry("hand out the job's keys", |mut c| {
                        let job_id = job_id.clone();
                        async move {
                            c.job_keys(JobKeysRequest { job_id })
                                .await
                                .map(tonic::Response::into_inner)
                        }
                    })
                    .await?;
                let mut map = HashMap::with_capacity(reply.keys.len());
                for p in reply.keys {
                    let raw: [u8; 32] = p.data_key.as_slice().try_into().map_err(|_| {
                        Error::Key(format!(
                            "the key service sent a {}-byte key",
                            p.data_key.len()
                        ))
                    })?;
                    map.insert(WrappedKey(p.wrapped_key), raw);
                }
                tracing::debug!(job = %self.job_id, keys = map.len(), snapshots = ?reply.snapshots, "job keys received");
                let packs = if reply.packs_limited {
                    let mut set = HashSet::with_capacity(reply.packs.len());
                    for p in &reply.packs {
                        set.insert(<[u8; 32]>::try_from(p.as_slice()).map(Id).map_err(|_| {
                            Error::Key(format!(
                                "the key service sent a {}-byte pack id",
                                p.len()
                            ))
                        })?);
                    }
                    Some(set)
                } else {
                    None
                };
                let objects = reply
                    .index_limited
                    .then(|| reply.index_objects.iter().cloned().collect());
                let attribution_key = match reply.attribution_key.len() {
                    0 => None,
                    _ => Some((
                        <[u8; 32]>::try_from(reply.attribution_key.as_slice()).map_err(|_| {
                            Error::Key(format!(
                                "the key service sent a {}-byte attribution key",
                                reply.attribution_key.len()
                            ))
                        })?,
                        reply.attribution_agent.clone(),
                    )),
                };
                Ok(Granted {
                    keys: map,
                    limits: IndexLimits { objects, packs },
                    attribution_key,
                })
            })
            .await
    }

    /// The wrapped keys of the job's scope: which index objects to load.
    ///
    /// # Errors
    /// As [`ControllerKeys::granted`].
    pub async fn granted_keys(&self) -> Result<HashSet<WrappedKey>> {
        Ok(self.granted().await?.keys().cloned().collect())
    }

    async fn client(&self) -> Result<KeyServiceClient<Channel>> {
        let mut slot = self.channel.lock().await;
        if slot.is_none() {
            *slot = Some(connect(&self.addr, self.tls.clone()).await?);
        }
        Ok(KeyServiceClient::new(slot.clone().expect("set above")))
    }

    /// Run `call`, reconnecting and retrying while the controller is
    /// unreachable, for up to [`RETRY_FOR`].
    async fn with_retry<T, F, Fut>(&self, what: &str, call: F) -> Result<T>
    where
        F: Fn(KeyServiceClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let start = Instant::now();
        let mut delay = Duration::from_millis(200);
        loop {
            let attempt = match self.client().await {
                Ok(c) => call(c).await.map_err(|s| {
                    (
                        s.code() == tonic::Code::Unavailable,
                        s.message().to_string(),
                    )
                }),
                Err(e) => Err((true, e.to_string())),
            };
            match attempt {
                Ok(v) => return Ok(v),
                Err((true, msg)) if start.elapsed() < RETRY_FOR => {
                    tracing::warn!(job = %self.job_id, error = %msg, "key service unreachable; retrying");
                    *self.channel.lock().await = None;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                Err((_, msg)) => {
                    return Err(Error::Key(format!(
                        "the controller's key service refused to {what} for job {}: {msg}",
                        self.job_id
                    )))
                }
            }
        }
    }
}

fn key_from(bytes: &[u8]) -> Result<DataKey> {
    let raw: [u8; 32] = bytes
        .try_into()
        .map_err(|_| Error::Key(format!("the key service sent a {}-byte key", bytes.len())))?;
    Ok(DataKey::from_bytes(raw))
}

#[async_trait]
impl KeyProvider for ControllerKeys {
    async fn generate(&self) -> Result<(DataKey, WrappedKey)> {
        let job_id = self.job_id.clone();
        let reply = self
            .with_retry("generate a data key", |mut c| {
                let job_id = job_id.clone();
                async move {
                    c.generate_data_key(GenerateDataKeyRequest { job_id })
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        Ok((key_from(&reply.data_key)?, WrappedKey(reply.wrapped_key)))
    }

    async fn unwrap(&self, wrapped: &WrappedKey) -> Result<DataKey> {
        if let Some(raw) = self.granted().await?.get(wrapped) {
            return Ok(DataKey::from_bytes(*raw));
        }
        let job_id = self.job_id.clone();
        let w = wrapped.0.clone();
        let reply = self
            .with_retry("unwrap a data key", |mut c| {
                let req = UnwrapDataKeysRequest {
                    job_id: job_id.clone(),
                    wrapped_keys: vec![w.clone()],
                };
                async move {
                    c.unwrap_data_keys(req)
                        .await
                        .map(tonic::Response::into_inner)
                }
            })
            .await?;
        let k = reply
            .data_keys
            .first()
            .ok_or_else(|| Error::Key("the key service sent no key".into()))?;
        key_from(k)
    }

    async fn wrap(&self, _key: &DataKey) -> Result<WrappedKey> {
        Err(Error::Key(
            "an agent cannot wrap keys: only the controller's key service holds the master key"
                .into(),
        ))
    }
}
