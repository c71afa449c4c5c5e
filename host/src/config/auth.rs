//! `[auth]`: the policy of routes that set none, JWT verification (a secret
//! or public keys, audience, issuer, roles claim) and API keys.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use pitstop_gateway::auth::{Access, RoutePolicy};
use pitstop_gateway::ratelimit::RateLimit;

/// `[auth]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// The policy of routes that set none (default: reads public, writes JWT).
    pub default: Option<PolicyConfig>,
    /// How JWTs are verified.
    #[serde(default)]
    pub jwt: JwtConfig,
    /// API keys: name = key.
    #[serde(default)]
    pub api_keys: BTreeMap<String, String>,
}

/// `[auth.jwt]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// The HS256 secret (at least 32 bytes).
    pub secret: Option<String>,
    /// PEM public keys for RS256 and EdDSA tokens.
    #[serde(default)]
    pub public_keys: Vec<PublicKeyConfig>,
    /// Accepted audiences.
    pub audience: Option<OneOrMany>,
    /// Accepted issuers.
    pub issuer: Option<OneOrMany>,
    /// Clock skew allowed on `exp` and `nbf`, in seconds (default 30).
    pub leeway_s: Option<u64>,
    /// The claim naming the caller's roles (default `roles`).
    pub roles_claim: Option<String>,
}

/// A public key file, with an optional key id.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum PublicKeyConfig {
    /// Just the path.
    Path(PathBuf),
    /// `{ path = "...", kid = "..." }`.
    WithKid {
        /// The PEM file.
        path: PathBuf,
        /// Tokens naming a `kid` are checked against keys with that `kid`.
        kid: Option<String>,
    },
}

impl PublicKeyConfig {
    /// The file.
    pub fn path(&self) -> &Path {
        match self {
            PublicKeyConfig::Path(path) | PublicKeyConfig::WithKid { path, .. } => path,
        }
    }

    pub(super) fn path_mut(&mut self) -> &mut PathBuf {
        match self {
            PublicKeyConfig::Path(path) | PublicKeyConfig::WithKid { path, .. } => path,
        }
    }

    /// The key id, if set.
    pub fn kid(&self) -> Option<&str> {
        match self {
            PublicKeyConfig::Path(_) => None,
            PublicKeyConfig::WithKid { kid, .. } => kid.as_deref(),
        }
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

impl OneOrMany {
    /// As a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(one) => vec![one.clone()],
            OneOrMany::Many(many) => many.clone(),
        }
    }
}

/// A route policy: one access for every method, or reads and writes apart.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(untagged)]
pub enum PolicyConfig {
    /// `"public"`, `"jwt"` or `"api-key"`.
    All(Access),
    /// `{ read = "public", write = "jwt" }`.
    Split {
        /// GET, HEAD and OPTIONS.
        read: Access,
        /// Every other method.
        write: Access,
    },
}

impl PolicyConfig {
    /// The gateway's policy, with `rate_limit`.
    pub fn policy(&self, rate_limit: Option<RateLimit>) -> RoutePolicy {
        let (read, write) = match *self {
            PolicyConfig::All(access) => (access, access),
            PolicyConfig::Split { read, write } => (read, write),
        };
        RoutePolicy { read, write, rate_limit, pass_authorization: false }
    }
}
