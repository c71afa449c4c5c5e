//! Requests, responses and the one error shape every pitstop service answers with.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Header, Request, Response};

impl Request {
    /// The non-empty path segments: `/users/usr_1/` gives `["users", "usr_1"]`.
    pub fn segments(&self) -> Vec<&str> {
        self.path.split('/').filter(|s| !s.is_empty()).collect()
    }

    /// The value of the first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
    }

    /// The first value of query parameter `name`, as sent: not
    /// percent-decoded, so meant for ids and other URL-safe values.
    pub fn query_param(&self, name: &str) -> Option<&str> {
        self.query.split('&').find_map(|pair| match pair.split_once('=') {
            Some((key, value)) if key == name => Some(value),
            None if pair == name => Some(""),
            _ => None,
        })
    }

    /// The body parsed as JSON into `T`; a 400 naming the problem otherwise.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, ApiError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let what = if e.is_data() { "invalid request body" } else { "malformed JSON" };
            ApiError::bad_request(format!("{what}: {e}"))
        })
    }

    /// A request with a JSON body, for [`crate::services::call`].
    pub fn with_json(method: &str, path: &str, body: &impl Serialize) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: String::new(),
            headers: vec![content_type_json()],
            body: serde_json::to_vec(body).expect("serialising a value to JSON cannot fail"),
        }
    }

    /// A request without a body.
    pub fn empty(method: &str, path: &str) -> Request {
        Request {
            method: method.to_string(),
            path: path.to_string(),
            query: String::new(),
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

impl Response {
    /// A response with `value` serialised as its JSON body.
    pub fn json(status: u16, value: &impl Serialize) -> Response {
        Response {
            status,
            headers: vec![content_type_json()],
            body: serde_json::to_vec(value).expect("serialising a value to JSON cannot fail"),
        }
    }

    /// The body parsed as JSON into `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

fn content_type_json() -> Header {
    Header { name: "content-type".into(), value: "application/json".into() }
}

/// An error answer: a status and a message, sent as `{"error": message}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status code.
    pub status: u16,
    /// What went wrong, for the client.
    pub message: String,
}

impl ApiError {
    /// An error with any status.
    pub fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into() }
    }
    /// 400: the request is malformed or fails validation.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, message)
    }
    /// 404: no such resource.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(404, message)
    }
    /// 405: the path exists, the method does not.
    pub fn method_not_allowed() -> Self {
        Self::new(405, "method not allowed")
    }
    /// 409: the request conflicts with the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(409, message)
    }
    /// 422: well-formed, but refers to something that does not exist.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(422, message)
    }
    /// 500: something failed inside the service.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, message)
    }
    /// 503: a dependency cannot answer now.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(503, message)
    }

    /// The `{"error": ...}` response.
    pub fn into_response(self) -> Response {
        Response::json(self.status, &serde_json::json!({ "error": self.message }))
    }
}

impl From<ApiError> for Response {
    fn from(error: ApiError) -> Response {
        error.into_response()
    }
}

/// Turn a handler's result into the response to send.
pub fn respond(result: Result<Response, ApiError>) -> Response {
    result.unwrap_or_else(ApiError::into_response)
}
