//! Reaching the controller: which certificate files, which address and
//! server name, the mTLS channel, and gRPC statuses as operator-readable
//! errors. The messages name the `trireme` CLI's flags and variables
//! (`--tls-dir`, `TRIREME_TLS_DIR`, …), which [`Settings`] mirrors.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Status};
use trireme_net::tls::ca::CA_CERT_FILE;
use trireme_net::tls::{client_config, connect, ClientTls, TlsFiles};
use trireme_net::Role;
use trireme_proto::v1::bootstrap_token_service_client::BootstrapTokenServiceClient;
use trireme_proto::v1::health_client::HealthClient;
use trireme_proto::v1::operator_service_client::OperatorServiceClient;
use trireme_proto::TOTP_HEADER;

/// The controller address dialled when none is given (`--controller`).
pub const DEFAULT_CONTROLLER: &str = "localhost:7443";

/// How to reach the controller: the `trireme` CLI's global options
/// `--controller`, `--server-name`, `--tls-dir`, `--name`, `--cert`,
/// `--key`, `--ca` and `--totp`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// Controller address, `HOST[:PORT]` (an `https://` prefix and a
    /// trailing slash are allowed; the port defaults to
    /// [`DEFAULT_CONTROLLER`]'s).
    pub controller: String,
    /// Name the controller's certificate must carry; `None`: the host of
    /// `controller`.
    pub server_name: Option<String>,
    /// Directory holding `NAME.pem`, `NAME.key` and `ca.pem`.
    pub tls_dir: Option<PathBuf>,
    /// The certificate's name in `tls_dir`.
    pub name: Option<String>,
    /// The client certificate (PEM); overrides `tls_dir`.
    pub cert: Option<PathBuf>,
    /// The client's private key (PEM); overrides `tls_dir`.
    pub key: Option<PathBuf>,
    /// The Trireme CA certificate; overrides `tls_dir`.
    pub ca: Option<PathBuf>,
    /// The current TOTP code, for the sensitive RPCs.
    pub totp: Option<String>,
}

/// How to get an operator certificate, appended to certificate errors.
const ISSUE_HINT: &str = "an operator certificate is issued with \
     `trireme cert issue --dir <ca-dir> --role operator --name <you> --out <dir>`";

/// A connection to the controller.
#[derive(Debug, Clone)]
pub struct Controller {
    /// The `--controller` address, for messages.
    pub addr: String,
    /// `trireme.v1.OperatorService`.
    pub operator: OperatorServiceClient<Channel>,
    /// `trireme.v1.Health`.
    pub health: HealthClient<Channel>,
    /// `trireme.v1.BootstrapTokenService`.
    pub tokens: BootstrapTokenServiceClient<Channel>,
    /// `--totp` / `TRIREME_TOTP`, for the sensitive RPCs.
    pub totp: Option<String>,
}

impl Controller {
    /// Dial the controller named by `global` over mTLS.
    ///
    /// # Errors
    /// Missing certificate settings, unusable certificate files, or an
    /// unreachable controller, each saying what to fix.
    pub async fn connect(global: &Settings) -> anyhow::Result<Self> {
        let addr = normalize_addr(&global.controller);
        let files = tls_files(global)?;
        let config = client_config(&files).context("loading your client certificate")?;
        let server_name = match &global.server_name {
            Some(n) => n.clone(),
            None => host_of(&addr).to_string(),
        };
        let tls = ClientTls {
            config: Arc::new(config),
            server_name,
            server_role: Some(Role::Controller),
        };
        let channel = connect(&addr, tls)
            .await
            .map_err(|e| connect_error(&addr, &e.to_string()))?;
        Ok(Self {
            operator: OperatorServiceClient::new(channel.clone()),
            tokens: BootstrapTokenServiceClient::new(channel.clone()),
            health: HealthClient::new(channel),
            addr,
            totp: global.totp.clone(),
        })
    }

    /// An RPC's error status as an operator-readable error.
    pub fn error(&self, status: Status) -> anyhow::Error {
        status_error(&self.addr, &status)
    }
}

