//! The order service: places orders as a saga over the user and payment
//! services, through the platform's `services` import (never a socket) and
//! its message bus, and keeps each order as its event history. The saga's
//! states, transitions and the history are in README.md.
//!
//! - `POST /orders {"user_id","items":[{"sku","quantity","price"}]}` -> 201 with
//!   `{"id","user_id","items","amount","status","payment_id"}`; `amount` is the
//!   sum of quantity x price in cents. Status `CONFIRMED` when the payment
//!   completed, `FAILED` when it was declined or could not be made (then
//!   `failure_reason` says why, and any payment is refunded). 202 with status
//!   `PENDING` when the outcome is not known yet: the saga then finishes on
//!   its own within [`SAGA_TIMEOUT_MS`] (and `GET` shows the outcome). 400 on
//!   malformed JSON, no items, a non-positive quantity or price, or an amount
//!   that overflows; 413 when the items take more than [`MAX_ITEMS_BYTES`]
//!   as JSON; 401 without a verified subject; 422 when the user does not
//!   exist or belongs to another subject; 503 when the user service cannot
//!   answer and the user is not in the read model either.
//! - `GET /orders/{id}` -> 200 the order as its history says it stands, or 404.
//! - `GET /orders/{id}/events` -> 200 `{"id","events":[...]}`: the order's
//!   history, oldest first, each fact as it was published; 404 for no order.
//! - `GET /orders?user_id={id}` -> 200 `{"orders":[...]}`, every order of that
//!   user, `PENDING` ones included; 400 without `user_id`.
//!
//! Sent with an `Idempotency-Key`, an order's id derives from the key's
//! digest (`pitstop-idempotency-key`): a retry the platform runs again
//! finds the order the first run placed and answers how it stands (422 if
//! the key placed another order).
//!
//! An order belongs to the subject its user belongs to (`owner`): only
//! that subject, an `admin` and the order service itself acting as the
//! platform (the saga timeout) read it; to anyone else it does not exist
//! (404, and lists leave it out).
//!
//! Events: subscribes to `user.created` (kept as a read model of users, the
//! fallback when the user service cannot answer) and to its own
//! `order.timeout`; publishes each fact of an order's history on
//! `order.<type>` (`order.created`, `order.payment-requested`,
//! `order.confirmed`, `order.failed`, `order.compensated`) as it is recorded.
//!
//! Keyspace layout: `events/<id>` holds an order's history ([`history`]);
//! `order/<id>` the order as its history leaves it (the record versions
//! before histories read and write, kept in step for canaries and
//! rollbacks across them); `by-user/<user>/<order>` indexes orders by user;
//! `user/<id>` is the read model of users.

mod history;
mod saga;

use history::{History, Item, Order, Status};
use pitstop_sdk::access::Actor;
use pitstop_sdk::events::publish_json_delayed;
use pitstop_sdk::services::{call, describe};
use pitstop_sdk::{ApiError, Event, Events, Handler, Request, Response, headers, id, kv, respond};
use serde::{Deserialize, Serialize};

/// How long after an order is placed its saga is checked and, if it is
/// still `PENDING`, driven to an end. Well above the deadline of a request,
/// so the check normally finds the order finished.
pub const SAGA_TIMEOUT_MS: u64 = 8_000;

/// Hex digits of an order id after `ord_` (96 bits, as `id::new_id`).
const ID_HEX: usize = 24;

/// The internal path that records a new order as `PENDING`.
const BEGIN_PATH: &str = "/orders/_begin";
/// The components whose calls serving no subject act as the platform.
const TRUSTED: &[&str] = &["order"];

#[derive(Deserialize)]
struct NewOrder {
    user_id: String,
    items: Vec<Item>,
}

#[derive(Serialize, Deserialize)]
struct Timeout {
    order_id: String,
}

struct OrderService;

impl Handler for OrderService {
    fn handle(request: Request) -> Response {
        respond(route(&request))
    }
}

impl Events for OrderService {
    const PUBLISHES: &'static [&'static str] = &[
        "order.created",
        "order.payment-requested",
        "order.confirmed",
        "order.failed",
        "order.compensated",
        "order.timeout",
    ];
    const SUBSCRIBES: &'static [&'static str] = &["user.created", "order.timeout"];

    fn handle_event(event: Event) -> Result<(), String> {
        match event.topic.as_str() {
            "user.created" => remember_user(&event),
            "order.timeout" => {
                let timeout: Timeout = event.json()?;
                saga::finish_stale(&timeout.order_id, event.attempt).map_err(|e| e.message)
            }
            other => Err(format!("not subscribed to {other}")),
        }
    }
}

