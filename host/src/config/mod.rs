//! `pitstop.toml`: the platform's configuration file. Every field is
//! optional; unknown fields are an error, so a typo never goes unnoticed.
//!
//! Every option, with its default and what it does, is in
//! `pitstop.example.toml` at the repository root; a test below parses that
//! file and checks it sets every field, so the reference cannot drift from
//! this module. `docs/configuration.md` explains them.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

mod admin;
mod auth;
mod cluster;
mod component;
mod routes;
mod runtime;
pub mod starter;
pub use admin::AdminConfig;
pub use auth::{AuthConfig, JwtConfig, OneOrMany, PolicyConfig, PublicKeyConfig};
pub use cluster::{BadClusterAddress, ClusterConfig};
pub use component::{ComponentConfig, ReuseConfig};
pub use routes::{RouteConfig, RouteTarget};
pub use runtime::RuntimeConfig;

use crate::runtime::canary::CanaryPolicy;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Components to deploy at start, by name. A name that is also a
    /// built-in replaces the built-in.
    #[serde(default)]
    pub components: BTreeMap<String, ComponentConfig>,
    /// The route table; `None` keeps the built-in one.
    pub routes: Option<Vec<RouteConfig>>,
    /// Gateway limits.
    #[serde(default)]
    pub gateway: GatewayConfig,
    /// Runtime limits.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Admin API limits.
    #[serde(default)]
    pub admin: AdminConfig,
    /// Event delivery.
    #[serde(default)]
    pub bus: BusConfig,
    /// Credentials and the default route policy.
    #[serde(default)]
    pub auth: AuthConfig,
    /// When auto-rollback canaries are dropped or promoted.
    #[serde(default)]
    pub canary: CanaryPolicy,
    /// The cluster this host joins, if any.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// `[bus]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BusConfig {
    /// Deliveries of one event to one subscriber before it is dead-lettered
    /// (default 5, at least 1).
    pub max_attempts: Option<u32>,
    /// Wait before the first retry in milliseconds (default 200); doubles
    /// with each further retry.
    pub backoff_base_ms: Option<u64>,
    /// The longest wait between two attempts in milliseconds (default 30000).
    pub backoff_max_ms: Option<u64>,
}

/// `[gateway]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Largest request body in bytes.
    pub max_request_body: Option<usize>,
    /// Largest response body in bytes.
    pub max_response_body: Option<usize>,
    /// Time allowed to send the request head, in milliseconds.
    pub header_read_timeout_ms: Option<u64>,
    /// Time in-flight requests get to finish at shutdown, in milliseconds.
    pub shutdown_grace_ms: Option<u64>,
    /// One log line per request (target `pitstop::access`); off by default.
    pub access_log: Option<bool>,
    /// Route the built-in services' prefixes (`/users`, `/orders`,
    /// `/payments`) beside `[[routes]]` (default true); a configured route
    /// with the same prefix takes its place either way.
    pub builtin_routes: Option<bool>,
}

impl Config {
    /// The file at `path` if one is given ([`Config::load`]), else the
    /// built-in defaults.
    pub fn load_or_default(path: Option<&Path>) -> anyhow::Result<Config> {
        path.map_or_else(|| Ok(Config::default()), Config::load)
    }

