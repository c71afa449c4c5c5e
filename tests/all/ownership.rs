//! Who may read and change the built-in services' records, over real HTTP
//! with real tokens: alice's records are hers and the admin's; to mallory
//! and to anonymous clients they do not exist (404), except a user's id and
//! name. Before: mallory refunded alice's payment, ordered (and was
//! charged) on alice's user, and anyone read her e-mail, orders and
//! payments by id.

use serde_json::{Value, json};

use crate::support::{Answer, Server, fresh_dir, test_components};

/// A server with tokens for alice, mallory and an admin.
struct Shop {
    server: Server,
    alice: String,
    mallory: String,
    admin: String,
}

impl Shop {
    async fn open() -> Shop {
        Shop::open_with(None).await
    }

    async fn open_with(config: Option<&str>) -> Shop {
        let server = Server::start_with(config, fresh_dir()).await;
        let alice = server.token_for("alice", &[]);
        let mallory = server.token_for("mallory", &[]);
        let admin = server.token_for("root", &["admin"]);
        Shop { server, alice, mallory, admin }
    }

    /// A server whose config signs tokens with `secret` and reads roles
    /// from `groups`; the tokens signed here, the admin's roles in `groups`.
    async fn open_signed(secret: &str) -> Shop {
        let config = format!("[auth.jwt]\nsecret = \"{secret}\"\nroles_claim = \"groups\"\n");
        let server = Server::start_with(Some(&config), fresh_dir()).await;
        let alice = sign(secret, json!({"sub": "alice"}));
        let mallory = sign(secret, json!({"sub": "mallory"}));
        let admin = sign(secret, json!({"sub": "root", "groups": ["admin"]}));
        Shop { server, alice, mallory, admin }
    }

    async fn as_(&self, token: Option<&str>, method: &str, path: &str, body: Value) -> Answer {
        let body = if body.is_null() { Vec::new() } else { serde_json::to_vec(&body).unwrap() };
        self.server.send_as(token, method, path, body).await
    }

    /// Alice's user and a confirmed order of hers: (user, order, payment).
    async fn alices_order(&self) -> (String, String, String) {
        let alice = Some(self.alice.as_str());
        let user = json!({"name": "Alice", "email": "alice@example.com"});
        let user = self.as_(alice, "POST", "/users", user).await;
        assert_eq!(user.status, 201, "{}", String::from_utf8_lossy(&user.body));
        let user = user.json()["id"].as_str().unwrap().to_string();
        let order =
            json!({"user_id": user, "items": [{"sku": "lamp", "quantity": 1, "price": 90000}]});
        let order = self.as_(alice, "POST", "/orders", order).await;
        assert_eq!(order.status, 201, "{}", String::from_utf8_lossy(&order.body));
        let order = order.json();
        assert_eq!(order["status"], "CONFIRMED");
        let payment = order["payment_id"].as_str().unwrap().to_string();
        (user, order["id"].as_str().unwrap().to_string(), payment)
    }
}

/// An HS256 token signed with `secret` for `claims`, valid ten minutes.
fn sign(secret: &str, mut claims: Value) -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    claims["exp"] = json!(now.as_secs() + 600);
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).unwrap();
    jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
}

/// Every read of alice's order and payment answers 404 to mallory and to
/// an anonymous client, and lists by her user leave them out.
#[tokio::test]
async fn someone_elses_orders_and_payments_do_not_exist() {
    let shop = Shop::open().await;
    let (user, order, payment) = shop.alices_order().await;
    let reads = [
        format!("/orders/{order}"),
        format!("/orders/{order}/events"),
        format!("/payments/{payment}"),
        format!("/payments?order_id={order}"),
    ];
    for token in [Some(shop.mallory.as_str()), None] {
        for path in &reads {
            let answer = shop.as_(token, "GET", path, Value::Null).await;
            assert_eq!(answer.status, 404, "GET {path} as {token:?}: {:?}", answer.body);
        }
        let orders = shop.as_(token, "GET", &format!("/orders?user_id={user}"), Value::Null).await;
        assert_eq!(orders.json(), json!({"orders": []}));
        let payments =
            shop.as_(token, "GET", &format!("/payments?user_id={user}"), Value::Null).await;
        assert_eq!(payments.json(), json!({"payments": []}));
    }
    for token in [Some(shop.alice.as_str()), Some(shop.admin.as_str())] {
        for path in &reads {
            let answer = shop.as_(token, "GET", path, Value::Null).await;
            assert_eq!(answer.status, 200, "GET {path}: {:?}", answer.body);
        }
        let orders = shop.as_(token, "GET", &format!("/orders?user_id={user}"), Value::Null).await;
        assert_eq!(orders.json()["orders"].as_array().unwrap().len(), 1);
        let payments =
            shop.as_(token, "GET", &format!("/payments?user_id={user}"), Value::Null).await;
        assert_eq!(payments.json()["payments"].as_array().unwrap().len(), 1);
    }
}

