//! Step 1 of the saga, payment, and its compensation: run by the request
//! placing an order and, if that one did not finish it, by the saga timeout
//! (`order.timeout`). What each did is appended to the order's history, and
//! of the two racing for one order, the one whose append lands decides.

use pitstop_sdk::services::{CallError, call, describe};
use pitstop_sdk::{ApiError, Request};
use serde::Deserialize;

use crate::history::{Fact, History, Order, Status};

/// What the payment service answers, as far as the order cares.
#[derive(Deserialize)]
struct Payment {
    #[serde(default)]
    id: Option<String>,
    status: String,
}

/// Runs the payment step for an order still `PENDING`. With
/// `compensate_only` (a retry of a stale saga) no charge is attempted: the
/// payment is voided.
///
/// Returns the order as it now stands: `CONFIRMED` or `FAILED` when this
/// call ended it (or found it ended), `PENDING` when neither the charge nor
/// the compensation could be made.
pub fn pay_or_compensate(history: History, compensate_only: bool) -> Result<Order, ApiError> {
    let order = history.order()?;
    if order.status != Status::Pending {
        return Ok(order);
    }
    let mut facts = Vec::new();
    let charged = if compensate_only {
        Charge::Unknown("saga timed out".into())
    } else {
        let attempt = history.payment_requests() + 1;
        facts.push(Fact::PaymentRequested { amount: order.amount, attempt });
        charge(&order)
    };
    match charged {
        Charge::Completed(payment_id) => facts.push(Fact::confirmed(&order, Some(payment_id))),
        Charge::Answered(payment) => {
            let reason = format!("payment {}", payment.status.to_lowercase());
            facts.push(Fact::failed(&order, reason, payment.id));
        }
        Charge::Refused(reason) => facts.push(Fact::failed(&order, reason, None)),
        // Compensation: undo step 1 (refund, or make sure no charge can
        // still land), then fail the order.
        Charge::Unknown(reason) => match void(&order) {
            Ok(voided) => {
                facts.push(Fact::Compensated {
                    payment_id: voided.id.clone(),
                    payment_status: voided.status,
                });
                facts.push(Fact::failed(&order, reason, voided.id));
            }
            Err(void_error) => pitstop_sdk::log::warn(&format!(
                "order {}: {reason}; compensation failed too ({void_error}); the saga timeout \
                 will retry",
                order.id
            )),
        },
    }
    if facts.is_empty() {
        return Ok(order);
    }
    let id = order.id.clone();
    match history.append(facts)? {
        Some(appended) => {
            let order = appended.order()?;
            if order.status != Status::Pending {
                pitstop_sdk::log::info(&format!("order {id} is {:?}", order.status));
            }
            Ok(order)
        }
        // The other side of the race appended first: its account stands.
        None => {
            History::load(&id)?.ok_or_else(|| ApiError::internal("the order vanished"))?.order()
        }
    }
}

/// The saga timeout: an order still `PENDING` this long after it was placed
/// lost its request (a crash, a deadline). Resume it: the first delivery
/// tries the charge once more (idempotent per order), later ones only
/// compensate. An `Err` has the bus retry with backoff.
pub fn finish_stale(order_id: &str, attempt: u32) -> Result<(), ApiError> {
    let Some(history) = History::load(order_id)? else {
        return Ok(());
    };
    let order = pay_or_compensate(history, attempt > 1)?;
    if order.status == Status::Pending {
        return Err(ApiError::unavailable(format!(
            "order {order_id}: payment service cannot answer"
        )));
    }
    Ok(())
}

/// How a charge went.
enum Charge {
    /// A payment completed, with this id.
    Completed(String),
    /// The payment service answered with a payment that did not complete
    /// (declined), or `VOIDED` when an earlier compensation ruled out any.
    Answered(Payment),
    /// It refused the request (a 4xx): no payment was made.
    Refused(String),
    /// No answer (error, trap, timeout, 5xx, garbage): a payment may or may
    /// not exist.
    Unknown(String),
}

/// Charge the order (idempotent per order id).
fn charge(order: &Order) -> Charge {
    let body = serde_json::json!({
        "order_id": order.id,
        "user_id": order.user_id,
        "amount": order.amount,
        // Whose the payment is: the order's owner, as the order service
        // found it (payment trusts the order service's word for it).
        "owner": crate::owner_of(order).ok().flatten(),
    });
    let response = match call("payment", &Request::with_json("POST", "/payments", &body)) {
        Ok(response) => response,
        Err(error) => return Charge::Unknown(payment_down(&error)),
    };
    match response.status {
        200 | 201 => match response.parse::<Payment>() {
            Ok(Payment { id: Some(id), status }) if status == "COMPLETED" => Charge::Completed(id),
            Ok(payment) if payment.status == "COMPLETED" => {
                Charge::Unknown("payment service answered a completed payment without id".into())
            }
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