    /// Read and check `path`; relative component paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for component in config.components.values_mut() {
            if let Some(path) = component.path.as_mut().filter(|p| p.is_relative()) {
                *path = base.join(&*path);
            }
        }
        for route in config.routes.iter().flatten() {
            route.target().with_context(|| format!("in config file {}", path.display()))?;
        }
        (config.canary.check())
            .map_err(|e| anyhow::anyhow!("in config file {}: [canary] {e}", path.display()))?;
        for key in &mut config.auth.jwt.public_keys {
            let path = key.path_mut();
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pitstop_gateway::auth::Access;
    use std::path::PathBuf;

    #[test]
    fn rejects_unknown_fields() {
        let error = toml::from_str::<Config>("[gateway]\nmax_body = 3\n").unwrap_err();
        assert!(error.to_string().contains("unknown field `max_body`"), "{error}");
    }

    #[test]
    fn reads_policies() {
        let config: Config = toml::from_str(
            "[auth]\ndefault = \"api-key\"\n[auth.api_keys]\nci = \"k\"\n\
             [[routes]]\nprefix = \"/x\"\ncomponent = \"x\"\n\
             auth = { read = \"public\", write = \"jwt\" }\nrate_limit = { per_second = 5 }\n",
        )
        .unwrap();
        let route = &config.routes.unwrap()[0];
        let policy = route.auth.unwrap().policy(route.rate_limit);
        assert_eq!((policy.read, policy.write), (Access::Public, Access::Jwt));
        assert_eq!(policy.rate_limit.unwrap().per_second, 5);
        assert!(matches!(config.auth.default, Some(PolicyConfig::All(Access::ApiKey))));
        assert!(
            toml::from_str::<Config>(
                "[[routes]]\nprefix = \"/x\"\ncomponent = \"x\"\nauth = \"jwtt\"\n"
            )
            .is_err()
        );
    }

    #[test]
    fn reads_routes_and_components() {
        let config: Config = toml::from_str(
            "[components.x]\npath = \"x.wasm\"\n[[routes]]\nprefix = \"/x\"\ncomponent = \"x\"\n",
        )
        .unwrap();
        assert_eq!(config.components["x"].path, Some(PathBuf::from("x.wasm")));
        assert_eq!(config.routes.unwrap()[0].prefix, "/x");
    }

    /// The reference file parses, and sets every option: the patterns
    /// below name every field (no `..`), so a new field fails to compile
    /// here until the example shows it too.
    #[test]
    fn the_example_config_sets_every_option() {
        let text = include_str!("../../../pitstop.example.toml");
        let config: Config = toml::from_str(text).expect("pitstop.example.toml parses");
        let Config { components, routes, gateway, runtime, admin, bus, auth, canary, cluster } =
            config;
        assert!(canary.promote_after_requests.is_some() && canary.promote_after_ms.is_some());
        let ClusterConfig { nats, replicas, timeout_ms } = cluster;
        assert!(nats.is_some() && replicas.is_some() && timeout_ms.is_some());
        let ComponentConfig {
            path: _,
            deadline_ms,
            max_memory,
            max_concurrency,
            max_parallel,
            max_log_lines,
            max_log_bytes,
            breaker,
            max_keyspace_bytes,
            max_write_set_bytes,
            max_component_memory,
            max_outbound_connections,
            idempotency_ttl_s,
            allowed_outbound_hosts,
            reuse: _,
        } = &components["payment"];
        let inventory = &components["inventory"];
        assert!(inventory.path.is_some());
        let Some(ReuseConfig { max_requests, max_memory: reuse_memory }) = inventory.reuse else {
            panic!("the example shows reuse");
        };
        assert!(max_requests.is_some() && reuse_memory.is_some());
        assert!(deadline_ms.is_some() && max_memory.is_some() && max_concurrency.is_some());
        assert!(max_parallel.is_some() && max_log_lines.is_some() && max_log_bytes.is_some());
        assert!(breaker.is_some() && max_keyspace_bytes.is_some() && max_write_set_bytes.is_some());
        assert!(allowed_outbound_hosts.is_some() && max_component_memory.is_some());
        assert!(max_outbound_connections.is_some() && idempotency_ttl_s.is_some());
        let routes = routes.expect("a route table");
        let RouteConfig {
            prefix: _,
            component: _,
            upstream: _,
            deadline_ms: _,
            auth: policy,
            rate_limit,
            pass_authorization,
        } = &routes[0];
        assert!(policy.is_some() && rate_limit.is_some() && pass_authorization.is_some());
        let GatewayConfig {
            max_request_body,
            max_response_body,
            header_read_timeout_ms,
            shutdown_grace_ms,
            access_log,
            builtin_routes,
        } = gateway;
        assert!(max_request_body.is_some() && max_response_body.is_some());
        assert!(header_read_timeout_ms.is_some() && shutdown_grace_ms.is_some());
        assert!(access_log.is_some() && builtin_routes.is_some());
        let RuntimeConfig {
            deadline_ms,
            max_call_depth,
            max_memory,
            max_instances,
            max_concurrency,
            max_parallel,
            max_log_lines,
            max_log_bytes,
            guest_threads,
            breaker,
            max_keyspace_bytes,
            max_write_set_bytes,
            max_component_memory,
            max_host_memory,
            min_free_disk_bytes,
            storage_cache_bytes,
            max_outbound_connections: runtime_connections,
            max_host_connections,
            idempotency_ttl_s: runtime_ttl,
        } = runtime;
        assert!(deadline_ms.is_some() && max_call_depth.is_some() && max_memory.is_some());
        assert!(max_instances.is_some() && max_concurrency.is_some() && max_parallel.is_some());
        assert!(max_log_lines.is_some() && max_log_bytes.is_some() && guest_threads.is_some());
        assert!(breaker.is_some() && max_keyspace_bytes.is_some() && max_write_set_bytes.is_some());
        assert!(max_component_memory.is_some() && max_host_memory.is_some());
        assert!(min_free_disk_bytes.is_some() && runtime_connections.is_some());
        assert!(storage_cache_bytes.is_some());
        assert!(max_host_connections.is_some() && runtime_ttl.is_some());
        let AdminConfig { max_upload, allowed_hosts } = admin;
        assert!(max_upload.is_some() && !allowed_hosts.is_empty());
        let BusConfig { max_attempts, backoff_base_ms, backoff_max_ms } = bus;
        assert!(max_attempts.is_some() && backoff_base_ms.is_some() && backoff_max_ms.is_some());
        let AuthConfig { default, jwt, api_keys } = auth;
        assert!(default.is_some() && !api_keys.is_empty());
        let JwtConfig { secret, public_keys, audience, issuer, leeway_s, roles_claim } = jwt;
        assert!(secret.is_some() && !public_keys.is_empty() && audience.is_some());
        assert!(issuer.is_some() && leeway_s.is_some() && roles_claim.is_some());
    }
}
