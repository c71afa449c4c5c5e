//! Keyspaces on NATS JetStream: the store the hosts of a cluster share
//! (`pitstop serve --cluster nats://...`).
//!
//! Each keyspace is a stream of its own, `PITSTOP_KS_<component>` on the
//! subject `pitstop.ks.<component>`, holding its commit log: one message per
//! atomic batch ([`record`]). Every host that opens the keyspace follows the
//! log into an in-memory [`view::View`] and reads from it; writes append to
//! the log ([`keyspace`]). The platform's own keyspaces (the event queue,
//! its dead letters) are streams `PITSTOP_<NAME>` the same way.
//!
//! The [`Keyspace`] trait is synchronous (guests read keys from host
//! functions); its calls that need the server block the calling thread in
//! place ([`Link::block`]), never a runtime's scheduler, and give up after
//! the cluster's timeout with [`StorageError::Unavailable`].

mod barrier;
mod blobs;
pub mod keyspace;
pub mod lease;
mod record;
pub mod view;

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use futures_util::TryStreamExt;
use tokio::runtime::{Handle, RuntimeFlavor};

use self::keyspace::JetStreamKeyspace;
use self::view::{OutboxSignal, View};
use super::{Flushing, Keyspace, KeyspaceStore, StorageError};

/// What a component keyspace's stream name starts with.
const KEYSPACE_STREAM_PREFIX: &str = "PITSTOP_KS_";

/// How to reach the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// NATS server URLs (`nats://HOST:PORT`), any of which will do.
    pub servers: Vec<String>,
    /// Copies JetStream keeps of each stream (1, or 3 on a NATS cluster).
    pub replicas: usize,
    /// How long one call to the server may take before it fails.
    pub timeout: Duration,
}

/// The connection, shared by the store and its keyspaces.
pub struct Link {
    client: async_nats::Client,
    context: jetstream::Context,
    handle: Handle,
    timeout: Duration,
    /// Counts the connection's (re)connections.
    reconnects: tokio::sync::watch::Sender<u64>,
}

impl Link {
    /// The largest message the server takes.
    fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// Run `call` on the connection's runtime and wait for it here, at
    /// most the cluster's timeout (`doing` says what, in the error).
    fn block<T: Send>(
        &self,
        doing: &'static str,
        call: impl Future<Output = Result<T, StorageError>> + Send,
    ) -> Result<T, StorageError> {
        self.block_within(self.timeout, doing, call)
    }

    /// [`Self::block`], giving up after `timeout`.
    fn block_within<T: Send>(
        &self,
        timeout: Duration,
        doing: &'static str,
        call: impl Future<Output = Result<T, StorageError>> + Send,
    ) -> Result<T, StorageError> {
        // Disconnected, the client would queue the call until it reconnects:
        // fail now instead (fast, and no commit lands long after its
        // request was answered).
        if self.client.connection_state() != async_nats::connection::State::Connected {
            return Err(StorageError::Unavailable(format!(
                "{doing}: not connected to NATS (reconnecting)"
            )));
        }
        let bounded = async move {
            tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
                Err(StorageError::Unavailable(format!(
                    "{doing}: NATS did not answer within {timeout:?}"
                )))
            })
        };
        match Handle::try_current() {
            // A current-thread runtime has no other thread to hand its
            // tasks to while this one waits.
            Ok(current) if current.runtime_flavor() == RuntimeFlavor::CurrentThread => {
                Err(StorageError::Backend(
                    "cluster storage is used from a multi-threaded tokio runtime only".into(),
                ))
            }
            Ok(_) => tokio::task::block_in_place(|| self.handle.block_on(bounded)),
            Err(_) => self.handle.block_on(bounded),
        }
    }
}

/// Keyspaces as JetStream streams, shared by every host of the cluster.
pub struct JetStreamStore {
    link: Arc<Link>,
    replicas: usize,
    // One open keyspace (one follower) per stream on this host.
    open: Mutex<HashMap<String, Arc<JetStreamKeyspace>>>,
    outboxes: Arc<OutboxSignal>,
}

