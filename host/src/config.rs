//! `pitstop.toml`: the platform's configuration file. Every field is
//! optional; unknown fields are an error, so a typo never goes unnoticed.
//!
//! ```toml
//! # Components to deploy at start besides (or instead of) the built-in
//! # user, order and payment. A relative path is relative to this file.
//! # Deployed as a new version when the file differs from the active one.
//! [components.inventory]
//! path = "inventory.wasm"
//!
//! # The route table. When present it replaces the built-in one
//! # (/users -> user, /orders -> order, /payments -> payment) entirely.
//! [[routes]]
//! prefix = "/inventory"
//! component = "inventory"
//!
//! [gateway]
//! max_request_body = 1048576   # bytes; larger bodies get 413
//! header_read_timeout_ms = 10000
//! shutdown_grace_ms = 10000
//!
//! [runtime]
//! deadline_ms = 5000           # per request, nested calls included
//! max_call_depth = 8
//! max_memory = 67108864        # bytes of linear memory per instance
//! max_instances = 1000         # instances alive at once, host-wide
//!
//! [admin]
//! max_upload = 52428800        # bytes; larger uploads get 413
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// The whole file.
#[derive(Debug, Default, Deserialize)]
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
}

/// `[admin]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Largest component upload in bytes (default 50 MiB).
    pub max_upload: Option<usize>,
}

/// A component loaded from a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentConfig {
    /// The `.wasm` component; relative paths are relative to the config file.
    pub path: PathBuf,
}

/// One route.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Path prefix, e.g. `/users`.
    pub prefix: String,
    /// Component name.
    pub component: String,
}

/// `[gateway]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Largest request body in bytes.
    pub max_request_body: Option<usize>,
    /// Time allowed to send the request head, in milliseconds.
    pub header_read_timeout_ms: Option<u64>,
    /// Time in-flight requests get to finish at shutdown, in milliseconds.
    pub shutdown_grace_ms: Option<u64>,
}

/// `[runtime]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Deadline of one request in milliseconds.
    pub deadline_ms: Option<u64>,
    /// Deepest chain of `services` calls.
    pub max_call_depth: Option<u32>,
    /// Linear memory limit per instance, in bytes.
    pub max_memory: Option<usize>,
    /// Instances alive at once across the host.
    pub max_instances: Option<u32>,
}

impl Config {
    /// Read and check `path`; relative component paths are resolved against
    /// the file's directory.
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).with_context(|| format!("in config file {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        for component in config.components.values_mut() {
            if component.path.is_relative() {
                component.path = base.join(&component.path);
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_unknown_fields() {
        let error = toml::from_str::<Config>("[gateway]\nmax_body = 3\n").unwrap_err();
        assert!(error.to_string().contains("unknown field `max_body`"), "{error}");
    }

    #[test]
    fn reads_routes_and_components() {
        let config: Config = toml::from_str(
            "[components.x]\npath = \"x.wasm\"\n[[routes]]\nprefix = \"/x\"\ncomponent = \"x\"\n",
        )
        .unwrap();
        assert_eq!(config.components["x"].path, PathBuf::from("x.wasm"));
        assert_eq!(config.routes.unwrap()[0].prefix, "/x");
    }
}
