//! `trireme-controller`: the daemon (`run`), its key file (`keygen`, the
//! recovery copy: `key export` / `key import`, master-key rotation: `key
//! rotate` / `key verify`) and the offline check of its audit log (`audit
//! verify`).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, bail, Context};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use trireme_common::LocalKeyFile;
use trireme_controller::audit::{self, Event};
use trireme_controller::config::ControllerConfig;
use trireme_controller::recovery_key as recovery;
use trireme_controller::server;
use trireme_controller::Catalog;
use trireme_net::logging::LogFormat;

/// Trireme controller: schedules backups on the agents, keeps the catalog,
/// and holds the key service's master key.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log filter (e.g. `info`, `trireme_controller=debug`); also RUST_LOG.
    #[arg(long, global = true, env = "TRIREME_LOG", default_value = "info")]
    log: String,
    /// Log lines as `text` or `json` (one object per line).
    #[arg(
        long,
        global = true,
        env = "TRIREME_LOG_FORMAT",
        default_value = "text"
    )]
    log_format: LogFormat,
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
    /// Write man pages (trireme-controller.1 and one per subcommand) into DIR.
    Man {
        /// The directory (created if missing).
        dir: PathBuf,
    },
    /// Create the master key file (mode 0600). Keep it apart from the backups
    /// and keep a copy: without it no backup can be read.
    Keygen {
        /// Where to write it; an existing file is never overwritten.
        #[arg(long)]
        key_file: PathBuf,
    },
    /// The master key: its recovery copy (wrapped by a passphrase) and its
    /// rotation.
    #[command(subcommand)]
    Key(KeyCmd),
    /// The audit log, read from the catalog directly (stop the controller
    /// first: the catalog allows one user at a time).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Operators' TOTP enrollments, in the catalog directly (stop the
    /// controller first).
    #[command(subcommand)]
    Mfa(MfaCmd),
}

