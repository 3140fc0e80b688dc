//! The `trireme` operator CLI: command-line arguments, and the commands that
//! talk to the controller's `OperatorService` over mTLS (`trireme cert` is in
//! [`cert`]). Dialling the controller is [`trireme_client::connect`].
//!
//! - [`output`]: tables, JSON, sizes and times, a list or one object;
//! - `view`: how each API message looks as a table row, a detail listing
//!   and a JSON object;
//! - `commands`: one function per command, with `audit` (and `mfa`),
//!   `prune` and `recovery` (restore tests and drills) in their own modules;
//! - `watch`: following a job to its end (`jobs watch`, `--wait`).
//!
//! The modules import one way: `commands` uses `audit`, `prune`, `recovery`,
//! `watch` and `view`; `recovery` uses `watch`; `watch` uses `view`; all of
//! them print with `output`, which uses only [`cert::Output`].
//!
//! Every command prints its result to stdout (`-o json` for scripts) and
//! errors to stderr as `error: …`; the exit code is 0 on success and 1 on any
//! error, including a command-line mistake, a watched job that failed or
//! was cancelled, and a `verify` that left copies it could not repair.

mod audit;
mod browse;
pub mod cert;
mod commands;
pub mod examples;
mod holds;
pub mod output;
mod prune;
mod recovery;
mod tokens;
mod view;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use trireme_client::{recovery_key, Settings, DEFAULT_CONTROLLER};
use trireme_proto::v1;

use crate::cert::CertCommand;

/// Trireme operator CLI: agents, sources, policies, backups, jobs, snapshots,
/// restores, locations and verification, through the controller (mTLS);
/// `trireme cert` manages the CA.
#[derive(Debug, Parser)]
#[command(name = "trireme", version, propagate_version = true)]
pub struct Cli {
    /// Options shared by every command.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How to reach the controller and how to print; accepted before or after
/// the subcommand.
///
/// `--name` and `--output` share their ids with `trireme cert issue --name`
/// and `trireme cert ls --output`, whose own arguments win there (clap does
/// not add a global argument to a subcommand that has one with its id, and
/// passes values between levels by id, so both must have the same type:
/// [`cert::Output`]).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// Controller address.
    #[arg(long, global = true, env = "TRIREME_CONTROLLER", value_name = "HOST:PORT",
          default_value = DEFAULT_CONTROLLER)]
    pub controller: String,
    /// Directory holding your certificate (NAME.pem, NAME.key) and ca.pem, as
    /// written by `trireme cert issue --out DIR`.
    #[arg(long, global = true, env = "TRIREME_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Your certificate's name in --tls-dir.
    #[arg(long, global = true, env = "TRIREME_CERT_NAME", value_name = "NAME")]
    pub name: Option<String>,
    /// Your certificate (PEM); overrides --tls-dir.
    #[arg(long, global = true, env = "TRIREME_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// Your private key (PEM, mode 0600); overrides --tls-dir.
    #[arg(long, global = true, env = "TRIREME_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The Trireme CA certificate (ca.pem); overrides --tls-dir.
    #[arg(long, global = true, env = "TRIREME_CA", value_name = "FILE")]
    pub ca: Option<PathBuf>,
    /// Name the controller's certificate must carry [default: the host of --controller].
    #[arg(long, global = true, env = "TRIREME_SERVER_NAME", value_name = "NAME")]
    pub server_name: Option<String>,
    /// Output format: tables for people, JSON for scripts.
    #[arg(short = 'o', long, global = true, env = "TRIREME_OUTPUT", default_value = "table",
          value_parser = output_parser())]
    pub output: cert::Output,
    /// Log filter for diagnostics on stderr (e.g. `debug`); also RUST_LOG.
    #[arg(long, global = true, env = "TRIREME_LOG", default_value = "warn")]
    pub log: String,
    /// The current code from your authenticator, for sensitive actions
    /// (policy apply, restore, restore-test run, drill run, catalog rebuild,
    /// key export, prune, snapshots forget and unhold) once you enrolled with `trireme mfa enroll`.
    #[arg(
        long,
        global = true,
        env = "TRIREME_TOTP",
        value_name = "CODE",
        hide_env_values = true
    )]
    pub totp: Option<String>,
}

impl GlobalArgs {
    /// How to reach the controller, for [`trireme_client::Controller::connect`].
    pub fn settings(&self) -> Settings {
        Settings {
            controller: self.controller.clone(),
            server_name: self.server_name.clone(),
            tls_dir: self.tls_dir.clone(),
            name: self.name.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            ca: self.ca.clone(),
            totp: self.totp.clone(),
        }
    }
}

