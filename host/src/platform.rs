//! A running platform: storage, runtime, control plane, gateway and admin
//! API, started and stopped as one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pitstop_gateway::{Gateway, GatewayOptions, RouteTable, serve_http};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{Config, RouteTarget};
use crate::control::admin::{Admin, DEFAULT_MAX_UPLOAD};
use crate::control::admin_hosts::AdminHosts;
use crate::control::admin_token::AdminToken;
use crate::control::builtin::BUILTINS;
use crate::control::deployments::Deployments;
use crate::events::cluster::ClusterQueue;
use crate::runtime::backend::RuntimeBackend;
use crate::runtime::registry::Registry;
use crate::runtime::{ComponentSettings, Parts, Runtime, RuntimeOptions};
use crate::storage::jetstream::{ClusterOptions, JetStreamStore};
use crate::upstream::{self, UpstreamSettings, Upstreams};

/// What to start.
#[derive(Debug)]
pub struct PlatformOptions {
    /// Where the gateway listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where the admin API listens; port 0 picks a free one.
    pub admin_listen: SocketAddr,
    /// The admin token; `None` uses (or creates) `<data_dir>/admin.token`.
    pub admin_token: Option<String>,
    /// Where sled, component bytes and compiled artifacts are kept.
    pub data_dir: PathBuf,
    /// The parsed `pitstop.toml` (or the defaults).
    pub config: Config,
    /// A directory whose `.wasm` files are deployed whenever they change.
    pub watch: Option<PathBuf>,
    /// The cluster to join (`nats://HOST:PORT[,...]`), over the config's
    /// `[cluster] nats`; neither runs alone on the embedded store.
    pub cluster: Option<String>,
    /// Refuse to start when a configured route leads to a component that
    /// is neither configured nor deployed (otherwise: a warning).
    pub strict: bool,
}

/// Parts whose keyspaces and event queue are the cluster's, on NATS
/// JetStream (the deployment records and component bytes are shared too,
/// by the control plane); sled keeps what is this host's own.
async fn join(
    db: sled::Db,
    cluster: &ClusterOptions,
    options: &RuntimeOptions,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Parts, Arc<JetStreamStore>)> {
    let store = Arc::new(JetStreamStore::connect(cluster).await?);
    let host = format!("pid {} with data dir {}", std::process::id(), data_dir.display());
    let queue = ClusterQueue::open(store.clone(), &host, options.bus)
        .context("opening the cluster's event queue")?;
    tracing::info!(nats = %cluster.servers.join(","), "joined the cluster");
    Ok((Parts::with_backends(db, store.clone(), Arc::new(queue)), store))
}

/// A started platform. Dropping it without [`Platform::shutdown`] aborts the
/// listeners; shutting down lets in-flight requests finish and flushes storage.
pub struct Platform {
    addr: SocketAddr,
    admin_addr: SocketAddr,
    parts: Parts,
    deployments: Arc<Deployments>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    dispatcher: JoinHandle<()>,
}

