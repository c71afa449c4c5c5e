//! Gateway authentication and rate limits, over real HTTP: the default
//! policy, every token case, API keys, identity headers, `pitstop token`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::support::{Server, fresh_dir, repo_root, serve_refuses, test_components};

const SECRET: &str = "a-test-secret-of-more-than-32-bytes!";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn fixture(name: &str) -> String {
    repo_root().join("tests/fixtures").join(name).display().to_string()
}

fn sign(algorithm: Algorithm, key: &EncodingKey, claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(algorithm), claims, key).unwrap()
}

fn hs256(claims: &Value) -> String {
    sign(Algorithm::HS256, &EncodingKey::from_secret(SECRET.as_bytes()).unwrap(), claims)
}

/// kvprobe on /probe with a JWT policy on every method, an API-key route on
/// /keyed, and the given extra config.
fn config(extra: &str) -> String {
    let probe = test_components().join("kvprobe.wasm");
    format!(
        r#"
[components.probe]
path = "{probe}"

[auth.jwt]
secret = "{SECRET}"
audience = "pitstop-tests"
issuer = "https://issuer.test"
leeway_s = 5
public_keys = ["{rsa}", {{ path = "{ed}", kid = "ed-1" }}]

[auth.api_keys]
ci-bot = "key-for-the-ci-bot"

[[routes]]
prefix = "/probe"
component = "probe"
auth = "jwt"

[[routes]]
prefix = "/keyed"
component = "probe"
auth = {{ read = "public", write = "api-key" }}
{extra}
"#,
        probe = probe.display(),
        rsa = fixture("rsa.pub"),
        ed = fixture("ed25519.pub"),
    )
}

fn good_claims() -> Value {
    json!({"sub": "alice", "aud": "pitstop-tests", "iss": "https://issuer.test",
           "exp": now() + 300, "role": "admin"})
}

async fn call(server: &Server, token: &str) -> crate::support::Answer {
    let bearer = format!("Bearer {token}");
    server.send_raw("GET", "/probe/headers", &[("authorization", &bearer)], "").await
}

/// The request headers kvprobe's `/headers` route reports it received.
fn headers_seen(answer: &crate::support::Answer) -> Vec<(String, String)> {
    serde_json::from_slice(&answer.body).unwrap()
}

fn challenge(answer: &crate::support::Answer) -> String {
    answer.header("www-authenticate").unwrap_or_default().to_string()
}

#[tokio::test]
async fn the_default_policy_leaves_reads_public_and_protects_writes() {
    let server = Server::start().await;
    let read = server.send_raw("GET", "/users/usr_nobody", &[], "").await;
    assert_eq!(read.status, 404, "a read needs no token");
    let body = json!({"name": "Ann", "email": "ann@example.com"}).to_string();
    let write = server.send_raw("POST", "/users", &[], body.clone()).await;
    assert_eq!(write.status, 401);
    assert_eq!(challenge(&write), "Bearer realm=\"pitstop\"");
    assert!(write.error().contains("bearer token"), "{}", write.error());
    // `pitstop token` mints from the generated secret; with it the write goes through.
    let token = server.token.clone().expect("pitstop token minted a token");
    let bearer = format!("Bearer {token}");
    let write = server.send_raw("POST", "/users", &[("authorization", &bearer)], body).await;
    assert_eq!(write.status, 201, "{}", String::from_utf8_lossy(&write.body));

    // Every write of every built-in service, and of a component routed by
    // `?route=` at deploy (it gets the default policy too), needs a token;
    // every read does not. (The test helpers send the server's token, so
    // without this nothing would notice a write left public.)
    let probe = std::fs::read(test_components().join("kvprobe.wasm")).unwrap();
    let deployed = server.admin("PUT", "/admin/components/probe?route=/probe", probe).await;
    assert_eq!(deployed.status, 201);
    for (method, path) in [
        ("POST", "/users"),
        ("PUT", "/users/usr_x"),
        ("PATCH", "/users/usr_x"),
        ("DELETE", "/users/usr_x"),
        ("POST", "/orders"),
        ("POST", "/payments"),
        ("POST", "/payments/void"),
        ("PUT", "/probe/kv/k"),
        ("POST", "/probe/incr/k"),
        ("DELETE", "/probe/kv/k"),
    ] {
        let answer = server.send_raw(method, path, &[], "{}").await;
        assert_eq!(answer.status, 401, "{method} {path} without a token");
    }
    for path in ["/users/usr_x", "/orders/ord_x", "/payments?order_id=ord_x", "/probe/kv/k"] {
        let answer = server.send_raw("GET", path, &[], "").await;
        assert_eq!(answer.status, 404, "GET {path} needs no token");
    }
    let stored = server.send_raw("PUT", "/probe/kv/k", &[("authorization", &bearer)], "v").await;
    assert_eq!(stored.status, 200, "with the token the write goes through");
}

