//! The gateway's pipeline in-process, over a fake backend: routing, limits,
//! error mapping and reply checks, with no socket and no wasm.

use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pitstop_gateway::{
    Backend, Gateway, GatewayOptions, HealthReport, InvokeError, Reply, Request, RouteTable,
};

/// Answers with whatever the test put in `next`, and records what it got.
#[derive(Default)]
struct Fake {
    next: Mutex<Option<Result<Reply, InvokeError>>>,
    seen: Mutex<Vec<(String, Request)>>,
    healthy: bool,
}

impl Backend for Fake {
    async fn invoke(&self, component: &str, request: Request) -> Result<Reply, InvokeError> {
        self.seen.lock().unwrap().push((component.to_string(), request));
        self.next.lock().unwrap().take().unwrap_or_else(|| Ok(reply(200, vec![])))
    }

    async fn ready(&self, routed: &[String]) -> HealthReport {
        let mut checks = serde_json::Map::new();
        for name in routed {
            checks.insert(name.clone(), if self.healthy { "ok" } else { "down" }.into());
        }
        HealthReport::from_checks(checks)
    }
}

fn reply(status: u16, headers: Vec<(&str, &str)>) -> Reply {
    Reply {
        status,
        headers: headers.into_iter().map(|(n, v)| (n.to_string(), v.to_string())).collect(),
        body: Bytes::from_static(b"{}"),
        component: "svc".into(),
        version: 7,
    }
}

fn gateway(fake: Fake, max_body: usize) -> Gateway<Fake> {
    let routes = RouteTable::new([("/svc", "svc")]).unwrap();
    Gateway::new(fake, routes, GatewayOptions { max_request_body: max_body, ..Default::default() })
        .unwrap()
}

fn request(method: &str, uri: &str, body: &'static [u8]) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::from_static(body)))
        .unwrap()
}

async fn body_json(response: http::Response<Full<Bytes>>) -> serde_json::Value {
    serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test]
