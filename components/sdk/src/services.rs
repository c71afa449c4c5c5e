//! Calls to other services in the same platform. The callee sees who
//! called in [`crate::headers::CALLER`] ([`crate::Request::caller`]).

pub use crate::bindings::pitstop::platform::services::{CallError, call};

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