#[tokio::test]
async fn every_bad_token_is_401_with_a_challenge() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    assert_eq!(call(&server, &hs256(&good_claims())).await.status, 200);

    let mut expired = good_claims();
    expired["exp"] = json!(now() - 60);
    let mut not_yet = good_claims();
    not_yet["nbf"] = json!(now() + 60);
    let mut wrong_audience = good_claims();
    wrong_audience["aud"] = json!("someone-else");
    let mut no_audience = good_claims();
    no_audience.as_object_mut().unwrap().remove("aud");
    let mut wrong_issuer = good_claims();
    wrong_issuer["iss"] = json!("https://evil.test");
    let mut no_expiry = good_claims();
    no_expiry.as_object_mut().unwrap().remove("exp");
    let wrong_secret = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-more-than-32-bytes").unwrap(),
        &good_claims(),
    );
    let valid = hs256(&good_claims());
    let (head, rest) = valid.split_once('.').unwrap();
    let (_, signature) = rest.split_once('.').unwrap();
    let tampered = {
        let mut claims = good_claims();
        claims["sub"] = json!("mallory");
        let payload = hs256(&claims);
        let payload = payload.split('.').nth(1).unwrap().to_string();
        format!("{head}.{payload}.{signature}")
    };
    // alg: none, unsigned.
    let none = {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let header = b64.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64.encode(good_claims().to_string());
        format!("{header}.{claims}.")
    };
    // The secret has no key id: a token naming one names a key we do not have.
    let hs256_with_kid = {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("some-other-key".into());
        let key = EncodingKey::from_secret(SECRET.as_bytes()).unwrap();
        jsonwebtoken::encode(&header, &good_claims(), &key).unwrap()
    };
    // A subject that would split or end a header line downstream.
    let with_sub = |sub: &str| {
        let mut claims = good_claims();
        claims["sub"] = json!(sub);
        hs256(&claims)
    };
    let cases = [
        ("sub with CR LF", with_sub("alice\r\npitstop-subject: admin"), "sub"),
        ("sub with LF", with_sub("alice\nx"), "sub"),
        ("sub with NUL", with_sub("alice\0"), "sub"),
        ("HS256 with an unknown kid", hs256_with_kid, "key id"),
        ("expired", hs256(&expired), "expired"),
        ("not valid before nbf", hs256(&not_yet), "not valid yet"),
        ("wrong audience", hs256(&wrong_audience), "audience"),
        ("no audience", hs256(&no_audience), "aud"),
        ("wrong issuer", hs256(&wrong_issuer), "issuer"),
        ("no expiry", hs256(&no_expiry), "exp"),
        ("wrong secret", wrong_secret, "signature"),
        ("tampered claims", tampered, "signature"),
        ("alg none", none, "algorithm"),
        ("malformed", "not-a-token".to_string(), "malformed"),
    ];
    for (case, token, reason) in cases {
        let answer = call(&server, &token).await;
        assert_eq!(answer.status, 401, "{case}");
        assert!(answer.error().contains(reason), "{case}: {}", answer.error());
        assert!(challenge(&answer).contains("error=\"invalid_token\""), "{case}");
    }
    let missing = server.send_raw("GET", "/probe/headers", &[], "").await;
    assert_eq!(missing.status, 401);
    assert_eq!(challenge(&missing), "Bearer realm=\"pitstop\"");
    let basic =
        server.send_raw("GET", "/probe/headers", &[("authorization", "Basic YTpi")], "").await;
    assert_eq!(basic.status, 401);
    assert!(challenge(&basic).contains("invalid_request"));
}

