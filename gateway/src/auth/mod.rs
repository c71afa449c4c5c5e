//! Who may call a route: per-route policies, JWT and API-key verification,
//! and the identity headers a component receives.
//!
//! A route's policy names what reads (GET, HEAD, OPTIONS) and writes (every
//! other method) need: nothing, a JWT, or an API key. A verified caller
//! reaches the component as `pitstop-subject`, `pitstop-auth` and (for a JWT)
//! `pitstop-claims` and `pitstop-roles`; the gateway drops any `pitstop-*` header a client sends,
//! so a component can trust them.

use std::collections::BTreeMap;
use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::ratelimit::RateLimit;

mod jwt;
use jwt::JwtVerifier;

/// The header a client sends an API key in.
pub const API_KEY_HEADER: &str = "x-api-key";
/// The verified subject: the JWT's `sub`, or the API key's name.
pub const SUBJECT_HEADER: &str = "pitstop-subject";
/// How the subject was verified: `jwt` or `api-key`.
pub const AUTH_HEADER: &str = "pitstop-auth";
/// The verified JWT claims, as one line of JSON.
pub const CLAIMS_HEADER: &str = "pitstop-claims";
/// The roles the verified JWT grants (its roles claim), space-separated.
pub const ROLES_HEADER: &str = "pitstop-roles";
/// The claim roles are read from unless `[auth.jwt] roles_claim` says.
pub const DEFAULT_ROLES_CLAIM: &str = "roles";

/// What one kind of request to a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Access {
    /// Anyone.
    Public,
    /// A valid JWT in `Authorization: Bearer`.
    Jwt,
    /// A configured API key in `x-api-key`.
    ApiKey,
}

/// A route's policy: what reads and writes need, and its rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoutePolicy {
    /// GET, HEAD and OPTIONS.
    pub read: Access,
    /// Every other method.
    pub write: Access,
    /// Requests per client identity; `None` is unlimited.
    pub rate_limit: Option<RateLimit>,
    /// Whether the component gets the client's `Authorization` header. By
    /// default the gateway keeps it: a component with the caller's token
    /// could replay it against every other route.
    pub pass_authorization: bool,
}

impl RoutePolicy {
    /// The platform's default: reads are public, writes need a JWT. A newcomer
    /// can browse without setting anything up, and nothing changes state
    /// anonymously.
    pub const DEFAULT: RoutePolicy = RoutePolicy {
        read: Access::Public,
        write: Access::Jwt,
        rate_limit: None,
        pass_authorization: false,
    };

    /// The same access for every method.
    pub fn all(access: Access) -> Self {
        RoutePolicy { read: access, write: access, rate_limit: None, pass_authorization: false }
    }

    /// What a request with `method` needs.
    pub fn access(&self, method: &http::Method) -> Access {
        if matches!(*method, http::Method::GET | http::Method::HEAD | http::Method::OPTIONS) {
            self.read
        } else {
            self.write
        }
    }
}

/// A JWT public key and the algorithm it verifies.
#[derive(Clone)]
pub struct PublicKey {
    algorithm: Algorithm,
    key: DecodingKey,
    kid: Option<String>,
}

impl PublicKey {
    /// A key from a PEM `PUBLIC KEY` block: RSA keys verify RS256, Ed25519
    /// keys EdDSA. `kid`, when set, must match the token header's.
    pub fn from_pem(pem: &[u8], kid: Option<String>) -> Result<Self, String> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(PublicKey { algorithm: Algorithm::RS256, key, kid });
        }
        match DecodingKey::from_ed_pem(pem) {
            Ok(key) => Ok(PublicKey { algorithm: Algorithm::EdDSA, key, kid }),
            Err(_) => Err("not a PEM RSA or Ed25519 public key".into()),
        }
    }
}

