//! The admin API: deploy, swap, roll back and remove components while
//! traffic flows. It listens apart from the gateway (default
//! 127.0.0.1:8081) and every call needs `Authorization: Bearer <token>`,
//! except `GET /metrics` (Prometheus text format, no secrets in it), which a
//! scraper reads without one, and the [console](super::console)'s page and
//! assets (`GET /`, `/index.html`, and under `/console/` the stylesheet and
//! the script's modules, `console.js` and those it imports: only the files
//! the console embeds), which hold no data.
//!
//! | call | answer |
//! |---|---|
//! | `GET /admin/components[?state=active]` | 200, list of [`ComponentInfo`] |
//! | `GET /admin/components?state=undeployed` | 200, list of [`UndeployedInfo`](crate::control::deployments::UndeployedInfo): names undeployed, their versions kept |
//! | `PUT /admin/components/{name}[?route=/p]...` with the bytes | 201 new name, 200 new version or the active one's bytes again (`unchanged`): `{"name","version","created","unchanged"}` |
//! | `GET /admin/components/{name}/versions` | 200 `{"name","active","versions":[...]}` (`active` null once undeployed) |
//! | `POST /admin/components/{name}/rollback` | 200 `{"name","version"}` |
//! | `POST /admin/components/{name}/versions/{version}/activate` | 200 `{"name","version"}` |
//! | `DELETE /admin/components/{name}[?purge=true]` | 200 `{"name","purged"}` |
//! | `POST /admin/tokens` `{"sub","ttl_seconds","aud","iss","roles"}` | 200 `{"token"}`: a development JWT signed as `pitstop token` signs it (409 when the server has no HS256 secret) |
//! | `POST /admin/components/{name}/promote` | 200 `{"name","version"}`: the canary becomes the active version |
//! | `GET /admin/ready` | 200, or 503 when a check fails: the gateway's `/ready` report `{"status","checks"}` |
//! | `GET /admin/dead-letters[?subscriber=name][&after=sub/id][&limit=N]` | 200 `{"dead_letters":[...],"next"}`: a page (100 by default, at most 1000), payloads cut to 4 KiB; see [`DeadLetter`] |
//! | `GET /admin/dead-letters/{subscriber}/{event_id}` | 200 one [`DeadLetter`], its payload whole |
//! | `POST /admin/dead-letters/{subscriber}/{event_id}/replay` | 200 `{"subscriber","id","replayed":true}` |
//! | `DELETE /admin/dead-letters/{subscriber}/{event_id}` | 200 `{"subscriber","id","discarded":true}` |
//!
//! Only requests whose `Host` names the listener are served, else 421
//! ([`super::admin_hosts`]: DNS rebinding).
//!
//! Errors are `{"error": ...}`: 401 bad token, 400 bad name, malformed
//! route or not a component, 404 unknown component or dead letter, 409 route taken or nothing to roll back
//! to, 413 upload over the limit, 422 a component that does not fit the
//! `service` world.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use pitstop_gateway::{
    DRAIN_LIMIT, GatewayError, discard_body, error_response, json_response, read_body,
};

use crate::control::access::{Minter, TokenRequest};
use crate::control::admin_token::AdminToken;
use crate::control::deployments::{CanaryPlan, ComponentInfo, Deployments};
use crate::events::EventQueue;
use crate::events::queue::{BusError, DeadLetter, MAX_PAGE};
use crate::metrics::Metrics;
use crate::runtime::{DeployError, Parts};
use crate::storage::StorageError;

/// The longest life the admin API signs a token for.
const MAX_TOKEN_TTL: std::time::Duration = std::time::Duration::from_secs(10 * 365 * 86_400);

/// The largest token request read: it is a few short strings.
const MAX_TOKEN_REQUEST: usize = 64 << 10;

/// Dead letters a listing returns unless `limit` says otherwise.
pub const DEFAULT_DEAD_LETTER_PAGE: usize = 100;

/// Default upload limit: 50 MiB.
pub const DEFAULT_MAX_UPLOAD: usize = 50 << 20;

/// The admin API's request handler.
#[derive(Clone)]
pub struct Admin {
    deployments: Arc<Deployments>,
    metrics: Arc<Metrics>,
    bus: Arc<dyn EventQueue>,
    token: AdminToken,
    max_upload: usize,
    hosts: super::admin_hosts::AdminHosts,
    tokens: Minter,
}

