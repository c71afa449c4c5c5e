//! Prometheus metrics: one registry for the host, encoded by
//! `prometheus-client` for `GET /metrics` on the admin listener.
//!
//! Hot paths never look a label set up: each deployment resolves its
//! counters once ([`ComponentMetrics`]) and increments those handles.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};

use crate::resilience::breaker::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    component: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionOutcomeLabels {
    component: String,
    version: u64,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    component: String,
    version: u64,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ComponentLabel {
    component: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    component: String,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyvalueOpLabels {
    keyspace: String,
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyvalueBytesLabels {
    keyspace: String,
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PublishedLabels {
    source: String,
    topic: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubscriberLabel {
    subscriber: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric the host exports.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_seconds: HistogramFamily<RequestLabels>,
    instantiation_seconds: HistogramFamily<ComponentLabel>,
    breaker_state: Family<ComponentLabel, Gauge>,
    breaker_transitions: Family<TransitionLabels, Counter>,
    in_flight: Family<ComponentLabel, Gauge>,
    guest_log_dropped: Family<ComponentLabel, Counter>,
    kv_ops: Family<KeyvalueOpLabels, Counter>,
    kv_bytes: Family<KeyvalueBytesLabels, Counter>,
    published: Family<PublishedLabels, Counter>,
    delivered: Family<SubscriberLabel, Counter>,
    retried: Family<SubscriberLabel, Counter>,
    dead_lettered: Family<SubscriberLabel, Counter>,
    lag: Family<SubscriberLabel, Gauge>,
    deploys: Family<ComponentLabel, Counter>,
    rollbacks: Family<ComponentLabel, Counter>,
    version_requests: Family<VersionOutcomeLabels, Counter>,
    version_seconds: HistogramFamily<VersionLabels>,
}

/// Register `metric` under `name` and keep a handle (clones share the values).
fn register<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("pitstop");
        let r = &mut registry;
        let by_status = "by component, route prefix and status";
        Metrics {
            requests: register(
                r,
                "requests",
                &format!("Requests answered, {by_status}"),
                Family::default(),
            ),
            request_seconds: register(
                r,
                "request_duration_seconds",
                &format!("Time from the request head to the response, {by_status}"),
                Family::new_with_constructor(latency_histogram),
            ),
            instantiation_seconds: register(
                r,
                "instantiation_duration_seconds",
                "Time to instantiate a component for one invocation",
                Family::new_with_constructor(latency_histogram),
            ),
            breaker_state: register(
                r,
                "breaker_state",
                "Circuit breaker state per component: 0 closed, 1 half-open, 2 open",
                Family::default(),
            ),
            breaker_transitions: register(
                r,
                "breaker_transitions",
                "Circuit breaker state changes, by component and new state",
                Family::default(),
            ),
            in_flight: register(
                r,
                "in_flight_invocations",
                "Invocations running now, per component",
                Family::default(),
            ),
            guest_log_dropped: register(
                r,
                "guest_log_dropped",
                "Lines of guest output (stdout, stderr, log) dropped over the per-invocation limit",
                Family::default(),
            ),
            kv_ops: register(
                r,
                "keyvalue_operations",
                "Keyvalue calls by keyspace and operation",
                Family::default(),
            ),
            kv_bytes: register(
                r,
                "keyvalue_bytes",
                "Bytes of keys and values read and written, by keyspace",
                Family::default(),
            ),
            published: register(
                r,
                "bus_published",
                "Events committed for publication, by source component and topic",
                Family::default(),
            ),
            delivered: register(
                r,
                "bus_delivered",
                "Events handled by a subscriber",
                Family::default(),
            ),
            retried: register(
                r,
                "bus_retried",
                "Failed deliveries that will be tried again, per subscriber",
                Family::default(),
            ),
            dead_lettered: register(
                r,
                "bus_dead_lettered",
                "Events moved to the dead letters, per subscriber",
                Family::default(),
            ),
            lag: register(
                r,
                "bus_lag_events",
                "Events queued for a subscriber and not yet handled",
                Family::default(),
            ),
            deploys: register(r, "deploys", "Versions deployed, per component", Family::default()),
            rollbacks: register(r, "rollbacks", "Rollbacks, per component", Family::default()),
            version_requests: register(
                r,
                "version_requests",
                "Requests a version answered (HTTP and services calls), by component, version \
                 and outcome: ok, error (a trap, a missed deadline, a 5xx but 507), or refused \
                 (by its open circuit breaker, without running)",
                Family::default(),
            ),
            version_seconds: register(
                r,
                "version_request_duration_seconds",
                "Time a version took for a request, by component and version",
                Family::new_with_constructor(latency_histogram),
            ),
            registry,
        }
    }

    /// The registry in Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }

    /// One answered request.
    pub fn request(&self, component: &str, route: &str, status: u16, elapsed: Duration) {
        let labels = RequestLabels { component: component.into(), route: route.into(), status };
        self.requests.get_or_create(&labels).inc();
        self.request_seconds.get_or_create(&labels).observe(elapsed.as_secs_f64());
    }

    /// The handles one version of `component` counts its requests with.
    pub fn version(&self, component: &str, version: u64) -> VersionMetrics {
        let outcome = |outcome| {
            let labels = VersionOutcomeLabels { component: component.into(), version, outcome };
            self.version_requests.get_or_create_owned(&labels)
        };
        let labels = VersionLabels { component: component.into(), version };
        VersionMetrics {
            ok: outcome("ok"),
            error: outcome("error"),
            refused: outcome("refused"),
            seconds: self.version_seconds.get_or_create_owned(&labels),
        }
    }

    /// The handles one deployment of `component` increments.
    pub fn component(&self, component: &str) -> ComponentMetrics {
        let label = ComponentLabel { component: component.into() };
        let op = |op| {
            self.kv_ops.get_or_create_owned(&KeyvalueOpLabels { keyspace: component.into(), op })
        };
        let bytes = |direction| {
            self.kv_bytes
                .get_or_create_owned(&KeyvalueBytesLabels { keyspace: component.into(), direction })
        };
        ComponentMetrics {
            instantiation: self.instantiation_seconds.get_or_create_owned(&label),
            in_flight: self.in_flight.get_or_create_owned(&label),
            log_dropped: self.guest_log_dropped.get_or_create_owned(&label),
            kv_get: op("get"),
            kv_set: op("set"),
            kv_delete: op("delete"),
            kv_list: op("list"),
            kv_add: op("increment"),
            kv_bytes_read: bytes("read"),
            kv_bytes_written: bytes("written"),
        }
    }

    /// A circuit breaker of `component` changed state.
    pub fn breaker(&self, component: &str, to: State) {
        let (value, name) = match to {
            State::Closed => (0, "closed"),
            State::HalfOpen => (1, "half-open"),
            State::Open => (2, "open"),
        };
        self.breaker_state
            .get_or_create(&ComponentLabel { component: component.into() })
            .set(value);
        self.breaker_transitions
            .get_or_create(&TransitionLabels { component: component.into(), to: name })
            .inc();
    }

    /// A new deployment starts with a closed breaker.
    pub fn breaker_reset(&self, component: &str) {
        self.breaker_state.get_or_create(&ComponentLabel { component: component.into() }).set(0);
    }

    /// `source` committed an event on `topic`.
    pub fn published(&self, source: &str, topic: &str) {
        self.published
            .get_or_create(&PublishedLabels { source: source.into(), topic: topic.into() })
            .inc();
    }

    /// `subscriber` handled an event.
    pub fn delivered(&self, subscriber: &str) {
        self.delivered.get_or_create(&SubscriberLabel { subscriber: subscriber.into() }).inc();
    }

    /// A delivery to `subscriber` failed and will be retried.
    pub fn retried(&self, subscriber: &str) {
        self.retried.get_or_create(&SubscriberLabel { subscriber: subscriber.into() }).inc();
    }

    /// An event for `subscriber` went to the dead letters.
    pub fn dead_lettered(&self, subscriber: &str) {
        self.dead_lettered.get_or_create(&SubscriberLabel { subscriber: subscriber.into() }).inc();
    }

    /// Replace the lag gauges with `lags` (subscriber, queued events); a
    /// subscriber missing from `lags` has none.
    pub fn set_lag(&self, lags: impl IntoIterator<Item = (String, u64)>) {
        self.lag.clear();
        for (subscriber, queued) in lags {
            self.lag.get_or_create(&SubscriberLabel { subscriber }).set(queued as i64);
        }
    }

    /// A version of `component` was deployed.
    pub fn deployed(&self, component: &str) {
        self.deploys.get_or_create(&ComponentLabel { component: component.into() }).inc();
    }

    /// `component` was rolled back.
    pub fn rolled_back(&self, component: &str) {
        self.rollbacks.get_or_create(&ComponentLabel { component: component.into() }).inc();
    }
}

/// The metric handles of one version's requests, resolved once per deployment.
#[derive(Clone)]
pub struct VersionMetrics {
    /// Requests answered without failing.
    pub ok: Counter,
    /// Requests that failed: a trap, a missed deadline, a 5xx but 507.
    pub error: Counter,
    /// Requests its open circuit breaker refused without running them.
    pub refused: Counter,
    /// How long each took.
    pub seconds: Histogram,
}

/// The metric handles of one component, resolved once per deployment.
#[derive(Clone)]
pub struct ComponentMetrics {
    /// Instantiation time.
    pub instantiation: Histogram,
    /// Invocations running now.
    pub in_flight: Gauge,
    /// Lines of guest output dropped over the per-invocation limit.
    pub log_dropped: Counter,
    /// Keyvalue calls, one counter per operation.
    pub kv_get: Counter,
    /// `set` calls.
    pub kv_set: Counter,
    /// `delete` calls.
    pub kv_delete: Counter,
    /// `list-keys` calls.
    pub kv_list: Counter,
    /// `increment` calls.
    pub kv_add: Counter,
    /// Bytes of keys and values read.
    pub kv_bytes_read: Counter,
    /// Bytes of keys and values written.
    pub kv_bytes_written: Counter,
}

impl ComponentMetrics {
    /// Handles registered nowhere, for invocations outside the platform
    /// (the test runner).
    pub fn detached() -> Arc<Self> {
        Arc::new(Metrics::new().component("detached"))
    }
}