/// `table` (alias `text`) or `json`, as the [`cert::Output`] that
/// `trireme cert ls --output` also uses.
fn output_parser() -> impl TypedValueParser<Value = cert::Output> {
    PossibleValuesParser::new([
        PossibleValue::new("table")
            .alias("text")
            .help("aligned columns"),
        PossibleValue::new("json").help("JSON: arrays for lists, one object per line for watch"),
    ])
    .map(|s| match s.as_str() {
        "json" => cert::Output::Json,
        _ => cert::Output::Text,
    })
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Agents the controller knows.
    #[command(subcommand)]
    Agents(AgentsCmd),
    /// Sources the agents report, and the policy covering each.
    #[command(subcommand)]
    Sources(SourcesCmd),
    /// Backup policies: schedules, modes, retention.
    #[command(subcommand)]
    Policy(PolicyCmd),
    /// Run a backup now.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Backup and restore jobs: list, show, cancel, watch.
    #[command(subcommand)]
    Jobs(JobsCmd),
    /// Snapshots in the catalog.
    #[command(subcommand)]
    Snapshots(SnapshotsCmd),
    /// Restore a snapshot onto an agent.
    Restore(RestoreArgs),
    /// Backup locations: reachability, contents, verification and repairs.
    #[command(subcommand)]
    Locations(LocationsCmd),
    /// Verify the copies at the locations now and repair damaged ones from
    /// good copies; exit 1 if any could not be repaired.
    Verify(VerifyArgs),
    /// Restore tests: restore a source's newest fully verified snapshot to
    /// its policy's staging target, check it, time it against the RTO.
    #[command(subcommand, name = "restore-test")]
    RestoreTest(RestoreTestCmd),
    /// DR drills: restore every source with a staging target, in
    /// dependency order, from one location, and write the report.
    #[command(subcommand)]
    Drill(DrillCmd),
    /// The controller's catalog.
    #[command(subcommand)]
    Catalog(CatalogCmd),
    /// The controller's health: agents, jobs, protection, problems, and who
    /// you are to it.
    Status,
    /// Print a shell completion script, e.g. `trireme completions bash > /etc/bash_completion.d/trireme`.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write man pages (trireme.1 and one per subcommand) into DIR, e.g.
    /// `trireme man /usr/local/share/man/man1`.
    Man {
        /// The directory (created if missing).
        dir: std::path::PathBuf,
    },
    /// Certificates: init-ca, issue, revoke, ls.
    #[command(subcommand)]
    Cert(CertCommand),
    /// The audit log: who did what, from where, allowed or refused; and the
    /// check of its hash chain.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// Your second factor (TOTP) for sensitive actions.
    #[command(subcommand)]
    Mfa(MfaCmd),
    /// The master key's recovery export (`export`, from the running
    /// controller) and its import on a new controller host (`import`, local).
    #[command(subcommand)]
    Key(KeyCmd),
    /// Apply retention: remove the snapshots no retention class keeps, and
    /// the data only they use, at every location that is up to date
    /// (`--dry-run` first to see what would go). A sensitive action: once
    /// you enrolled in MFA it needs --totp <code> (a dry run does not).
    Prune(PruneArgs),
    /// List a directory (or one file) inside a snapshot, without restoring it.
    Ls(LsArgs),
    /// What differs between two snapshots: `+` added, `-` removed, `M`
    /// content or type changed, `m` metadata only.
    Diff(DiffArgs),
    /// Find paths matching globs across snapshots: one line per version,
    /// with the snapshots holding it, newest first.
    Find(FindArgs),
    /// Files, bytes, deduplication and compression of one snapshot, or of
    /// every snapshot (of a source).
    Stats(StatsArgs),
    /// Write one file of a snapshot to standard output, or a directory's
    /// subtree as a tar archive (`trireme dump ID /etc > etc.tar`), read
    /// through the controller. A sensitive action (it reads backed-up data
    /// back, as a restore does): once you enrolled in MFA it needs --totp <code>.
    Dump(DumpArgs),
}

/// `trireme dump …`
#[derive(Debug, Args)]
pub struct DumpArgs {
    /// Snapshot id, or a unique prefix of it (at least 4 hex digits).
    pub snapshot: String,
    /// The file or directory, from the snapshot's root. A directory comes
    /// as a tar archive whose entries are named from the snapshot's root
    /// (`etc/app/x`), with modes, numeric owners, mtimes and links.
    pub path: String,
}

/// `trireme ls …`
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Snapshot id, or a unique prefix of it (at least 4 hex digits).
    pub snapshot: String,
    /// The directory (or file) to list, from the snapshot's root.
    #[arg(default_value = "/")]
    pub path: String,
    /// Everything below PATH, not only its children.
    #[arg(long, short = 'R')]
    pub recursive: bool,
    /// Mode, owner, size and modification time, like `ls -l`.
    #[arg(long, short = 'l')]
    pub long: bool,
    /// At most this many entries [default and most: 100000].
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// `trireme diff …`
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The older snapshot (id or unique prefix).
    pub from: String,
    /// The newer snapshot.
    pub to: String,
}

