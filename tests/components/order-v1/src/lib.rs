//! The order service as it was before orders were kept as event histories
//! (components/order at commit 1bb83ea, its wasm tests left out): each
//! order one record under `order/<id>`. Deployed as a version of `order`
//! by tests/all/order_versions.rs, to check that the current service and
//! this one share the same orders across a swap and a rollback.
//!
//! Its original documentation follows.
//!
//! The order service: places orders as a saga over the user and payment
//! services, through the platform's `services` import (never a socket) and
//! its message bus. The saga's states and transitions are in README.md.
//!
//! - `POST /orders {"user_id","items":[{"sku","quantity","price"}]}` -> 201 with
//!   `{"id","user_id","items","amount","status","payment_id"}`; `amount` is the
//!   sum of quantity x price in cents. Status `CONFIRMED` when the payment
//!   completed, `FAILED` when it was declined or could not be made (then
//!   `failure_reason` says why, and any payment is refunded). 202 with status
//!   `PENDING` when the outcome is not known yet: the saga then finishes on
//!   its own within [`SAGA_TIMEOUT_MS`] (and `GET` shows the outcome). 400 on
//!   malformed JSON, no items, a non-positive quantity or price, or an amount
//!   that overflows; 422 when the user does not exist; 503 when the user
//!   service cannot answer and the user is not in the read model either.
//! - `GET /orders/{id}` -> 200 or 404.
//! - `GET /orders?user_id={id}` -> 200 `{"orders":[...]}`, every order of that
//!   user, `PENDING` ones included; 400 without `user_id`.
//!
//! Events: subscribes to `user.created` (kept as a read model of users, the
//! fallback when the user service cannot answer) and to its own
//! `order.timeout`; publishes `order.confirmed` and `order.failed` with the
//! order.
//!
//! Keyspace layout: `order/<id>` holds the order; `by-user/<user>/<order>`
//! indexes orders by user; `user/<id>` is the read model of users.

use pitstop_sdk::events::{publish_json, publish_json_delayed};
use pitstop_sdk::services::{CallError, call, describe};
use pitstop_sdk::{ApiError, Event, Events, Handler, Request, Response, id, kv, respond};
use serde::{Deserialize, Serialize};

/// How long after an order is placed its saga is checked and, if it is
/// still `PENDING`, driven to an end. Well above the deadline of a request,
/// so the check normally finds the order finished.
pub const SAGA_TIMEOUT_MS: u64 = 8_000;

/// The internal path that records a new order as `PENDING`.
const BEGIN_PATH: &str = "/orders/_begin";

#[derive(Deserialize)]
struct NewOrder {
    user_id: String,
    items: Vec<Item>,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
struct Item {
    sku: String,
    quantity: i64,
    price: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "UPPERCASE")]
