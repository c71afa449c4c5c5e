//! The pitstop host: runs microservices as WebAssembly components behind
//! the [`pitstop_gateway`].
//!
//! 1. Open a [`sled::Db`] and create a [`Runtime`] over it: one wasmtime
//!    engine (pooling allocator, epoch deadlines, async).
//! 2. Deploy components through the control plane
//!    ([`deployments::Deployments`]): each is compiled once (or loaded from
//!    the [`artifacts`] cache), checked against the `pitstop:platform/service`
//!    world, pre-linked, persisted, then swapped in.
//! 3. Serve: every request instantiates the active version afresh, with its
//!    own keyspace, log and services contexts ([`state::ComponentState`]).
//!    The [`admin`] API changes what is deployed while that goes on.
//! 4. Observe: every invocation runs in a span continuing the request's
//!    trace ([`telemetry`]), and counts into the [`metrics`] registry that
//!    the admin listener serves; the gateway checks credentials per route
//!    from the policies [`access`] builds out of the config.
//!
//! [`Platform`] does all four from a [`Config`], as `pitstop serve` does:
//!
//! ```no_run
//! # async fn run() -> anyhow::Result<()> {
//! use pitstop_host::{Config, Platform, PlatformOptions};
//! let platform = Platform::start(PlatformOptions {
//!     listen: "127.0.0.1:8080".parse()?,
//!     admin_listen: "127.0.0.1:8081".parse()?,
//!     admin_token: None, // generated into ./data/admin.token
//!     data_dir: "./data".into(),
//!     config: Config::default(),
//!     watch: None,
//! })
//! .await?;
//! println!("serving on http://{}", platform.addr());
//! platform.shutdown().await?;
//! # Ok(()) }
//! ```

pub mod access;
pub mod admin;
pub mod artifacts;
pub mod backend;
pub mod bindings;
pub mod breaker;
pub mod builtin;
pub mod bus;
pub mod client;
pub mod commit;
pub mod config;
pub mod deployments;
pub mod dispatch;
pub mod engine;
pub mod flusher;
pub mod kv;
pub mod log;
pub mod metrics;
pub mod naming;
pub mod platform;
pub mod registry;
pub mod runtime;
pub mod scheduling;
pub mod services;
pub mod state;
pub mod telemetry;
pub mod test_runner;
pub mod testing;
pub mod watch;
pub mod world;

pub use config::Config;
pub use platform::{Platform, PlatformOptions};
pub use runtime::{DeployError, InvokeFailure, Runtime, RuntimeOptions};