/// `trireme find …`
#[derive(Debug, Args)]
pub struct FindArgs {
    /// Glob(s): without `/` matched against names (`*.json`), with `/`
    /// against paths from the root (`/srv/**/export-*.json`).
    #[arg(required = true)]
    pub patterns: Vec<String>,
    /// Only this source's snapshots.
    #[arg(long, value_name = "AGENT/SOURCE", value_parser = parse_source_ref)]
    pub source: Option<SourceArg>,
    /// Only snapshots taken since this time (RFC 3339) or this long ago (`24h`).
    #[arg(long, value_name = "TIME|DURATION", value_parser = audit::parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only snapshots taken until this time (RFC 3339) or this long ago.
    #[arg(long, value_name = "TIME|DURATION", value_parser = audit::parse_since)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// `trireme stats …`
#[derive(Debug, Args)]
pub struct StatsArgs {
    /// One snapshot; without it, every snapshot (of --source, if given).
    #[arg(conflicts_with = "source")]
    pub snapshot: Option<String>,
    /// Only this source's snapshots.
    #[arg(long, value_name = "AGENT/SOURCE", value_parser = parse_source_ref)]
    pub source: Option<SourceArg>,
}

/// `trireme audit …`
#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// List audit entries, oldest first (the newest --limit of them).
    #[command(visible_alias = "list")]
    Ls {
        /// Only entries since this time (RFC 3339) or this long ago (`24h`, `7d`).
        #[arg(long, value_name = "TIME|DURATION", value_parser = audit::parse_since)]
        since: Option<chrono::DateTime<chrono::Utc>>,
        /// Only entries by this certificate name.
        #[arg(long, value_name = "NAME")]
        actor: Option<String>,
        /// At most this many entries [default: the controller's, 50].
        #[arg(long)]
        limit: Option<u32>,
        /// Print JSON (same as `-o json`).
        #[arg(long)]
        json: bool,
    },
    /// Walk the hash chain and compare it with the copies at the locations;
    /// exit 1 naming the first edited or missing entry.
    Verify,
}

/// `trireme mfa …`
#[derive(Debug, Subcommand)]
pub enum MfaCmd {
    /// Make a TOTP secret for your certificate name and show it once
    /// (replacing a confirmed one needs --totp with a current code).
    Enroll,
    /// Confirm the enrollment with the code your authenticator shows.
    Confirm {
        /// The 6-digit code.
        code: String,
    },
}

/// `trireme key …`
#[derive(Debug, Subcommand)]
pub enum KeyCmd {
    /// Write the controller's master key, wrapped by a recovery passphrase
    /// (argon2id), to a new file (mode 0600). A sensitive action: needs
    /// --totp when you enrolled. Local key file only (a KMS keeps its key).
    Export {
        /// The new file.
        #[arg(long)]
        out: std::path::PathBuf,
        /// Read the passphrase from the first line of this file (not
        /// readable by others); else TRIREME_RECOVERY_PASSPHRASE; else a prompt.
        #[arg(long)]
        passphrase_file: Option<std::path::PathBuf>,
    },
    /// On a new controller host, before it starts: unwrap an export into a
    /// new key file (mode 0600); the same as `trireme-controller key import`.
    Import {
        /// The export file.
        #[arg(long = "in")]
        input: std::path::PathBuf,
        /// The key file to create (the new controller's `key_file`).
        #[arg(long)]
        key_file: std::path::PathBuf,
        /// As for `export`.
        #[arg(long)]
        passphrase_file: Option<std::path::PathBuf>,
    },
}

/// `trireme prune …`
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Only show what would be removed; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Only this source's snapshots [default: every source].
    #[arg(long, value_name = "AGENT/SOURCE", value_parser = parse_source_ref)]
    pub source: Option<SourceArg>,
    /// Also list the snapshots kept, with why each stays (a dry run always
    /// lists them).
    #[arg(long)]
    pub show_kept: bool,
}

/// `trireme agents …`
#[derive(Debug, Subcommand)]
pub enum AgentsCmd {
    /// List agents: connected or not, version, sources.
    #[command(visible_alias = "list")]
    Ls,
    /// Bootstrap tokens: an agent without a certificate enrolls with one
    /// and gets its certificate from the controller's enrollment listener.
    #[command(subcommand)]
    Token(TokenCmd),
}