impl Admin {
    /// An admin API over `deployments`.
    /// Only requests naming `hosts` (or an IP address, or localhost) are
    /// served.
    pub fn new(
        deployments: Arc<Deployments>,
        parts: &Parts,
        token: AdminToken,
        max_upload: usize,
        hosts: super::admin_hosts::AdminHosts,
        tokens: Minter,
    ) -> Self {
        let (metrics, bus) = (parts.metrics.clone(), parts.bus.clone());
        Admin { deployments, metrics, bus, token, max_upload, hosts, tokens }
    }

    /// Answer one admin request.
    pub async fn handle(&self, request: http::Request<Incoming>) -> Response<Full<Bytes>> {
        let host = request.headers().get(header::HOST);
        if !self.hosts.admits(host) {
            let refusal = self.hosts.refusal(host);
            discard_body(request.into_body(), DRAIN_LIMIT).await;
            return error_response(StatusCode::MISDIRECTED_REQUEST, refusal);
        }
        if request.method() == Method::GET {
            if request.uri().path() == "/metrics" {
                return self.metrics_page();
            }
            if let Some(page) = super::console::asset(request.uri().path()) {
                return page;
            }
        }
        let authorization =
            request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if !self.token.admits(authorization) {
            // Drained before answering, so the client sees the 401 (see DRAIN_LIMIT).
            discard_body(request.into_body(), DRAIN_LIMIT).await;
            let mut response =
                error_response(StatusCode::UNAUTHORIZED, "missing or wrong admin token");
            response.headers_mut().insert(header::WWW_AUTHENTICATE, "Bearer".parse().unwrap());
            return response;
        }
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let response = match self.route(request).await {
            Ok(response) => response,
            Err(error) => error.into_response(),
        };
        let status = response.status().as_u16();
        if method == Method::GET {
            // Reads are what the console polls every 2 seconds: kept out of
            // the INFO log, which records what changed.
            tracing::debug!(%method, %path, status, "admin request");
        } else {
            tracing::info!(%method, %path, status, "admin request");
        }
        response
    }

    /// `GET /metrics`: every metric, with the bus lag read now.
    fn metrics_page(&self) -> Response<Full<Bytes>> {
        self.metrics.set_lag(self.bus.lag());
        let mut response = Response::new(Full::new(Bytes::from(self.metrics.encode())));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static(
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
        );
        response
    }

