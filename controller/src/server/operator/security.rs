//! The operator service's security RPCs and checks: role refusals and the
//! TOTP second factor (both audited), the audit log (list, verify against
//! the chain and the locations' mirrors), and MFA enrollment.

use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use trireme_net::{Identity, Role};
use trireme_proto::v1::{
    AuditEntry as WireAuditEntry, AuditMirrorCheck, ExportKeyReply, ExportKeyRequest,
    ListAuditReply, ListAuditRequest, MfaConfirmReply, MfaConfirmRequest, MfaEnrollReply,
    MfaEnrollRequest, VerifyAuditReply, VerifyAuditRequest,
};

use super::{limit, OperatorApi, OPERATE, READ};
use crate::audit::{AuditEntry, Event};
use crate::mfa::{MfaError, Passed, TOTP_HEADER};
use crate::server::agents::blocking;

pub(super) fn mfa_note(p: Passed) -> &'static str {
    match p {
        Passed::Code => " (with a TOTP code)",
        Passed::NotEnrolled => " (no second factor: not enrolled)",
    }
}

/// The TOTP code a request carries in its metadata, if any.
fn totp_code<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(TOTP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn audit_entry(e: AuditEntry) -> WireAuditEntry {
    WireAuditEntry {
        seq: e.seq,
        time: e.time.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true),
        actor: e.actor,
        role: e.role,
        action: e.action,
        target: e.target,
        outcome: e.outcome.as_str().to_string(),
        reason: e.reason,
        peer: e.peer,
        prev_hash: e.prev_hash,
        hash: e.hash,
    }
}

impl OperatorApi {
    /// Check the caller's role; a refusal is audited.
    pub(super) fn authorize<T>(
        &self,
        request: &Request<T>,
        roles: &[Role],
        action: &str,
    ) -> Result<Identity, Status> {
        self.shared.authorize_audited(request, roles, action, "")
    }

    /// The second factor for a sensitive action: the code in the request's
    /// metadata. Refusals are audited; those of a backed-off name (too many
    /// wrong codes) are counted into one entry per back-off instead
    /// ([`crate::server::audit_mfa_bursts`]).
    pub(super) async fn second_factor<T>(
        &self,
        request: &Request<T>,
        id: &Identity,
        action: &str,
    ) -> Result<Passed, Status> {
        let code = totp_code(request);
        match self
            .shared
            .mfa
            .check(&id.name, code.as_deref(), action, self.shared.now())
            .await
        {
            Ok(p) => Ok(p),
            Err(MfaError::Denied(m)) => {
                self.shared.audit(
                    Event::by(id, action, "second factor")
                        .refused(m.clone())
                        .from_peer(request.remote_addr()),
                );
                Err(Status::permission_denied(m))
            }
            Err(MfaError::Throttled(m)) => Err(Status::resource_exhausted(m)),
            Err(MfaError::Internal(e)) => Err(e.into()),
        }
    }

    /// Record an allowed action.
    /// Audit a refusal of `action` to `id` (the caller gets `why` too).
    pub(super) fn audit_refused(
        &self,
        id: &Identity,
        peer: Option<std::net::SocketAddr>,
        action: &str,
        why: &str,
    ) {
        self.shared
            .audit(Event::by(id, action, "").refused(why).from_peer(peer));
    }

    pub(super) fn audit_ok(
        &self,
        id: &Identity,
        peer: Option<std::net::SocketAddr>,
        action: &str,
        detail: String,
    ) {
        self.shared
            .audit(Event::by(id, action, detail).from_peer(peer));
    }

