//! The order service: places orders, checking the user and paying through
//! the other services via the platform's `services` import (never a socket).
//!
//! - `POST /orders {"user_id","items":[{"sku","quantity","price"}]}` -> 201 with
//!   `{"id","user_id","items","amount","status","payment_id"}`; `amount` is the
//!   sum of quantity x price in cents. Status `CONFIRMED` when the payment
//!   completed, `FAILED` when it was declined or could not be made (then
//!   `failure_reason` says why). 400 on malformed JSON, no items, a
//!   non-positive quantity or price, or an amount that overflows; 422 when the
//!   user does not exist; 503 when the user service cannot answer.
//! - `GET /orders/{id}` -> 200 or 404.
//!
//! Keyspace layout: `order/<id>` holds the order. It is written as `PENDING`
//! before payment is attempted, so a crash mid-way leaves a record to resume
//! from rather than a charge nobody knows about.

use pitstop_sdk::services::{call, describe};
use pitstop_sdk::{ApiError, Handler, Request, Response, id, kv, respond};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct NewOrder {
    user_id: String,
    items: Vec<Item>,
}

#[derive(Serialize, Deserialize, Clone)]
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

#[derive(Serialize, Deserialize)]
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
    id: String,
    status: String,
}

struct OrderService;

impl Handler for OrderService {
    fn handle(request: Request) -> Response {
        respond(route(&request))
    }
}

pitstop_sdk::export!(OrderService);

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", ["orders"]) => place(request),
        ("GET", ["orders", id]) => get(id),
        (_, ["orders"] | ["orders", _]) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn place(request: &Request) -> Result<Response, ApiError> {
    let input: NewOrder = request.json()?;
    let amount = validate(&input)?;
    ensure_user_exists(&input.user_id)?;

    let mut order = Order {
        id: id::new_id("ord"),
        user_id: input.user_id,
        items: input.items,
        amount,
        status: Status::Pending,
        payment_id: None,
        failure_reason: None,
    };
    let key = format!("order/{}", order.id);
    kv::put_json(&key, &order)?;

    match pay(&order) {
        Ok(payment) => {
            order.status =
                if payment.status == "COMPLETED" { Status::Confirmed } else { Status::Failed };
            if order.status == Status::Failed {
                order.failure_reason = Some(format!("payment {}", payment.status.to_lowercase()));
            }
            order.payment_id = Some(payment.id);
        }
        Err(reason) => {
            order.status = Status::Failed;
            order.failure_reason = Some(reason);
        }
    }
    kv::put_json(&key, &order)?;
    pitstop_sdk::log::info(&format!("order {} is {:?}", order.id, order.status));
    Ok(Response::json(201, &order))
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
    let response =
        call("user", &Request::empty("GET", &format!("/users/{user_id}"))).map_err(|e| {
            ApiError::unavailable(format!("user service cannot answer: {}", describe(&e)))
        })?;
    match response.status {
        200 => Ok(()),
        404 => Err(ApiError::unprocessable(format!("user {user_id:?} does not exist"))),
        status => Err(ApiError::unavailable(format!("user service answered {status}"))),
    }
}

/// Charge the order; `Err` carries why no payment was made.
fn pay(order: &Order) -> Result<Payment, String> {
    let body = serde_json::json!({
        "order_id": order.id,
        "user_id": order.user_id,
        "amount": order.amount,
    });
    let response = call("payment", &Request::with_json("POST", "/payments", &body))
        .map_err(|e| format!("payment service cannot answer: {}", describe(&e)))?;
    if !matches!(response.status, 200 | 201) {
        return Err(format!("payment service answered {}", response.status));
    }
    response.parse().map_err(|e| format!("payment service answered garbage: {e}"))
}

fn get(id: &str) -> Result<Response, ApiError> {
    match kv::get_json::<Order>(&format!("order/{id}"))? {
        Some(order) => Ok(Response::json(200, &order)),
        None => Err(ApiError::not_found("order not found")),
    }
}
