//! The `log` capability and guest stdout/stderr, both into `tracing` with the
//! component's name on every event.

use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::bindings::log::{self, Level};
use crate::state::ComponentState;

/// Longest line kept from guest output; the rest of an overlong line is cut,
/// so a guest printing without newlines cannot grow host memory.
const MAX_LINE: usize = 8 * 1024;

/// Per-invocation state of the capability: whose messages these are.
pub struct LogCtx {
    component: Arc<str>,
}

impl LogCtx {
    /// Messages from `component`.
    pub fn new(component: Arc<str>) -> Self {
        LogCtx { component }
    }
}

/// Add the capability to `linker`.
pub fn add_to_linker(linker: &mut Linker<ComponentState>) -> wasmtime::Result<()> {
    log::add_to_linker::<_, HasSelf<LogCtx>>(linker, |state| &mut state.log)
}

impl log::Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) {
        let component = &*self.component;
        match level {
            Level::Trace => tracing::trace!(target: "guest", component, "{message}"),
            Level::Debug => tracing::debug!(target: "guest", component, "{message}"),
            Level::Info => tracing::info!(target: "guest", component, "{message}"),
            Level::Warn => tracing::warn!(target: "guest", component, "{message}"),
            Level::Error => tracing::error!(target: "guest", component, "{message}"),
        }
    }
}

/// Which of the guest's output streams.
#[derive(Clone, Copy, Debug)]
pub enum Stream {
    /// Guest stdout: info level.
    Stdout,
    /// Guest stderr (panic messages land here): warn level.
    Stderr,
}

/// A guest output stream that becomes one tracing event per line.
#[derive(Clone)]
pub struct GuestOutput {
    component: Arc<str>,
    stream: Stream,
}

impl GuestOutput {
    /// Output of `component` on `stream`.
    pub fn new(component: Arc<str>, stream: Stream) -> Self {
        GuestOutput { component, stream }
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(LineWriter { output: self.clone(), line: Vec::new() })
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only the preview 3 APIs ask for this; pitstop links preview 2.
        Box::new(tokio::io::sink())
    }
}

struct LineWriter {
    output: GuestOutput,
    line: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let component = &*self.output.component;
        match self.output.stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", component, stream = "stdout", "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", component, stream = "stderr", "{text}")
            }
        }
        self.line.clear();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if chunk.ends_with(b"\n") {
                self.emit();
            }
        }
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        self.emit();
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}