    /// `ExportKey`: the master key under a recovery passphrase, for a
    /// sensitive-action-cleared operator; audited either way.
    pub(super) async fn export_key_rpc(
        &self,
        request: Request<ExportKeyRequest>,
    ) -> Result<Response<ExportKeyReply>, Status> {
        let id = self.authorize(&request, OPERATE, "key export")?;
        let peer = request.remote_addr();
        let passed = self.second_factor(&request, &id, "key export").await?;
        let refuse = |why: String| {
            self.audit_refused(&id, peer, "key export", &why);
            why
        };
        let key_file = crate::recovery_key::local_key_file(&self.shared.key_source, "export")
            .map_err(|e| Status::failed_precondition(refuse(e.to_string())))?
            .to_path_buf();
        let passphrase = request.into_inner().passphrase;
        // argon2id takes a moment and 64 MiB: off the async workers.
        let (text, key_id) = tokio::task::spawn_blocking(move || {
            crate::recovery_key::export(&key_file, &passphrase)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(|e| match e {
            e @ crate::recovery_key::RecoveryError::ShortPassphrase(_) => {
                Status::invalid_argument(refuse(e.to_string()))
            }
            e => Status::internal(refuse(e.to_string())),
        })?;
        self.audit_ok(
            &id,
            peer,
            "key export",
            format!("master key {key_id}{}", mfa_note(passed)),
        );
        Ok(Response::new(ExportKeyReply {
            export: text,
            key_id,
        }))
    }

    pub(super) fn list_audit_rpc(
        &self,
        request: Request<ListAuditRequest>,
    ) -> Result<Response<ListAuditReply>, Status> {
        self.authorize(&request, READ, "audit ls")?;
        let r = request.into_inner();
        let since = (r.since_unix != 0)
            .then(|| DateTime::<Utc>::from_timestamp(r.since_unix, 0))
            .flatten();
        let actor = (!r.actor.is_empty()).then_some(r.actor.as_str());
        let entries = blocking(|| {
            self.shared
                .catalog
                .audit()
                .list(since, actor, limit(r.limit))
        })?;
        Ok(Response::new(ListAuditReply {
            entries: entries.into_iter().map(audit_entry).collect(),
        }))
    }

    pub(super) async fn verify_audit_rpc(
        &self,
        request: Request<VerifyAuditRequest>,
    ) -> Result<Response<VerifyAuditReply>, Status> {
        let id = self.authorize(&request, READ, "audit verify")?;
        let peer = request.remote_addr();
        let report = blocking(|| self.shared.catalog.audit().verify());
        let mut mirrors = Vec::new();
        for (name, backend) in &self.shared.audit_mirrors {
            let mut check = AuditMirrorCheck {
                location: name.clone(),
                ..Default::default()
            };
            let mac_key = self.shared.custody.audit_mirror_key();
            match crate::audit::compare_mirror(self.shared.catalog.audit(), backend, Some(&mac_key))
                .await
            {
                Ok((n, problems)) => {
                    check.entries_compared = n;
                    check.problems = problems;
                }
                Err(e) => check.error = e.to_string(),
            }
            mirrors.push(check);
        }
        let broken = report.broken.clone();
        let mirror_problems: usize = mirrors.iter().map(|m| m.problems.len()).sum();
        let mut event =
            Event::by(&id, "audit verify", format!("{} entries", report.checked)).from_peer(peer);
        if let Some(b) = &broken {
            event = event.problem(b.problem.clone());
        } else if mirror_problems > 0 {
            event = event.problem(format!("{mirror_problems} disagreements with the mirrors"));
        }
        self.shared.audit(event);
        let (head_seq, head_hash) = report.head.unwrap_or_default();
        Ok(Response::new(VerifyAuditReply {
            entries_checked: report.checked,
            first_broken_seq: broken.as_ref().map_or(0, |b| b.seq),
            problem: broken.map(|b| b.problem).unwrap_or_default(),
            head_seq,
            head_hash,
            mirrors,
        }))
    }

    pub(super) async fn mfa_enroll_rpc(
        &self,
        request: Request<MfaEnrollRequest>,
    ) -> Result<Response<MfaEnrollReply>, Status> {
        let id = self.authorize(&request, OPERATE, "mfa enroll")?;
        let peer = request.remote_addr();
        let code = totp_code(&request);
        match self
            .shared
            .mfa
            .enroll(&id.name, code.as_deref(), self.shared.now())
            .await
        {
            Ok(e) => {
                self.audit_ok(
                    &id,
                    peer,
                    "mfa enroll",
                    "new TOTP secret (unconfirmed)".into(),
                );
                Ok(Response::new(MfaEnrollReply {
                    account: id.name.clone(),
                    secret_base32: e.secret_base32,
                    otpauth_uri: e.uri,
                }))
            }
            Err(MfaError::Denied(m)) => {
                self.audit_refused(&id, peer, "mfa enroll", &m);
                Err(Status::permission_denied(m))
            }
            Err(MfaError::Throttled(m)) => Err(Status::resource_exhausted(m)),
            Err(MfaError::Internal(e)) => Err(e.into()),
        }
    }

    pub(super) async fn mfa_confirm_rpc(
        &self,
        request: Request<MfaConfirmRequest>,
    ) -> Result<Response<MfaConfirmReply>, Status> {
        let id = self.authorize(&request, OPERATE, "mfa confirm")?;
        let peer = request.remote_addr();
        let code = request.into_inner().code;
        match self
            .shared
            .mfa
            .confirm(&id.name, &code, self.shared.now())
            .await
        {
            Ok(()) => {
                self.audit_ok(&id, peer, "mfa confirm", "TOTP enrollment confirmed".into());
                Ok(Response::new(MfaConfirmReply {
                    account: id.name.clone(),
                }))
            }
            Err(MfaError::Denied(m)) => {
                self.audit_refused(&id, peer, "mfa confirm", &m);
                Err(Status::permission_denied(m))
            }
            Err(MfaError::Throttled(m)) => Err(Status::resource_exhausted(m)),
            Err(MfaError::Internal(e)) => Err(e.into()),
        }
    }
}
