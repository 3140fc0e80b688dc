use clap::Parser;

/// Trireme controller: schedules backups, keeps the catalog, replicates and
/// verifies copies. The control plane is not built yet: this binary only
/// reports its version.
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _ = Cli::parse();
    anyhow::bail!(
        "the controller daemon is not built yet; use `trireme-agent` local mode (see README)"
    )
}
