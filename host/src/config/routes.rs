//! `[[routes]]`: one route of the table, and where it leads (a component,
//! or an HTTP upstream).

use serde::Deserialize;

use crate::config::PolicyConfig;
use pitstop_gateway::ratelimit::RateLimit;

/// One route.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, e.g. `/users`.
    pub prefix: String,
    /// Component name; or else `upstream`.
    pub component: Option<String>,
    /// An HTTP server the route forwards to instead, `http://HOST[:PORT]`
    /// ([`crate::upstream`]).
    pub upstream: Option<String>,
    /// How long the upstream may take, in milliseconds (default: the
    /// `[runtime]` deadline). Upstream routes only: a component's deadline
    /// is its own setting.
    pub deadline_ms: Option<u64>,
    /// Who may call it (default: `[auth] default`).
    pub auth: Option<PolicyConfig>,
    /// Requests per client identity.
    pub rate_limit: Option<RateLimit>,
    /// Pass the client's `Authorization` header on to the component (by
    /// default the gateway keeps it).
    pub pass_authorization: Option<bool>,
}

/// Where a route leads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteTarget<'a> {
    /// A component, by name.
    Component(&'a str),
    /// An HTTP server, `http://HOST[:PORT]`, with its deadline if set.
    Upstream(&'a str, Option<u64>),
}

impl RouteConfig {
    /// Where the route leads: a component or an upstream, never both or
    /// neither; `deadline_ms` only with an upstream.
    pub fn target(&self) -> anyhow::Result<RouteTarget<'_>> {
        let prefix = &self.prefix;
        match (&self.component, &self.upstream, self.deadline_ms) {
            (Some(component), None, None) => Ok(RouteTarget::Component(component)),
            (None, Some(upstream), deadline) => Ok(RouteTarget::Upstream(upstream, deadline)),
            (Some(_), None, Some(_)) => anyhow::bail!(
                "route {prefix}: deadline_ms applies to upstream routes; a component's deadline \
                 is set in [components.NAME]"
            ),
            (Some(_), Some(_), _) => {
                anyhow::bail!("route {prefix}: give either component or upstream, not both")
            }
            (None, None, _) => anyhow::bail!("route {prefix}: give a component or an upstream"),
        }
    }
}
