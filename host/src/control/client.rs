//! The admin API's client, behind `pitstop deploy`, `components`, `versions`,
//! `rollback` and `undeploy`.

use std::future::Future;
use std::io::IsTerminal;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::control::admin_token::TOKEN_FILE;

/// Talks to one admin API.
pub struct AdminClient {
    base: String,
    token: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for the API at `url`, with `token`, or else the token file
    /// in `data_dir`.
    pub fn new(url: &str, token: Option<String>, data_dir: &Path) -> anyhow::Result<Self> {
        let token = match token.filter(|t| !t.is_empty()) {
            Some(token) => token,
            None => {
                let path = data_dir.join(TOKEN_FILE);
                crate::control::admin_token::read_secret(&path)?.with_context(|| {
                    format!(
                        "no admin token: run `pitstop login URL` once, pass --admin-token, set \
                         PITSTOP_ADMIN_TOKEN, or point --data-dir at the server's data dir ({} is \
                         missing or empty)",
                        path.display()
                    )
                })?
            }
        };
        Ok(AdminClient {
            base: url.trim_end_matches('/').to_string(),
            token,
            http: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// Send a call; a non-2xx answer becomes an error carrying the server's message.
    pub async fn call(&self, method: &str, path: &str, body: Bytes) -> anyhow::Result<Value> {
        let request = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header(http::header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(http::header::CONTENT_TYPE, "application/wasm")
            .body(Full::new(body))?;
        let response = self
            .http
            .request(request)
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        let json: Value = serde_json::from_slice(&body).unwrap_or_else(
            |_| serde_json::json!({ "error": String::from_utf8_lossy(&body).into_owned() }),
        );
        if !status.is_success() {
            let message = json["error"].as_str().unwrap_or("no message");
            bail!("{status}: {message}");
        }
        Ok(json)
    }
}

/// How long a call may run before the CLI says it is still waiting.
const QUIET_FOR: Duration = Duration::from_secs(1);
/// How often a log (not a terminal) gets a line while it waits.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Await `call`, telling the user on stderr that `what` is still going on
/// with the time elapsed, once it has taken longer than [`QUIET_FOR`]: a
/// deploy of a big component (a Python or JavaScript interpreter) compiles
/// for tens of seconds. On a terminal one line counts the seconds in place;
/// elsewhere a line every [`LOG_EVERY`]. Nothing is printed for a quick call.
pub async fn with_progress<F: Future>(what: &str, call: F) -> F::Output {
    let terminal = std::io::stderr().is_terminal();
    let started = Instant::now();
    let mut call = std::pin::pin!(call);
    let mut printed = false;
    let mut next = started + QUIET_FOR;
    loop {
        tokio::select! {
            answer = &mut call => {
                if printed && terminal {
                    eprintln!("\r{what}: done in {:.1} s", started.elapsed().as_secs_f64());
                }
                return answer;
            }
            _ = tokio::time::sleep_until(next.into()) => {
                let elapsed = started.elapsed().as_secs();
                if terminal {
                    eprint!("\r{what}: {elapsed} s");
                    next += Duration::from_secs(1);
                } else {
                    eprintln!("{what}: {elapsed} s so far");
                    next += LOG_EVERY;
                }
                printed = true;
            }
        }
    }
}

/// A percent-encoded query component.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
