//! Attribution: in fleet mode every index object and snapshot manifest a
//! job writes names the job and its agent (`job`: the 16-byte job id, then
//! the agent's name in UTF-8) and carries a MAC (`mac`) under that job's
//! **attribution key**, which only the controller (it derives it from its
//! controller key, the job id and the agent name) and the agent running the
//! job ever hold. So the controller can tell which job wrote an object without
//! trusting anyone's word, and an object that another agent planted (even
//! sealed with a key it was given) does not verify. Objects the controller
//! writes itself (prune's replacement index objects) use the job id of all
//! zeros, [`CONTROLLER_JOB`]. See `docs/format.md` §7–8 and
//! `docs/security.md`.

use serde::Serialize;

use crate::index::IndexFile;
use crate::manifest::SnapshotManifest;

/// The job id of objects the controller writes itself.
pub const CONTROLLER_JOB: [u8; 16] = [0; 16];

const MAC_CONTEXT: &str = "trireme attribution mac v1";

/// The attribution key of job `job` run by `agent`, under the controller
/// key (the controller derives every job's key; nobody else can).
pub fn job_key(controller_key: &[u8; 32], job: &[u8; 16], agent: &str) -> [u8; 32] {
    let mut material = Vec::with_capacity(48 + agent.len());
    material.extend_from_slice(controller_key);
    material.extend_from_slice(job);
    material.extend_from_slice(agent.as_bytes());
    blake3::derive_key("trireme job attribution key v1", &material)
}

/// A key for one purpose (`context`) derived from the controller key.
pub fn controller_subkey(controller_key: &[u8; 32], context: &str) -> [u8; 32] {
    blake3::derive_key(context, controller_key)
}

/// Keyed BLAKE3 of `bytes` under `key`.
pub fn keyed_mac(key: &[u8; 32], bytes: &[u8]) -> [u8; 32] {
    *blake3::keyed_hash(key, bytes).as_bytes()
}

/// Who wrote an object: a job and the agent that ran it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writer {
    /// The job's 16-byte id ([`CONTROLLER_JOB`]: the controller).
    pub job: [u8; 16],
    /// The agent's name (empty for the controller).
    pub agent: String,
}

/// A job's id and attribution key: what a writer needs to attribute.
#[derive(Clone)]
pub struct Attribution {
    /// The job's 16-byte id.
    pub job: [u8; 16],
    /// The agent running it.
    pub agent: String,
    /// Its attribution key.
    pub key: [u8; 32],
}

impl std::fmt::Debug for Attribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Attribution(job {})", hex::encode(self.job))
    }
}

/// An object that can be attributed: its `job` and `mac` fields.
pub trait Attributable: Serialize + Clone {
    /// The `job` and `mac` fields.
    fn fields(
        &mut self,
    ) -> (
        &mut Option<serde_bytes::ByteBuf>,
        &mut Option<serde_bytes::ByteBuf>,
    );
    /// The same, read-only.
    fn fields_ref(&self) -> (&Option<serde_bytes::ByteBuf>, &Option<serde_bytes::ByteBuf>);

    /// Name `a`'s job and add the MAC.
    fn attribute(&mut self, a: &Attribution) {
        let (job, mac) = self.fields();
        let mut named = a.job.to_vec();
        named.extend_from_slice(a.agent.as_bytes());
        *job = Some(serde_bytes::ByteBuf::from(named));
        *mac = None;
        let m = mac_of(&a.key, self);
        *self.fields().1 = Some(serde_bytes::ByteBuf::from(m.to_vec()));
    }

    /// The job and agent the object names, if it names them (not yet
    /// verified).
    fn claimed(&self) -> Option<Writer> {
        let named = self.fields_ref().0.as_ref()?;
        if named.len() < 16 {
            return None;
        }
        let agent = std::str::from_utf8(&named[16..]).ok()?.to_string();
        Some(Writer {
            job: named[..16].try_into().expect("16 bytes"),
            agent,
        })
    }

