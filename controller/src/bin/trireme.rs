use clap::Parser;

/// The Trireme operator CLI. It talks to the controller, which is not built
/// yet: use `trireme-agent` local mode (see README).
#[derive(Parser)]
#[command(version, about)]
struct Cli {}

fn main() -> anyhow::Result<()> {
    let _ = Cli::parse();
    anyhow::bail!(
        "the controller API is not built yet; use `trireme-agent` local mode (see README)"
    )
}
