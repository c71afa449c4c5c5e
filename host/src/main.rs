//! The `pitstop` command: `serve` runs the platform; the other subcommands
//! talk to a running one through its admin API.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use bytes::Bytes;
use clap::{Args, Parser, Subcommand};
use pitstop_host::control::client::{AdminClient, encode, with_progress};
use pitstop_host::control::login;
use pitstop_host::control::table::{components_table, versions_table};
use pitstop_host::telemetry::{LogFormat, LogTarget, Telemetry};
use pitstop_host::{Config, Platform, PlatformOptions};
use serde_json::Value;

/// Run microservices as WebAssembly components, swappable while serving.
#[derive(Parser)]
#[command(name = "pitstop", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
enum Lang {
    Rust,
}

/// How to reach the admin API.
#[derive(Args)]
struct AdminArgs {
    /// The admin API; without it, the one `pitstop login` saved, else
    /// http://127.0.0.1:8081.
    #[arg(long, env = "PITSTOP_ADMIN_URL")]
    admin_url: Option<String>,
    /// The bearer token; without it, the saved login's (for its URL), else
    /// the one in `DATA_DIR/admin.token`.
    #[arg(long, env = "PITSTOP_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
    /// The server's data dir, to read its token from.
    #[arg(long, env = "PITSTOP_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// Print the API's JSON instead of text.
    #[arg(long)]
    json: bool,
}

impl AdminArgs {
    fn client(&self) -> anyhow::Result<AdminClient> {
        let saved = login::load()?;
        let (url, token) = login::resolve(self.admin_url.clone(), self.admin_token.clone(), saved);
        AdminClient::new(&url, token, &self.data_dir)
    }
}

/// A failed command prints one line, `error: ` and the chain of causes,
/// and exits with 1: never a backtrace, whatever `RUST_BACKTRACE` says (a
/// user's mistake is not a crash to debug). A cause spanning lines (a
/// compiler's message relayed by the admin API) is joined into the one.
fn main() -> ExitCode {
    match start(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let message = format!("{error:#}");
            let lines: Vec<&str> =
                message.lines().map(str::trim).filter(|line| !line.is_empty()).collect();
            eprintln!("error: {}", lines.join(" "));
            ExitCode::FAILURE
        }
    }
}

fn start(cli: Cli) -> anyhow::Result<()> {
    let telemetry = match &cli.command {
        // The server's log is its output.
        Command::Serve { log_format, .. } => Telemetry::init(
            "warn,pitstop_host=info,pitstop_gateway=info,guest=info",
            *log_format,
            LogTarget::Stdout,
        )?,
        // Under cargo test, the guests' info logs would drown the test output.
        Command::TestRunner { .. } | Command::New { .. } | Command::Init { .. } => {
            Telemetry::init("warn", LogFormat::Pretty, LogTarget::Stderr)?
        }
        // The other commands answer on stdout.
        _ => Telemetry::init(
            "warn,pitstop_host=info,pitstop_gateway=info",
            LogFormat::Pretty,
            LogTarget::Stderr,
        )?,
    };
    // Fail points named in `FAILPOINTS`, for the crash tests; for the
    // whole run (dropping the scenario would clear them).
    #[cfg(feature = "failpoints")]
    let _fail_points = fail::FailScenario::setup();
    let runtime = tokio::runtime::Runtime::new().context("starting tokio")?;
    let result = runtime.block_on(run(cli.command));
    telemetry.shutdown();
    result
}

