//! A harness for integration tests of components, in-process: no socket, no
//! subprocess. It runs the real runtime (engine, keyspaces, bus, dispatcher)
//! on a temporary store that disappears with it.
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! use pitstop_host::resilience::fault::Fault;
//! use pitstop_host::testing::harness::Harness;
//!
//! let harness = Harness::with_builtins().await?;
//! let created = harness.send("POST", "/users", r#"{"name":"Ada","email":"ada@example.com"}"#).await?;
//! assert_eq!(created.status, 201);
//! harness.settle().await;                      // every event delivered
//! assert_eq!(harness.published("user.created").len(), 1);
//!
//! harness.inject("payment", Some(Fault::Timeout)); // payment now times out
//! # Ok(()) }
//! ```
//!
//! Faults: [`Harness::inject`] makes every call of a component trap, time
//! out, be refused or be slow; [`Harness::pause_deliveries`] holds events
//! back so a test can [`Harness::drop_event`], [`Harness::delay_event`] or
//! [`Harness::redeliver`] them before they arrive.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use http::HeaderValue;
use pitstop_gateway::RouteTable;
use pitstop_gateway::auth::{AUTH_HEADER, ROLES_HEADER, SUBJECT_HEADER};
use tokio::task::JoinHandle;

use crate::bindings::types::Response;
use crate::control::builtin::BUILTINS;
use crate::events::queue::{Bus, QueuedEvent};
use crate::invoke::InvokeFailure;
use crate::resilience::fault::Fault;
use crate::runtime::{Parts, Runtime, RuntimeOptions};
use crate::storage::embedded::SledStore;
use crate::storage::reserved::is_reserved_key;

/// The longest [`Harness::settle`] waits.
const SETTLE_LIMIT: Duration = Duration::from_secs(30);

/// The platform in a test: components, routes, bus, faults.
pub struct Harness {
    runtime: Arc<Runtime>,
    parts: Parts,
    // The embedded queue itself, for what only tests do to it (record,
    // pause, drop, delay, duplicate).
    bus: Arc<Bus>,
    routes: Mutex<RouteTable>,
    dispatcher: JoinHandle<()>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.dispatcher.abort();
    }
}

impl Harness {
    /// An empty platform with default options.
    pub async fn new() -> anyhow::Result<Self> {
        Self::with_options(RuntimeOptions::default()).await
    }

    /// An empty platform with `options` (deadlines, bus retries, ...).
    pub async fn with_options(options: RuntimeOptions) -> anyhow::Result<Self> {
        let db = sled::Config::new().temporary(true).open().context("a temporary store")?;
        let bus = Arc::new(Bus::open(&db, options.bus)?);
        bus.start_recording();
        let keyspaces = Arc::new(SledStore::new(db.clone())?);
        let parts = Parts::with_backends(db, keyspaces, bus.clone());
        let runtime = Runtime::start(&parts, options)?;
        let dispatcher = tokio::spawn(runtime.dispatch());
        Ok(Harness { runtime, parts, bus, routes: Mutex::default(), dispatcher })
    }

    /// A platform with the built-in user, order and payment services on
    /// their usual routes.
    pub async fn with_builtins() -> anyhow::Result<Self> {
        let harness = Self::new().await?;
        for builtin in BUILTINS {
            harness.load_bytes(builtin.name, builtin.wasm.to_vec(), Some(builtin.prefix)).await?;
        }
        Ok(harness)
    }

    /// Deploy the component at `path` as `name`, routed at `route` if given.
    pub async fn load(&self, name: &str, path: &Path, route: Option<&str>) -> anyhow::Result<()> {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        self.load_bytes(name, bytes, route).await
    }

    /// Deploy `bytes` as `name` (a new version if it exists), routed at
    /// `route` if given.
    pub async fn load_bytes(
        &self,
        name: &str,
        bytes: Vec<u8>,
        route: Option<&str>,
    ) -> anyhow::Result<()> {
        self.runtime.activate_unrecorded(name, &bytes).await?;
        if let Some(prefix) = route {
            let mut routes = self.routes.lock().unwrap();
            let pairs = routes.routes().iter().map(|r| (r.prefix.clone(), r.component.clone()));
            *routes = RouteTable::new(pairs.chain([(prefix.to_string(), name.to_string())]))?;
        }
        Ok(())
    }

