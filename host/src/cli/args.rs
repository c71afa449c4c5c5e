//! The `pitstop` command line: every subcommand, its flags and their help,
//! and how the admin commands find the server.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::control::client::AdminClient;
use crate::control::login;
use crate::telemetry::LogFormat;
use clap::{Args, Parser, Subcommand};

/// Run microservices as WebAssembly components, swappable while serving.
#[derive(Parser)]
#[command(name = "pitstop", version, about)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

#[derive(Subcommand)]
pub(super) enum Command {
    /// Serve the platform: the gateway with the built-in user, order and
    /// payment services, plus whatever the config file adds, and the admin API.
    Serve {
        /// Address the gateway listens on.
        #[arg(long, env = "PITSTOP_LISTEN", default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Address the admin API listens on.
        #[arg(long, env = "PITSTOP_ADMIN_LISTEN", default_value = "127.0.0.1:8081")]
        admin_listen: SocketAddr,
        /// The admin API's bearer token; without it, the one in
        /// `DATA_DIR/admin.token` (generated at first start).
        #[arg(long, env = "PITSTOP_ADMIN_TOKEN", hide_env_values = true)]
        admin_token: Option<String>,
        /// Directory for storage, component versions and compiled artifacts.
        #[arg(long, env = "PITSTOP_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// A pitstop.toml; without it the built-in defaults apply.
        #[arg(long, env = "PITSTOP_CONFIG")]
        config: Option<PathBuf>,
        /// Deploy DIR/NAME.wasm as NAME whenever the file changes.
        #[arg(long, value_name = "DIR")]
        watch: Option<PathBuf>,
        /// Refuse to start when a route of the config leads to a component
        /// that is neither configured nor deployed (without it: a warning).
        #[arg(long)]
        strict: bool,
        /// Join a cluster: keyspaces and events shared with the other hosts
        /// on these NATS JetStream servers (overrides `[cluster] nats`).
        #[arg(long, env = "PITSTOP_CLUSTER", value_name = "nats://HOST:PORT[,...]")]
        cluster: Option<String>,
        /// How log lines on stdout look. Spans also go to an OpenTelemetry
        /// collector when OTEL_EXPORTER_OTLP_ENDPOINT is set.
        #[arg(long, env = "PITSTOP_LOG_FORMAT", value_enum, default_value = "pretty")]
        log_format: LogFormat,
    },
    /// Mint a development JWT (HS256) with the configured secret:
    /// PITSTOP_JWT_SECRET, the config's [auth.jwt] secret, or DATA_DIR/jwt.secret.
    Token {
        /// The subject (`sub`).
        #[arg(long)]
        sub: String,
        /// How long the token is valid, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: std::time::Duration,
        /// The audience (`aud`); defaults to the first configured one.
        #[arg(long)]
        aud: Option<String>,
        /// The issuer (`iss`); defaults to the first configured one.
        #[arg(long)]
        iss: Option<String>,
        /// A role to grant (in the configured roles claim); repeat for more.
        #[arg(long = "role")]
        roles: Vec<String>,
        /// The server's pitstop.toml, for its secret, audience and issuer.
        #[arg(long, env = "PITSTOP_CONFIG")]
        config: Option<PathBuf>,
        /// Without a secret here (the data dir's, the config's or
        /// PITSTOP_JWT_SECRET), the server signs it: the admin API found
        /// as for `pitstop deploy`.
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Deploy FILE as the new version of NAME (a new component if NAME is new).
    Deploy {
        /// Component name: a lower-case letter, then up to 62 of `a-z`, `0-9`, `-`.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        /// A path prefix routed to it (repeatable); replaces earlier ones.
        #[arg(long = "route")]
        routes: Vec<String>,
        /// Deploy as a canary taking PERCENT (1-99) of NAME's requests
        /// beside the active version, until `promote` or `rollback`.
        #[arg(long, value_name = "PERCENT", value_parser = clap::value_parser!(u8).range(1..=99), conflicts_with = "routes")]
        canary: Option<u8>,
        /// Let the platform roll the canary back when it does worse than the
        /// active version (the `[canary]` thresholds in the config), or promote it.
        #[arg(long, requires = "canary")]
        auto_rollback: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Build the crate in DIR for wasm32-wasip2, run its wasm tests, deploy
    /// it (a new name at /NAME), and again on every change to its sources:
    /// one line per cycle with the time each step took.
    Dev {
        /// The crate; default the current directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// One cycle, then exit (0 when it deployed).
        #[arg(long)]
        once: bool,
        /// Run a server in this process (the built-in services, data in
        /// DIR/target/pitstop-dev) and deploy to it, instead of to a
        /// running one.
        #[arg(long, conflicts_with_all = ["admin_url", "admin_token"])]
        serve: bool,
        /// With --serve: where its gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080", requires = "serve")]
        listen: SocketAddr,
        /// With --serve: where its admin API listens.
        #[arg(long, default_value = "127.0.0.1:8081", requires = "serve")]
        admin_listen: SocketAddr,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Save the admin API at URL and its token (read from stdin) in the
    /// user's config directory: the admin commands use them from any
    /// directory. The token is checked against the API first.
    Login {
        /// The admin API, e.g. http://127.0.0.1:8081.
        url: String,
    },
    /// Forget the login `pitstop login` saved.
    Logout,
    /// Make the canary of NAME its active version.
    Promote {
        /// Component name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the deployed components.
    Components {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Show the version history of a component.
    Versions {
        /// Component name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make the previous version of a component active again.
    Rollback {
        /// Component name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Serve VERSION of NAME, any version it keeps: forward after a
    /// rollback, or again after an undeploy.
    Activate {
        /// Component name.
        name: String,
        /// The version (see `pitstop versions NAME`).
        version: u64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Run a component crate's test binary as wasm inside the platform: the
    /// `runner` of `cargo test --target wasm32-wasip2` (see
    /// components/.cargo/config.toml). Exits with the tests' status.
    TestRunner {
        /// A real component answering `services` calls no stub answers
        /// (repeatable), as NAME=PATH.
        #[arg(long = "component", value_name = "NAME=PATH", value_parser = parse_component)]
        components: Vec<(String, PathBuf)>,
        /// The test binary cargo built.
        wasm: PathBuf,
        /// Arguments for the test harness (filters, --nocapture, ...).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Write a starter pitstop.toml that `pitstop serve --config` runs as it
    /// is, every other option in it commented out.
    Init {
        /// Where to write it; it must not exist.
        #[arg(long, default_value = "pitstop.toml")]
        config: PathBuf,
    },
    /// Create a service crate in a new directory NAME: a handler with one
    /// route, its wasm-level test, the test runner and the SDK, ready for
    /// `cargo build --release --target wasm32-wasip2` and `pitstop deploy`.
    New {
        /// The service's name (its component, crate and route): a lower-case
        /// letter, then up to 62 of `a-z`, `0-9`, `-`.
        name: String,
        /// Also publish an event per visit and subscribe to `user.created`.
        #[arg(long)]
        events: bool,
        /// The language of the crate; only Rust has a template (Python and
        /// JavaScript services: see examples/ in the pitstop repository).
        #[arg(long, value_enum, default_value = "rust")]
        lang: Lang,
        /// Where to create it; default `./NAME`.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Stop serving a component; its keyspace, history and stored versions
    /// are kept (`pitstop activate` serves one again) unless --purge.
    Undeploy {
        /// Component name.
        name: String,
        /// Also forget its history and drop its keyspace.
        #[arg(long)]
        purge: bool,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Forget a component, deployed or undeployed: its history, its
    /// keyspace and its subscriptions. It cannot be undone.
    Purge {
        /// Component name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// What `pitstop new` writes a service in.
#[derive(Clone, Copy, clap::ValueEnum)]
pub(super) enum Lang {
    Rust,
}

/// How to reach the admin API.
#[derive(Args)]
pub(super) struct AdminArgs {
    /// The admin API; without it, the one `pitstop login` saved, else
    /// http://127.0.0.1:8081.
    #[arg(long, env = "PITSTOP_ADMIN_URL")]
    pub(super) admin_url: Option<String>,
    /// The bearer token; without it, the saved login's (for its URL), else
    /// the one in `DATA_DIR/admin.token`.
    #[arg(long, env = "PITSTOP_ADMIN_TOKEN", hide_env_values = true)]
    pub(super) admin_token: Option<String>,
    /// The server's data dir, to read its token from.
    #[arg(long, env = "PITSTOP_DATA_DIR", default_value = "./data")]
    pub(super) data_dir: PathBuf,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    pub(super) json: bool,
}

impl AdminArgs {
    pub(super) fn client(&self) -> anyhow::Result<AdminClient> {
        let saved = login::load()?;
        let (url, token) = login::resolve(self.admin_url.clone(), self.admin_token.clone(), saved);
        AdminClient::new(&url, token, &self.data_dir)
    }
}

pub(super) fn parse_component(value: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = value.split_once('=').ok_or("expected NAME=PATH")?;
    Ok((name.to_string(), PathBuf::from(path)))
}
