//! A real fleet on loopback for end-to-end tests: a CA, a `trireme-controller`
//! process with three `file://` locations, `trireme-agent` processes, the
//! `trireme` CLI, and a TCP proxy that can cut the network between an agent
//! and the controller.

#![allow(dead_code)] // each test uses a different part

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use trireme_net::tls::{ca, client_config, connect, ClientTls, Role, TlsFiles};
use trireme_proto::v1::operator_service_client::OperatorServiceClient;
use trireme_testkit::ports::free_port;
use trireme_testkit::tree;

/// A binary of the workspace (`trireme-agent`, the `trireme` CLI of package
/// `trireme-cli`, …): next to the `trireme-controller` cargo built for these
/// tests, or in `TRIREME_TEST_BIN_DIR` when set (binaries copied aside, e.g.
/// when the target directory is shared with other checkouts).
pub fn bin(name: &str) -> PathBuf {
    let dir = match std::env::var_os("TRIREME_TEST_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(env!("CARGO_BIN_EXE_trireme-controller"))
            .parent()
            .unwrap()
            .to_path_buf(),
    };
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: build it first (`cargo build --workspace --bins`, or run `cargo test --workspace`)",
        p.display()
    );
    p
}

/// Poll `f` until it returns `Some`, or panic after `timeout` with `what`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub struct Fleet {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub port: u16,
    pub controller: Option<Child>,
    pub agents: BTreeMap<String, Child>,
    /// Extra lines for controller.toml (top-level keys, or tables).
    pub controller_extra: String,
    /// Location URLs, primary first (default: three `file://` directories).
    pub locations: Vec<String>,
    /// Each location's `region` label, by position (default `region-1`,
    /// `region-2`…; empty: none).
    pub regions: Vec<String>,
    /// Lines of the `[replication]` table.
    pub replication: String,
    /// The master key's settings in controller.toml: the top-level
    /// `key_file` line by default (the key `Fleet::new` made), or e.g. a
    /// `[key_service]` table for an external KMS.
    pub key_section: String,
}

pub struct AgentSpec {
    pub name: String,
    /// (source name, directory, pre_hook argv, post_hook argv)
    pub sources: Vec<(String, PathBuf, Vec<String>, Vec<String>)>,
    /// Address the agent dials (default: the controller's).
    pub via: Option<SocketAddr>,
    /// More `[[source]]` tables, as TOML text.
    pub extra: String,
    /// More top-level settings, as TOML lines.
    pub settings: String,
}

impl AgentSpec {
    /// An agent with one `volume` source and no hooks, dialling the controller.
    pub fn volume(name: &str, source: &str, path: &Path) -> Self {
        AgentSpec {
            name: name.into(),
            sources: vec![(source.into(), path.to_path_buf(), Vec::new(), Vec::new())],
            via: None,
            extra: String::new(),
            settings: String::new(),
        }
    }
}

