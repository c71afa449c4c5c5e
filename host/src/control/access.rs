//! From `[auth]` and the routes' policies to the gateway's access options;
//! the development JWT secret; `pitstop token`.

use std::path::Path;

use anyhow::Context;
use pitstop_gateway::AccessOptions;
use pitstop_gateway::auth::{
    AuthSettings, DEFAULT_ROLES_CLAIM, JwtSettings, PublicKey, RoutePolicy,
};
use serde_json::json;

use crate::config::Config;

/// The file in the data dir holding the generated HS256 secret.
pub const SECRET_FILE: &str = "jwt.secret";
/// The environment variable that sets the HS256 secret.
pub const SECRET_ENV: &str = "PITSTOP_JWT_SECRET";
/// Default clock skew allowed on `exp` and `nbf`.
const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The HS256 secret: `PITSTOP_JWT_SECRET`, else `[auth.jwt] secret`, else
/// (only when no public key is configured, so that a deployment trusting
/// an identity provider does not also trust a local secret) the one in
/// `DATA_DIR/jwt.secret`, created when `create` is set.
pub fn secret(config: &Config, data_dir: &Path, create: bool) -> anyhow::Result<Option<String>> {
    if let Ok(secret) = std::env::var(SECRET_ENV)
        && !secret.is_empty()
    {
        return Ok(Some(secret));
    }
    if let Some(secret) = &config.auth.jwt.secret {
        return Ok(Some(secret.clone()));
    }
    if !config.auth.jwt.public_keys.is_empty() {
        return Ok(None);
    }
    let path = data_dir.join(SECRET_FILE);
    if create {
        crate::control::admin_token::read_or_create_secret(&path).map(Some)
    } else {
        crate::control::admin_token::read_secret(&path)
    }
}

/// The gateway's access options for `config`, with the secret from
/// [`secret`] (created if need be).
pub fn options(config: &Config, data_dir: &Path) -> anyhow::Result<AccessOptions> {
    let jwt = &config.auth.jwt;
    let mut public_keys = Vec::new();
    for key in &jwt.public_keys {
        let pem = std::fs::read(key.path())
            .with_context(|| format!("reading the public key {}", key.path().display()))?;
        let key = PublicKey::from_pem(&pem, key.kid().map(str::to_string))
            .map_err(|e| anyhow::anyhow!("{}: {e}", key.path().display()))?;
        public_keys.push(key);
    }
    let secret = secret(config, data_dir, true)?;
    let settings = AuthSettings {
        jwt: Some(JwtSettings {
            secret: secret.map(String::into_bytes),
            public_keys,
            audience: jwt.audience.as_ref().map(|a| a.to_vec()).unwrap_or_default(),
            issuer: jwt.issuer.as_ref().map(|i| i.to_vec()).unwrap_or_default(),
            leeway_secs: jwt.leeway_s.unwrap_or(DEFAULT_LEEWAY_SECS),
            roles_claim: roles_claim(config).to_string(),
        }),
        api_keys: config.auth.api_keys.clone(),
    };
    let default = config.auth.default.map_or(RoutePolicy::DEFAULT, |p| p.policy(None));
    let routes = config
        .routes
        .iter()
        .flatten()
        .filter(|r| r.auth.is_some() || r.rate_limit.is_some() || r.pass_authorization.is_some())
        .map(|r| {
            let mut policy = match r.auth {
                Some(auth) => auth.policy(r.rate_limit),
                None => RoutePolicy { rate_limit: r.rate_limit, ..default },
            };
            policy.pass_authorization = r.pass_authorization.unwrap_or(false);
            (r.prefix.clone(), policy)
        })
        .collect();
    Ok(AccessOptions { settings, default, routes })
}

/// The claim roles are read from.
fn roles_claim(config: &Config) -> &str {
    config.auth.jwt.roles_claim.as_deref().unwrap_or(DEFAULT_ROLES_CLAIM)
}

/// What `pitstop token` puts in a token besides `sub`.
/// On the admin API, the JSON `{"sub", "ttl_seconds", "aud", "iss",
/// "roles"}` (only `sub` required; an hour by default).
#[derive(Debug, Default, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// The subject.
    #[serde(rename = "sub")]
    pub subject: String,
    /// Time to live.
    #[serde(rename = "ttl_seconds", with = "seconds", default = "an_hour")]
    pub ttl: std::time::Duration,
    /// `aud`; defaults to the first configured audience.
    #[serde(rename = "aud", default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// `iss`; defaults to the first configured issuer.
    #[serde(rename = "iss", default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// Roles, put in the configured roles claim.
    #[serde(default)]
    pub roles: Vec<String>,
}

fn an_hour() -> std::time::Duration {
    std::time::Duration::from_secs(3600)
}

/// A duration as whole seconds on the wire.
mod seconds {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ttl: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(ttl.as_secs())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        u64::deserialize(d).map(std::time::Duration::from_secs)
    }
}

/// What mints tokens for the admin API (`POST /admin/tokens`): the
/// server's own config and data dir, so that `pitstop token` works from
/// any directory the admin API is reachable from.
#[derive(Clone)]
pub struct Minter {
    config: std::sync::Arc<Config>,
    data_dir: std::path::PathBuf,
}

impl Minter {
    /// Tokens as `config` and the secret in `data_dir` make them.
    pub fn new(config: Config, data_dir: &Path) -> Self {
        Minter { config: std::sync::Arc::new(config), data_dir: data_dir.to_path_buf() }
    }

    /// See [`mint`].
    pub fn mint(&self, request: TokenRequest) -> anyhow::Result<String> {
        mint(&self.config, &self.data_dir, request)
    }
}

/// A development token for `request`, signed HS256 with the configured secret.
pub fn mint(config: &Config, data_dir: &Path, request: TokenRequest) -> anyhow::Result<String> {
    let secret = secret(config, data_dir, false)?.ok_or_else(|| {
        anyhow::anyhow!(
            "no HS256 secret: set {SECRET_ENV}, [auth.jwt] secret, or start `pitstop serve` \
             once with this data dir ({}) to generate {SECRET_FILE}",
            data_dir.display()
        )
    })?;
    let now = crate::events::queue::now_ms() / 1000;
    let mut claims = json!({
        "sub": request.subject,
        "iat": now,
        "exp": now.saturating_add(request.ttl.as_secs().max(1)),
    });
    let jwt = &config.auth.jwt;
    let audience = request.audience.or_else(|| jwt.audience.as_ref()?.to_vec().into_iter().next());
    if let Some(audience) = audience {
        claims["aud"] = audience.into();
    }
    let issuer = request.issuer.or_else(|| jwt.issuer.as_ref()?.to_vec().into_iter().next());
    if let Some(issuer) = issuer {
        claims["iss"] = issuer.into();
    }
    if !request.roles.is_empty() {
        claims[roles_claim(config)] = request.roles.into();
    }
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| anyhow::anyhow!("the secret cannot sign: {e}"))?;
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key)
        .map_err(|e| anyhow::anyhow!("signing the token: {e}"))
}