/// The certificate, key and CA files from `--cert/--key/--ca`, falling back
/// to `--tls-dir` + `--name`.
///
/// # Errors
/// When a file is not given either way, naming the flags and variables.
pub fn tls_files(g: &Settings) -> anyhow::Result<TlsFiles> {
    let in_dir = match (&g.tls_dir, &g.name) {
        (Some(dir), Some(name)) => Some(TlsFiles::in_dir(dir, name)),
        _ => None,
    };
    let cert = g
        .cert
        .clone()
        .or_else(|| in_dir.as_ref().map(|f| f.cert.clone()));
    let key = g
        .key
        .clone()
        .or_else(|| in_dir.as_ref().map(|f| f.key.clone()));
    let ca =
        g.ca.clone()
            .or_else(|| g.tls_dir.as_ref().map(|d| d.join(CA_CERT_FILE)));
    if let (Some(cert), Some(key), Some(ca)) = (&cert, &key, &ca) {
        return Ok(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
            crl: None,
        });
    }
    match (&g.tls_dir, &g.name) {
        (Some(dir), None) => Err(anyhow!(
            "--tls-dir {} needs --name NAME (or TRIREME_CERT_NAME): the name of your \
             certificate there, NAME.pem and NAME.key; {ISSUE_HINT}",
            dir.display()
        )),
        (None, Some(name)) => Err(anyhow!(
            "--name {name} needs --tls-dir DIR (or TRIREME_TLS_DIR): the directory holding \
             {name}.pem, {name}.key and ca.pem; {ISSUE_HINT}"
        )),
        _ => {
            let missing: Vec<&str> = [
                (cert.is_none(), "certificate"),
                (key.is_none(), "key"),
                (ca.is_none(), "CA certificate"),
            ]
            .iter()
            .filter(|(m, _)| *m)
            .map(|(_, what)| *what)
            .collect();
            let what = if missing.len() == 3 {
                "no client certificate configured".to_string()
            } else {
                format!("no client {} given", missing.join(" or "))
            };
            Err(anyhow!(
                "{what}: set --tls-dir DIR and --name NAME (TRIREME_TLS_DIR, TRIREME_CERT_NAME) \
                 to use DIR/NAME.pem, DIR/NAME.key and DIR/ca.pem, or --cert, --key and --ca \
                 (TRIREME_CERT, TRIREME_KEY, TRIREME_CA); {ISSUE_HINT}"
            ))
        }
    }
}

/// `--controller` as `connect` wants it: no scheme, no trailing slash, and
/// the default port when none is given.
pub fn normalize_addr(addr: &str) -> String {
    let a = addr.trim();
    let a = a
        .strip_prefix("https://")
        .or_else(|| a.strip_prefix("http://"))
        .unwrap_or(a);
    let a = a.trim_end_matches('/');
    let has_port = match a.rsplit_once(':') {
        // `[::1]:7443` or `host:7443`, but not a bare `[::1]`.
        Some((host, port)) => !port.is_empty() && !port.contains(']') && !host.is_empty(),
        None => false,
    };
    if has_port {
        a.to_string()
    } else {
        let port = DEFAULT_CONTROLLER
            .rsplit_once(':')
            .map_or("7443", |(_, p)| p);
        format!("{a}:{port}")
    }
}

/// `message` as a request with the TOTP code `totp` (from `--totp` /
/// `TRIREME_TOTP`) in its metadata ([`TOTP_HEADER`]), for the sensitive
/// RPCs.
///
/// # Errors
/// A code that cannot be sent as metadata.
pub fn with_totp<T>(message: T, totp: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(code) = totp.map(str::trim).filter(|c| !c.is_empty()) {
        let value: MetadataValue<_> = code
            .parse()
            .map_err(|_| anyhow!("--totp {code:?}: give the 6 digits your authenticator shows"))?;
        request.metadata_mut().insert(TOTP_HEADER, value);
    }
    Ok(request)
}

/// The host of `host:port` or `[v6]:port`, without brackets: the default
/// server name.
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// The error for a failed dial.
/// Why a command failed, when it says more than "error" (the CLI's exit
/// codes: refused 3, unreachable 4, a job that failed 5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The controller refused: permission, role, TOTP, certificate.
    Refused,
    /// The controller could not be reached.
    Unreachable,
    /// A job (or restore test, or drill) the command ran or watched failed
    /// or was cancelled.
    JobFailed,
}

impl Failure {
    /// The process exit code.
    pub fn exit_code(self) -> u8 {
        match self {
            Failure::Refused => 3,
            Failure::Unreachable => 4,
            Failure::JobFailed => 5,
        }
    }

    /// `error` (a message), marked as this kind of failure.
    pub fn wrap(self, error: anyhow::Error) -> anyhow::Error {
        anyhow::Error::new(Marked {
            kind: self,
            message: format!("{error:#}"),
        })
    }