    async fn route(
        &self,
        request: http::Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, AdminError> {
        let path = request.uri().path().to_string();
        let query = request.uri().query().unwrap_or_default().to_string();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let method = request.method().clone();
        match (&method, segments.as_slice()) {
            (&Method::GET, ["admin", "components"]) => {
                let state = query_values(&query, "state").into_iter().next();
                match state.as_deref() {
                    None | Some("active") => {
                        let list: Vec<ComponentInfo> = self.deployments.list()?;
                        Ok(json_response(StatusCode::OK, &list))
                    }
                    Some("undeployed") => ok(serde_json::json!(self.deployments.undeployed()?)),
                    Some(other) => Err(AdminError::BadRequest(format!(
                        "state {other:?} is neither \"active\" nor \"undeployed\""
                    ))),
                }
            }
            (&Method::PUT, ["admin", "components", name]) => {
                let routes: Vec<String> = query_values(&query, "route");
                let canary = canary_plan(&query).and_then(|canary| match canary {
                    Some(_) if !routes.is_empty() => Err(AdminError::BadRequest(
                        "a canary serves the routes of the active version; deploy without route="
                            .into(),
                    )),
                    canary => Ok(canary),
                });
                let canary = match canary {
                    Ok(canary) => canary,
                    Err(error) => {
                        // Drained first, so the client sees the answer (see DRAIN_LIMIT).
                        discard_body(request.into_body(), DRAIN_LIMIT).await;
                        return Err(error);
                    }
                };
                let (parts, body) = request.into_parts();
                let bytes = read_body(&parts.headers, body, self.max_upload).await?;
                let routes = if routes.is_empty() { None } else { Some(routes) };
                let deployed = match canary {
                    Some(plan) => {
                        self.deployments.deploy_canary(name, bytes.to_vec(), plan).await?
                    }
                    None => self.deployments.deploy(name, bytes.to_vec(), routes).await?,
                };
                let status = if deployed.created { StatusCode::CREATED } else { StatusCode::OK };
                let mut answer = serde_json::json!({"name": name, "version": deployed.version, "created": deployed.created, "unchanged": deployed.unchanged});
                if let Some(plan) = canary {
                    answer["canary"] = serde_json::json!({"percent": plan.percent, "auto_rollback": plan.auto_rollback});
                }
                Ok(json_response(status, &answer))
            }
            (&Method::POST, ["admin", "components", name, "promote"]) => {
                let version = self.deployments.promote(name).await?;
                ok(serde_json::json!({"name": name, "version": version}))
            }
            (&Method::GET, ["admin", "components", name, "versions"]) => {
                let (active, versions) = self.deployments.versions(name)?;
                ok(serde_json::json!({"name": name, "active": active, "versions": versions}))
            }
            (&Method::POST, ["admin", "components", name, "versions", version, "activate"]) => {
                let number = version.parse().map_err(|_| {
                    AdminError::BadRequest(format!("version {version:?} is not a number"))
                })?;
                let version = self.deployments.activate(name, number).await?;
                ok(serde_json::json!({"name": name, "version": version}))
            }
            (&Method::POST, ["admin", "components", name, "rollback"]) => {
                let version = self.deployments.rollback(name).await?;
                ok(serde_json::json!({"name": name, "version": version}))
            }
            (&Method::DELETE, ["admin", "components", name]) => {
                let purge = flag(&query, "purge")?;
                self.deployments.undeploy(name, purge).await?;
                ok(serde_json::json!({"name": name, "purged": purge}))
            }
            (&Method::POST, ["admin", "tokens"]) => {
                let (parts, body) = request.into_parts();
                let body = read_body(&parts.headers, body, MAX_TOKEN_REQUEST).await?;
                let asked: TokenRequest = serde_json::from_slice(&body).map_err(|e| {
                    AdminError::BadRequest(format!(
                        "a token request is {{\"sub\", \"ttl_seconds\", \"aud\", \"iss\", \"roles\"}}: {e}"
                    ))
                })?;
                if asked.subject.is_empty() {
                    return Err(AdminError::BadRequest("sub must not be empty".into()));
                }
                if asked.ttl > MAX_TOKEN_TTL {
                    let most = MAX_TOKEN_TTL.as_secs();
                    let why = format!("ttl_seconds must be at most {most} (ten years)");
                    return Err(AdminError::BadRequest(why));
                }
                let token = self
                    .tokens
                    .mint(asked)
                    .map_err(|e| AdminError::Status(StatusCode::CONFLICT, format!("{e:#}")))?;
                ok(serde_json::json!({ "token": token }))
            }
            (&Method::GET, ["admin", "ready"]) => {
                let report = self.deployments.readiness().await;
                let status = if report.is_healthy() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                Ok(json_response(status, &report))
            }
            (&Method::GET, ["admin", "dead-letters"]) => {
                let subscriber = query_values(&query, "subscriber").into_iter().next();
                let after = query_values(&query, "after").into_iter().next();
                let limit = match query_values(&query, "limit").into_iter().next() {
                    None => DEFAULT_DEAD_LETTER_PAGE,
                    Some(limit) => limit.parse().map_err(|_| {
                        let why = format!("limit must be a number from 1 to {MAX_PAGE}");
                        AdminError::Status(StatusCode::BAD_REQUEST, why)
                    })?,
                };
                let page = self.bus.dead_letters(subscriber.as_deref(), after.as_deref(), limit)?;
                Ok(json_response(StatusCode::OK, &page))
            }
            (&Method::GET, ["admin", "dead-letters", subscriber, id]) => {
                let letter: DeadLetter = self.bus.dead_letter(subscriber, id)?;
                Ok(json_response(StatusCode::OK, &letter))
            }
            (&Method::POST, ["admin", "dead-letters", subscriber, id, "replay"]) => {
                self.bus.replay(subscriber, id)?;
                ok(serde_json::json!({"subscriber": subscriber, "id": id, "replayed": true}))
            }
            (&Method::DELETE, ["admin", "dead-letters", subscriber, id]) => {
                self.bus.discard(subscriber, id)?;
                ok(serde_json::json!({"subscriber": subscriber, "id": id, "discarded": true}))
            }
            (_, ["admin", "components"])
            | (_, ["admin", "components", _])
            | (_, ["admin", "components", _, "versions" | "rollback" | "promote"])
            | (_, ["admin", "components", _, "versions", _, "activate"])
            | (_, ["admin", "ready" | "dead-letters"])
            | (_, ["admin", "dead-letters", _, _])
            | (_, ["admin", "dead-letters", _, _, "replay"]) => {
                Err(AdminError::Status(StatusCode::METHOD_NOT_ALLOWED, "method not allowed".into()))
            }
            _ => {
                Err(AdminError::Status(StatusCode::NOT_FOUND, format!("no admin route for {path}")))
            }
        }
    }
}

/// Every value of `key` in a query string, percent-decoded.
fn query_values(query: &str, key: &str) -> Vec<String> {
    form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// Query parameter `key` as a boolean: absent is false.
fn flag(query: &str, key: &str) -> Result<bool, AdminError> {
    match query_values(query, key).first().map(String::as_str) {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => {
            Err(AdminError::BadRequest(format!("{key} must be true or false, not {other:?}")))
        }
    }
}

/// `canary=PERCENT[&auto_rollback=true]` of a deploy, if given.
fn canary_plan(query: &str) -> Result<Option<CanaryPlan>, AdminError> {
    let auto_rollback = flag(query, "auto_rollback")?;
    let Some(percent) = query_values(query, "canary").into_iter().next() else {
        if auto_rollback {
            return Err(AdminError::BadRequest("auto_rollback needs canary=PERCENT".into()));
        }
        return Ok(None);
    };
    let percent: u8 = percent.parse().map_err(|_| {
        AdminError::BadRequest(format!("canary must be a percentage from 1 to 99, not {percent:?}"))
    })?;
    let plan = CanaryPlan::new(percent, auto_rollback)
        .map_err(|error| AdminError::BadRequest(error.to_string()))?;
    Ok(Some(plan))
}

enum AdminError {
    Deploy(DeployError),
    Bus(BusError),
    Body(GatewayError),
    BadRequest(String),
    Status(StatusCode, String),
}

impl From<DeployError> for AdminError {
    fn from(error: DeployError) -> Self {
        AdminError::Deploy(error)
    }
}

impl From<BusError> for AdminError {
    fn from(error: BusError) -> Self {
        AdminError::Bus(error)
    }
}

impl From<GatewayError> for AdminError {
    fn from(error: GatewayError) -> Self {
        AdminError::Body(error)
    }
}

impl AdminError {
    fn into_response(self) -> Response<Full<Bytes>> {
        match self {
            AdminError::Deploy(error) => {
                let status = match &error {
                    DeployError::InvalidName(_)
                    | DeployError::NotAComponent(_)
                    | DeployError::Invalid(_)
                    | DeployError::MalformedRoute(_) => StatusCode::BAD_REQUEST,
                    DeployError::Incompatible(_) => StatusCode::UNPROCESSABLE_ENTITY,
                    DeployError::Unknown(_) | DeployError::UnknownVersion(_) => {
                        StatusCode::NOT_FOUND
                    }
                    DeployError::NoEarlierVersion(_)
                    | DeployError::Route(_)
                    | DeployError::Canary(_)
                    | DeployError::Concurrent(_) => StatusCode::CONFLICT,
                    DeployError::Keyspace(StorageError::NoSpace(_)) => {
                        StatusCode::INSUFFICIENT_STORAGE
                    }
                    DeployError::Db(_) | DeployError::Keyspace(_) | DeployError::Storage(_) => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                error_response(status, error)
            }
            AdminError::Bus(error) => {
                let status = match &error {
                    BusError::NotFound { .. } => StatusCode::NOT_FOUND,
                    BusError::Storage(_) | BusError::Corrupt(_) => {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                };
                error_response(status, error)
            }
            AdminError::Body(error) => error.into_response(),
            AdminError::BadRequest(message) => error_response(StatusCode::BAD_REQUEST, message),
            AdminError::Status(status, message) => error_response(status, message),
        }
    }
}

/// 200 with `answer`.
fn ok(answer: serde_json::Value) -> Result<Response<Full<Bytes>>, AdminError> {
    Ok(json_response(StatusCode::OK, &answer))
}