/// How JWTs are verified.
#[derive(Clone, Default)]
pub struct JwtSettings {
    /// The HS256 secret, if HS256 is accepted.
    pub secret: Option<Vec<u8>>,
    /// RS256 and EdDSA keys.
    pub public_keys: Vec<PublicKey>,
    /// Accepted `aud` values; when set, `aud` is required.
    pub audience: Vec<String>,
    /// Accepted `iss` values; when set, `iss` is required.
    pub issuer: Vec<String>,
    /// Seconds of clock skew allowed on `exp` and `nbf`.
    pub leeway_secs: u64,
    /// The claim holding the caller's roles: an array of strings, or one
    /// string of space-separated names (as OAuth's `scope`).
    pub roles_claim: String,
}

/// Everything the gateway needs to check credentials.
#[derive(Clone, Default)]
pub struct AuthSettings {
    /// JWT verification; `None` when no route can take a JWT.
    pub jwt: Option<JwtSettings>,
    /// API keys by name.
    pub api_keys: BTreeMap<String, String>,
}

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The JWT `sub`, or the API key's name.
    pub subject: String,
    /// `jwt` or `api-key`.
    pub method: &'static str,
    /// The JWT's claims (empty for an API key).
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// The roles its roles claim grants (none for an API key).
    pub roles: Vec<String>,
}

impl Identity {
    /// The headers the component receives.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            (SUBJECT_HEADER.to_string(), self.subject.clone()),
            (AUTH_HEADER.to_string(), self.method.to_string()),
        ];
        if !self.claims.is_empty() {
            let claims = serde_json::Value::Object(self.claims.clone()).to_string();
            headers.push((CLAIMS_HEADER.to_string(), claims));
        }
        if !self.roles.is_empty() {
            headers.push((ROLES_HEADER.to_string(), self.roles.join(" ")));
        }
        headers
    }
}

/// The roles `claim` grants: the names in an array of strings, or in one
/// space-separated string. A name that could not travel in a
/// space-separated header (empty, with spaces or control characters) is
/// dropped, and so is a claim of any other shape: no role is ever read
/// from a value that does not plainly name it.
fn roles_of(claim: Option<&serde_json::Value>) -> Vec<String> {
    let names: Vec<&str> = match claim {
        Some(serde_json::Value::Array(items)) => items.iter().filter_map(|i| i.as_str()).collect(),
        Some(serde_json::Value::String(names)) => names.split(' ').collect(),
        _ => Vec::new(),
    };
    let mut roles: Vec<String> = names
        .into_iter()
        .filter(|name| !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_string)
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

/// Why a request was refused: always a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unauthorized {
    /// What was wrong, for the client.
    pub message: String,
    /// The `WWW-Authenticate` challenge.
    pub challenge: String,
}

/// Checks credentials against [`AuthSettings`]. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    jwt: Option<Arc<JwtVerifier>>,
    api_keys: Arc<Vec<(String, [u8; 32])>>,
}

impl Authenticator {
    /// An authenticator for `settings`.
    pub fn new(settings: &AuthSettings) -> Result<Self, String> {
        let jwt = match &settings.jwt {
            Some(jwt) => Some(Arc::new(JwtVerifier::new(jwt)?)),
            None => None,
        };
        let api_keys = settings
            .api_keys
            .iter()
            .map(|(name, key)| (name.clone(), Sha256::digest(key.as_bytes()).into()))
            .collect();
        Ok(Authenticator { jwt, api_keys: Arc::new(api_keys) })
    }

    /// Whether a route may require `access`: the credentials it needs exist.
    pub fn supports(&self, access: Access) -> bool {
        match access {
            Access::Public => true,
            Access::Jwt => self.jwt.is_some(),
            Access::ApiKey => !self.api_keys.is_empty(),
        }
    }

    /// Check `headers` against `access`: `None` for a public route.
    pub fn check(
        &self,
        access: Access,
        headers: &http::HeaderMap,
    ) -> Result<Option<Identity>, Unauthorized> {
        match access {
            Access::Public => Ok(None),
            Access::Jwt => self.check_jwt(headers).map(Some),
            Access::ApiKey => self.check_api_key(headers).map(Some),
        }
    }

