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
use prometheus_client::registry::Registry;

use crate::breaker::State;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    component: String,
    route: String,
    status: u16,
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
    kv_ops: Family<KeyvalueOpLabels, Counter>,
    kv_bytes: Family<KeyvalueBytesLabels, Counter>,
    published: Family<PublishedLabels, Counter>,
    delivered: Family<SubscriberLabel, Counter>,
    retried: Family<SubscriberLabel, Counter>,
    dead_lettered: Family<SubscriberLabel, Counter>,
    lag: Family<SubscriberLabel, Gauge>,
    deploys: Family<ComponentLabel, Counter>,
    rollbacks: Family<ComponentLabel, Counter>,
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
        let requests = Family::default();
        registry.register(
            "requests",
            "Requests answered through a route, by component, route prefix and status",
            Family::clone(&requests),
        );
        let request_seconds: HistogramFamily<RequestLabels> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "request_duration_seconds",
            "Time from the request head to the response, by component, route and status",
            request_seconds.clone(),
        );
        let instantiation_seconds: HistogramFamily<ComponentLabel> =
            Family::new_with_constructor(latency_histogram);
        registry.register(
            "instantiation_duration_seconds",
            "Time to instantiate a component for one invocation",
            instantiation_seconds.clone(),
        );
        let breaker_state = Family::default();
        registry.register(
            "breaker_state",
            "Circuit breaker state per component: 0 closed, 1 half-open, 2 open",
            Family::clone(&breaker_state),
        );
        let breaker_transitions = Family::default();
        registry.register(
            "breaker_transitions",
            "Circuit breaker state changes, by component and new state",
            Family::clone(&breaker_transitions),
        );
        let in_flight = Family::default();
        registry.register(
            "in_flight_invocations",
            "Invocations running now, per component",
            Family::clone(&in_flight),
        );
        let kv_ops = Family::default();
        registry.register(
            "keyvalue_operations",
            "Keyvalue calls by keyspace and operation",
            Family::clone(&kv_ops),
        );
        let kv_bytes = Family::default();
        registry.register(
            "keyvalue_bytes",
            "Bytes of keys and values read and written, by keyspace",
            Family::clone(&kv_bytes),
        );
        let published = Family::default();
        registry.register(
            "bus_published",
            "Events committed for publication, by source component and topic",
            Family::clone(&published),
        );
        let delivered = Family::default();
        registry.register(
            "bus_delivered",
            "Events handled by a subscriber",
            Family::clone(&delivered),
        );
        let retried = Family::default();
        registry.register(
            "bus_retried",
            "Failed deliveries that will be tried again, per subscriber",
            Family::clone(&retried),
        );
        let dead_lettered = Family::default();
        registry.register(
            "bus_dead_lettered",
            "Events moved to the dead letters, per subscriber",
            Family::clone(&dead_lettered),
        );
        let lag = Family::default();
        registry.register(
            "bus_lag_events",
            "Events queued for a subscriber and not yet handled",
            Family::clone(&lag),
        );
        let deploys = Family::default();
        registry.register("deploys", "Versions deployed, per component", Family::clone(&deploys));
        let rollbacks = Family::default();
        registry.register("rollbacks", "Rollbacks, per component", Family::clone(&rollbacks));
        Metrics {
            registry,
            requests,
            request_seconds,
            instantiation_seconds,
            breaker_state,
            breaker_transitions,
            in_flight,
            kv_ops,
            kv_bytes,
            published,
            delivered,
            retried,
            dead_lettered,
            lag,
            deploys,
            rollbacks,
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

/// The metric handles of one component, resolved once per deployment.
#[derive(Clone)]
pub struct ComponentMetrics {
    /// Instantiation time.
    pub instantiation: Histogram,
    /// Invocations running now.
    pub in_flight: Gauge,
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
