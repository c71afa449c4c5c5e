//! A service that calls built-ins of the component model's async ABI
//! (`waitable-set.new`, `waitable-set.drop`), as the runtimes of newer
//! toolchains do (componentize-qjs calls `task.cancel`): a host without
//! component-model async refuses such a component when compiling it. It
//! answers with the handle of the set it made.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "service",
    generate_all,
});

use exports::pitstop::platform::handler::Guest;
use pitstop::platform::types::{Request, Response};

#[link(wasm_import_module = "$root")]
unsafe extern "C" {
    #[link_name = "[waitable-set-new]"]
    fn waitable_set_new() -> u32;
    #[link_name = "[waitable-set-drop]"]
    fn waitable_set_drop(set: u32);
}

struct AsyncHello;

impl Guest for AsyncHello {
    fn handle(request: Request) -> Response {
        // SAFETY: the canonical built-ins take and return plain handles.
        let set = unsafe { waitable_set_new() };
        unsafe { waitable_set_drop(set) };
        let body = format!("async built-ins: {} {} (set {set})", request.method, request.path);
        Response { status: 200, headers: Vec::new(), body: body.into_bytes() }
    }
}

export!(AsyncHello);
