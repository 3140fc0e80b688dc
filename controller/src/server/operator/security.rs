//! The operator service's checks: the caller's role (a refusal is audited)
//! and the TOTP second factor of sensitive actions (refusals audited, see
//! [`actions::second_factor`]).

use tonic::{Request, Status};
use trireme_net::{Identity, Role};

use super::{OperatorApi, OPERATE};
use crate::mfa::{Passed, TOTP_HEADER};
use crate::server::actions::{self, Caller};

/// The TOTP code a request carries in its metadata, if any.
pub(super) fn totp_code<T>(request: &Request<T>) -> Option<String> {
    request
        .metadata()
        .get(TOTP_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
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

    /// Check the caller's role for `action` (a refusal is audited); who
    /// calls and from where.
    pub(super) fn caller<T>(
        &self,
        request: &Request<T>,
        roles: &[Role],
        action: &str,
    ) -> Result<Caller, Status> {
        Ok(Caller {
            id: self.authorize(request, roles, action)?,
            peer: request.remote_addr(),
        })
    }

    /// The second factor for a sensitive action: the code in the request's
    /// metadata.
    pub(super) async fn second_factor<T>(
        &self,
        request: &Request<T>,
        caller: &Caller,
        action: &str,
    ) -> Result<Passed, Status> {
        let code = totp_code(request);
        Ok(actions::second_factor(&self.shared, caller, code.as_deref(), action).await?)
    }

    /// The operator role and the second factor, for a sensitive `action`.
    pub(super) async fn sensitive<T>(
        &self,
        request: &Request<T>,
        action: &str,
    ) -> Result<(Caller, Passed), Status> {
        let caller = self.caller(request, OPERATE, action)?;
        let passed = self.second_factor(request, &caller, action).await?;
        Ok((caller, passed))
    }
}
