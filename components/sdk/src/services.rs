//! Calls to other services in the same platform.

pub use crate::bindings::pitstop::platform::services::{CallError, call};

/// The header naming the calling component on a request that came through
/// [`call`]. The callee can trust it: the platform sets it on every service
/// call and drops any `pitstop-*` header a client or a caller sets itself.
pub const CALLER_HEADER: &str = "pitstop-caller";

/// A one-line account of a failed call, for logs and error messages.
pub fn describe(error: &CallError) -> String {
    match error {
        CallError::NotFound(m) => format!("not deployed: {m}"),
        CallError::Unavailable(m) => format!("unavailable: {m}"),
        CallError::Timeout => "timed out".to_string(),
        CallError::Trapped(m) => format!("trapped: {m}"),
        CallError::Refused(m) => format!("refused: {m}"),
    }
}
