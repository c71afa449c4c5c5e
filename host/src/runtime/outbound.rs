//! The tokio runtime guests' outgoing connections run on.
//!
//! A guest's outgoing `wasi:http` requests to allowed hosts connect here,
//! so their sockets register with this runtime's IO driver, not the
//! gateway's: a guest holding thousands of slow connections (within its
//! `max_outbound_connections`) keeps one thread of its own busy, and the
//! gateway's threads go on accepting and answering. One thread: the work
//! is waiting on sockets, and the guests' own computing happens on the
//! guest pool.

use std::io;

use tokio::runtime::{Builder, Handle, Runtime};

/// The outgoing connections' runtime, shut down (without waiting) when
/// dropped.
pub(crate) struct OutboundIo(Option<Runtime>);

impl OutboundIo {
    /// Start its thread.
    pub(crate) fn start() -> io::Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("pitstop-outbound")
            .enable_all()
            .build()?;
        Ok(OutboundIo(Some(runtime)))
    }

    /// Where to spawn a connection.
    pub(crate) fn handle(&self) -> Handle {
        self.0.as_ref().expect("running until dropped").handle().clone()
    }
}

impl Drop for OutboundIo {
    fn drop(&mut self) {
        // Dropped inside the gateway's runtime, where a blocking shutdown
        // is not allowed; open connections end with it.
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}