/// Mallory's refund of alice's payment is a 404 and changes nothing (it
/// went REFUNDED while her order stayed CONFIRMED); alice herself cannot
/// refund (403: the shop refunds); the admin can.
#[tokio::test]
async fn only_the_admin_refunds() {
    let shop = Shop::open().await;
    let (_, _, payment) = shop.alices_order().await;
    let refund = format!("/payments/{payment}/refund");
    let mallory = shop.as_(Some(&shop.mallory), "POST", &refund, json!({})).await;
    assert_eq!(mallory.status, 404, "{:?}", mallory.body);
    let alice = shop.as_(Some(&shop.alice), "POST", &refund, json!({})).await;
    assert_eq!(alice.status, 403, "{:?}", alice.body);
    let path = format!("/payments/{payment}");
    let still = shop.as_(Some(&shop.alice), "GET", &path, Value::Null).await;
    assert_eq!(still.json()["status"], "COMPLETED");
    let admin = shop.as_(Some(&shop.admin), "POST", &refund, json!({})).await;
    assert_eq!((admin.status, admin.json()["status"].clone()), (200, json!("REFUNDED")));
}

/// Mallory ordering on alice's user id gets 422, as for no user, and
/// nothing is charged or recorded; nor can she charge or void directly.
#[tokio::test]
async fn nobody_orders_or_pays_on_someone_elses_user() {
    let shop = Shop::open().await;
    let (user, order, _) = shop.alices_order().await;
    let items = json!([{"sku": "tv", "quantity": 1, "price": 90000}]);
    let theirs = json!({"user_id": user, "items": items});
    let placed = shop.as_(Some(&shop.mallory), "POST", "/orders", theirs).await;
    assert_eq!(placed.status, 422, "{:?}", placed.body);
    assert!(placed.error().contains("does not exist"), "{}", placed.error());
    let charge = json!({"order_id": "ord_mine", "user_id": user, "amount": 90000});
    let charged = shop.as_(Some(&shop.mallory), "POST", "/payments", charge).await;
    assert_eq!(charged.status, 403, "{:?}", charged.body);
    let void =
        shop.as_(Some(&shop.mallory), "POST", "/payments/void", json!({"order_id": order})).await;
    assert_eq!(void.status, 403, "{:?}", void.body);
    // Alice's records are as they were: one order, one completed payment.
    let admin = Some(shop.admin.as_str());
    let orders = shop.as_(admin, "GET", &format!("/orders?user_id={user}"), Value::Null).await;
    assert_eq!(orders.json()["orders"].as_array().unwrap().len(), 1);
    let payments = shop.as_(admin, "GET", &format!("/payments?user_id={user}"), Value::Null).await;
    let payments = payments.json()["payments"].as_array().unwrap().clone();
    let statuses: Vec<&Value> = payments.iter().map(|p| &p["status"]).collect();
    assert_eq!(statuses, [&json!("COMPLETED")]);
}

/// A user's e-mail is for its owner and the admin: anyone else reads the id
/// and the name; registering needs a token (the gateway's 401).
#[tokio::test]
async fn a_users_email_is_private() {
    let shop = Shop::open().await;
    let (user, _, _) = shop.alices_order().await;
    let path = format!("/users/{user}");
    let public = json!({"id": user, "name": "Alice"});
    for token in [Some(shop.mallory.as_str()), None] {
        let answer = shop.as_(token, "GET", &path, Value::Null).await;
        assert_eq!((answer.status, answer.json()), (200, public.clone()), "{token:?}");
    }
    let whole =
        json!({"id": user, "name": "Alice", "email": "alice@example.com", "owner": "alice"});
    for token in [&shop.alice, &shop.admin] {
        let answer = shop.as_(Some(token), "GET", &path, Value::Null).await;
        assert_eq!((answer.status, answer.json()), (200, whole.clone()));
    }
    let anonymous = json!({"name": "Anon", "email": "anon@example.com"});
    assert_eq!(shop.as_(None, "POST", "/users", anonymous).await.status, 401);
}

/// The admin role comes from the claim `[auth.jwt] roles_claim` names: with
/// `groups`, a token whose `roles` say admin is an ordinary subject, and
/// one whose `groups` do is the admin.
#[tokio::test]
async fn the_admin_role_comes_from_the_configured_claim() {
    let secret = "a-test-secret-of-more-than-32-bytes!";
    let shop = Shop::open_signed(secret).await;
    let (user, _, _) = shop.alices_order().await;
    let path = format!("/users/{user}");
    let wrong_claim = sign(secret, json!({"sub": "root", "roles": ["admin"]}));
    let answer = shop.as_(Some(&wrong_claim), "GET", &path, Value::Null).await;
    assert_eq!(answer.json(), json!({"id": user, "name": "Alice"}));
    let answer = shop.as_(Some(&shop.admin), "GET", &path, Value::Null).await;
    assert_eq!(answer.json()["email"], "alice@example.com");
}

/// A component sees the roles the gateway verified, and a client cannot
/// send its own `pitstop-roles`.
#[tokio::test]
async fn roles_reach_components_and_cannot_be_forged() {
    let config = format!(
        "[components.web]\npath = \"{}\"\n[[routes]]\nprefix = \"/h\"\ncomponent = \"web\"\n",
        test_components().join("http_probe.wasm").display()
    );
    let shop = Shop::open_with(Some(&config)).await;
    let bearer = format!("Bearer {}", shop.mallory);
    let forged = [("pitstop-roles", "admin"), ("authorization", bearer.as_str())];
    let echoed = shop.server.send_raw("GET", "/h/echo", &forged, "").await;
    assert!(!String::from_utf8_lossy(&echoed.body).contains("pitstop-roles"), "{:?}", echoed.body);
    let bearer = format!("Bearer {}", shop.admin);
    let echoed = shop.server.send_raw("GET", "/h/echo", &[("authorization", &bearer)], "").await;
    assert!(
        String::from_utf8_lossy(&echoed.body).contains("pitstop-roles: admin"),
        "{:?}",
        echoed.body
    );
}
