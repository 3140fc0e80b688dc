//! The controller's TOML configuration: `ControllerConfig::parse` (listen
//! and metrics addresses, TLS, every `[[location]]` URL through
//! `Location::parse`, durations, the key-file placement check) and its
//! `warnings()`. Inputs naming a `credentials_file` are skipped (that would
//! read files).
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use trireme_controller::config::ControllerConfig;

fuzz_target!(|data: &[u8]| {
    let text = trireme_fuzz::text(data);
    if text.contains("cred") || text.contains('%') || text.contains('\\') {
        return;
    }
    if let Ok(c) = ControllerConfig::parse(Path::new("/etc/trireme/controller.toml"), &text) {
        let _ = c.warnings();
    }
});
