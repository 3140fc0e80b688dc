//! Real Garage instances for integration tests, run by `deploy/dev/garage.sh`.
//!
//! [`Garage::start`] starts `n` independent single-node Garage servers in a
//! fresh temporary directory and reads their settings from `DIR/env`;
//! dropping the [`Garage`] stops them and removes the directory. The servers
//! are also stopped if the test process dies (the script watches its pid).
//!
//! Garage must be installed (`deploy/dev/garage.sh install`, or
//! `cargo install garage --locked`); `GARAGE_BIN` may point at the binary.
//! Tests fail, never skip, when it is missing.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use trireme_common::backend::S3Settings;
use trireme_common::location::S3Credentials;
use trireme_common::Location;

/// Seconds between SIGTERM and SIGKILL when stopping an instance. Garage
/// would otherwise wait 10 s for the test's idle keep-alive connections; its
/// metadata (LMDB) survives a kill, so restarts keep the data.
const STOP_GRACE: &str = "1";

/// One Garage server, as described by the script's `GARAGE_i_*` lines.
#[derive(Debug, Clone)]
pub struct Instance {
    /// S3 endpoint, e.g. `http://127.0.0.1:23456`.
    pub endpoint: String,
    /// Signing region (`garage`).
    pub region: String,
    /// The bucket created for tests (`trireme`).
    pub bucket: String,
    /// Access key with read/write/owner rights on the bucket.
    pub access_key_id: String,
    /// Its secret.
    pub secret_access_key: String,
    /// The server's data directory (object blocks).
    pub data_dir: PathBuf,
    /// The server's metadata directory.
    pub meta_dir: PathBuf,
    /// The server's config file.
    pub config: PathBuf,
    /// The server's log file.
    pub log: PathBuf,
    /// A mode-600 credentials file for `credentials_file=`.
    pub credentials_file: PathBuf,
}

/// A set of running Garage instances, stopped on drop.
#[derive(Debug)]
pub struct Garage {
    dir: tempfile::TempDir,
    garage_bin: PathBuf,
    instances: Vec<Instance>,
}

/// The dev script, found from this crate's manifest directory.
pub fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/dev/garage.sh")
}

/// The installed garage binary, or a panic saying how to install it.
pub fn garage_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("GARAGE_BIN") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.is_file(),
            "GARAGE_BIN={} is not a file: point it at a garage binary or unset it",
            bin.display()
        );
        return bin;
    }
    let on_path = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("garage"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let home = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo/bin/garage"));
    on_path
        .into_iter()
        .chain(home)
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "Garage is not installed, and these tests need a real Garage server: \
                 run `deploy/dev/garage.sh install` (it runs `cargo install garage --locked`) \
                 or set GARAGE_BIN to a garage binary"
            )
        })
}

