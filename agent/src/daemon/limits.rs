//! How much of the host a daemon takes: an upload budget shared by all its
//! jobs (`upload_bytes_per_sec`), and CPU and I/O priority (`cpu_nice`,
//! `io_priority`) for everything it runs, hooks and dump tools included.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use async_trait::async_trait;
use bytes::Bytes;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use trireme_common::backend::{
    Backend, DynBackend, ListedObject, ObjectKey, ObjectKind, ObjectMeta,
};

/// The I/O scheduling class of the agent's threads and children.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IoPriority {
    /// Leave it as the agent was started.
    #[default]
    Normal,
    /// Disk time only when no one else wants it (`ionice -c 3`).
    Idle,
    /// Best effort at this level, 0 (high) to 7 (low) (`ionice -c 2 -n N`).
    BestEffort(u8),
}

impl std::str::FromStr for IoPriority {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "normal" => Ok(IoPriority::Normal),
            "idle" => Ok(IoPriority::Idle),
            _ => match s.strip_prefix("best-effort:").map(str::parse::<u8>) {
                Some(Ok(n)) if n <= 7 => Ok(IoPriority::BestEffort(n)),
                _ => bail!(
                    "io_priority = {s:?}: write \"idle\", \"normal\", or \"best-effort:N\" with N from 0 (high) to 7 (low)"
                ),
            },
        }
    }
}

/// Parse `upload_bytes_per_sec`: a number of bytes, or a size such as
/// `"20 MiB"` or `"50MB"` (per second).
///
/// # Errors
/// Not a size, or zero.
pub fn parse_rate(v: &toml::Value) -> Result<u64> {
    let n = match v {
        toml::Value::Integer(n) if *n > 0 => *n as u64,
        toml::Value::String(s) => s
            .parse::<bytesize::ByteSize>()
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| {
                format!("upload_bytes_per_sec = {s:?}: write e.g. \"20 MiB\" or 20971520")
            })?
            .as_u64(),
        other => bail!("upload_bytes_per_sec = {other:?}: write a positive size, e.g. \"20 MiB\""),
    };
    if n == 0 {
        bail!("upload_bytes_per_sec must be more than 0 (leave it out for no limit)");
    }
    Ok(n)
}

/// Give every thread of this process (and so everything it starts later)
/// `nice` and `io`. Threads are re-listed until a pass finds none new, as
/// one may start meanwhile; new threads inherit from the thread that
/// starts them.
///
/// # Errors
/// `setpriority` refused (lowering niceness needs privileges), or
/// `ionice` (util-linux) missing or refused.
pub fn apply_priority(nice: Option<i32>, io: IoPriority) -> Result<()> {
    if nice.is_none() && io == IoPriority::Normal {
        return Ok(());
    }
    let mut done = std::collections::HashSet::new();
    loop {
        let tids: Vec<i32> = std::fs::read_dir("/proc/self/task")
            .context("listing /proc/self/task")?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|t| !done.contains(t))
            .collect();
        if tids.is_empty() {
            return Ok(());
        }
        for &tid in &tids {
            if let Some(n) = nice {
                let pid = rustix::process::Pid::from_raw(tid);
                match rustix::process::setpriority_process(pid, n) {
                    Ok(()) => {}
                    // A thread that ended meanwhile.
                    Err(rustix::io::Errno::SRCH) => {}
                    Err(e) => bail!("cpu_nice = {n}: setpriority refused ({e}); raising priority (below the current niceness) needs root or CAP_SYS_NICE"),
                }
            }
        }
        let class = match io {
            IoPriority::Normal => None,
            IoPriority::Idle => Some(vec!["-c".to_string(), "3".into()]),
            IoPriority::BestEffort(n) => {
                Some(vec!["-c".into(), "2".into(), "-n".into(), n.to_string()])
            }
        };
        if let Some(class) = class {
            let out = std::process::Command::new("ionice")
                .args(&class)
                .arg("-p")
                .args(tids.iter().map(i32::to_string))
                .output()
                .context("io_priority: cannot run ionice (util-linux)")?;
            // A thread that ended meanwhile makes ionice complain about it alone.
            let err = String::from_utf8_lossy(&out.stderr);
            if !out.status.success() && !err.contains("No such process") {
                bail!(
                    "io_priority: ionice {} failed: {}",
                    class.join(" "),
                    err.trim()
                );
            }
        }
        done.extend(tids);
    }
}

