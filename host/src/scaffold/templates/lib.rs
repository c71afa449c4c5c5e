//! The {{name}} service.
//!
//! - `GET /{{name}}` -> 200 `{"service": "{{name}}", "visits": N}`: every visit
//!   counts, in the service's own keyspace.
//! - Any other method on `/{{name}}` -> 405; any other path -> 404.
{{if events}}
//!
//! Events: each visit publishes `{{name}}.visited` with `{"visits": N}`; every
//! `user.created` the user service publishes is counted, and `GET /{{name}}`
//! shows the count as `users_seen`.
{{end}}

{{if events}}
use pitstop_sdk::events::publish_json;
use pitstop_sdk::{ApiError, Event, Events, Handler, Request, Response, kv, respond};
{{else}}
use pitstop_sdk::{ApiError, Events, Handler, Request, Response, kv, respond};
{{end}}
use serde_json::json;

/// The keyspace key counting visits.
const VISITS: &str = "visits";
{{if events}}
/// The keyspace key counting the `user.created` events handled.
const USERS_SEEN: &str = "users-seen";
{{end}}

struct Service;

impl Handler for Service {
    fn handle(request: Request) -> Response {
        respond(route(&request))
    }
}

{{if events}}
impl Events for Service {
    const PUBLISHES: &'static [&'static str] = &["{{name}}.visited"];
    const SUBSCRIBES: &'static [&'static str] = &["user.created"];

    /// `Err` has the platform retry the event later (and finally move it
    /// to the dead letters); the handler's writes commit only with `Ok`.
    fn handle_event(event: Event) -> Result<(), String> {
        match event.topic.as_str() {
            "user.created" => {
                kv::increment(USERS_SEEN, 1).map_err(|e| format!("{e:?}"))?;
                Ok(())
            }
            other => Err(format!("not subscribed to {other}")),
        }
    }
}
{{else}}
/// No events: add topics here (see `pitstop_sdk::Events`).
impl Events for Service {}
{{end}}

pitstop_sdk::export!(Service);

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("GET", ["{{name}}"]) => visit(),
        (_, ["{{name}}"]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn visit() -> Result<Response, ApiError> {
    let visits = kv::increment(VISITS, 1)?;
{{if events}}
    // Published only if the visit commits: an answer of 500 or more, or a
    // trap, drops both the count and the event.
    publish_json("{{name}}.visited", &json!({"visits": visits}))?;
    let users_seen: i64 = kv::get_json(USERS_SEEN)?.unwrap_or(0);
    let body = json!({"service": "{{name}}", "visits": visits, "users_seen": users_seen});
{{else}}
    let body = json!({"service": "{{name}}", "visits": visits});
{{end}}
    Ok(Response::json(200, &body))
}

/// Run as wasm by `pitstop test-runner`: `cargo test --target wasm32-wasip2`.
#[cfg(test)]
mod tests {
{{if events}}
    use pitstop_sdk::testing;
{{end}}
    use serde_json::Value;

    use super::*;

    fn get(path: &str) -> Response {
        respond(route(&Request::empty("GET", path)))
    }

    #[test]
    fn each_visit_counts() {
        let first: Value = get("/{{name}}").parse().unwrap();
        let second: Value = get("/{{name}}").parse().unwrap();
        assert_eq!(second["visits"], first["visits"].as_i64().unwrap() + 1);
    }

    #[test]
    fn other_methods_and_paths_are_refused() {
        assert_eq!(respond(route(&Request::empty("DELETE", "/{{name}}"))).status, 405);
        assert_eq!(get("/{{name}}/nothing/here").status, 404);
    }
{{if events}}

    #[test]
    fn a_visit_publishes_its_count() {
        testing::clear_published();
        let visit: Value = get("/{{name}}").parse().unwrap();
        let published: Vec<Value> = testing::published_json("{{name}}.visited");
        assert_eq!(published, [json!({"visits": visit["visits"]})]);
    }

    #[test]
    fn users_created_are_counted() {
        let before: Value = get("/{{name}}").parse().unwrap();
        let event = Event {
            id: "evt_1".into(),
            topic: "user.created".into(),
            payload: serde_json::to_vec(&json!({"id": "usr_1", "name": "Ada", "email": "ada@example.com"}))
                .unwrap(),
            attempt: 1,
            source: "user".into(),
            published_at: 0,
        };
        assert_eq!(Service::handle_event(event), Ok(()));
        let after: Value = get("/{{name}}").parse().unwrap();
        assert_eq!(after["users_seen"], before["users_seen"].as_i64().unwrap() + 1);
    }
{{end}}
}
