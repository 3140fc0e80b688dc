//! `trireme-agent`: the per-host backup agent.
//!
//! Until the controller exists, the agent runs one-shot commands against a
//! location directly (local mode), which also serves air-gapped hosts.

mod local;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Trireme agent: encrypted, deduplicated backups of this host's data.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `trireme_common=debug`); also RUST_LOG.
    #[arg(long, global = true, env = "TRIREME_LOG", default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

/// Where the repository is and which master key opens it.
#[derive(clap::Args, Clone)]
pub struct RepoArgs {
    /// Location URL: `file:///path` or `s3://bucket/prefix?endpoint=…&region=…`.
    #[arg(long, env = "TRIREME_LOCATION")]
    location: String,
    /// Master key file (create one with `trireme-agent keygen`); mode 0600.
    #[arg(long, env = "TRIREME_KEY_FILE")]
    key_file: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new master key file (mode 0600). Keep it apart from the backups.
    Keygen {
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long, env = "TRIREME_KEY_FILE")]
        key_file: PathBuf,
    },
    /// Create a repository at a location.
    Init {
        #[command(flatten)]
        repo: RepoArgs,
    },
    /// Back up a directory (or standard input) as a new snapshot.
    Backup(local::BackupArgs),
    /// Restore a snapshot to a directory, or a stream snapshot to stdout.
    Restore(local::RestoreArgs),
    /// List snapshots.
    Snapshots {
        #[command(flatten)]
        repo: RepoArgs,
        /// Only this source's snapshots.
        #[arg(long)]
        source: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check the repository: quick by default, `--deep` re-reads every pack.
    Check {
        #[command(flatten)]
        repo: RepoArgs,
        /// Re-read, re-hash, decrypt and authenticate every object.
        #[arg(long)]
        deep: bool,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Command::Keygen { key_file } => local::keygen(&key_file),
            Command::Init { repo } => local::init(&repo).await,
            Command::Backup(args) => local::backup(args).await,
            Command::Restore(args) => local::restore(args).await,
            Command::Snapshots { repo, source, json } => {
                local::snapshots(&repo, source.as_deref(), json).await
            }
            Command::Check { repo, deep, json } => local::check(&repo, deep, json).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
