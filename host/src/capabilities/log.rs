//! The `log` capability and guest stdout/stderr, both into `tracing` with the
//! component's name on every event.
//!
//! What one invocation may write is capped ([`OutputLimits`]): a guest
//! printing in a loop would otherwise fill the host's log and keep a worker
//! busy formatting lines for every other component. Past the cap, lines are
//! dropped and counted (`pitstop_guest_log_dropped_total`), with one warning
//! per invocation.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use wasmtime::component::{HasSelf, Linker};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

use crate::bindings::log::{self, Level};

/// Longest line kept from guest output; the rest of an overlong line is cut,
/// so a guest printing without newlines cannot grow host memory.
const MAX_LINE: usize = 8 * 1024;
/// Most bytes one write may carry: what `check-write` grants. A write is one
/// host call, which time slices cannot interrupt; 64 KiB of newlines is
/// about a millisecond of work, 56 MiB was 1.4 s of a guest thread.
const MAX_WRITE: usize = 64 * 1024;

/// How much output one invocation may write: stdout, stderr and the `log`
/// import together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutputLimits {
    /// Lines (log calls count one each).
    pub max_lines: u64,
    /// Bytes of text.
    pub max_bytes: u64,
}

impl Default for OutputLimits {
    fn default() -> Self {
        OutputLimits { max_lines: 10_000, max_bytes: 1 << 20 }
    }
}

/// What one invocation has written so far, shared by its output streams and
/// its `log` import.
pub struct OutputBudget {
    component: Arc<str>,
    limits: OutputLimits,
    lines: AtomicU64,
    bytes: AtomicU64,
    warned: AtomicBool,
    dropped: Counter,
}

impl OutputBudget {
    /// A fresh budget for one invocation of `component`; lines over it are
    /// counted in `dropped`.
    pub fn new(component: Arc<str>, limits: OutputLimits, dropped: Counter) -> Arc<Self> {
        Arc::new(OutputBudget {
            component,
            limits,
            lines: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            warned: AtomicBool::new(false),
            dropped,
        })
    }

    /// Whether a line of `len` bytes may still be written. Once the budget is
    /// spent, everything after is dropped, so the log never shows a gap.
    fn admit(&self, len: usize) -> bool {
        let lines = self.lines.fetch_add(1, Ordering::Relaxed) + 1;
        let bytes = self.bytes.fetch_add(len as u64, Ordering::Relaxed) + len as u64;
        if lines <= self.limits.max_lines && bytes <= self.limits.max_bytes {
            return true;
        }
        self.drop_lines(1);
        false
    }

    /// Whether nothing more will be written.
    fn spent(&self) -> bool {
        self.lines.load(Ordering::Relaxed) >= self.limits.max_lines
            || self.bytes.load(Ordering::Relaxed) >= self.limits.max_bytes
    }

    /// Count `lines` dropped lines; the first drop of an invocation warns.
    fn drop_lines(&self, lines: u64) {
        if lines == 0 {
            return;
        }
        self.dropped.inc_by(lines);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                component = &*self.component,
                max_lines = self.limits.max_lines,
                max_bytes = self.limits.max_bytes,
                "guest output over its limit; dropping the rest of this invocation's output"
            );
        }
    }
}

/// Per-invocation state of the capability: whose messages these are, and
/// how much they may still write.
pub struct LogCtx {
    budget: Arc<OutputBudget>,
}

impl LogCtx {
    /// Messages counted against `budget`.
    pub fn new(budget: Arc<OutputBudget>) -> Self {
        LogCtx { budget }
    }

    /// A new invocation on the same instance gets a whole budget again
    /// (its WASI stdout and stderr share this one).
    pub(crate) fn renew(&self) {
        self.budget.lines.store(0, Ordering::Relaxed);
        self.budget.bytes.store(0, Ordering::Relaxed);
        self.budget.warned.store(false, Ordering::Relaxed);
    }
}

/// Add the capability to `linker`.
///
/// Generic over the store's data, as wasmtime's own capability crates are:
/// `get` finds this capability's context in it, so this module need not
/// know the type that holds every context.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut LogCtx,
) -> wasmtime::Result<()> {
    log::add_to_linker::<T, HasSelf<LogCtx>>(linker, get)
}

impl log::Host for LogCtx {
    async fn log(&mut self, level: Level, message: String) {
        if !self.budget.admit(message.len()) {
            return;
        }
        let component = &*self.budget.component;
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

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// A guest output stream that becomes one tracing event per line.
#[derive(Clone)]
pub struct GuestOutput {
    budget: Arc<OutputBudget>,
    stream: Stream,
}

impl GuestOutput {
    /// Output on `stream`, counted against `budget`.
    pub fn new(budget: Arc<OutputBudget>, stream: Stream) -> Self {
        GuestOutput { budget, stream }
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
        if !self.output.budget.admit(self.line.len()) {
            self.line.clear();
            return;
        }
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end_matches(['\n', '\r']);
        let component = &*self.output.budget.component;
        match self.output.stream {
            Stream::Stdout => {
                tracing::info!(target: "guest", component, stream = Stream::Stdout.name(), "{text}")
            }
            Stream::Stderr => {
                tracing::warn!(target: "guest", component, stream = Stream::Stderr.name(), "{text}")
            }
        }
        self.line.clear();
    }
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > MAX_WRITE {
            return Err(StreamError::Trap(wasmtime::format_err!(
                "a write of {} bytes to {} exceeds the {MAX_WRITE} bytes check-write permitted",
                bytes.len(),
                self.output.stream.name()
            )));
        }
        if self.output.budget.spent() {
            // Only counted: no line is split out, nothing is formatted.
            let lines = bytes.iter().filter(|b| **b == b'\n').count();
            self.output.budget.drop_lines(lines as u64);
            return Ok(());
        }
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
        Ok(MAX_WRITE)
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
