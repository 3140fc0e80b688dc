//! Wrapped data keys (scheme byte, master key id, sealed key) as stored in
//! every pack, index object, manifest and the config: `LocalKeyFile::unwrap`
//! on any bytes. Half the inputs get the fuzz master key's id spliced in, so
//! the fuzzer reaches the authentication step.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use trireme_common::keys::{KeyProvider, LocalKeyFile, WrappedKey};

fn master() -> &'static (LocalKeyFile, [u8; 8]) {
    static M: OnceLock<(LocalKeyFile, [u8; 8])> = OnceLock::new();
    M.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("trireme-fuzz-{}.key", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let k = LocalKeyFile::create(&path).expect("key file");
        let _ = std::fs::remove_file(&path);
        let mut id = [0u8; 8];
        hex_to(&k.key_id(), &mut id);
        (k, id)
    })
}

fn hex_to(s: &str, out: &mut [u8]) {
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap();
    }
}

fuzz_target!(|data: &[u8]| {
    let (k, id) = master();
    let mut w = data.to_vec();
    if w.len() >= 9 && w[0] & 0x80 != 0 {
        w[0] = 1;
        w[1..9].copy_from_slice(id);
    }
    let r = futures::executor::block_on(k.unwrap(&WrappedKey(w)));
    if let Ok(key) = r {
        assert_eq!(key.as_bytes().len(), 32);
    }
});