fn parse_component(value: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = value.split_once('=').ok_or("expected NAME=PATH")?;
    Ok((name.to_string(), PathBuf::from(path)))
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::TestRunner { components, wasm, args } => {
            let run = pitstop_host::testing::runner::TestRun { wasm, args, components };
            let status = pitstop_host::testing::suite::run(run).await?;
            std::process::exit(status);
        }
        Command::New { name, events, lang: Lang::Rust, dir } => {
            let this = std::env::current_exe().context("finding this pitstop binary")?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let runner = pitstop_host::scaffold::runner_for(&this);
            let service = pitstop_host::scaffold::NewService { name, dir, events, runner };
            pitstop_host::scaffold::create(&service)?;
            let file = pitstop_host::scaffold::wasm_file_stem(&service.name);
            say(format_args!(
                "created {dir}: the {name} service\n\n  cd {dir}\n  \
                 cargo build --release --target wasm32-wasip2\n  \
                 cargo test --target wasm32-wasip2\n  \
                 pitstop deploy {name} target/wasm32-wasip2/release/{file}.wasm --route /{name}\n\n\
                 The tests run in `{runner}` (.cargo/config.toml); README.md says more.",
                dir = service.dir.display(),
                name = service.name,
                runner = service.runner,
            ))
        }
        Command::Init { config } => {
            pitstop_host::config::starter::write_starter(&config)?;
            say(format_args!(
                "wrote {path}: it starts as it is, every option commented out\n\n  \
                 pitstop serve --config {path}",
                path = config.display()
            ))
        }
        Command::Token { sub, ttl, aud, iss, roles, config, admin } => {
            use pitstop_host::control::access;
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            let request =
                access::TokenRequest { subject: sub, ttl, audience: aud, issuer: iss, roles };
            if access::secret(&config, &admin.data_dir, false)?.is_some() {
                return say(access::mint(&config, &admin.data_dir, request)?);
            }
            let client = admin.client().with_context(|| {
                format!(
                    "no signing secret here ({}, [auth.jwt] secret or {}) and no server to ask",
                    admin.data_dir.join(access::SECRET_FILE).display(),
                    access::SECRET_ENV
                )
            })?;
            let body = Bytes::from(serde_json::to_vec(&request)?);
            let answer = client.call("POST", "/admin/tokens", body).await?;
            say(answer["token"].as_str().context("the server sent no token")?.to_string())
        }
        Command::Serve {
            listen,
            admin_listen,
            admin_token,
            data_dir,
            config,
            watch,
            cluster,
            strict,
            ..
        } => {
            let config = match config {
                Some(path) => Config::load(&path)?,
                None => Config::default(),
            };
            serve(PlatformOptions {
                listen,
                admin_listen,
                admin_token,
                data_dir,
                config,
                watch,
                cluster,
                strict,
            })
            .await
        }
        Command::Deploy { name, file, routes, canary, auto_rollback, admin } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let mut query: Vec<String> =
                routes.iter().map(|r| format!("route={}", encode(r))).collect();
            if let Some(percent) = canary {
                query.push(format!("canary={percent}&auto_rollback={auto_rollback}"));
            }
            let query =
                if query.is_empty() { String::new() } else { format!("?{}", query.join("&")) };
            let path = format!("/admin/components/{}{query}", encode(&name));
            let what = format!(
                "deploying {name} ({:.1} MB): uploading and compiling",
                bytes.len() as f64 / 1e6
            );
            let client = admin.client()?;
            let answer =
                with_progress(&what, client.call("PUT", &path, Bytes::from(bytes))).await?;
            print(&admin, &answer, |a| {
                if a["unchanged"] == true {
                    return format!(
                        "{name} version {} is active with these bytes already: nothing deployed",
                        a["version"]
                    );
                }
                let new = if a["created"] == true { " (new component)" } else { "" };
                let canary = match canary {
                    Some(percent) if auto_rollback => {
                        format!(
                            " as a canary taking {percent}% of the requests, judged by the platform"
                        )
                    }
                    Some(percent) => format!(" as a canary taking {percent}% of the requests"),
                    None => String::new(),
                };
                format!(
                    "deployed {} version {}{canary}{new}",
                    a["name"].as_str().unwrap_or(&name),
                    a["version"]
                )
            })
        }
        Command::Dev { dir, once, serve: false, admin, .. } => {
            let client = admin.client().context(
                "finding the server to deploy to (`pitstop dev --serve` runs one of its own)",
            )?;
            let status = pitstop_host::control::dev::run(&dir, &client, once).await?;
            std::process::exit(status);
        }
        Command::Dev { dir, once, serve: true, listen, admin_listen, .. } => {
            std::process::exit(dev_with_server(dir, listen, admin_listen, once).await?)
        }
        Command::Login { url } => {
            if std::io::stdin().is_terminal() {
                eprint!("admin token for {url} (it is in the server's DATA_DIR/admin.token): ");
            }
            let mut token = String::new();
            std::io::stdin().read_line(&mut token).context("reading the token from stdin")?;
            let token = token.trim().to_string();
            anyhow::ensure!(!token.is_empty(), "no token on stdin");
            let client = AdminClient::new(&url, Some(token.clone()), std::path::Path::new("."))?;
            client
                .call("GET", "/admin/components", Bytes::new())
                .await
                .context("not saved: the admin API did not accept the token")?;
            let saved = login::save(&login::Login { admin_url: url.clone(), admin_token: token })?;
            say(format_args!(
                "logged in to {url}; saved in {}: admin commands use it without --admin-url",
                saved.display()
            ))
        }
        Command::Logout => match login::forget()? {
            true => say("logged out: the saved login is gone"),
            false => say("no saved login"),
        },
        Command::Promote { name, admin } => {
            let path = format!("/admin/components/{}/promote", encode(&name));
            let answer = admin.client()?.call("POST", &path, Bytes::new()).await?;
            print(&admin, &answer, |a| format!("{name} version {} is active", a["version"]))
        }
        Command::Components { admin } => {
            let answer = admin.client()?.call("GET", "/admin/components", Bytes::new()).await?;
            print(&admin, &answer, components_table)
        }
        Command::Versions { name, admin } => {
            let path = format!("/admin/components/{}/versions", encode(&name));
            let answer = admin.client()?.call("GET", &path, Bytes::new()).await?;
            print(&admin, &answer, versions_table)
        }
        Command::Rollback { name, admin } => {
            let path = format!("/admin/components/{}/rollback", encode(&name));
            let answer = admin.client()?.call("POST", &path, Bytes::new()).await?;
            print(&admin, &answer, |a| format!("{name} rolled back to version {}", a["version"]))
        }
        Command::Activate { name, version, admin } => {
            let path = format!("/admin/components/{}/versions/{version}/activate", encode(&name));
            let answer = admin.client()?.call("POST", &path, Bytes::new()).await?;
            print(&admin, &answer, |a| format!("{name} version {} is active", a["version"]))
        }
        Command::Purge { name, admin } => {
            let path = format!("/admin/components/{}?purge=true", encode(&name));
            let answer = admin.client()?.call("DELETE", &path, Bytes::new()).await?;
            print(&admin, &answer, |_| format!("{name} purged: history and keyspace dropped"))
        }
        Command::Undeploy { name, purge, admin } => {
            let path = format!("/admin/components/{}?purge={purge}", encode(&name));
            let answer = admin.client()?.call("DELETE", &path, Bytes::new()).await?;
            let kept = if purge { "history and keyspace dropped" } else { "keyspace kept" };
            print(&admin, &answer, |_| format!("{name} undeployed ({kept})"))
        }
    }
}