    /// The kind `error` was marked with, if any.
    pub fn of(error: &anyhow::Error) -> Option<Failure> {
        error
            .chain()
            .find_map(|e| e.downcast_ref::<Marked>().map(|m| m.kind))
    }
}

/// An error message marked with its [`Failure`]; prints just the message.
#[derive(Debug)]
struct Marked {
    kind: Failure,
    message: String,
}

impl std::fmt::Display for Marked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Marked {}

fn connect_error(addr: &str, err: &str) -> anyhow::Error {
    // `connect` says "TLS: cannot connect to ADDR: <cause>".
    let cause = err
        .strip_prefix("TLS: ")
        .unwrap_or(err)
        .strip_prefix(&format!("cannot connect to {addr}: "))
        .unwrap_or(err);
    if let Some(hint) = tls_hint(cause) {
        return Failure::Refused.wrap(anyhow!(
            "cannot connect securely to the controller at {addr}: {cause}; {hint}"
        ));
    }
    Failure::Unreachable.wrap(anyhow!(
        "cannot reach the controller at {addr}: {cause}; is trireme-controller running \
         and is --controller right?"
    ))
}

/// A hint when a failure is about certificates rather than the network.
fn tls_hint(cause: &str) -> Option<&'static str> {
    let c = cause.to_ascii_lowercase();
    if c.contains("notvalidforname") || c.contains("not valid for name") {
        Some("the controller's certificate does not carry the name you dialled; give the name it was issued for with --server-name")
    } else if c.contains("but a controller was expected") {
        Some("that address is not a Trireme controller")
    } else if c.contains("unknownissuer") || c.contains("unknown issuer") {
        Some("the controller's certificate is not from your CA; check --ca")
    } else if c.contains("fatal alert") {
        Some("the controller refused your certificate (revoked, expired, or not from its CA?); check --cert or --tls-dir, or ask for a new one")
    } else if c.contains("certificate") {
        Some("check your certificate files, --ca and --server-name")
    } else {
        None
    }
}

/// A gRPC error status as an operator-readable error: the code in words and
/// the controller's message; for failures of the connection itself, what
/// to check.
pub fn status_error(addr: &str, status: &Status) -> anyhow::Error {
    let e = status_message(addr, status);
    let lower = format!("{e:#}").to_ascii_lowercase();
    match status.code() {
        // ResourceExhausted: TOTP guesses backed off.
        Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted => {
            Failure::Refused.wrap(e)
        }
        _ if lower.contains("your certificate") => Failure::Refused.wrap(e),
        _ if lower.contains("cannot reach the controller") => Failure::Unreachable.wrap(e),
        _ => e,
    }
}

fn status_message(addr: &str, status: &Status) -> anyhow::Error {
    let mut msg = status.message().to_string();
    // Transport errors carry their cause as the source, not in the message.
    let mut src = std::error::Error::source(status);
    let transport = src.is_some();
    while let Some(e) = src {
        let m = e.to_string();
        if !msg.contains(&m) {
            if !msg.is_empty() {
                msg.push_str(": ");
            }
            msg.push_str(&m);
        }
        src = e.source();
    }
    let code = status.code();
    if transport || code == Code::Unavailable {
        if let Some(hint) = tls_hint(&msg) {
            return anyhow!("the controller at {addr} refused the connection: {msg}; {hint}");
        }
        let lower = msg.to_ascii_lowercase();
        if lower.contains("connection closed")
            || lower.contains("connection reset")
            || lower.contains("broken pipe")
            || lower.contains("stream closed")
            || lower.contains("canceled")
        {
            return anyhow!(
                "the controller at {addr} closed the connection: {msg}; it does so when it \
                 refuses your certificate (revoked, expired, or not from its CA: its log says \
                 which) or when it is shutting down"
            );
        }
        if code == Code::Unavailable {
            return anyhow!(
                "cannot reach the controller at {addr}: {msg}; is trireme-controller running \
                 and is --controller right?"
            );
        }
    }
    match code {
        Code::Unimplemented => anyhow!(
            "the controller at {addr} does not implement this ({msg}); is it older than this trireme?"
        ),
        code if msg.is_empty() => anyhow!("{}", code_words(code)),
        code => anyhow!("{}: {msg}", code_words(code)),
    }
}

