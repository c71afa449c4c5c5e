//! Verifying a JWT: HS256 with the configured secret, RS256/ES256/EdDSA
//! with the configured public keys (by `kid` when the token names one),
//! `exp`/`nbf` with leeway, audience and issuer; a refusal says why in
//! plain words.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};

use super::{Identity, JwtSettings, PublicKey, roles_of};

pub(super) struct JwtVerifier {
    secret: Option<DecodingKey>,
    public_keys: Vec<PublicKey>,
    validation: Validation,
    roles_claim: String,
}

impl JwtVerifier {
    pub(super) fn new(settings: &JwtSettings) -> Result<Self, String> {
        let secret = match &settings.secret {
            Some(secret) if secret.len() < 32 => {
                return Err("the JWT secret must be at least 32 bytes".into());
            }
            Some(secret) => Some(DecodingKey::from_secret(secret).map_err(|e| e.to_string())?),
            None => None,
        };
        if secret.is_none() && settings.public_keys.is_empty() {
            return Err("JWT verification needs a secret or a public key".into());
        }
        // Algorithms are chosen per token from the keys configured; this
        // validation only carries the claim checks.
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = settings.leeway_secs;
        validation.validate_nbf = true;
        validation.validate_exp = true;
        let mut required = vec!["exp", "sub"];
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audience);
            required.push("aud");
        }
        if !settings.issuer.is_empty() {
            validation.set_issuer(&settings.issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        Ok(JwtVerifier {
            secret,
            public_keys: settings.public_keys.clone(),
            validation,
            roles_claim: settings.roles_claim.clone(),
        })
    }

    pub(super) fn verify(&self, token: &str) -> Result<Identity, String> {
        // `alg: none` (and any algorithm jsonwebtoken does not know) fails here.
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| match named_algorithm(token) {
                Some(alg) => format!("tokens signed with {alg:?} are not accepted (algorithm)"),
                None => describe(e.kind()),
            })?;
        let keys: Vec<&DecodingKey> = match header.alg {
            Algorithm::HS256 => self.secret.iter().collect(),
            alg => self
                .public_keys
                .iter()
                .filter(|k| k.algorithm == alg)
                .filter(|k| match (&k.kid, &header.kid) {
                    (Some(want), Some(got)) => want == got,
                    _ => true,
                })
                .map(|k| &k.key)
                .collect(),
        };
        // The secret has no key id, and a public key with one matches only
        // that id: a token naming a key we do not have is refused by name.
        let known_kid = match (&header.kid, header.alg) {
            (Some(_), Algorithm::HS256) => false,
            (Some(_), _) => !keys.is_empty(),
            (None, _) => true,
        };
        if !known_kid {
            return Err("the token names an unknown key id (kid)".into());
        }
        if keys.is_empty() {
            return Err(format!("tokens signed with {:?} are not accepted", header.alg));
        }
        let mut validation = self.validation.clone();
        validation.algorithms = vec![header.alg];
        let mut last = String::new();
        for key in keys {
            match jsonwebtoken::decode::<serde_json::Map<String, serde_json::Value>>(
                token,
                key,
                &validation,
            ) {
                Ok(data) => {
                    let Some(subject) = data.claims.get("sub").and_then(|s| s.as_str()) else {
                        return Err("the token's sub claim is not a string".into());
                    };
                    // The subject becomes a header value and a log field: a
                    // CR, LF or NUL in it could split or end either.
                    if subject.chars().any(char::is_control) {
                        return Err("the token's sub claim contains control characters".into());
                    }
                    return Ok(Identity {
                        subject: subject.to_string(),
                        method: "jwt",
                        roles: roles_of(data.claims.get(&self.roles_claim)),
                        claims: data.claims,
                    });
                }
                Err(error) => last = describe(error.kind()),
            }
        }
        Err(last)
    }
}

/// The `alg` a token's header names, when the header is JSON with a string
/// `alg` (so a refusal can say "algorithm" rather than "malformed").
fn named_algorithm(token: &str) -> Option<String> {
    use base64::Engine;
    let header = token.split('.').next()?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let alg = header.get("alg")?.as_str()?;
    // Bounded: the reason goes back to the client.
    Some(alg.chars().take(16).collect())
}

/// A client-facing reason, without echoing the token back.
fn describe(kind: &ErrorKind) -> String {
    match kind {
        ErrorKind::ExpiredSignature => "the token has expired".into(),
        ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".into(),
        ErrorKind::InvalidSignature => "the token's signature does not verify".into(),
        ErrorKind::InvalidAudience => "the token's audience is not accepted".into(),
        ErrorKind::InvalidIssuer => "the token's issuer is not accepted".into(),
        ErrorKind::MissingRequiredClaim(claim) => format!("the token has no {claim} claim"),
        ErrorKind::InvalidClaimFormat(claim) => format!("the token's {claim} claim is malformed"),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::MissingAlgorithm => "the token's algorithm is not accepted".into(),
        _ => "the token is malformed".into(),
    }
}
