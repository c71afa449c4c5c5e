//! `Idempotency-Key` on writes, for any component: a retry gets the first
//! answer and the component does not run again; the key is the caller's
//! own; another request under the same key is refused. Over real HTTP
//! against the real binary (docs/services.md#idempotent-writes).

use serde_json::json;

use crate::support::{Answer, Server, fresh_dir, single_component_config, text};

/// kvprobe at `/p` with room for concurrent runs.
async fn probe(settings: &str) -> Server {
    let config = single_component_config(
        "probe",
        "kvprobe",
        &format!("deadline_ms = 20000\nmax_parallel = 8\n{settings}"),
        "/p",
    );
    Server::start_with(Some(&config), fresh_dir()).await
}

async fn keyed(server: &Server, method: &str, path: &str, key: &str, body: &str) -> Answer {
    server.send_with(method, path, &[("idempotency-key", key)], body.to_string()).await
}

fn replayed(answer: &Answer) -> bool {
    answer.header("idempotent-replayed") == Some("true")
}

/// How many times the guest ran `cas` on `key` (it logs a line per run).
fn cas_runs(server: &Server, key: &str) -> usize {
    server.log().matches(&format!("cas run on {key}")).count()
}

/// Three sends of one increment under one key: one increment, three equal
/// answers, the retries marked replayed; a GET with the key is not a write
/// and runs as usual; another key increments again.
#[tokio::test]
async fn a_retried_write_gets_the_first_answer_and_runs_once() {
    let server = probe("").await;
    let first = keyed(&server, "POST", "/p/incr/n", "k-1", "").await;
    assert_eq!((first.status, text(&first.body)), (200, "1".to_string()));
    assert!(!replayed(&first));
    for _ in 0..2 {
        let again = keyed(&server, "POST", "/p/incr/n", "k-1", "").await;
        assert_eq!((again.status, text(&again.body)), (200, "1".to_string()));
        assert!(replayed(&again), "{:?}", again.headers);
        assert_eq!(again.header("content-type"), first.header("content-type"));
    }
    assert_eq!(text(&server.get("/p/kv/n").await.body), "1", "the guest ran once");
    let other = keyed(&server, "POST", "/p/incr/n", "k-2", "").await;
    assert_eq!(text(&other.body), "2");
    let read = keyed(&server, "GET", "/p/kv/n", "k-2", "").await;
    assert_eq!((read.status, replayed(&read)), (200, false));
}

/// Reusing a key for another body, method or path is a 422 that runs
/// nothing; malformed keys are 400.
#[tokio::test]
async fn a_key_reused_for_another_request_is_refused() {
    let server = probe("").await;
    assert_eq!(keyed(&server, "PUT", "/p/kv/a", "k", "one").await.status, 200);
    for (method, path, body) in
        [("PUT", "/p/kv/a", "two"), ("PUT", "/p/kv/b", "one"), ("POST", "/p/incr/a", "one")]
    {
        let reused = keyed(&server, method, path, "k", body).await;
        assert_eq!(reused.status, 422, "{method} {path} {body}: {}", text(&reused.body));
        assert!(reused.error().contains("different request"), "{}", reused.error());
    }
    assert_eq!(text(&server.get("/p/kv/a").await.body), "one");
    assert_eq!(server.get("/p/kv/b").await.status, 404);
    let long = "x".repeat(256);
    for bad in [long.as_str(), "has space", ""] {
        let answer = keyed(&server, "PUT", "/p/kv/c", bad, "v").await;
        assert_eq!(answer.status, 400, "{bad:?}: {}", text(&answer.body));
    }
    assert_eq!(server.get("/p/kv/c").await.status, 404, "nothing ran");
}

