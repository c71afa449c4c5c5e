//! What each subcommand does.

use std::io::IsTerminal;
use std::path::PathBuf;

use super::args::{AdminArgs, Command, Lang};
use super::serving::{dev_with_server, serve};
use crate::control::client::{AdminClient, encode, with_progress};
use crate::control::login;
use crate::control::table::{components_table, versions_table};
use crate::{Config, PlatformOptions};
use anyhow::Context;
use bytes::Bytes;
use serde_json::Value;

pub(super) async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::TestRunner { components, wasm, args } => {
            let run = crate::testing::runner::TestRun { wasm, args, components };
            let status = crate::testing::suite::run(run).await?;
            std::process::exit(status);
        }
        Command::New { name, events, lang: Lang::Rust, dir } => {
            let this = std::env::current_exe().context("finding this pitstop binary")?;
            let dir = dir.unwrap_or_else(|| PathBuf::from(&name));
            let runner = crate::scaffold::runner_for(&this);
            let service = crate::scaffold::NewService { name, dir, events, runner };
            crate::scaffold::create(&service)?;
            let file = crate::scaffold::wasm_file_stem(&service.name);
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
            crate::config::starter::write_starter(&config)?;
            say(format_args!(
                "wrote {path}: it starts as it is, every option commented out\n\n  \
                 pitstop serve --config {path}",
                path = config.display()
            ))
        }
        Command::Token { sub, ttl, aud, iss, roles, config, admin } => {
            use crate::control::access;
            let config = Config::load_or_default(config.as_deref())?;
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
            let config = Config::load_or_default(config.as_deref())?;
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
            let status = crate::control::dev::run(&dir, &client, once).await?;
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
pub(super) fn say(line: impl std::fmt::Display) -> anyhow::Result<()> {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.context("writing to stdout"),
    }
}