impl Platform {
    /// Open storage, restore what was active, seed the built-in and
    /// configured components, and start serving.
    pub async fn start(options: PlatformOptions) -> anyhow::Result<Platform> {
        let config = options.config;
        let hosts = AdminHosts::new(&config.admin.allowed_hosts)?;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating data dir {}", options.data_dir.display()))?;
        let min_free = config.runtime.min_free_disk_bytes;
        let watermark = crate::storage::disk::watch(&options.data_dir, min_free)
            .with_context(|| format!("reading the free space of {}", options.data_dir.display()))?;
        tracing::debug!(
            watermark,
            "writes are refused below this many free bytes on the data dir's disk"
        );
        let db_path = options.data_dir.join("db");
        let cache = config
            .runtime
            .storage_cache_bytes
            .unwrap_or(crate::storage::embedded::DEFAULT_CACHE_BYTES);
        let db =
            sled::Config::new().path(&db_path).cache_capacity(cache).open().with_context(|| {
                format!("opening storage at {} (is another pitstop using it?)", db_path.display())
            })?;
        let cluster = config.cluster.options(options.cluster.as_deref())?;
        let mut runtime_options = config.runtime_options();
        runtime_options.artifact_dir = Some(options.data_dir.join("cache"));
        let (parts, cluster) = match cluster {
            None => (Parts::embedded(db, runtime_options.bus)?, None),
            Some(cluster) => {
                let (parts, store) =
                    join(db, &cluster, &runtime_options, &options.data_dir).await?;
                (parts, Some(store))
            }
        };
        let defaults = runtime_options.defaults.clone();
        let runtime = Runtime::start(&parts, runtime_options)?;

        let mut gateway_options = gateway_options(&config);
        let (static_routes, upstreams) =
            static_routes(&config, &defaults, gateway_options.max_response_body)?;
        gateway_options.access = crate::control::access::options(&config, &options.data_dir)
            .context("in the [auth] section or a route's policy")?;
        // What /ready expects deployed: the targets of the config's own
        // routes, which static_routes puts first. A built-in route after
        // them is the platform's own, and a built-in the operator
        // undeployed is not a missing component.
        let configured = config.routes.as_ref().map_or(0, Vec::len);
        let expected = static_routes[..configured].iter().map(|(_, target)| target.clone());
        let backend = RuntimeBackend::new(runtime.clone(), expected).with_upstreams(upstreams);
        let gateway = Gateway::new(backend, RouteTable::default(), gateway_options.clone())
            .map_err(|e| anyhow::anyhow!("in the [auth] section or a route's policy: {e}"))?;
        let deployments = Arc::new(
            Deployments::new(
                runtime.clone(),
                &parts,
                &options.data_dir,
                static_routes,
                gateway.clone(),
                cluster,
            )
            .context("in the route table")?,
        );
        deployments.restore().await.context("restoring the deployed components")?;
        let (stop, stopped) = watch::channel(false);
        let mut tasks = Vec::new();
        // On a cluster, serve what other hosts deploy (from now on, seeding
        // included: hosts starting together seed the same names).
        tasks.push(tokio::spawn(deployments.clone().follow(wait_for(stopped.clone()))));
        // Events committed before a crash but not yet relayed.
        (parts.bus).restore_outboxes(&*parts.keyspaces).context("restoring the bus's outboxes")?;
        seed(&deployments, &config).await?;
        warn_of_dangling_routes(&config, &parts.registry, options.strict)?;

        let token = AdminToken::resolve(options.admin_token, &options.data_dir)?;
        let max_upload = config.admin.max_upload.unwrap_or(DEFAULT_MAX_UPLOAD);
        let tokens = crate::control::access::Minter::new(config.clone(), &options.data_dir);
        let admin = Admin::new(deployments.clone(), &parts, token, max_upload, hosts, tokens);
        // Deliveries start once everything that was deployed is back, so no
        // lane waits on a subscriber that is only slow to restore.
        let dispatcher = tokio::spawn(runtime.dispatch());

        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding {}", options.listen))?;
        let admin_listener = tokio::net::TcpListener::bind(options.admin_listen)
            .await
            .with_context(|| format!("binding the admin API to {}", options.admin_listen))?;
        let addr = listener.local_addr()?;
        let admin_addr = admin_listener.local_addr()?;

        tasks.push(tokio::spawn(gateway.serve(listener, wait_for(stopped.clone()))));
        tasks.push(tokio::spawn(
            deployments.clone().watch_canaries(config.canary, wait_for(stopped.clone())),
        ));
        tasks.push(tokio::spawn(runtime.clone().sweep_kept_answers(wait_for(stopped.clone()))));
        tasks.push(tokio::spawn(serve_http(
            admin_listener,
            gateway_options,
            wait_for(stopped.clone()),
            move |request| {
                let admin = admin.clone();
                async move { admin.handle(request).await }
            },
        )));
        if let Some(dir) = options.watch {
            tasks.push(tokio::spawn(crate::control::watch::watch(
                dir,
                deployments.clone(),
                wait_for(stopped),
            )));
        }
        tracing::info!(%addr, %admin_addr, data_dir = %options.data_dir.display(), "pitstop is serving");
        Ok(Platform { addr, admin_addr, parts, deployments, stop, tasks, dispatcher })
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The admin API's address.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The control plane.
    pub fn deployments(&self) -> &Arc<Deployments> {
        &self.deployments
    }

    /// Stop accepting, let in-flight requests finish (within the grace
    /// period), and flush storage.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            task.await.context("a server task failed")?;
        }
        // Deliveries cut short commit nothing and are made again next start.
        self.dispatcher.abort();
        self.parts.keyspaces.flush().await.context("flushing storage")?;
        tracing::info!("pitstop stopped");
        Ok(())
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.dispatcher.abort();
    }
}

async fn wait_for(mut stopped: watch::Receiver<bool>) {
    let _ = stopped.wait_for(|stop| *stop).await;
}

