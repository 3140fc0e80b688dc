//! What the controller decodes from an agent's `Session` stream: prost
//! decoding of `AgentMessage` (Hello, Heartbeat, Progress, Result), then the
//! checks the controller's handlers apply to its fields
//! (`server::agents::fuzz_agent_message`: claimed name, agent and source
//! names, job ids, snapshot ids, volumes, summary, times), plus the
//! `RegisterRequest` of the `Register` call. The agent's name (from its
//! certificate in real life) is fixed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use prost::Message;
use trireme_controller::server::agents::fuzz_agent_message;
use trireme_proto::v1::{AgentMessage, RegisterRequest};

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = AgentMessage::decode(data) {
        // What decodes re-encodes to bytes that decode to the same message.
        let bytes = msg.encode_to_vec();
        let again = AgentMessage::decode(bytes.as_slice()).expect("re-decode");
        assert_eq!(again.encode_to_vec(), bytes);
        let _ = fuzz_agent_message("web-1", msg);
    }
    if let Ok(r) = RegisterRequest::decode(data) {
        let _ = (r.agent_name.len(), r.sources.len());
    }
});