/// Eight sends of one keyed request at once run the guest once: the others
/// get 409 with Retry-After while it runs, or its answer.
#[tokio::test]
async fn concurrent_sends_of_one_key_run_once() {
    let server = probe("").await;
    let sends = (0..8).map(|_| keyed(&server, "POST", "/p/cas/c/500", "same", ""));
    let answers = futures::future::join_all(sends).await;
    let mut ran = 0;
    for answer in &answers {
        match answer.status {
            200 if !replayed(answer) => ran += 1,
            200 => assert_eq!(answer.json(), json!({"from": 0, "swapped": true})),
            409 => {
                assert!(answer.error().contains("still running"), "{}", answer.error());
                assert!(answer.header("retry-after").is_some());
            }
            other => panic!("{other}: {}", text(&answer.body)),
        }
    }
    let statuses: Vec<u16> = answers.iter().map(|a| a.status).collect();
    assert_eq!(ran, 1, "{statuses:?}");
    assert_eq!(cas_runs(&server, "c"), 1, "{}", server.log());
    assert_eq!(text(&server.get("/p/kv/c").await.body), "1");
}

/// A key is the caller's own: another subject sending the same key runs
/// its own request and never sees the first answer; a caller without a
/// verified identity cannot use one (400), on a route open to anonymous
/// writes.
#[tokio::test]
async fn a_key_belongs_to_its_caller() {
    let open = "[auth]\ndefault = { read = \"public\", write = \"public\" }\n";
    let config = format!("{open}{}", single_component_config("probe", "kvprobe", "", "/p"));
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let first = keyed(&server, "POST", "/p/incr/n", "shared", "").await;
    assert_eq!(text(&first.body), "1");
    let mallory = format!("Bearer {}", server.token_for("mallory", &[]));
    let theirs = server
        .send_raw(
            "POST",
            "/p/incr/n",
            &[("authorization", &mallory), ("idempotency-key", "shared")],
            "",
        )
        .await;
    assert_eq!((text(&theirs.body), replayed(&theirs)), ("2".to_string(), false));
    let anonymous = server.send_raw("POST", "/p/incr/n", &[("idempotency-key", "anon")], "").await;
    assert_eq!(anonymous.status, 400, "{}", text(&anonymous.body));
    assert!(anonymous.error().contains("verified caller"), "{}", anonymous.error());
    assert_eq!(text(&server.get("/p/kv/n").await.body), "2");
}

/// A request that failed without doing anything outside itself gives the
/// key up: the retry runs. One that lost its commit race after a services
/// call (409, nothing of it saved, but the call made) is kept: the retry
/// gets the same 409 and the guest does not run again.
#[tokio::test]
async fn a_failure_is_kept_only_when_the_request_did_something_outside() {
    let server = probe("").await;
    // The keyed one calls `user`, swaps and holds its commit 800 ms; an
    // unkeyed one commits first: the keyed one loses and answers 409.
    let keyed_loser = keyed(&server, "POST", "/p/cas/d/800?call=user", "after-call", "");
    let winner = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        server.send("POST", "/p/cas/d/0", "").await
    };
    let (lost, held) = tokio::join!(keyed_loser, winner);
    let mut statuses = [held.status, lost.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409], "{} / {}", text(&held.body), text(&lost.body));
    assert_eq!(lost.status, 409, "the keyed one lost");
    let runs = cas_runs(&server, "d");
    let retry = keyed(&server, "POST", "/p/cas/d/800?call=user", "after-call", "").await;
    assert_eq!(
        (retry.status, retry.body.clone(), replayed(&retry)),
        (lost.status, lost.body.clone(), true)
    );
    assert_eq!(cas_runs(&server, "d"), runs, "the retry did not run the guest");

    // A write refused by the keyspace's quota (507), no call made: the
    // retry runs again (and is refused again).
    let small = probe("max_keyspace_bytes = 1024").await;
    let big = "x".repeat(4096);
    let refused = keyed(&small, "PUT", "/p/kv/big", "q", &big).await;
    assert_eq!(refused.status, 507, "{}", text(&refused.body));
    let again = keyed(&small, "PUT", "/p/kv/big", "q", &big).await;
    assert_eq!((again.status, replayed(&again)), (507, false));
}

