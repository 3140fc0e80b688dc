//! TOTP codes for an operator the tests enrolled (`trireme mfa enroll`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use trireme_controller::mfa::{code_at, secret_from_base32, STEP_SECS};

/// TOTP codes for one account, each for a later step than the last (the
/// controller takes no step twice), sent while the controller accepts it.
pub struct Codes {
    secret: Vec<u8>,
    last: u64,
}

impl Codes {
    /// Codes for the base32 secret `trireme mfa enroll` printed.
    pub fn for_secret(base32: &str) -> Self {
        Codes {
            secret: secret_from_base32(base32).unwrap(),
            last: 0,
        }
    }

    /// The next code to send.
    pub fn next(&mut self) -> String {
        loop {
            let unix = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs();
            let now = unix / STEP_SECS;
            let left = STEP_SECS - unix % STEP_SECS;
            let step = (self.last + 1).max(now - 1);
            // Accepted one step either side of now; keep a margin for the
            // call itself.
            if step <= now + 1 && (step >= now || left >= 8) {
                self.last = step;
                return code_at(&self.secret, step * STEP_SECS);
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }
}