/// Deploy the built-ins never deployed here before, and every configured
/// component whose file differs from its active version.
async fn seed(deployments: &Deployments, config: &Config) -> anyhow::Result<()> {
    let replaced = |name: &str| config.components.get(name).is_some_and(|c| c.path.is_some());
    for builtin in BUILTINS.iter().filter(|b| !replaced(b.name)) {
        if !deployments.is_known(builtin.name)? {
            let deployed = deployments.deploy(builtin.name, builtin.wasm.to_vec(), None).await;
            unless_seeded_elsewhere(deployed.map(|_| ()))
                .with_context(|| format!("deploying the built-in {}", builtin.name))?;
        }
    }
    for (name, component) in &config.components {
        let Some(path) = &component.path else { continue };
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading component {name} from {}", path.display()))?;
        unless_seeded_elsewhere(deployments.ensure(name, bytes, None).await.map(|_| ()))
            .with_context(|| format!("deploying {name} from {}", path.display()))?;
    }
    Ok(())
}

/// Warn, naming each, of the configured routes whose component is neither
/// configured nor deployed (a misspelt name, most often): they answer 404
/// until it is deployed. With `strict`, refuse to start instead.
fn warn_of_dangling_routes(
    config: &Config,
    registry: &Registry,
    strict: bool,
) -> anyhow::Result<()> {
    let mut dangling = Vec::new();
    for route in config.routes.iter().flatten() {
        if let RouteTarget::Component(name) = route.target()?
            && registry.get(name).is_none()
        {
            tracing::warn!(
                route = %route.prefix,
                component = name,
                "route {} leads to component {name:?}, which is neither configured nor \
                 deployed: it answers 404 until `pitstop deploy {name}`",
                route.prefix
            );
            dangling.push(format!("{} -> {name}", route.prefix));
        }
    }
    if strict && !dangling.is_empty() {
        anyhow::bail!(
            "routes to components neither configured nor deployed (--strict): {}",
            dangling.join(", ")
        );
    }
    Ok(())
}

/// Hosts of a cluster starting together seed the same names: the one that
/// lost the race serves what the other deployed (`Deployments::follow`).
fn unless_seeded_elsewhere(
    seeded: Result<(), crate::runtime::DeployError>,
) -> Result<(), crate::runtime::DeployError> {
    match seeded {
        Err(crate::runtime::DeployError::Concurrent(name)) => {
            tracing::info!(component = name, "seeded through another host meanwhile");
            Ok(())
        }
        other => other,
    }
}

/// The configured route table as (prefix, component or upstream name), in
/// the config's order, then the built-in services' routes whose prefix it does not give
/// (unless `[gateway] builtin_routes = false`), and the upstreams the
/// routes lead to: with `defaults`' deadline (unless the route gives one),
/// breaker and concurrency, and answers of at most `max_body` bytes.
fn static_routes(
    config: &Config,
    defaults: &ComponentSettings,
    max_body: usize,
) -> anyhow::Result<(Vec<(String, String)>, Upstreams)> {
    let mut pairs = Vec::new();
    let mut addresses = Vec::new();
    for route in config.routes.iter().flatten() {
        let target = match route.target()? {
            RouteTarget::Component(name) => name.to_string(),
            RouteTarget::Upstream(address, deadline_ms) => {
                let deadline = deadline_ms.map_or(defaults.deadline, Duration::from_millis);
                let settings = UpstreamSettings {
                    deadline,
                    breaker: defaults.breaker,
                    max_concurrency: defaults.max_concurrency,
                };
                addresses.push((address.to_string(), settings));
                upstream::name_for(address).context("in the route table")?
            }
        };
        pairs.push((route.prefix.clone(), target));
    }
    if config.gateway.builtin_routes != Some(false) {
        for builtin in BUILTINS {
            if !pairs.iter().any(|(prefix, _)| prefix == builtin.prefix) {
                pairs.push((builtin.prefix.to_string(), builtin.name.to_string()));
            }
        }
    }
    let upstreams = Upstreams::new(&addresses, max_body).context("in the route table")?;
    Ok((pairs, upstreams))
}

fn gateway_options(config: &Config) -> GatewayOptions {
    let mut options = GatewayOptions::default();
    let gateway = &config.gateway;
    if let Some(bytes) = gateway.max_request_body {
        options.max_request_body = bytes;
    }
    if let Some(bytes) = gateway.max_response_body {
        options.max_response_body = bytes;
    }
    if let Some(ms) = gateway.header_read_timeout_ms {
        options.header_read_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = gateway.shutdown_grace_ms {
        options.shutdown_grace = Duration::from_millis(ms);
    }
    if let Some(on) = gateway.access_log {
        options.access_log = on;
    }
    options
}