/// `trireme agents token …`
#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Make a token (printed once; the controller keeps only its hash). A
    /// sensitive action: once you enrolled in MFA it needs --totp <code>.
    Create {
        /// The one agent name it may enroll (may replace that agent's certificate).
        #[arg(
            long,
            conflicts_with = "name_glob",
            required_unless_present = "name_glob"
        )]
        agent: Option<String>,
        /// Agent names it may enroll, e.g. `node-*` for a DaemonSet (never a
        /// name that is registered or was enrolled before).
        #[arg(long)]
        name_glob: Option<String>,
        /// How long it is valid (at most 30 days).
        #[arg(long, default_value = "1h")]
        ttl: String,
        /// How many enrollments it allows.
        #[arg(long, default_value_t = 1)]
        uses: u32,
    },
    /// List tokens: scope, state, uses left, expiry, who enrolled.
    #[command(visible_alias = "list")]
    Ls,
    /// Revoke a token by id (certificates it got stay valid). Needs --totp
    /// once you enrolled in MFA.
    Revoke {
        /// The token's id (`trireme agents token ls`).
        id: String,
    },
}

/// `trireme sources …`
#[derive(Debug, Subcommand)]
pub enum SourcesCmd {
    /// List sources.
    #[command(visible_alias = "list")]
    Ls {
        /// Only this agent's sources.
        #[arg(long)]
        agent: Option<String>,
    },
}

/// `trireme policy …`
#[derive(Debug, Subcommand)]
pub enum PolicyCmd {
    /// Apply a policy file (TOML, `[[policy]]` tables); the controller checks it.
    Apply {
        /// The policy file; `-` reads standard input.
        #[arg(short = 'f', long = "file", value_name = "FILE")]
        file: PathBuf,
    },
    /// List the policies in force and their next runs.
    #[command(visible_alias = "list")]
    Ls,
}

/// `trireme backup …`
#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// Start a backup of one source now.
    Run {
        /// The source, as AGENT/SOURCE (see `trireme sources ls`).
        #[arg(value_name = "AGENT/SOURCE", value_parser = parse_source_ref)]
        source: SourceArg,
        /// Read everything instead of only what changed since the last snapshot.
        #[arg(long)]
        full: bool,
        /// Follow the job until it ends; exit 1 if it fails.
        #[arg(long)]
        wait: bool,
        /// Tag the snapshot it makes (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
    },
}

/// `trireme restore-test …`
#[derive(Debug, Subcommand)]
pub enum RestoreTestCmd {
    /// Run a restore test of one source now.
    Run {
        /// The source, as AGENT/SOURCE; its policy names the staging target.
        #[arg(value_name = "AGENT/SOURCE", value_parser = parse_source_ref)]
        source: SourceArg,
        /// Follow it to the end and print the result; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
    },
    /// Past restore tests (and drill steps), newest first.
    #[command(visible_alias = "list")]
    Ls {
        /// Only this source's.
        #[arg(value_name = "AGENT/SOURCE", value_parser = parse_source_ref)]
        source: Option<SourceArg>,
        /// At most this many.
        #[arg(long)]
        limit: Option<u32>,
    },
}

/// `trireme catalog …`
#[derive(Debug, Subcommand)]
pub enum CatalogCmd {
    /// Read every snapshot at one location into the catalog: for a new
    /// controller (same master key) after the old one's state was lost.
    Rebuild {
        /// The location to read (see `trireme locations ls`).
        #[arg(long = "from", value_name = "LOCATION")]
        from: String,
    },
}

/// `trireme drill …`
#[derive(Debug, Subcommand)]
pub enum DrillCmd {
    /// Start a drill.
    Run {
        /// Read only from this location (see `trireme locations ls`).
        #[arg(long)]
        location: Option<String>,
        /// Follow it to the end and print the report; exit 1 if it failed.
        #[arg(long)]
        wait: bool,
        /// Who does what, e.g. `--role incident_commander=alice` (repeat;
        /// merged over the controller's [drills] roles).
        #[arg(long = "role", value_name = "ROLE=NAME")]
        roles: Vec<String>,
        /// Where the team talks during the drill (default: [drills] channel).
        #[arg(long)]
        channel: Option<String>,
        /// Who takes part (repeat; default: [drills] participants).
        #[arg(long = "participant", value_name = "NAME")]
        participants: Vec<String>,
    },
    /// Record lessons learned (and participants) on a drill: the report's
    /// last checklist item.
    Annotate {
        /// The drill id.
        id: String,
        /// What was learned (repeat for several).
        #[arg(long = "lessons", value_name = "TEXT")]
        lessons: Vec<String>,
        /// Someone else who took part (repeat).
        #[arg(long = "participant", value_name = "NAME")]
        participants: Vec<String>,
    },
    /// Past drills, newest first.
    #[command(visible_alias = "list")]
    Ls,
    /// A drill's report (Markdown; `--html` for a web page).
    Show {
        /// The drill id (or a prefix of 8+ characters).
        id: String,
        /// Print the report as HTML.
        #[arg(long)]
        html: bool,
    },
}

