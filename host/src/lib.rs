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
pub mod invoke;
pub mod kv;
pub mod log;
pub mod metrics;
pub mod naming;
pub mod platform;
pub mod queue;
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
pub use invoke::InvokeFailure;
pub use platform::{Platform, PlatformOptions};
pub use runtime::{DeployError, Runtime, RuntimeOptions};

/// The modules' import graph has no cycle: each capability, the bus, the
/// registry and the runtime can be understood (and replaced) from the
/// bottom up. Read from the sources, so a new cycle fails here, naming it.
#[cfg(test)]
mod layout {
    use std::collections::{BTreeMap, BTreeSet};

    fn imports() -> BTreeMap<String, BTreeSet<String>> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let mut graph = BTreeMap::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let Some(name) = path.file_stem().and_then(|s| s.to_str()) else { continue };
            if path.extension().is_none_or(|e| e != "rs") || matches!(name, "lib" | "main") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Doc links (`[`crate::x`]`) are not imports.
            let code = text.lines().filter(|l| !l.trim_start().starts_with("//"));
            let uses = code
                .flat_map(|line| {
                    line.split("crate::").skip(1).map(str::to_owned).collect::<Vec<_>>()
                })
                .map(|rest| {
                    rest.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect()
                })
                .filter(|used: &String| !used.is_empty() && used != name)
                .collect();
            graph.insert(name.to_string(), uses);
        }
        graph
    }

    #[test]
    fn no_module_imports_one_that_imports_it_back() {
        let graph = imports();
        assert!(graph.len() > 20, "read the modules: {graph:?}");
        // Depth-first: a module met again while still on the path closes a cycle.
        fn visit<'a>(
            module: &'a str,
            graph: &'a BTreeMap<String, BTreeSet<String>>,
            path: &mut Vec<&'a str>,
            done: &mut BTreeSet<&'a str>,
        ) {
            if let Some(at) = path.iter().position(|m| *m == module) {
                panic!("import cycle: {} -> {module}", path[at..].join(" -> "));
            }
            if !done.insert(module) {
                return;
            }
            path.push(module);
            for next in graph.get(module).into_iter().flatten() {
                visit(next, graph, path, done);
            }
            path.pop();
        }
        let mut done = BTreeSet::new();
        for module in graph.keys() {
            visit(module, &graph, &mut Vec::new(), &mut done);
        }
    }
}
