//! Agents' certificates from bootstrap tokens.
//!
//! - [`EnrollApi`]: `EnrollService`, the one service of the enrollment
//!   listener (`enroll_listen`). That listener asks for no client
//!   certificate; it serves nothing else ([`serve`] builds its routes), so
//!   the main listener's rule "every RPC needs a client certificate" holds.
//! - [`TokenApi`]: `BootstrapTokenService` on the main mTLS listener:
//!   operators make (TOTP once enrolled), list and revoke tokens.
//!
//! Every enrollment and every refusal is audited with its reason. Failed
//! enrollments are limited per client address ([`Limiter`]): after
//! [`MAX_FAILURES`] within [`FAILURE_WINDOW`] the address is refused
//! unchecked for [`BACKOFF`]; the back-off is audited once, not each
//! attempt it refuses.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};
use trireme_net::Role;
use trireme_proto::v1 as pb;
use trireme_proto::v1::bootstrap_token_service_server::BootstrapTokenService;
use trireme_proto::v1::enroll_service_server::{EnrollService, EnrollServiceServer};

use super::actions::{self, Caller};
use super::Shared;
use crate::audit::Event;
use crate::bootstrap::{self, BootstrapToken, Refusal, Scope, TokenRequest};
use crate::config::enroll::EnrollSettings;
use crate::error::{Error, Result};

/// Failed enrollments from one address within [`FAILURE_WINDOW`] that start
/// a back-off.
pub const MAX_FAILURES: u32 = 5;
/// See [`MAX_FAILURES`].
pub const FAILURE_WINDOW: Duration = Duration::from_secs(10 * 60);
/// How long an address is refused unchecked after too many failures.
pub const BACKOFF: Duration = Duration::from_secs(10 * 60);

/// The audit action of an enrollment.
pub const ENROLL: &str = "agent enroll";

#[derive(Default)]
struct Failures {
    first: Option<DateTime<Utc>>,
    count: u32,
    until: Option<DateTime<Utc>>,
    audited: bool,
}

/// Failed enrollments per client address.
#[derive(Default)]
pub struct Limiter {
    by_addr: Mutex<HashMap<IpAddr, Failures>>,
}

impl Limiter {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.by_addr
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `Some((until, first))` while `addr` is backed off (`first`: this is
    /// the first attempt refused in this back-off, to audit).
    fn backed_off(&self, addr: IpAddr, now: DateTime<Utc>) -> Option<(DateTime<Utc>, bool)> {
        let mut m = self.lock();
        let f = m.get_mut(&addr)?;
        match f.until {
            Some(until) if now < until => {
                let first = !f.audited;
                f.audited = true;
                Some((until, first))
            }
            Some(_) => {
                m.remove(&addr);
                None
            }
            None => None,
        }
    }

    /// Count a failure; true when it starts a back-off.
    fn failed(&self, addr: IpAddr, now: DateTime<Utc>) -> bool {
        let mut m = self.lock();
        // Keep the table small: forget addresses that stopped failing.
        if m.len() > 10_000 {
            m.retain(|_, f| f.until.is_some_and(|u| now < u));
        }
        let f = m.entry(addr).or_default();
        let window = chrono::Duration::from_std(FAILURE_WINDOW).unwrap_or_default();
        if f.first.is_none_or(|t| now - t > window) {
            f.first = Some(now);
            f.count = 0;
        }
        f.count += 1;
        if f.count >= MAX_FAILURES {
            f.until = Some(now + chrono::Duration::from_std(BACKOFF).unwrap_or_default());
            f.audited = false;
            true
        } else {
            false
        }
    }
}

/// `EnrollService`: the enrollment listener's only service.
pub struct EnrollApi {
    shared: Arc<Shared>,
    settings: EnrollSettings,
    limiter: Limiter,
    /// One signature at a time: the CA's `issued.json` is not locked.
    signing: tokio::sync::Mutex<()>,
}

impl EnrollApi {
    /// The service over `shared` with the CA of `settings`.
    pub fn new(shared: Arc<Shared>, settings: EnrollSettings) -> Self {
        EnrollApi {
            shared,
            settings,
            limiter: Limiter::default(),
            signing: tokio::sync::Mutex::new(()),
        }
    }

