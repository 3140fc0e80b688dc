//! `trireme prune`: the request, and the reply as a listing, tables and
//! JSON. Exit 1 when a location stopped part-way with an error (skipped
//! locations are reported, not failures: they are pruned by a later run).

use anyhow::bail;
use serde_json::{json, Value};
use trireme_proto::v1::{PruneLocation, PruneReply, PruneRequest, PruneSnapshot};

use trireme_client::{with_totp, Controller};

use crate::output::{json_str, json_time, print_json, println, size, table, time, Format};
use crate::PruneArgs;

/// Run `trireme prune` (with `--totp` / `TRIREME_TOTP`: a prune that
/// deletes is a sensitive action).
///
/// # Errors
/// RPC errors (e.g. jobs under way, no or a wrong TOTP code); a location
/// that failed part-way.
pub async fn run(c: &mut Controller, format: Format, args: PruneArgs) -> anyhow::Result<()> {
    let req = with_totp(
        PruneRequest {
            dry_run: args.dry_run,
            source: args.source.map(Into::into),
        },
        c.totp.as_deref(),
    )?;
    let r = c
        .operator
        .prune(req)
        .await
        .map_err(|s| c.error(s))?
        .into_inner();
    match format {
        Format::Json => print_json(&prune_json(&r), false)?,
        Format::Table => println(&prune_text(&r, args.show_kept || args.dry_run))?,
    }
    let failed: Vec<String> = r
        .locations
        .iter()
        .filter(|l| !l.error.is_empty())
        .map(|l| format!("{}: {}", l.name, l.error))
        .collect();
    if !failed.is_empty() {
        bail!("prune stopped part-way at {}", failed.join("; "));
    }
    Ok(())
}

fn short(id: &str) -> String {
    id.chars().take(12).collect()
}

fn snapshots_table(v: &[PruneSnapshot], what: &str) -> String {
    table(
        &["SNAPSHOT", "SOURCE", "TIME", what],
        v.iter()
            .map(|s| {
                vec![
                    short(&s.id),
                    s.source.clone(),
                    time(s.time_unix),
                    s.reason.clone(),
                ]
            })
            .collect(),
    )
}

fn locations_table(v: &[PruneLocation]) -> String {
    table(
        &[
            "LOCATION",
            "SNAPSHOTS",
            "PACKS",
            "INDEX",
            "FREED",
            "LOCKED",
            "STATE",
        ],
        v.iter()
            .map(|l| {
                let state = if !l.skipped.is_empty() {
                    format!("skipped: {}", l.skipped)
                } else if !l.error.is_empty() {
                    format!("error: {}", l.error)
                } else {
                    "ok".to_string()
                };
                vec![
                    l.name.clone(),
                    l.snapshots_removed.len().to_string(),
                    l.packs_deleted.to_string(),
                    format!("-{} +{}", l.index_deleted, l.index_written),
                    size(l.bytes_freed),
                    l.locked.len().to_string(),
                    state,
                ]
            })
            .collect(),
    )
}

/// The reply for people: what goes, per location, then remarks.
pub fn prune_text(r: &PruneReply, show_kept: bool) -> String {
    let mut out = Vec::new();
    let verb = if r.dry_run { "would remove" } else { "removed" };
    if r.removed.is_empty() {
        out.push(format!(
            "nothing to remove ({} snapshot(s) kept)",
            r.kept.len()
        ));
    } else {
        out.push(format!(
            "{verb} {} snapshot(s), keeping {}{}:",
            r.removed.len(),
            r.kept.len(),
            if r.dry_run {
                " (dry run: nothing deleted)"
            } else {
                ""
            }
        ));
        out.push(snapshots_table(&r.removed, "WHY"));
    }
    if show_kept && !r.kept.is_empty() {
        out.push(String::new());
        out.push("kept:".into());
        out.push(snapshots_table(&r.kept, "WHY KEPT"));
    }
    let held: Vec<&PruneSnapshot> = r.kept.iter().filter(|s| s.held).collect();
    if !held.is_empty() && !show_kept {
        out.push(String::new());
        out.push(format!(
            "held (kept whatever retention says): {}",
            held.len()
        ));
        out.push(snapshots_table(
            &held.into_iter().cloned().collect::<Vec<_>>(),
            "HOLD",
        ));
    }
    out.push(String::new());
    out.push(locations_table(&r.locations));
    let unused: u64 = r
        .locations
        .iter()
        .map(|l| l.unused_bytes)
        .max()
        .unwrap_or(0);
    if unused > 0 {
        out.push(format!(
            "note: up to {} of unused data stays inside packs that also hold kept data (packs are not rewritten)",
            size(unused)
        ));
    }
    for n in &r.notes {
        out.push(format!("note: {n}"));
    }
    out.join("\n")
}

