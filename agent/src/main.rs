//! `trireme-agent`: the per-host backup agent.
//!
//! `trireme-agent run` is the daemon: it dials the controller and runs the
//! jobs it is given. The other commands work straight against a location
//! with a local key file (local mode), for air-gapped hosts and recovery
//! without a controller.

use trireme_agent::local::RepoArgs;
use trireme_agent::{daemon, local};

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// Trireme agent: encrypted, deduplicated backups of this host's data.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `trireme_common=debug`); also RUST_LOG.
    #[arg(long, global = true, env = "TRIREME_LOG", default_value = "warn")]
    log: String,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "TRIREME_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: trireme_net::logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent daemon: connect to the controller and run its jobs.
    Run {
        /// The configuration file (TOML; see deploy/examples/agent.toml).
        #[arg(long, short, env = "TRIREME_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Get this agent's certificate from the controller with a bootstrap
    /// token (`trireme agents token create`): a new key made here (0600,
    /// never sent), NAME.pem and NAME.key written into --out.
    Enroll {
        /// The controller's enrollment listener (its `enroll_listen`), host:port.
        #[arg(long, env = "TRIREME_ENROLL_CONTROLLER")]
        controller: String,
        /// The CA certificate (`ca.pem`) that vouches for the controller.
        #[arg(long)]
        ca_file: PathBuf,
        /// The file holding the bootstrap token (mode 0600).
        #[arg(long, env = "TRIREME_BOOTSTRAP_TOKEN_FILE")]
        token_file: PathBuf,
        /// This agent's name: the certificate's name, and `[tls] name`.
        #[arg(long)]
        name: String,
        /// Where NAME.pem and NAME.key go (default: the directory of --ca-file).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The name on the controller's certificate (default: the host of --controller).
        #[arg(long)]
        server_name: Option<String>,
    },
    /// Check a configuration file and print what it says.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, env = "TRIREME_AGENT_CONFIG")]
        config: PathBuf,
    },
    /// Write man pages (trireme-agent.1 and one per subcommand) into DIR.
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
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
    /// List a snapshot's files (`-l`: mode, owner, size, time; `-R`: below too).
    Ls(local::LsArgs),
    /// What changed between two snapshots: added, removed, modified paths.
    Diff(local::DiffArgs),
    /// Search file names (globs) across snapshots, newest first.
    Find(local::FindArgs),
    /// Sizes: logical, after deduplication, stored; the ratios.
    Stats(local::StatsArgs),
    /// Write one file of a snapshot to stdout, or a directory as a tar archive.
    Dump(local::DumpArgs),
    /// Serve the repository read-only through FUSE at MOUNTPOINT
    /// (snapshots/<time>-<id>/…, by-source/<source>/latest/…) until
    /// unmounted, Ctrl-C or SIGTERM.
    #[cfg(feature = "mount")]
    Mount(local::MountArgs),
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

/// A restore keeps every file of a batch open until its data is written
/// (batches are sized to a quarter of this limit), so raise the soft limit
/// on open files to the hard one, as Go programs do at start. Best effort.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let l = getrlimit(Resource::Nofile);
    let want = l.maximum.unwrap_or(1 << 20);
    if l.current.is_some_and(|c| c < want) {
        let raised = Rlimit {
            current: Some(want),
            maximum: l.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(error = %e, "cannot raise the open files limit");
        }
    }
}

/// The command line with every command's examples at the end of its help.
fn command() -> clap::Command {
    trireme_net::cli_examples::with_examples(Cli::command(), trireme_agent::cli_examples::EXAMPLES)
}

fn main() -> std::process::ExitCode {
    let cli = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
    let default_log = match cli.command {
        Command::Run { .. } if cli.log == "warn" => "info".to_string(),
        _ => cli.log.clone(),
    };
    trireme_net::logging::init(&default_log, cli.log_format);
    raise_open_files_limit();
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
            Command::Run { config } => {
                let config = daemon::AgentConfig::load(&config)?;
                daemon::run(config, shutdown_signal()).await?;
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::CheckConfig { config } => {
                let c = daemon::AgentConfig::load(&config)?;
                println!("{}: ok", config.display());
                println!("agent         {} (host {})", c.name, c.hostname);
                println!(
                    "controller    {} (certificate name {})",
                    c.controller, c.server_name
                );
                println!("state_dir     {}", c.state_dir.display());
                for s in &c.sources {
                    println!("source        {} ({}) {:?}", s.name, s.kind(), s.details());
                }
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Enroll {
                controller,
                ca_file,
                token_file,
                name,
                out,
                server_name,
            } => {
                let dir = out.unwrap_or_else(|| {
                    ca_file
                        .parent()
                        .map(std::path::Path::to_path_buf)
                        .unwrap_or_default()
                });
                let host = controller
                    .rsplit_once(':')
                    .map_or(controller.as_str(), |(h, _)| h)
                    .trim_matches(['[', ']'])
                    .to_string();
                let e = daemon::enroll::Enrollment {
                    address: controller,
                    server_name: server_name.unwrap_or(host),
                    tls: trireme_net::tls::TlsFiles {
                        cert: dir.join(format!("{name}.pem")),
                        key: dir.join(format!("{name}.key")),
                        ca: ca_file,
                        crl: None,
                    },
                    name,
                    token_file,
                };
                let got = daemon::enroll::enroll(&e).await?;
                println!(
                    "enrolled {}: certificate {} (serial {}, until {}), key {}",
                    e.name,
                    e.tls.cert.display(),
                    got.serial,
                    humantime::format_rfc3339_seconds(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(
                                u64::try_from(got.not_after_unix).unwrap_or(0)
                            )
                    ),
                    e.tls.key.display()
                );
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Keygen { key_file } => local::keygen(&key_file),
            Command::Man { dir } => {
                std::fs::create_dir_all(&dir)?;
                trireme_net::cli_examples::write_man_pages(
                    Cli::command(),
                    &dir,
                    trireme_agent::cli_examples::EXAMPLES,
                )?;
                println!("wrote the man pages to {}", dir.display());
                Ok(std::process::ExitCode::SUCCESS)
            }
            Command::Init { repo } => local::init(&repo).await,
            Command::Backup(args) => local::backup(args).await,
            Command::Restore(args) => local::restore(args).await,
            Command::Snapshots { repo, source, json } => {
                local::snapshots(&repo, source.as_deref(), json).await
            }
            Command::Check { repo, deep, json } => local::check(&repo, deep, json).await,
            Command::Ls(args) => local::ls(args).await,
            Command::Diff(args) => local::diff(args).await,
            Command::Find(args) => local::find(args).await,
            Command::Stats(args) => local::stats(args).await,
            Command::Dump(args) => local::dump(args).await,
            #[cfg(feature = "mount")]
            Command::Mount(args) => local::mount(args).await,
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

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_an_example_that_parses() {
        command().debug_assert();
        let problems = trireme_net::cli_examples::check(
            &Cli::command(),
            trireme_agent::cli_examples::EXAMPLES,
        );
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
