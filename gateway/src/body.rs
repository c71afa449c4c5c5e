//! Bodies in and out of the limits: a request read under its size limit
//! and deadline, a rejected one drained.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use http_body_util::BodyExt;
use hyper::body::Body;

use crate::trace::{TRACEPARENT, TraceContext};
use crate::{Backend, GatewayError, Request};

use crate::reply::dashed;
use crate::server::{Admitted, Gateway, REQUEST_ID_HEADER, RESERVED_HEADER_PREFIX};

/// Most bytes of a rejected body read (and dropped) before answering.
///
/// A client still sending its body when the answer comes would see a reset
/// connection instead of the 413 or 401 (hyper closes a connection whose
/// request body was left unread). Reading a bounded amount first lets
/// ordinary clients see the answer; beyond the bound, the client should use
/// `Expect: 100-continue` (curl does for large bodies), and then it sends
/// nothing before the answer.
pub const DRAIN_LIMIT: usize = 8 << 20;
/// Longest a rejected body is read for.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);

/// Collect a request body of at most `limit` bytes. A body that announces a
/// larger `Content-Length`, or grows past the limit while streaming, is
/// refused; it is never buffered beyond the limit.
pub async fn read_body<In>(
    headers: &http::HeaderMap,
    body: In,
    limit: usize,
) -> Result<Bytes, GatewayError>
where
    In: Body<Data = Bytes>,
    In::Error: std::error::Error + Send + Sync + 'static,
{
    let mut body = std::pin::pin!(body);
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|len| len > limit as u64) {
        if announced.is_some_and(|len| len <= DRAIN_LIMIT as u64) {
            discard_body(body.as_mut(), DRAIN_LIMIT).await;
        }
        return Err(GatewayError::BodyTooLarge { limit });
    }
    let mut collected = bytes::BytesMut::new();
    while let Some(frame) = body.as_mut().frame().await {
        let frame =
            frame.map_err(|e| GatewayError::BadRequest(format!("reading the body: {e}")))?;
        let Ok(data) = frame.into_data() else { continue };
        if collected.len() + data.len() > limit {
            discard_body(body.as_mut(), DRAIN_LIMIT.saturating_sub(collected.len())).await;
            return Err(GatewayError::BodyTooLarge { limit });
        }
        collected.extend_from_slice(&data);
    }
    Ok(collected.freeze())
}

/// Read and drop at most `cap` bytes of `body`, for at most two seconds.
pub async fn discard_body<In>(body: In, cap: usize)
where
    In: Body<Data = Bytes>,
{
    let mut body = std::pin::pin!(body);
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, async {
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.as_mut().frame().await {
            seen += frame.data_ref().map_or(0, Bytes::len);
            if seen > cap {
                break;
            }
        }
    })
    .await;
}

impl<B: Backend> Gateway<B> {
    pub(crate) async fn read_request<In>(
        &self,
        request: http::Request<In>,
        admitted: Admitted,
        trace: TraceContext,
        received: Instant,
        request_id: &str,
    ) -> Result<Request, GatewayError>
    where
        In: Body<Data = Bytes>,
        In::Error: std::error::Error + Send + Sync + 'static,
    {
        let Admitted { path, identity, pass_authorization } = admitted;
        let (mut parts, body) = request.into_parts();
        let body = read_body(&parts.headers, body, self.inner.options.max_request_body).await?;
        // A verified API key is long-lived: the component gets the key's
        // name as the subject, never the key itself.
        let strip_key = identity.as_ref().is_some_and(|i| i.method == "api-key");
        let passed = |name: &HeaderName, value: &HeaderValue| {
            // Judged as spelled with '-' for '_': servers that read headers
            // as CGI variables (WSGI, Rack, PHP) cannot tell
            // `pitstop_subject` from `pitstop-subject`.
            let dashed = dashed(name.as_str());
            let dashed = dashed.as_ref();
            // `pitstop-*` headers are the platform's to set (the caller of
            // a service call, the verified subject): a client must not be
            // able to forge them. The trace and request id are replaced by
            // ours.
            !dashed.starts_with(RESERVED_HEADER_PREFIX)
                && dashed != TRACEPARENT
                && dashed != REQUEST_ID_HEADER
                && !(strip_key && dashed == crate::auth::API_KEY_HEADER)
                // A bearer token stays at the gateway unless the route says
                // otherwise: any component holding it could replay it
                // against every other route.
                && (pass_authorization || name != http::header::AUTHORIZATION)
                // Components see text headers; a header that is not text
                // is dropped rather than mangled.
                && value.to_str().is_ok()
        };
        let mut headers = HeaderMap::with_capacity(parts.headers.len() + 4);
        let mut current = None;
        for (name, value) in std::mem::take(&mut parts.headers) {
            // The map yields a name once, then `None` for its further values.
            if let Some(name) = name {
                current = Some(name);
            }
            let name = current.as_ref().expect("the first entry carries its name");
            if passed(name, &value) {
                headers.append(name.clone(), value);
            }
        }
        let ours = [(TRACEPARENT, trace.header()), (REQUEST_ID_HEADER, request_id.to_string())];
        let verified = identity.as_ref().map(|identity| identity.headers()).unwrap_or_default();
        for (name, value) in ours.into_iter().map(|(n, v)| (n.to_string(), v)).chain(verified) {
            let value = HeaderValue::try_from(value).map_err(|_| {
                // A token's subject or claims with control characters: no
                // component could be told them faithfully.
                GatewayError::BadRequest(format!(
                    "the credentials' {name} cannot be passed on as a header (control characters)"
                ))
            })?;
            let name = HeaderName::try_from(name).expect("the platform's header names are valid");
            headers.append(name, value);
        }
        parts.headers = headers;
        // The path as routed, origin-form: a component reads the path it
        // was routed by, and its authority from `host`.
        if parts.uri.scheme().is_some() || parts.uri.path() != path {
            let target = match parts.uri.query() {
                Some(query) => format!("{path}?{query}"),
                None => path,
            };
            parts.uri = http::Uri::try_from(target)
                .map_err(|e| GatewayError::BadRequest(format!("the request target: {e}")))?;
        }
        Ok(Request { http: http::Request::from_parts(parts, body), trace, received })
    }
}
