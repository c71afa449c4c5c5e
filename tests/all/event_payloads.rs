//! The event payloads docs/events.md documents for the built-in services are
//! the ones they publish: every topic there is checked against payloads a
//! recorder component received from the real services, and against the
//! doc's own example.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Server, eventually, faulty_payment, fresh_dir, repo_root, test_components};

/// One documented field: `items[].sku` is `["items", "[]", "sku"]`.
struct Field {
    path: Vec<String>,
    kind: String,
    always: bool,
    /// The one value allowed, when the meaning is a single `LITERAL`.
    only: Option<String>,
}

struct Topic {
    example: Value,
    fields: Vec<Field>,
}

/// The `#### \`topic\`` sections under `### Payloads`: each one's JSON
/// example and its field table.
fn documented() -> BTreeMap<String, Topic> {
    let doc = std::fs::read_to_string(repo_root().join("docs/events.md")).unwrap();
    let section = doc.split("### Payloads").nth(1).expect("docs/events.md has ### Payloads");
    let section = section.split("\n## ").next().unwrap();
    let mut topics = BTreeMap::new();
    for part in section.split("\n#### `").skip(1) {
        let (name, body) = part.split_once('`').unwrap();
        let example = body.split("```json\n").nth(1).and_then(|b| b.split("\n```").next());
        let example = example.unwrap_or_else(|| panic!("{name} has no JSON example"));
        let example: Value = serde_json::from_str(example)
            .unwrap_or_else(|e| panic!("{name}'s example is not JSON: {e}"));
        let mut fields = Vec::new();
        for row in body.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            let [field, kind, present, meaning] = cells[..] else { panic!("{name}: row {row}") };
            let path = field.trim_matches('`').replace("[]", ".[]");
            let only = meaning
                .strip_prefix('`')
                .and_then(|m| m.strip_suffix('`'))
                .filter(|m| !m.contains('`'))
                .map(str::to_string);
            fields.push(Field {
                path: path.split('.').map(str::to_string).collect(),
                kind: kind.to_string(),
                always: present == "always",
                only,
            });
        }
        assert!(!fields.is_empty(), "{name} has no field table");
        topics.insert(name.to_string(), Topic { example, fields });
    }
    topics
}

/// Every value at `path` under `value` (`[]` steps into each element).
fn at<'a>(value: &'a Value, path: &[String]) -> Vec<Option<&'a Value>> {
    let Some((step, rest)) = path.split_first() else { return vec![Some(value)] };
    if step == "[]" {
        let elements = value.as_array().into_iter().flatten();
        return elements.flat_map(|element| at(element, rest)).collect();
    }
    match value.get(step) {
        Some(inner) => at(inner, rest),
        None => vec![None],
    }
}

/// Why `payload` does not fit `topic`'s table, if it does not.
fn misfit(name: &str, topic: &Topic, payload: &Value) -> Option<String> {
    for field in &topic.fields {
        for found in at(payload, &field.path) {
            let Some(value) = found else {
                if field.always {
                    return Some(format!("{name}: {} missing in {payload}", field.path.join(".")));
                }
                continue;
            };
            let fits = match field.kind.as_str() {
                "string" => value.is_string(),
                "integer" => value.is_i64(),
                "array" => value.is_array(),
                "string or null" => value.is_string() || value.is_null(),
                other => return Some(format!("{name}: unknown type {other:?} in the doc")),
            };
            if !fits {
                return Some(format!(
                    "{name}: {} is not a {} in {payload}",
                    field.path.join("."),
                    field.kind
                ));
            }
            if let Some(only) = &field.only
                && value.as_str() != Some(only)
            {
                return Some(format!(
                    "{name}: {} is not {only} in {payload}",
                    field.path.join(".")
                ));
            }
        }
    }
    // No field the table does not name, at any depth it describes.
    let named = |prefix: &[String], key: &str| {
        topic.fields.iter().any(|f| {
            f.path.len() == prefix.len() + 1
                && f.path.starts_with(prefix)
                && f.path[prefix.len()] == key
        })
    };
    let mut objects = vec![(Vec::new(), payload)];
    while let Some((prefix, object)) = objects.pop() {
        let Some(fields) = object.as_object() else {
            return Some(format!("{name}: not an object at {prefix:?} in {payload}"));
        };
        for (key, value) in fields {
            if !named(&prefix, key) {
                return Some(format!("{name}: undocumented field {key} in {payload}"));
            }
            let mut inner = prefix.clone();
            inner.push(key.clone());
            inner.push("[]".to_string());
            for element in value.as_array().into_iter().flatten() {
                objects.push((inner.clone(), element));
            }
        }
    }
    None
}