/// A keyed write whose own writes fit the quota is answered at once even
/// when its kept answer does not fit beside them (it would otherwise run
/// again and again until its deadline, 20 s here).
#[tokio::test]
async fn a_kept_answer_never_makes_a_write_wait() {
    let server = probe("max_keyspace_bytes = 1024").await;
    let filler = "x".repeat(900);
    assert_eq!(server.send("PUT", "/p/kv/f", filler).await.status, 200);
    let started = std::time::Instant::now();
    let answer = keyed(&server, "POST", "/p/incr/n", "tight", "").await;
    assert_eq!((answer.status, text(&answer.body)), (200, "1".to_string()));
    assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
    assert!(replayed(&keyed(&server, "POST", "/p/incr/n", "tight", "").await));
}

/// A kept answer lasts `idempotency_ttl_s`: after it the same key runs anew.
#[tokio::test]
async fn a_kept_answer_expires() {
    let server = probe("idempotency_ttl_s = 1").await;
    assert_eq!(text(&keyed(&server, "POST", "/p/incr/t", "k", "").await.body), "1");
    assert!(replayed(&keyed(&server, "POST", "/p/incr/t", "k", "").await));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let later = keyed(&server, "POST", "/p/incr/t", "k", "").await;
    assert_eq!((text(&later.body), replayed(&later)), ("2".to_string(), false));
}

/// How many orders and payments `user` has.
async fn orders_and_payments(server: &Server, user: &str) -> (usize, usize) {
    let count = |answer: Answer, list: &str| answer.json()[list].as_array().map_or(0, Vec::len);
    let orders = count(server.get(&format!("/orders?user_id={user}")).await, "orders");
    let payments = count(server.get(&format!("/payments?user_id={user}")).await, "payments");
    (orders, payments)
}

/// The order service through the gateway: a retried order is the same
/// order, charged once.
#[tokio::test]
async fn a_retried_order_is_placed_and_charged_once() {
    let server = Server::start().await;
    let user = server.create_user("Ida", "ida@example.com").await;
    let order = json!({"user_id": user, "items": [{"sku": "lamp", "quantity": 1, "price": 4200}]})
        .to_string();
    let first = keyed(&server, "POST", "/orders", "order-1", &order).await;
    assert_eq!(first.status, 201, "{}", text(&first.body));
    let retry = keyed(&server, "POST", "/orders", "order-1", &order).await;
    assert_eq!((retry.status, retry.json(), replayed(&retry)), (201, first.json(), true));
    assert_eq!(orders_and_payments(&server, &user).await, (1, 1));
}

/// When the platform runs a keyed order again (its kept answer gone: here
/// expired, after a crash lost) the order service finds the order the first
/// run placed, from the key the platform passes it: still one order, one
/// payment, the same answer (not replayed).
#[tokio::test]
async fn a_rerun_of_a_keyed_order_finds_the_first_order() {
    let config = "[components.order]\nidempotency_ttl_s = 1\n";
    let server = Server::start_with(Some(config), fresh_dir()).await;
    let user = server.create_user("Rex", "rex@example.com").await;
    let order = json!({"user_id": user, "items": [{"sku": "tv", "quantity": 1, "price": 9900}]})
        .to_string();
    let first = keyed(&server, "POST", "/orders", "order-2", &order).await;
    assert_eq!(first.status, 201, "{}", text(&first.body));
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let rerun = keyed(&server, "POST", "/orders", "order-2", &order).await;
    assert_eq!((rerun.status, rerun.json(), replayed(&rerun)), (201, first.json(), false));
    assert_eq!(orders_and_payments(&server, &user).await, (1, 1));
    // Another order under the key once its answer expired: refused.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let other = json!({"user_id": user, "items": [{"sku": "radio", "quantity": 1, "price": 100}]});
    let reused = keyed(&server, "POST", "/orders", "order-2", &other.to_string()).await;
    assert_eq!(reused.status, 422, "{}", text(&reused.body));
}
