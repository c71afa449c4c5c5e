//! Logging into the host's tracing; every line carries the component's name.

use crate::bindings::pitstop::platform::log::{Level, log};

/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message);
}

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}
