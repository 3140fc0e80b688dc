//! `trireme audit …` and `trireme mfa …`: the audit log, its hash-chain
//! check, and the operator's TOTP second factor.

use anyhow::{anyhow, Context};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use trireme_client::{with_totp, Controller};
use trireme_proto::v1::{
    AuditEntry, ListAuditRequest, MfaConfirmRequest, MfaEnrollRequest, VerifyAuditReply,
    VerifyAuditRequest,
};

use crate::output::{fields, json_str, or_dash, print_json, println, table, Format};
use crate::{AuditCmd, MfaCmd};

/// `--since`: an RFC 3339 time, or a duration back from now (`24h`, `7d`).
///
/// # Errors
/// A message naming both accepted forms.
pub fn parse_since(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(s) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| Utc::now().checked_sub_signed(d))
            .ok_or_else(|| format!("{s:?} reaches too far back")),
        Err(_) => Err(format!(
            "{s:?} is neither a time nor a duration; write e.g. 2026-03-01T00:00:00Z or 24h"
        )),
    }
}

/// Run an `audit` command.
///
/// # Errors
/// RPC errors; for `verify`, a broken chain or a mirror that disagrees.
pub async fn audit(c: &mut Controller, format: Format, cmd: AuditCmd) -> anyhow::Result<()> {
    match cmd {
        AuditCmd::Ls {
            since,
            actor,
            limit,
            json,
        } => {
            let r = c
                .operator
                .list_audit(ListAuditRequest {
                    since_unix: since.map_or(0, |t| t.timestamp()),
                    actor: actor.unwrap_or_default(),
                    limit: limit.unwrap_or(0),
                })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            if json || format == Format::Json {
                print_json(
                    &Value::Array(r.entries.iter().map(entry_json).collect()),
                    false,
                )
            } else if r.entries.is_empty() {
                println("no audit entries")
            } else {
                println(&entries_table(&r.entries))
            }
        }
        AuditCmd::Verify => {
            let r = c
                .operator
                .verify_audit(VerifyAuditRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            match format {
                Format::Json => print_json(&verify_json(&r), false)?,
                Format::Table => println(&verify_fields(&r))?,
            }
            verify_outcome(&r)
        }
    }
}

/// Run an `mfa` command.
///
/// # Errors
/// RPC errors (a wrong code included).
pub async fn mfa(
    c: &mut Controller,
    format: Format,
    cmd: MfaCmd,
    totp: Option<&str>,
) -> anyhow::Result<()> {
    match cmd {
        MfaCmd::Enroll => {
            let r = c
                .operator
                .mfa_enroll(with_totp(MfaEnrollRequest {}, totp)?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            match format {
                Format::Json => print_json(
                    &json!({
                        "account": r.account,
                        "secret": r.secret_base32,
                        "otpauth_uri": r.otpauth_uri,
                    }),
                    false,
                ),
                Format::Table => println(&format!(
                    "TOTP secret for {} (shown once; the controller keeps it sealed under its master key):\n\n{}\n\nAdd it to your authenticator app (type the secret, or turn the URI into a QR code), then run `trireme mfa confirm <code>` with the code it shows. Until then nothing changes.",
                    r.account,
                    fields(&[("secret", r.secret_base32.clone()), ("uri", r.otpauth_uri.clone())])
                )),
            }
        }
        MfaCmd::Confirm { code } => {
            let r = c
                .operator
                .mfa_confirm(MfaConfirmRequest { code })
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            match format {
                Format::Json => print_json(&json!({ "account": r.account, "confirmed": true }), false),
                Format::Table => println(&format!(
                    "MFA confirmed for {}: sensitive actions (policy apply, restore, restore tests, drills, catalog rebuild, key export, prune) now need --totp <code>",
                    r.account
                )),
            }
        }
    }
}

fn entries_table(entries: &[AuditEntry]) -> String {
    let rows = entries
        .iter()
        .map(|e| {
            let outcome = if e.reason.is_empty() {
                e.outcome.clone()
            } else {
                format!("{}: {}", e.outcome, e.reason)
            };
            vec![
                e.seq.to_string(),
                e.time.get(..19).map_or(e.time.clone(), |t| format!("{t}Z")),
                if e.role.is_empty() {
                    e.actor.clone()
                } else {
                    format!("{} ({})", e.actor, e.role)
                },
                or_dash(&e.peer),
                e.action.clone(),
                or_dash(&e.target),
                outcome,
            ]
        })
        .collect();
    table(
        &[
            "SEQ", "TIME", "ACTOR", "FROM", "ACTION", "TARGET", "OUTCOME",
        ],
        rows,
    )
}

/// One entry as JSON: every field, hashes included.
pub fn entry_json(e: &AuditEntry) -> Value {
    json!({
        "seq": e.seq,
        "time": e.time,
        "actor": e.actor,
        "role": json_str(&e.role),
        "action": e.action,
        "target": json_str(&e.target),
        "outcome": e.outcome,
        "reason": json_str(&e.reason),
        "peer": json_str(&e.peer),
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    })
}

fn verify_fields(r: &VerifyAuditReply) -> String {
    let chain = if r.first_broken_seq == 0 {
        format!("intact ({} entries)", r.entries_checked)
    } else {
        format!(
            "BROKEN at entry {} ({} entries before it verified): {}",
            r.first_broken_seq, r.entries_checked, r.problem
        )
    };
    let mut rows = vec![("chain", chain)];
    if r.head_seq > 0 {
        rows.push(("head", format!("entry {} hash {}", r.head_seq, r.head_hash)));
    }
    for m in &r.mirrors {
        let text = if !m.error.is_empty() {
            format!("cannot read the mirror: {}", m.error)
        } else if m.problems.is_empty() {
            format!("agrees ({} entries compared)", m.entries_compared)
        } else {
            format!("DISAGREES:\n{}", m.problems.join("\n"))
        };
        rows.push(("mirror", format!("{}: {text}", m.location)));
    }
    fields(&rows)
}

fn verify_json(r: &VerifyAuditReply) -> Value {
    json!({
        "ok": r.first_broken_seq == 0 && r.mirrors.iter().all(|m| m.problems.is_empty()),
        "entries_checked": r.entries_checked,
        "first_broken_seq": (r.first_broken_seq != 0).then_some(r.first_broken_seq),
        "problem": json_str(&r.problem),
        "head_seq": r.head_seq,
        "head_hash": json_str(&r.head_hash),
        "mirrors": r.mirrors.iter().map(|m| json!({
            "location": m.location,
            "entries_compared": m.entries_compared,
            "problems": m.problems,
            "error": json_str(&m.error),
        })).collect::<Vec<_>>(),
    })
}

/// Ok when the chain is whole and no mirror disagrees (an unreadable mirror
/// is reported, not failed on).
fn verify_outcome(r: &VerifyAuditReply) -> anyhow::Result<()> {
    if r.first_broken_seq != 0 {
        return Err(anyhow!(
            "the audit log is broken at entry {}: {}",
            r.first_broken_seq,
            r.problem
        ));
    }
    let bad: Vec<String> = r
        .mirrors
        .iter()
        .filter(|m| !m.problems.is_empty())
        .map(|m| format!("{} ({})", m.location, m.problems[0]))
        .collect();
    if !bad.is_empty() {
        return Err(anyhow!(
            "the audit log disagrees with its mirror at {}",
            bad.join(", ")
        ))
        .context("the catalog's audit log was rewritten, or a mirror was tampered with");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_time_or_a_duration() {
        assert_eq!(
            parse_since("2026-03-01T00:00:00Z").unwrap(),
            "2026-03-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        let t = parse_since("24h").unwrap();
        let ago = Utc::now() - t;
        assert!(ago.num_minutes() >= 24 * 60 - 1 && ago.num_minutes() <= 24 * 60 + 1);
        assert!(parse_since("yesterday").unwrap_err().contains("24h"));
    }

    #[test]
    fn a_broken_chain_fails_naming_the_entry() {
        let mut r = VerifyAuditReply {
            entries_checked: 4,
            ..Default::default()
        };
        assert!(verify_outcome(&r).is_ok());
        r.first_broken_seq = 5;
        r.problem = "entry 5 does not match its hash".into();
        let e = verify_outcome(&r).unwrap_err().to_string();
        assert!(e.contains("broken at entry 5"), "{e}");
        assert!(verify_fields(&r).contains("BROKEN at entry 5"));
    }
}