async fn forwards_the_whole_request_and_names_the_answerer() {
    let gateway = gateway(Fake::default(), 1024);
    let response = gateway
        .handle(
            http::Request::builder()
                .method("POST")
                .uri("/svc/a/b?x=1&y=2")
                .header("x-custom", "yes")
                .body(Full::new(Bytes::from_static(b"hello")))
                .unwrap(),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["pitstop-component"], "svc");
    assert_eq!(response.headers()["pitstop-version"], "7");
    let seen = gateway.backend().seen.lock().unwrap();
    let (component, request) = &seen[0];
    assert_eq!(component, "svc");
    assert_eq!(request.http.method(), "POST");
    assert_eq!(request.http.uri().path(), "/svc/a/b");
    assert_eq!(request.http.uri().query(), Some("x=1&y=2"));
    assert_eq!(&request.http.body()[..], b"hello");
    assert_eq!(request.http.headers()["x-custom"], "yes");
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_whether_announced_or_not() {
    let gateway = gateway(Fake::default(), 4);
    // No Content-Length: caught while reading.
    let response = gateway.handle(request("POST", "/svc", b"12345")).await;
    assert_eq!(response.status(), 413);
    assert!(body_json(response).await["error"].as_str().unwrap().contains("4 bytes"));
    // Announced: refused before reading.
    let announced = http::Request::builder()
        .method("POST")
        .uri("/svc")
        .header("content-length", "999999999")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(gateway.handle(announced).await.status(), 413);
    assert!(gateway.backend().seen.lock().unwrap().is_empty(), "the component never ran");
    assert_eq!(gateway.handle(request("POST", "/svc", b"1234")).await.status(), 200);
}

#[tokio::test]
async fn failures_map_to_statuses_with_json_errors() {
    let cases = [
        (InvokeError::Trapped { component: "svc".into(), message: "boom".into() }, 500),
        (InvokeError::Timeout { component: "svc".into(), deadline_ms: 5 }, 504),
        (
            InvokeError::Unavailable {
                component: "svc".into(),
                reason: "busy".into(),
                retry_after: Duration::from_secs(1),
            },
            503,
        ),
        (InvokeError::NotDeployed("svc".into()), 503),
        (InvokeError::Internal("disk".into()), 500),
    ];
    for (error, status) in cases {
        let fake = Fake::default();
        *fake.next.lock().unwrap() = Some(Err(error.clone()));
        let response = gateway(fake, 1024).handle(request("GET", "/svc", b"")).await;
        assert_eq!(response.status(), status, "{error}");
        assert_eq!(response.headers()["content-type"], "application/json");
        if status == 503 {
            assert_eq!(response.headers()["retry-after"], "1");
        }
        assert_eq!(body_json(response).await["error"], error.to_string());
    }
}

#[tokio::test]
async fn invalid_replies_are_502_and_hop_by_hop_headers_are_dropped() {
    let fake = Fake::default();
    *fake.next.lock().unwrap() = Some(Ok(reply(1000, vec![])));
    assert_eq!(gateway(fake, 1024).handle(request("GET", "/svc", b"")).await.status(), 502);

    let fake = Fake::default();
    let headers =
        vec![("x-ok", "1"), ("connection", "close"), ("bad name", "x"), ("x-bad", "a\nb")];
    *fake.next.lock().unwrap() = Some(Ok(reply(201, headers)));
    let response = gateway(fake, 1024).handle(request("GET", "/svc", b"")).await;
    assert_eq!(response.status(), 201);
    assert_eq!(response.headers()["x-ok"], "1");
    for dropped in ["connection", "x-bad"] {
        assert!(!response.headers().contains_key(dropped), "{dropped}");
    }
}

#[tokio::test]
async fn health_ready_and_unknown_routes() {
    let healthy = gateway(Fake { healthy: true, ..Default::default() }, 1024);
    let response = healthy.handle(request("GET", "/ready", b"")).await;
    assert_eq!(response.status(), 200);
    assert_eq!(body_json(response).await["status"], "healthy");

    let unhealthy = gateway(Fake::default(), 1024);
    let response = unhealthy.handle(request("GET", "/ready", b"")).await;
    assert_eq!(response.status(), 503);
    assert_eq!(body_json(response).await["checks"]["svc"], "down");
    // Liveness does not depend on the components.
    let response = unhealthy.handle(request("GET", "/health", b"")).await;
    assert_eq!(response.status(), 200);

    let response = unhealthy.handle(request("GET", "/elsewhere", b"")).await;
    assert_eq!(response.status(), 404);
    assert_eq!(body_json(response).await["error"], "no route for /elsewhere");
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_the_trace() {
    let gateway = gateway(Fake::default(), 1024);
    let client_trace = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = gateway
        .handle(
            http::Request::builder()
                .uri("/svc/x")
                .header("traceparent", client_trace)
                .header("x-request-id", "req-42")
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert_eq!(response.headers()["x-request-id"], "req-42");
    let traceparent = response.headers()["traceparent"].to_str().unwrap();
    assert!(traceparent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{traceparent}");
    assert_ne!(traceparent, client_trace, "the gateway's span is a child of the client's");
    let headers = gateway.backend().seen.lock().unwrap()[0].1.http.headers().clone();
    assert_eq!(headers["traceparent"], traceparent, "{headers:?}");

    // Without either header, new ones are made; a not-found answer has them too.
    let response = gateway.handle(request("GET", "/nowhere", b"")).await;
    assert_eq!(response.headers()["x-request-id"].len(), 16);
    assert!(
        pitstop_gateway::TraceContext::parse(response.headers()["traceparent"].to_str().unwrap())
            .is_some()
    );
    // A client's id is kept up to 128 visible ASCII characters; a longer
    // one, or one with a space, is replaced by a new one.
    let with_id = |id: String| {
        let request = http::Request::builder().uri("/nowhere").header("x-request-id", id);
        request.body(Full::new(Bytes::new())).unwrap()
    };
    for (id, kept) in
        [("a".repeat(128), true), ("a".repeat(129), false), ("two words".to_string(), false)]
    {
        let response = gateway.handle(with_id(id.clone())).await;
        let answered = response.headers()["x-request-id"].to_str().unwrap().to_string();
        assert_eq!(answered == id, kept, "{id:?} answered as {answered:?}");
        if !kept {
            assert_eq!(answered.len(), 16, "a new id instead of {id:?}");
        }
    }
}
