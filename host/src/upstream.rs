//! HTTP upstreams: routes that lead to an HTTP server instead of a
//! component (`[[routes]] prefix = "/legacy" upstream = "http://HOST:PORT"`),
//! so a monolith's paths can move to components one prefix at a time (the
//! strangler fig).
//!
//! The gateway treats an upstream like a component: the route's policy and
//! rate limit, the client's `pitstop-*` headers dropped and the verified
//! identity, trace context and request id set, body limits. Here the
//! request is forwarded with a deadline and through a circuit breaker of
//! the upstream's own; a connection refused, a timeout or a 5xx counts as a
//! failure, as a trap or 5xx does for a component (not a timeout after the
//! client took more than half the deadline to send its body).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use pitstop_gateway::{InvokeError, Reply, Request};

use crate::resilience::breaker::{Breaker, BreakerConfig, State, SystemClock};

/// The prefix of an upstream's name, where a component's name would be
/// (metrics, `pitstop-component`, `/ready`): `upstream:HOST:PORT`.
pub const NAME_PREFIX: &str = "upstream:";

/// Why an upstream address is refused.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Not `http://HOST[:PORT]`.
    #[error(
        "upstream {0:?} must be http://HOST[:PORT] (no path, query or credentials; \
         https is not supported yet)"
    )]
    InvalidAddress(String),
    /// Two routes to one server with different deadlines.
    #[error("routes to upstream {0} give different deadline_ms; give them the same")]
    ConflictingDeadlines(String),
    /// The system gave no random bytes for the gateway's `via` token.
    #[error("no randomness for the gateway's via token: {0}")]
    NoRandomness(String),
}

/// One upstream server.
struct Upstream {
    /// `HOST:PORT`, for the URL and the `host` header.
    authority: http::uri::Authority,
    breaker: Breaker,
    deadline: Duration,
    /// Requests it may have in flight; beyond that, 503 at once (a slow
    /// upstream must not pile up every client's request in the host).
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// Every configured upstream, by name.
#[derive(Clone, Default)]
pub struct Upstreams {
    by_name: Arc<HashMap<String, Upstream>>,
    client: Option<Client<HttpConnector, Full<Bytes>>>,
    max_response_body: usize,
    /// This gateway's `via` entry, random per process: `1.1 pitstop-<hex>`.
    via: String,
}

/// What an upstream needs besides its address.
#[derive(Debug, Clone, Copy)]
pub struct UpstreamSettings {
    /// How long it may take to answer, from when the gateway read the
    /// request head.
    pub deadline: Duration,
    /// When its circuit opens.
    pub breaker: BreakerConfig,
    /// Requests in flight at once.
    pub max_concurrency: u32,
}

impl Upstreams {
    /// Upstreams for `addresses` (`http://HOST:PORT`, each with its
    /// settings; the first settings given for a server apply to it);
    /// answers larger than `max_response_body` get 502.
    pub fn new(
        addresses: &[(String, UpstreamSettings)],
        max_response_body: usize,
    ) -> Result<Upstreams, UpstreamError> {
        let mut by_name = HashMap::new();
        for (address, settings) in addresses {
            let authority = parse(address)?;
            let name = name_of(&authority);
            if by_name.get(&name).is_some_and(|u: &Upstream| u.deadline != settings.deadline) {
                return Err(UpstreamError::ConflictingDeadlines(name));
            }
            by_name.entry(name.clone()).or_insert_with(|| Upstream {
                breaker: Breaker::new(
                    name.as_str().into(),
                    settings.breaker,
                    Arc::new(SystemClock),
                ),
                authority,
                deadline: settings.deadline,
                in_flight: Arc::new(tokio::sync::Semaphore::new(settings.max_concurrency as usize)),
            });
        }
        let client = (!by_name.is_empty()).then(|| {
            let mut connector = HttpConnector::new();
            connector.set_nodelay(true);
            connector.set_connect_timeout(Some(Duration::from_secs(2)));
            Client::builder(TokioExecutor::new()).build(connector)
        });
        let mut token = [0u8; 8];
        getrandom::fill(&mut token).map_err(|e| UpstreamError::NoRandomness(e.to_string()))?;
        let via = format!("1.1 pitstop-{}", hex::encode(token));
        Ok(Upstreams { by_name: Arc::new(by_name), client, max_response_body, via })
    }

    /// Whether `name` is an upstream's.
    pub fn contains(&self, name: &str) -> bool {
        self.by_name.contains_key(name)
    }

    /// Whether the upstream's circuit lets requests through (for `/ready`).
    pub fn is_open(&self, name: &str) -> bool {
        self.by_name.get(name).is_some_and(|u| u.breaker.snapshot().state == State::Open)
    }