#[tokio::test]
async fn the_documented_payloads_are_what_the_services_publish() {
    let topics = documented();
    let expected = [
        "order.compensated",
        "order.confirmed",
        "order.created",
        "order.failed",
        "order.payment-requested",
        "order.timeout",
        "payment.completed",
        "payment.refunded",
        "user.created",
    ];
    assert_eq!(topics.keys().collect::<Vec<_>>(), expected, "every topic the services publish");
    for (name, topic) in &topics {
        assert_eq!(misfit(name, topic, &topic.example), None, "the doc's own example");
    }

    // All four named (the built-in three would be routed anyway).
    // Payment is its fault-injecting build: a charge of ...13 cents traps,
    // so that order is compensated.
    let mut config = format!(
        "[components.recorder]\npath = \"{}\"\n[components.payment]\npath = \"{}\"\n",
        test_components().join("recorder.wasm").display(),
        faulty_payment().display(),
    );
    for (prefix, component) in [
        ("/recorded", "recorder"),
        ("/users", "user"),
        ("/orders", "order"),
        ("/payments", "payment"),
    ] {
        config += &format!("[[routes]]\nprefix = \"{prefix}\"\ncomponent = \"{component}\"\n");
    }
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let user = server.create_user("Ada", "ada@example.com").await;
    let order = |price: i64| json!({"user_id": user, "items": [{"sku": "book", "quantity": 2, "price": price}]});
    let confirmed = server.post("/orders", order(1250)).await;
    assert_eq!(confirmed.json()["status"], "CONFIRMED", "{:?}", confirmed.body);
    // Above the payment service's approval limit: declined.
    let failed = server.post("/orders", order(50_000_000)).await;
    assert_eq!(failed.json()["status"], "FAILED", "{:?}", failed.body);
    let trapping =
        json!({"user_id": user, "items": [{"sku": "pen", "quantity": 1, "price": 1013}]});
    let compensated = server.post("/orders", trapping).await;
    assert_eq!(compensated.json()["status"], "FAILED", "{:?}", compensated.body);
    let payment = confirmed.json()["payment_id"].as_str().unwrap().to_string();
    let admin = server.token_for("tester", &["admin"]);
    let refund =
        server.send_as(Some(&admin), "POST", &format!("/payments/{payment}/refund"), "").await;
    assert_eq!(refund.status, 200);

    for name in expected {
        // order.timeout is delivered 8 s after the order was placed.
        let payloads = eventually(name, Duration::from_secs(20), || async {
            let payloads = server.get(&format!("/recorded/{name}")).await.json();
            payloads.as_array().filter(|p| !p.is_empty()).cloned()
        })
        .await;
        for payload in &payloads {
            assert_eq!(misfit(name, &topics[name], payload), None);
        }
    }

    // The order.* events published are each order's history, fact for fact.
    for placed in [&confirmed, &failed, &compensated] {
        let id = placed.json()["id"].as_str().unwrap().to_string();
        let history = server.get(&format!("/orders/{id}/events")).await.json()["events"].clone();
        let history = history.as_array().unwrap().clone();
        let published =
            eventually("every fact of the order delivered", Duration::from_secs(10), || {
                let (server, id, history) = (&server, &id, &history);
                async move {
                    let mut published = Vec::new();
                    for fact in history {
                        let topic = format!("order.{}", fact["type"].as_str().unwrap());
                        let seen = server.get(&format!("/recorded/{topic}")).await.json();
                        let of_order =
                            seen.as_array().unwrap().iter().filter(|p| p["id"] == id.as_str());
                        published.extend(of_order.cloned());
                    }
                    published.dedup();
                    (published.len() >= history.len()).then_some(published)
                }
            })
            .await;
        assert_eq!(&published, &history, "order {id}");
    }
}