/// `trireme jobs …`
#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// List jobs, newest first.
    #[command(visible_alias = "list")]
    Ls {
        /// Only jobs run by this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Only jobs of this source (its name, without the agent).
        #[arg(long)]
        source: Option<String>,
        /// Only jobs in this state.
        #[arg(long, value_enum)]
        state: Option<JobStateArg>,
        /// At most this many jobs [default: the controller's, 50].
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one job: state, progress, result.
    Show {
        /// Job id, or a unique prefix of it.
        id: String,
    },
    /// Cancel a queued or running job.
    Cancel {
        /// Job id, or a unique prefix of it.
        id: String,
    },
    /// Follow a job until it ends; exit 0 if it succeeds, 1 otherwise.
    Watch {
        /// Job id, or a unique prefix of it.
        id: String,
    },
}

/// A job state, for `jobs ls --state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobStateArg {
    /// Waiting for its agent.
    Queued,
    /// Assigned to or running on its agent.
    Running,
    /// Finished well.
    Succeeded,
    /// Finished with an error.
    Failed,
    /// Stopped by an operator.
    Cancelled,
}

impl From<JobStateArg> for v1::JobState {
    fn from(s: JobStateArg) -> Self {
        match s {
            JobStateArg::Queued => v1::JobState::Queued,
            JobStateArg::Running => v1::JobState::Running,
            JobStateArg::Succeeded => v1::JobState::Succeeded,
            JobStateArg::Failed => v1::JobState::Failed,
            JobStateArg::Cancelled => v1::JobState::Cancelled,
        }
    }
}

/// `trireme snapshots …`
#[derive(Debug, Subcommand)]
pub enum SnapshotsCmd {
    /// List snapshots, newest first (filters combine).
    #[command(visible_alias = "list")]
    Ls {
        /// Only this source's snapshots, as AGENT/SOURCE.
        #[arg(value_name = "AGENT/SOURCE", value_parser = parse_source_ref)]
        source: Option<SourceArg>,
        #[command(flatten)]
        filter: SnapshotFilterArgs,
        /// At most this many snapshots [default: the controller's, 50].
        #[arg(long)]
        limit: Option<u32>,
    },
    /// Show one snapshot: counters, copies and their verification, hold, tags.
    Show {
        /// Snapshot id, or a unique prefix of it (at least 4 hex digits).
        id: String,
    },
    /// Keep a snapshot, and every snapshot it depends on, out of every
    /// prune (and refuse to forget it) until `unhold` or --until.
    Hold {
        /// Snapshot id, or a unique prefix of it.
        id: String,
        /// Why (required), e.g. a case number; shown in listings and prune.
        #[arg(long)]
        reason: String,
        /// When the hold ends by itself: a time (RFC 3339) or a duration
        /// from now (`90d`) [default: until unheld].
        #[arg(long, value_name = "TIME|DURATION", value_parser = parse_until)]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Lift a snapshot's hold (a sensitive action: needs --totp once you
    /// enrolled in MFA).
    Unhold {
        /// Snapshot id, or a unique prefix of it.
        id: String,
    },
    /// Add or remove a snapshot's tags.
    Tag {
        /// Snapshot id, or a unique prefix of it.
        id: String,
        /// Add this tag (repeatable).
        #[arg(long, value_name = "TAG")]
        add: Vec<String>,
        /// Remove this tag (repeatable).
        #[arg(long, value_name = "TAG")]
        remove: Vec<String>,
    },
    /// Remove one snapshot now: its manifest at every location and its
    /// catalog record; the data only it used is reclaimed by the next
    /// prune. Refused for a held snapshot, one another snapshot needs, and
    /// its source's last verified snapshot. A sensitive action: needs
    /// --totp once you enrolled in MFA.
    Forget {
        /// Snapshot id, or a unique prefix of it.
        id: String,
    },
}

/// Filters of snapshot listings.
#[derive(Debug, Clone, Default, Args)]
pub struct SnapshotFilterArgs {
    /// Only snapshots with this tag (repeatable: all of them).
    #[arg(long = "tag", value_name = "TAG")]
    pub tags: Vec<String>,
    /// Only this host's (agent's) snapshots.
    #[arg(long, visible_alias = "agent", value_name = "AGENT")]
    pub host: Option<String>,
    /// Only this source: a source name (on any agent) or AGENT/SOURCE.
    #[arg(long = "source", value_name = "[AGENT/]SOURCE")]
    pub source_name: Option<String>,
    /// Only snapshots taken since this time (RFC 3339) or this long ago (`24h`).
    #[arg(long, value_name = "TIME|DURATION", value_parser = audit::parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// Only snapshots taken until this time (RFC 3339) or this long ago.
    #[arg(long, value_name = "TIME|DURATION", value_parser = audit::parse_since)]
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// A time (RFC 3339) or a duration from now.
fn parse_until(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&chrono::Utc));
    }
    match humantime::parse_duration(s) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| chrono::Utc::now().checked_add_signed(d))
            .ok_or_else(|| format!("{s:?} reaches too far ahead")),
        Err(_) => Err(format!(
            "{s:?} is neither a time nor a duration; write e.g. 2027-03-01T00:00:00Z or 90d"
        )),
    }
}

