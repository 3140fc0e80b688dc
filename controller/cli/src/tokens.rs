//! `trireme agents token create | ls | revoke`: bootstrap tokens, with
//! which an agent that has no certificate yet gets one from the
//! controller's enrollment listener. `create` and `revoke` carry `--totp`.

use serde_json::{json, Value};
use trireme_client::{with_totp, Controller};
use trireme_proto::v1::{
    BootstrapTokenInfo, CreateTokenRequest, ListTokensRequest, RevokeTokenRequest,
};

use crate::output::{json_time, list, one, table, time, Format};
use crate::TokenCmd;

fn token_json(t: &BootstrapTokenInfo) -> Value {
    json!({
        "id": t.id,
        "scope": t.scope,
        "state": t.state,
        "created_by": t.created_by,
        "created": json_time(t.created_unix),
        "expires": json_time(t.expires_unix),
        "uses": t.uses,
        "uses_left": t.uses_left,
        "revoked": json_time(t.revoked_unix),
        "enrolled": t.enrolled,
    })
}

fn tokens_table(ts: &[BootstrapTokenInfo]) -> String {
    table(
        &[
            "ID",
            "SCOPE",
            "STATE",
            "USES LEFT",
            "EXPIRES",
            "BY",
            "ENROLLED",
        ],
        ts.iter()
            .map(|t| {
                vec![
                    t.id.clone(),
                    t.scope.clone(),
                    t.state.clone(),
                    format!("{}/{}", t.uses_left, t.uses),
                    time(t.expires_unix),
                    t.created_by.clone(),
                    t.enrolled.join(","),
                ]
            })
            .collect(),
    )
}

/// Run one of the commands.
///
/// # Errors
/// RPC errors (refusals, wrong role, no or a wrong TOTP code), a bad --ttl.
pub async fn run(c: &mut Controller, format: Format, cmd: TokenCmd) -> anyhow::Result<()> {
    let totp = c.totp.clone();
    let totp = totp.as_deref();
    match cmd {
        TokenCmd::Create {
            agent,
            name_glob,
            ttl,
            uses,
        } => {
            let ttl = humantime::parse_duration(&ttl)
                .map_err(|e| anyhow::anyhow!("--ttl {ttl:?}: {e}; write e.g. \"1h\" or \"30m\""))?;
            let r = c
                .tokens
                .create_token(with_totp(
                    CreateTokenRequest {
                        agent: agent.unwrap_or_default(),
                        name_glob: name_glob.unwrap_or_default(),
                        ttl_seconds: ttl.as_secs(),
                        uses,
                    },
                    totp,
                )?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            let info = r.info.unwrap_or_default();
            let mut j = token_json(&info);
            j["token"] = Value::String(r.token.clone());
            one(format, j, || {
                format!(
                    "{}\n\nbootstrap token {} for {}, {} use(s), valid until {}.\n\
                     It is shown only this once: give it to the agent (bootstrap_token_file, or \
                     `trireme-agent enroll --token-file`), e.g. in a 0600 file or a Kubernetes Secret.",
                    r.token,
                    info.id,
                    info.scope,
                    info.uses,
                    time(info.expires_unix)
                )
            })
        }
        TokenCmd::Ls => {
            let r = c
                .tokens
                .list_tokens(ListTokensRequest {})
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            list(
                format,
                &r.tokens,
                token_json,
                tokens_table,
                "no bootstrap tokens (make one with `trireme agents token create`)",
            )
        }
        TokenCmd::Revoke { id } => {
            let t = c
                .tokens
                .revoke_token(with_totp(RevokeTokenRequest { id }, totp)?)
                .await
                .map_err(|s| c.error(s))?
                .into_inner();
            one(format, token_json(&t), || {
                format!(
                    "revoked bootstrap token {} ({} use(s) were left); certificates it got stay valid until revoked with `trireme cert revoke`",
                    t.id, t.uses_left
                )
            })
        }
    }
}