fn run_script(args: &[&str], garage_bin: &Path) -> String {
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .env("GARAGE_BIN", garage_bin)
        .env("GARAGE_OWNER_PID", std::process::id().to_string())
        .env("GARAGE_STOP_GRACE", STOP_GRACE)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", script().display()));
    assert!(
        out.status.success(),
        "{} {} failed ({}):\n{}",
        script().display(),
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn parse_env(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl Garage {
    /// Start `n` instances in a fresh temporary directory.
    ///
    /// # Panics
    /// When Garage is not installed or an instance does not come up (the
    /// message includes the script's output and the server log).
    pub fn start(n: usize) -> Garage {
        assert!(n >= 1, "start at least one Garage instance");
        let garage_bin = garage_binary();
        let dir = tempfile::Builder::new()
            .prefix("trireme-garage-")
            .tempdir()
            .expect("create a temporary directory for Garage");
        let dir_str = dir.path().to_str().expect("utf-8 temp dir").to_string();
        run_script(&["start", &n.to_string(), &dir_str], &garage_bin);
        let env_text = std::fs::read_to_string(dir.path().join("env"))
            .expect("garage.sh start writes DIR/env");
        let env = parse_env(&env_text);
        let get = |i: usize, name: &str| -> String {
            env.get(&format!("GARAGE_{i}_{name}"))
                .cloned()
                .unwrap_or_else(|| panic!("DIR/env lacks GARAGE_{i}_{name}:\n{env_text}"))
        };
        let instances = (1..=n)
            .map(|i| {
                let credentials_file = dir.path().join(format!("{i}/s3-credentials"));
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .open(&credentials_file)
                    .expect("write the credentials file");
                writeln!(
                    f,
                    "access_key_id = \"{}\"\nsecret_access_key = \"{}\"",
                    get(i, "ACCESS_KEY_ID"),
                    get(i, "SECRET_ACCESS_KEY")
                )
                .expect("write the credentials file");
                std::fs::set_permissions(&credentials_file, std::fs::Permissions::from_mode(0o600))
                    .expect("chmod 600 the credentials file");
                Instance {
                    endpoint: get(i, "ENDPOINT"),
                    region: get(i, "REGION"),
                    bucket: get(i, "BUCKET"),
                    access_key_id: get(i, "ACCESS_KEY_ID"),
                    secret_access_key: get(i, "SECRET_ACCESS_KEY"),
                    data_dir: get(i, "DATA_DIR").into(),
                    meta_dir: get(i, "META_DIR").into(),
                    config: get(i, "CONFIG").into(),
                    log: get(i, "LOG").into(),
                    credentials_file,
                }
            })
            .collect();
        Garage {
            dir,
            garage_bin,
            instances,
        }
    }

    /// Instance `i`, counted from 1 like the script's `GARAGE_i_*` names.
    pub fn instance(&self, i: usize) -> &Instance {
        assert!(
            (1..=self.instances.len()).contains(&i),
            "instance {i} of {}",
            self.instances.len()
        );
        &self.instances[i - 1]
    }

    /// The directory holding the instances (and `env`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The location URL of `prefix` in instance `i`'s bucket, credentials
    /// from a mode-600 credentials file.
    pub fn location_url(&self, i: usize, prefix: &str) -> String {
        let inst = self.instance(i);
        format!(
            "s3://{}/{}?endpoint={}&region={}&allow_http=true&credentials_file={}",
            inst.bucket,
            prefix,
            inst.endpoint,
            inst.region,
            inst.credentials_file.display()
        )
    }

    /// Settings for `prefix` in instance `i`'s bucket, parsed from
    /// [`Garage::location_url`].
    pub fn settings(&self, i: usize, prefix: &str) -> S3Settings {
        match Location::parse(&self.location_url(i, prefix)) {
            Ok(Location::S3(s)) => s,
            other => panic!("location_url does not parse as S3: {other:?}"),
        }
    }

    /// Static credentials of instance `i`.
    pub fn credentials(&self, i: usize) -> S3Credentials {
        let inst = self.instance(i);
        S3Credentials {
            access_key_id: inst.access_key_id.clone(),
            secret_access_key: inst.secret_access_key.clone(),
            session_token: None,
        }
    }

    /// Stop instance `i` (its data stays; see [`Garage::start_instance`]).
    pub fn stop_instance(&self, i: usize) {
        self.instance(i);
        let dir = self.dir.path().to_str().expect("utf-8 temp dir");
        run_script(&["stop", dir, &i.to_string()], &self.garage_bin);
    }

    /// Restart instance `i` after [`Garage::stop_instance`], on the same
    /// ports, data and keys; returns when it answers.
    pub fn start_instance(&self, i: usize) {
        self.instance(i);
        let dir = self.dir.path().to_str().expect("utf-8 temp dir");
        // `start` restarts whatever is stopped and leaves running ones alone.
        run_script(
            &["start", &self.instances.len().to_string(), dir],
            &self.garage_bin,
        );
    }

    /// The last lines of instance `i`'s log, for failure messages.
    pub fn log_tail(&self, i: usize) -> String {
        let text = std::fs::read_to_string(&self.instance(i).log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        let dir = self.dir.path().to_string_lossy().into_owned();
        let _ = Command::new("bash")
            .arg(script())
            .args(["stop", &dir])
            .env("GARAGE_BIN", &self.garage_bin)
            .env("GARAGE_STOP_GRACE", STOP_GRACE)
            .output();
    }
}
