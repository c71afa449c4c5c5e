//! A component's answer as HTTP: its head and body checked against the
//! limits, the headers naming who answered.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::{GatewayError, Reply};

use crate::server::{COMPONENT_HEADER, VERSION_HEADER};

/// Most headers a component's answer may carry.
pub const MAX_RESPONSE_HEADERS: usize = 100;
/// Most bytes of header names and values a component's answer may carry.
/// Heads are bounded like bodies: a guest must not make the gateway send
/// megabytes of head, nor one so large that hyper gives up on the
/// connection without a word.
pub const MAX_RESPONSE_HEAD_BYTES: usize = 64 << 10;

/// The component's answer as HTTP, or why it cannot be sent (a 502).
/// `head`: it answers a HEAD request, so an empty answer keeps its
/// `content-length` (the size of the GET answer: what an upstream's HEAD
/// answer carries); hyper sets the length of any other body itself.
pub(crate) fn reply_response(
    reply: Reply,
    max_body: usize,
    head: bool,
) -> Result<Response<Full<Bytes>>, GatewayError> {
    if reply.body.len() > max_body {
        return Err(GatewayError::InvalidReply {
            component: reply.component,
            reason: format!("a body of {} bytes exceeds the limit of {max_body}", reply.body.len()),
        });
    }
    // An interim status (1xx) is not an answer: "101 Switching Protocols"
    // would hand the client's connection over to nobody.
    let status = match StatusCode::from_u16(reply.status) {
        Ok(status) if (200..=599).contains(&reply.status) => status,
        _ => {
            return Err(GatewayError::InvalidReply {
                component: reply.component,
                reason: format!("status {} is not a final HTTP status (200-599)", reply.status),
            });
        }
    };
    let head_bytes: usize =
        reply.headers.iter().map(|(name, value)| name.len() + value.len()).sum();
    if reply.headers.len() > MAX_RESPONSE_HEADERS || head_bytes > MAX_RESPONSE_HEAD_BYTES {
        return Err(GatewayError::InvalidReply {
            component: reply.component,
            reason: format!(
                "a response head of {} headers and {head_bytes} bytes exceeds the limit of \
                 {MAX_RESPONSE_HEADERS} headers and {MAX_RESPONSE_HEAD_BYTES} bytes",
                reply.headers.len()
            ),
        });
    }
    let response_body_empty = reply.body.is_empty();
    let mut response = Response::new(Full::new(reply.body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in reply.headers {
        if head && response_body_empty && name.eq_ignore_ascii_case("content-length") {
            if let Ok(length) = value.trim().parse::<u64>()
                && !headers.contains_key(header::CONTENT_LENGTH)
            {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
            }
            continue;
        }
        match (HeaderName::try_from(name.as_str()), HeaderValue::try_from(value.as_str())) {
            (Ok(name), Ok(value)) if !is_hop_by_hop(name.as_str()) => {
                headers.append(name, value);
            }
            _ => tracing::debug!(component = reply.component, name, "dropped an invalid header"),
        }
    }
    headers.insert(
        COMPONENT_HEADER,
        HeaderValue::try_from(reply.component.as_str()).unwrap_or(HeaderValue::from_static("?")),
    );
    // Version 0 is no component's: an HTTP upstream answered.
    if reply.version > 0 {
        headers.insert(VERSION_HEADER, HeaderValue::from(reply.version));
    }
    Ok(response)
}

/// `name` with every `_` read as `-`: how a server that maps headers to
/// CGI-style variables (`HTTP_X_FORWARDED_FOR`) sees it. A header whose
/// dashed name is one the gateway sets or strips must be judged by that
/// name, or `x_forwarded_for` passes for `x-forwarded-for`.
pub fn dashed(name: &str) -> std::borrow::Cow<'_, str> {
    if name.contains('_') {
        std::borrow::Cow::Owned(name.replace('_', "-"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// Headers that describe the connection, which belongs to the gateway
/// (`name` lower-case).
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
            | "te"
            | "trailer"
    )
}
