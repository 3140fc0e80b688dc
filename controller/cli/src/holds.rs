//! `trireme snapshots hold | unhold | tag | forget`: holds and tags, and
//! removing one snapshot now. `unhold` and `forget` carry `--totp` (they
//! make data deletable, or delete it).

use serde_json::json;
use trireme_client::{with_totp, Controller};
use trireme_proto::v1::{
    ForgetSnapshotReply, ForgetSnapshotRequest, HoldSnapshotRequest, TagSnapshotRequest,
    UnholdSnapshotRequest,
};

use crate::output::{json_time, one, Format};
use crate::view;
use crate::SnapshotsCmd;

/// Run one of the commands.
///
/// # Errors
/// RPC errors (refusals, wrong role, no or a wrong TOTP code).
pub async fn run(c: &mut Controller, format: Format, cmd: SnapshotsCmd) -> anyhow::Result<()> {
    let totp = c.totp.clone();
    let totp = totp.as_deref();
    let info = match cmd {
        SnapshotsCmd::Hold { id, reason, until } => c
            .operator
            .hold_snapshot(HoldSnapshotRequest {
                id,
                reason,
                until_unix: until.map_or(0, |t| t.timestamp()),
            })
            .await
            .map_err(|s| c.error(s))?
            .into_inner(),
        SnapshotsCmd::Unhold { id } => c
            .operator
            .unhold_snapshot(with_totp(UnholdSnapshotRequest { id }, totp)?)
            .await
            .map_err(|s| c.error(s))?
            .into_inner(),
        SnapshotsCmd::Tag { id, add, remove } => c
            .operator
            .tag_snapshot(TagSnapshotRequest { id, add, remove })
            .await
            .map_err(|s| c.error(s))?
            .into_inner(),
        SnapshotsCmd::Forget { id } => {
            let r = c
                .operator
                .forget_snapshot(with_totp(ForgetSnapshotRequest { id }, totp)?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            return one(format, forget_json(&r), || forget_text(&r));
        }
        SnapshotsCmd::Ls { .. } | SnapshotsCmd::Show { .. } => {
            unreachable!("listed and shown in commands")
        }
    };
    one(format, view::snapshot_json(&info), || {
        view::snapshot_fields(&info)
    })
}

fn forget_json(r: &ForgetSnapshotReply) -> serde_json::Value {
    json!({
        "id": r.id,
        "source": view::source_json(r.source.as_ref()),
        "time": json_time(r.time_unix),
        "removed_at": r.removed_at,
        "pending": r.pending,
        "note": r.note,
    })
}

/// What forget did, for people.
pub fn forget_text(r: &ForgetSnapshotReply) -> String {
    let mut out = vec![format!(
        "forgot snapshot {} of {}: manifest deleted at {}",
        r.id,
        view::source_text(r.source.as_ref()),
        if r.removed_at.is_empty() {
            "no location".to_string()
        } else {
            r.removed_at.join(", ")
        }
    )];
    for p in &r.pending {
        out.push(format!(
            "still at {p} (the next prune that can reach it removes it)"
        ));
    }
    if !r.note.is_empty() {
        out.push(format!("note: {}", r.note));
    }
    out.join("\n")
}
