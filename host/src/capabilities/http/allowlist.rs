//! Which hosts a component's outgoing `wasi:http` requests may reach:
//! `allowed_outbound_hosts` in its `[components.NAME]` section.
//!
//! An entry is `[SCHEME://]HOST[:PORT]`:
//! - `SCHEME` is `http` or `https`; without it, either.
//! - `HOST` is a DNS name, an IPv4 address or a bracketed IPv6 address,
//!   compared without regard to case; `*.example.com` matches every name
//!   below `example.com` (not `example.com` itself).
//! - `PORT` defaults to the scheme's (80, 443); without a scheme either, an
//!   entry allows both defaults.
//!
//! Anything else (a path, a query, credentials, a `.svc` name, which is
//! always a services call) is refused when the file is read, so a typo
//! cannot silently open or close a door.

use std::fmt;

use serde::Deserialize;

use crate::capabilities::http::SERVICE_DOMAIN;

/// One allowed destination.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct AllowedHost {
    scheme: Option<Scheme>,
    host: HostPattern,
    port: Option<u16>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scheme {
    Http,
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    /// This host only (lower-case).
    Exact(String),
    /// Any host ending in `.SUFFIX` (`SUFFIX` lower-case).
    Below(String),
}

/// Why an `allowed_outbound_hosts` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("allowed_outbound_hosts entry {entry:?}: {reason} (expected [http[s]://]HOST[:PORT])")]
pub struct InvalidAllowedHost {
    entry: String,
    reason: &'static str,
}

impl TryFrom<String> for AllowedHost {
    type Error = InvalidAllowedHost;

    fn try_from(entry: String) -> Result<Self, Self::Error> {
        let refuse = |reason| InvalidAllowedHost { entry: entry.clone(), reason };
        let (scheme, rest) = match entry.split_once("://") {
            Some(("http", rest)) => (Some(Scheme::Http), rest),
            Some(("https", rest)) => (Some(Scheme::Https), rest),
            Some(_) => return Err(refuse("the scheme must be http or https")),
            None => (None, entry.as_str()),
        };
        if rest.contains(['/', '?', '#']) {
            return Err(refuse("a host may not have a path or query"));
        }
        if rest.contains('@') {
            return Err(refuse("a host may not carry credentials"));
        }
        let authority: http::uri::Authority =
            rest.parse().map_err(|_| refuse("not a host name or address"))?;
        let port = match &rest[authority.host().len()..] {
            "" => None,
            after => match after.strip_prefix(':').map(str::parse::<u16>) {
                Some(Ok(port)) if port != 0 => Some(port),
                _ => return Err(refuse("a port is a number from 1 to 65535")),
            },
        };
        let name = authority.host().to_ascii_lowercase();
        if name.ends_with(SERVICE_DOMAIN) {
            return Err(refuse("NAME.svc is always a services call; it needs no entry"));
        }
        let host = match name.strip_prefix("*.") {
            Some(suffix) if is_dns_name(suffix) => HostPattern::Below(suffix.to_string()),
            Some(_) => return Err(refuse("a wildcard must be `*.` before a domain name")),
            None if name.contains('*') => {
                return Err(refuse("a wildcard must be `*.` before a domain name"));
            }
            None if is_dns_name(&name) || is_ip_literal(&name) => HostPattern::Exact(name),
            None => return Err(refuse("not a host name or address")),
        };
        Ok(AllowedHost { scheme, host, port })
    }
}

