//! The admin API's client, behind `pitstop deploy`, `components`, `versions`,
//! `rollback` and `undeploy`.

use std::path::Path;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::control::admin::TOKEN_FILE;

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
                crate::control::admin::read_secret(&path)?.with_context(|| {
                    format!(
                        "no admin token: pass --admin-token, set PITSTOP_ADMIN_TOKEN, \
                         or point --data-dir at the server's data dir ({} is missing or empty)",
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

/// A percent-encoded query component.
pub fn encode(value: &str) -> String {
    form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
