//! The recovery copy of the master key: `trireme-controller key export`
//! (or `trireme key export`, through the running controller) wraps the key
//! file with a passphrase, `key import` (either binary) restores it. The
//! controller decides which key file (`trireme_controller::recovery_key`);
//! this module is the format and the passphrase prompts both sides share.
//!
//! The passphrase is stretched with Argon2id (64 MiB, 3 passes, 4 lanes;
//! RFC 9106's second recommended setting) into an AES-256-GCM key that
//! seals the key file's contents. The export is a small JSON document:
//!
//! ```json
//! {"format":"trireme-recovery-key-v1","key_id":"<16 hex>",
//!  "kdf":{"name":"argon2id","version":19,"m_cost_kib":65536,"t_cost":3,"p_cost":4,"salt":"<32 hex>"},
//!  "cipher":"aes-256-gcm","sealed":"<hex: nonce || ciphertext || tag>"}
//! ```
//!
//! Every field but `sealed` is bound to it as associated data, so a changed
//! parameter or key id fails like a wrong passphrase does.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use serde::{Deserialize, Serialize};
use trireme_common::crypto::{random_bytes, DataKey};
use trireme_common::LocalKeyFile;

/// Shortest passphrase accepted for an export.
pub const MIN_PASSPHRASE: usize = 12;
const FORMAT: &str = "trireme-recovery-key-v1";

/// What went wrong, for the operator.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// The passphrase is too short.
    #[error("the recovery passphrase has {0} characters; use at least {MIN_PASSPHRASE} (a few random words are easy to keep on paper)")]
    ShortPassphrase(usize),
    /// The export cannot be opened with this passphrase.
    #[error("wrong passphrase for {0} (or the file was altered): the master key cannot be recovered with it")]
    WrongPassphrase(String),
    /// The file is not an export.
    #[error("{file} is not a Trireme recovery key export: {reason}")]
    Malformed {
        /// The file.
        file: String,
        /// What is wrong.
        reason: String,
    },
    /// The key file is missing, unreadable or not a master key.
    #[error(transparent)]
    Key(#[from] trireme_common::Error),
    /// The controller's master key is in an external KMS: there is no key
    /// file to export or import.
    #[error("`trireme-controller key {command}` is for the local key file, but this controller's master key is in an external KMS ({provider}), which never hands it out: \
             back the key up with the KMS's own means instead (Vault: snapshots of its storage, or an exportable transit key's backup; AWS KMS: the key stays in AWS, protect it from deletion and consider a multi-Region key); see docs/security.md")]
    ExternalKms {
        /// `export` or `import`.
        command: &'static str,
        /// The provider, as the controller's key source describes it.
        provider: String,
    },
    /// No passphrase was given and there is no terminal to ask on, or the
    /// two entries differ.
    #[error("{0}")]
    NoPassphrase(String),
    /// File system errors. The cause is part of the message, not a
    /// separate source, so `{:#}` does not print it twice.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        cause: std::io::Error,
    },
}

/// A result with a [`RecoveryError`].
pub type Result<T> = std::result::Result<T, RecoveryError>;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Kdf {
    name: String,
    version: u32,
    m_cost_kib: u32,
    t_cost: u32,
    p_cost: u32,
    salt: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Export {
    format: String,
    key_id: String,
    kdf: Kdf,
    cipher: String,
    sealed: String,
}

impl Export {
    fn aad(&self) -> Vec<u8> {
        let k = &self.kdf;
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}|{}",
            self.format,
            self.key_id,
            k.name,
            k.version,
            k.m_cost_kib,
            k.t_cost,
            k.p_cost,
            k.salt,
            self.cipher
        )
        .into_bytes()
    }
}

fn derive(passphrase: &str, kdf: &Kdf, file: &str) -> Result<DataKey> {
    let bad = |reason: String| RecoveryError::Malformed {
        file: file.to_string(),
        reason,
    };
    if kdf.name != "argon2id" || kdf.version != 0x13 {
        return Err(bad(format!(
            "key derivation {} version {} is not argon2id version 19",
            kdf.name, kdf.version
        )));
    }
    // Bounds keep a crafted file from asking for absurd memory or time.
    if !(8 * 1024..=4 * 1024 * 1024).contains(&kdf.m_cost_kib)
        || !(1..=64).contains(&kdf.t_cost)
        || !(1..=64).contains(&kdf.p_cost)
    {
        return Err(bad("argon2id parameters out of range".into()));
    }
    let salt = hex::decode(&kdf.salt).map_err(|_| bad("the salt is not hex".into()))?;
    let params = argon2::Params::new(kdf.m_cost_kib, kdf.t_cost, kdf.p_cost, Some(32))
        .map_err(|e| bad(format!("argon2id parameters: {e}")))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = [0u8; 32];
    argon
        .hash_password_into(passphrase.as_bytes(), &salt, &mut key)
        .map_err(|e| bad(format!("argon2id: {e}")))?;
    Ok(DataKey::from_bytes(key))
}

