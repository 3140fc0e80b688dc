//! Conversions between the repository engine's types and the gRPC messages
//! both ends of the control plane use.

use trireme_proto::v1::JobSummary;

use trireme_common::manifest::Summary;

/// The wire form of a snapshot's counters (plus the job's duration).
pub fn summary_to_wire(s: &Summary, duration_secs: f64) -> JobSummary {
    JobSummary {
        files: s.files,
        dirs: s.dirs,
        others: s.others,
        bytes: s.bytes,
        files_unchanged: s.files_unchanged,
        bytes_read: s.bytes_read,
        new_chunks: s.new_chunks,
        new_bytes: s.new_bytes,
        packs: s.packs,
        uploaded_bytes: s.uploaded_bytes,
        errors: s.errors,
        duration_secs,
    }
}

/// A snapshot's counters from the wire.
pub fn summary_from_wire(s: &JobSummary) -> Summary {
    Summary {
        files: s.files,
        dirs: s.dirs,
        others: s.others,
        bytes: s.bytes,
        files_unchanged: s.files_unchanged,
        bytes_read: s.bytes_read,
        new_chunks: s.new_chunks,
        new_bytes: s.new_bytes,
        packs: s.packs,
        uploaded_bytes: s.uploaded_bytes,
        errors: s.errors,
    }
}
