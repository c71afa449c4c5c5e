//! The user service: registration and lookup.
//!
//! - `POST /users {"name","email"}` -> 201 `{"id","name","email","owner"}`: the
//!   user belongs to the verified subject registering it (`owner`); 401
//!   without one; 400 when the name is missing or empty or the email is
//!   invalid; 409 when the email is taken.
//! - `GET /users/{id}` -> 200 `{"id","name","email","owner"}` for its owner,
//!   an `admin` and the order and payment services acting as the platform;
//!   200 `{"id","name"}` for anyone else; 404 when there is no such user.
//!
//! Events: publishes `user.created` with the new user's
//! `{"id","name","email","owner"}`, committed together with the registration.
//!
//! Keyspace layout: `user/<id>` holds the record as JSON; `email/<address>`
//! (lower-cased) holds the owning id, claimed with compare-and-swap so two
//! concurrent registrations of one address cannot both win.

use pitstop_sdk::access::Actor;
use pitstop_sdk::events::publish_json;
use pitstop_sdk::{ApiError, Events, Handler, Request, Response, id, kv, respond};
use serde::{Deserialize, Serialize};

/// Names longer than this are refused; nobody's name is a kilobyte.
const MAX_NAME_LEN: usize = 200;
/// The longest address RFC 5321 lets through a mail server.
const MAX_EMAIL_LEN: usize = 254;
/// The components whose calls serving no subject act as the platform.
const TRUSTED: &[&str] = &["order", "payment"];

#[derive(Deserialize)]
struct NewUser {
    name: Option<String>,
    email: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct User {
    id: String,
    name: String,
    email: String,
    /// The subject that registered it; absent on users registered before
    /// owners were kept, whom only an admin sees in full.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

/// What anyone may read of a user.
#[derive(Serialize)]
struct PublicUser<'a> {
    id: &'a str,
    name: &'a str,
}

struct UserService;

impl Handler for UserService {
    fn handle(request: Request) -> Response {
        respond(route(&request))
    }
}

impl Events for UserService {
    const PUBLISHES: &'static [&'static str] = &["user.created"];
}

pitstop_sdk::export!(UserService);

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", ["users"]) => create(request),
        ("GET", ["users", id]) => get(request, id),
        (_, ["users"] | ["users", _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn create(request: &Request) -> Result<Response, ApiError> {
    let Some(owner) = request.subject() else {
        return Err(ApiError::new(401, "registering a user needs a verified subject (a token)"));
    };
    let input: NewUser = request.json()?;
    let name = input.name.as_deref().map(str::trim).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request("name is required"));
    }
    if name.chars().count() > MAX_NAME_LEN {
        return Err(ApiError::bad_request(format!(
            "name is longer than {MAX_NAME_LEN} characters"
        )));
    }
    let email = input.email.as_deref().map(str::trim).unwrap_or_default();
    if !is_valid_email(email) {
        return Err(ApiError::bad_request("email is not a valid address"));
    }

    let user = User {
        id: id::new_id("usr"),
        name: name.to_string(),
        email: email.to_string(),
        owner: Some(owner.to_string()),
    };
    let email_key = format!("email/{}", email.to_lowercase());
    if !kv::compare_and_swap(&email_key, None, Some(user.id.as_bytes()))? {
        return Err(ApiError::conflict("email is already registered"));
    }
    kv::put_json(&format!("user/{}", user.id), &user)?;
    publish_json("user.created", &user)?;
    pitstop_sdk::log::info(&format!("registered user {}", user.id));
    Ok(Response::json(201, &user))
}

/// The whole record for whoever may touch it, the id and name for anyone.
fn get(request: &Request, id: &str) -> Result<Response, ApiError> {
    let user = kv::get_json::<User>(&format!("user/{id}"))?
        .ok_or_else(|| ApiError::not_found("user not found"))?;
    if Actor::of(request, TRUSTED).may_touch(user.owner.as_deref()) {
        Ok(Response::json(200, &user))
    } else {
        Ok(Response::json(200, &PublicUser { id: &user.id, name: &user.name }))
    }
}

/// A deliberately plain check: one `@`, a non-empty local part, a dotted
/// domain with no empty labels, no whitespace or control characters. Whether
/// the mailbox exists is for a confirmation mail to find out, not a regex.
fn is_valid_email(email: &str) -> bool {
    if email.is_empty() || email.len() > MAX_EMAIL_LEN {
        return false;
    }
    if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && domain.split('.').all(|label| !label.is_empty())
}

/// Run as wasm by `pitstop test-runner`: `cargo test --target wasm32-wasip2`.
#[cfg(test)]
mod tests {
    use pitstop_sdk::testing;
    use serde_json::{Value, json};