/// Letters, digits, `-` and `.` in non-empty labels.
fn is_dns_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('.').all(|label| {
            !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// `1.2.3.4` or `[::1]`.
fn is_ip_literal(name: &str) -> bool {
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .is_some_and(|n| n.parse::<std::net::Ipv6Addr>().is_ok())
}

impl AllowedHost {
    /// Whether a request to `uri` may go out under this entry.
    pub fn allows(&self, uri: &http::Uri) -> bool {
        let scheme = match uri.scheme_str() {
            Some(s) if s.eq_ignore_ascii_case("http") => Scheme::Http,
            Some(s) if s.eq_ignore_ascii_case("https") => Scheme::Https,
            _ => return false,
        };
        let Some(host) = uri.host() else { return false };
        let host = host.to_ascii_lowercase();
        let port = uri.port_u16().unwrap_or(scheme.default_port());
        self.scheme.is_none_or(|s| s == scheme)
            && self.port.unwrap_or(scheme.default_port()) == port
            && match &self.host {
                HostPattern::Exact(name) => *name == host,
                HostPattern::Below(suffix) => host
                    .strip_suffix(suffix.as_str())
                    .is_some_and(|h| h.len() > 1 && h.ends_with('.')),
            }
    }
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.scheme {
            Some(Scheme::Http) => f.write_str("http://")?,
            Some(Scheme::Https) => f.write_str("https://")?,
            None => {}
        }
        match &self.host {
            HostPattern::Exact(name) => f.write_str(name)?,
            HostPattern::Below(suffix) => write!(f, "*.{suffix}")?,
        }
        match self.port {
            Some(port) => write!(f, ":{port}"),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(text: &str) -> AllowedHost {
        AllowedHost::try_from(text.to_string()).unwrap()
    }

    fn allows(text: &str, uri: &str) -> bool {
        entry(text).allows(&uri.parse().unwrap())
    }

    #[test]
    fn reads_entries_and_prints_them_back() {
        for text in ["api.example.com", "http://127.0.0.1:8080", "https://*.example.com", "[::1]:9"]
        {
            assert_eq!(entry(text).to_string(), text);
        }
        assert_eq!(entry("API.Example.com").to_string(), "api.example.com");
    }

    #[test]
    fn refuses_what_is_not_a_host() {
        for (text, reason) in [
            ("", "not a host"),
            ("ftp://x.com", "scheme"),
            ("http://x.com/path", "path"),
            ("x.com?q", "path or query"),
            ("user:pw@x.com", "credentials"),
            ("x.com:", "a port"),
            ("x.com:0", "a port"),
            ("x.com:99999", "a port"),
            ("*", "wildcard"),
            ("a.*.com", "wildcard"),
            ("*.", "wildcard"),
            ("x_y.com", "not a host"),
            ("users.svc", "services call"),
            ("*.svc", "services call"),
            (" x.com", "not a host"),
        ] {
            let error = AllowedHost::try_from(text.to_string()).unwrap_err().to_string();
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn matches_scheme_host_and_port() {
        assert!(allows("api.example.com", "http://api.example.com/x"));
        assert!(allows("api.example.com", "https://API.example.com/x"));
        assert!(!allows("api.example.com", "http://api.example.com:8080/x"));
        assert!(!allows("api.example.com", "http://other.example.com/x"));
        assert!(!allows("api.example.com", "http://api.example.com.evil.net/x"));
        assert!(allows("http://127.0.0.1:8080", "http://127.0.0.1:8080/x"));
        assert!(!allows("http://127.0.0.1:8080", "https://127.0.0.1:8080/x"));
        assert!(!allows("http://127.0.0.1:8080", "http://127.0.0.1:8081/x"));
        assert!(allows("https://x.com", "https://x.com:443/"));
        assert!(!allows("https://x.com", "https://x.com:80/"));
        assert!(allows("x.com:9000", "https://x.com:9000/"));
        assert!(allows("[::1]:9", "http://[::1]:9/"));
    }

    #[test]
    fn a_wildcard_matches_names_below_its_domain_only() {
        assert!(allows("*.example.com", "http://a.example.com/"));
        assert!(allows("*.example.com", "http://a.b.example.com/"));
        assert!(!allows("*.example.com", "http://example.com/"));
        assert!(!allows("*.example.com", "http://badexample.com/"));
        assert!(!allows("*.example.com", "http://a.example.com.evil.net/"));
    }
}
