//! A component written against the standard `wasi:keyvalue` (draft, and
//! Spin's draft2) keeps its data in its own keyspace, inside the
//! invocation's atomic write set, and can read it through pitstop's own
//! `keyvalue` too.

use crate::support::{Server, fresh_dir, single_component_config, text};

async fn server() -> Server {
    let config = single_component_config("kv", "kv_standard", "", "/k");
    Server::start_with(Some(&config), fresh_dir()).await
}

/// Store, read, delete; the default bucket opens by `""` or `"default"`,
/// and any other name is `no-such-store`.
#[tokio::test]
async fn the_default_bucket_stores_and_others_do_not_open() {
    let server = server().await;
    assert_eq!(text(&server.get("/k/open/default").await.body), "opened");
    let other = server.get("/k/open/orders").await;
    assert_eq!((other.status, text(&other.body)), (404, "Error::NoSuchStore".into()));

    assert_eq!(server.send("PUT", "/k/v2/greeting", "hi there").await.status, 200);
    let read = server.get("/k/v2/greeting").await;
    assert_eq!((read.status, text(&read.body)), (200, "hi there".into()));
    // The same key, through pitstop's own interface: one keyspace.
    assert_eq!(text(&server.get("/k/platform/greeting").await.body), "hi there");
    assert_eq!(server.send("DELETE", "/k/v2/greeting", "").await.status, 200);
    assert_eq!(server.get("/k/v2/greeting").await.status, 404);
}

/// A write is part of the invocation: a 500 answer or a trap after it
/// leaves nothing behind.
#[tokio::test]
async fn writes_vanish_with_a_failed_invocation() {
    let server = server().await;
    assert_eq!(server.send("PUT", "/k/v2/then-fail/a", "x").await.status, 500);
    assert_eq!(server.send("PUT", "/k/v2/then-trap/b", "x").await.status, 500);
    assert_eq!(server.get("/k/v2/a").await.status, 404, "the 500's write committed");
    assert_eq!(server.get("/k/v2/b").await.status, 404, "the trap's write committed");
}

/// `increment` in both versions counts on the same decimal value; draft's
/// is unsigned and refuses a negative value without writing.
#[tokio::test]
async fn both_versions_increment_the_same_counter() {
    let server = server().await;
    assert_eq!(text(&server.send("POST", "/k/v2/incr/n/5", "").await.body), "5");
    assert_eq!(text(&server.send("POST", "/k/v1/incr/n/2", "").await.body), "7");
    assert_eq!(text(&server.get("/k/platform/n").await.body), "7");
    assert_eq!(text(&server.send("POST", "/k/v2/incr/n/-10", "").await.body), "-3");
    let refused = server.send("POST", "/k/v1/incr/n/1", "").await;
    assert_eq!(refused.status, 500);
    assert!(text(&refused.body).contains("negative"), "{}", text(&refused.body));
    assert_eq!(text(&server.get("/k/platform/n").await.body), "-3", "nothing written");
}

/// Listing pages through more keys than one page holds, by either
/// version's cursor, and returns each key once.
#[tokio::test]
async fn keys_are_listed_page_after_page() {
    let server = server().await;
    assert_eq!(server.send("POST", "/k/v2/many/1005", "").await.status, 200);
    for version in ["v1", "v2"] {
        let listed = text(&server.get(&format!("/k/{version}/keys")).await.body);
        let lines: Vec<&str> = listed.lines().collect();
        let (pages, keys) = lines.split_last().unwrap();
        assert_eq!(*pages, "pages 2", "{version}");
        let expected: Vec<String> = (0..1005).map(|i| format!("m{i:04}")).collect();
        assert_eq!(keys, &expected, "{version}");
    }
}

/// `get-many` answers each key asked, in its version's shape.
#[tokio::test]
async fn batches_answer_every_key() {
    let server = server().await;
    let answer = server.send("POST", "/k/v2/batch", "").await;
    assert_eq!(text(&answer.body), "a=1\nb=2\nc=-\nv1 a=1\nv1 b=2\nv1 -\n");
}