#[tokio::test]
async fn rs256_and_eddsa_tokens_verify_with_the_configured_public_keys() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa.key")).unwrap()).unwrap();
    let ed = EncodingKey::from_ed_pem(&std::fs::read(fixture("ed25519.key")).unwrap()).unwrap();
    let rs256 = sign(Algorithm::RS256, &rsa, &good_claims());
    assert_eq!(call(&server, &rs256).await.status, 200);
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some("ed-1".into());
    let eddsa = jsonwebtoken::encode(&header, &good_claims(), &ed).unwrap();
    assert_eq!(call(&server, &eddsa).await.status, 200);
    // A kid that names no configured key is refused.
    header.kid = Some("ed-2".into());
    let unknown_kid = jsonwebtoken::encode(&header, &good_claims(), &ed).unwrap();
    assert_eq!(call(&server, &unknown_kid).await.status, 401);
}

/// Algorithm confusion: with only public keys configured (no HS256 secret),
/// an HS256 token signed with the RSA public key's bytes, as if they were
/// a secret, is refused because HS256 is not accepted at all.
#[tokio::test]
async fn a_public_key_cannot_pass_for_an_hs256_secret() {
    let probe = test_components().join("kvprobe.wasm");
    let config = format!(
        "[components.probe]\npath = \"{}\"\n[auth.jwt]\naudience = \"pitstop-tests\"\n\
         issuer = \"https://issuer.test\"\npublic_keys = [\"{}\"]\n\
         [[routes]]\nprefix = \"/probe\"\ncomponent = \"probe\"\nauth = \"jwt\"\n",
        probe.display(),
        fixture("rsa.pub")
    );
    let server = Server::start_with(Some(&config), fresh_dir()).await;
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(fixture("rsa.key")).unwrap()).unwrap();
    assert_eq!(call(&server, &sign(Algorithm::RS256, &rsa, &good_claims())).await.status, 200);
    let rsa_public = std::fs::read(fixture("rsa.pub")).unwrap();
    let confused =
        sign(Algorithm::HS256, &EncodingKey::from_secret(&rsa_public).unwrap(), &good_claims());
    let answer = call(&server, &confused).await;
    assert_eq!(answer.status, 401);
    assert!(
        answer.error().contains("tokens signed with HS256 are not accepted"),
        "{}",
        answer.error()
    );
    assert!(!server.data_dir().join("jwt.secret").exists(), "no secret with public keys");
}

#[tokio::test]
async fn the_component_sees_the_verified_identity_and_never_a_forged_one() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    let bearer = format!("Bearer {}", hs256(&good_claims()));
    let forged = [
        ("authorization", bearer.as_str()),
        ("pitstop-subject", "root"),
        ("pitstop-auth", "api-key"),
        ("pitstop-claims", r#"{"role":"god"}"#),
        ("pitstop-caller", "payment"),
    ];
    let answer = server.send_raw("GET", "/probe/headers", &forged, "").await;
    assert_eq!(answer.status, 200);
    let headers = headers_seen(&answer);
    let values = |name: &str| -> Vec<&str> {
        headers.iter().filter(|(n, _)| n == name).map(|(_, v)| v.as_str()).collect()
    };
    assert_eq!(values("pitstop-subject"), ["alice"]);
    assert_eq!(values("pitstop-auth"), ["jwt"]);
    assert!(values("pitstop-caller").is_empty());
    let claims: Value = serde_json::from_str(values("pitstop-claims")[0]).unwrap();
    assert_eq!(claims["role"], "admin");
    assert_eq!(claims["sub"], "alice");

    // On a public route nothing is verified, so no identity, and still no forgery.
    let forged = [("pitstop-subject", "root")];
    let answer = server.send_raw("GET", "/keyed/headers", &forged, "").await;
    let headers = headers_seen(&answer);
    assert!(!headers.iter().any(|(n, _)| n.starts_with("pitstop-")), "{headers:?}");
}

#[tokio::test]
async fn api_key_routes_take_only_configured_keys() {
    let server = Server::start_with(Some(&config("")), fresh_dir()).await;
    assert_eq!(server.send_raw("GET", "/keyed/headers", &[], "").await.status, 200, "public read");
    let none = server.send_raw("POST", "/keyed/headers", &[], "").await;
    assert_eq!(none.status, 401);
    assert!(challenge(&none).starts_with("ApiKey"), "{}", challenge(&none));
    let wrong = server.send_raw("POST", "/keyed/headers", &[("x-api-key", "guess")], "").await;
    assert_eq!(wrong.status, 401);
    // A JWT is not an API key.
    let bearer = format!("Bearer {}", hs256(&good_claims()));
    let jwt = server.send_raw("POST", "/keyed/headers", &[("authorization", &bearer)], "").await;
    assert_eq!(jwt.status, 401);
    let right =
        server.send_raw("POST", "/keyed/headers", &[("x-api-key", "key-for-the-ci-bot")], "").await;
    assert_eq!(right.status, 200);
    let headers = headers_seen(&right);
    assert!(headers.contains(&("pitstop-subject".into(), "ci-bot".into())), "{headers:?}");
    assert!(headers.contains(&("pitstop-auth".into(), "api-key".into())), "{headers:?}");
    assert!(!headers.iter().any(|(n, _)| n == "x-api-key"), "the key itself stays at the gateway");
}