pitstop_sdk::export!(OrderService);

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", ["orders", "_begin"]) if request.caller() == Some("order") => begin(request),
        ("POST", ["orders"]) => place(request),
        ("GET", ["orders"]) => list(request),
        ("GET", ["orders", id]) => get(request, id),
        ("GET", ["orders", id, "events"]) => events(request, id),
        (_, ["orders"] | ["orders", _] | ["orders", _, "events"]) => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::not_found("no such route")),
    }
}

/// Step 0: validate, check the user, record the order as `PENDING` in its
/// own committed invocation, then run the payment step.
fn place(request: &Request) -> Result<Response, ApiError> {
    let actor = Actor::of(request, TRUSTED);
    if actor.subject().is_none() {
        return Err(ApiError::new(401, "placing an order needs a verified subject (a token)"));
    }
    let input: NewOrder = request.json()?;
    let amount = validate(&input)?;
    let owner = ensure_user_is_theirs(&input.user_id, &actor)?;

    // A retry of a keyed request that the platform runs again (its kept
    // answer lost to a crash, or expired) gets the id the first run used,
    // and finds that order rather than placing a second one.
    let keyed = request
        .header(headers::IDEMPOTENCY_KEY)
        .filter(|scope| scope.len() >= ID_HEX && scope.bytes().all(|b| b.is_ascii_hexdigit()));
    let order = Order {
        id: keyed.map_or_else(|| id::new_id("ord"), |scope| format!("ord_{}", &scope[..ID_HEX])),
        user_id: input.user_id,
        items: input.items,
        amount,
        status: Status::Pending,
        payment_id: None,
        failure_reason: None,
        owner,
    };
    // A call to ourselves commits on its own: from here on the order is
    // durable, and its timeout is scheduled, before any money moves.
    let begun = call("order", &Request::with_json("POST", BEGIN_PATH, &order)).map_err(|e| {
        ApiError::unavailable(format!("could not record the order: {}", describe(&e)))
    })?;
    let resumed = begun.status == 409 && keyed.is_some();
    if begun.status != 201 && !resumed {
        return Ok(begun);
    }
    let history = History::load(&order.id)?
        .ok_or_else(|| ApiError::internal("the order was begun but has no history"))?;
    if resumed {
        let first = history.order()?;
        if (&first.user_id, &first.items) != (&order.user_id, &order.items) {
            return Err(ApiError::unprocessable(
                "this Idempotency-Key placed another order; use a new key for a new order",
            ));
        }
    }
    // Settles a new order; for a resumed one, finishes it if it is still
    // pending (the charge is idempotent per order) or answers how it ended.
    let order = saga::pay_or_compensate(history, false)?;
    let status = if order.status == Status::Pending { 202 } else { 201 };
    Ok(Response::json(status, &shown(order)))
}

/// The `_begin` step: start the order's history with `created` and
/// schedule its timeout.
fn begin(request: &Request) -> Result<Response, ApiError> {
    let order: Order = request.json()?;
    if !id::is_url_safe(&order.id) || !id::is_url_safe(&order.user_id) {
        return Err(ApiError::bad_request("an order and its user need ids"));
    }
    let Some(history) = History::create(&order)? else {
        return Err(ApiError::conflict("order already exists"));
    };
    kv::set(&format!("by-user/{}/{}", order.user_id, order.id), b"")?;
    publish_json_delayed(
        "order.timeout",
        &Timeout { order_id: order.id.clone() },
        SAGA_TIMEOUT_MS,
    )?;
    Ok(Response::json(201, &history.order()?))
}

/// The most bytes an order's items may take as JSON. Its history stores
/// them twice (in `created` and in the outcome) and its snapshot once, and
/// a value may not exceed 1 MiB: an order far below that always fits, so
/// no order can be charged and then fail to be recorded.
pub const MAX_ITEMS_BYTES: usize = 64 * 1024;