    /// Forward `request` to upstream `name` (see [`Upstreams::contains`]).
    pub async fn forward(&self, name: &str, request: Request) -> Result<Reply, InvokeError> {
        let (Some(upstream), Some(client)) = (self.by_name.get(name), self.client.as_ref()) else {
            return Err(InvokeError::NotDeployed(name.to_string()));
        };
        // A request this gateway forwarded before is back: the upstream is
        // this gateway (or forwards to it). Passing it on again would
        // recurse until every slot is taken; refused before it takes one.
        let mut via = request.http.headers().get_all("via").iter().filter_map(|v| v.to_str().ok());
        if via.any(|value| value.split(',').any(|hop| hop.trim() == self.via)) {
            return Err(InvokeError::Loop(format!(
                "upstream {name} sent the request back to this gateway: a forwarding loop"
            )));
        }
        let Ok(_slot) = upstream.in_flight.clone().try_acquire_owned() else {
            return Err(InvokeError::Unavailable {
                component: name.to_string(),
                reason: "overloaded: every slot is taken".into(),
                retry_after: Duration::from_secs(1),
            });
        };
        if !is_plain(request.http.uri().path()) {
            return Err(InvokeError::Refused(format!(
                "path {:?} has an empty segment, an encoded '/' or '\\', or a backslash: \
                 an upstream could read it as another route's path",
                request.http.uri().path()
            )));
        }
        let permit =
            upstream.breaker.try_acquire().map_err(|refused| InvokeError::CircuitOpen {
                component: name.to_string(),
                retry_after: refused.retry_after,
            })?;
        // Given back if the client goes away mid-exchange (this future is
        // then dropped): a probe that is never reported would keep the
        // circuit half-open, refusing everything, for good.
        let mut permit = PermitGuard { breaker: &upstream.breaker, permit: Some(permit) };
        let deadline = tokio::time::Instant::from_std(request.received) + upstream.deadline;
        // What the client's upload of the body (the deadline counts from
        // the request head) left of the deadline.
        let given = deadline.saturating_duration_since(tokio::time::Instant::now());
        let exchange = self.exchange(client, upstream, name, request);
        let result = match tokio::time::timeout_at(deadline, exchange).await {
            Ok(result) => result,
            Err(_) => Err(InvokeError::Timeout {
                component: name.to_string(),
                deadline_ms: upstream.deadline.as_millis() as u64,
            }),
        };
        let success = matches!(&result, Ok(reply) if reply.status < 500);
        // A deadline missed with less than half of it left when the request
        // was passed on is the client's slow upload, not the upstream
        // failing: a few of those must not cut the upstream off for everyone.
        let short_of_time =
            given < upstream.deadline / 2 && matches!(result, Err(InvokeError::Timeout { .. }));
        if let Some(permit) = permit.permit.take() {
            if short_of_time {
                upstream.breaker.release(permit);
            } else {
                upstream.breaker.record(permit, success);
            }
        }
        result
    }

