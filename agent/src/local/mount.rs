//! Local mode's `mount`: the repository as a read-only file system
//! (FUSE, through the `fuser` crate's own mount code: no libfuse; as root
//! it mounts with mount(2), otherwise through `fusermount3` from the fuse3
//! package). It runs in the foreground until the file system is unmounted
//! (`umount`, `fusermount3 -u`) or it gets SIGINT or SIGTERM, then
//! unmounts and exits. The layout is in [`fs`].

mod cache;
mod fs;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use clap::Args;
use fuser::{Config, MountOption, SessionACL};

use super::{human_bytes, open, RepoArgs};

/// Arguments of `trireme-agent mount`.
#[derive(Args)]
pub struct MountArgs {
    #[command(flatten)]
    repo: RepoArgs,
    /// An existing empty directory to mount on.
    mountpoint: PathBuf,
    /// Most bytes of decrypted chunks kept in memory (least recently used
    /// first out), e.g. `256MiB`.
    #[arg(long, default_value = "256MiB")]
    cache_size: bytesize::ByteSize,
    /// Let other users read it too (the kernel still checks each file's
    /// mode and owner; non-root users need `user_allow_other` in
    /// /etc/fuse.conf).
    #[arg(long)]
    allow_other: bool,
}

/// Why `err` (from mounting at `at`) happened, and what to do.
fn mount_error(err: std::io::Error, at: &std::path::Path) -> anyhow::Error {
    let what = match err.kind() {
        std::io::ErrorKind::NotFound if !std::path::Path::new("/dev/fuse").exists() => {
            "/dev/fuse is missing: load the fuse kernel module (`modprobe fuse`); in a container, pass the device (--device /dev/fuse) and CAP_SYS_ADMIN".to_string()
        }
        std::io::ErrorKind::NotFound => {
            "fusermount3 not found: install the fuse3 package (non-root mounts need it)".to_string()
        }
        std::io::ErrorKind::PermissionDenied => {
            "permission denied: mount as root, or install fuse3 (fusermount3 is setuid) and check /dev/fuse's permissions".to_string()
        }
        _ => err.to_string(),
    };
    anyhow::anyhow!("cannot mount on {}: {what} ({err})", at.display())
}

/// Unmount `at` as `umount` (root) or `fusermount3 -u` (other users) would.
async fn unmount(at: &std::path::Path) -> Result<()> {
    let mut cmd = if rustix::process::geteuid().is_root() {
        tokio::process::Command::new("umount")
    } else {
        let mut c = tokio::process::Command::new("fusermount3");
        c.arg("-u");
        c
    };
    let out = cmd
        .arg(at)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running umount (or fusermount3 -u)")?;
    if !out.status.success() {
        bail!("{}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

/// `trireme-agent mount`.
///
/// # Errors
/// A mountpoint that is not an empty directory, no FUSE, storage and key
/// errors.
pub async fn mount(a: MountArgs) -> Result<ExitCode> {
    let at = &a.mountpoint;
    let meta = std::fs::metadata(at).with_context(|| {
        format!(
            "mountpoint {}: create an empty directory there",
            at.display()
        )
    })?;
    if !meta.is_dir() {
        bail!("mountpoint {} is not a directory", at.display());
    }
    if std::fs::read_dir(at)?.next().is_some() {
        bail!(
            "mountpoint {} is not empty: mount on an empty directory",
            at.display()
        );
    }
    let repo = open(&a.repo).await?;
    let snapshots = repo.snapshots().await?;
    let ix = repo.load_index().await?;
    let count = snapshots.len();
    let counters = Arc::new(fs::Counters::default());
    let cache = usize::try_from(a.cache_size.as_u64()).unwrap_or(usize::MAX);
    let filesystem = fs::RepoFs::new(ix, snapshots, cache, counters.clone());
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoSuid,
        MountOption::NoDev,
        MountOption::NoAtime,
        MountOption::DefaultPermissions,
        MountOption::FSName(format!("trireme:{}", a.repo.location_display())),
        MountOption::Subtype("trireme".into()),
    ];
    if a.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(4);
    let mountpoint = at.clone();
    let session = tokio::task::spawn_blocking(move || {
        fuser::Session::new(filesystem, &mountpoint, &config)
            .map_err(|e| mount_error(e, &mountpoint))
    })
    .await??;
    let (done_tx, mut done) = tokio::sync::oneshot::channel();
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    std::thread::Builder::new()
        .name("fuse-session".into())
        .spawn(move || {
            let _ = done_tx.send(session.run());
        })?;
    eprintln!(
        "serving {count} snapshot(s) of {} read-only at {} (cache {}); stop with Ctrl-C, SIGTERM or `umount {}`",
        a.repo.location_display(),
        at.display(),
        a.cache_size,
        at.display()
    );
    let ended = loop {
        tokio::select! {
            r = &mut done => break r,
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        // The session ends when the kernel says the file system is gone.
        if let Err(e) = unmount(at).await {
            eprintln!(
                "cannot unmount {}: {e}; still serving. Close what uses it (open files, a shell's working directory) and stop again, or detach it with `umount -l {}`",
                at.display(),
                at.display()
            );
        }
    };
    let c = &counters;
    eprintln!(
        "unmounted {}: read {} snapshot tree(s); fetched {} chunk(s), {} bytes ({}) from the location; {} chunk read(s) from the cache",
        at.display(),
        c.trees.load(Ordering::Relaxed),
        c.fetched.load(Ordering::Relaxed),
        c.fetched_bytes.load(Ordering::Relaxed),
        human_bytes(c.fetched_bytes.load(Ordering::Relaxed)),
        c.hits.load(Ordering::Relaxed),
    );
    match ended {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(e)) => Err(anyhow::anyhow!("the FUSE session ended with an error: {e}")),
        Err(_) => bail!("the FUSE session thread stopped without a word"),
    }
}