impl JetStreamStore {
    /// Connect to the cluster. Called on the runtime that will carry the
    /// connection; fails if no server answers within the timeout.
    pub async fn connect(options: &ClusterOptions) -> Result<Self, StorageError> {
        let servers = options
            .servers
            .iter()
            .map(|url| url.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| StorageError::Unavailable(format!("a cluster URL is not valid: {e}")))?;
        // Every reconnection: the followers' consumers may be gone with the
        // server, and waiting for their heartbeats to tell costs seconds.
        let reconnects = tokio::sync::watch::Sender::new(0u64);
        let on_event = reconnects.clone();
        let client = async_nats::ConnectOptions::new()
            .name("pitstop")
            .event_callback(move |event| {
                let on_event = on_event.clone();
                async move {
                    tracing::info!(%event, "NATS connection");
                    if matches!(event, async_nats::Event::Connected) {
                        on_event.send_modify(|n| *n += 1);
                    }
                }
            })
            .connection_timeout(options.timeout)
            .request_timeout(Some(options.timeout))
            .connect(servers)
            .await
            .map_err(|e| {
                StorageError::Unavailable(format!(
                    "cannot reach NATS at {}: {e}",
                    options.servers.join(",")
                ))
            })?;
        let context = jetstream::new(client.clone());
        // A server that just started answers before JetStream is ready.
        let ready = async {
            while let Err(error) = context.query_account().await {
                tracing::info!(%error, "waiting for JetStream");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(10), ready).await.map_err(|_| {
            StorageError::Unavailable(format!(
                "NATS at {} has no JetStream (start it with -js)",
                options.servers.join(",")
            ))
        })?;
        let link = Link {
            client,
            context,
            handle: Handle::current(),
            timeout: options.timeout,
            reconnects,
        };
        Ok(JetStreamStore {
            link: Arc::new(link),
            replicas: options.replicas.max(1),
            open: Mutex::default(),
            outboxes: Arc::default(),
        })
    }

    /// Told of every applied commit that wrote an outbox entry.
    pub fn outboxes(&self) -> Arc<OutboxSignal> {
        self.outboxes.clone()
    }

    /// One of the platform's own keyspaces (`name` is upper case), shared
    /// by the cluster like a component's.
    pub fn open_platform(&self, name: &str) -> Result<Arc<dyn Keyspace>, StorageError> {
        let label = format!("pitstop/{}", name.to_ascii_lowercase());
        Ok(self.open_stream(
            format!("PITSTOP_{name}"),
            format!("pitstop.{}", name.to_ascii_lowercase()),
            &label,
        )?)
    }

    /// The keyspace on stream `name`, created if it is not there yet,
    /// opened and caught up once per host. The map's lock is not held while
    /// NATS answers: two first opens of one keyspace may race, and the
    /// second to finish takes the first one's copy.
    fn open_stream(
        &self,
        name: String,
        subject: String,
        label: &str,
    ) -> Result<Arc<JetStreamKeyspace>, StorageError> {
        if let Some(keyspace) = self.open.lock().unwrap_or_else(|p| p.into_inner()).get(&name) {
            return Ok(keyspace.clone());
        }
        let config = stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            num_replicas: self.replicas,
            allow_direct: true,
            ..Default::default()
        };
        let context = self.link.context.clone();
        let stream = self.link.block("opening a keyspace", async move {
            context
                .get_or_create_stream(config)
                .await
                .map_err(|e| StorageError::Backend(Box::new(e)))
        })?;
        let view = Arc::new(View::new(label, self.outboxes.clone()));
        let reconnected = self.link.reconnects.subscribe();
        let follower =
            self.link.handle.spawn(view::follow(stream.clone(), view.clone(), reconnected));
        let keyspace =
            Arc::new(JetStreamKeyspace::new(self.link.clone(), stream, subject, view, follower));
        // A keyspace's whole log is read on first open: more than one call's
        // worth of time (there is no compaction yet, docs/cluster.md).
        keyspace.catch_up(CATCH_UP)?;
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        Ok(open.entry(name).or_insert(keyspace).clone())
    }
}

/// How long the first open of a keyspace may take to read its log.
const CATCH_UP: Duration = Duration::from_secs(120);

impl KeyspaceStore for JetStreamStore {
    fn open(&self, component: &str) -> Result<Arc<dyn Keyspace>, StorageError> {
        Ok(self.open_stream(
            format!("{KEYSPACE_STREAM_PREFIX}{component}"),
            format!("pitstop.ks.{component}"),
            component,
        )?)
    }

    fn names(&self) -> Result<Vec<String>, StorageError> {
        let context = self.link.context.clone();
        let names: Vec<String> = self.link.block("listing keyspaces", async move {
            context
                .stream_names()
                .try_collect()
                .await
                .map_err(|e| StorageError::Backend(Box::new(e)))
        })?;
        Ok(names
            .iter()
            .filter_map(|name| name.strip_prefix(KEYSPACE_STREAM_PREFIX))
            .map(str::to_string)
            .collect())
    }

    fn purge(&self, component: &str) -> Result<(), StorageError> {
        let name = format!("{KEYSPACE_STREAM_PREFIX}{component}");
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&name);
        let context = self.link.context.clone();
        self.link.block("purging a keyspace", async move {
            match context.delete_stream(&name).await {
                Ok(_) => Ok(()),
                Err(error) if error.to_string().contains("not found") => Ok(()),
                Err(error) => Err(StorageError::Backend(Box::new(error))),
            }
        })
    }

    fn flush(&self) -> Flushing<'_> {
        // A commit returns once JetStream acknowledged it, stored.
        Box::pin(async { Ok(()) })
    }

    fn check(&self) -> Result<(), StorageError> {
        let context = self.link.context.clone();
        self.link.block("asking NATS for the account", async move {
            context.query_account().await.map_err(|e| StorageError::Unavailable(e.to_string()))?;
            Ok(())
        })
    }
}
