//! W3C trace context: the `traceparent` a request arrives with or is given,
//! carried through component invocations, `services` calls and events.
//!
//! The ids are those of the OpenTelemetry span when an exporter is installed
//! (so what the logs and the `traceparent` response header say is what the
//! collector shows), and pitstop's own random ids otherwise.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The request header carrying a trace context.
pub const TRACEPARENT: &str = "traceparent";

/// One span's place in a trace: `00-<trace id>-<span id>-<flags>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// The trace, shared by every span of one request and what it causes.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// Whether the trace is sampled (W3C flag 01).
    pub sampled: bool,
}

impl TraceContext {
    /// A new trace, sampled.
    pub fn new_root() -> Self {
        TraceContext { trace_id: random_nonzero(), span_id: random_nonzero(), sampled: true }
    }

    /// A new span in the same trace.
    pub fn child(&self) -> Self {
        TraceContext { span_id: random_nonzero(), ..*self }
    }

    /// Parse a `traceparent` header value. Anything that is not a valid
    /// version-00 (or later, read as 00) context is `None`, as the W3C
    /// specification asks: the receiver then starts a new trace.
    pub fn parse(value: &str) -> Option<Self> {
        let value = value.trim();
        let mut parts = value.split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        let version = u8::from_str_radix(version, 16).ok().filter(|_| version.len() == 2)?;
        // Version ff is invalid; version 00 has exactly four fields.
        if version == 0xff || (version == 0 && parts.next().is_some()) {
            return None;
        }
        let trace_id: [u8; 16] = parse_hex(trace)?;
        let span_id: [u8; 8] = parse_hex(span)?;
        let [flags]: [u8; 1] = parse_hex(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(TraceContext { trace_id, span_id, sampled: flags & 1 == 1 })
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        let mut hex = String::with_capacity(32);
        push_hex(&mut hex, &self.trace_id);
        hex
    }

    /// The span id as 16 lower-case hex digits.
    pub fn span_id_hex(&self) -> String {
        let mut hex = String::with_capacity(16);
        push_hex(&mut hex, &self.span_id);
        hex
    }

    /// The `traceparent` header value. Built in one allocation: it is
    /// written twice per request (to the guest and to the client).
    pub fn header(&self) -> String {
        let mut header = String::with_capacity(55);
        header.push_str("00-");
        push_hex(&mut header, &self.trace_id);
        header.push('-');
        push_hex(&mut header, &self.span_id);
        header.push_str(if self.sampled { "-01" } else { "-00" });
        header
    }

    /// Make `span` a child of `parent` (a context from another process or
    /// task: a client's header, an event), record its `trace_id` field, and
    /// return the span's own context.
    pub fn attach(span: &tracing::Span, parent: Option<TraceContext>) -> TraceContext {
        if let Some(parent) = parent {
            let remote = SpanContext::new(
                TraceId::from_bytes(parent.trace_id),
                SpanId::from_bytes(parent.span_id),
                if parent.sampled { TraceFlags::SAMPLED } else { TraceFlags::default() },
                true,
                TraceState::default(),
            );
            // Fails only when no OpenTelemetry layer is installed.
            let _ = span.set_parent(opentelemetry::Context::new().with_remote_span_context(remote));
        }
        let context = Self::of_span(span).unwrap_or_else(|| match parent {
            Some(parent) => parent.child(),
            None => TraceContext::new_root(),
        });
        if !span.is_disabled() {
            span.record("trace_id", tracing::field::display(context.trace_id_hex()));
        }
        context
    }

    /// The context of `span` as the OpenTelemetry layer sees it, if one is
    /// installed and the span is enabled.
    fn of_span(span: &tracing::Span) -> Option<TraceContext> {
        let context = span.context();
        let otel = context.span();
        let otel = otel.span_context();
        otel.is_valid().then(|| TraceContext {
            trace_id: otel.trace_id().to_bytes(),
            span_id: otel.span_id().to_bytes(),
            sampled: otel.is_sampled(),
        })
    }
}

/// Random non-zero ids. Trace and span ids must be unique, not secret, and
/// a request makes several: a per-thread generator seeded once from the OS
/// saves a system call per id.
fn random_nonzero<const N: usize>() -> [u8; N] {
    use std::cell::Cell;
    thread_local! {
        static STATE: Cell<u64> = Cell::new(seed());
    }
    let mut bytes = [0u8; N];
    while bytes == [0u8; N] {
        for chunk in bytes.chunks_mut(8) {
            let word = STATE.with(|state| {
                // splitmix64: every seed gives a full-period sequence.
                let next = state.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
                state.set(next);
                let mut z = next;
                z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
                z ^ (z >> 31)
            });
            chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
        }
    }
    bytes
}

/// A per-thread seed: OS randomness, else the clock and the thread.
fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_ok() {
        return u64::from_le_bytes(bytes);
    }
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    let thread = &bytes as *const _ as u64;
    nanos ^ thread.rotate_left(32)
}

/// Append `bytes` to `out` as lower-case hex digits.
fn push_hex(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
}

fn parse_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    // Upper-case hex is invalid in a traceparent.
    if text.len() != N * 2 || !text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut bytes = [0u8; N];
    hex::decode_to_slice(text, &mut bytes).ok()?;
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_a_valid_header() {
        let header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = TraceContext::parse(header).unwrap();
        assert!(context.sampled);
        assert_eq!(context.header(), header);
        let unsampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        assert_eq!(TraceContext::parse(unsampled).unwrap().header(), unsampled);
        assert_eq!(context.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id_hex(), "00f067aa0ba902b7");
        assert_eq!(context.child().trace_id, context.trace_id);
        assert_ne!(context.child().span_id, context.span_id);
    }

    #[test]
    fn rejects_invalid_headers() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad}");
        }
    }
}
