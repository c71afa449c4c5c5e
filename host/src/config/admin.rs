//! `[admin]`: the admin listener's upload limit and the host names it
//! answers to.

use serde::Deserialize;

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Largest component upload in bytes (default 50 MiB).
    pub max_upload: Option<usize>,
    /// Host names the admin listener answers to besides IP addresses and
    /// `localhost` (any other `Host` gets 421: DNS rebinding).
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
}
