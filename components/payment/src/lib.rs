//! The payment service: idempotent charges and refunds.
//!
//! A payment belongs to the subject its order's user belongs to (`owner`).
//! Charges and voids are the order service's (`pitstop-caller: order`) and
//! the admin's: anyone else gets 403, and pays by placing an order. Reads
//! are for the owner and the admin; to anyone else a payment does not
//! exist (404, and lists leave it out). Refunds are the admin's: the
//! owner gets 403, anyone else 404.
//!
//! - `POST /payments {"order_id","user_id","amount","owner"}` -> 201 with the payment,
//!   status `COMPLETED`, or `DECLINED` when `amount` exceeds [`APPROVAL_LIMIT`].
//!   `amount <= 0` -> 400. A repeat for the same `order_id` returns the same
//!   payment with 200 and charges nothing; a request for an already paid order
//!   with a different user or amount is not a repeat and gets 409.
//! - `GET /payments/{id}` -> 200 or 404. `GET /payments?order_id={id}` -> 200
//!   with that order's payment or 404; `GET /payments?user_id={id}` -> 200
//!   `{"payments":[...]}`; 400 with neither.
//! - `POST /payments/{id}/refund` -> 200 with status `REFUNDED`; refunding a
//!   refunded or declined payment -> 409.
//! - `POST /payments/void {"order_id"}` -> 200: the compensation step of the
//!   order saga. A `COMPLETED` payment of that order is refunded; a declined or
//!   refunded one is returned as it is; with no payment yet, the order is
//!   marked void, `{"order_id","status":"VOID"}`, and any later charge for it
//!   gets 409. Repeating it is harmless.
//!
//! Events: `payment.completed` and `payment.refunded`, with the payment,
//! committed together with the state change they report.
//!
//! Built with the `faults` feature (tests only, never the shipped build), a
//! charge whose amount ends in `13` cents traps, `14` spins until its
//! deadline, and `15` takes 300 ms before it answers.
//!
//! Keyspace layout: `payment/<id>` holds the record; `by-order/<order_id>`
//! holds the id of that order's payment; `by-user/<user>/<id>` indexes
//! payments by user. A voided order's `by-order` entry holds `void` instead. The index is claimed with
//! compare-and-swap *after* the record is written, so whoever loses a race
//! finds the winner's record complete.

use pitstop_sdk::access::Actor;
use pitstop_sdk::events::publish_json;
use pitstop_sdk::{ApiError, Events, Handler, Request, Response, id, kv, respond};
use serde::{Deserialize, Serialize};

/// Charges above this many cents (1,000.00) are declined. A stand-in for a
/// card network's risk check, documented so clients and tests can rely on it.
pub const APPROVAL_LIMIT: i64 = 100_000;

/// The components whose calls serving no subject act as the platform.
const TRUSTED: &[&str] = &["order"];

#[derive(Deserialize)]
struct NewPayment {
    order_id: String,
    user_id: String,
    amount: i64,
    /// The subject the payment is for, as the order service found it.
    #[serde(default)]
    owner: Option<String>,
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
    /// Who may read it; absent on payments made before owners were kept,
    /// which only an admin reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    owner: Option<String>,
}

struct PaymentService;

impl Handler for PaymentService {
    fn handle(request: Request) -> Response {
        respond(route(&request))
    }
}

impl Events for PaymentService {
    const PUBLISHES: &'static [&'static str] = &["payment.completed", "payment.refunded"];
}

pitstop_sdk::export!(PaymentService);

#[derive(Deserialize)]
struct VoidRequest {
    order_id: String,
}

fn route(request: &Request) -> Result<Response, ApiError> {
    match (request.method.as_str(), request.segments().as_slice()) {
        ("POST", ["payments"]) => charge(request),
        ("POST", ["payments", "void"]) => void(request),
        ("GET", ["payments"]) => find(request),
        ("GET", ["payments", id]) => get(request, id),
        ("POST", ["payments", id, "refund"]) => refund(request, id),
        (_, ["payments"] | ["payments", _] | ["payments", _, "refund"]) => {
            Err(ApiError::method_not_allowed())
        }
        _ => Err(ApiError::not_found("no such route")),
    }
}