fn snapshot_json(s: &PruneSnapshot) -> Value {
    json!({
        "id": s.id,
        "source": s.source,
        "time": json_time(s.time_unix),
        "reason": s.reason,
        "needed_by": json_str(&s.needed_by),
        "chain": json_str(&s.chain),
        "held": s.held,
    })
}

/// The reply as JSON.
pub fn prune_json(r: &PruneReply) -> Value {
    json!({
        "dry_run": r.dry_run,
        "removed": r.removed.iter().map(snapshot_json).collect::<Vec<_>>(),
        "kept": r.kept.iter().map(snapshot_json).collect::<Vec<_>>(),
        "locations": r.locations.iter().map(|l| json!({
            "name": l.name,
            "skipped": json_str(&l.skipped),
            "error": json_str(&l.error),
            "snapshots_removed": l.snapshots_removed,
            "packs_deleted": l.packs_deleted,
            "index_deleted": l.index_deleted,
            "index_written": l.index_written,
            "bytes_freed": l.bytes_freed,
            "locked": l.locked,
            "mixed_packs": l.mixed_packs,
            "unused_bytes": l.unused_bytes,
            "unindexed_packs": l.unindexed_packs,
        })).collect::<Vec<_>>(),
        "notes": r.notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply() -> PruneReply {
        PruneReply {
            dry_run: true,
            removed: vec![PruneSnapshot {
                id: "ab".repeat(32),
                source: "db-1/mongo".into(),
                time_unix: 1_700_000_000,
                reason: "outside every window".into(),
                ..Default::default()
            }],
            kept: vec![
                PruneSnapshot {
                    id: "cd".repeat(32),
                    source: "db-1/mongo".into(),
                    time_unix: 1_700_086_400,
                    reason: "newest, daily 2023-11-15".into(),
                    ..Default::default()
                },
                PruneSnapshot {
                    id: "ef".repeat(32),
                    source: "db-1/mongo".into(),
                    time_unix: 1_700_000_100,
                    reason: "needed by cdcdcdcd (tidb chain)".into(),
                    needed_by: "cd".repeat(32),
                    chain: "tidb".into(),
                    ..Default::default()
                },
            ],
            locations: vec![
                PruneLocation {
                    name: "loc1".into(),
                    snapshots_removed: vec!["ab".repeat(32)],
                    packs_deleted: 3,
                    index_deleted: 1,
                    index_written: 1,
                    bytes_freed: 3 << 20,
                    ..Default::default()
                },
                PruneLocation {
                    name: "loc3".into(),
                    skipped: "unreachable: no answer within 10s".into(),
                    ..Default::default()
                },
            ],
            notes: vec!["db-1/redis: no policy".into()],
        }
    }

    #[test]
    fn text_and_json_show_what_goes_and_where() {
        let r = reply();
        let t = prune_text(&r, true);
        assert!(
            t.contains("would remove 1 snapshot(s), keeping 2 (dry run"),
            "{t}"
        );
        assert!(
            t.contains("abababababab") && t.contains("outside every window"),
            "{t}"
        );
        assert!(
            t.contains("WHY KEPT") && t.contains("daily 2023-11-15"),
            "{t}"
        );
        assert!(t.contains("needed by cdcdcdcd (tidb chain)"), "{t}");
        assert!(!prune_text(&r, false).contains("WHY KEPT"));
        assert!(t.contains("3.0 MiB"), "{t}");
        assert!(t.contains("skipped: unreachable"), "{t}");
        assert!(t.contains("note: db-1/redis: no policy"), "{t}");
        let j = prune_json(&r);
        assert_eq!(j["dry_run"], true);
        assert_eq!(j["removed"][0]["source"], "db-1/mongo");
        assert_eq!(j["removed"][0]["needed_by"], Value::Null);
        assert_eq!(j["kept"][1]["needed_by"], "cd".repeat(32));
        assert_eq!(j["kept"][1]["chain"], "tidb");
        assert_eq!(j["locations"][0]["packs_deleted"], 3);
        assert_eq!(j["locations"][0]["skipped"], Value::Null);
        assert_eq!(
            j["locations"][1]["skipped"],
            "unreachable: no answer within 10s"
        );
    }
}
