//! The one place where a failure becomes an HTTP response.
//!
//! Every error the gateway sends is JSON: `{"error": "<message>"}`.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;

use crate::InvokeError;
use crate::auth::Unauthorized;

/// Everything that can go wrong between accepting a request and a component's reply.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the path.
    #[error("no route for {0}")]
    NoRoute(String),
    /// The request body is larger than the configured limit.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The path could be read as another route's than the one it matches,
    /// or has dot segments ([`crate::paths`]).
    #[error("{0}")]
    UnclearPath(String),
    /// The request could not be read.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The component answered something that is not valid HTTP.
    #[error("component {component} answered an invalid response: {reason}")]
    InvalidReply {
        /// The component.
        component: String,
        /// What was wrong.
        reason: String,
    },
    /// The route needs credentials the request lacks or that do not verify.
    #[error(transparent)]
    Unauthorized(#[from] Unauthorized),
    /// The client went over the route's rate limit.
    #[error("rate limit exceeded; retry in {} s", whole_seconds_up(*retry_after))]
    RateLimited {
        /// How long until a request will be let through.
        retry_after: Duration,
    },
    /// The backend could not run the component.
    #[error(transparent)]
    Invoke(#[from] InvokeError),
}

impl GatewayError {
    /// The status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::NoRoute(_) => StatusCode::NOT_FOUND,
            GatewayError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::BadRequest(_) | GatewayError::UnclearPath(_) => StatusCode::BAD_REQUEST,
            GatewayError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            GatewayError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::InvalidReply { .. } => StatusCode::BAD_GATEWAY,
            GatewayError::Invoke(e) => match e {
                InvokeError::NotDeployed(_)
                | InvokeError::Unavailable { .. }
                | InvokeError::CircuitOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
                InvokeError::Trapped { .. } | InvokeError::Internal(_) => {
                    StatusCode::INTERNAL_SERVER_ERROR
                }
                InvokeError::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                InvokeError::Refused(_) => StatusCode::BAD_REQUEST,
                InvokeError::Loop(_) => StatusCode::LOOP_DETECTED,
                InvokeError::InsufficientStorage(_) => StatusCode::INSUFFICIENT_STORAGE,
            },
        }
    }

    /// The JSON error response.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let status = self.status();
        // How long a client should wait before retrying a 503.
        let retry_after = match &self {
            GatewayError::Invoke(
                InvokeError::Unavailable { retry_after, .. }
                | InvokeError::CircuitOpen { retry_after, .. },
            )
            | GatewayError::RateLimited { retry_after } => Some(whole_seconds_up(*retry_after)),
            _ if status == StatusCode::SERVICE_UNAVAILABLE => Some(1),
            _ => None,
        };
        let mut response = error_response(status, &self);
        if let GatewayError::Unauthorized(refusal) = &self
            && let Ok(challenge) = HeaderValue::try_from(refusal.challenge.as_str())
        {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, challenge);
        }
        if let Some(seconds) = retry_after {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }
}

/// `Retry-After` in whole seconds, at least 1, rounded up: retrying a moment
/// early would only be refused again.
fn whole_seconds_up(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The `{"error": message}` response with `status`.
pub fn error_response(
    status: StatusCode,
    message: impl std::fmt::Display,
) -> Response<Full<Bytes>> {
    json_response(status, &serde_json::json!({ "error": message.to_string() }))
}

/// A response with `value` as its JSON body.
pub fn json_response(status: StatusCode, value: &impl serde::Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).expect("serialising a value to JSON cannot fail");
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}