    fn refuse(
        &self,
        name: &str,
        token_id: &str,
        peer: Option<std::net::SocketAddr>,
        why: String,
        status: fn(String) -> Status,
    ) -> Status {
        let now = self.shared.now();
        let mut why = why;
        if let Some(p) = peer {
            if self.limiter.failed(p.ip(), now) {
                why.push_str(&format!(
                    " (that was the {MAX_FAILURES}th failed enrollment from {} within {}: it is refused unchecked for {})",
                    p.ip(),
                    humantime::format_duration(FAILURE_WINDOW),
                    humantime::format_duration(BACKOFF)
                ));
            }
        }
        self.shared.audit(
            Event::actor(name, "agent", ENROLL, token_target(token_id))
                .refused(why.clone())
                .from_peer(peer),
        );
        status(why)
    }

    async fn sign(&self, name: &str, csr: &str) -> Result<trireme_net::tls::ca::Signed> {
        let _one = self.signing.lock().await;
        let dir = self.settings.ca_dir.clone();
        let (name, csr, days) = (name.to_string(), csr.to_string(), self.settings.cert_days);
        tokio::task::spawn_blocking(move || {
            trireme_net::tls::ca::sign_request(&dir, Role::Agent, &name, days, &csr)
        })
        .await
        .map_err(|e| Error::Internal(format!("signing task: {e}")))?
        .map_err(Error::from)
    }
}

fn token_target(id: &str) -> String {
    if id.is_empty() {
        "bootstrap token (unreadable)".to_string()
    } else {
        format!("bootstrap token {id}")
    }
}

/// The id part of a token as sent, for the audit log (never the secret).
fn shown_id(token: &str) -> String {
    let mut parts = token.trim().split('.');
    match (parts.next(), parts.next()) {
        (Some(bootstrap::TOKEN_PREFIX), Some(id))
            if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) =>
        {
            id.to_string()
        }
        _ => String::new(),
    }
}

