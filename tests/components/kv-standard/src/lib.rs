//! A `wasi:http/proxy` component, as Spin or wasmCloud users write them,
//! that keeps its data through `wasi:keyvalue`. Routes under `/k/`:
//!
//! - `GET /k/open/{bucket}`: opens the bucket (draft2), `opened` or the error;
//! - `PUT /k/v2/{key}` (body: the value), `GET`, `DELETE`: draft2 store;
//! - `POST /k/v2/incr/{key}/{delta}`, `POST /k/v1/incr/{key}/{delta}`:
//!   `increment` in each version, answering the new value;
//! - `GET /k/v2/keys`, `GET /k/v1/keys`: every key, page after page through
//!   the cursor, one per line, then `pages N`;
//! - `POST /k/v2/many/{n}`: `set-many` of keys `m0000`..`m{n-1}`;
//! - `POST /k/v2/many-then-long/{ok|fail}`: `set-many` of a=1, b=2 and a
//!   key over the limit, answering the error with 200 (`ok`) or 500;
//! - `POST /k/v2/batch`: `set-many` a=1, b=2, then `get-many` of a, b, c (draft2)
//!   and the same through draft's `get-many`;
//! - `POST /k/v2/cas/{key}`: `cas.new`, then sets the key behind the
//!   handle's back (`set` "other"), swaps (fails: `cas-failed`), swaps again
//!   with the handle it got back (succeeds) to `current + "!"`;
//! - `PUT /k/v2/then-fail/{key}`: sets the key, then answers 500;
//! - `PUT /k/v2/then-trap/{key}`: sets the key, then traps;
//! - `GET /k/platform/{key}`: reads the key through `pitstop:platform/keyvalue`;
//! - `POST /k/platform/incr/{key}`: `increment` by 1 through it;
//! - `POST /k/v2/get-many/{key}/{n}`, `POST /k/v1/get-many/{key}/{n}`:
//!   `get-many` of `key` asked `n` times, answering the bytes returned;
//! - `POST /k/v2/cas-hold/{key}/{n}`: takes `n` `cas` handles on `key` and
//!   holds them all for 500 ms, then answers how many it got;
//! - `POST /k/v2/cas-keep/{key}`: takes a `cas` handle on `key` and keeps
//!   it in the instance for a later invocation (with `reuse`);
//! - `POST /k/v2/cas-kept/{other}/{value}`: takes a handle of its own on
//!   `other` (so a slot is in use again), then swaps `value` in through the
//!   kept handle; 409 when no handle was kept (a fresh instance).

mod draft {
    wit_bindgen::generate!({
        inline: "
            package test:kv-draft;
            world kv {
                import wasi:keyvalue/store@0.2.0-draft;
                import wasi:keyvalue/atomics@0.2.0-draft;
                import wasi:keyvalue/batch@0.2.0-draft;
            }
        ",
        path: "../../../wit/deps/keyvalue-0.2.0-draft",
        generate_all,
    });
}

mod draft2 {
    wit_bindgen::generate!({
        inline: "
            package test:kv-draft2;
            world kv {
                import wasi:keyvalue/store@0.2.0-draft2;
                import wasi:keyvalue/atomics@0.2.0-draft2;
                import wasi:keyvalue/batch@0.2.0-draft2;
            }
        ",
        path: "../../../wit/deps/keyvalue-0.2.0-draft2",
        generate_all,
    });
}

mod platform {
    wit_bindgen::generate!({
        inline: "
            package test:kv-platform;
            world kv {
                import pitstop:platform/keyvalue@0.1.0;
            }
        ",
        path: "../../../wit/platform.wit",
        generate_all,
    });
}

use wasip2::http::types::{
    Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

use draft2::wasi::keyvalue::{atomics as atomics2, batch as batch2, store as store2};

struct KvStandard;

impl wasip2::exports::http::incoming_handler::Guest for KvStandard {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let route = path.split('?').next().unwrap_or_default().to_string();
        let segments: Vec<&str> = route.trim_start_matches("/k/").split('/').collect();
        let method = request.method();
        let body = read_body(request.consume().expect("the body is taken once"));
        let (status, text) = route_request(&method, &segments, body);
        respond(out, status, text.as_bytes());
    }
}