/// Whether `request` may charge or void: the order service's calls and the
/// admin. A client pays by placing an order, so no one can pay (or void)
/// an order id that is not theirs before the order service does.
fn from_the_shop(request: &Request) -> Result<(), ApiError> {
    let admin = matches!(Actor::of(request, TRUSTED), Actor::Admin(_));
    if admin || request.caller() == Some("order") {
        return Ok(());
    }
    Err(ApiError::new(403, "payments are made and voided by the order service: place an order"))
}

fn charge(request: &Request) -> Result<Response, ApiError> {
    from_the_shop(request)?;
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
    match payment_for_order(&index_key)? {
        OrderPayment::Paid(existing) => return repeat(existing, &input),
        OrderPayment::Void => {
            return Err(ApiError::conflict(format!(
                "order {} was voided; it can no longer be charged",
                input.order_id
            )));
        }
        OrderPayment::None => {}
    }
    #[cfg(feature = "faults")]
    faults::inject(input.amount);

    let status = if input.amount > APPROVAL_LIMIT { Status::Declined } else { Status::Completed };
    let payment = Payment {
        id: id::new_id("pay"),
        order_id: input.order_id.clone(),
        user_id: input.user_id.clone(),
        amount: input.amount,
        status,
        owner: input.owner.clone().or_else(|| request.subject().map(str::to_string)),
    };
    let record_key = format!("payment/{}", payment.id);
    kv::put_json(&record_key, &payment)?;
    if !kv::compare_and_swap(&index_key, None, Some(payment.id.as_bytes()))? {
        // A concurrent request for the same order won; ours was never visible.
        kv::delete(&record_key)?;
        return match payment_for_order(&index_key)? {
            OrderPayment::Paid(winner) => repeat(winner, &input),
            _ => Err(ApiError::conflict(format!("order {} was voided", input.order_id))),
        };
    }
    kv::set(&format!("by-user/{}/{}", payment.user_id, payment.id), b"")?;
    if payment.status == Status::Completed {
        publish_json("payment.completed", &payment)?;
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

/// The index entry of an order: nothing yet, voided, or its payment.
enum OrderPayment {
    None,
    Void,
    Paid(Payment),
}

/// What `by-order/<order_id>` holds instead of a payment id once voided.
const VOID: &[u8] = b"void";

fn payment_for_order(index_key: &str) -> Result<OrderPayment, ApiError> {
    let Some(id) = kv::get(index_key)? else {
        return Ok(OrderPayment::None);
    };
    if id == VOID {
        return Ok(OrderPayment::Void);
    }
    let id = String::from_utf8(id).map_err(|_| ApiError::internal("corrupt payment index"))?;
    kv::get_json(&format!("payment/{id}"))?
        .map(OrderPayment::Paid)
        .ok_or_else(|| ApiError::internal("payment index points at a missing record"))
}

fn find(request: &Request) -> Result<Response, ApiError> {
    let actor = Actor::of(request, TRUSTED);
    if let Some(order_id) = request.query_param("order_id") {
        return match payment_for_order(&format!("by-order/{order_id}"))? {
            OrderPayment::Paid(payment) if actor.may_touch(payment.owner.as_deref()) => {
                Ok(Response::json(200, &payment))
            }
            _ => Err(ApiError::not_found("no payment for that order")),
        };
    }
    let Some(user_id) = request.query_param("user_id").filter(|id| id::is_url_safe(id)) else {
        return Err(ApiError::bad_request("give ?order_id=<id> or ?user_id=<id>"));
    };
    let prefix = format!("by-user/{user_id}/");
    let mut payments = Vec::new();
    for key in kv::all_keys(&prefix)? {
        if let Some(payment) =
            kv::get_json::<Payment>(&format!("payment/{}", &key[prefix.len()..]))?
            && actor.may_touch(payment.owner.as_deref())
        {
            payments.push(payment);
        }
    }
    Ok(Response::json(200, &serde_json::json!({ "payments": payments })))
}

/// Payment `id`, if `request` may read it: someone else's is as missing
/// as none.
fn readable(request: &Request, id: &str) -> Result<Payment, ApiError> {
    match kv::get_json::<Payment>(&format!("payment/{id}"))? {
        Some(payment) if Actor::of(request, TRUSTED).may_touch(payment.owner.as_deref()) => {
            Ok(payment)
        }
        _ => Err(ApiError::not_found("payment not found")),
    }
}

fn get(request: &Request, id: &str) -> Result<Response, ApiError> {
    Ok(Response::json(200, &readable(request, id)?))
}

fn void(request: &Request) -> Result<Response, ApiError> {
    from_the_shop(request)?;
    let input: VoidRequest = request.json()?;
    if input.order_id.trim().is_empty() {
        return Err(ApiError::bad_request("order_id is required"));
    }
    let index_key = format!("by-order/{}", input.order_id);
    let voided =
        || Response::json(200, &serde_json::json!({"order_id": input.order_id, "status": "VOID"}));
    match payment_for_order(&index_key)? {
        OrderPayment::Paid(payment) if payment.status == Status::Completed => {
            refund_payment(&payment.id)
        }
        OrderPayment::Paid(payment) => Ok(Response::json(200, &payment)),
        OrderPayment::Void => Ok(voided()),
        OrderPayment::None => {
            // Claims the same index entry a charge claims, so of a charge
            // and a void racing for one order exactly one wins.
            if !kv::compare_and_swap(&index_key, None, Some(VOID))? {
                return Err(ApiError::conflict("the order's payment changed meanwhile; retry"));
            }
            pitstop_sdk::log::info(&format!("voided order {}", input.order_id));
            Ok(voided())
        }
    }
}

/// `POST /payments/{id}/refund`: the admin's (or the platform's).
fn refund(request: &Request, id: &str) -> Result<Response, ApiError> {
    readable(request, id)?;
    if !Actor::of(request, TRUSTED).is_privileged() {
        return Err(ApiError::new(403, "refunds are made by the shop (the admin role)"));
    }
    refund_payment(id)
}

fn refund_payment(id: &str) -> Result<Response, ApiError> {
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
    publish_json("payment.refunded", &refunded)?;
    pitstop_sdk::log::info(&format!("refunded payment {id}"));
    Ok(Response::json(200, &refunded))
}

/// Fault injection for the saga tests, compiled in only with `faults`.
#[cfg(feature = "faults")]
mod faults {
    use std::time::{Duration, Instant};

    pub fn inject(amount: i64) {
        match amount % 100 {
            13 => panic!("injected fault: trap"),
            14 => spin(Duration::from_secs(3600)),
            15 => spin(Duration::from_millis(300)),
            _ => {}
        }
    }

    /// Busy for `period` (the platform's deadline interrupts it first).
    fn spin(period: Duration) {
        let start = Instant::now();
        while start.elapsed() < period {
            std::hint::black_box(0);
        }
    }
}

/// Run as wasm by `pitstop test-runner`: `cargo test --target wasm32-wasip2`.
#[cfg(test)]
mod tests {
    use pitstop_sdk::testing;
    use serde_json::{Value, json};

    use super::*;

    /// `request` as the order service sends it while serving alice.
    fn from_order(request: Request) -> Request {
        testing::as_caller(testing::as_subject(request, "alice", &[]), "order")
    }

    fn admin(request: Request) -> Request {
        testing::as_subject(request, "root", &["admin"])
    }

    /// A charge, void or refund as the shop makes it: charges and voids by
    /// the order service, refunds by the admin.
    fn post(path: &str, body: Value) -> (u16, Value) {
        let request = Request::with_json("POST", path, &body);
        let request = if path.ends_with("/refund") { admin(request) } else { from_order(request) };
        let response = respond(route(&request));
        (response.status, response.parse().unwrap())
    }

    fn charge_order(order: &str, amount: i64) -> (u16, Value) {
        let body =
            json!({"order_id": order, "user_id": "usr_1", "amount": amount, "owner": "alice"});
        post("/payments", body)
    }

    fn get_as(request: Request) -> u16 {
        respond(route(&request)).status
    }

    #[test]
    fn a_charge_completes_once_per_order_and_announces_it() {
        testing::clear_published();
        let (status, first) = charge_order("ord_once", 500);
        assert_eq!((status, first["status"].as_str()), (201, Some("COMPLETED")));
        let (status, again) = charge_order("ord_once", 500);
        assert_eq!(status, 200, "a repeat is not a new charge");
        assert_eq!(again, first);
        let (status, _) = charge_order("ord_once", 501);
        assert_eq!(status, 409, "another amount for the same order is not a repeat");
        assert_eq!(testing::published_json::<Value>("payment.completed"), [first]);
    }

    #[test]
    fn over_the_limit_is_declined_and_not_announced() {
        testing::clear_published();
        let (status, payment) = charge_order("ord_big", APPROVAL_LIMIT + 1);
        assert_eq!((status, payment["status"].as_str()), (201, Some("DECLINED")));
        let (_, at_limit) = charge_order("ord_limit", APPROVAL_LIMIT);
        assert_eq!(at_limit["status"], "COMPLETED");
        assert_eq!(testing::published_topics(), ["payment.completed"], "only the completed one");
    }

    #[test]
    fn bad_charges_are_refused() {
        for body in [
            json!({"order_id": "o", "user_id": "u", "amount": 0}),
            json!({"order_id": "o", "user_id": "u", "amount": -5}),
            json!({"order_id": "", "user_id": "u", "amount": 5}),
            json!({"order_id": "o", "user_id": " ", "amount": 5}),
            json!({"order_id": "o", "user_id": "u"}),
        ] {
            assert_eq!(post("/payments", body.clone()).0, 400, "{body}");
        }
    }

    #[test]
    fn refunds_happen_once_and_never_for_a_declined_payment() {
        let (_, paid) = charge_order("ord_refund", 700);
        testing::clear_published();
        let path = format!("/payments/{}/refund", paid["id"].as_str().unwrap());
        let (status, refunded) = post(&path, json!({}));
        assert_eq!((status, refunded["status"].as_str()), (200, Some("REFUNDED")));
        assert_eq!(post(&path, json!({})).0, 409);
        assert_eq!(testing::published_topics(), ["payment.refunded"]);

        let (_, declined) = charge_order("ord_declined_refund", APPROVAL_LIMIT * 2);
        let path = format!("/payments/{}/refund", declined["id"].as_str().unwrap());
        assert_eq!(post(&path, json!({})).0, 409);
    }

    #[test]
    fn voiding_refunds_a_payment_or_rules_one_out() {
        // Paid: voiding refunds it.
        charge_order("ord_void_paid", 300);
        let (status, voided) = post("/payments/void", json!({"order_id": "ord_void_paid"}));
        assert_eq!((status, voided["status"].as_str()), (200, Some("REFUNDED")));

        // Not paid yet: voided, and a later charge is refused.
        let (status, voided) = post("/payments/void", json!({"order_id": "ord_void_first"}));
        assert_eq!((status, voided["status"].as_str()), (200, Some("VOID")));
        assert_eq!(charge_order("ord_void_first", 300).0, 409);
        let (status, again) = post("/payments/void", json!({"order_id": "ord_void_first"}));
        assert_eq!((status, again["status"].as_str()), (200, Some("VOID")), "idempotent");

        // Declined: stays declined.
        charge_order("ord_void_declined", APPROVAL_LIMIT + 5);
        let (_, kept) = post("/payments/void", json!({"order_id": "ord_void_declined"}));
        assert_eq!(kept["status"], "DECLINED");
    }

    #[test]
    fn payments_are_found_by_order_and_by_user() {
        let (_, paid) = charge_order("ord_lookup", 42);
        let by_order = respond(route(&admin(Request {
            query: "order_id=ord_lookup".into(),
            ..Request::empty("GET", "/payments")
        })));
        assert_eq!(by_order.parse::<Value>().unwrap(), paid);
        let none =
            Request { query: "order_id=ord_none".into(), ..Request::empty("GET", "/payments") };
        assert_eq!(respond(route(&admin(none))).status, 404);
        assert_eq!(respond(route(&Request::empty("GET", "/payments"))).status, 400);

        // By user: this user's payments, and only theirs.
        let (_, mine) = post(
            "/payments",
            json!({"order_id": "ord_by_user", "user_id": "usr_lookup", "amount": 7, "owner": "alice"}),
        );
        let by_user = |user: &str, subject: &str| {
            let request =
                Request { query: format!("user_id={user}"), ..Request::empty("GET", "/payments") };
            let request = testing::as_subject(request, subject, &[]);
            respond(route(&request)).parse::<Value>().unwrap()
        };
        assert_eq!(by_user("usr_lookup", "alice"), json!({ "payments": [mine] }));
        assert_eq!(by_user("usr_nobody", "alice"), json!({ "payments": [] }));
        assert_eq!(by_user("usr_lookup", "mallory"), json!({ "payments": [] }), "not hers");
    }

    #[test]
    fn only_the_shop_charges_and_voids() {
        testing::clear_published();
        let body = json!({"order_id": "ord_direct", "user_id": "usr_1", "amount": 5});
        for request in [
            testing::as_subject(Request::with_json("POST", "/payments", &body), "alice", &[]),
            Request::with_json("POST", "/payments", &body),
            testing::as_caller(Request::with_json("POST", "/payments", &body), "user"),
            testing::as_subject(
                Request::with_json("POST", "/payments/void", &body),
                "mallory",
                &[],
            ),
        ] {
            assert_eq!(respond(route(&request)).status, 403, "{:?}", request.headers);
        }
        assert!(testing::published().is_empty(), "nothing charged");
        // The void mallory tried did not rule out alice's charge.
        let charged = respond(route(&from_order(Request::with_json("POST", "/payments", &body))));
        assert_eq!(charged.status, 201);
        let by_admin = json!({"order_id": "ord_by_admin", "user_id": "usr_1", "amount": 5});
        let charged = respond(route(&admin(Request::with_json("POST", "/payments", &by_admin))));
        assert_eq!(charged.status, 201);
    }

    #[test]
    fn a_payment_is_read_by_its_owner_and_the_admin_and_refunded_by_the_admin() {
        let (_, paid) = charge_order("ord_owned", 900);
        let id = paid["id"].as_str().unwrap();
        assert_eq!(paid["owner"], "alice");
        let path = format!("/payments/{id}");
        let alice = |request| testing::as_subject(request, "alice", &[]);
        let mallory = |request| testing::as_subject(request, "mallory", &[]);
        assert_eq!(get_as(alice(Request::empty("GET", &path))), 200);
        assert_eq!(get_as(admin(Request::empty("GET", &path))), 200);
        assert_eq!(get_as(mallory(Request::empty("GET", &path))), 404);
        assert_eq!(get_as(Request::empty("GET", &path)), 404, "anonymous");
        let by_order =
            Request { query: "order_id=ord_owned".into(), ..Request::empty("GET", "/payments") };
        assert_eq!(get_as(mallory(by_order.clone())), 404);
        assert_eq!(get_as(alice(by_order)), 200);

        let refund = format!("/payments/{id}/refund");
        assert_eq!(get_as(mallory(Request::empty("POST", &refund))), 404, "not hers");
        assert_eq!(get_as(Request::empty("POST", &refund)), 404, "anonymous");
        assert_eq!(get_as(alice(Request::empty("POST", &refund))), 403, "the admin refunds");
        let still: Value = respond(route(&alice(Request::empty("GET", &path)))).parse().unwrap();
        assert_eq!(still["status"], "COMPLETED");
        assert_eq!(get_as(admin(Request::empty("POST", &refund))), 200);
    }
}