/// Checks the items and returns the total in cents.
fn validate(input: &NewOrder) -> Result<i64, ApiError> {
    if input.items.is_empty() {
        return Err(ApiError::bad_request("an order needs at least one item"));
    }
    let size = kv::to_json(&input.items).len();
    if size > MAX_ITEMS_BYTES {
        return Err(ApiError::new(
            413,
            format!("the items take {size} bytes; an order's items may take {MAX_ITEMS_BYTES}"),
        ));
    }
    let mut amount: i64 = 0;
    for (i, item) in input.items.iter().enumerate() {
        if item.sku.trim().is_empty() {
            return Err(ApiError::bad_request(format!("items[{i}].sku is required")));
        }
        if item.quantity <= 0 {
            return Err(ApiError::bad_request(format!("items[{i}].quantity must be positive")));
        }
        if item.price <= 0 {
            return Err(ApiError::bad_request(format!("items[{i}].price must be positive")));
        }
        amount = item
            .quantity
            .checked_mul(item.price)
            .and_then(|line| amount.checked_add(line))
            .ok_or_else(|| ApiError::bad_request("order amount is too large"))?;
    }
    Ok(amount)
}

/// What the order service reads of a user: the whole record, `email`
/// included, is shown only to whoever may act for its owner.
#[derive(Deserialize)]
struct UserView {
    email: Option<String>,
    owner: Option<String>,
}

/// Check that user `user_id` exists and that `actor` may order for it; the
/// subject it belongs to. Someone else's user is as unknown as none (422),
/// so a client cannot learn which ids exist.
fn ensure_user_is_theirs(user_id: &str, actor: &Actor) -> Result<Option<String>, ApiError> {
    let unknown = || ApiError::unprocessable(format!("user {user_id:?} does not exist"));
    // An id that could not have been issued cannot name a user; it would also
    // not be safe to splice into a path.
    if !id::is_url_safe(user_id) {
        return Err(unknown());
    }
    // The call carries the actor's identity: the user service shows the
    // whole record only if it is theirs (or they are an admin).
    let answer = call("user", &Request::empty("GET", &format!("/users/{user_id}")));
    let outage = match answer {
        Ok(response) if response.status == 200 => {
            let view: UserView = response.parse().map_err(|e| {
                ApiError::unavailable(format!("user service answered garbage: {e}"))
            })?;
            return match view.email {
                Some(_) if actor.may_touch(view.owner.as_deref()) => Ok(view.owner),
                _ => Err(unknown()),
            };
        }
        Ok(response) if response.status == 404 => return Err(unknown()),
        Ok(response) => format!("answered {}", response.status),
        Err(error) => describe(&error),
    };
    // The user service cannot answer: the read model built from
    // `user.created` knows every user registered before now, and whose.
    if let Some(known) = kv::get_json::<UserView>(&user_key(user_id))? {
        if !actor.may_touch(known.owner.as_deref()) {
            return Err(unknown());
        }
        pitstop_sdk::log::info(&format!("user service {outage}; user {user_id} from read model"));
        return Ok(known.owner);
    }
    Err(ApiError::unavailable(format!("user service cannot answer ({outage}) and user is unknown")))
}

fn user_key(id: &str) -> String {
    format!("user/{id}")
}

/// Who `order` belongs to: its owner, or for an order placed before owners
/// were kept, whoever the read model says its user belongs to.
pub(crate) fn owner_of(order: &Order) -> Result<Option<String>, ApiError> {
    if order.owner.is_some() {
        return Ok(order.owner.clone());
    }
    Ok(kv::get_json::<UserView>(&user_key(&order.user_id))?.and_then(|user| user.owner))
}

/// `order` as a client sees it: whose it is stays inside the service.
fn shown(order: Order) -> Order {
    Order { owner: None, ..order }
}

/// `user.created`: keep the user in the read model. Storing it twice (a
/// redelivery) stores the same thing.
fn remember_user(event: &Event) -> Result<(), String> {
    #[derive(Deserialize, Serialize)]
    struct User {
        id: String,
    }
    let user: User = event.json()?;
    if !id::is_url_safe(&user.id) {
        return Err(format!("event {}: user id {:?} is not an id", event.id, user.id));
    }
    kv::set(&user_key(&user.id), &event.payload).map_err(|e| ApiError::from(e).message)
}

