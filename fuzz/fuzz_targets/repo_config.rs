//! The repository `config` object (`TRCF`, plain CBOR): `RepoConfig::decode`
//! (magic, version, CBOR, chunker limits), then the MAC check and the
//! wrapped id key as `Repository::open` does before unwrapping.
#![no_main]

use libfuzzer_sys::fuzz_target;
use trireme_common::format::RepoConfig;

fuzz_target!(|data: &[u8]| {
    if let Ok(cfg) = RepoConfig::decode(data) {
        cfg.chunker
            .validate()
            .expect("decode validated the chunker");
        let _ = cfg.verify_mac(&[0x42; 32]);
        let _ = cfg.wrapped_id_key();
        // What we accept we can write back and read again.
        let again = RepoConfig::decode(&cfg.encode()).expect("re-decode");
        assert_eq!(again.chunker, cfg.chunker);
    }
});