/// A swap through a `cas` handle fails when the value changed behind it,
/// and succeeds with the handle it got back, which holds the value now.
#[tokio::test]
async fn cas_fails_on_a_changed_value_and_hands_the_handle_back() {
    let server = server().await;
    assert_eq!(server.send("PUT", "/k/v2/c", "first").await.status, 200);
    let answer = server.send("POST", "/k/v2/cas/c", "").await;
    assert_eq!((answer.status, text(&answer.body)), (200, "swapped to other!".into()));
    assert_eq!(text(&server.get("/k/v2/c").await.body), "other!");
}

/// A `cas` handle belongs to the invocation that took it: one a reused
/// instance kept from an earlier invocation names nothing in the next, even
/// when that invocation has a handle of its own in the same slot. The swap
/// through it traps the invocation, and neither key changes.
#[tokio::test]
async fn a_cas_handle_kept_by_a_reused_instance_is_refused_in_the_next_invocation() {
    let settings = "reuse = { max_requests = 1000 }\nmax_parallel = 1\nmax_concurrency = 1\n";
    let config = single_component_config("kv", "kv_standard", settings, "/k");
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    assert_eq!(server.send("PUT", "/k/v2/kept", "first").await.status, 200);
    let kept = server.send("POST", "/k/v2/cas-keep/kept", "").await;
    assert_eq!((kept.status, text(&kept.body)), (200, "kept".into()));

    let used = server.send("POST", "/k/v2/cas-kept/own/stolen", "").await;
    // 409 would mean a fresh instance served it, and nothing was tried.
    assert_eq!(used.status, 500, "{}", text(&used.body));
    assert_eq!(text(&server.get("/k/v2/kept").await.body), "first");
    assert_eq!(server.get("/k/v2/own").await.status, 404, "the swap reached the new handle's key");
    // The instance that trapped is retired; the next request is served.
    assert_eq!(server.send("PUT", "/k/v2/after", "x").await.status, 200);
}

/// An invocation may have 256 `cas` handles open (docs/services.md); the
/// 257th is an error the guest sees, naming the limit.
#[tokio::test]
async fn an_invocation_holds_at_most_256_cas_handles() {
    let server = server().await;
    let at_limit = server.send("POST", "/k/v2/cas-hold/k/256", "").await;
    assert_eq!((at_limit.status, text(&at_limit.body)), (200, "holding 256".to_string()));
    let over = server.send("POST", "/k/v2/cas-hold/k/257", "").await;
    let said = text(&over.body);
    assert_eq!(over.status, 500, "{said}");
    assert!(said.starts_with("after 256 handles:"), "{said}");
    assert!(said.contains("more than 256 cas handles at once"), "{said}");
}

/// A batch that fails part-way leaves its earlier writes in the invocation
/// (docs/services.md), which commits them only if it succeeds.
#[tokio::test]
async fn a_batch_failing_part_way_keeps_its_earlier_writes_if_the_invocation_succeeds() {
    let server = server().await;
    let failed = server.send("POST", "/k/v2/many-then-long/fail", "").await;
    assert_eq!(failed.status, 500);
    assert!(text(&failed.body).contains("limit is 512"), "{}", text(&failed.body));
    for key in ["a", "b"] {
        assert_eq!(server.get(&format!("/k/v2/{key}")).await.status, 404, "{key} not committed");
    }
    let answered = server.send("POST", "/k/v2/many-then-long/ok", "").await;
    assert_eq!(answered.status, 200);
    assert!(text(&answered.body).contains("limit is 512"), "{}", text(&answered.body));
    for (key, value) in [("a", "1"), ("b", "2")] {
        let read = server.get(&format!("/k/v2/{key}")).await;
        assert_eq!((read.status, text(&read.body)), (200, value.to_string()), "{key}");
    }
}