fn check_passphrase(passphrase: &str) -> Result<()> {
    let n = passphrase.chars().count();
    if n < MIN_PASSPHRASE {
        return Err(RecoveryError::ShortPassphrase(n));
    }
    Ok(())
}

/// The export of the master key in `key_file` under `passphrase`, and the
/// key's id.
///
/// # Errors
/// A short passphrase; an unreadable, too open or malformed key file.
pub fn export(key_file: &Path, passphrase: &str) -> Result<(String, String)> {
    check_passphrase(passphrase)?;
    let key = LocalKeyFile::load(key_file)?;
    let text = std::fs::read(key_file).map_err(|e| RecoveryError::Io {
        context: format!("reading {}", key_file.display()),
        cause: e,
    })?;
    let salt: [u8; 16] = random_bytes();
    let mut doc = Export {
        format: FORMAT.into(),
        key_id: key.key_id(),
        kdf: Kdf {
            name: "argon2id".into(),
            version: 0x13,
            m_cost_kib: 64 * 1024,
            t_cost: 3,
            p_cost: 4,
            salt: hex::encode(salt),
        },
        cipher: "aes-256-gcm".into(),
        sealed: String::new(),
    };
    let wrap = derive(passphrase, &doc.kdf, "the export")?;
    doc.sealed = hex::encode(wrap.seal(&doc.aad(), &text));
    let json = serde_json::to_string_pretty(&doc).expect("the export encodes to JSON") + "\n";
    Ok((json, key.key_id()))
}

/// Write `text` to a new file `path`, mode 0600; never overwrites.
///
/// # Errors
/// The file exists or cannot be written.
pub fn write_new(path: &Path, text: &[u8]) -> Result<()> {
    let io = |what: &str, e| RecoveryError::Io {
        context: format!("{what} {}", path.display()),
        cause: e,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                io(
                    "refusing to overwrite",
                    std::io::Error::other("the file exists; move it away or pick another path"),
                )
            } else {
                io("creating", e)
            }
        })?;
    f.write_all(text)
        .and_then(|()| f.sync_all())
        .map_err(|e| io("writing", e))
}

/// Open the export `text` (read from `file`) with `passphrase` and write
/// the master key to the new file `key_file` (mode 0600); returns the key
/// id. Refuses to overwrite an existing key file.
///
/// # Errors
/// A wrong passphrase or altered file; a malformed export; an existing or
/// unwritable key file.
pub fn import(file: &str, text: &str, passphrase: &str, key_file: &Path) -> Result<String> {
    let doc: Export = serde_json::from_str(text).map_err(|e| RecoveryError::Malformed {
        file: file.to_string(),
        reason: e.to_string(),
    })?;
    if doc.format != FORMAT || doc.cipher != "aes-256-gcm" {
        return Err(RecoveryError::Malformed {
            file: file.to_string(),
            reason: format!(
                "format {:?} with cipher {:?}; this trireme-controller reads {FORMAT} with aes-256-gcm",
                doc.format, doc.cipher
            ),
        });
    }
    if key_file.exists() {
        return Err(RecoveryError::Io {
            context: format!("refusing to overwrite {}", key_file.display()),
            cause: std::io::Error::other(
                "a key file is already there; import to a new path, compare, then move it into place",
            ),
        });
    }
    let wrap = derive(passphrase, &doc.kdf, file)?;
    let sealed = hex::decode(&doc.sealed).map_err(|_| RecoveryError::Malformed {
        file: file.to_string(),
        reason: "`sealed` is not hex".into(),
    })?;
    let plain = wrap
        .open(&doc.aad(), &sealed)
        .map_err(|_| RecoveryError::WrongPassphrase(file.to_string()))?;
    write_new(key_file, &plain)?;
    let loaded = LocalKeyFile::load(key_file).and_then(|k| {
        if k.key_id() == doc.key_id {
            Ok(k)
        } else {
            Err(trireme_common::Error::Key(format!(
                "the recovered key has id {}, the export says {}",
                k.key_id(),
                doc.key_id
            )))
        }
    });
    match loaded {
        Ok(k) => Ok(k.key_id()),
        Err(e) => {
            let _ = std::fs::remove_file(key_file);
            Err(e.into())
        }
    }
}

