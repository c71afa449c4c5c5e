//! An order kept as its event history, the one record of it: every change is
//! a fact appended to the history, and the order `GET /orders/{id}` shows is
//! derived by folding the facts in order ([`fold`]). The facts one
//! invocation appends are published as they are recorded, topic
//! `order.<type>`, in the same atomic commit as the append: the bus carries
//! the history itself, never a second account of it.
//!
//! Order `<id>`'s history is one JSON array under `events/<id>`. An append is
//! a compare-and-swap from the history as it was read (its expected
//! version), checked again when the invocation commits: of two invocations
//! appending to one history at once (the request and the saga timeout),
//! exactly one lands and the other reads the history again. A history holds
//! a handful of facts (five at most on the saga's longest path), so one key
//! per order costs one read per order and keeps the append atomic without a
//! second index.
//!
//! Orders stored before histories were kept (`order/<id>`, the order as it
//! stood) are read as the history their last state implies, recorded at 0;
//! the first append writes it out under `events/<id>`.

use std::time::{SystemTime, UNIX_EPOCH};

use pitstop_sdk::events::publish_json;
use pitstop_sdk::{ApiError, kv};
use serde::{Deserialize, Serialize};

/// One article of an order.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Item {
    pub sku: String,
    pub quantity: i64,
    pub price: i64,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    Pending,
    Confirmed,
    Failed,
}

/// An order as its history says it stands: what `GET /orders/{id}` answers.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Order {
    pub id: String,
    pub user_id: String,
    pub items: Vec<Item>,
    pub amount: i64,
    pub status: Status,
    pub payment_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub failure_reason: Option<String>,
}

/// One fact of an order's history, as stored, as `GET /orders/{id}/events`
/// lists it and as published on `order.<type>`.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
pub struct Recorded {
    /// The order's id.
    pub id: String,
    /// Its place in the history: 1 for `created`, one more for each next.
    pub seq: u32,
    /// When it was recorded, in milliseconds since the Unix epoch; 0 in the
    /// history of an order stored before histories were kept.
    pub at: u64,
    #[serde(flatten)]
    pub fact: Fact,
}

/// What happened to an order. `confirmed` and `failed` also carry the
/// order's `user_id`, `items`, `amount` and `status`, as the payloads of
/// those topics always have, so that a subscriber needs no lookup (the fold
/// takes those from `created`).
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Debug)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Fact {
    /// Placed: step 0 of the saga.
    Created { user_id: String, items: Vec<Item>, amount: i64 },
    /// Its payment was asked for, by the request placing it or by the saga
    /// timeout resuming it; `attempt` counts the ones recorded so far.
    PaymentRequested { amount: i64, attempt: u32 },
    /// Its payment completed.
    Confirmed { payment_id: String, user_id: String, items: Vec<Item>, amount: i64, status: Status },
    /// It ended unpaid; any payment was compensated first.
    Failed {
        failure_reason: String,
        payment_id: Option<String>,
        user_id: String,
        items: Vec<Item>,
        amount: i64,
        status: Status,
    },
    /// The payment step was undone: `payment_status` is `REFUNDED` (it had
    /// been paid), `VOID` (no charge can land any more) or the status of a
    /// payment that needed no undoing (`DECLINED`).
    Compensated { payment_id: Option<String>, payment_status: String },
}

impl Fact {
    /// Its `type`, the last word of the topic it is published on.
    pub fn kind(&self) -> &'static str {
        match self {
            Fact::Created { .. } => "created",
            Fact::PaymentRequested { .. } => "payment-requested",
            Fact::Confirmed { .. } => "confirmed",
            Fact::Failed { .. } => "failed",
            Fact::Compensated { .. } => "compensated",
        }
    }

    /// `order` confirmed by payment `payment_id`.
    pub fn confirmed(order: &Order, payment_id: String) -> Fact {
        Fact::Confirmed {
            payment_id,
            user_id: order.user_id.clone(),
            items: order.items.clone(),
            amount: order.amount,
            status: Status::Confirmed,
        }
    }

    /// `order` failed for `reason`, with `payment_id` the declined or
    /// compensated payment, if one was made.
    pub fn failed(order: &Order, reason: String, payment_id: Option<String>) -> Fact {
        Fact::Failed {
            failure_reason: reason,
            payment_id,
            user_id: order.user_id.clone(),
            items: order.items.clone(),
            amount: order.amount,
            status: Status::Failed,
        }
    }
}