/// The agent's upload budget, shared by all its jobs.
#[derive(Clone)]
pub struct UploadBudget {
    limiter: Arc<DefaultDirectRateLimiter>,
    /// Bytes per second.
    pub rate: u64,
    burst: u32,
}

impl std::fmt::Debug for UploadBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UploadBudget({} B/s)", self.rate)
    }
}

impl UploadBudget {
    /// `rate` bytes per second, in bursts of at most a quarter second of it
    /// (at least 64 KiB).
    pub fn new(rate: u64) -> Self {
        let per_sec = u32::try_from(rate).unwrap_or(u32::MAX).max(1);
        let burst = (per_sec / 4).max(64 * 1024).min(per_sec.max(64 * 1024));
        let quota = Quota::per_second(NonZeroU32::new(per_sec).expect("at least 1"))
            .allow_burst(NonZeroU32::new(burst).expect("at least 64 KiB"));
        UploadBudget {
            limiter: Arc::new(RateLimiter::direct(quota)),
            rate,
            burst,
        }
    }

    /// The pack size for backups under this budget: about half a second of
    /// it (between 1 and 16 MiB), so uploads come in small steps.
    pub fn pack_size(&self, default: usize) -> usize {
        usize::try_from(self.rate / 2)
            .unwrap_or(usize::MAX)
            .clamp(1 << 20, default.max(1 << 20))
    }

    /// Wait until `n` bytes may go.
    async fn spend(&self, mut n: u64) {
        while n > 0 {
            let step = n.min(u64::from(self.burst)) as u32;
            let _ = self
                .limiter
                .until_n_ready(NonZeroU32::new(step).expect("step > 0"))
                .await;
            n -= u64::from(step);
        }
    }

    /// `backend`, its uploads held to this budget.
    pub fn wrap(&self, backend: DynBackend) -> DynBackend {
        Arc::new(Throttled {
            inner: backend,
            budget: self.clone(),
        })
    }
}

/// A backend whose `put`s wait for the upload budget first; reads, lists
/// and deletes are not held.
#[derive(Debug)]
struct Throttled {
    inner: DynBackend,
    budget: UploadBudget,
}

#[async_trait]
impl Backend for Throttled {
    fn location(&self) -> &str {
        self.inner.location()
    }
    async fn put(
        &self,
        key: &ObjectKey,
        data: Bytes,
        sha256: [u8; 32],
    ) -> trireme_common::Result<()> {
        self.budget.spend(data.len() as u64).await;
        self.inner.put(key, data, sha256).await
    }
    async fn get(&self, key: &ObjectKey) -> trireme_common::Result<Bytes> {
        self.inner.get(key).await
    }
    async fn get_range(
        &self,
        key: &ObjectKey,
        offset: u64,
        length: u64,
    ) -> trireme_common::Result<Bytes> {
        self.inner.get_range(key, offset, length).await
    }
    async fn head(&self, key: &ObjectKey) -> trireme_common::Result<Option<ObjectMeta>> {
        self.inner.head(key).await
    }
    async fn list(&self, kind: ObjectKind) -> trireme_common::Result<Vec<ListedObject>> {
        self.inner.list(kind).await
    }
    async fn delete(&self, key: &ObjectKey) -> trireme_common::Result<()> {
        self.inner.delete(key).await
    }
}

