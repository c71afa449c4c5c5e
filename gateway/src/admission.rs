//! Admission: each route's policy with its rate-limit buckets, and the
//! check a request passes before it is read (credentials, rate limit).

use crate::auth::{Authenticator, Identity, RoutePolicy};
use crate::ratelimit::Limiter;
use crate::{Backend, GatewayError};

use crate::server::{ClientAddr, Gateway};

/// A policy with its rate-limit buckets.
pub(crate) struct Guard {
    pub(crate) policy: RoutePolicy,
    pub(crate) limiter: Option<Limiter>,
}

impl Guard {
    pub(crate) fn new(policy: RoutePolicy, authenticator: &Authenticator) -> Result<Self, String> {
        for access in [policy.read, policy.write] {
            if !authenticator.supports(access) {
                return Err(format!(
                    "a policy needs {access:?} credentials, and none are configured"
                ));
            }
        }
        let limiter = policy.rate_limit.map(Limiter::new).transpose()?;
        Ok(Guard { policy, limiter })
    }
}

impl<B: Backend> Gateway<B> {
    /// The policy of route `prefix`: its own, else that of the longest
    /// configured prefix containing it (a component deployed at
    /// `/legacy/users` inside an upstream's `/legacy` keeps `/legacy`'s
    /// auth and rate limit), else the default.
    pub(crate) fn guard_for(&self, prefix: &str) -> &Guard {
        if let Some(guard) = self.inner.guards.get(prefix) {
            return guard;
        }
        (self.inner.guards.iter())
            .filter(|(outer, _)| crate::routes::prefix_matches(outer, prefix))
            .max_by_key(|(outer, _)| outer.len())
            .map_or(&self.inner.default_guard, |(_, guard)| guard)
    }

    /// Check the route's policy and rate limit; the verified caller, if any.
    pub(crate) fn admit<In>(
        &self,
        guard: &Guard,
        request: &http::Request<In>,
    ) -> Result<Option<Identity>, GatewayError> {
        let access = guard.policy.access(request.method());
        let identity = match access {
            // A route that passes the client's Authorization on leaves its
            // token to the server behind it.
            crate::auth::Access::Public if guard.policy.pass_authorization => None,
            crate::auth::Access::Public => self.inner.authenticator.identify(request.headers())?,
            _ => self.inner.authenticator.check(access, request.headers())?,
        };
        if let Some(limiter) = &guard.limiter {
            let client = match (&identity, request.extensions().get::<ClientAddr>()) {
                (Some(identity), _) => format!("{}:{}", identity.method, identity.subject),
                (None, Some(ClientAddr(addr))) => format!("ip:{}", addr.ip()),
                (None, None) => "unknown".to_string(),
            };
            if let Err(wait) = limiter.check(&client) {
                return Err(GatewayError::RateLimited { retry_after: wait });
            }
        }
        Ok(identity)
    }
}
