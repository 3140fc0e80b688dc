use clap::{Parser, Subcommand};
use trireme_controller::cert_cmd::{self, CertCommand};

/// The Trireme operator CLI. `trireme cert` manages the CA and certificates;
/// the commands that talk to the controller are not built yet: use
/// `trireme-agent` local mode (see README).
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Certificates: init-ca, issue, revoke, ls.
    #[command(subcommand)]
    Cert(CertCommand),
    /// Commands that talk to the controller (not built yet).
    #[command(external_subcommand)]
    Other(Vec<String>),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Some(Command::Cert(cmd)) => cert_cmd::run(cmd),
        Some(Command::Other(args)) => anyhow::bail!(
            "`trireme {}`: the controller API is not built yet; use `trireme-agent` local mode (see README)",
            args.first().map(String::as_str).unwrap_or_default()
        ),
        None => anyhow::bail!(
            "the controller API is not built yet; use `trireme-agent` local mode (see README)"
        ),
    }
}