/// A route at `prefix` to the probe with policy `auth`, limited to one
/// request a second per client (a burst of two).
fn limited_route(prefix: &str, auth: &str) -> String {
    format!(
        "[[routes]]\nprefix = \"{prefix}\"\ncomponent = \"probe\"\nauth = \"{auth}\"\n\
         rate_limit = {{ per_second = 1, burst = 2 }}\n"
    )
}

#[tokio::test]
async fn a_rate_limit_triggers_per_client_and_recovers() {
    let limited = limited_route("/limited", "jwt");
    let server = Server::start_with(Some(&config(&limited)), fresh_dir()).await;
    let alice = format!("Bearer {}", hs256(&good_claims()));
    let mut bob_claims = good_claims();
    bob_claims["sub"] = json!("bob");
    let bob = format!("Bearer {}", hs256(&bob_claims));
    let get = |bearer: String| {
        let server = &server;
        async move {
            server.send_raw("GET", "/limited/headers", &[("authorization", &bearer)], "").await
        }
    };
    assert_eq!(get(alice.clone()).await.status, 200);
    assert_eq!(get(alice.clone()).await.status, 200);
    let refused = get(alice.clone()).await;
    assert_eq!(refused.status, 429);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    assert!(refused.error().contains("rate limit"));
    // Another client has its own bucket; another route is not limited.
    assert_eq!(get(bob).await.status, 200);
    assert_eq!(call(&server, &hs256(&good_claims())).await.status, 200);
    // After Retry-After, alice gets through again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    assert_eq!(get(alice).await.status, 200);
}

/// `GET path` from the local address `from` (any 127.x.y.z is this
/// machine), with `headers`; the status code.
async fn status_from(server: &Server, from: &str, path: &str, headers: &str) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let address = server.base.trim_start_matches("http://").parse().unwrap();
    let mut stream = socket.connect(address).await.unwrap();
    let head =
        format!("GET {path} HTTP/1.1\r\nhost: pitstop\r\nconnection: close\r\n{headers}\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("{answer}"))
}

/// Without a verified identity, the client is its IP address: each address
/// has its own bucket, and a header claiming another address changes
/// nothing (the gateway trusts no `X-Forwarded-For`).
#[tokio::test]
async fn an_anonymous_client_is_rate_limited_by_its_address() {
    let limited = limited_route("/open", "public");
    let server = Server::start_with(Some(&config(&limited)), fresh_dir()).await;
    for _ in 0..2 {
        assert_eq!(status_from(&server, "127.0.0.1", "/open/headers", "").await, 200);
    }
    assert_eq!(status_from(&server, "127.0.0.1", "/open/headers", "").await, 429);
    let lies = "x-forwarded-for: 10.9.8.7\r\nforwarded: for=10.9.8.7\r\nx-real-ip: 10.9.8.7\r\n";
    assert_eq!(status_from(&server, "127.0.0.1", "/open/headers", lies).await, 429);
    // Another address is another client.
    assert_eq!(status_from(&server, "127.0.0.2", "/open/headers", "").await, 200);
}

#[tokio::test]
async fn a_policy_without_its_credentials_or_a_bad_limit_stops_the_start() {
    let stderr = serve_refuses("[auth]\ndefault = \"api-key\"\n");
    assert!(stderr.contains("ApiKey credentials"), "{stderr}");
    let stderr = serve_refuses("[auth.jwt]\nsecret = \"short\"\n");
    assert!(stderr.contains("at least 32 bytes"), "{stderr}");
    let limited =
        "[[routes]]\nprefix = \"/u\"\ncomponent = \"user\"\nrate_limit = { per_second = 0 }\n";
    let stderr = serve_refuses(limited);
    assert!(stderr.contains("per_second"), "{stderr}");
}