/// The niceness and I/O class of thread `tid` of process `pid`, as
/// `/proc` and `ionice -p` report them (for tests and `check-config`).
pub fn priority_of(pid: u32) -> Result<(i32, String)> {
    let stat = std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))?;
    // Field 19 is nice; the command name (field 2) may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let nice: i32 = after
        .split_whitespace()
        .nth(16)
        .context("short /proc stat")?
        .parse()?;
    let out = std::process::Command::new("ionice")
        .args(["-p", &pid.to_string()])
        .output()?;
    Ok((
        nice,
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::time::{Duration, Instant};
    use trireme_common::backend::FileBackend;

    #[test]
    fn settings_parse_or_say_what_to_write() {
        assert_eq!("idle".parse::<IoPriority>().unwrap(), IoPriority::Idle);
        assert_eq!(
            "best-effort:7".parse::<IoPriority>().unwrap(),
            IoPriority::BestEffort(7)
        );
        let e = "best-effort:9".parse::<IoPriority>().unwrap_err();
        assert!(e.to_string().contains("0 (high) to 7 (low)"), "{e}");
        assert_eq!(
            parse_rate(&toml::Value::String("20 MiB".into())).unwrap(),
            20 << 20
        );
        assert_eq!(parse_rate(&toml::Value::Integer(1000)).unwrap(), 1000);
        let e = parse_rate(&toml::Value::String("fast".into())).unwrap_err();
        assert!(format!("{e:#}").contains("write e.g. \"20 MiB\""), "{e:#}");
        assert!(parse_rate(&toml::Value::Integer(0)).is_err());
        let b = UploadBudget::new(4 << 20);
        assert_eq!(b.pack_size(16 << 20), 2 << 20);
        assert_eq!(UploadBudget::new(100 << 20).pack_size(16 << 20), 16 << 20);
        assert_eq!(UploadBudget::new(1000).pack_size(16 << 20), 1 << 20);
    }

    /// A backend that records when each put started and how big it was.
    #[derive(Debug)]
    struct Clocked {
        inner: DynBackend,
        puts: Mutex<Vec<(Instant, u64)>>,
    }

    #[async_trait]
    impl Backend for Clocked {
        fn location(&self) -> &str {
            self.inner.location()
        }
        async fn put(
            &self,
            key: &ObjectKey,
            data: Bytes,
            sha256: [u8; 32],
        ) -> trireme_common::Result<()> {
            self.puts
                .lock()
                .unwrap()
                .push((Instant::now(), data.len() as u64));
            self.inner.put(key, data, sha256).await
        }
        async fn get(&self, key: &ObjectKey) -> trireme_common::Result<Bytes> {
            self.inner.get(key).await
        }
        async fn get_range(
            &self,
            key: &ObjectKey,
            o: u64,
            l: u64,
        ) -> trireme_common::Result<Bytes> {
            self.inner.get_range(key, o, l).await
        }
        async fn head(&self, key: &ObjectKey) -> trireme_common::Result<Option<ObjectMeta>> {
            self.inner.head(key).await
        }
        async fn list(&self, kind: ObjectKind) -> trireme_common::Result<Vec<ListedObject>> {
            self.inner.list(kind).await
        }
        async fn delete(&self, key: &ObjectKey) -> trireme_common::Result<()> {
            self.inner.delete(key).await
        }
    }

    /// Two "jobs" upload at once through one budget of 2 MiB/s: together
    /// they never get more than the budget (plus one burst) in any window,
    /// and the whole takes as long as the budget says.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn one_budget_holds_all_uploads_to_its_rate() {
        let dir = tempfile::tempdir().unwrap();
        let clocked = Arc::new(Clocked {
            inner: Arc::new(FileBackend::new(dir.path())),
            puts: Mutex::default(),
        });
        let rate = 2u64 << 20;
        let budget = UploadBudget::new(rate);
        let start = Instant::now();
        let job = |n: u8| {
            let b = budget.wrap(clocked.clone());
            async move {
                for i in 0..6u8 {
                    let data = Bytes::from(vec![n ^ i; 512 * 1024]);
                    let key =
                        ObjectKey::new(ObjectKind::Pack, format!("{n:02x}{i:02x}").repeat(16));
                    b.put(&key, data, [0; 32]).await.unwrap();
                }
            }
        };
        tokio::join!(job(1), job(2));
        let took = start.elapsed();
        let total = 12 * 512 * 1024u64;
        // The first burst is free; the rest comes at the rate.
        let least = Duration::from_secs_f64((total - u64::from(budget.burst)) as f64 / rate as f64);
        assert!(took >= least.mul_f64(0.95), "{took:?} < {least:?}");
        let puts = clocked.puts.lock().unwrap().clone();
        assert_eq!(puts.len(), 12);
        for (i, (t0, _)) in puts.iter().enumerate() {
            let in_window: u64 = puts[i..]
                .iter()
                .take_while(|(t, _)| t.duration_since(*t0) < Duration::from_secs(1))
                .map(|(_, n)| n)
                .sum();
            // One second of budget, the burst, and the put that started it.
            assert!(
                in_window <= rate + u64::from(budget.burst) + 512 * 1024,
                "{in_window} bytes started within one second"
            );
        }
    }
}
