//! The headers the platform sets on a request, and only the platform: the
//! gateway drops every `pitstop-*` header a client sends, and a `services`
//! call drops every one the calling component set, so a service can trust
//! them ([docs/authentication.md] in the pitstop repository).
//!
//! [`Request::caller`], [`Request::subject`], [`Request::claims`] and
//! [`Request::has_role`] read them.

use serde::de::DeserializeOwned;

use crate::Request;

/// The calling component's name, on a request that came through
/// [`crate::services::call`]; absent on a request from a client.
pub const CALLER: &str = "pitstop-caller";
/// The verified subject: a JWT's `sub`, or the name of an API key. Absent
/// when the route lets anyone in and the client sent no credential.
pub const SUBJECT: &str = "pitstop-subject";
/// How [`SUBJECT`] was verified: `jwt` or `api-key`.
pub const AUTH: &str = "pitstop-auth";
/// A verified JWT's claims, as one line of JSON.
pub const CLAIMS: &str = "pitstop-claims";
/// The roles a verified JWT grants (the claim `[auth.jwt] roles_claim`
/// names, `roles` by default), space-separated; absent when it grants none.
pub const ROLES: &str = "pitstop-roles";
/// On a write the client sent with an `Idempotency-Key`: a digest of the
/// verified caller and the key (lower-case hex), the same for every retry
/// the platform runs and different for anyone else's; derive the ids a
/// request creates from it to make a retry find what the first run made.
pub const IDEMPOTENCY_KEY: &str = "pitstop-idempotency-key";

impl Request {
    /// The component that called, from [`CALLER`].
    pub fn caller(&self) -> Option<&str> {
        self.header(CALLER)
    }

    /// The verified subject the request is made for, from [`SUBJECT`]: the
    /// client's, also on a `services` call made while serving that client.
    pub fn subject(&self) -> Option<&str> {
        self.header(SUBJECT)
    }

    /// The verified JWT claims, from [`CLAIMS`], as `T`; `None` without a
    /// JWT or when they do not fit `T`.
    pub fn claims<T: DeserializeOwned>(&self) -> Option<T> {
        serde_json::from_str(self.header(CLAIMS)?).ok()
    }

    /// The roles granted to the subject, from [`ROLES`].
    pub fn roles(&self) -> impl Iterator<Item = &str> {
        self.header(ROLES).unwrap_or_default().split(' ').filter(|role| !role.is_empty())
    }

    /// Whether the verified subject holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles().any(|granted| granted == role)
    }
}