#[tonic::async_trait]
impl EnrollService for EnrollApi {
    async fn enroll(
        &self,
        request: Request<pb::EnrollRequest>,
    ) -> std::result::Result<Response<pb::EnrollReply>, Status> {
        let peer = request.remote_addr();
        let now = self.shared.now();
        let r = request.into_inner();
        let id = shown_id(&r.token);
        if let Some((until, first)) = peer.and_then(|p| self.limiter.backed_off(p.ip(), now)) {
            let why = format!(
                "too many failed enrollments from {}: refused without checking until {}; fix the token or name, then try again after that",
                peer.map(|p| p.ip().to_string()).unwrap_or_default(),
                until.format("%Y-%m-%dT%H:%M:%SZ")
            );
            if first {
                self.shared.audit(
                    Event::actor(&r.name, "agent", ENROLL, token_target(&id))
                        .refused(format!(
                            "{why} (further attempts in this back-off are not audited one by one)"
                        ))
                        .from_peer(peer),
                );
            }
            return Err(Status::resource_exhausted(why));
        }
        if let Err(e) = trireme_net::tls::ca::check_name(&r.name) {
            return Err(self.refuse(
                &r.name,
                &id,
                peer,
                format!("{e}; the agent's name is its certificate's name"),
                Status::invalid_argument,
            ));
        }
        if r.csr_pem.trim().is_empty() || r.csr_pem.len() > 16 * 1024 {
            return Err(self.refuse(
                &r.name,
                &id,
                peer,
                "the request carries no certificate signing request (PEM, at most 16 KiB)".into(),
                Status::invalid_argument,
            ));
        }
        let redeemed =
            super::blocking(|| bootstrap::redeem(&self.shared.catalog, &r.token, &r.name, now))
                .map_err(Status::from)?;
        let token = match redeemed {
            Ok(t) => t,
            Err(refusal) => {
                let status: fn(String) -> Status = match refusal {
                    Refusal::WrongToken => Status::unauthenticated,
                    _ => Status::permission_denied,
                };
                return Err(self.refuse(&r.name, &id, peer, refusal.message(), status));
            }
        };
        let signed = match self.sign(&r.name, &r.csr_pem).await {
            Ok(s) => s,
            Err(e) => {
                // The agent got nothing for this use: give it back.
                if let Err(g) = super::blocking(|| {
                    bootstrap::give_back(&self.shared.catalog, &token.id, &r.name)
                }) {
                    tracing::error!(error = %g, token = %token.id, "cannot give back a bootstrap token's use");
                }
                let why = format!("cannot issue the certificate: {e}");
                self.shared.audit(
                    Event::actor(&r.name, "agent", ENROLL, token_target(&token.id))
                        .problem(why.clone())
                        .from_peer(peer),
                );
                return Err(match e {
                    Error::Common(trireme_common::Error::CertRequest(m)) => {
                        Status::invalid_argument(m)
                    }
                    other => Status::from(other),
                });
            }
        };
        let ca_path = self
            .settings
            .ca_dir
            .join(trireme_net::tls::ca::CA_CERT_FILE);
        let ca_pem = std::fs::read_to_string(&ca_path)
            .map_err(|e| Status::internal(format!("reading {}: {e}", ca_path.display())))?;
        self.shared.audit(
            Event::actor(
                &r.name,
                "agent",
                ENROLL,
                format!(
                    "certificate {} (role agent, until {}) with bootstrap token {} ({} use(s) left)",
                    signed.cert.serial, signed.cert.not_after, token.id, token.uses_left
                ),
            )
            .from_peer(peer),
        );
        Ok(Response::new(pb::EnrollReply {
            certificate_pem: signed.pem,
            ca_pem,
            serial: signed.cert.serial,
            not_after_unix: signed.cert.not_after.unix_timestamp(),
        }))
    }
}

