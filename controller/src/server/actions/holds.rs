//! Holds, tags and forget ([`crate::holds`]): the operator's actions on
//! one snapshot, each audited. Forget holds job dispatch like a prune
//! ([`super::super::prune_rpc::prune_now`]) and is refused while a job is
//! under way.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{blocking, mfa_note, Caller, Shared};
use crate::audit::Event;
use crate::error::{Error, Result};
use crate::holds::{self, Forgotten, Marks};
use crate::mfa::Passed;
use crate::server::agents::dispatch_soon;
use crate::snapshots::SnapshotRecord;
use crate::views;

/// The audit actions.
pub const HOLD: &str = "snapshot hold";
/// See [`HOLD`].
pub const UNHOLD: &str = "snapshot unhold";
/// See [`HOLD`].
pub const TAG: &str = "snapshot tag";
/// See [`HOLD`].
pub const FORGET: &str = "snapshot forget";

/// What the next prune does with a forgotten snapshot's data.
pub const FORGET_NOTE: &str = "its packs and index entries stay until the next prune, which reclaims the data no other snapshot uses";

/// Audit a refusal of `action` on snapshot `target`, and pass the error on.
fn refused(shared: &Shared, caller: &Caller, action: &str, target: &str, e: Error) -> Error {
    shared.audit(
        Event::by(&caller.id, action, target.to_string())
            .refused(e.to_string())
            .from_peer(caller.peer),
    );
    e
}

/// Hold snapshot `id` (or unique prefix).
///
/// # Errors
/// No reason, an `until` in the past, no such snapshot, catalog errors.
pub fn hold(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    reason: &str,
    until: Option<DateTime<Utc>>,
) -> Result<(SnapshotRecord, Marks)> {
    let s = views::find_snapshot(&shared.catalog, id)?;
    let now = shared.now();
    let marks =
        blocking(|| holds::hold(&shared.catalog, &s.id, reason, until, &caller.id.name, now))
            .map_err(|e| refused(shared, caller, HOLD, &s.id.to_hex(), e))?;
    let h = marks
        .hold
        .as_ref()
        .map(holds::Hold::describe)
        .unwrap_or_default();
    caller.done(
        shared,
        HOLD,
        format!("snapshot {} of {}: {h}", s.id.to_hex(), s.source),
    );
    Ok((s, marks))
}

/// Lift the hold of snapshot `id` (or unique prefix).
///
/// # Errors
/// Not held, no such snapshot, catalog errors.
pub fn unhold(
    shared: &Shared,
    caller: &Caller,
    passed: Passed,
    id: &str,
) -> Result<(SnapshotRecord, Marks)> {
    let s = views::find_snapshot(&shared.catalog, id)?;
    let lifted = blocking(|| holds::unhold(&shared.catalog, &s.id))
        .map_err(|e| refused(shared, caller, UNHOLD, &s.id.to_hex(), e))?;
    caller.done(
        shared,
        UNHOLD,
        format!(
            "snapshot {} of {}: lifted the hold {}{}",
            s.id.to_hex(),
            s.source,
            lifted.describe(),
            mfa_note(passed)
        ),
    );
    let marks = shared.catalog.marks_of(&s.id)?;
    Ok((s, marks))
}

/// Add and remove tags of snapshot `id` (or unique prefix).
///
/// # Errors
/// An invalid tag, nothing asked, no such snapshot, catalog errors.
pub fn tag(
    shared: &Shared,
    caller: &Caller,
    id: &str,
    add: &[String],
    remove: &[String],
) -> Result<(SnapshotRecord, Marks)> {
    let s = views::find_snapshot(&shared.catalog, id)?;
    let marks = blocking(|| holds::tag(&shared.catalog, &s.id, add, remove))
        .map_err(|e| refused(shared, caller, TAG, &s.id.to_hex(), e))?;
    caller.done(
        shared,
        TAG,
        format!(
            "snapshot {} of {}: +[{}] -[{}], now [{}]",
            s.id.to_hex(),
            s.source,
            add.join(","),
            remove.join(","),
            marks.tags.iter().cloned().collect::<Vec<_>>().join(",")
        ),
    );
    Ok((s, marks))
}

/// Forget snapshot `id` (or unique prefix) now: hold job dispatch, refuse
/// while a job is under way, [`holds::forget`], then send agents the jobs
/// queued meanwhile. Refusals are audited.
///
/// # Errors
/// The refusal; no such snapshot; catalog errors.
pub async fn forget(
    shared: &Arc<Shared>,
    caller: &Caller,
    passed: Passed,
    id: &str,
) -> Result<Forgotten> {
    let s = views::find_snapshot(&shared.catalog, id)?;
    let target = s.id.to_hex();
    let gate = shared.prune_gate.write().await;
    let outcome = async {
        crate::prune::check_idle(&shared.catalog)
            .map_err(|e| Error::Precondition(e.to_string().replace("prune", "forget")))?;
        holds::forget(&shared.catalog, &shared.replicator, &s.id, shared.now()).await
    }
    .await;
    drop(gate);
    for agent in shared.agents.connected() {
        dispatch_soon(shared, agent);
    }
    let done = outcome.map_err(|e| refused(shared, caller, FORGET, &target, e))?;
    let mut text = format!(
        "snapshot {target} of {} ({}): manifest deleted at {}",
        s.source,
        s.time.format("%Y-%m-%dT%H:%M:%SZ"),
        if done.removed_at.is_empty() {
            "no location".to_string()
        } else {
            done.removed_at.join(", ")
        }
    );
    if !done.pending.is_empty() {
        text.push_str(&format!(
            "; still at {} (a later prune removes it there)",
            done.pending
                .iter()
                .map(|(l, e)| format!("{l}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    text.push_str(mfa_note(passed));
    caller.done(shared, FORGET, text);
    Ok(done)
}
