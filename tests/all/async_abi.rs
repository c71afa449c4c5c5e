//! Components that use the component model's async ABI (what newer
//! toolchains emit: componentize-qjs's `task.cancel`, wit-bindgen's async
//! runtime) deploy and serve: the engine has component-model async on.

use crate::support::{Server, fresh_dir, single_component_config};

/// A service that calls async built-ins (`waitable-set.new` and `.drop`)
/// while handling a request answers like any other.
#[tokio::test]
async fn a_service_using_async_builtins_serves() {
    let config = single_component_config("asyncy", "async_hello", "", "/a");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let answer = server.get("/a/x").await;
    let body = String::from_utf8_lossy(&answer.body).into_owned();
    assert_eq!(answer.status, 200, "{body}");
    assert!(body.starts_with("async built-ins: GET /a/x (set "), "{body}");
}