/// The HS256 secret is generated into the data dir at first start, readable
/// by its owner only; `PITSTOP_JWT_SECRET` takes its place (then no file is
/// written, and tokens signed with it verify).
#[tokio::test]
async fn the_hs256_secret_comes_from_the_data_dir_or_the_environment() {
    use std::os::unix::fs::PermissionsExt;
    let server = Server::start().await;
    let file = server.data_dir().join("jwt.secret");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "jwt.secret mode {mode:o}");
    server.create_user("Sam", "sam@example.com").await;

    let env = [("PITSTOP_JWT_SECRET", SECRET)];
    let server = Server::start_with_env(None, fresh_dir(), &[], &env).await;
    assert!(!server.data_dir().join("jwt.secret").exists(), "no file with the variable set");
    // Minted with the variable's secret: the server verifies with it too.
    server.create_user("Sue", "sue@example.com").await;
    let other = sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"another-secret-of-more-than-32-bytes").unwrap(),
        &json!({"sub": "x", "exp": now() + 300}),
    );
    let body = json!({"name": "Eve", "email": "eve@example.com"}).to_string();
    let bearer = format!("Bearer {other}");
    let refused = server.send_raw("POST", "/users", &[("authorization", &bearer)], body).await;
    assert_eq!(refused.status, 401);
}

#[tokio::test]
async fn pitstop_token_mints_tokens_that_expire() {
    // No leeway, so the one-second token is refused once its second is over.
    let server = Server::start_with(Some("[auth.jwt]\nleeway_s = 0\n"), fresh_dir()).await;
    let short = server.mint_token("carol", "1s", None, &[]).expect("minted");
    let claims: Value = {
        use base64::Engine;
        let payload = short.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!(claims["sub"], "carol");
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 1);
    let body = json!({"name": "Carol", "email": "carol@example.com"}).to_string();
    let bearer = format!("Bearer {short}");
    let answer = server.send_raw("POST", "/users", &[("authorization", &bearer)], body).await;
    assert_eq!(answer.status, 201, "a fresh token works");
    // exp is iat + 1 s, in whole seconds: 2.1 s later it has certainly passed.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let body = json!({"name": "Carol", "email": "carol2@example.com"}).to_string();
    let late = server.send_raw("POST", "/users", &[("authorization", &bearer)], body).await;
    assert_eq!(late.status, 401, "{}", String::from_utf8_lossy(&late.body));
    assert!(late.error().contains("expired"), "{}", late.error());
    // A bad --ttl is a clear error, and no data dir secret means no token.
    assert!(server.mint_token("carol", "soon", None, &[]).is_none());
    let nowhere = fresh_dir();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["token", "--sub", "x", "--data-dir"])
        .arg(nowhere.path())
        .env_remove("PITSTOP_JWT_SECRET")
        .env_remove("PITSTOP_ADMIN_URL")
        .env_remove("PITSTOP_ADMIN_TOKEN")
        .env("XDG_CONFIG_HOME", nowhere.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("no signing secret here") && error.contains("no admin token"),
        "{error}"
    );
}