/// A gRPC code in words.
pub fn code_words(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "cancelled",
        Code::Unknown => "unknown error",
        Code::InvalidArgument => "invalid argument",
        Code::DeadlineExceeded => "timed out",
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::PermissionDenied => "permission denied",
        Code::ResourceExhausted => "resource exhausted",
        Code::FailedPrecondition => "failed precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out of range",
        Code::Unimplemented => "not implemented",
        Code::Internal => "internal error in the controller",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data loss",
        Code::Unauthenticated => "not authenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Settings from `--tls-dir`, `--name`, `--cert`, `--key` and `--ca`
    /// flags and their values.
    fn global(args: &[&str]) -> Settings {
        let mut s = Settings::default();
        for pair in args.chunks(2) {
            let v = pair[1].to_string();
            match pair[0] {
                "--tls-dir" => s.tls_dir = Some(v.into()),
                "--name" => s.name = Some(v),
                "--cert" => s.cert = Some(v.into()),
                "--key" => s.key = Some(v.into()),
                "--ca" => s.ca = Some(v.into()),
                other => panic!("{other}"),
            }
        }
        s
    }

    #[test]
    fn addresses() {
        assert_eq!(normalize_addr("ctl.example:7443"), "ctl.example:7443");
        assert_eq!(normalize_addr("ctl.example"), "ctl.example:7443");
        assert_eq!(normalize_addr("https://ctl:9000/"), "ctl:9000");
        assert_eq!(normalize_addr("[::1]"), "[::1]:7443");
        assert_eq!(normalize_addr("[::1]:9"), "[::1]:9");
        assert_eq!(host_of("ctl.example:7443"), "ctl.example");
        assert_eq!(host_of("[::1]:7443"), "::1");
        assert_eq!(host_of("127.0.0.1:1"), "127.0.0.1");
    }

    #[test]
    fn certificate_files() {
        let f = tls_files(&global(&["--tls-dir", "/t", "--name", "alice"])).unwrap();
        assert_eq!(f.cert, PathBuf::from("/t/alice.pem"));
        assert_eq!(f.key, PathBuf::from("/t/alice.key"));
        assert_eq!(f.ca, PathBuf::from("/t/ca.pem"));
        assert_eq!(f.crl, None);

        let f = tls_files(&global(&[
            "--tls-dir",
            "/t",
            "--name",
            "alice",
            "--ca",
            "/etc/ca.pem",
        ]))
        .unwrap();
        assert_eq!(f.ca, PathBuf::from("/etc/ca.pem"));

        let err = tls_files(&global(&[])).unwrap_err().to_string();
        for want in [
            "--tls-dir",
            "--name",
            "--cert",
            "TRIREME_TLS_DIR",
            "trireme cert issue",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        let err = tls_files(&global(&["--cert", "c", "--key", "k"]))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("no client CA certificate given"), "{err}");
        let err = tls_files(&global(&["--tls-dir", "/t"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --name"), "{err}");
        let err = tls_files(&global(&["--name", "a"]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("needs --tls-dir"), "{err}");
    }

    #[test]
    fn the_code_travels_as_metadata() {
        let r = with_totp((), Some(" 123456 ")).unwrap();
        assert_eq!(r.metadata().get(TOTP_HEADER).unwrap(), "123456");
        assert!(with_totp((), None).unwrap().metadata().is_empty());
        assert!(with_totp((), Some("12\n34")).is_err());
    }

    #[test]
    fn statuses_in_words() {
        let e = status_error(
            "c:1",
            &Status::permission_denied(
                "/trireme.v1.OperatorService/RunBackup needs the operator role, but bob has the viewer role",
            ),
        );
        assert_eq!(
            e.to_string(),
            "permission denied: /trireme.v1.OperatorService/RunBackup needs the operator role, but bob has the viewer role"
        );
        let e = status_error("c:1", &Status::unavailable("connection refused"));
        assert!(e
            .to_string()
            .starts_with("cannot reach the controller at c:1: connection refused"));
        assert_eq!(
            status_error("c:1", &Status::not_found("")).to_string(),
            "not found"
        );
    }

    #[test]
    fn dial_errors() {
        let e = connect_error(
            "127.0.0.1:1",
            "TLS: cannot connect to 127.0.0.1:1: transport error: Connection refused (os error 111)",
        );
        assert_eq!(
            e.to_string(),
            "cannot reach the controller at 127.0.0.1:1: transport error: Connection refused \
             (os error 111); is trireme-controller running and is --controller right?"
        );
        let e = connect_error(
            "h:1",
            "TLS: cannot connect to h:1: invalid peer certificate: NotValidForName",
        );
        assert!(e.to_string().contains("--server-name"), "{e}");
    }
}