fn print(
    admin: &AdminArgs,
    answer: &Value,
    human: impl Fn(&Value) -> String,
) -> anyhow::Result<()> {
    if admin.json { say(answer) } else { say(human(answer)) }
}

/// Print `line` on stdout. A reader that went away (`pitstop components |
/// head -1`) is not an error: the rest is dropped, where `println!` would
/// panic.
fn say(line: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.context("writing to stdout"),
    }
}

async fn serve(options: PlatformOptions) -> anyhow::Result<()> {
    // Registered before anything else: a SIGTERM sent while the platform
    // starts, or the moment it says it listens, must stop it gracefully,
    // not kill it with the signal's default action.
    let stop = shutdown_signal().context("listening for SIGINT and SIGTERM")?;
    let platform = Platform::start(options).await?;
    println!("pitstop listening on http://{}", platform.addr());
    println!("pitstop admin on http://{}", platform.admin_addr());
    stop.await;
    tracing::info!("shutting down");
    platform.shutdown().await
}

/// `pitstop dev --serve`: the dev loop against a server in this process,
/// on the embedded store with the built-in services, until the loop ends
/// (`--once`) or a signal stops both.
async fn dev_with_server(
    dir: PathBuf,
    listen: SocketAddr,
    admin_listen: SocketAddr,
    once: bool,
) -> anyhow::Result<i32> {
    let stop = shutdown_signal().context("listening for SIGINT and SIGTERM")?;
    let data_dir = dir.join("target/pitstop-dev");
    let platform = Platform::start(PlatformOptions {
        listen,
        admin_listen,
        // Made and kept in the data dir, where the client reads it.
        admin_token: None,
        data_dir: data_dir.clone(),
        config: Config::default(),
        watch: None,
        cluster: None,
        strict: false,
    })
    .await?;
    let admin_url = format!("http://{}", platform.admin_addr());
    println!(
        "dev: serving on http://{}, admin API on {admin_url} (--data-dir {} for its token)",
        platform.addr(),
        data_dir.display()
    );
    let client = AdminClient::new(&admin_url, None, &data_dir)?;
    let status = tokio::select! {
        status = pitstop_host::control::dev::run(&dir, &client, once) => status?,
        () = stop => 0,
    };
    platform.shutdown().await?;
    Ok(status)
}

/// Ctrl-C (SIGINT) or SIGTERM; the handlers are in place when this returns.
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

/// Ctrl-C.
#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
