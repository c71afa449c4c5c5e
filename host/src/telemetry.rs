//! Logs and traces: `tracing` events and spans to a log (human-readable or
//! JSON lines), and to an OpenTelemetry collector over OTLP/HTTP when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
//!
//! Spans: `request` (the gateway), `invoke` and `deliver` (one component
//! invocation each, nested through `services` calls, and continued across
//! events by the trace context each event carries), and one per keyvalue,
//! bus and services host call at debug level. The JSON log prints every
//! `request`, `invoke` and `deliver` span when it closes, with the fields of
//! its ancestors, so one `trace_id` can be followed through the log alone.

use std::io::IsTerminal;

use anyhow::Context;
use opentelemetry::trace::TracerProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::fmt::format::FmtSpan;
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The environment variable that turns OTLP export on.
pub const OTLP_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

/// What exported spans include besides the log's: the host calls, at debug.
const OTLP_FILTER: &str = "info,pitstop_host=debug,pitstop_gateway=debug";

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event, with its spans' fields.
    Pretty,
    /// One JSON object per event and per closed span.
    Json,
}

/// Where the log goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    /// The server's log.
    Stdout,
    /// Commands whose stdout is their answer.
    Stderr,
}

/// The installed pipeline; [`Telemetry::shutdown`] flushes spans not yet
/// exported and log lines not yet written.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    log_writer: Option<WorkerGuard>,
}

impl Telemetry {
    /// Install the global subscriber. `RUST_LOG` overrides `default_filter`
    /// for the log; exported spans always include the host calls.
    pub fn init(
        default_filter: &str,
        format: LogFormat,
        target: LogTarget,
    ) -> anyhow::Result<Telemetry> {
        let filter =
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
        let terminal = match target {
            LogTarget::Stdout => std::io::stdout().is_terminal(),
            LogTarget::Stderr => std::io::stderr().is_terminal(),
        };
        let (writer, log_writer) = match target {
            // The server's log is written by a thread of its own: a worker
            // that logs never waits for a slow terminal or a full pipe. If
            // the log falls 128k lines behind, lines are dropped rather
            // than the worker blocked.
            LogTarget::Stdout => {
                let (writer, guard) = NonBlockingBuilder::default()
                    .lossy(true)
                    .thread_name("pitstop-log")
                    .finish(std::io::stdout());
                (BoxMakeWriter::new(writer), Some(guard))
            }
            // A command's few lines go out at once: it may exit any moment.
            LogTarget::Stderr => (BoxMakeWriter::new(std::io::stderr), None),
        };
        let log = match format {
            LogFormat::Pretty => tracing_subscriber::fmt::layer()
                .with_writer(writer)
                .with_ansi(terminal)
                .with_filter(filter)
                .boxed(),
            LogFormat::Json => tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(true)
                .with_span_list(true)
                .with_span_events(FmtSpan::CLOSE)
                .with_writer(writer)
                .with_filter(filter)
                .boxed(),
        };
        let provider = match std::env::var(OTLP_ENDPOINT_ENV) {
            Ok(endpoint) if !endpoint.trim().is_empty() => Some(otlp_provider()?),
            _ => None,
        };
        let otlp = provider.as_ref().map(|provider| {
            tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("pitstop"))
                .with_filter(EnvFilter::new(OTLP_FILTER))
        });
        tracing_subscriber::registry()
            .with(log)
            .with(otlp)
            .try_init()
            .context("installing the log subscriber")?;
        Ok(Telemetry { provider, log_writer })
    }

    /// Export what is buffered and stop the exporter.
    pub fn shutdown(self) {
        // Dropping the guard writes out the lines still queued.
        drop(self.log_writer);
        if let Some(provider) = self.provider
            && let Err(error) = provider.shutdown()
        {
            eprintln!("pitstop: exporting the last spans failed: {error}");
        }
    }
}

/// A tracer provider batching spans to the collector the standard
/// `OTEL_EXPORTER_OTLP_*` variables name (OTLP over HTTP, protobuf).
fn otlp_provider() -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("setting up the OTLP exporter")?;
    let service = std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| "pitstop".to_string());
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    Ok(SdkTracerProvider::builder().with_batch_exporter(exporter).with_resource(resource).build())
}
