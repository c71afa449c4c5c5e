//! An order kept as its event history, the record it is derived from: every
//! change is a fact appended to the history, and the order `GET /orders/{id}`
//! shows is the facts folded in order ([`fold`]). The facts one invocation
//! appends are published as they are recorded, topic `order.<type>`, in the
//! same atomic commit as the append: the bus carries the history itself,
//! never a second account of it.
//!
//! Order `<id>`'s history is one JSON array under `events/<id>`. Beside it,
//! `order/<id>` holds the order as the history leaves it: the record older
//! versions of this service read and write, kept so that a canary, a
//! rollback or an in-flight request of an older version shares the orders
//! with this one. That snapshot is the expected version of every append: an
//! append is a compare-and-swap of the snapshot from what was read, then of
//! the history, both checked again when the invocation commits. Of two
//! invocations appending to one order at once (the request and the saga
//! timeout, of any version), exactly one lands and the other reads the order
//! again. A history holds at most five facts, so the two keys cost two
//! reads per order.
//!
//! An order an older version stored or moved (a snapshot the history does
//! not account for) reads as the history its snapshot implies: its missing
//! facts are recorded at 0 and written out by the next append, never
//! published.

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
    /// The subject the order's user belongs to, who may read it; absent on
    /// orders placed before owners were kept, which only an admin reads.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub owner: Option<String>,
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
    /// Placed: step 0 of the saga. `owner` is the subject the user belongs
    /// to (absent in histories begun before owners were kept).
    Created {
        user_id: String,
        items: Vec<Item>,
        amount: i64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    /// Its payment was asked for, by the request placing it or by the saga
    /// timeout resuming it; `attempt` counts the ones recorded so far.
    PaymentRequested { amount: i64, attempt: u32 },
    /// Its payment completed. (`payment_id` is null only in the history of
    /// an order an older version confirmed without one.)
    Confirmed {
        payment_id: Option<String>,
        user_id: String,
        items: Vec<Item>,
        amount: i64,
        status: Status,
    },
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
    pub fn confirmed(order: &Order, payment_id: Option<String>) -> Fact {
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
    let Fact::Created { user_id, items, amount, owner } = &first.fact else {
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
        owner: owner.clone(),
    };
    for recorded in rest {
        match &recorded.fact {
            Fact::Created { .. } => return Err(corrupt("created twice")),
            Fact::PaymentRequested { .. } | Fact::Compensated { .. } => {}
            Fact::Confirmed { payment_id, .. } => {
                order.status = Status::Confirmed;
                order.payment_id = payment_id.clone();
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

/// An order's history as read, with the snapshot it was read beside: the
/// version the next append expects to replace.
pub struct History {
    pub events: Vec<Recorded>,
    /// The bytes of `order/<id>` as read.
    snapshot: Option<Vec<u8>>,
    /// The bytes of `events/<id>` as read.
    read: Option<Vec<u8>>,
}

fn key(id: &str) -> String {
    format!("events/{id}")
}

/// The order as its history leaves it, for versions before histories.
fn snapshot_key(id: &str) -> String {
    format!("order/{id}")
}

impl History {
    /// Order `id`'s history, if there is such an order.
    pub fn load(id: &str) -> Result<Option<History>, ApiError> {
        let read = kv::get(&key(id))?;
        let snapshot = kv::get(&snapshot_key(id))?;
        let mut events: Vec<Recorded> = match &read {
            Some(bytes) => serde_json::from_slice(bytes).map_err(|e| {
                ApiError::internal(format!("the history of order {id} is corrupt: {e}"))
            })?,
            None => Vec::new(),
        };
        if let Some(bytes) = &snapshot {
            let order: Order = serde_json::from_slice(bytes).map_err(|e| {
                ApiError::internal(format!("the stored order {id} is corrupt: {e}"))
            })?;
            implied_by(&mut events, order)?;
        }
        if events.is_empty() {
            return Ok(None);
        }
        Ok(Some(History { events, snapshot, read }))
    }

    /// Starts the history of a new order with its `created` fact and
    /// publishes it; `None` if the order exists already.
    pub fn create(order: &Order) -> Result<Option<History>, ApiError> {
        let created = Fact::Created {
            user_id: order.user_id.clone(),
            items: order.items.clone(),
            amount: order.amount,
            owner: order.owner.clone(),
        };
        let empty = History { events: Vec::new(), snapshot: None, read: None };
        empty.append_for(&order.id, vec![created])
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

    /// Appends `facts` and publishes each, unless the order changed since it
    /// was read: then nothing is appended and `None` says so (read it again
    /// to see what happened instead).
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
            record(&mut events, id, at, fact);
        }
        let snapshot = kv::to_json(&fold(&events)?);
        // The snapshot first: every version of this service swaps it, so it
        // decides races between them. Losing it writes nothing.
        let snapshot_key = snapshot_key(id);
        if !kv::compare_and_swap(&snapshot_key, self.snapshot.as_deref(), Some(&snapshot))? {
            return Ok(None);
        }
        let bytes = kv::to_json(&events);
        if !kv::compare_and_swap(&key(id), self.read.as_deref(), Some(&bytes))? {
            // Only an append that swapped the snapshot too moves the history,
            // so this cannot happen short of a broken store; failing the
            // invocation discards the snapshot written above with it.
            return Err(ApiError::internal(format!("the history of order {id} moved alone")));
        }
        for recorded in &events[first_new..] {
            publish_json(&format!("order.{}", recorded.fact.kind()), recorded)?;
        }
        Ok(Some(History { events, snapshot: Some(snapshot), read: Some(bytes) }))
    }
}

/// Completes `events` with what `order`, the snapshot an older version may
/// have stored or moved, says beyond them: `created` if the history is
/// empty, its outcome if the history has none. A snapshot that contradicts
/// the history is an error.
fn implied_by(events: &mut Vec<Recorded>, order: Order) -> Result<(), ApiError> {
    let mut implied = Vec::new();
    let recorded = if events.is_empty() {
        implied.push(Fact::Created {
            user_id: order.user_id.clone(),
            items: order.items.clone(),
            amount: order.amount,
            owner: order.owner.clone(),
        });
        Status::Pending
    } else {
        fold(events)?.status
    };
    match (recorded, order.status) {
        (recorded, stored) if recorded == stored => {}
        (Status::Pending, Status::Confirmed) => {
            implied.push(Fact::confirmed(&order, order.payment_id.clone()));
        }
        (Status::Pending, Status::Failed) => implied.push(Fact::failed(
            &order,
            order.failure_reason.clone().unwrap_or_default(),
            order.payment_id.clone(),
        )),
        (recorded, stored) => {
            return Err(ApiError::internal(format!(
                "order {} is {recorded:?} in its history but {stored:?} in its snapshot",
                order.id
            )));
        }
    }
    for fact in implied {
        record(events, &order.id, 0, fact);
    }
    Ok(())
}

/// Append `fact` to order `id`'s `events` as the next in sequence.
fn record(events: &mut Vec<Recorded>, id: &str, at: u64, fact: Fact) {
    let seq = events.len() as u32 + 1;
    events.push(Recorded { id: id.to_string(), seq, at, fact });
}

fn now_ms() -> u64 {
    // A clock before 1970 is no reason to fail an order: it records 0.
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}