    async fn exchange(
        &self,
        client: &Client<HttpConnector, Full<Bytes>>,
        upstream: &Upstream,
        name: &str,
        request: Request,
    ) -> Result<Reply, InvokeError> {
        let unavailable = |reason: String| InvokeError::Unavailable {
            component: name.to_string(),
            reason,
            retry_after: Duration::from_secs(1),
        };
        let (head, body) = request.http.into_parts();
        let mut uri = http::Uri::builder().scheme("http").authority(upstream.authority.clone());
        if let Some(target) = head.uri.path_and_query() {
            uri = uri.path_and_query(target.clone());
        }
        let uri = uri
            .build()
            .map_err(|e| InvokeError::Internal(format!("building the upstream URL: {e}")))?;
        let mut builder = http::Request::builder().method(head.method).uri(uri);
        for (header, value) in &head.headers {
            // `x_real_ip` is `x-real-ip` to a server that reads headers as
            // CGI variables (the gateway already dropped `pitstop_*`).
            match pitstop_gateway::dashed(header.as_str()).as_ref() {
                // The client's host names the gateway; the upstream's is
                // set from the URL, and the client's is passed as
                // x-forwarded-host (replacing any the client sent, so the
                // upstream can trust it).
                "host" => builder = builder.header("x-forwarded-host", value),
                // Who the client is, as the client claims it: an upstream
                // trusting its proxy must not believe it.
                "x-forwarded-host" | "x-forwarded-for" | "x-forwarded-proto" | "x-real-ip"
                | "forwarded" => {}
                name if is_hop_by_hop(name) => {}
                _ => builder = builder.header(header, value),
            }
        }
        let outgoing = builder
            .header("x-forwarded-proto", "http")
            // Added to any `via` the client sent (RFC 9110 7.6.3), so a
            // request that comes back is known (see `forward`).
            .header("via", &self.via)
            .body(Full::new(body))
            .map_err(|e| InvokeError::Internal(format!("building the upstream request: {e}")))?;
        let response =
            client.request(outgoing).await.map_err(|e| unavailable(format!("upstream: {e}")))?;
        let (parts, mut body) = response.into_parts();
        // Read at most one byte past the limit: the gateway then answers
        // 502 for an oversized answer, as it does for a component's.
        let mut collected = bytes::BytesMut::new();
        while collected.len() <= self.max_response_body {
            let Some(frame) = body.frame().await else { break };
            let frame =
                frame.map_err(|e| unavailable(format!("reading the upstream's answer: {e}")))?;
            if let Ok(data) = frame.into_data() {
                let room = self.max_response_body + 1 - collected.len();
                collected.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
        let headers = parts
            .headers
            .iter()
            // `pitstop-*` answer headers are the gateway's to set. The
            // length goes along: the gateway sends it only on an answer to
            // HEAD, where it is the size of the GET answer.
            .filter(|(header, _)| {
                let header = header.as_str();
                (!is_hop_by_hop(header) || header == "content-length")
                    && !header.starts_with(pitstop_gateway::RESERVED_HEADER_PREFIX)
            })
            .filter_map(|(header, value)| {
                value.to_str().ok().map(|v| (header.as_str().to_string(), v.to_string()))
            })
            .collect();
        Ok(Reply {
            status: parts.status.as_u16(),
            headers,
            body: collected.freeze(),
            component: name.to_string(),
            version: 0,
        })
    }
}

/// The name of the upstream at `address`: [`NAME_PREFIX`] and `HOST:PORT`.
pub fn name_for(address: &str) -> Result<String, UpstreamError> {
    Ok(name_of(&parse(address)?))
}

fn name_of(authority: &http::uri::Authority) -> String {
    format!("{NAME_PREFIX}{authority}")
}

/// `http://HOST[:PORT][/]` to `HOST:PORT`.
fn parse(address: &str) -> Result<http::uri::Authority, UpstreamError> {
    let invalid = || UpstreamError::InvalidAddress(address.to_string());
    let uri: http::Uri = address.parse().map_err(|_| invalid())?;
    let plain_path =
        matches!(uri.path_and_query().map(|p| p.as_str()), None | Some("/") | Some(""));
    if uri.scheme_str() != Some("http") || !plain_path {
        return Err(invalid());
    }
    let authority = uri.authority().ok_or_else(invalid)?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return Err(invalid());
    }
    let port = authority.port_u16().unwrap_or(80);
    format!("{}:{port}", authority.host()).parse().map_err(|_| invalid())
}

/// A permit of the upstream's breaker, released unless reported.
struct PermitGuard<'a> {
    breaker: &'a Breaker,
    permit: Option<crate::resilience::breaker::Permit>,
}

impl Drop for PermitGuard<'_> {
    fn drop(&mut self) {
        if let Some(permit) = self.permit.take() {
            self.breaker.release(permit);
        }
    }
}

/// Whether `path` reads the same to any server: no `.` or `..` segments,
/// no empty segment but a trailing one, no percent-encoded `.`, `/` or
/// `\`, no backslash. The gateway has decoded escaped unreserved
/// characters and refused dot segments already (`pitstop_gateway::paths`);
/// what is left here is what a component reads as data (`%2F` in a key)
/// but a server may read as a separator: `/legacy/x%2F..%2Fadmin` would be
/// another route's path to a server that decodes it.
fn is_plain(path: &str) -> bool {
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2e", "%2f", "%5c"].iter().any(|e| lower.contains(e));
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let last = segments.len().saturating_sub(1);
    let odd_segment = segments
        .iter()
        .enumerate()
        .any(|(i, s)| *s == "." || *s == ".." || (s.is_empty() && i != last));
    path.starts_with('/') && !encoded && !odd_segment && !path.contains('\\')
}

/// Headers about one connection, which neither side's may carry over: the
/// gateway's, and those a proxy keeps to itself.
fn is_hop_by_hop(name: &str) -> bool {
    pitstop_gateway::is_hop_by_hop(name)
        || matches!(name, "proxy-connection" | "proxy-authenticate" | "proxy-authorization")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_an_upstream_could_read_otherwise_are_not_plain() {
        for plain in ["/legacy", "/legacy/", "/legacy/a/b", "/legacy/a.b/..c", "/legacy/%20x"] {
            assert!(is_plain(plain), "{plain}");
        }
        for odd in [
            "/legacy/x/../admin",
            "/legacy/./admin",
            "/legacy//admin",
            "/legacy/%2e%2e/admin",
            "/legacy/a%2Fb",
            "/legacy/a%5cb",
            "/legacy/a\\b",
        ] {
            assert!(!is_plain(odd), "{odd}");
        }
    }

    #[test]
    fn only_plain_http_addresses_are_accepted() {
        assert_eq!(parse("http://127.0.0.1:9000").unwrap().as_str(), "127.0.0.1:9000");
        assert_eq!(parse("http://legacy.internal/").unwrap().as_str(), "legacy.internal:80");
        for bad in [
            "https://127.0.0.1:9000",
            "127.0.0.1:9000",
            "http://127.0.0.1:9000/app",
            "http://127.0.0.1:9000?x=1",
            "http://user:pw@127.0.0.1:9000",
            "ftp://x",
            "",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