impl Fleet {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let ca = dir.join("ca");
        ca::init_ca(&ca).unwrap();
        // A year, as `trireme cert issue` gives: under 30 days is a status problem.
        ca::issue(&ca, Role::Controller, "localhost", 365, &ca).unwrap();
        ca::issue(&ca, Role::Operator, "op", 30, &ca).unwrap();
        ca::issue(&ca, Role::Viewer, "viewer", 30, &ca).unwrap();
        let out = Command::new(bin("trireme-controller"))
            .args(["keygen", "--key-file"])
            .arg(dir.join("master.key"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let locations = (1..=3)
            .map(|i| format!("file://{}", dir.join(format!("loc{i}")).display()))
            .collect();
        Fleet {
            key_section: format!("key_file = \"{}\"\n", dir.join("master.key").display()),
            tmp,
            ca,
            port: free_port(),
            locations,
            controller: None,
            agents: BTreeMap::new(),
            controller_extra: String::new(),
            regions: (1..=3).map(|i| format!("region-{i}")).collect(),
            replication: "every = \"2s\"\n".into(),
            dir,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn location(&self, i: usize) -> PathBuf {
        self.dir.join(format!("loc{i}"))
    }

    pub fn controller_log(&self) -> PathBuf {
        self.dir.join("controller.log")
    }

    pub fn agent_log(&self, name: &str) -> PathBuf {
        self.dir.join(format!("agent-{name}.log"))
    }

    fn log_file(path: &Path) -> std::fs::File {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap()
    }

    /// The `key_file` line naming `key` (for `key_section`).
    pub fn key_file_section(key: &Path) -> String {
        format!("key_file = \"{}\"\n", key.display())
    }

    /// Run the controller on the local key file `key` from now on.
    pub fn use_key_file(&mut self, key: &Path) {
        self.key_section = Self::key_file_section(key);
    }

    /// The configuration `start_controller` writes and runs.
    pub fn controller_config(&self) -> PathBuf {
        self.dir.join("controller.toml")
    }

    /// Write controller.toml (with `key_section`); its path.
    pub fn write_controller_config(&self) -> PathBuf {
        let cfg = self.controller_config();
        self.write_config_to(&cfg, &self.key_section);
        cfg
    }

    /// Write a controller configuration naming the local key file `key` to
    /// `path` (the rest as `start_controller` would write it).
    pub fn write_config_with_key(&self, path: &Path, key: &Path) {
        self.write_config_to(path, &Self::key_file_section(key));
    }

    fn write_config_to(&self, path: &Path, key_section: &str) {
        // Top-level keys first (key_file, extra), then the tables.
        let (top, tables) = match key_section.find('[') {
            Some(i) if key_section[..i].trim().is_empty() => ("", key_section),
            _ => (key_section, ""),
        };
        let mut text = format!(
            "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{d}/controller\"\n{top}heartbeat_interval = \"1s\"\n{extra}\n{tables}\n[tls]\ndir = \"{ca}\"\nname = \"localhost\"\n[replication]\n{rep}\n",
            port = self.port,
            d = self.dir.display(),
            ca = self.ca.display(),
            extra = self.controller_extra,
            rep = self.replication,
        );
        for (i, url) in self.locations.iter().enumerate() {
            // Each in its own region by default: the default protection
            // rule (3 locations, 2+ regions) is met once all three are
            // verified.
            text.push_str(&format!(
                "[[location]]\nname = \"loc{}\"\nurl = \"{url}\"\n",
                i + 1
            ));
            match self.regions.get(i) {
                Some(r) if !r.is_empty() => text.push_str(&format!("region = \"{r}\"\n")),
                _ => {}
            }
            // The agents run on this host: the same credentials file is theirs.
            if url.contains("credentials_file=") {
                text.push_str(&format!("agent_url = \"{url}\"\n"));
            }
        }
        std::fs::write(path, text).unwrap();
    }

    /// The controller's state opened in this process (no listener, no
    /// background tasks): its handlers driven directly.
    pub async fn open_in_process(&self) -> std::sync::Arc<trireme_controller::server::Shared> {
        let cfg = self.write_controller_config();
        let config = trireme_controller::config::ControllerConfig::load(&cfg).unwrap();
        trireme_controller::server::open(&config).await.unwrap().0
    }

    pub fn start_controller(&mut self) {
        let cfg = self.write_controller_config();
        let log = Self::log_file(&self.controller_log());
        let child = Command::new(bin("trireme-controller"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("TRIREME_LOG", "info,trireme_controller=debug")
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.controller = Some(child);
        let addr = self.addr();
        wait_for("the controller to listen", Duration::from_secs(30), || {
            std::net::TcpStream::connect(addr).ok()
        });
    }

    /// SIGTERM the controller and wait for it to exit.
    pub fn stop_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let start = Instant::now();
            while c.try_wait().unwrap().is_none() {
                if start.elapsed() > Duration::from_secs(30) {
                    let _ = c.kill();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// SIGKILL the controller.
    pub fn kill_controller(&mut self) {
        if let Some(mut c) = self.controller.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    pub fn start_agent(&mut self, spec: &AgentSpec) {
        let name = &spec.name;
        if !self.ca.join(format!("{name}.pem")).exists() {
            // A year: under 30 days is a status problem.
            ca::issue(&self.ca, Role::Agent, name, 365, &self.ca).unwrap();
        }
        let via = spec.via.unwrap_or_else(|| self.addr());
        let mut text = format!(
            "controller = \"{via}\"\nserver_name = \"localhost\"\nstate_dir = \"{d}/agent-{name}\"\nmax_backoff = \"2s\"\n[tls]\ndir = \"{ca}\"\nname = \"{name}\"\n",
            d = self.dir.display(),
            ca = self.ca.display(),
        );
        text.insert_str(text.find("[tls]").expect("tls table"), &spec.settings);
        for (src, path, hook, post) in &spec.sources {
            text.push_str(&format!(
                "[[source]]\nname = \"{src}\"\nkind = \"volume\"\npath = \"{}\"\n",
                path.display()
            ));
            if !hook.is_empty() {
                text.push_str(&format!("pre_hook = {hook:?}\n"));
            }
            if !post.is_empty() {
                text.push_str(&format!("post_hook = {post:?}\n"));
            }
        }
        text.push_str(&spec.extra);
        let cfg = self.dir.join(format!("agent-{name}.toml"));
        std::fs::write(&cfg, text).unwrap();
        let log = Self::log_file(&self.agent_log(name));
        let child = Command::new(bin("trireme-agent"))
            .args(["run", "--config"])
            .arg(&cfg)
            .env("TRIREME_LOG", "info")
            .env_remove("RUST_LOG")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.agents.insert(name.clone(), child);
    }

    /// SIGKILL an agent.
    pub fn kill_agent(&mut self, name: &str) {
        if let Some(mut c) = self.agents.remove(name) {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Run the CLI as `who` (a certificate name in the CA directory).
    pub fn cli_as(&self, who: &str, args: &[&str]) -> Output {
        Command::new(bin("trireme"))
            .args(["--controller", &format!("127.0.0.1:{}", self.port)])
            .args(["--server-name", "localhost"])
            .arg("--tls-dir")
            .arg(&self.ca)
            .args(["--name", who])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Run the CLI as the operator; panic unless it succeeds; stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = self.cli_as("op", args);
        assert!(
            out.status.success(),
            "trireme {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The CLI's JSON output.
    pub fn cli_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = vec!["--output", "json"];
        a.extend_from_slice(args);
        let out = self.cli(&a);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("trireme {args:?}: {e}: {out}"))
    }

    /// A gRPC client as the operator.
    pub async fn operator(&self) -> OperatorServiceClient<tonic::transport::Channel> {
        let files = TlsFiles::in_dir(&self.ca, "op");
        let tls = ClientTls {
            config: Arc::new(client_config(&files).unwrap()),
            server_name: "localhost".into(),
            server_role: Some(Role::Controller),
        };
        OperatorServiceClient::new(connect(&self.addr().to_string(), tls).await.unwrap())
    }

    pub fn wait_connected(&self, agents: &[&str]) {
        wait_for("agents to connect", Duration::from_secs(30), || {
            let v = self.cli_json(&["agents", "ls"]);
            let arr = v.as_array()?;
            agents
                .iter()
                .all(|a| {
                    arr.iter()
                        .any(|x| x["name"] == *a && x["connected"] == serde_json::Value::Bool(true))
                })
                .then_some(())
        });
    }

    pub fn write_file(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let mut f = std::fs::File::create(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    pub fn log_text(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, mut c) in std::mem::take(&mut self.agents) {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.kill_controller();
        if std::thread::panicking() {
            for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
                let p = entry.path();
                if p.extension().and_then(|e| e.to_str()) == Some("log") {
                    let text = Self::log_text(&p);
                    let tail: Vec<&str> = text.lines().rev().take(60).collect();
                    eprintln!("---- last lines of {} ----", p.display());
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
            }
        }
    }
}

/// Deterministic test data: `n` files of `size` bytes of mixed text and noise.
pub fn make_data(dir: &Path, n: usize, size: usize, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    for i in 0..n {
        let mut buf = Vec::with_capacity(size);
        while buf.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if x % 4 == 0 {
                buf.extend_from_slice(format!("line {i} value {}\n", x % 1000).as_bytes());
            } else {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        }
        buf.truncate(size);
        let sub = dir.join(format!("d{}", i % 3));
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(format!("f{i}.bin")), &buf).unwrap();
    }
}

/// A TCP proxy that can cut the link: `cut()` drops every connection and
/// refuses new ones until `heal()`.
pub struct Proxy {
    pub addr: SocketAddr,
    cut: Arc<Mutex<bool>>,
    conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cut = Arc::new(Mutex::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>> = Arc::default();
        let (c2, k2) = (cut.clone(), conns.clone());
        tokio::spawn(async move {
            loop {
                let Ok((mut down, _)) = listener.accept().await else {
                    continue;
                };
                if *c2.lock().unwrap() {
                    drop(down);
                    continue;
                }
                let h = tokio::spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
                k2.lock().unwrap().push(h);
            }
        });
        Proxy { addr, cut, conns }
    }

    pub fn cut(&self) {
        *self.cut.lock().unwrap() = true;
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }

    pub fn heal(&self) {
        *self.cut.lock().unwrap() = false;
    }
}

/// Locations where a snapshot (`snapshots show -o json`) is verified.
pub fn verified_copies(snap: &Value) -> usize {
    snap["copies"]
        .as_array()
        .map_or(0, |c| c.iter().filter(|c| c["state"] == "verified").count())
}

/// Wait until snapshot `id` is verified at `n` locations; its JSON.
pub fn wait_verified(f: &Fleet, id: &str, n: usize, timeout: Duration) -> Value {
    wait_for(
        &format!("snapshot {id} verified at {n} locations"),
        timeout,
        || {
            let s = f.cli_json(&["snapshots", "show", id]);
            (verified_copies(&s) == n).then_some(s)
        },
    )
}

/// Every location's `last_sync` (when a replication pass last completed
/// it), as `trireme locations ls` shows it (`%Y-%m-%dT%H:%M:%SZ`, so
/// strings order as times); `None` for one never synced.
fn last_syncs(f: &Fleet) -> Vec<Option<String>> {
    f.cli_json(&["locations", "ls"])
        .as_array()
        .expect("locations ls prints a list")
        .iter()
        .map(|l| l["last_sync"].as_str().map(str::to_string))
        .collect()
}

/// Wait until a replication pass that *started* after this call has
/// completed at every location: two completions later than now (the first
/// may belong to a pass already under way). What a test then finds absent
/// (an object copied back, say) a pass had the chance to do.
pub fn wait_replication_pass(f: &Fleet, timeout: Duration) {
    let mut after = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    for round in ["a pass under way", "a pass started after it"] {
        let t = wait_for(
            &format!("{round} to complete at every location (last_sync after {after})"),
            timeout,
            || {
                let syncs = last_syncs(f);
                let all_later = !syncs.is_empty()
                    && syncs
                        .iter()
                        .all(|t| t.as_deref().is_some_and(|t| t > after.as_str()));
                all_later.then(|| syncs.into_iter().flatten().max().unwrap_or_default())
            },
        );
        after = t;
    }
}

/// GET /metrics from the controller's metrics endpoint.
pub fn scrape(addr: &str) -> String {
    let (status, out) = http_get(addr, "/metrics");
    assert_eq!(status, 200, "{out}");
    out
}

/// GET `path` from a plain-HTTP endpoint with curl: status and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "10", "-w", "\n%{http_code}"])
        .arg(format!("http://{addr}{path}"))
        .output()
        .expect("curl is installed (deploy/dev/prereqs.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The value of one sample line, e.g. `name{location="loc2"}`.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

/// Relative path → bytes of the repository objects under a `file://`
/// location. The audit log's mirror segments (`audit/`) and key tables
/// (`keys/`) are left out: they are written to each location on their own,
/// not replicated.
pub fn location_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut t = tree(dir);
    t.retain(|k, _| !k.starts_with("audit") && !k.starts_with("keys"));
    t
}

impl Fleet {
    /// Restore `snap` from the location `url` alone, with the agent's local
    /// mode and the master key (no controller, no other location), into
    /// `target`; panic unless it succeeds. The restored tree.
    pub fn restore_alone(
        &self,
        url: &str,
        snap: &str,
        target: &Path,
    ) -> BTreeMap<PathBuf, Vec<u8>> {
        let out = Command::new(bin("trireme-agent"))
            .args(["restore", snap, "--location", url, "--key-file"])
            .arg(self.dir.join("master.key"))
            .arg("--target")
            .arg(target)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "restore of {snap} from {url} alone failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tree(target)
    }
}
