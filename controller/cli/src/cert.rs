//! `trireme cert ...`: the CA tooling on the command line. The work is done
//! by [`trireme_net::tls::ca`]; this module parses arguments and prints.

use std::io::Write;
use std::path::PathBuf;

use clap::{Args, Subcommand, ValueEnum};
use trireme_net::tls::ca::{self, IssuedCert, RevokeTarget};
use trireme_net::Role;

/// Manage the Trireme CA: create it, issue and revoke certificates, list them.
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Create a new CA in --dir: ca.pem, ca.key (0600), an empty crl.pem and
    /// issued.json. Refuses to overwrite an existing CA.
    InitCa {
        /// CA directory (created 0700 when missing).
        #[arg(long, env = "TRIREME_CA_DIR")]
        dir: PathBuf,
    },
    /// Issue a certificate: <out>/<name>.pem and <out>/<name>.key (0600).
    Issue(IssueArgs),
    /// Renew a certificate before it expires: a new key and certificate with
    /// the same name and role, written over <out>/<name>.pem and .key (the
    /// controller reloads its own within 5 s, agents at their next
    /// connection). The old one stays valid until it expires or is revoked.
    Renew(RenewArgs),
    /// Revoke certificates and sign a new crl.pem (servers pick it up without a restart).
    Revoke(RevokeArgs),
    /// List the certificates this CA issued.
    Ls {
        /// CA directory.
        #[arg(long, env = "TRIREME_CA_DIR")]
        dir: PathBuf,
        /// Output format.
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
}

/// Arguments of `trireme cert issue`.
#[derive(Debug, Args)]
pub struct IssueArgs {
    /// CA directory.
    #[arg(long, env = "TRIREME_CA_DIR")]
    dir: PathBuf,
    /// Role written into the certificate: agent, operator, viewer, or
    /// controller (the controller's server certificate).
    #[arg(long, value_parser = parse_role)]
    role: Role,
    /// Name: subject CN and DNS name (the agent's name, the operator's user
    /// name, or the controller's host name).
    #[arg(long)]
    name: String,
    /// Validity in days from now.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Directory for the certificate and key (default: the CA directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Arguments of `trireme cert renew`.
#[derive(Debug, Args)]
pub struct RenewArgs {
    /// CA directory.
    #[arg(long, env = "TRIREME_CA_DIR")]
    dir: PathBuf,
    /// The certificate's name (as in `trireme cert ls`).
    #[arg(long)]
    name: String,
    /// Validity of the new certificate in days from now.
    #[arg(long, default_value_t = 365)]
    days: u32,
    /// Directory holding <name>.pem and <name>.key (default: the CA directory).
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Arguments of `trireme cert revoke`.
#[derive(Debug, Args)]
#[command(group = clap::ArgGroup::new("which").required(true).args(["serial", "name"]))]
pub struct RevokeArgs {
    /// CA directory.
    #[arg(long, env = "TRIREME_CA_DIR")]
    dir: PathBuf,
    /// Serial number (hex, as shown by `trireme cert ls`).
    #[arg(long)]
    serial: Option<String>,
    /// Revoke every valid certificate with this name.
    #[arg(long)]
    name: Option<String>,
}

/// Output format of `trireme cert ls`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table for people.
    Text,
    /// A JSON array for scripts.
    Json,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse()
}

/// Run one `trireme cert` command, printing to stdout.
///
/// # Errors
/// The CA operation's error, for `main` to print.
pub fn run(cmd: CertCommand) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match cmd {
        CertCommand::InitCa { dir } => {
            let info = ca::init_ca(&dir)?;
            writeln!(
                out,
                "created CA {:?} (valid until {})\n  certificate: {} (give it to every controller, agent and operator)\n  key:         {} (keep it secret; offline if you can)\n  CRL:         {}",
                info.name,
                date(&info.not_after),
                info.cert_path.display(),
                info.key_path.display(),
                info.crl_path.display()
            )?;
        }
        CertCommand::Issue(a) => {
            let out_dir = a.out.unwrap_or_else(|| a.dir.clone());
            let issued = ca::issue(&a.dir, a.role, &a.name, a.days, &out_dir)?;
            writeln!(
                out,
                "issued {} certificate {:?}, serial {}, valid until {}\n  certificate: {}\n  key:         {}",
                issued.cert.role,
                issued.cert.name,
                issued.cert.serial,
                date(&issued.cert.not_after),
                issued.cert_path.display(),
                issued.key_path.display()
            )?;
        }
        CertCommand::Renew(a) => {
            let out_dir = a.out.unwrap_or_else(|| a.dir.clone());
            let r = ca::renew(&a.dir, &a.name, a.days, &out_dir)?;
            writeln!(
                out,
                "renewed {} certificate {:?}: serial {}, valid until {}\n  certificate: {}\n  key:         {}\n  replaced serial {} (valid until {}; once every holder uses the new files: trireme cert revoke --dir {} --serial {})",
                r.issued.cert.role,
                r.issued.cert.name,
                r.issued.cert.serial,
                date(&r.issued.cert.not_after),
                r.issued.cert_path.display(),
                r.issued.key_path.display(),
                r.replaced.serial,
                date(&r.replaced.not_after),
                a.dir.display(),
                r.replaced.serial
            )?;
        }
        CertCommand::Revoke(a) => {
            let target = match (a.serial, a.name) {
                (Some(s), _) => RevokeTarget::Serial(s),
                (None, Some(n)) => RevokeTarget::Name(n),
                (None, None) => anyhow::bail!("give --serial or --name"),
            };
            let revoked = ca::revoke(&a.dir, &target)?;
            for c in &revoked {
                writeln!(
                    out,
                    "revoked {} certificate {:?}, serial {}",
                    c.role, c.name, c.serial
                )?;
            }
            writeln!(
                out,
                "wrote {} (servers following it refuse these certificates from their next connection or RPC; copy it to servers that use another path)",
                a.dir.join(ca::CRL_FILE).display()
            )?;
        }
        CertCommand::Ls { dir, output } => {
            let certs = ca::list(&dir)?;
            match output {
                Output::Json => {
                    let rows: Vec<serde_json::Value> = certs.iter().map(json_row).collect();
                    serde_json::to_writer_pretty(&mut out, &rows)?;
                    writeln!(out)?;
                }
                Output::Text => print_table(&mut out, &certs)?,
            }
        }
    }
    Ok(())
}

fn json_row(c: &IssuedCert) -> serde_json::Value {
    let mut v = serde_json::to_value(c).expect("certificate entry serializes");
    v["status"] = c.status().into();
    v
}

fn print_table(out: &mut impl Write, certs: &[IssuedCert]) -> std::io::Result<()> {
    if certs.is_empty() {
        return writeln!(out, "no certificates issued yet");
    }
    let w = certs.iter().map(|c| c.name.len()).max().unwrap_or(4).max(4);
    writeln!(
        out,
        "{:<32}  {:<w$}  {:<10}  {:<20}  STATUS",
        "SERIAL", "NAME", "ROLE", "NOT AFTER"
    )?;
    for c in certs {
        writeln!(
            out,
            "{:<32}  {:<w$}  {:<10}  {:<20}  {}",
            c.serial,
            c.name,
            c.role.as_str(),
            date(&c.not_after),
            c.status()
        )?;
    }
    Ok(())
}

fn date(t: &time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}