/// The order `history` describes. A history that does not start with
/// `created`, or records it twice, is corrupt.
pub fn fold(history: &[Recorded]) -> Result<Order, ApiError> {
    let corrupt = |why: &str| ApiError::internal(format!("an order's history is corrupt: {why}"));
    let Some((first, rest)) = history.split_first() else { return Err(corrupt("it is empty")) };
    let Fact::Created { user_id, items, amount } = &first.fact else {
        return Err(corrupt("it does not start with created"));
    };
    let mut order = Order {
        id: first.id.clone(),
        user_id: user_id.clone(),
        items: items.clone(),
        amount: *amount,
        status: Status::Pending,
        payment_id: None,
        failure_reason: None,
    };
    for recorded in rest {
        match &recorded.fact {
            Fact::Created { .. } => return Err(corrupt("created twice")),
            Fact::PaymentRequested { .. } | Fact::Compensated { .. } => {}
            Fact::Confirmed { payment_id, .. } => {
                order.status = Status::Confirmed;
                order.payment_id = Some(payment_id.clone());
            }
            Fact::Failed { failure_reason, payment_id, .. } => {
                order.status = Status::Failed;
                order.failure_reason = Some(failure_reason.clone());
                order.payment_id = payment_id.clone();
            }
        }
    }
    Ok(order)
}

/// An order's history as read, with the bytes it was read from: the
/// version the next append expects to replace.
pub struct History {
    pub events: Vec<Recorded>,
    read: Option<Vec<u8>>,
}

fn key(id: &str) -> String {
    format!("events/{id}")
}

/// Where an order was stored, as it stood, before histories were kept.
fn legacy_key(id: &str) -> String {
    format!("order/{id}")
}

impl History {
    /// Order `id`'s history, if there is such an order.
    pub fn load(id: &str) -> Result<Option<History>, ApiError> {
        if let Some(bytes) = kv::get(&key(id))? {
            let events = serde_json::from_slice(&bytes).map_err(|e| {
                ApiError::internal(format!("the history of order {id} is corrupt: {e}"))
            })?;
            return Ok(Some(History { events, read: Some(bytes) }));
        }
        let legacy = kv::get_json::<Order>(&legacy_key(id))?;
        Ok(legacy.map(|order| History { events: implied_by(order), read: None }))
    }

    /// Starts the history of a new order with its `created` fact and
    /// publishes it; `None` if the order has a history already.
    pub fn create(order: &Order) -> Result<Option<History>, ApiError> {
        let created = Fact::Created {
            user_id: order.user_id.clone(),
            items: order.items.clone(),
            amount: order.amount,
        };
        History { events: Vec::new(), read: None }.append_for(&order.id, vec![created])
    }

    /// The order as its history says it stands.
    pub fn order(&self) -> Result<Order, ApiError> {
        fold(&self.events)
    }

    /// How many times payment was asked for so far.
    pub fn payment_requests(&self) -> u32 {
        let requests =
            self.events.iter().filter(|r| matches!(r.fact, Fact::PaymentRequested { .. }));
        requests.count() as u32
    }

    /// Appends `facts` and publishes each, unless the history changed since
    /// it was read: then nothing is appended and `None` says so (read it
    /// again to see what happened instead).
    pub fn append(self, facts: Vec<Fact>) -> Result<Option<History>, ApiError> {
        let id = match self.events.first() {
            Some(first) => first.id.clone(),
            None => {
                return Err(ApiError::internal("appending to a history that was never created"));
            }
        };
        self.append_for(&id, facts)
    }

    fn append_for(self, id: &str, facts: Vec<Fact>) -> Result<Option<History>, ApiError> {
        let at = now_ms();
        let mut events = self.events;
        let first_new = events.len();
        for fact in facts {
            let seq = events.len() as u32 + 1;
            events.push(Recorded { id: id.to_string(), seq, at, fact });
        }
        let bytes = kv::to_json(&events);
        if !kv::compare_and_swap(&key(id), self.read.as_deref(), Some(&bytes))? {
            return Ok(None);
        }
        for recorded in &events[first_new..] {
            publish_json(&format!("order.{}", recorded.fact.kind()), recorded)?;
        }
        Ok(Some(History { events, read: Some(bytes) }))
    }
}

/// The history an order stored as it stood (before histories were kept)
/// implies: created, then how it ended if it did.
fn implied_by(order: Order) -> Vec<Recorded> {
    let created = Fact::Created {
        user_id: order.user_id.clone(),
        items: order.items.clone(),
        amount: order.amount,
    };
    let ended = match order.status {
        Status::Pending => None,
        Status::Confirmed => {
            Some(Fact::confirmed(&order, order.payment_id.clone().unwrap_or_default()))
        }
        Status::Failed => Some(Fact::failed(
            &order,
            order.failure_reason.clone().unwrap_or_default(),
            order.payment_id.clone(),
        )),
    };
    let facts = std::iter::once(created).chain(ended);
    let record = |(i, fact)| Recorded { id: order.id.clone(), seq: i as u32 + 1, at: 0, fact };
    facts.enumerate().map(record).collect()
}

fn now_ms() -> u64 {
    // A clock before 1970 is no reason to fail an order: it records 0.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
