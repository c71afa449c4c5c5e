//! The gateway's options: limits and timeouts, and the access policies
//! of its routes.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::auth::{AuthSettings, RoutePolicy};

/// Limits and timeouts of the gateway.
#[derive(Debug, Clone)]
pub struct GatewayOptions {
    /// Largest request body accepted, in bytes; larger ones get 413 without
    /// being read to the end.
    pub max_request_body: usize,
    /// Largest response body a component may send, in bytes; a larger one
    /// is replaced by a 502.
    pub max_response_body: usize,
    /// How long a client may take to send the request head. Without it a
    /// client sending one byte a second holds a connection for ever.
    pub header_read_timeout: Duration,
    /// How long in-flight requests may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
    /// Who may call which route.
    pub access: AccessOptions,
    /// Write an access log line per request ([`ACCESS_LOG_TARGET`]).
    pub access_log: bool,
}

/// The tracing target of the access log: one INFO event per request with
/// its method, path, status, duration, component and trace id, written only
/// when [`GatewayOptions::access_log`] is on. A target of its own, so
/// `RUST_LOG` can filter it apart from everything else.
pub const ACCESS_LOG_TARGET: &str = "pitstop::access";

impl Default for GatewayOptions {
    fn default() -> Self {
        GatewayOptions {
            max_request_body: 1024 * 1024,
            max_response_body: 1024 * 1024,
            header_read_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            access: AccessOptions::default(),
            access_log: false,
        }
    }
}

/// Route policies and the credentials they are checked against.
#[derive(Clone)]
pub struct AccessOptions {
    /// Keys, secrets and API keys.
    pub settings: AuthSettings,
    /// The policy of a route that has none of its own (routes added through
    /// the admin API, say). It cannot carry a rate limit.
    pub default: RoutePolicy,
    /// Policies by route prefix.
    pub routes: BTreeMap<String, RoutePolicy>,
}

impl std::fmt::Debug for AccessOptions {
    // Keys and secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessOptions")
            .field("default", &self.default)
            .field("routes", &self.routes)
            .finish_non_exhaustive()
    }
}

impl Default for AccessOptions {
    /// Everything public: the library's default. The platform's is
    /// [`RoutePolicy::DEFAULT`].
    fn default() -> Self {
        AccessOptions {
            settings: AuthSettings::default(),
            default: RoutePolicy::all(crate::auth::Access::Public),
            routes: BTreeMap::new(),
        }
    }
}
