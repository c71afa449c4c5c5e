//! The pitstop gateway: the HTTP front door of the platform.
//!
//! It parses requests, checks credentials and rate limits, routes a path
//! prefix to a component, starts the trace of every request, and maps every
//! failure to one JSON error shape. It knows nothing about WebAssembly:
//! whatever runs the components implements [`Backend`].
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
//! let gateway = Gateway::new(backend, routes, GatewayOptions::default()).expect("valid policies");
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! gateway.serve(listener, std::future::pending::<()>()).await;
//! # Ok(()) }
//! ```
//!
//! Reserved paths, answered by the gateway itself: `GET /health` (liveness:
//! the process answers) and `GET /ready` (readiness, from [`Backend::ready`]).
//! Every other path goes through the route table.
//!
//! Every response carries `x-request-id` (the client's, when sane, else a new
//! one) and `traceparent` (the gateway span, in the client's trace when it
//! sent a valid one).

mod admission;
pub mod auth;
mod backend;
mod body;
mod error;
mod health;
mod listener;
mod options;
pub mod paths;
pub mod ratelimit;
mod reply;
mod routes;
mod server;
pub mod trace;

pub use backend::{Backend, HealthReport, InvokeError, Reply, Request, RequestRecord};
pub use body::{DRAIN_LIMIT, discard_body, read_body};
pub use error::{GatewayError, error_response, json_response};
pub use listener::serve_http;
pub use options::{AccessOptions, GatewayOptions};
pub use reply::{dashed, is_hop_by_hop};
pub use routes::{Route, RouteError, RouteTable, prefix_matches};
pub use server::{ClientAddr, Gateway, REQUEST_ID_HEADER, RESERVED_HEADER_PREFIX};
pub use trace::TraceContext;