/// Serve `EnrollService`, and nothing else, on `listener` over TLS without
/// client certificates, until `shutdown`.
///
/// # Errors
/// The server stopping on a transport error; unusable certificate files.
pub async fn serve(
    shared: Arc<Shared>,
    settings: EnrollSettings,
    listener: TcpListener,
    tls: Arc<trireme_net::tls::ReloadingServerConfig>,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<()> {
    let mut routes = tonic::service::Routes::builder();
    routes.add_service(EnrollServiceServer::new(EnrollApi::new(shared, settings)));
    trireme_net::tls::serve::serve_without_client_auth(routes.routes(), listener, tls, shutdown)
        .await
        .map_err(Error::from)
}

/// `BootstrapTokenService` (main listener, operators).
pub struct TokenApi {
    shared: Arc<Shared>,
}

impl TokenApi {
    /// The service over `shared`.
    pub fn new(shared: Arc<Shared>) -> Self {
        TokenApi { shared }
    }

    fn caller<T>(
        &self,
        request: &Request<T>,
        roles: &[Role],
        action: &str,
    ) -> std::result::Result<Caller, Status> {
        Ok(Caller {
            id: self.shared.authorize_audited(request, roles, action, "")?,
            peer: request.remote_addr(),
        })
    }

    async fn sensitive<T>(
        &self,
        request: &Request<T>,
        action: &str,
    ) -> std::result::Result<(Caller, crate::mfa::Passed), Status> {
        let caller = self.caller(request, &[Role::Operator], action)?;
        let code = request
            .metadata()
            .get(crate::mfa::TOTP_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let passed = actions::second_factor(&self.shared, &caller, code.as_deref(), action).await?;
        Ok((caller, passed))
    }
}

/// The audit actions of the token RPCs.
pub const TOKEN_CREATE: &str = "bootstrap token create";
/// See [`TOKEN_CREATE`].
pub const TOKEN_REVOKE: &str = "bootstrap token revoke";
/// See [`TOKEN_CREATE`].
pub const TOKEN_LIST: &str = "bootstrap token ls";

fn info(t: &BootstrapToken, now: DateTime<Utc>) -> pb::BootstrapTokenInfo {
    pb::BootstrapTokenInfo {
        id: t.id.clone(),
        scope: t.scope.describe(),
        created_by: t.created_by.clone(),
        created_unix: t.created.timestamp(),
        expires_unix: t.expires.timestamp(),
        uses: t.uses,
        uses_left: t.uses_left,
        revoked_unix: t.revoked.map(|r| r.timestamp()).unwrap_or(0),
        enrolled: t.enrolled.clone(),
        state: t.state(now).to_string(),
    }
}

#[tonic::async_trait]
impl BootstrapTokenService for TokenApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> std::result::Result<Response<pb::CreateTokenReply>, Status> {
        let (caller, passed) = self.sensitive(&request, TOKEN_CREATE).await?;
        let r = request.into_inner();
        let scope = match (r.agent.is_empty(), r.name_glob.is_empty()) {
            (false, true) => Scope::Agent(r.agent),
            (true, false) => Scope::Glob(r.name_glob),
            _ => {
                let why = "give exactly one of --agent NAME or --name-glob GLOB";
                self.shared.audit(
                    Event::by(&caller.id, TOKEN_CREATE, "")
                        .refused(why)
                        .from_peer(caller.peer),
                );
                return Err(Status::invalid_argument(why));
            }
        };
        let req = TokenRequest {
            scope,
            ttl: (r.ttl_seconds > 0).then(|| Duration::from_secs(r.ttl_seconds)),
            uses: (r.uses > 0).then_some(r.uses),
        };
        let now = self.shared.now();
        let made =
            super::blocking(|| bootstrap::create(&self.shared.catalog, &req, &caller.id.name, now));
        let (token, rec) = match made {
            Ok(m) => m,
            Err(e) => {
                self.shared.audit(
                    Event::by(&caller.id, TOKEN_CREATE, req.scope.describe())
                        .refused(e.to_string())
                        .from_peer(caller.peer),
                );
                return Err(e.into());
            }
        };
        self.shared.audit(
            Event::by(
                &caller.id,
                TOKEN_CREATE,
                format!(
                    "bootstrap token {} for {}, {} use(s), until {}{}",
                    rec.id,
                    rec.scope.describe(),
                    rec.uses,
                    rec.expires.format("%Y-%m-%dT%H:%M:%SZ"),
                    actions::mfa_note(passed)
                ),
            )
            .from_peer(caller.peer),
        );
        Ok(Response::new(pb::CreateTokenReply {
            token,
            info: Some(info(&rec, now)),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> std::result::Result<Response<pb::ListTokensReply>, Status> {
        self.caller(&request, &[Role::Operator], TOKEN_LIST)?;
        let now = self.shared.now();
        let all = super::blocking(|| bootstrap::list(&self.shared.catalog))?;
        Ok(Response::new(pb::ListTokensReply {
            tokens: all.iter().map(|t| info(t, now)).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> std::result::Result<Response<pb::BootstrapTokenInfo>, Status> {
        let (caller, passed) = self.sensitive(&request, TOKEN_REVOKE).await?;
        let id = request.into_inner().id;
        let now = self.shared.now();
        match super::blocking(|| bootstrap::revoke(&self.shared.catalog, &id, now)) {
            Ok(t) => {
                self.shared.audit(
                    Event::by(
                        &caller.id,
                        TOKEN_REVOKE,
                        format!(
                            "bootstrap token {id} ({} use(s) left unused){}",
                            t.uses_left,
                            actions::mfa_note(passed)
                        ),
                    )
                    .from_peer(caller.peer),
                );
                Ok(Response::new(info(&t, now)))
            }
            Err(e) => {
                self.shared.audit(
                    Event::by(&caller.id, TOKEN_REVOKE, format!("bootstrap token {id}"))
                        .refused(e.to_string())
                        .from_peer(caller.peer),
                );
                Err(e.into())
            }
        }
    }
}