/// `trireme locations …`
#[derive(Debug, Subcommand)]
pub enum LocationsCmd {
    /// List locations: reachable or not, contents, last sync and
    /// verification, problems found and repaired.
    #[command(visible_alias = "list")]
    Ls,
}

/// `trireme verify …`
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Re-read and re-hash every object instead of only checking that it is
    /// there (slow: reads everything back from the locations).
    #[arg(long)]
    pub deep: bool,
    /// Only this location [default: every location].
    #[arg(long, value_name = "NAME")]
    pub location: Option<String>,
    /// Also report on this snapshot's copies (id, or a unique prefix of it).
    #[arg(long, value_name = "ID")]
    pub snapshot: Option<String>,
}

/// `trireme restore …`
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Snapshot id, or a unique prefix of it (not with --platform).
    #[arg(required_unless_present = "platform", conflicts_with = "platform")]
    pub snapshot: Option<String>,
    /// Where to restore, AGENT:TARGET: `web-2:/srv/restore` (an empty or
    /// new directory, or a new file for a dump), or
    /// `web-2:source:redis-staging` (into the datastore of that agent's
    /// source, which is then checked against the backup). `:TARGET`
    /// restores on the agent that made the snapshot. With --platform:
    /// `staging` (each source's restore_test target) or `in-place` (each
    /// source itself).
    #[arg(long, value_name = "AGENT:TARGET", value_parser = parse_to_arg)]
    pub to: String,
    /// Follow the job (or the platform restore) until it ends; exit 1 if it
    /// fails.
    #[arg(long)]
    pub wait: bool,
    /// Restore the whole platform: every source with a target, one after
    /// the other in dependency order (TiDB, MongoDB, Kafka, Redis, the
    /// rest), stopping at the first failure; writes a report like a drill's
    /// (`trireme drill show ID`).
    #[arg(long, conflicts_with_all = ["path", "include", "exclude", "overwrite"])]
    pub platform: bool,
    /// With --platform: read only from this location.
    #[arg(long = "from", value_name = "LOCATION", requires = "platform")]
    pub from: Option<String>,
    /// With --platform: each source's newest snapshot taken at or before
    /// this time (RFC 3339) or this long ago (`2h`).
    #[arg(long, value_name = "TIME|DURATION", value_parser = audit::parse_since, requires = "platform")]
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    #[command(flatten)]
    pub part: RestorePart,
}

/// Which part of a tree snapshot `trireme restore` writes, and over what.
#[derive(Debug, Clone, Default, Args)]
pub struct RestorePart {
    /// Restore only this subtree (a path from the snapshot's root, e.g.
    /// `var/lib/app`); it keeps its place under the target.
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// Restore only entries matching this glob (repeatable). With a `/` it
    /// is matched from the snapshot's root (`/etc/*.conf`), without one
    /// against every name (`*.log`); a matching directory comes whole.
    #[arg(long, value_name = "GLOB")]
    pub include: Vec<String>,
    /// Leave out entries matching this glob (repeatable; wins over
    /// --include).
    #[arg(long, value_name = "GLOB")]
    pub exclude: Vec<String>,
    /// Restore into a directory that already holds files: `never` keeps
    /// every existing file, `if-changed` replaces files whose size or mtime
    /// differ, `always` replaces them all. Nothing is deleted and no link
    /// is followed. Without it the target must be new or empty.
    #[arg(long, value_name = "MODE", value_parser = ["never", "if-changed", "always"])]
    pub overwrite: Option<String>,
}

/// A source named on the command line as `AGENT/SOURCE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceArg {
    /// The agent's name.
    pub agent: String,
    /// The source's name on that agent.
    pub source: String,
}

impl From<SourceArg> for v1::SourceRef {
    fn from(s: SourceArg) -> Self {
        v1::SourceRef {
            agent: s.agent,
            source: s.source,
        }
    }
}

