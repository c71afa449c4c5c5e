//! Who a request acts for, and whether that may touch a record: the rules
//! the built-in services apply to what they store, for any service to use.
//!
//! A record belongs to a verified subject (its owner). A request acts for
//! the subject the platform verified for it ([`crate::headers::SUBJECT`]),
//! also when it arrives through another service's call made while serving
//! that subject. A subject holding the [`ADMIN_ROLE`] may act on every
//! record. A call from a trusted component that serves no subject (an event
//! handler, a saga's timeout) acts as the platform, and may too.

use crate::Request;

/// The role that may read and act on every record.
pub const ADMIN_ROLE: &str = "admin";

/// Who a request acts for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    /// A verified subject holding [`ADMIN_ROLE`].
    Admin(String),
    /// A verified subject.
    Subject(String),
    /// A call from one of the trusted components, serving no subject.
    Platform(String),
    /// Nobody verified.
    Anonymous,
}

impl Actor {
    /// Who `request` acts for, trusting calls without a subject from the
    /// components named in `trusted`.
    pub fn of(request: &Request, trusted: &[&str]) -> Actor {
        match (request.subject(), request.caller()) {
            (Some(subject), _) if request.has_role(ADMIN_ROLE) => Actor::Admin(subject.into()),
            (Some(subject), _) => Actor::Subject(subject.into()),
            (None, Some(caller)) if trusted.contains(&caller) => Actor::Platform(caller.into()),
            (None, _) => Actor::Anonymous,
        }
    }

    /// Whether this actor may read and change a record owned by `owner`
    /// (`None`: a record from before owners were kept, the admin's alone).
    pub fn may_touch(&self, owner: Option<&str>) -> bool {
        match self {
            Actor::Admin(_) | Actor::Platform(_) => true,
            Actor::Subject(subject) => owner == Some(subject.as_str()),
            Actor::Anonymous => false,
        }
    }

    /// Whether this actor may act on every record.
    pub fn is_privileged(&self) -> bool {
        matches!(self, Actor::Admin(_) | Actor::Platform(_))
    }

    /// The verified subject, if any.
    pub fn subject(&self) -> Option<&str> {
        match self {
            Actor::Admin(subject) | Actor::Subject(subject) => Some(subject),
            Actor::Platform(_) | Actor::Anonymous => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Header;

    fn request(headers: &[(&str, &str)]) -> Request {
        let mut request = Request::empty("GET", "/x");
        for (name, value) in headers {
            request.headers.push(Header { name: name.to_string(), value: value.to_string() });
        }
        request
    }

    #[test]
    fn actors_and_what_they_may_touch() {
        let alice = Actor::of(&request(&[("pitstop-subject", "alice")]), &["order"]);
        assert_eq!(alice, Actor::Subject("alice".into()));
        assert!(alice.may_touch(Some("alice")));
        assert!(!alice.may_touch(Some("mallory")) && !alice.may_touch(None));

        let admin = request(&[("pitstop-subject", "root"), ("pitstop-roles", "ops admin")]);
        assert!(Actor::of(&admin, &[]).may_touch(Some("alice")));
        // A role without a subject grants nothing.
        assert_eq!(Actor::of(&request(&[("pitstop-roles", "admin")]), &[]), Actor::Anonymous);
        // "administrator" is not "admin".
        let near = request(&[("pitstop-subject", "eve"), ("pitstop-roles", "administrator")]);
        assert_eq!(Actor::of(&near, &[]), Actor::Subject("eve".into()));

        let saga = request(&[("pitstop-caller", "order")]);
        assert_eq!(Actor::of(&saga, &["order"]), Actor::Platform("order".into()));
        assert_eq!(Actor::of(&saga, &["payment"]), Actor::Anonymous);
        assert!(!Actor::Anonymous.may_touch(Some("alice")));
    }
}
