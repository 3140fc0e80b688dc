//! What the agent decodes from the controller's `Session` stream: prost
//! decoding of `ControllerMessage`, then the agent's own check of an
//! assignment (`daemon::inbound::check_assignment`) before it acts on it.
//!
//! Beyond "no panic": an accepted job id names no path outside the agent's
//! directories (the scratch dir `work/<id>`, tidb's `backup-<id>`, redis's
//! `.<file>.trireme-<id>` stay single components under their parent).
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;
use prost::Message;
use trireme_agent::daemon::inbound::check_assignment;
use trireme_proto::v1::controller_message::Msg;
use trireme_proto::v1::ControllerMessage;

fuzz_target!(|data: &[u8]| {
    let Ok(m) = ControllerMessage::decode(data) else {
        return;
    };
    let bytes = m.encode_to_vec();
    let again = ControllerMessage::decode(bytes.as_slice()).expect("re-decode");
    assert_eq!(again.encode_to_vec(), bytes);
    if let Some(Msg::Assign(a)) = m.msg {
        if check_assignment(&a).is_ok() {
            for name in [
                a.job_id.clone(),
                format!("backup-{}", a.job_id),
                format!(".dump.rdb.trireme-{}", a.job_id),
            ] {
                let p = Path::new("/state/work").join(&name);
                assert!(
                    p.parent() == Some(Path::new("/state/work"))
                        && matches!(p.components().last(), Some(Component::Normal(_))),
                    "job id {:?} leaves the directory",
                    a.job_id
                );
            }
        }
    }
});