    /// On a route anyone may call: the caller, if the request carries a
    /// bearer token or an API key this gateway verifies, so that a service
    /// can show its owner more than it shows anyone. A credential that does
    /// not verify is refused rather than ignored: the client meant to be
    /// someone.
    pub fn identify(&self, headers: &http::HeaderMap) -> Result<Option<Identity>, Unauthorized> {
        let bearer = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.get(..7).is_some_and(|s| s.eq_ignore_ascii_case("bearer ")));
        if bearer && self.jwt.is_some() {
            return self.check_jwt(headers).map(Some);
        }
        if headers.contains_key(API_KEY_HEADER) && !self.api_keys.is_empty() {
            return self.check_api_key(headers).map(Some);
        }
        Ok(None)
    }

    fn check_jwt(&self, headers: &http::HeaderMap) -> Result<Identity, Unauthorized> {
        let refuse = |message: &str, error: Option<&str>| Unauthorized {
            message: message.to_string(),
            challenge: match error {
                None => "Bearer realm=\"pitstop\"".to_string(),
                Some(code) => format!(
                    "Bearer realm=\"pitstop\", error=\"{code}\", error_description=\"{message}\""
                ),
            },
        };
        let Some(verifier) = &self.jwt else {
            return Err(refuse("no JWT can be verified here", None));
        };
        let Some(value) = headers.get(http::header::AUTHORIZATION) else {
            return Err(refuse("this route needs a bearer token", None));
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                refuse("the Authorization header must be `Bearer <token>`", Some("invalid_request"))
            })?;
        verifier.verify(token).map_err(|message| refuse(&message, Some("invalid_token")))
    }

    fn check_api_key(&self, headers: &http::HeaderMap) -> Result<Identity, Unauthorized> {
        let refuse = |message: &str| Unauthorized {
            message: message.to_string(),
            challenge: format!("ApiKey realm=\"pitstop\", header=\"{API_KEY_HEADER}\""),
        };
        let Some(given) = headers.get(API_KEY_HEADER) else {
            return Err(refuse("this route needs an API key in the x-api-key header"));
        };
        // Hashed first so the comparison takes the same time whatever the
        // length; every key is compared so timing does not say which matched.
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        let mut found = None;
        for (name, key) in self.api_keys.iter() {
            if bool::from(key.ct_eq(&digest)) {
                found = Some(name);
            }
        }
        match found {
            Some(name) => Ok(Identity {
                subject: name.clone(),
                method: "api-key",
                claims: serde_json::Map::new(),
                roles: Vec::new(),
            }),
            None => Err(refuse("the API key is not valid")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn authenticator() -> Authenticator {
        Authenticator::new(&AuthSettings {
            jwt: Some(JwtSettings {
                secret: Some(SECRET.to_vec()),
                leeway_secs: 5,
                roles_claim: DEFAULT_ROLES_CLAIM.into(),
                ..Default::default()
            }),
            api_keys: [("ci".to_string(), "k-123".to_string())].into(),
        })
        .unwrap()
    }

    fn bearer(token: &str) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers
    }

    fn now() -> i64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
    }

    fn sign(claims: serde_json::Value) -> String {
        let key = EncodingKey::from_secret(SECRET).unwrap();
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &key).unwrap()
    }

    #[test]
    fn accepts_a_valid_token_and_refuses_the_rest() {
        let auth = authenticator();
        let ok = sign(json!({"sub": "alice", "exp": now() + 60}));
        let identity = auth.check(Access::Jwt, &bearer(&ok)).unwrap().unwrap();
        assert_eq!(identity.subject, "alice");

        let expired = sign(json!({"sub": "alice", "exp": now() - 60}));
        let error = auth.check(Access::Jwt, &bearer(&expired)).unwrap_err();
        assert!(error.message.contains("expired"), "{error:?}");
        assert!(error.challenge.contains("invalid_token"));

        // Within the leeway is still fine.
        let just_expired = sign(json!({"sub": "alice", "exp": now() - 2}));
        assert!(auth.check(Access::Jwt, &bearer(&just_expired)).is_ok());

        let early = sign(json!({"sub": "alice", "exp": now() + 60, "nbf": now() + 60}));
        assert!(auth.check(Access::Jwt, &bearer(&early)).is_err());

        let no_sub = sign(json!({"exp": now() + 60}));
        assert!(auth.check(Access::Jwt, &bearer(&no_sub)).is_err());
    }

    #[test]
    fn api_keys_are_checked_by_value() {
        let auth = authenticator();
        let mut headers = http::HeaderMap::new();
        headers.insert(API_KEY_HEADER, "k-123".parse().unwrap());
        assert_eq!(auth.check(Access::ApiKey, &headers).unwrap().unwrap().subject, "ci");
        headers.insert(API_KEY_HEADER, "k-124".parse().unwrap());
        assert!(auth.check(Access::ApiKey, &headers).is_err());
    }

    /// Roles come from the roles claim, as an array or a space-separated
    /// string, and reach the component as one header; names that could not
    /// travel in it, and claims of any other shape, grant nothing.
    #[test]
    fn roles_are_read_from_the_roles_claim() {
        let auth = authenticator();
        let roles = |claim: serde_json::Value| {
            let token = sign(json!({"sub": "alice", "exp": now() + 60, "roles": claim}));
            auth.check(Access::Jwt, &bearer(&token)).unwrap().unwrap().roles
        };
        assert_eq!(roles(json!(["support", "admin", "admin"])), ["admin", "support"]);
        assert_eq!(roles(json!("admin  support")), ["admin", "support"]);
        assert_eq!(roles(json!(["ad min", "a\nb", "", 7, "ok"])), ["ok"]);
        assert!(roles(json!({"admin": true})).is_empty());
        assert!(roles(json!(true)).is_empty());
        let token = sign(json!({"sub": "alice", "exp": now() + 60, "roles": ["admin", "x"]}));
        let identity = auth.check(Access::Jwt, &bearer(&token)).unwrap().unwrap();
        let header = identity.headers().into_iter().find(|(name, _)| name == ROLES_HEADER);
        assert_eq!(header, Some((ROLES_HEADER.to_string(), "admin x".to_string())));
        // No roles claim, no header.
        let plain = sign(json!({"sub": "bob", "exp": now() + 60}));
        let identity = auth.check(Access::Jwt, &bearer(&plain)).unwrap().unwrap();
        assert!(identity.headers().iter().all(|(name, _)| name != ROLES_HEADER));
    }

    /// On a public route a credential is optional, but one that is sent
    /// must verify; without one nobody is identified.
    #[test]
    fn a_public_route_identifies_whoever_shows_a_credential() {
        let auth = authenticator();
        assert!(auth.identify(&http::HeaderMap::new()).unwrap().is_none());
        let ok = sign(json!({"sub": "alice", "exp": now() + 60}));
        assert_eq!(auth.identify(&bearer(&ok)).unwrap().unwrap().subject, "alice");
        let expired = sign(json!({"sub": "alice", "exp": now() - 60}));
        assert!(auth.identify(&bearer(&expired)).is_err());
        let mut basic = http::HeaderMap::new();
        basic.insert("authorization", "Basic YTpi".parse().unwrap());
        assert!(auth.identify(&basic).unwrap().is_none(), "not ours to check");
        let mut keyed = http::HeaderMap::new();
        keyed.insert(API_KEY_HEADER, "k-123".parse().unwrap());
        assert_eq!(auth.identify(&keyed).unwrap().unwrap().subject, "ci");
        keyed.insert(API_KEY_HEADER, "wrong".parse().unwrap());
        assert!(auth.identify(&keyed).is_err());
    }
}
