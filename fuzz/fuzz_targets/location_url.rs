//! Location URLs (`Location::parse`): `file://` paths and `s3://` buckets,
//! prefixes and query parameters (endpoint URLs through the `url` crate).
//! URLs naming a `credentials_file` are skipped (parsing them reads the
//! file; its text is fuzzed by `s3_credentials`).
//!
//! Invariant: an accepted URL prints (`Display`) as a URL that parses back
//! to the same location.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_common::Location;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    if url.contains("credentials") || url.contains('%') && url.contains("cred") {
        return;
    }
    if let Ok(loc) = Location::parse(url) {
        let shown = loc.to_string();
        let again = Location::parse(&shown)
            .unwrap_or_else(|e| panic!("{url:?} parsed, but its display {shown:?} does not: {e}"));
        assert_eq!(again, loc, "{url:?} -> {shown:?}");
    }
});