/// `AGENT/SOURCE`, split at the first `/` (agent names have none).
fn parse_source_ref(s: &str) -> Result<SourceArg, String> {
    match s.split_once('/') {
        Some((agent, source)) if !agent.is_empty() && !source.is_empty() => Ok(SourceArg {
            agent: agent.to_string(),
            source: source.to_string(),
        }),
        _ => Err(format!(
            "{s:?} is not AGENT/SOURCE; write the agent and the source name with a slash, \
             e.g. web-1/postgres-main (see `trireme sources ls`)"
        )),
    }
}

/// Where `restore --to` restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreTo {
    /// The agent that restores; empty: the snapshot's own agent.
    pub agent: String,
    /// The directory or datastore target on that agent.
    pub target: String,
}

/// `--to` as typed: `AGENT:TARGET`, or `staging` / `in-place` (for
/// `--platform`), checked before anything connects.
fn parse_to_arg(s: &str) -> Result<String, String> {
    if s == "staging" || s == "in-place" {
        return Ok(s.to_string());
    }
    parse_restore_to(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("{e}; with --platform: --to staging or --to in-place"))
}

/// `AGENT:TARGET`, split at the first `:` (so the target may hold colons).
///
/// # Errors
/// No `:`, or nothing after it, with what to write.
pub fn parse_restore_to(s: &str) -> Result<RestoreTo, String> {
    let hint = "write the agent, a colon and the target on that agent, e.g. \
                --to web-2:/srv/restore (or --to :/srv/restore for the snapshot's own agent)";
    match s.split_once(':') {
        None => Err(format!("{s:?} has no ':'; {hint}")),
        Some((_, "")) => Err(format!("{s:?} has no target after the ':'; {hint}")),
        Some((agent, target)) => Ok(RestoreTo {
            agent: agent.to_string(),
            target: target.to_string(),
        }),
    }
}

/// Run one command. Errors are for [`exit_code`] to print.
///
/// # Errors
/// Anything that went wrong, already worded for the operator; also a watched
/// job that did not succeed.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let Cli { global, command } = cli;
    match command {
        Command::Cert(cmd) => cert::run(cmd),
        Command::Key(KeyCmd::Import {
            input,
            key_file,
            passphrase_file,
        }) => {
            use anyhow::Context as _;
            let text = std::fs::read_to_string(&input)
                .with_context(|| format!("reading the export {}", input.display()))?;
            let pass = recovery_key::ask_passphrase(passphrase_file.as_deref(), false)?;
            let id = recovery_key::import(&input.display().to_string(), &text, &pass, &key_file)?;
            output::println(&format!(
                "restored master key {id} to {}; point the new controller's key_file at it",
                key_file.display()
            ))
        }
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "trireme", &mut script);
            output::println(String::from_utf8_lossy(&script).trim_end())
        }
        Command::Man { dir } => {
            let n = write_man_pages(crate::command(), &dir)?;
            output::println(&format!("wrote {n} man pages to {}", dir.display()))
        }
        command => commands::run(&global, command).await,
    }
}

/// The command line's definition with every command's examples
/// ([`examples::EXAMPLES`]) at the end of its help and man page.
pub fn command() -> clap::Command {
    trireme_net::cli_examples::with_examples(Cli::command(), examples::EXAMPLES)
}

/// Parse the command line. Help and version exit 0; mistakes are printed
/// (`error: …`, with usage) and exit 1, like every other error.
pub fn parse() -> Cli {
    command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m))
        .unwrap_or_else(|e| {
            let code = if e.use_stderr() { 1 } else { 0 };
            let _ = e.print();
            std::process::exit(code)
        })
}

/// Print an error as `error: …` on stderr and turn the result into the exit code.
pub fn exit_code(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<output::BrokenPipe>().is_none() {
                eprintln!("error: {e:#}");
            }
            match trireme_client::Failure::of(&e) {
                Some(f) => ExitCode::from(f.exit_code()),
                None => ExitCode::FAILURE,
            }
        }
    }
}

