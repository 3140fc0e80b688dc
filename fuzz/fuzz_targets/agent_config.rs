//! The agent's TOML configuration: `AgentConfig::parse` (controller
//! address, names, TLS files, durations, metrics address) and every
//! `[[source]]` table through `sources::parse_source`.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trireme_agent::daemon::config::AgentConfig;

fuzz_target!(|data: &[u8]| {
    let text = trireme_fuzz::text(data);
    if let Ok(c) = AgentConfig::parse(Path::new("/etc/trireme/agent.toml"), &text) {
        for s in &c.sources {
            let _ = (s.kind(), s.details(), s.spec.data_path());
            assert!(c.source(&s.name).is_some());
        }
    }
});
