//! The payment service: idempotent charges and refunds.
//!
//! - `POST /payments {"order_id","user_id","amount"}` -> 201 with the payment,
//!   status `COMPLETED`, or `DECLINED` when `amount` exceeds [`APPROVAL_LIMIT`].
//!   `amount <= 0` -> 400. A repeat for the same `order_id` returns the same
//!   payment with 200 and charges nothing; a request for an already paid order
//!   with a different user or amount is not a repeat and gets 409.
//! - `GET /payments/{id}` -> 200 or 404.
//! - `POST /payments/{id}/refund` -> 200 with status `REFUNDED`; refunding a
//!   refunded or declined payment -> 409.
//!
//! Keyspace layout: `payment/<id>` holds the record; `by-order/<order_id>`
//! holds the id of that order's payment. The index is claimed with
//! compare-and-swap *after* the record is written, so whoever loses a race
//! finds the winner's record complete.

use pitstop_sdk::{ApiError, Handler, Request, Response, id, kv, respond};
use serde::{Deserialize, Serialize};

/// Charges above this many cents (1,000.00) are declined. A stand-in for a
/// card network's risk check, documented so clients and tests can rely on it.
pub const APPROVAL_LIMIT: i64 = 100_000;

#[derive(Deserialize)]
struct NewPayment {
    order_id: String,
    user_id: String,
    amount: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "UPPERCASE")]
enum Status {
    Completed,
    Declined,
    Refunded,
}

#[derive(Serialize, Deserialize, Clone)]
struct Payment {
    id: String,
    order_id: String,
    user_id: String,
    amount: i64,
    status: Status,
}

struct PaymentService;

impl Handler for PaymentService {
    fn handle(request: Request) -> Response {
        respond(route(&request))
    }
}

pitstop_sdk::export!(PaymentService);

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", ["payments"]) => charge(request),
        ("GET", ["payments", id]) => get(id),
        ("POST", ["payments", id, "refund"]) => refund(id),
        (_, ["payments"] | ["payments", _] | ["payments", _, "refund"]) => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::not_found("no such route")),
    }
}

fn charge(request: &Request) -> Result<Response, ApiError> {
    let input: NewPayment = request.json()?;
    if input.order_id.trim().is_empty() {
        return Err(ApiError::bad_request("order_id is required"));
    }
    if input.user_id.trim().is_empty() {
        return Err(ApiError::bad_request("user_id is required"));
    }
    if input.amount <= 0 {
        return Err(ApiError::bad_request("amount must be a positive number of cents"));
    }

    let index_key = format!("by-order/{}", input.order_id);
    if let Some(existing) = payment_for_order(&index_key)? {
        return repeat(existing, &input);
    }

    let status = if input.amount > APPROVAL_LIMIT { Status::Declined } else { Status::Completed };
    let payment = Payment {
        id: id::new_id("pay"),
        order_id: input.order_id.clone(),
        user_id: input.user_id.clone(),
        amount: input.amount,
        status,
    };
    let record_key = format!("payment/{}", payment.id);
    kv::put_json(&record_key, &payment)?;
    if !kv::compare_and_swap(&index_key, None, Some(payment.id.as_bytes()))? {
        // A concurrent request for the same order won; ours was never visible.
        kv::delete(&record_key)?;
        let winner = payment_for_order(&index_key)?
            .ok_or_else(|| ApiError::internal("payment index points at a missing record"))?;
        return repeat(winner, &input);
    }
    pitstop_sdk::log::info(&format!(
        "payment {} for order {}: {:?}",
        payment.id, payment.order_id, payment.status
    ));
    Ok(Response::json(201, &payment))
}

/// The answer to a second charge for an order that already has a payment.
fn repeat(existing: Payment, input: &NewPayment) -> Result<Response, ApiError> {
    if existing.amount != input.amount || existing.user_id != input.user_id {
        return Err(ApiError::conflict(format!(
            "order {} already has payment {} with a different user or amount",
            existing.order_id, existing.id
        )));
    }
    Ok(Response::json(200, &existing))
}

fn payment_for_order(index_key: &str) -> Result<Option<Payment>, ApiError> {
    let Some(id) = kv::get(index_key)? else {
        return Ok(None);
    };
    let id = String::from_utf8(id).map_err(|_| ApiError::internal("corrupt payment index"))?;
    kv::get_json(&format!("payment/{id}"))
}

fn get(id: &str) -> Result<Response, ApiError> {
    match kv::get_json::<Payment>(&format!("payment/{id}"))? {
        Some(payment) => Ok(Response::json(200, &payment)),
        None => Err(ApiError::not_found("payment not found")),
    }
}

fn refund(id: &str) -> Result<Response, ApiError> {
    let key = format!("payment/{id}");
    let current = kv::get(&key)?.ok_or_else(|| ApiError::not_found("payment not found"))?;
    let payment: Payment = serde_json::from_slice(&current)
        .map_err(|e| ApiError::internal(format!("stored payment is corrupt: {e}")))?;
    match payment.status {
        Status::Completed => {}
        Status::Refunded => return Err(ApiError::conflict("payment is already refunded")),
        Status::Declined => {
            return Err(ApiError::conflict("a declined payment cannot be refunded"));
        }
    }
    let refunded = Payment { status: Status::Refunded, ..payment };
    // Compare-and-swap against the bytes we read: of two concurrent refunds
    // exactly one succeeds, the other sees 409 instead of refunding twice.
    if !kv::compare_and_swap(&key, Some(&current), Some(&kv::to_json(&refunded)))? {
        return Err(ApiError::conflict("payment changed while refunding; it is already refunded"));
    }
    pitstop_sdk::log::info(&format!("refunded payment {id}"));
    Ok(Response::json(200, &refunded))
}
