//! `[cluster]`: several hosts sharing one NATS JetStream (docs/cluster.md).

use std::time::Duration;

use serde::Deserialize;

use crate::storage::jetstream::ClusterOptions;

/// `[cluster]`. Without `nats` (and without `--cluster`), the host runs
/// alone on its embedded store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The NATS servers, `nats://HOST:PORT[,...]`; `--cluster` and
    /// `PITSTOP_CLUSTER` override it.
    pub nats: Option<String>,
    /// Copies JetStream keeps of each stream (default 1; 3 on a NATS
    /// cluster of three or more servers).
    pub replicas: Option<usize>,
    /// How long one call to NATS may take, in milliseconds (default 2000):
    /// a request that needs NATS fails after it when NATS does not answer.
    pub timeout_ms: Option<u64>,
}

/// Why a cluster address is not valid.
#[derive(Debug, thiserror::Error)]
#[error("the cluster address {0:?} is not nats://HOST:PORT[,nats://HOST:PORT...]")]
pub struct BadClusterAddress(String);

impl ClusterConfig {
    /// How to reach the cluster named by `flag` (`--cluster`) or by the
    /// config; `None` runs alone.
    pub fn options(&self, flag: Option<&str>) -> Result<Option<ClusterOptions>, BadClusterAddress> {
        let Some(urls) = flag.or(self.nats.as_deref()) else { return Ok(None) };
        let servers: Vec<String> = urls.split(',').map(|url| url.trim().to_string()).collect();
        let valid = |url: &String| {
            url.strip_prefix("nats://").is_some_and(|rest| {
                rest.rsplit_once(':').is_some_and(|(host, port)| {
                    !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
                })
            })
        };
        if servers.is_empty() || !servers.iter().all(valid) {
            return Err(BadClusterAddress(urls.to_string()));
        }
        Ok(Some(ClusterOptions {
            servers,
            replicas: self.replicas.unwrap_or(1).max(1),
            timeout: Duration::from_millis(self.timeout_ms.unwrap_or(2000).max(1)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_overrides_the_config_and_bad_addresses_are_refused() {
        let config =
            ClusterConfig { nats: Some("nats://10.0.0.1:4222".into()), ..Default::default() };
        let from_config = config.options(None).unwrap().unwrap();
        assert_eq!(from_config.servers, ["nats://10.0.0.1:4222"]);
        let from_flag =
            config.options(Some("nats://127.0.0.1:4222, nats://127.0.0.1:4223")).unwrap().unwrap();
        assert_eq!(from_flag.servers, ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]);
        assert!(ClusterConfig::default().options(None).unwrap().is_none());
        for bad in ["127.0.0.1:4222", "nats://:4222", "nats://h:0", "nats://h", "http://h:1", ""] {
            assert!(config.options(Some(bad)).is_err(), "{bad:?} was accepted");
        }
    }
}
