//! The `Host` names the admin listener answers to.
//!
//! A web page can reach the admin listener on 127.0.0.1 by DNS rebinding:
//! its own name (`evil.example`) first resolves to the attacker's server,
//! then to 127.0.0.1, and the browser, believing it talks to the same
//! origin, sends the console's requests with `Host: evil.example`. The
//! token still guards the API, but `/metrics` and the console's page need
//! none, and a token typed into a page on that origin is the attacker's.
//! So the listener serves only requests naming it: an IP address (no
//! rebinding produces one: the browser sends the name it resolved),
//! `localhost`, or a name in `[admin] allowed_hosts`; on any port, since a
//! tunnel or a proxy may change it. A request without `Host` comes from no
//! browser and is served. Everything else gets 421.

use std::net::IpAddr;

/// The names, besides IP addresses and `localhost`, the admin listener
/// answers to.
#[derive(Debug, Clone, Default)]
pub struct AdminHosts {
    names: Vec<String>,
}

/// A name in `[admin] allowed_hosts` that is not a host name.
#[derive(Debug, thiserror::Error)]
#[error("[admin] allowed_hosts: {0:?} is not a host name (letters, digits, '-' and '.', no port)")]
pub struct BadHostName(String);

impl AdminHosts {
    /// The listener's names: `names` (host names, any letter case).
    pub fn new(names: &[String]) -> Result<Self, BadHostName> {
        let names = names
            .iter()
            .map(|name| {
                let lower = name.trim_end_matches('.').to_ascii_lowercase();
                let valid = !lower.is_empty()
                    && lower.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                valid.then_some(lower).ok_or_else(|| BadHostName(name.clone()))
            })
            .collect::<Result<_, _>>()?;
        Ok(AdminHosts { names })
    }

    /// Whether a request with this `Host` header (`None`: none) is for
    /// this listener.
    pub fn admits(&self, host: Option<&http::HeaderValue>) -> bool {
        let Some(host) = host else { return true };
        let Some(name) = host.to_str().ok().and_then(host_name) else { return false };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        name.parse::<IpAddr>().is_ok() || name == "localhost" || self.names.contains(&name)
    }

    /// The answer to a request for another name.
    pub fn refusal(&self, host: Option<&http::HeaderValue>) -> String {
        let host = host.map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned());
        format!(
            "host {:?} is not a name of this admin listener (a page using DNS rebinding \
             would send one): reach it by its IP address or localhost, or add the name \
             to [admin] allowed_hosts",
            host.unwrap_or_default()
        )
    }
}

/// The host of a `Host` value (`name`, `name:port`, `[v6]:port`), IPv6
/// without its brackets; `None` when it is no valid authority.
fn host_name(value: &str) -> Option<String> {
    let authority: http::uri::Authority = value.parse().ok()?;
    if value.contains('@') {
        return None;
    }
    let host = authority.host();
    Some(host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admits(hosts: &AdminHosts, value: &str) -> bool {
        hosts.admits(Some(&http::HeaderValue::from_str(value).unwrap()))
    }

    #[test]
    fn addresses_localhost_and_configured_names_only() {
        let hosts = AdminHosts::new(&["Admin.Internal".into()]).unwrap();
        for own in [
            "127.0.0.1:8081",
            "127.0.0.1",
            "10.0.0.7:9000",
            "[::1]:8081",
            "[::1]",
            "localhost",
            "LOCALHOST:8081",
            "localhost.:1",
            "admin.internal",
            "admin.internal:443",
        ] {
            assert!(admits(&hosts, own), "{own}");
        }
        for foreign in [
            "evil.example",
            "evil.example:8081",
            "localhost.evil.example",
            "127.0.0.1.nip.io:8081",
            "admin.internal.evil.example",
            "user@127.0.0.1",
            "",
            "[::1",
        ] {
            assert!(!admits(&hosts, foreign), "{foreign}");
        }
        assert!(hosts.admits(None), "no Host: no browser");
        assert!(AdminHosts::new(&["a:80".into()]).is_err());
        assert!(AdminHosts::new(&["".into()]).is_err());
    }
}