fn list(request: &Request) -> Result<Response, ApiError> {
    let actor = Actor::of(request, TRUSTED);
    let user_id = request
        .query_param("user_id")
        .filter(|id| id::is_url_safe(id))
        .ok_or_else(|| ApiError::bad_request("give the user as ?user_id=<id>"))?;
    let prefix = format!("by-user/{user_id}/");
    let mut orders = Vec::new();
    for key in kv::all_keys(&prefix)? {
        if let Some(history) = History::load(&key[prefix.len()..])? {
            let order = history.order()?;
            if actor.may_touch(owner_of(&order)?.as_deref()) {
                orders.push(shown(order));
            }
        }
    }
    Ok(Response::json(200, &serde_json::json!({ "orders": orders })))
}

/// Order `id`'s history and the order it folds to, if `request` may read
/// it: someone else's order is as missing as none.
fn found(request: &Request, id: &str) -> Result<(History, Order), ApiError> {
    let not_found = || ApiError::not_found("order not found");
    let history = History::load(id)?.ok_or_else(not_found)?;
    let order = history.order()?;
    if !Actor::of(request, TRUSTED).may_touch(owner_of(&order)?.as_deref()) {
        return Err(not_found());
    }
    Ok((history, order))
}

fn get(request: &Request, id: &str) -> Result<Response, ApiError> {
    Ok(Response::json(200, &shown(found(request, id)?.1)))
}

fn events(request: &Request, id: &str) -> Result<Response, ApiError> {
    let (history, _) = found(request, id)?;
    Ok(Response::json(200, &serde_json::json!({ "id": id, "events": history.events })))
}

/// Run as wasm by `pitstop test-runner`: `cargo test --target wasm32-wasip2`.
/// The user and payment services are stubs; each test sets the ones it needs.
#[cfg(test)]
mod tests {
    use pitstop_sdk::services::CallError;
    use pitstop_sdk::testing;
    use serde_json::{Value, json};

    use super::history::{Fact, Recorded};
    use super::*;

    fn pending(amount: i64) -> Order {
        Order {
            id: id::new_id("ord"),
            user_id: "usr_1".into(),
            items: vec![Item { sku: "a".into(), quantity: 1, price: amount }],
            amount,
            status: Status::Pending,
            payment_id: None,
            failure_reason: None,
            owner: Some("alice".into()),
        }
    }

    /// `request` as alice sends it.
    fn as_alice(request: Request) -> Request {
        testing::as_subject(request, "alice", &[])
    }

    /// A `PENDING` order begun by the `_begin` step, as `place` would.
    fn begun(amount: i64) -> Order {
        let order = pending(amount);
        let mut request = Request::with_json("POST", BEGIN_PATH, &order);
        request.headers.push(pitstop_sdk::Header {
            name: pitstop_sdk::headers::CALLER.into(),
            value: "order".into(),
        });
        assert_eq!(respond(route(&request)).status, 201);
        order
    }

    fn history(id: &str) -> History {
        History::load(id).unwrap().expect("a history")
    }

    fn stored(id: &str) -> Order {
        history(id).order().unwrap()
    }