/// Read a passphrase from a file (first line). Refuses a file others can read.
///
/// # Errors
/// Unreadable or world-readable file.
pub fn passphrase_from_file(path: &Path) -> Result<String> {
    let io = |e| RecoveryError::Io {
        context: format!("reading the passphrase file {}", path.display()),
        cause: e,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.permissions().mode() & 0o007 != 0 {
        return Err(io(std::io::Error::other(format!(
            "others can read it (mode {:o}); run `chmod 600 {}`",
            meta.permissions().mode() & 0o777,
            path.display()
        ))));
    }
    let text = std::fs::read_to_string(path).map_err(io)?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// The recovery passphrase: the first line of `file`, else
/// `TRIREME_RECOVERY_PASSPHRASE`, else a prompt on the terminal (twice when
/// `confirm`).
///
/// # Errors
/// No source of a passphrase, entries that differ, terminal errors.
pub fn ask_passphrase(file: Option<&Path>, confirm: bool) -> Result<String> {
    use std::io::IsTerminal;
    if let Some(f) = file {
        return passphrase_from_file(f);
    }
    if let Ok(p) = std::env::var("TRIREME_RECOVERY_PASSPHRASE") {
        return Ok(p);
    }
    if !std::io::stdin().is_terminal() {
        return Err(RecoveryError::NoPassphrase(
            "no recovery passphrase: give --passphrase-file FILE or set TRIREME_RECOVERY_PASSPHRASE (or run on a terminal to be asked)".into(),
        ));
    }
    let first = prompt("recovery passphrase: ")?;
    if confirm && prompt("again: ")? != first {
        return Err(RecoveryError::NoPassphrase(
            "the two passphrases differ; nothing was written".into(),
        ));
    }
    Ok(first)
}

/// Read a line from the terminal without echo.
fn prompt(text: &str) -> Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    use std::io::{BufRead, Write};
    let io = |context: &str, e: std::io::Error| RecoveryError::Io {
        context: context.into(),
        cause: e,
    };
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .map_err(|e| io("opening the terminal to ask for the passphrase", e))?;
    let before = tcgetattr(&tty).map_err(|e| io("reading the terminal settings", e.into()))?;
    let mut quiet = before.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    tcsetattr(&tty, OptionalActions::Now, &quiet).map_err(|e| io("turning off echo", e.into()))?;
    let mut out = &tty;
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    let mut line = String::new();
    let read = std::io::BufReader::new(&tty).read_line(&mut line);
    let _ = tcsetattr(&tty, OptionalActions::Now, &before);
    let _ = out.write_all(b"\n");
    read.map_err(|e| io("reading the passphrase", e))?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_import_round_trip_and_wrong_passphrase() {
        let d = tempfile::tempdir().unwrap();
        let key = d.path().join("master.key");
        let k = LocalKeyFile::create(&key).unwrap();
        assert!(matches!(
            export(&key, "short"),
            Err(RecoveryError::ShortPassphrase(5))
        ));
        let (text, id) = export(&key, "correct horse battery").unwrap();
        assert_eq!(id, k.key_id());
        assert!(!text.contains(&std::fs::read_to_string(&key).unwrap()[22..]));

        let back = d.path().join("back.key");
        let e = import("x.json", &text, "wrong horse battery", &back).unwrap_err();
        assert!(matches!(e, RecoveryError::WrongPassphrase(_)), "{e}");
        assert!(!back.exists());
        assert_eq!(
            import("x.json", &text, "correct horse battery", &back).unwrap(),
            id
        );
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&key).unwrap());
        assert_eq!(
            std::fs::metadata(&back).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Never over an existing key file.
        let e = import("x.json", &text, "correct horse battery", &back).unwrap_err();
        assert!(e.to_string().contains("refusing to overwrite"), "{e}");

        // A changed parameter fails like a wrong passphrase.
        let other = d.path().join("other.key");
        let tampered = text.replace(
            &format!("\"key_id\": \"{id}\""),
            "\"key_id\": \"0000000000000000\"",
        );
        assert_ne!(tampered, text);
        assert!(matches!(
            import("x.json", &tampered, "correct horse battery", &other),
            Err(RecoveryError::WrongPassphrase(_))
        ));
        assert!(matches!(
            import("x.json", "{}", "correct horse battery", &other),
            Err(RecoveryError::Malformed { .. })
        ));
    }
}