    use super::*;

    fn register_as(subject: &str, name: &str, email: &str) -> Response {
        let body = json!({"name": name, "email": email});
        respond(route(&testing::as_subject(
            Request::with_json("POST", "/users", &body),
            subject,
            &[],
        )))
    }

    fn register(name: &str, email: &str) -> Response {
        register_as("alice", name, email)
    }

    fn read_as(subject: Option<(&str, &[&str])>, id: &str) -> Response {
        let request = Request::empty("GET", &format!("/users/{id}"));
        let request = match subject {
            Some((subject, roles)) => testing::as_subject(request, subject, roles),
            None => request,
        };
        respond(route(&request))
    }

    #[test]
    fn registering_stores_the_user_and_publishes_user_created() {
        testing::clear_published();
        let created = register("Ada", "ada@example.com");
        assert_eq!(created.status, 201);
        let user: Value = created.parse().unwrap();
        assert!(user["id"].as_str().unwrap().starts_with("usr_"));

        let events: Vec<Value> = testing::published_json("user.created");
        assert_eq!(events, std::slice::from_ref(&user), "exactly one event, carrying the user");
        assert_eq!(user["owner"], "alice");
        let fetched = read_as(Some(("alice", &[])), user["id"].as_str().unwrap());
        assert_eq!(fetched.status, 200);
        assert_eq!(fetched.parse::<Value>().unwrap(), user);
    }

    #[test]
    fn only_the_owner_and_the_admin_read_the_email() {
        let user: Value = register_as("ann", "Ann", "ann@example.com").parse().unwrap();
        let id = user["id"].as_str().unwrap();
        let public = json!({"id": id, "name": "Ann"});
        let readers: [Option<(&str, &[&str])>; 3] =
            [None, Some(("mallory", &[])), Some(("mallory", &["administrator"]))];
        for reader in readers {
            let answer = read_as(reader, id);
            assert_eq!(answer.status, 200, "{reader:?}");
            assert_eq!(answer.parse::<Value>().unwrap(), public, "{reader:?}");
        }
        assert_eq!(read_as(Some(("root", &["admin"])), id).parse::<Value>().unwrap(), user);
        // The order service checking a user for the platform sees it whole;
        // another component serving no subject does not.
        let saga = testing::as_caller(Request::empty("GET", &format!("/users/{id}")), "order");
        assert_eq!(respond(route(&saga)).parse::<Value>().unwrap(), user);
        let other = testing::as_caller(Request::empty("GET", &format!("/users/{id}")), "busy");
        assert_eq!(respond(route(&other)).parse::<Value>().unwrap(), public);
    }

    #[test]
    fn registering_needs_a_subject() {
        testing::clear_published();
        let body = json!({"name": "Nobody", "email": "nobody@example.com"});
        assert_eq!(respond(route(&Request::with_json("POST", "/users", &body))).status, 401);
        assert!(testing::published().is_empty());
    }

    #[test]
    fn invalid_input_is_refused_and_publishes_nothing() {
        testing::clear_published();
        for (name, email) in [
            ("", "x@example.com"),
            ("   ", "x@example.com"),
            ("X", "no-at-sign"),
            ("X", "two@@example.com"),
            ("X", "x@nodot"),
            ("X", "x@example..com"),
            ("X", "sp ace@example.com"),
        ] {
            assert_eq!(register(name, email).status, 400, "{name:?} {email:?}");
        }
        let long_name = "n".repeat(MAX_NAME_LEN + 1);
        assert_eq!(register(&long_name, "long@example.com").status, 400);
        let malformed = testing::as_subject(
            Request { body: b"{oops".to_vec(), ..Request::empty("POST", "/users") },
            "alice",
            &[],
        );
        assert_eq!(respond(route(&malformed)).status, 400);
        assert!(testing::published().is_empty(), "a refused registration publishes nothing");
    }

    #[test]
    fn an_email_is_registered_once_whatever_its_case() {
        assert_eq!(register("Bo", "bo@example.com").status, 201);
        testing::clear_published();
        let again = register("Other Bo", "BO@Example.com");
        assert_eq!(again.status, 409);
        assert!(testing::published().is_empty());
    }

    #[test]
    fn unknown_users_and_routes() {
        assert_eq!(respond(route(&Request::empty("GET", "/users/usr_nobody"))).status, 404);
        assert_eq!(respond(route(&Request::empty("DELETE", "/users/usr_x"))).status, 405);
        assert_eq!(respond(route(&Request::empty("GET", "/users/a/b"))).status, 404);
    }
}