    /// The host's metrics.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.parts.metrics
    }

    /// The runtime, for anything the harness does not wrap.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Send a request through the routes from an anonymous client, as the
    /// gateway would (without its HTTP limits). `Err` is a failure the
    /// gateway would turn into a 4xx/5xx of its own: no route, trap,
    /// timeout, open circuit, ...
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<Response, InvokeFailure> {
        self.send_as(None, method, path, body).await
    }

    /// [`Harness::send`] from a client the gateway verified as `subject`
    /// with `roles` (`pitstop-subject`, `pitstop-roles`), when given.
    pub async fn send_as(
        &self,
        identity: Option<(&str, &[&str])>,
        method: &str,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<Response, InvokeFailure> {
        let component = self.routes.lock().unwrap().resolve(path).map(str::to_string);
        let component = component.ok_or(InvokeFailure::NotDeployed)?;
        let mut request = request(method, path, body);
        if let Some((subject, roles)) = identity {
            let headers = request.headers_mut();
            let value = |value: &str| HeaderValue::try_from(value).expect("a test's header");
            headers.insert(SUBJECT_HEADER, value(subject));
            headers.insert(AUTH_HEADER, value("jwt"));
            if !roles.is_empty() {
                headers.insert(ROLES_HEADER, value(&roles.join(" ")));
            }
        }
        Ok(self.runtime.invoke(&component, request, None).await?.response)
    }

    /// Call `component` directly, as another service would.
    pub async fn call(
        &self,
        component: &str,
        method: &str,
        path: &str,
        body: impl Into<Vec<u8>>,
    ) -> Result<Response, InvokeFailure> {
        let request = request(method, path, body);
        Ok(self.runtime.invoke(component, request, None).await?.response)
    }

    /// What `component`'s keyspace holds now (committed state, the
    /// platform's own keys left out).
    pub fn keyspace(&self, component: &str) -> BTreeMap<String, Vec<u8>> {
        let Ok(keyspace) = self.parts.keyspaces.open(component) else {
            return BTreeMap::new();
        };
        keyspace
            .range_from(std::ops::Bound::Unbounded)
            .filter_map(Result::ok)
            .filter(|(k, _)| !is_reserved_key(k))
            .map(|(k, v)| (String::from_utf8_lossy(&k).into_owned(), v.to_vec()))
            .collect()
    }

    /// Every event published on `topic` (every topic for `""`) and relayed
    /// so far, oldest first.
    pub fn published(&self, topic: &str) -> Vec<QueuedEvent> {
        let all = self.bus.recorded();
        all.into_iter().filter(|e| topic.is_empty() || e.topic == topic).collect()
    }

    /// Make every call of `component` fail with `fault`; `None` heals it.
    pub fn inject(&self, component: &str, fault: Option<Fault>) {
        self.runtime.inject_fault(component, fault);
    }

    /// Hold event deliveries back (publishing and relaying go on).
    pub fn pause_deliveries(&self) {
        self.bus.pause(true);
    }

    /// Let held-back deliveries go.
    pub fn resume_deliveries(&self) {
        self.bus.pause(false);
    }

    /// Remove every queued delivery of event `id`; returns how many.
    pub fn drop_event(&self, id: &str) -> anyhow::Result<usize> {
        Ok(self.bus.drop_event(id)?)
    }

    /// Hold every queued delivery of event `id` back for `delay`.
    pub fn delay_event(&self, id: &str, delay: Duration) -> anyhow::Result<usize> {
        Ok(self.bus.delay_event(id, delay)?)
    }

    /// Deliver `event` to `subscriber` once more, under the same id.
    pub fn redeliver(&self, event: &QueuedEvent, subscriber: &str) -> anyhow::Result<()> {
        Ok(self.bus.redeliver(event, subscriber)?)
    }

    /// Wait until every published event is relayed and every delivery that
    /// is due to a deployed subscriber (and not held back) has been made.
    /// Panics after 30 s.
    pub async fn settle(&self) {
        let bus = &self.bus;
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        loop {
            let now = crate::events::queue::now_ms();
            // Lanes of undeployed subscribers wait for them; not for us.
            let registry = &self.parts.registry;
            let due = bus
                .lane_heads()
                .filter(|(key, _)| registry.get(crate::events::queue::subscriber_of(key)).is_some())
                .filter_map(|(_, v)| QueuedEvent::decode(&v).ok())
                .any(|e| e.not_before <= now);
            if bus.outboxes_empty() && (!due || bus.is_paused()) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "events did not settle within 30 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// A JSON request for `method path` (with its query) carrying `body`.
fn request(method: &str, path: &str, body: impl Into<Vec<u8>>) -> http::Request<Bytes> {
    let request = http::Request::builder().method(method).uri(path);
    let request = request.header(http::header::CONTENT_TYPE, "application/json");
    request.body(Bytes::from(body.into())).expect("a test's request is valid HTTP")
}