enum Status {
    Pending,
    Confirmed,
    Failed,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct Order {
    id: String,
    user_id: String,
    items: Vec<Item>,
    amount: i64,
    status: Status,
    payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    failure_reason: Option<String>,
}

/// What the payment service answers, as far as the order cares.
#[derive(Deserialize)]
struct Payment {
    #[serde(default)]
    id: Option<String>,
    status: String,
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
    const PUBLISHES: &'static [&'static str] =
        &["order.confirmed", "order.failed", "order.timeout"];
    const SUBSCRIBES: &'static [&'static str] = &["user.created", "order.timeout"];

    fn handle_event(event: Event) -> Result<(), String> {
        match event.topic.as_str() {
            "user.created" => remember_user(&event),
            "order.timeout" => {
                let timeout: Timeout = event.json()?;
                finish_stale(&timeout.order_id, event.attempt).map_err(|e| e.message)
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
        ("GET", ["orders", id]) => get(id),
        (_, ["orders"] | ["orders", _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn order_key(id: &str) -> String {
    format!("order/{id}")
}

/// Step 0: validate, check the user, record the order as `PENDING` in its
/// own committed invocation, then run the payment step.
fn place(request: &Request) -> Result<Response, ApiError> {
    let input: NewOrder = request.json()?;
    let amount = validate(&input)?;
    ensure_user_exists(&input.user_id)?;

    let order = Order {
        id: id::new_id("ord"),
        user_id: input.user_id,
        items: input.items,
        amount,
        status: Status::Pending,
        payment_id: None,
        failure_reason: None,
    };
    // A call to ourselves commits on its own: from here on the order is
    // durable, and its timeout is scheduled, before any money moves.
    let begun = call("order", &Request::with_json("POST", BEGIN_PATH, &order)).map_err(|e| {
        ApiError::unavailable(format!("could not record the order: {}", describe(&e)))
    })?;
    if begun.status != 201 {
        return Ok(begun);
    }
    let order = pay_or_compensate(order, false)?;
    let status = if order.status == Status::Pending { 202 } else { 201 };
    Ok(Response::json(status, &order))
}

/// The `_begin` step: store the order as `PENDING` and schedule its timeout.
fn begin(request: &Request) -> Result<Response, ApiError> {
    let order: Order = request.json()?;
    let key = order_key(&order.id);
    if !kv::compare_and_swap(&key, None, Some(&kv::to_json(&order)))? {
        return Err(ApiError::conflict("order already exists"));
    }
    kv::set(&format!("by-user/{}/{}", order.user_id, order.id), b"")?;
    publish_json_delayed(
        "order.timeout",
        &Timeout { order_id: order.id.clone() },
        SAGA_TIMEOUT_MS,
    )?;
    Ok(Response::json(201, &order))
}

/// Step 1, payment, and its compensation. With `compensate_only` (a retry of
/// a stale saga) no charge is attempted: the payment is voided.
///
/// Returns the order as it now stands: `CONFIRMED` or `FAILED` when this
/// call moved it out of `PENDING` (or found it already moved), `PENDING`
/// when neither the charge nor the compensation could be made.
fn pay_or_compensate(mut order: Order, compensate_only: bool) -> Result<Order, ApiError> {
    let charged =
        if compensate_only { Charge::Unknown("saga timed out".into()) } else { charge(&order) };
    match charged {
        Charge::Answered(payment) if payment.status == "COMPLETED" => {
            order.status = Status::Confirmed;
            order.payment_id = payment.id;
        }
        Charge::Answered(payment) => {
            order.status = Status::Failed;
            order.failure_reason = Some(format!("payment {}", payment.status.to_lowercase()));
            order.payment_id = payment.id;
        }
        Charge::Refused(reason) => {
            order.status = Status::Failed;
            order.failure_reason = Some(reason);
        }
        // Compensation: undo step 1 (refund, or make sure no charge can
        // still happen), then fail the order.
        Charge::Unknown(reason) => match void(&order) {
            Ok(voided) => {
                order.status = Status::Failed;
                order.failure_reason = Some(reason);
                order.payment_id = voided.id;
            }
            Err(void_error) => {
                pitstop_sdk::log::warn(&format!(
                    "order {}: {reason}; compensation failed too ({void_error}); the saga \
                     timeout will retry",
                    order.id
                ));
                return Ok(order);
            }
        },
    }
    finish(order)
}

/// Move the order from `PENDING` to its final state and announce it. If it
/// is no longer `PENDING` (the timeout got there first), the stored order
/// stands and is returned.
fn finish(order: Order) -> Result<Order, ApiError> {
    let key = order_key(&order.id);
    let current = kv::get(&key)?.ok_or_else(|| ApiError::internal("the order vanished"))?;
    let stored: Order = serde_json::from_slice(&current)
        .map_err(|e| ApiError::internal(format!("stored order is corrupt: {e}")))?;
    if stored.status != Status::Pending {
        return Ok(stored);
    }
    if !kv::compare_and_swap(&key, Some(&current), Some(&kv::to_json(&order)))? {
        return kv::get_json(&key)?.ok_or_else(|| ApiError::internal("the order vanished"));
    }
    let topic = if order.status == Status::Confirmed { "order.confirmed" } else { "order.failed" };
    publish_json(topic, &order)?;
    pitstop_sdk::log::info(&format!("order {} is {:?}", order.id, order.status));
    Ok(order)
}

/// The saga timeout: an order still `PENDING` this long after it was placed
/// lost its request (a crash, a deadline). Resume it: the first delivery
/// tries the charge once more (idempotent per order), later ones only
/// compensate. An `Err` has the bus retry with backoff.
fn finish_stale(order_id: &str, attempt: u32) -> Result<(), ApiError> {
    let Some(order) = kv::get_json::<Order>(&order_key(order_id))? else {
        return Ok(());
    };
    if order.status != Status::Pending {
        return Ok(());
    }
    let order = pay_or_compensate(order, attempt > 1)?;
    if order.status == Status::Pending {
        return Err(ApiError::unavailable(format!(
            "order {order_id}: payment service cannot answer"
        )));
    }
    Ok(())
}

/// Checks the items and returns the total in cents.
fn validate(input: &NewOrder) -> Result<i64, ApiError> {
    if input.items.is_empty() {
        return Err(ApiError::bad_request("an order needs at least one item"));
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

fn ensure_user_exists(user_id: &str) -> Result<(), ApiError> {
    // An id that could not have been issued cannot name a user; it would also
    // not be safe to splice into a path.
    if !id::is_url_safe(user_id) {
        return Err(ApiError::unprocessable(format!("user {user_id:?} does not exist")));
    }
    let unknown = || ApiError::unprocessable(format!("user {user_id:?} does not exist"));
    let answer = call("user", &Request::empty("GET", &format!("/users/{user_id}")));
    let outage = match answer {
        Ok(response) if response.status == 200 => return Ok(()),
        Ok(response) if response.status == 404 => return Err(unknown()),
        Ok(response) => format!("answered {}", response.status),
        Err(error) => describe(&error),
    };
    // The user service cannot answer: the read model built from
    // `user.created` knows every user registered before now.
    if kv::exists(&user_key(user_id))? {
        pitstop_sdk::log::info(&format!("user service {outage}; user {user_id} from read model"));
        return Ok(());
    }
    Err(ApiError::unavailable(format!("user service cannot answer ({outage}) and user is unknown")))
}

fn user_key(id: &str) -> String {
    format!("user/{id}")
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

/// How a charge went.
enum Charge {
    /// The payment service answered with a payment (completed or declined),
    /// or `VOIDED` when an earlier compensation ruled out any payment.
    Answered(Payment),
    /// It refused the request (a 4xx): no payment was made.
    Refused(String),
    /// No answer (error, trap, timeout, 5xx): a payment may or may not exist.
    Unknown(String),
}

/// Charge the order (idempotent per order id).
fn charge(order: &Order) -> Charge {
    let body = serde_json::json!({
        "order_id": order.id,
        "user_id": order.user_id,
        "amount": order.amount,
    });
    let response = match call("payment", &Request::with_json("POST", "/payments", &body)) {
        Ok(response) => response,
        Err(error) => return Charge::Unknown(payment_down(&error)),
    };
    match response.status {
        200 | 201 => match response.parse() {
            Ok(payment) => Charge::Answered(payment),
            Err(e) => Charge::Unknown(format!("payment service answered garbage: {e}")),
        },
        // Voided by an earlier compensation: there is and will be no payment.
        409 => Charge::Answered(Payment { id: None, status: "VOIDED".into() }),
        status @ 400..=499 => Charge::Refused(format!("payment service answered {status}")),
        status => Charge::Unknown(format!("payment service answered {status}")),
    }
}

/// Compensate the payment step: refund the order's payment if there is one,
/// else make sure none can be made any more.
fn void(order: &Order) -> Result<Payment, String> {
    let body = serde_json::json!({ "order_id": order.id });
    let response = call("payment", &Request::with_json("POST", "/payments/void", &body))
        .map_err(|e| payment_down(&e))?;
    if response.status != 200 {
        return Err(format!("payment void answered {}", response.status));
    }
    response.parse().map_err(|e| format!("payment service answered garbage: {e}"))
}

fn payment_down(error: &CallError) -> String {
    format!("payment service cannot answer: {}", describe(error))
}

fn list(request: &Request) -> Result<Response, ApiError> {
    let user_id = request
        .query_param("user_id")
        .filter(|id| id::is_url_safe(id))
        .ok_or_else(|| ApiError::bad_request("give the user as ?user_id=<id>"))?;
    let prefix = format!("by-user/{user_id}/");
    let mut orders = Vec::new();
    for key in kv::all_keys(&prefix)? {
        if let Some(order) = kv::get_json::<Order>(&order_key(&key[prefix.len()..]))? {
            orders.push(order);
        }
    }
    Ok(Response::json(200, &serde_json::json!({ "orders": orders })))
}

fn get(id: &str) -> Result<Response, ApiError> {
    match kv::get_json::<Order>(&order_key(id))? {
        Some(order) => Ok(Response::json(200, &order)),
        None => Err(ApiError::not_found("order not found")),
    }
}