#[derive(Subcommand)]
enum MfaCmd {
    /// Remove an operator's enrollment (a lost authenticator): they enroll
    /// again with `trireme mfa enroll`. Recorded in the audit log.
    Reset {
        /// The operator's certificate name.
        #[arg(long)]
        name: String,
        /// The controller configuration (its data_dir).
        #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Write the master key wrapped by a recovery passphrase (Argon2id +
    /// AES-256-GCM) to a new file. Keep it offline, apart from the backups
    /// and the passphrase.
    Export {
        /// The export to write (mode 0600; never overwritten).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        key: KeySource,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Restore the master key from an export into a new key file (0600).
    Import {
        /// The export.
        #[arg(long = "in", value_name = "FILE")]
        input: PathBuf,
        /// Where to write the key; an existing file is never overwritten.
        #[arg(long)]
        key_file: PathBuf,
        /// The controller configuration, when at hand: the import is refused
        /// when its master key is in an external KMS.
        #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
        config: Option<PathBuf>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Rotate the master key without re-encrypting data (stop the
    /// controller first): every stored data key is wrapped again under the
    /// new key into a key table, written to the catalog and every location.
    Rotate {
        /// The controller configuration as it is now (the old key).
        #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
        config: PathBuf,
        /// The same configuration with the new key settings (for a key
        /// file: one made with `trireme-controller keygen`).
        #[arg(long)]
        new_config: PathBuf,
        /// Leave out a location that cannot be reached (repeatable); its
        /// copies still need the old key until `key verify` passes there.
        #[arg(long = "skip-location", value_name = "NAME")]
        skip: Vec<String>,
    },
    /// Check that the configured master key (with its key table) opens every
    /// stored key at every location and in the catalog (stop the controller
    /// first); then remove the key tables the current one supersedes.
    Verify {
        /// The controller configuration.
        #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
        config: PathBuf,
    },
}

/// Which key file: given, or the one the configuration names.
#[derive(Args)]
#[group(required = true, multiple = false)]
struct KeySource {
    /// The master key file.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The controller configuration (its key_file; the export is audited in
    /// its catalog when the controller is stopped).
    #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct PassphraseArgs {
    /// Read the passphrase from the first line of this file (not readable by
    /// others); else TRIREME_RECOVERY_PASSPHRASE; else a prompt.
    #[arg(long)]
    passphrase_file: Option<PathBuf>,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Walk the audit log's hash chain; exit 1 naming the first edited or
    /// missing entry. With --config, also compare with the locations' mirrors.
    Verify {
        /// The controller's data directory (the catalog is DIR/catalog).
        #[arg(long, required_unless_present = "config", conflicts_with = "config")]
        data_dir: Option<PathBuf>,
        /// The controller configuration (its data_dir and locations).
        #[arg(long, short, env = "TRIREME_CONTROLLER_CONFIG")]
        config: Option<PathBuf>,
    },
}

/// The examples at the end of every command's `--help` and man page; the
/// unit test below parses each line with the real flags.
const EXAMPLES: &[(&str, &str)] = &[
    (
        "",
        "trireme-controller keygen --key-file /etc/trireme/master.key
trireme-controller check-config --config /etc/trireme/controller.toml
trireme-controller run --config /etc/trireme/controller.toml",
    ),
    (
        "run",
        "trireme-controller run --config /etc/trireme/controller.toml
trireme-controller run -c /etc/trireme/controller.toml --log-format json",
    ),
    (
        "check-config",
        "trireme-controller check-config --config /etc/trireme/controller.toml",
    ),
    ("man", "trireme-controller man /usr/local/share/man/man1"),
    (
        "keygen",
        "trireme-controller keygen --key-file /etc/trireme/master.key    # once; back it up apart from the backups",
    ),
    (
        "key",
        "trireme-controller key export --config /etc/trireme/controller.toml --out /root/trireme-recovery.json",
    ),
    (
        "key export",
        "trireme-controller key export --config /etc/trireme/controller.toml --out /root/trireme-recovery.json
trireme-controller key export --key-file /etc/trireme/master.key --out /root/trireme-recovery.json --passphrase-file /root/recovery.pass",
    ),
    (
        "key import",
        "# a new controller host, after losing the old one:
trireme-controller key import --in trireme-recovery.json --key-file /etc/trireme/master.key",
    ),
    (
        "key rotate",
        "# controller stopped; controller-2027.toml names the new key:
trireme-controller key rotate --config /etc/trireme/controller.toml --new-config /etc/trireme/controller-2027.toml
trireme-controller key rotate --config /etc/trireme/controller.toml --new-config /etc/trireme/controller-2027.toml --skip-location offsite",
    ),
    (
        "key verify",
        "trireme-controller key verify --config /etc/trireme/controller-2027.toml",
    ),
    (
        "audit",
        "trireme-controller audit verify --config /etc/trireme/controller.toml",
    ),
    (
        "audit verify",
        "# controller stopped:
trireme-controller audit verify --config /etc/trireme/controller.toml    # the chain and every location's mirror
trireme-controller audit verify --data-dir /var/lib/trireme    # the chain only",
    ),
    (
        "mfa",
        "trireme-controller mfa reset --name alice --config /etc/trireme/controller.toml",
    ),
    (
        "mfa reset",
        "# controller stopped; alice lost her authenticator:
trireme-controller mfa reset --name alice --config /etc/trireme/controller.toml",
    ),
];

/// The command line with every command's examples at the end of its help.
fn command() -> clap::Command {
    trireme_net::cli_examples::with_examples(Cli::command(), EXAMPLES)
}

fn main() -> ExitCode {
    let cli = command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| e.exit());
    trireme_net::logging::init(&cli.log, cli.log_format);
    let result = match cli.command {
        Command::Man { dir } => std::fs::create_dir_all(&dir)
            .and_then(|()| {
                trireme_net::cli_examples::write_man_pages(Cli::command(), &dir, EXAMPLES)
            })
            .map(|_| println!("wrote the man pages to {}", dir.display()))
            .map_err(|e| anyhow::anyhow!("writing man pages to {}: {e}", dir.display())),
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
                println!("key provider  {}", c.key_source.describe());
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
        Command::Key(KeyCmd::Export {
            out,
            key,
            passphrase,
        }) => key_export(&out, &key, &passphrase),
        Command::Key(KeyCmd::Import {
            input,
            key_file,
            config,
            passphrase,
        }) => key_import(&input, &key_file, config.as_deref(), &passphrase),
        Command::Key(KeyCmd::Rotate {
            config,
            new_config,
            skip,
        }) => key_rotate(&config, &new_config, &skip),
        Command::Key(KeyCmd::Verify { config }) => key_verify(&config),
        Command::Audit(AuditCmd::Verify { data_dir, config }) => audit_verify(data_dir, config),
        Command::Mfa(MfaCmd::Reset { name, config }) => mfa_reset(&name, &config),
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

/// The passphrase: --passphrase-file, TRIREME_RECOVERY_PASSPHRASE, or a
/// prompt on the terminal (twice when `confirm`).
fn passphrase(args: &PassphraseArgs, confirm: bool) -> anyhow::Result<String> {
    Ok(recovery::ask_passphrase(
        args.passphrase_file.as_deref(),
        confirm,
    )?)
}

/// Who runs a local command, for the audit log.
fn local_user() -> String {
    std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| format!("uid {}", rustix::process::getuid().as_raw()))
}

fn key_export(out: &Path, key: &KeySource, args: &PassphraseArgs) -> anyhow::Result<()> {
    let config = key
        .config
        .as_deref()
        .map(ControllerConfig::load)
        .transpose()?;
    let key_file = match (&key.key_file, &config) {
        (Some(k), _) => k.clone(),
        (None, Some(c)) => recovery::local_key_file(&c.key_source, "export")?.to_path_buf(),
        (None, None) => unreachable!("clap requires --key-file or --config"),
    };
    let pass = passphrase(args, true)?;
    let (text, key_id) = recovery::export(&key_file, &pass)?;
    recovery::write_new(out, text.as_bytes())?;
    println!(
        "wrote master key {key_id} from {} to {}, wrapped by your passphrase; keep it offline and apart from the passphrase",
        key_file.display(),
        out.display()
    );
    let detail = format!("master key {key_id} to {}", out.display());
    let who = local_user();
    tracing::info!(target: "trireme::audit", who = %who, action = "key export", %detail, "allowed");
    if let Some(c) = config {
        match Catalog::open(c.data_dir.join("catalog")) {
            Ok(catalog) => {
                catalog.audit().append(
                    Event::actor(who, "local", "key export", detail).from_place("local"),
                    chrono::Utc::now(),
                )?;
            }
            Err(e) => eprintln!(
                "note: the export is not in the audit log: the catalog cannot be opened ({e}); it is in this command's log only"
            ),
        }
    }
    Ok(())
}

fn key_import(
    input: &Path,
    key_file: &Path,
    config: Option<&Path>,
    args: &PassphraseArgs,
) -> anyhow::Result<()> {
    if let Some(c) = config {
        recovery::local_key_file(&ControllerConfig::load(c)?.key_source, "import")?;
    }
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("reading the export {}", input.display()))?;
    let pass = passphrase(args, false)?;
    let id = recovery::import(&input.display().to_string(), &text, &pass, key_file)?;
    tracing::info!(target: "trireme::audit", who = %local_user(), action = "key import", key = %id, file = %key_file.display(), "allowed");
    println!("restored master key {id} to {}", key_file.display());
    Ok(())
}

fn audit_verify(data_dir: Option<PathBuf>, config: Option<PathBuf>) -> anyhow::Result<()> {
    let config = config.as_deref().map(ControllerConfig::load).transpose()?;
    let dir = match (data_dir, &config) {
        (Some(d), _) => d,
        (None, Some(c)) => c.data_dir.clone(),
        (None, None) => unreachable!("clap requires --data-dir or --config"),
    };
    let catalog = Catalog::open(dir.join("catalog"))?;
    let report = catalog.audit().verify();
    let mut failed = None;
    match &report.broken {
        None => println!("chain: intact ({} entries)", report.checked),
        Some(b) => {
            println!(
                "chain: BROKEN at entry {} ({} entries before it verified): {}",
                b.seq, report.checked, b.problem
            );
            failed = Some(anyhow!(
                "the audit log is broken at entry {}: {}",
                b.seq,
                b.problem
            ));
        }
    }
    if let Some((seq, hash)) = &report.head {
        println!("head:  entry {seq} hash {hash}");
    }
    if let Some(c) = config {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        // The mirrors' MAC key comes from the controller key in the catalog
        // (unwrapped with the configured key provider).
        let mac_key = rt.block_on(async {
            let provider = c.key_source.build().await?;
            trireme_controller::custody::audit_mirror_key(&catalog, &provider).await
        })?;
        if mac_key.is_none() {
            println!("mirror: the catalog holds no controller key: segment MACs are not checked");
        }
        for l in &c.locations {
            let r = rt.block_on(async {
                let backend = l.location.open().await?;
                audit::compare_mirror(&catalog.audit(), &backend, mac_key.as_ref()).await
            });
            match r {
                Ok((n, problems)) if problems.is_empty() => {
                    println!("mirror: {}: agrees ({n} entries compared)", l.name);
                }
                Ok((_, problems)) => {
                    println!("mirror: {}: DISAGREES:", l.name);
                    for p in &problems {
                        println!("  {p}");
                    }
                    failed.get_or_insert_with(|| {
                        anyhow!(
                            "the audit log disagrees with its mirror at {}: {}",
                            l.name,
                            problems[0]
                        )
                    });
                }
                Err(e) => println!("mirror: {}: cannot read it: {e}", l.name),
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// Open the catalog for an offline command; a running controller (which
/// holds the catalog's lock) is named as such.
fn open_offline(config: &ControllerConfig, what: &str) -> anyhow::Result<Catalog> {
    let path = config.data_dir.join("catalog");
    match Catalog::open(&path) {
        Ok(c) => {
            trireme_controller::snapshots::fill_dependencies(&c)?;
            trireme_controller::jobs::count_jobs(&c)?;
            Ok(c)
        }
        Err(trireme_controller::Error::CatalogOpen {
            source: sled::Error::Io(e),
            ..
        }) if e.kind() == std::io::ErrorKind::WouldBlock
            || e.to_string().contains("could not acquire lock") =>
        {
            bail!(
                "the controller is running (its catalog {} is locked): `{what}` is an offline maintenance command; stop trireme-controller, run it, then start the controller again",
                path.display()
            )
        }
        Err(e) => Err(e.into()),
    }
}

fn key_rotate(config: &Path, new_config: &Path, skip: &[String]) -> anyhow::Result<()> {
    let old_cfg = ControllerConfig::load(config)?;
    let new_cfg = ControllerConfig::load(new_config)?;
    if old_cfg.data_dir != new_cfg.data_dir {
        bail!(
            "{} names data_dir {}, {} names {}: the new configuration must be the same controller's, with only the key settings changed",
            config.display(),
            old_cfg.data_dir.display(),
            new_config.display(),
            new_cfg.data_dir.display()
        );
    }
    let names = |c: &ControllerConfig| -> Vec<(String, String)> {
        c.locations
            .iter()
            .map(|l| (l.name.clone(), l.url.clone()))
            .collect()
    };
    if names(&old_cfg) != names(&new_cfg) {
        bail!(
            "{} and {} list different locations: the new configuration must be the same controller's, with only the key settings changed",
            config.display(),
            new_config.display()
        );
    }
    let catalog = open_offline(&old_cfg, "trireme-controller key rotate")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let old = old_cfg.key_source.build().await?;
        let new = new_cfg.key_source.build().await?;
        trireme_controller::rotation::rotate(trireme_controller::rotation::RotateRequest {
            catalog: &catalog,
            locations: &old_cfg.locations,
            skip,
            old,
            new,
            who: local_user(),
            now: chrono::Utc::now(),
        })
        .await
    })?;
    tracing::info!(target: "trireme::audit", who = %local_user(), action = "key rotate", old = %report.old_key, new = %report.new_key, table = %report.table, "allowed");
    println!(
        "rotated master key {} to {} without re-encrypting data",
        report.old_key, report.new_key
    );
    println!(
        "key table {}: {} entries ({} wrapped keys found in {} objects and {} MFA secrets; {} carried over from the previous table; {} already under the new key)",
        report.table,
        report.entries,
        report.found,
        report.objects,
        report.mfa,
        report.carried,
        report.already_new
    );
    println!(
        "written to and read back from: {}; kept in the catalog",
        report.written.join(", ")
    );
    for s in &report.skipped {
        println!(
            "SKIPPED {s}: its copies still need the old master key {} until `trireme-controller key verify` passes there (it writes the table once the location is back)",
            report.old_key
        );
    }
    for d in &report.damaged {
        println!("damaged everywhere, skipped (readers skip it too): {d}");
    }
    if !report.supersedes.is_empty() {
        println!(
            "supersedes {} (removed by `key verify` once the new table is verified everywhere)",
            report.supersedes.join(", ")
        );
    }
    println!("next steps:");
    println!(
        "  1. run the controller on {} (the new key)",
        new_config.display()
    );
    println!(
        "  2. keep the old key until `trireme-controller key verify --config {}` (controller stopped) or a restore test passes",
        new_config.display()
    );
    println!(
        "  3. then destroy the old key ({}) and its recovery exports, and export the new one: `trireme-controller key export --config {} --out FILE`",
        old_cfg.key_source.describe(),
        new_config.display()
    );
    Ok(())
}

fn key_verify(config: &Path) -> anyhow::Result<()> {
    let cfg = ControllerConfig::load(config)?;
    let catalog = open_offline(&cfg, "trireme-controller key verify")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(async {
        let provider = cfg.key_source.build().await?;
        trireme_controller::rotation::verify(
            &catalog,
            &cfg.locations,
            provider,
            local_user(),
            chrono::Utc::now(),
        )
        .await
    })?;
    println!(
        "master key {}{}",
        report.key,
        report
            .table
            .as_ref()
            .map(|t| format!(" with key table {t}"))
            .unwrap_or_else(|| " (no key table for this key)".into())
    );
    for l in &report.locations {
        let table = match (&l.table, l.table_written) {
            (Some(t), true) => format!("{t} (was missing: written from the catalog)"),
            (Some(t), false) => t.clone(),
            (None, _) => "no key table".into(),
        };
        if l.problems.is_empty() {
            println!(
                "location {}: ok: {} stored keys in {} objects open; {table}",
                l.name, l.keys, l.objects
            );
        } else {
            println!("location {}: PROBLEMS ({table}):", l.name);
            for p in &l.problems {
                println!("  {p}");
            }
        }
    }
    println!("catalog: {} MFA secrets open", report.mfa);
    for p in &report.problems {
        println!("catalog: PROBLEM: {p}");
    }
    for r in &report.removed {
        println!("removed superseded key table {r}");
    }
    if report.ok() {
        println!(
            "verified: every stored key opens with master key {}",
            report.key
        );
        Ok(())
    } else {
        bail!(
            "master key {} does not open everything; keep the old key and see the problems above",
            report.key
        )
    }
}

fn mfa_reset(name: &str, config: &Path) -> anyhow::Result<()> {
    let config = ControllerConfig::load(config)?;
    let catalog = Catalog::open(config.data_dir.join("catalog"))?;
    if !catalog.mfa().remove(&name.to_string())? {
        bail!("{name} has no MFA enrollment");
    }
    catalog.audit().append(
        Event::actor(local_user(), "local", "mfa reset", name).from_place("local"),
        chrono::Utc::now(),
    )?;
    catalog.flush()?;
    println!("removed the MFA enrollment of {name}; they enroll again with `trireme mfa enroll`");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_has_an_example_that_parses() {
        command().debug_assert();
        let problems = trireme_net::cli_examples::check(&Cli::command(), EXAMPLES);
        assert!(problems.is_empty(), "{problems:#?}");
    }
}
