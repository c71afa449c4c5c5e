//! The pitstop gateway: the HTTP front door of the platform.
//!
//! It parses requests, enforces limits, routes a path prefix to a component
//! and maps every failure to one JSON error shape. It knows nothing about
//! WebAssembly: whatever runs the components implements [`Backend`].
//!
//! 1. Implement [`Backend`] (the host's runtime does; tests can use a fake).
//! 2. Build a [`RouteTable`] from `(prefix, component)` pairs.
//! 3. Create a [`Gateway`] and [`Gateway::serve`] it on a bound listener until
//!    the shutdown future resolves; in-flight requests finish first.
//!
//! ```no_run
//! # use pitstop_gateway::*;
//! # async fn run(backend: impl Backend) -> std::io::Result<()> {
//! let routes = RouteTable::new([("/users", "user")]).expect("valid routes");
//! let gateway = Gateway::new(backend, routes, GatewayOptions::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! gateway.serve(listener, std::future::pending::<()>()).await;
//! # Ok(()) }
//! ```
//!
//! Reserved paths: `GET /health` is answered by the gateway itself from
//! [`Backend::health`]; every other path goes through the route table.

mod backend;
mod error;
mod routes;
mod server;

pub use backend::{Backend, HealthReport, InvokeError, Reply, Request};
pub use error::{GatewayError, error_response, json_response};
pub use routes::{Route, RouteError, RouteTable};
pub use server::{
    DRAIN_LIMIT, Gateway, GatewayOptions, RESERVED_HEADER_PREFIX, discard_body, read_body,
    serve_http,
};