    /// Whether the MAC verifies under `key` (the claimed job's attribution
    /// key).
    fn verify_attribution(&self, key: &[u8; 32]) -> bool {
        let Some(mac) = self.fields_ref().1.clone() else {
            return false;
        };
        let mut unsigned = self.clone();
        *unsigned.fields().1 = None;
        mac.as_slice() == mac_of(key, &unsigned)
    }

    /// The job and agent that verifiably wrote the object, with `key_of`
    /// giving a job's attribution key.
    fn attributed(&self, key_of: impl Fn(&[u8; 16], &str) -> [u8; 32]) -> Option<Writer> {
        let w = self.claimed()?;
        self.verify_attribution(&key_of(&w.job, &w.agent))
            .then_some(w)
    }
}

fn mac_of<T: Serialize>(key: &[u8; 32], value: &T) -> [u8; 32] {
    let mut cbor = Vec::new();
    ciborium::into_writer(value, &mut cbor).expect("CBOR to memory");
    *blake3::keyed_hash(&blake3::derive_key(MAC_CONTEXT, key), &cbor).as_bytes()
}

impl Attributable for IndexFile {
    fn fields(
        &mut self,
    ) -> (
        &mut Option<serde_bytes::ByteBuf>,
        &mut Option<serde_bytes::ByteBuf>,
    ) {
        (&mut self.job, &mut self.mac)
    }
    fn fields_ref(&self) -> (&Option<serde_bytes::ByteBuf>, &Option<serde_bytes::ByteBuf>) {
        (&self.job, &self.mac)
    }
}

impl Attributable for SnapshotManifest {
    fn fields(
        &mut self,
    ) -> (
        &mut Option<serde_bytes::ByteBuf>,
        &mut Option<serde_bytes::ByteBuf>,
    ) {
        (&mut self.job, &mut self.mac)
    }
    fn fields_ref(&self) -> (&Option<serde_bytes::ByteBuf>, &Option<serde_bytes::ByteBuf>) {
        (&self.job, &self.mac)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mac_binds_job_and_content() {
        let a = Attribution {
            job: [7; 16],
            agent: "web-1".into(),
            key: [9; 32],
        };
        let me = Writer {
            job: a.job,
            agent: a.agent.clone(),
        };
        let mut f = IndexFile::default();
        f.attribute(&a);
        assert_eq!(f.attributed(|_, _| a.key), Some(me.clone()));
        // Another key (another job's, or a guess) does not verify.
        assert_eq!(f.attributed(|_, _| [1; 32]), None);
        // Keys are derived per job and agent.
        let k = [3; 32];
        assert_ne!(job_key(&k, &a.job, "web-1"), job_key(&k, &a.job, "web-2"));
        assert_ne!(
            job_key(&k, &[1; 16], "web-1"),
            job_key(&k, &[2; 16], "web-1")
        );
        // Changing the content or the job breaks it.
        let mut g = f.clone();
        g.packs.push(crate::index::IndexPack {
            id: crate::Id([1; 32]),
            size: 1,
            key: vec![1],
            blobs: Vec::new(),
        });
        assert_eq!(g.attributed(|_, _| a.key), None);
        let mut h = f.clone();
        let mut other = a.job.to_vec();
        other.extend_from_slice(b"web-2");
        h.job = Some(serde_bytes::ByteBuf::from(other));
        assert_eq!(h.attributed(|_, _| a.key), None, "another agent's name");
        // Unattributed: nothing.
        assert_eq!(IndexFile::default().attributed(|_, _| a.key), None);
        // It survives the CBOR round trip.
        let mut cbor = Vec::new();
        ciborium::into_writer(&f, &mut cbor).unwrap();
        let back: IndexFile = ciborium::from_reader(cbor.as_slice()).unwrap();
        assert_eq!(back.attributed(|_, _| a.key), Some(me));
    }
}
