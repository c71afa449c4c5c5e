//! A running platform: storage, runtime, components and gateway, started and
//! stopped as one.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use pitstop_gateway::{Gateway, GatewayOptions, RouteTable};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backend::RuntimeBackend;
use crate::builtin::BUILTINS;
use crate::config::Config;
use crate::runtime::{Runtime, RuntimeOptions};

/// What to start.
#[derive(Debug)]
pub struct PlatformOptions {
    /// Where the gateway listens; port 0 picks a free one.
    pub listen: SocketAddr,
    /// Where sled keeps its files.
    pub data_dir: PathBuf,
    /// The parsed `pitstop.toml` (or the defaults).
    pub config: Config,
}

/// A started platform. Dropping it without [`Platform::shutdown`] aborts the
/// gateway; shutting down lets in-flight requests finish and flushes storage.
pub struct Platform {
    addr: SocketAddr,
    runtime: Arc<Runtime>,
    gateway: Gateway<RuntimeBackend>,
    stop: Option<oneshot::Sender<()>>,
    serving: Option<JoinHandle<()>>,
}

impl Platform {
    /// Open storage, deploy the built-in and configured components, and
    /// start serving.
    pub async fn start(options: PlatformOptions) -> anyhow::Result<Platform> {
        let config = options.config;
        std::fs::create_dir_all(&options.data_dir)
            .with_context(|| format!("creating data dir {}", options.data_dir.display()))?;
        let db_path = options.data_dir.join("db");
        let db = sled::Config::new().path(&db_path).open().with_context(|| {
            format!("opening storage at {} (is another pitstop using it?)", db_path.display())
        })?;

        let runtime = Runtime::new(db, runtime_options(&config))?;
        deploy_initial(&runtime, &config).await?;

        let routes = match &config.routes {
            Some(routes) => {
                RouteTable::new(routes.iter().map(|r| (r.prefix.clone(), r.component.clone())))
            }
            None => RouteTable::new(BUILTINS.iter().map(|b| (b.prefix, b.name))),
        }
        .context("in the route table")?;
        for route in routes.routes() {
            if runtime.registry().get(&route.component).is_none() {
                tracing::warn!(
                    prefix = route.prefix,
                    component = route.component,
                    "route points at a component that is not deployed; it answers 503"
                );
            }
        }

        let gateway =
            Gateway::new(RuntimeBackend(runtime.clone()), routes, gateway_options(&config));
        let listener = tokio::net::TcpListener::bind(options.listen)
            .await
            .with_context(|| format!("binding {}", options.listen))?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let serving = tokio::spawn(gateway.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        tracing::info!(%addr, data_dir = %options.data_dir.display(), "pitstop is serving");
        Ok(Platform { addr, runtime, gateway, stop: Some(stop), serving: Some(serving) })
    }

    /// The gateway's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The gateway.
    pub fn gateway(&self) -> &Gateway<RuntimeBackend> {
        &self.gateway
    }

    /// Stop accepting, let in-flight requests finish (within the grace
    /// period), and flush storage.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(serving) = self.serving.take() {
            serving.await.context("the gateway task failed")?;
        }
        self.runtime.db().flush_async().await.context("flushing storage")?;
        tracing::info!("pitstop stopped");
        Ok(())
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        if let Some(serving) = self.serving.take() {
            serving.abort();
        }
    }
}

async fn deploy_initial(runtime: &Arc<Runtime>, config: &Config) -> anyhow::Result<()> {
    for builtin in BUILTINS.iter().filter(|b| !config.components.contains_key(b.name)) {
        runtime
            .deploy(builtin.name, builtin.wasm.to_vec())
            .await
            .with_context(|| format!("deploying the built-in {}", builtin.name))?;
    }
    for (name, component) in &config.components {
        let bytes = std::fs::read(&component.path).with_context(|| {
            format!("reading component {name} from {}", component.path.display())
        })?;
        runtime
            .deploy(name, bytes)
            .await
            .with_context(|| format!("deploying {name} from {}", component.path.display()))?;
    }
    Ok(())
}

fn runtime_options(config: &Config) -> RuntimeOptions {
    let mut options = RuntimeOptions::default();
    let runtime = &config.runtime;
    if let Some(ms) = runtime.deadline_ms {
        options.deadline = Duration::from_millis(ms);
    }
    if let Some(depth) = runtime.max_call_depth {
        options.max_call_depth = depth;
    }
    if let Some(bytes) = runtime.max_memory {
        options.engine.max_memory_bytes = bytes;
    }
    if let Some(count) = runtime.max_instances {
        options.engine.max_instances = count;
    }
    options
}

fn gateway_options(config: &Config) -> GatewayOptions {
    let mut options = GatewayOptions::default();
    let gateway = &config.gateway;
    if let Some(bytes) = gateway.max_request_body {
        options.max_request_body = bytes;
    }
    if let Some(ms) = gateway.header_read_timeout_ms {
        options.header_read_timeout = Duration::from_millis(ms);
    }
    if let Some(ms) = gateway.shutdown_grace_ms {
        options.shutdown_grace = Duration::from_millis(ms);
    }
    options
}
