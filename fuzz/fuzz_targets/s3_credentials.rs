//! The text of an S3 credentials file (`credentials_file=` in a location
//! URL): `location::fuzz_parse_credentials`, which is what
//! `read_credentials_file` runs after its permission check.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_common::location::fuzz_parse_credentials;

fuzz_target!(|data: &[u8]| {
    let text = trireme_fuzz::text(data);
    if let Err(e) = fuzz_parse_credentials(&text) {
        // Errors never quote values (they may be secrets).
        assert!(!e.is_empty());
    }
});