fn route_request(method: &Method, segments: &[&str], body: Vec<u8>) -> (u16, String) {
    match (method, segments) {
        (Method::Get, ["open", name]) => match store2::open(name) {
            Ok(_) => (200, "opened".into()),
            Err(error) => (404, format!("{error:?}")),
        },
        (Method::Post, ["v2", "incr", key, delta]) => {
            let delta: i64 = delta.parse().unwrap_or(1);
            match atomics2::increment(&bucket2(), key, delta) {
                Ok(value) => (200, value.to_string()),
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Post, ["v1", "incr", key, delta]) => {
            let delta: u64 = delta.parse().unwrap_or(1);
            let bucket = draft::wasi::keyvalue::store::open("default").expect("the default bucket");
            match draft::wasi::keyvalue::atomics::increment(&bucket, key, delta) {
                Ok(value) => (200, value.to_string()),
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Get, ["v2", "keys"]) => {
            let bucket = bucket2();
            let (mut keys, mut cursor, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = bucket.list_keys(cursor.as_deref()).expect("listing");
                pages += 1;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            (200, format!("{}\npages {pages}", keys.join("\n")))
        }
        (Method::Get, ["v1", "keys"]) => {
            let bucket = draft::wasi::keyvalue::store::open("").expect("the default bucket");
            let (mut keys, mut cursor, mut pages) = (Vec::new(), None, 0);
            loop {
                let page = bucket.list_keys(cursor).expect("listing");
                pages += 1;
                keys.extend(page.keys);
                match page.cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            (200, format!("{}\npages {pages}", keys.join("\n")))
        }
        (Method::Post, ["v2", "many", n]) => {
            let n: usize = n.parse().unwrap_or(0);
            let pairs: Vec<(String, Vec<u8>)> =
                (0..n).map(|i| (format!("m{i:04}"), b"x".to_vec())).collect();
            match batch2::set_many(&bucket2(), &pairs) {
                Ok(()) => (200, format!("set {n}")),
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Post, ["v2", "many-then-long", then]) => {
            // a=1, b=2, then a key over the 512-byte limit: the batch fails
            // part-way; `then` is how the invocation ends, `ok` or `fail`.
            let pairs = [("a", "1"), ("b", "2"), (&*"k".repeat(513), "3")]
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()));
            let error = match batch2::set_many(&bucket2(), &pairs) {
                Ok(()) => "no error".to_string(),
                Err(error) => format!("{error:?}"),
            };
            (if *then == "fail" { 500 } else { 200 }, error)
        }
        (Method::Post, ["v2", "get-many", key, n]) => {
            let keys = vec![key.to_string(); n.parse().unwrap_or(0)];
            match batch2::get_many(&bucket2(), &keys) {
                Ok(found) => {
                    let bytes: usize =
                        found.iter().filter_map(|(_, v)| v.as_ref()).map(Vec::len).sum();
                    (200, format!("got {bytes} bytes"))
                }
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Post, ["v1", "get-many", key, n]) => {
            let keys = vec![key.to_string(); n.parse().unwrap_or(0)];
            let bucket = draft::wasi::keyvalue::store::open("default").expect("the default bucket");
            match draft::wasi::keyvalue::batch::get_many(&bucket, &keys) {
                Ok(found) => {
                    let bytes: usize = found.iter().flatten().map(|(_, v)| v.len()).sum();
                    (200, format!("got {bytes} bytes"))
                }
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Post, ["v2", "cas-hold", key, n]) => {
            let bucket = bucket2();
            let mut held = Vec::new();
            for _ in 0..n.parse().unwrap_or(0) {
                match atomics2::Cas::new(&bucket, key) {
                    Ok(cas) => held.push(cas),
                    Err(error) => return (500, format!("after {} handles: {error:?}", held.len())),
                }
            }
            // Held a while, so that invocations at once hold them together.
            wasip2::clocks::monotonic_clock::subscribe_duration(500_000_000).block();
            (200, format!("holding {}", held.len()))
        }
        (Method::Post, ["v2", "cas-keep", key]) => {
            let cas = atomics2::Cas::new(&bucket2(), key).expect("a cas handle");
            KEPT.with(|kept| *kept.borrow_mut() = Some(cas));
            (200, "kept".into())
        }
        (Method::Post, ["v2", "cas-kept", other, value]) => {
            let Some(kept) = KEPT.with(|kept| kept.borrow_mut().take()) else {
                return (409, "no handle kept: a fresh instance".into());
            };
            let own = atomics2::Cas::new(&bucket2(), other).expect("a cas handle");
            match atomics2::swap(kept, value.as_bytes()) {
                Ok(()) => {
                    // Not dropped: where the kept handle named `own`'s
                    // slot, the swap took it, and the drop's trap would
                    // hide what the swap wrote.
                    std::mem::forget(own);
                    (200, format!("swapped {value} in through a kept handle"))
                }
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Post, ["platform", "incr", key]) => {
            match platform::pitstop::platform::keyvalue::increment(key, 1) {
                Ok(value) => (200, value.to_string()),
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Post, ["v2", "batch"]) => {
            let bucket = bucket2();
            let pairs = [("a".to_string(), b"1".to_vec()), ("b".to_string(), b"2".to_vec())];
            batch2::set_many(&bucket, &pairs).expect("set-many");
            let keys = ["a".to_string(), "b".to_string(), "c".to_string()];
            let found = batch2::get_many(&bucket, &keys).expect("get-many");
            let mut text = String::new();
            for (key, value) in found {
                let value = value.map(|v| String::from_utf8_lossy(&v).into_owned());
                text.push_str(&format!("{key}={}\n", value.unwrap_or_else(|| "-".into())));
            }
            let bucket1 =
                draft::wasi::keyvalue::store::open("default").expect("the default bucket");
            let found = draft::wasi::keyvalue::batch::get_many(&bucket1, &keys).expect("get-many");
            for entry in found {
                match entry {
                    Some((key, value)) => {
                        text.push_str(&format!("v1 {key}={}\n", String::from_utf8_lossy(&value)))
                    }
                    None => text.push_str("v1 -\n"),
                }
            }
            (200, text)
        }
        (Method::Post, ["v2", "cas", key]) => {
            let bucket = bucket2();
            let cas = atomics2::Cas::new(&bucket, key).expect("a cas handle");
            bucket.set(key, b"other").expect("a set behind the handle's back");
            let again = match atomics2::swap(cas, b"stale") {
                Ok(()) => return (500, "a stale swap succeeded".into()),
                Err(atomics2::CasError::CasFailed(again)) => again,
                Err(atomics2::CasError::StoreError(error)) => return (500, format!("{error:?}")),
            };
            let mut next = again.current().expect("current").unwrap_or_default();
            next.extend_from_slice(b"!");
            match atomics2::swap(again, &next) {
                Ok(()) => (200, format!("swapped to {}", String::from_utf8_lossy(&next))),
                Err(error) => (500, format!("{error:?}")),
            }
        }
        (Method::Put, ["v2", "then-fail", key]) => {
            bucket2().set(key, &body).expect("set");
            (500, "failing after a write".into())
        }
        (Method::Put, ["v2", "then-trap", key]) => {
            bucket2().set(key, &body).expect("set");
            panic!("trapping after a write");
        }
        (Method::Put, ["v2", key]) => match bucket2().set(key, &body) {
            Ok(()) => (200, "stored".into()),
            Err(error) => (400, format!("{error:?}")),
        },
        (Method::Get, ["v2", key]) => match bucket2().get(key) {
            Ok(Some(value)) => (200, String::from_utf8_lossy(&value).into_owned()),
            Ok(None) => (404, "absent".into()),
            Err(error) => (400, format!("{error:?}")),
        },
        (Method::Delete, ["v2", key]) => match bucket2().delete(key) {
            Ok(()) => (200, "deleted".into()),
            Err(error) => (400, format!("{error:?}")),
        },
        (Method::Get, ["platform", key]) => match platform::pitstop::platform::keyvalue::get(key) {
            Ok(Some(value)) => (200, String::from_utf8_lossy(&value).into_owned()),
            Ok(None) => (404, "absent".into()),
            Err(error) => (400, format!("{error:?}")),
        },
        _ => (404, "no such route".into()),
    }
}

thread_local! {
    /// A `cas` handle kept across invocations by `cas-keep`.
    static KEPT: std::cell::RefCell<Option<atomics2::Cas>> = const { std::cell::RefCell::new(None) };
}

fn bucket2() -> store2::Bucket {
    store2::open("default").expect("the default bucket")
}

fn read_body(body: IncomingBody) -> Vec<u8> {
    let stream = body.stream().expect("the stream is taken once");
    let mut bytes = Vec::new();
    while let Ok(chunk) = stream.blocking_read(64 * 1024) {
        bytes.extend_from_slice(&chunk);
    }
    drop(stream);
    IncomingBody::finish(body);
    bytes
}

fn respond(out: ResponseOutparam, status: u16, body: &[u8]) {
    let response = OutgoingResponse::new(Fields::new());
    response.set_status_code(status).expect("a valid status");
    let outgoing = response.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(response));
    let stream = outgoing.write().expect("the stream is taken once");
    for chunk in body.chunks(4096) {
        stream.blocking_write_and_flush(chunk).expect("writing the body");
    }
    drop(stream);
    OutgoingBody::finish(outgoing, None).expect("finishing the body");
}

wasip2::http::proxy::export!(KvStandard);