/// Away from the server's data dir (no secret to sign with), `pitstop
/// token` asks the admin API, which signs as `pitstop token` does on the
/// server; the admin API refuses a malformed request and, when the server
/// trusts only public keys, says it signs no tokens.
#[tokio::test]
async fn pitstop_token_asks_the_server_when_it_has_no_secret() {
    let server = Server::start_with(None, fresh_dir()).await;
    let elsewhere = fresh_dir();
    let admin_token = std::fs::read_to_string(server.data_dir().join("admin.token")).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pitstop"))
        .args(["token", "--sub", "dora", "--role", "admin", "--ttl", "10m", "--admin-url"])
        .arg(&server.admin_base)
        .arg("--data-dir")
        .arg(elsewhere.path())
        .env("PITSTOP_ADMIN_TOKEN", admin_token.trim())
        .env("XDG_CONFIG_HOME", elsewhere.path())
        .env_remove("PITSTOP_JWT_SECRET")
        .current_dir(elsewhere.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let claims: Value = {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    assert_eq!((&claims["sub"], &claims["roles"]), (&json!("dora"), &json!(["admin"])));
    let lifetime = claims["exp"].as_u64().unwrap() - claims["iat"].as_u64().unwrap();
    assert_eq!(lifetime, 600);
    let body = json!({"name": "Dora", "email": "dora@example.com"}).to_string();
    let bearer = format!("Bearer {token}");
    let created = server.send_raw("POST", "/users", &[("authorization", &bearer)], body).await;
    assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));

    let empty = server.admin("POST", "/admin/tokens", r#"{"sub": ""}"#).await;
    assert_eq!((empty.status, empty.error()), (400, "sub must not be empty".to_string()));
    let unknown = server.admin("POST", "/admin/tokens", r#"{"sub": "x", "ttl": 5}"#).await;
    assert_eq!(unknown.status, 400);
    assert!(unknown.error().contains("unknown field `ttl`"), "{}", unknown.error());
    let forever = r#"{"sub": "x", "ttl_seconds": 18446744073709551615}"#;
    let forever = server.admin("POST", "/admin/tokens", forever).await;
    assert_eq!(forever.status, 400);
    assert_eq!(forever.error(), "ttl_seconds must be at most 315360000 (ten years)");
    let anonymous = server.admin_with("POST", "/admin/tokens", r#"{"sub": "x"}"#, None).await;
    assert_eq!(anonymous.status, 401);

    let keys_only = format!(
        "[auth.jwt]\naudience = \"pitstop-tests\"\npublic_keys = [\"{}\"]\n",
        fixture("rsa.pub")
    );
    let trusting = Server::start_with(Some(&keys_only), fresh_dir()).await;
    let refused = trusting.admin("POST", "/admin/tokens", r#"{"sub": "x"}"#).await;
    assert_eq!(refused.status, 409);
    assert!(refused.error().contains("no HS256 secret"), "{}", refused.error());
}

/// A component cannot forge identity to another: on a `services` call the
/// host drops every `pitstop-*` header the caller set and sets its own: the
/// caller's name and the identity verified for the request it serves. The
/// client's bearer token reaches neither, unless a route passes it on.
#[tokio::test]
async fn a_component_cannot_forge_identity_to_another() {
    let kvprobe = test_components().join("kvprobe.wasm");
    let extra = format!(
        "[components.echo]\npath = \"{}\"\n\
         [[routes]]\nprefix = \"/passed\"\ncomponent = \"probe\"\nauth = \"jwt\"\n\
         pass_authorization = true\n",
        kvprobe.display()
    );
    let server = Server::start_with(Some(&config(&extra)), fresh_dir()).await;
    let bearer = format!("Bearer {}", hs256(&good_claims()));
    let platform = |headers: &[(String, String)]| -> Vec<(String, String)> {
        let mut seen: Vec<(String, String)> =
            headers.iter().filter(|(n, _)| n.starts_with("pitstop-")).cloned().collect();
        seen.sort();
        seen
    };

    // probe serves alice's request and calls echo with forged headers.
    let answer =
        server.send_raw("GET", "/probe/relay/echo", &[("authorization", &bearer)], "").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let seen = headers_seen(&answer);
    let names: Vec<String> = platform(&seen).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, ["pitstop-auth", "pitstop-caller", "pitstop-claims", "pitstop-subject"]);
    let value = |name: &str| seen.iter().find(|(n, _)| n == name).unwrap().1.clone();
    assert_eq!(value("pitstop-caller"), "probe");
    assert_eq!(value("pitstop-subject"), "alice");
    assert_eq!(value("pitstop-auth"), "jwt");
    let claims: Value = serde_json::from_str(&value("pitstop-claims")).unwrap();
    assert_eq!((claims["sub"].as_str(), claims["role"].as_str()), (Some("alice"), Some("admin")));
    assert!(!seen.iter().any(|(n, _)| n == "authorization"), "the token stayed behind: {seen:?}");

    // Serving nobody verified (a public read), the callee learns only who calls.
    let answer = server.send_raw("GET", "/keyed/relay/echo", &[], "").await;
    assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
    let seen = platform(&headers_seen(&answer));
    assert_eq!(seen, [("pitstop-caller".to_string(), "probe".to_string())]);

    // The component itself does not get the token either, unless its route passes it.
    let own = server.send_raw("GET", "/probe/headers", &[("authorization", &bearer)], "").await;
    assert!(!headers_seen(&own).iter().any(|(n, _)| n == "authorization"));
    let passed = server.send_raw("GET", "/passed/headers", &[("authorization", &bearer)], "").await;
    assert_eq!(passed.status, 200);
    assert!(headers_seen(&passed).iter().any(|(n, v)| n == "authorization" && *v == bearer));
}
