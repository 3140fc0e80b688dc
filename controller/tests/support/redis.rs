//! A real redis-server for end-to-end tests of datastore sources.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use trireme_testkit::ports::free_port;

use super::fleet::wait_for;

/// A redis-server started in the background on a free port.
pub struct Redis {
    pub port: u16,
    pub start: String,
}

impl Redis {
    pub fn start(dir: &Path) -> Redis {
        std::fs::create_dir_all(dir).unwrap();
        let port = free_port();
        let start = format!(
            "redis-server --port {port} --dir {d} --daemonize yes --save '' --appendonly no --logfile {d}/redis.log",
            d = dir.display()
        );
        let r = Redis { port, start };
        assert!(Command::new("sh")
            .args(["-c", &r.start])
            .status()
            .unwrap()
            .success());
        wait_for("redis to answer", Duration::from_secs(10), || {
            (r.cli(&["PING"]) == "PONG").then_some(())
        });
        r
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// A `[[source]]` table for this instance, its RDB read from `dir`.
    pub fn source(&self, name: &str, dir: &Path) -> String {
        format!(
            "[[source]]\nname = \"{name}\"\nkind = \"redis\"\naddress = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\nstart_hook = [\"sh\", \"-c\", {:?}]\n",
            self.port,
            dir.display(),
            self.start
        )
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.cli(&["SHUTDOWN", "NOSAVE"]);
    }
}
