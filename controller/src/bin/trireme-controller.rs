//! `trireme-controller`: the daemon (`run`) and its key file (`keygen`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use trireme_common::LocalKeyFile;
use trireme_controller::server::{self, ControllerConfig};

/// Trireme controller: schedules backups on the agents, keeps the catalog,
/// and holds the key service's master key.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `trireme_controller=debug`); also RUST_LOG.
    #[arg(long, global = true, env = "TRIREME_LOG", default_value = "info")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller.
    Run {
        /// The configuration file (TOML; see deploy/examples/controller.toml).
        #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
        config: PathBuf,
    },
    /// Check a configuration file and print what it says.
    CheckConfig {
        /// The configuration file.
        #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
        config: PathBuf,
    },
    /// Create the master key file (mode 0600). Keep it apart from the backups
    /// and keep a copy: without it no backup can be read.
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        key_file: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let result = match cli.command {
        Command::Keygen { key_file } => LocalKeyFile::create(&key_file)
            .map(|k| {
                println!(
                    "created master key {} in {}",
                    k.key_id(),
                    key_file.display()
                );
            })
            .map_err(anyhow::Error::from),
        Command::CheckConfig { config } => ControllerConfig::load(&config)
            .map(|c| {
                println!("{}: ok", config.display());
                println!("listen        {}", c.listen);
                println!("data_dir      {}", c.data_dir.display());
                println!("key_file      {}", c.key_file.display());
                println!("certificate   {}", c.tls.cert.display());
                for l in &c.locations {
                    println!("location      {} = {}", l.name, l.location);
                }
                for w in c.warnings() {
                    println!("warning       {w}");
                }
            })
            .map_err(anyhow::Error::from),
        Command::Run { config } => run(&config),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &std::path::Path) -> anyhow::Result<()> {
    let config = ControllerConfig::load(config)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(server::run(config, shutdown_signal()))?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot watch SIGTERM; stop with Ctrl-C");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
