//! The native baseline for `bench/run`: the same work as pitstop's hello
//! component and user service, as a plain hyper 1 server on tokio with no
//! wasm in between. `GET /hello` answers a constant; `POST /users` checks
//! the body, claims the email with compare-and-swap, stores the user in
//! sled and flushes before answering, as pitstop's user service and commit
//! do (without the event); `GET /users/{id}` reads it back.
//!
//! Usage: `pitstop-native-baseline ADDR DATA_DIR`; prints
//! `listening on http://ADDR` once ready.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct NewUser {
    name: String,
    email: String,
}

#[derive(Serialize)]
struct User<'a> {
    id: &'a str,
    name: &'a str,
    email: &'a str,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr: SocketAddr = args.next().unwrap_or_else(|| "127.0.0.1:0".into()).parse()?;
    let dir = args.next().unwrap_or_else(|| "native-data".into());
    let users = sled::open(dir)?.open_tree("users")?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let users = users.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| handle(users.clone(), request));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(
    users: sled::Tree,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let method = request.method().clone();
    let answer = match (method, path.as_str()) {
        (Method::GET, "/hello") => json(StatusCode::OK, br#"{"hello":"world"}"#.to_vec()),
        (Method::POST, "/users") => {
            let body =
                request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            create(&users, &body).await
        }
        (Method::GET, p) if p.starts_with("/users/") => match users.get(&p["/users/".len()..]) {
            Ok(Some(user)) => json(StatusCode::OK, user.to_vec()),
            _ => json(StatusCode::NOT_FOUND, br#"{"error":"user not found"}"#.to_vec()),
        },
        _ => json(StatusCode::NOT_FOUND, br#"{"error":"no route"}"#.to_vec()),
    };
    Ok(answer)
}

async fn create(users: &sled::Tree, body: &[u8]) -> Response<Full<Bytes>> {
    let Ok(input) = serde_json::from_slice::<NewUser>(body) else {
        return json(StatusCode::BAD_REQUEST, br#"{"error":"malformed JSON"}"#.to_vec());
    };
    if input.name.trim().is_empty() || !input.email.contains('@') {
        return json(StatusCode::BAD_REQUEST, br#"{"error":"invalid user"}"#.to_vec());
    }
    let mut random = [0u8; 12];
    let _ = getrandom::fill(&mut random);
    let id: String = "usr_"
        .chars()
        .chain(random.iter().flat_map(|b| format!("{b:02x}").chars().collect::<Vec<_>>()))
        .collect();
    let user = serde_json::to_vec(&User { id: &id, name: &input.name, email: &input.email })
        .expect("serialising a user");
    let email_key = format!("email/{}", input.email.to_lowercase());
    match users.compare_and_swap(email_key, None::<&[u8]>, Some(id.as_bytes())) {
        Ok(Ok(())) => {}
        _ => {
            return json(
                StatusCode::CONFLICT,
                br#"{"error":"email is already registered"}"#.to_vec(),
            );
        }
    }
    if users.insert(&id, user.as_slice()).is_err() || !flush(users).await {
        return json(StatusCode::INTERNAL_SERVER_ERROR, br#"{"error":"storage failed"}"#.to_vec());
    }
    json(StatusCode::CREATED, user)
}

/// Make the write durable before answering, as pitstop does. sled's blocking
/// `flush` on the blocking pool: its `flush_async` stalled under 32
/// concurrent writers here.
async fn flush(users: &sled::Tree) -> bool {
    let users = users.clone();
    matches!(tokio::task::spawn_blocking(move || users.flush()).await, Ok(Ok(_)))
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}