    /// The types of `id`'s history, oldest first.
    fn kinds(id: &str) -> Vec<&'static str> {
        history(id).events.iter().map(|r| r.fact.kind()).collect()
    }

    /// Run the payment step for `order` as the request placing it would.
    fn pay(order: &Order) -> Order {
        saga::pay_or_compensate(history(&order.id), false).unwrap()
    }

    fn reset() {
        testing::clear_stubs();
        testing::clear_published();
    }

    /// The payment service answers a charge with a payment `id` in `status`.
    fn payment_answers(id: &str, status: &str) {
        testing::stub_json(
            "payment",
            "POST",
            "/payments",
            201,
            &json!({"id": id, "status": status}),
        );
    }

    /// The payment service answers a void (the compensation) with `answer`.
    fn void_answers(answer: Value) {
        testing::stub_json("payment", "POST", "/payments/void", 200, &answer);
    }

    #[test]
    fn beginning_records_created_and_schedules_the_timeout() {
        reset();
        let order = begun(100);
        assert_eq!(stored(&order.id).status, Status::Pending);
        assert_eq!(kinds(&order.id), ["created"]);
        let published = testing::published();
        let topics: Vec<&str> = published.iter().map(|e| e.topic.as_str()).collect();
        assert_eq!(topics, ["order.created", "order.timeout"]);
        assert_eq!(published[1].delay_ms, SAGA_TIMEOUT_MS);
    }

    #[test]
    fn begin_is_internal() {
        let request = Request::with_json("POST", BEGIN_PATH, &json!({}));
        assert_eq!(respond(route(&request)).status, 405, "a client cannot call _begin");
    }

    #[test]
    fn a_completed_payment_confirms_and_announces() {
        reset();
        payment_answers("pay_1", "COMPLETED");
        let order = pay(&begun(100));
        assert_eq!(order.status, Status::Confirmed);
        assert_eq!(order.payment_id.as_deref(), Some("pay_1"));
        assert_eq!(stored(&order.id), order, "the answer is what the history says");
        assert_eq!(kinds(&order.id), ["created", "payment-requested", "confirmed"]);
        assert_eq!(
            testing::published_topics(),
            ["order.created", "order.timeout", "order.payment-requested", "order.confirmed"]
        );
        let calls = testing::calls_to("payment");
        assert_eq!(calls.len(), 1, "one charge, no void");
        assert_eq!((calls[0].method.as_str(), calls[0].path.as_str()), ("POST", "/payments"));
    }

    #[test]
    fn the_published_events_are_the_history() {
        reset();
        payment_answers("pay_h", "COMPLETED");
        let order = pay(&begun(100));
        let published: Vec<Recorded> = testing::published()
            .into_iter()
            .filter(|e| e.topic != "order.timeout")
            .map(|e| {
                let recorded: Recorded = serde_json::from_slice(&e.payload).unwrap();
                assert_eq!(e.topic, format!("order.{}", recorded.fact.kind()));
                recorded
            })
            .collect();
        let events = history(&order.id).events;
        assert_eq!(published, events);
        let seqs: Vec<u32> = events.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        assert!(events.iter().all(|r| r.at > 0 && r.id == order.id));
        // What subscribers of order.confirmed always had: the whole order.
        let confirmed: Value = testing::published_json("order.confirmed").remove(0);
        for field in ["user_id", "items", "amount", "status", "payment_id"] {
            assert_eq!(confirmed[field], serde_json::to_value(&order).unwrap()[field], "{field}");
        }
    }

    #[test]
    fn a_declined_payment_fails_the_order_without_compensation() {
        reset();
        payment_answers("pay_2", "DECLINED");
        let order = pay(&begun(100));
        assert_eq!(order.status, Status::Failed);
        assert_eq!(order.failure_reason.as_deref(), Some("payment declined"));
        assert_eq!(order.payment_id.as_deref(), Some("pay_2"));
        assert_eq!(kinds(&order.id), ["created", "payment-requested", "failed"]);
    }

    #[test]
    fn a_payment_without_answer_is_voided_then_the_order_fails() {
        reset();
        testing::stub_failure("payment", "POST", "/payments", CallError::Trapped("boom".into()));
        void_answers(json!({"order_id": "x", "status": "VOID"}));
        let order = pay(&begun(100));
        assert_eq!(order.status, Status::Failed);
        assert!(order.failure_reason.unwrap().contains("trapped: boom"));
        assert_eq!(order.payment_id, None);
        let paths: Vec<String> = testing::calls_to("payment").into_iter().map(|c| c.path).collect();
        assert_eq!(paths, ["/payments", "/payments/void"], "compensation after the failed step");
        assert_eq!(kinds(&order.id), ["created", "payment-requested", "compensated", "failed"]);
        let compensated = &history(&order.id).events[2].fact;
        assert_eq!(
            compensated,
            &Fact::Compensated { payment_id: None, payment_status: "VOID".into() }
        );
    }

    #[test]
    fn a_completed_payment_without_an_id_is_compensated() {
        reset();
        testing::stub_json("payment", "POST", "/payments", 201, &json!({"status": "COMPLETED"}));
        void_answers(json!({"id": "pay_5", "status": "REFUNDED"}));
        let order = pay(&begun(100));
        assert_eq!(order.status, Status::Failed);
        assert_eq!(order.payment_id.as_deref(), Some("pay_5"));
        assert!(order.failure_reason.unwrap().contains("without id"));
    }

    #[test]
    fn when_compensation_fails_too_the_order_stays_pending() {
        reset();
        testing::stub_failure("payment", "POST", "/payments", CallError::Timeout);
        let order = pay(&begun(100));
        assert_eq!(order.status, Status::Pending, "left for order.timeout to finish");
        assert_eq!(stored(&order.id).status, Status::Pending);
        assert_eq!(kinds(&order.id), ["created", "payment-requested"], "the request is recorded");
        let topics = testing::published_topics();
        assert!(
            !topics.iter().any(|t| t == "order.failed" || t == "order.confirmed"),
            "{topics:?}"
        );

        // The timeout's first delivery asks again: attempt 2.
        payment_answers("pay_6", "COMPLETED");
        saga::finish_stale(&order.id, 1).unwrap();
        let events = history(&order.id).events;
        assert_eq!(events[2].fact, Fact::PaymentRequested { amount: 100, attempt: 2 });
        assert_eq!(stored(&order.id).status, Status::Confirmed);
    }

    #[test]
    fn the_timeout_retries_only_compensate() {
        reset();
        void_answers(json!({"id": "pay_9", "status": "REFUNDED"}));
        let order = begun(100);
        saga::finish_stale(&order.id, 2).unwrap();
        let after = stored(&order.id);
        assert_eq!(after.status, Status::Failed);
        assert_eq!(after.failure_reason.as_deref(), Some("saga timed out"));
        assert_eq!(after.payment_id.as_deref(), Some("pay_9"));
        assert_eq!(kinds(&order.id), ["created", "compensated", "failed"]);
        let paths: Vec<String> = testing::calls_to("payment").into_iter().map(|c| c.path).collect();
        assert!(!paths.contains(&"/payments".to_string()), "no charge on a retry: {paths:?}");
    }

    #[test]
    fn the_timeout_leaves_finished_orders_alone() {
        reset();
        payment_answers("pay_3", "COMPLETED");
        let order = pay(&begun(100));
        testing::clear_published();
        saga::finish_stale(&order.id, 1).unwrap();
        assert_eq!(stored(&order.id).status, Status::Confirmed);
        assert_eq!(kinds(&order.id).len(), 3, "nothing appended");
        assert!(testing::published().is_empty());
    }

    #[test]
    fn of_two_appends_from_one_read_only_the_first_lands() {
        reset();
        let order = begun(100);
        let (first, second) = (history(&order.id), history(&order.id));
        testing::clear_published();
        let confirmed = Fact::confirmed(&order, Some("pay_a".into()));
        assert!(first.append(vec![confirmed]).unwrap().is_some());
        let failed = Fact::failed(&order, "too late".into(), None);
        assert!(second.append(vec![failed]).unwrap().is_none(), "the history moved");
        assert_eq!(stored(&order.id).status, Status::Confirmed);
        assert_eq!(testing::published_topics(), ["order.confirmed"], "the loser published nothing");
    }

    #[test]
    fn an_order_stored_before_histories_reads_as_the_history_it_implies() {
        reset();
        let mut confirmed = pending(700);
        confirmed.status = Status::Confirmed;
        confirmed.payment_id = Some("pay_old".into());
        kv::put_json(&format!("order/{}", confirmed.id), &confirmed).unwrap();
        let old = history(&confirmed.id);
        assert_eq!(old.order().unwrap(), confirmed);
        let at: Vec<u64> = old.events.iter().map(|r| r.at).collect();
        assert_eq!(at, [0, 0]);

        // A pending one is finished by its timeout, which writes the history out.
        let old_pending = pending(800);
        kv::put_json(&format!("order/{}", old_pending.id), &old_pending).unwrap();
        payment_answers("pay_old2", "COMPLETED");
        saga::finish_stale(&old_pending.id, 1).unwrap();
        assert_eq!(kinds(&old_pending.id), ["created", "payment-requested", "confirmed"]);
        assert!(kv::get(&format!("events/{}", old_pending.id)).unwrap().is_some());
    }

    #[test]
    fn the_snapshot_older_versions_read_follows_the_history() {
        reset();
        payment_answers("pay_s", "COMPLETED");
        let order = pay(&begun(100));
        let snapshot: Order = kv::get_json(&format!("order/{}", order.id)).unwrap().unwrap();
        assert_eq!(snapshot, order);
    }

    #[test]
    fn an_order_an_older_version_finished_reads_finished() {
        reset();
        let order = begun(100);
        // An older version's timeout confirms it: it swaps the snapshot only.
        let mut finished = order.clone();
        finished.status = Status::Confirmed;
        finished.payment_id = Some("pay_old".into());
        let key = format!("order/{}", order.id);
        let before = kv::get(&key).unwrap();
        assert!(
            kv::compare_and_swap(&key, before.as_deref(), Some(&kv::to_json(&finished))).unwrap()
        );

        assert_eq!(stored(&order.id), finished);
        let implied = history(&order.id).events.pop().unwrap();
        assert_eq!((implied.seq, implied.at, implied.fact.kind()), (2, 0, "confirmed"));
        testing::clear_published();
        saga::finish_stale(&order.id, 1).unwrap();
        assert!(testing::published().is_empty(), "nothing more to do");
        assert!(testing::calls_to("payment").is_empty(), "no second charge");
    }

    #[test]
    fn an_append_loses_to_an_older_version_that_moved_the_order_first() {
        reset();
        let order = begun(100);
        let ours = history(&order.id);
        let key = format!("order/{}", order.id);
        let mut failed = order.clone();
        failed.status = Status::Failed;
        failed.failure_reason = Some("saga timed out".into());
        kv::put_json(&key, &failed).unwrap();
        let confirmed = Fact::confirmed(&order, Some("pay_late".into()));
        assert!(ours.append(vec![confirmed]).unwrap().is_none(), "the snapshot moved");
        assert_eq!(stored(&order.id).status, Status::Failed);
    }

    #[test]
    fn oversized_items_are_refused_before_anything_is_called() {
        reset();
        let sku = "x".repeat(MAX_ITEMS_BYTES);
        let request = Request::with_json(
            "POST",
            "/orders",
            &json!({"user_id": "usr_1", "items": [{"sku": sku, "quantity": 1, "price": 1}]}),
        );
        let answer = respond(route(&as_alice(request)));
        assert_eq!(answer.status, 413);
        assert!(testing::calls_to("user").is_empty());
    }

    #[test]
    fn a_corrupt_history_is_an_error_not_an_order() {
        let headless = json!([{"id": "ord_bad", "seq": 1, "at": 0, "type": "confirmed",
            "payment_id": "p", "user_id": "u", "items": [], "amount": 1, "status": "CONFIRMED"}]);
        kv::put_json("events/ord_bad", &headless).unwrap();
        assert_eq!(respond(route(&Request::empty("GET", "/orders/ord_bad"))).status, 500);
        kv::set("events/ord_worse", b"{").unwrap();
        assert_eq!(respond(route(&Request::empty("GET", "/orders/ord_worse"))).status, 500);
    }

    #[test]
    fn the_history_is_served_and_every_fact_has_its_topic() {
        reset();
        payment_answers("pay_7", "COMPLETED");
        let order = pay(&begun(100));
        let path = format!("/orders/{}/events", order.id);
        let answer = respond(route(&as_alice(Request::empty("GET", &path))));
        assert_eq!(answer.status, 200);
        let body: Value = answer.parse().unwrap();
        assert_eq!(body["id"], order.id.as_str());
        let types: Vec<&str> = body["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["created", "payment-requested", "confirmed"]);
        let missing = respond(route(&Request::empty("GET", "/orders/ord_none/events")));
        assert_eq!(missing.status, 404);
        let wrong = respond(route(&Request::empty("POST", "/orders/ord_none/events")));
        assert_eq!(wrong.status, 405);

        // Each fact's type is the topic it is published on, and declared.
        let facts = [
            Fact::Created { user_id: "u".into(), items: vec![], amount: 1, owner: None },
            Fact::PaymentRequested { amount: 1, attempt: 1 },
            Fact::confirmed(&order, Some("p".into())),
            Fact::failed(&order, "r".into(), None),
            Fact::Compensated { payment_id: None, payment_status: "VOID".into() },
        ];
        let topics: Vec<String> = facts.iter().map(|f| format!("order.{}", f.kind())).collect();
        assert_eq!(topics, OrderService::PUBLISHES[..5]);
        for fact in &facts {
            assert_eq!(serde_json::to_value(fact).unwrap()["type"], fact.kind());
        }
    }

    #[test]
    fn the_read_model_answers_when_the_user_service_cannot() {
        reset();
        testing::stub_failure(
            "user",
            "GET",
            "/users/",
            CallError::Unavailable("circuit open".into()),
        );
        let alice = Actor::Subject("alice".into());
        assert_eq!(ensure_user_is_theirs("usr_known", &alice).unwrap_err().status, 503);
        let event = Event {
            id: "evt_1".into(),
            topic: "user.created".into(),
            payload: serde_json::to_vec(
                &json!({"id": "usr_known", "name": "K", "email": "k@x.io", "owner": "alice"}),
            )
            .unwrap(),
            attempt: 1,
            source: "user".into(),
            published_at: 0,
        };
        OrderService::handle_event(event.clone()).unwrap();
        // A redelivery is harmless: one entry, the same user.
        OrderService::handle_event(event.clone()).unwrap();
        assert_eq!(kv::all_keys("user/").unwrap(), ["user/usr_known"]);
        assert_eq!(kv::get("user/usr_known").unwrap(), Some(event.payload));
        assert_eq!(ensure_user_is_theirs("usr_known", &alice).unwrap(), Some("alice".into()));
        // The read model knows whose the user is, too.
        let mallory = Actor::Subject("mallory".into());
        assert_eq!(ensure_user_is_theirs("usr_known", &mallory).unwrap_err().status, 422);
        testing::stub_json("user", "GET", "/users/", 404, &json!({"error": "user not found"}));
        assert_eq!(
            ensure_user_is_theirs("usr_known", &alice).unwrap_err().status,
            422,
            "the service decides when it answers"
        );
    }

    #[test]
    fn orders_are_validated_before_anything_is_called() {
        reset();
        for items in [
            json!([]),
            json!([{"sku": "a", "quantity": 0, "price": 1}]),
            json!([{"sku": "a", "quantity": 1, "price": -1}]),
            json!([{"sku": " ", "quantity": 1, "price": 1}]),
            json!([{"sku": "a", "quantity": i64::MAX, "price": 2}]),
        ] {
            let request =
                Request::with_json("POST", "/orders", &json!({"user_id": "usr_1", "items": items}));
            assert_eq!(respond(route(&as_alice(request))).status, 400, "{items}");
        }
        assert!(testing::calls_to("user").is_empty());
        let unknown = Request::with_json(
            "POST",
            "/orders",
            &json!({"user_id": "../x", "items": [{"sku": "a", "quantity": 1, "price": 1}]}),
        );
        assert_eq!(respond(route(&as_alice(unknown))).status, 422);
    }

    /// A one-item order for `user_id`, as `request` would place it.
    fn order_for(user_id: &str) -> Request {
        let items = json!([{"sku": "a", "quantity": 1, "price": 100}]);
        Request::with_json("POST", "/orders", &json!({"user_id": user_id, "items": items}))
    }

    #[test]
    fn an_order_is_placed_only_by_a_subject_for_their_own_user() {
        reset();
        assert_eq!(respond(route(&order_for("usr_1"))).status, 401, "anonymous");
        // The user service shows mallory alice's user as anyone sees it.
        testing::stub_json("user", "GET", "/users/", 200, &json!({"id": "usr_a", "name": "A"}));
        let theirs = testing::as_subject(order_for("usr_a"), "mallory", &[]);
        assert_eq!(respond(route(&theirs)).status, 422, "as unknown as no user");
        assert!(testing::calls_to("payment").is_empty(), "nothing charged");
        assert!(testing::calls_to("order").is_empty(), "nothing begun");
    }

    #[test]
    fn an_order_is_read_by_its_owner_and_the_admin_only() {
        reset();
        payment_answers("pay_own", "COMPLETED");
        let order = pay(&begun(100));
        let read = |request: Request| respond(route(&request)).status;
        let paths = [format!("/orders/{}", order.id), format!("/orders/{}/events", order.id)];
        for path in &paths {
            assert_eq!(read(as_alice(Request::empty("GET", path))), 200, "{path}");
            let admin = testing::as_subject(Request::empty("GET", path), "root", &["admin"]);
            assert_eq!(read(admin), 200, "{path}");
            let mallory = testing::as_subject(Request::empty("GET", path), "mallory", &[]);
            assert_eq!(read(mallory), 404, "{path}");
            assert_eq!(read(Request::empty("GET", path)), 404, "anonymous {path}");
        }
        let list = |request: Request| {
            let request = Request { query: "user_id=usr_1".into(), ..request };
            let orders: Value = respond(route(&request)).parse().unwrap();
            orders["orders"].as_array().unwrap().len()
        };
        let all = list(testing::as_subject(Request::empty("GET", "/orders"), "root", &["admin"]));
        assert!(all >= 1);
        assert_eq!(list(as_alice(Request::empty("GET", "/orders"))), all, "all of them alice's");
        let mallory = testing::as_subject(Request::empty("GET", "/orders"), "mallory", &[]);
        assert_eq!(list(mallory), 0);
        assert_eq!(list(Request::empty("GET", "/orders")), 0);
    }
}
