//! A real moto server as the AWS KMS of the tests. moto
//! (`pip install 'moto[server]'`, installed by `deploy/dev/prereqs.sh`) is
//! an independent implementation of the AWS APIs: the tests talk to it over
//! HTTP with the official SDK, as the controller would talk to AWS KMS. It
//! is not AWS: it does not enforce IAM or key states such as "disabled" on
//! Encrypt/Decrypt, and answers a Decrypt under the wrong key with
//! AccessDeniedException (AWS: IncorrectKeyException).
//!
//! [`Moto::start`] starts one on a free loopback port; dropping it stops it.
//! The server is also stopped when the test process dies (a shell watches
//! its pid). Tests fail, never skip, when moto is missing.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trireme_kms::aws_kms::AwsKmsSettings;

use crate::ports::free_port;

/// The region the tests use.
pub const REGION: &str = "eu-west-1";

/// A running moto server.
pub struct Moto {
    dir: tempfile::TempDir,
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    /// A mode-600 credentials file (moto accepts any credentials).
    pub credentials_file: PathBuf,
    /// The server's log.
    pub log: PathBuf,
}

/// How to run moto's server: `MOTO_SERVER` (a command), `moto_server` on
/// the PATH, or `python3 -m moto.server`; panics naming the install step.
fn moto_command() -> String {
    if let Ok(c) = std::env::var("MOTO_SERVER") {
        return c;
    }
    let on_path = Command::new("sh")
        .args(["-c", "command -v moto_server"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if on_path {
        return "moto_server".into();
    }
    let module = Command::new("python3")
        .args(["-c", "import moto.server"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        module,
        "moto is not installed: run deploy/dev/prereqs.sh (it runs `python3 -m pip install 'moto[server]'`), or set MOTO_SERVER"
    );
    "python3 -m moto.server".into()
}

impl Moto {
    /// Start a moto server and wait until it answers.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        let port = free_port();
        // The shell stops moto when the test process or the shell is gone.
        let script = format!(
            "{cmd} -H 127.0.0.1 -p {port} >>'{log}' 2>&1 & m=$!\n\
             trap 'kill $m 2>/dev/null; exit 0' TERM INT\n\
             while kill -0 {test} 2>/dev/null && kill -0 $m 2>/dev/null; do sleep 0.5; done\n\
             kill $m 2>/dev/null",
            cmd = moto_command(),
            log = log.display(),
            test = std::process::id(),
        );
        let child = Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()
            .expect("bash to run moto");
        let credentials_file = dir.path().join("kms.creds");
        std::fs::write(
            &credentials_file,
            "access_key_id = AKIAMOTOTESTING\nsecret_access_key = moto-test-secret\n",
        )
        .unwrap();
        std::fs::set_permissions(&credentials_file, std::fs::Permissions::from_mode(0o600))
            .unwrap();
        let mut moto = Moto {
            dir,
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
            credentials_file,
            log,
        };
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto exited ({status}) before answering: {}",
                    std::fs::read_to_string(&moto.log).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "moto did not listen on {port} within 60s: {}",
                std::fs::read_to_string(&moto.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    /// Provider settings for `key_id` at this server.
    pub fn settings(&self, key_id: &str) -> AwsKmsSettings {
        let mut s = AwsKmsSettings::new(key_id, REGION);
        s.endpoint = Some(self.endpoint.clone());
        s.credentials_file = Some(self.credentials_file.clone());
        s.timeout = Duration::from_secs(5);
        // moto serves plain http on loopback.
        s.allow_http = true;
        s
    }

    /// An SDK client for setting up keys.
    pub async fn client(&self) -> aws_sdk_kms::Client {
        let creds = aws_sdk_kms::config::Credentials::new(
            "AKIAMOTOTESTING",
            "moto-test-secret",
            None,
            None,
            "test",
        );
        let config = aws_sdk_kms::config::Builder::new()
            .behavior_version(aws_sdk_kms::config::BehaviorVersion::latest())
            .region(aws_sdk_kms::config::Region::new(REGION))
            .endpoint_url(&self.endpoint)
            .credentials_provider(creds)
            .build();
        aws_sdk_kms::Client::from_conf(config)
    }

    /// A new symmetric key (CreateKey), with `alias` pointing at it when
    /// given; its key id.
    pub async fn create_key(&self, alias: Option<&str>) -> String {
        let c = self.client().await;
        let key = c
            .create_key()
            .description("trireme test key")
            .send()
            .await
            .expect("CreateKey at moto");
        let id = key.key_metadata().unwrap().key_id().to_string();
        if let Some(a) = alias {
            c.create_alias()
                .alias_name(a)
                .target_key_id(&id)
                .send()
                .await
                .expect("CreateAlias at moto");
        }
        id
    }

    /// The directory holding the log and the credentials file.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}