/// Write the man pages of `cmd` and every subcommand into `dir`: how many.
///
/// # Errors
/// When `dir` cannot be created or written.
pub fn write_man_pages(cmd: clap::Command, dir: &std::path::Path) -> anyhow::Result<usize> {
    use anyhow::Context;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    trireme_net::cli_examples::write_man_pages(cmd, dir, examples::EXAMPLES)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    Ok(std::fs::read_dir(dir)?
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "1"))
        })
        .count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_to_splits_at_the_first_colon() {
        assert_eq!(
            parse_restore_to("web-2:/srv/restore").unwrap(),
            RestoreTo {
                agent: "web-2".into(),
                target: "/srv/restore".into()
            }
        );
        assert_eq!(
            parse_restore_to("db-1:tidb://10.0.0.5:4000").unwrap(),
            RestoreTo {
                agent: "db-1".into(),
                target: "tidb://10.0.0.5:4000".into()
            }
        );
        assert_eq!(parse_restore_to(":/x").unwrap().agent, "");
        let err = parse_restore_to("nocolon").unwrap_err();
        assert!(
            err.contains("no ':'") && err.contains("--to web-2:/srv/restore"),
            "{err}"
        );
        assert!(parse_restore_to("web-2:")
            .unwrap_err()
            .contains("no target"));
    }

    #[test]
    fn source_ref_splits_at_the_first_slash() {
        assert_eq!(
            parse_source_ref("web-1/www/static").unwrap(),
            SourceArg {
                agent: "web-1".into(),
                source: "www/static".into()
            }
        );
        for bad in ["web-1", "/www", "web-1/", ""] {
            let err = parse_source_ref(bad).unwrap_err();
            assert!(err.contains("AGENT/SOURCE"), "{bad}: {err}");
        }
    }

    #[test]
    fn command_line_definition_is_consistent() {
        // clap's own checks, including the ids shared with `trireme cert`.
        Cli::command().debug_assert();
        command().debug_assert();
    }

    #[test]
    fn every_command_has_an_example_that_parses() {
        let problems = trireme_net::cli_examples::check(&Cli::command(), examples::EXAMPLES);
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn global_options_go_before_or_after_the_subcommand() {
        let a = Cli::try_parse_from(["trireme", "-o", "json", "jobs", "ls"]).unwrap();
        let b = Cli::try_parse_from(["trireme", "jobs", "ls", "--output", "json"]).unwrap();
        assert_eq!(a.global.output, cert::Output::Json);
        assert_eq!(b.global.output, cert::Output::Json);
        let c = Cli::try_parse_from(["trireme", "status", "--controller", "ctl:1"]).unwrap();
        assert_eq!(c.global.controller, "ctl:1");
    }

    #[test]
    fn global_options_are_the_connection_settings() {
        // Environment variables would leak into these parses.
        if std::env::vars_os().any(|(k, _)| k.to_string_lossy().starts_with("TRIREME_")) {
            return;
        }
        let c = Cli::try_parse_from([
            "trireme",
            "status",
            "--controller",
            "ctl:1",
            "--server-name",
            "ctl.example",
            "--tls-dir",
            "/t",
            "--name",
            "alice",
            "--ca",
            "/etc/ca.pem",
            "--totp",
            "123456",
        ])
        .unwrap();
        assert_eq!(
            c.global.settings(),
            Settings {
                controller: "ctl:1".into(),
                server_name: Some("ctl.example".into()),
                tls_dir: Some("/t".into()),
                name: Some("alice".into()),
                cert: None,
                key: None,
                ca: Some("/etc/ca.pem".into()),
                totp: Some("123456".into()),
            }
        );
        let c = Cli::try_parse_from(["trireme", "status", "--cert", "c", "--key", "k"]).unwrap();
        let s = c.global.settings();
        assert_eq!(s.controller, DEFAULT_CONTROLLER);
        assert_eq!((s.cert, s.key), (Some("c".into()), Some("k".into())));
    }

    #[test]
    fn verify_takes_its_scope() {
        let c = Cli::try_parse_from([
            "trireme",
            "verify",
            "--deep",
            "--location",
            "offsite",
            "--snapshot",
            "5eed",
        ])
        .unwrap();
        match c.command {
            Command::Verify(VerifyArgs {
                deep,
                location,
                snapshot,
            }) => {
                assert!(deep);
                assert_eq!(location.as_deref(), Some("offsite"));
                assert_eq!(snapshot.as_deref(), Some("5eed"));
            }
            other => panic!("{other:?}"),
        }
        let c = Cli::try_parse_from(["trireme", "verify"]).unwrap();
        assert!(matches!(
            c.command,
            Command::Verify(VerifyArgs {
                deep: false,
                location: None,
                snapshot: None
            })
        ));
        let c = Cli::try_parse_from(["trireme", "locations", "list"]).unwrap();
        assert!(matches!(c.command, Command::Locations(LocationsCmd::Ls)));
    }

    #[test]
    fn cert_keeps_its_own_name_and_output() {
        let c = Cli::try_parse_from([
            "trireme", "cert", "issue", "--dir", "d", "--role", "viewer", "--name", "eve",
        ])
        .unwrap();
        assert!(matches!(c.command, Command::Cert(CertCommand::Issue(_))));
        let c = Cli::try_parse_from(["trireme", "cert", "ls", "--dir", "d", "--output", "json"])
            .unwrap();
        assert!(matches!(
            c.command,
            Command::Cert(CertCommand::Ls {
                output: cert::Output::Json,
                ..
            })
        ));
    }
}
