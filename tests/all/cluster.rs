//! Several hosts on one NATS JetStream (`pitstop serve --cluster`), against
//! a real `nats-server` (installed by `scripts/setup --tests`, see
//! scripts/install-nats): keyspaces shared with read-your-writes across
//! hosts, compare-and-swap and counters that keep their meaning, and events
//! handled once per subscriber for the whole cluster.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{Value, json};
use tempfile::TempDir;

use crate::support::{Server, eventually, fresh_dir, repo_root, single_component_config};

/// Every host verifies the same tokens.
const SECRET: &str = "cluster-test-secret-0123456789abcdef";

/// A `nats-server -js` on a free loopback port ([`crate::support::unused_port`]),
/// killed when dropped; it can be stopped and started again on the same port
/// and store.
pub struct Nats {
    child: Option<Child>,
    pub url: String,
    port: u16,
    config: PathBuf,
    _store: TempDir,
}

impl Nats {
    pub fn start() -> Nats {
        // Known before it listens, and kept across a restart.
        let port = crate::support::unused_port();
        let store = TempDir::new().unwrap();
        // A commit is one message: max_payload must hold the largest write
        // set (16 MiB by default), as docs/cluster.md says.
        let config = store.path().join("nats.conf");
        let conf = format!(
            "listen: \"127.0.0.1:{port}\"\nmax_payload: 32MB\njetstream {{ store_dir: \"{}\" }}\n",
            store.path().join("js").display()
        );
        std::fs::write(&config, conf).unwrap();
        let url = format!("nats://127.0.0.1:{port}");
        let mut nats = Nats { child: None, url, port, config, _store: store };
        nats.resume();
        nats
    }

    /// Kill the server (as a crash would).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start the server again, on its port and store.
    pub fn resume(&mut self) {
        let binary = std::env::var_os("PITSTOP_NATS_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root().join(".toolchains/nats/bin/nats-server"));
        assert!(
            binary.exists(),
            "no nats-server at {}: run scripts/setup --tests (or set PITSTOP_NATS_SERVER)",
            binary.display()
        );
        let child = Command::new(binary)
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting nats-server");
        self.child = Some(child);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(std::time::Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `n` hosts on `nats`, each with its own data dir, with `config`.
async fn hosts(nats: &Nats, n: usize, config: Option<&str>) -> Vec<Server> {
    hosts_with(nats, n, config, &[]).await
}

/// [`hosts`] with extra environment variables.
async fn hosts_with(
    nats: &Nats,
    n: usize,
    config: Option<&str>,
    env: &[(&str, &str)],
) -> Vec<Server> {
    let mut hosts = Vec::new();
    for _ in 0..n {
        let args = [std::ffi::OsStr::new("--cluster"), nats.url.as_ref()];
        let mut env = env.to_vec();
        env.push(("PITSTOP_JWT_SECRET", SECRET));
        hosts.push(Server::start_with_env(config, fresh_dir(), &args, &env).await);
    }
    hosts
}

#[tokio::test]
async fn a_user_created_through_one_host_is_read_through_the_others_right_after_the_201() {
    let nats = Nats::start();
    let hosts = hosts(&nats, 3, None).await;
    for i in 0..30 {
        let (writer, reader) = (&hosts[i % 3], &hosts[(i + 1) % 3]);
        let created = writer
            .post("/users", json!({"name": "Ann", "email": format!("ann{i}@example.com")}))
            .await;
        assert_eq!(created.status, 201, "{}", created.error());
        let id = created.json()["id"].as_str().unwrap().to_string();
        let read = reader.get(&format!("/users/{id}")).await;
        assert_eq!(read.status, 200, "user {i} created on host {} not read on the next", i % 3);
        assert_eq!(read.json(), created.json());
        // The email is taken for every host at once.
        let again = hosts[(i + 2) % 3]
            .post("/users", json!({"name": "Bob", "email": format!("ANN{i}@example.com")}))
            .await;
        assert_eq!(again.status, 409, "{}", String::from_utf8_lossy(&again.body));
    }
}

#[tokio::test]
async fn a_value_written_through_one_host_is_what_the_next_read_anywhere_returns() {
    let nats = Nats::start();
    let config = single_component_config("kvprobe", "kvprobe", "", "/kv");
    // Each host applies the others' commits 20 ms late (a fail point), so
    // a read that did not wait for the log's last commit sees the old value.
    let lagging = [("FAILPOINTS", "cluster-follow=sleep(20)")];
    let hosts = hosts_with(&nats, 3, Some(&config), &lagging).await;
    // One key rewritten 60 times, each value read back through another
    // host as soon as the write is acknowledged: never the one before.
    for i in 0..60 {
        let value = format!("v{i}");
        let put = hosts[i % 3].send("PUT", "/kv/kv/hot", value.clone()).await;
        assert_eq!(put.status, 200, "{}", String::from_utf8_lossy(&put.body));
        let read = hosts[(i + 1) % 3].get("/kv/kv/hot").await;
        assert_eq!(String::from_utf8_lossy(&read.body), value, "write {i}");
    }
}

#[tokio::test]
async fn one_email_registered_ten_times_at_once_through_three_hosts_gets_one_201() {
    let nats = Nats::start();
    let hosts = hosts(&nats, 3, None).await;
    for round in 0..3 {
        let email = format!("race{round}@example.com");
        let tries = (0..10).map(|i| {
            hosts[i % 3].post("/users", json!({"name": format!("racer {i}"), "email": email}))
        });
        let statuses: Vec<u16> = join_all(tries).await.iter().map(|a| a.status).collect();
        assert_eq!(statuses.iter().filter(|s| **s == 201).count(), 1, "{statuses:?}");
        assert!(statuses.iter().all(|s| *s == 201 || *s == 409), "{statuses:?}");
    }
}

#[tokio::test]
async fn increments_and_compare_and_swaps_from_three_hosts_lose_nothing() {
    let nats = Nats::start();
    let config = single_component_config("kvprobe", "kvprobe", "", "/kv");
    let hosts = hosts(&nats, 3, Some(&config)).await;
    // 3 hosts x 4 clients x 15 increments, all at once.
    let clients = (0..12).map(|client| {
        let host = &hosts[client % 3];
        async move {
            let mut ok = 0;
            for _ in 0..15 {
                let answer = host.send("POST", "/kv/incr/hits", "").await;
                assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
                ok += 1;
            }
            ok
        }
    });
    let done: usize = join_all(clients).await.iter().sum();
    assert_eq!(done, 180);
    for host in &hosts {
        let value = host.get("/kv/kv/hits").await;
        assert_eq!(value.status, 200);
        assert_eq!(String::from_utf8_lossy(&value.body), "180", "on {}", host.base);
    }

    // Compare-and-swap: read n, swap to n + 1. A swap whose expectation
    // another host broke is rerun or answered 409; every success counts once.
    let swappers = (0..12).map(|client| {
        let host = &hosts[client % 3];
        async move {
            let mut swapped = 0;
            for _ in 0..10 {
                let answer = host.send("POST", "/kv/cas/swaps/0", "").await;
                match answer.status {
                    200 if answer.json()["swapped"] == json!(true) => swapped += 1,
                    200 | 409 => {}
                    other => panic!("{other}: {}", String::from_utf8_lossy(&answer.body)),
                }
            }
            swapped
        }
    });
    let swapped: usize = join_all(swappers).await.iter().sum();
    assert!(swapped > 0);
    for host in &hosts {
        let value = host.get("/kv/kv/swaps").await;
        assert_eq!(String::from_utf8_lossy(&value.body), swapped.to_string(), "on {}", host.base);
    }
}

/// 400 increments of one key at once, 200 through each of two hosts,
/// return 400 distinct values, 1 to 400 (5,209 of 15,244 repeated before:
/// each host counted from its own copy and returned that).
#[tokio::test]
async fn concurrent_increments_through_two_hosts_return_distinct_values() {
    let nats = Nats::start();
    let config = single_component_config("kvprobe", "kvprobe", "max_concurrency = 400", "/kv");
    let hosts = hosts(&nats, 2, Some(&config)).await;
    let increments = (0..400).map(|n| {
        let host = &hosts[n % 2];
        async move {
            let answer = host.send("POST", "/kv/incr/hits", "").await;
            assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
            answer.json().as_i64().expect("the new value")
        }
    });
    let values: std::collections::BTreeSet<i64> = join_all(increments).await.into_iter().collect();
    assert_eq!(values.len(), 400, "{} repeated values", 400 - values.len());
    assert_eq!(values, (1..=400).collect(), "not 1 to 400");
}

#[tokio::test]
async fn writes_through_several_hosts_cannot_take_a_keyspace_past_its_quota() {
    let nats = Nats::start();
    let limits = "max_keyspace_bytes = 10485760\nmax_write_set_bytes = 8388608";
    let config = single_component_config("kvprobe", "kvprobe", limits, "/kv");
    let hosts = hosts(&nats, 2, Some(&config)).await;
    // ~4 MiB through each host fits: 8,380,440 of 10,485,760 bytes.
    for (host, tag) in hosts.iter().zip(["a", "b"]) {
        let fill = host.send("POST", &format!("/kv/fill/{tag}/4/1023"), "").await;
        assert_eq!(fill.status, 200, "{}", String::from_utf8_lossy(&fill.body));
    }
    // A third, through either host, would not fit beside what the other
    // host wrote (each host alone has seen only its own 4 MiB commit).
    for host in &hosts {
        let over = host.send("POST", "/kv/fill/c/4/1023", "").await;
        assert_eq!(over.status, 507, "{}", String::from_utf8_lossy(&over.body));
        assert!(over.error().contains("its quota is 10485760"), "{}", over.error());
    }
    assert_eq!(hosts[1].get("/kv/kv/c-0").await.status, 404, "nothing was written");
}

/// `series` summed over every host.
async fn cluster_metric(hosts: &[Server], series: &str) -> f64 {
    let mut total = 0.0;
    for host in hosts {
        total += host.metric(series).await;
    }
    total
}

#[tokio::test]
async fn orders_through_every_host_settle_and_each_event_is_handled_once_for_the_cluster() {
    let nats = Nats::start();
    let hosts = hosts(&nats, 3, None).await;
    let emails: Vec<String> = (0..6).map(|i| format!("buyer{i}@example.com")).collect();
    let users: Vec<String> = join_all(
        emails.iter().enumerate().map(|(i, email)| hosts[i % 3].create_user("Ann", email)),
    )
    .await;
    // order subscribes to user.created: six events, six deliveries in all,
    // whichever host dispatches.
    let delivered = r#"pitstop_bus_delivered_total{subscriber="order"}"#;
    eventually("six user.created deliveries", Duration::from_secs(10), || async {
        (cluster_metric(&hosts, delivered).await >= 6.0).then_some(())
    })
    .await;

    let mut placed = Vec::new();
    for (i, user) in users.iter().enumerate() {
        let items = json!([{ "sku": "thing", "quantity": 1, "price": 100 + i }]);
        let answer = hosts[i % 3].post("/orders", json!({ "user_id": user, "items": items })).await;
        assert_eq!(answer.status, 201, "{}", String::from_utf8_lossy(&answer.body));
        placed.push(answer.json());
    }
    for (i, (order, user)) in placed.iter().zip(&users).enumerate() {
        // Read through another host than the one that placed it.
        let reader = &hosts[(i + 1) % 3];
        let orders: Vec<Value> = crate::saga::settled_orders(reader, user).await;
        assert_eq!(orders.len(), 1);
        assert_eq!(orders[0]["id"], order["id"]);
        let outcomes = crate::saga::reconcile(reader, user, &orders).await;
        assert_eq!(outcomes.get("confirmed"), Some(&1), "{outcomes:?}");
    }
    // Each order also scheduled its order.timeout (8 s, delayed delivery):
    // six more deliveries for the cluster, not six per host.
    eventually("six order.timeout deliveries", Duration::from_secs(20), || async {
        (cluster_metric(&hosts, delivered).await >= 12.0).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(cluster_metric(&hosts, delivered).await, 12.0, "an event was handled twice");
}

/// One client's registrations: (status, how long it took, the id on a 201).
type Outcomes = Vec<(u16, Duration, Option<String>)>;

#[tokio::test]
async fn nats_stopped_for_five_seconds_under_load_costs_503s_not_hangs_and_loses_nothing() {
    let mut nats = Nats::start();
    let hosts = std::sync::Arc::new(hosts(&nats, 2, None).await);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..4)
        .map(|client| {
            let (hosts, stop) = (hosts.clone(), stop.clone());
            tokio::spawn(async move {
                let mut outcomes: Outcomes = Vec::new();
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    n += 1;
                    let email = format!("load{client}-{n}@example.com");
                    let started = std::time::Instant::now();
                    let answer = hosts[client % 2]
                        .post("/users", json!({"name": "L", "email": email}))
                        .await;
                    let id = (answer.status == 201)
                        .then(|| answer.json()["id"].as_str().unwrap().to_string());
                    outcomes.push((answer.status, started.elapsed(), id));
                    if answer.status != 201 {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
                outcomes
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    nats.stop();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // While it is down, /ready says why.
    let ready = hosts[0].get("/ready").await;
    assert_eq!(ready.status, 503, "{}", String::from_utf8_lossy(&ready.body));
    let storage = ready.json()["checks"]["storage"].as_str().unwrap_or_default().to_string();
    assert!(storage.contains("NATS"), "{storage}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    nats.resume();
    let resumed = std::time::Instant::now();
    // The hosts recover on their own: each registers users again.
    for host in hosts.iter() {
        eventually("a 201 after NATS came back", Duration::from_secs(20), || async {
            let email = format!("after-{}@example.com", rand_word());
            let answer = host.post("/users", json!({"name": "A", "email": email})).await;
            (answer.status == 201).then_some(())
        })
        .await;
    }
    // Followers start again at the reconnection, not after missed heartbeats
    // (18 s before they did; about 3 s now, most of it the client's backoff).
    assert!(resumed.elapsed() < Duration::from_secs(10), "recovered after {:?}", resumed.elapsed());
    tokio::time::sleep(Duration::from_millis(1000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut outcomes: Outcomes = Vec::new();
    for client in clients {
        outcomes.extend(client.await.unwrap());
    }
    let unavailable = outcomes.iter().filter(|(status, ..)| *status == 503).count();
    assert!(unavailable > 0, "no request met the outage");
    for (status, took, _) in &outcomes {
        assert!(*status == 201 || *status == 503, "answered {status}");
        // Failing fast: within the 5 s deadline (2 s NATS timeout).
        assert!(*took < Duration::from_millis(5000), "a request took {took:?}");
    }
    // Every acknowledged user is there, through both hosts.
    let created: Vec<&String> = outcomes.iter().filter_map(|(.., id)| id.as_ref()).collect();
    assert!(created.len() > 10, "only {} users were created", created.len());
    for id in &created {
        for host in hosts.iter() {
            assert_eq!(host.get(&format!("/users/{id}")).await.status, 200, "user {id} lost");
        }
    }
    // And each one's user.created reached order, at least once.
    let delivered = r#"pitstop_bus_delivered_total{subscriber="order"}"#;
    eventually("every user.created delivered", Duration::from_secs(20), || async {
        (cluster_metric(&hosts, delivered).await >= created.len() as f64).then_some(())
    })
    .await;
}

fn rand_word() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).unwrap();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How long until every one of `hosts` answers `path` with `version`
/// (`None`: with 404), polling every 5 ms for at most 10 s.
async fn propagated(hosts: &[Server], path: &str, version: Option<u64>) -> Duration {
    let started = std::time::Instant::now();
    for host in hosts {
        loop {
            let answer = host.get(path).await;
            let serving = (answer.status == 200)
                .then(|| answer.header("pitstop-version").and_then(|v| v.parse::<u64>().ok()))
                .flatten();
            let done = match version {
                Some(version) => serving == Some(version),
                None => answer.status == 404,
            };
            if done {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "{} never served {version:?}",
                host.base
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    started.elapsed()
}

#[tokio::test]
async fn deploys_rollbacks_and_undeploys_through_any_host_are_served_by_every_host_within_a_second()
{
    let nats = Nats::start();
    let hosts = std::sync::Arc::new(hosts(&nats, 3, None).await);
    let hello = std::fs::read(crate::support::test_components().join("hello.wasm")).unwrap();
    let first = hosts[0].admin("PUT", "/admin/components/hello?route=/hello", hello.clone()).await;
    assert_eq!(first.status, 201, "{}", String::from_utf8_lossy(&first.body));
    propagated(&hosts, "/hello", Some(1)).await;

    // Requests to every host all along: not one may fail.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..3)
        .map(|i| {
            let (hosts, stop) = (hosts.clone(), stop.clone());
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    statuses.push(hosts[i].get("/hello").await.status);
                }
                statuses
            })
        })
        .collect();
    // Two builds of hello (the second with a custom section more), one
    // after the other: a host serving the right number with the wrong
    // bytes would show, and each host fetches the other build's bytes
    // from the cluster once.
    let mut other = hello.clone();
    other.extend_from_slice(&[0, 8, 7]);
    other.extend_from_slice(b"variant");
    let builds = [hello.clone(), other];
    let mut times = Vec::new();
    for n in 0..20 {
        let through = &hosts[n % 3];
        let deployed = through.admin("PUT", "/admin/components/hello", builds[n % 2].clone()).await;
        assert_eq!(deployed.status, 200, "{}", String::from_utf8_lossy(&deployed.body));
        let version = deployed.json()["version"].as_u64().unwrap();
        times.push(propagated(&hosts, "/hello", Some(version)).await);
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&builds[n % 2]));
        for host in hosts.iter() {
            let listing = host.admin("GET", "/admin/components", "").await.json();
            let hello = listing.as_array().unwrap().iter().find(|c| c["name"] == "hello").unwrap();
            assert_eq!(hello["version"], version, "{}", host.base);
            assert_eq!(hello["digest"].as_str(), Some(digest.as_str()), "{}", host.base);
        }
    }
    let rolled = hosts[1].admin("POST", "/admin/components/hello/rollback", "").await;
    assert_eq!(rolled.status, 200, "{}", String::from_utf8_lossy(&rolled.body));
    times
        .push(propagated(&hosts, "/hello", Some(rolled.json()["version"].as_u64().unwrap())).await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        let statuses = task.await.unwrap();
        assert!(statuses.len() > 20);
        assert!(statuses.iter().all(|s| *s == 200), "a request failed during the deploys");
    }
    times.sort();
    let slowest = *times.last().unwrap();
    println!(
        "deploy propagation to 3 hosts: median {:?}, slowest {slowest:?}",
        times[times.len() / 2]
    );
    assert!(slowest < Duration::from_secs(1), "{times:?}");

    // A host that starts later serves the current state.
    let late = hosts_with(&nats, 1, None, &[]).await;
    let version = rolled.json()["version"].as_u64().unwrap();
    assert_eq!(late[0].get("/hello").await.header("pitstop-version"), Some(&*version.to_string()));

    let gone = hosts[2].admin("DELETE", "/admin/components/hello", "").await;
    assert_eq!(gone.status, 200, "{}", String::from_utf8_lossy(&gone.body));
    let undeployed = propagated(&hosts, "/hello", None).await;
    assert!(undeployed < Duration::from_secs(1), "{undeployed:?}");
    propagated(&late, "/hello", None).await;
}

#[tokio::test]
async fn two_hosts_deploying_one_name_at_once_keep_one_history() {
    let nats = Nats::start();
    let hosts = hosts(&nats, 2, None).await;
    let hello = std::fs::read(crate::support::test_components().join("hello.wasm")).unwrap();
    // Six builds: the active version's bytes again would deploy nothing.
    let builds: Vec<Vec<u8>> = (0..6).map(|i| crate::support::rebuilt(&hello, i)).collect();
    let deploys = (0..6).map(|i| {
        hosts[i % 2].admin("PUT", "/admin/components/hello?route=/hello", builds[i].clone())
    });
    let answers = join_all(deploys).await;
    let mut versions: Vec<u64> = Vec::new();
    for answer in &answers {
        match answer.status {
            200 | 201 => versions.push(answer.json()["version"].as_u64().unwrap()),
            409 => assert!(answer.error().contains("another host"), "{}", answer.error()),
            other => panic!("{other}: {}", String::from_utf8_lossy(&answer.body)),
        }
    }
    // Every acknowledged deploy has a version number of its own.
    let mut unique = versions.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), versions.len(), "{versions:?}");
    let history = hosts[1].admin("GET", "/admin/components/hello/versions", "").await;
    assert_eq!(history.status, 200, "{}", String::from_utf8_lossy(&history.body));
    let listed = history.json()["versions"].as_array().unwrap().len();
    assert_eq!(listed, versions.len(), "{}", String::from_utf8_lossy(&history.body));
}

#[tokio::test]
async fn killing_the_dispatching_host_under_order_load_loses_no_acknowledged_order() {
    let nats = Nats::start();
    let hosts = std::sync::Arc::new(hosts(&nats, 3, None).await);
    // The host holding the dispatcher lease is the one killed.
    let holder = hosts.iter().position(|h| h.log().contains("this host dispatches")).unwrap();
    let emails: Vec<String> = (0..6).map(|i| format!("kill{i}@example.com")).collect();
    let users: Vec<String> = join_all(
        emails
            .iter()
            .enumerate()
            .map(|(i, email)| hosts[(holder + 1 + i % 2) % 3].create_user("K", email)),
    )
    .await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Six clients, two per host, each placing orders for its own user.
    let clients: Vec<_> = (0..6)
        .map(|client| {
            let (hosts, stop, user) = (hosts.clone(), stop.clone(), users[client].clone());
            tokio::spawn(async move {
                let host = (holder + client) % 3;
                let mut statuses = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let items = json!([{ "sku": "thing", "quantity": 1, "price": 100 }]);
                    let order = json!({ "user_id": user, "items": items });
                    let body = serde_json::to_vec(&order).unwrap();
                    // try_send: the killed host's clients get connection errors.
                    match hosts[host].try_send("POST", "/orders", body).await {
                        Some(answer) => statuses.push(answer.status),
                        None => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                }
                (host, user, statuses)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let killed =
        Command::new("kill").args(["-9", &hosts[holder].pid().to_string()]).status().unwrap();
    assert!(killed.success());
    tokio::time::sleep(Duration::from_millis(3000)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut placed = 0;
    for client in clients {
        let (host, user, statuses) = client.await.unwrap();
        if host != holder {
            // The other hosts kept serving.
            assert!(statuses.iter().all(|s| *s == 201), "host {host}: {statuses:?}");
        }
        placed += statuses.iter().filter(|s| **s == 201).count();
        // Every acknowledged order settles, through a host still up, with
        // exactly one completed payment or none (saga::reconcile).
        let reader = &hosts[(holder + 1 + host % 2) % 3];
        let orders = crate::saga::settled_orders(reader, &user).await;
        let acknowledged = statuses.iter().filter(|s| **s == 201).count();
        assert!(
            orders.len() >= acknowledged,
            "{} orders, {acknowledged} acknowledged",
            orders.len()
        );
        crate::saga::reconcile(reader, &user, &orders).await;
    }
    assert!(placed > 20, "only {placed} orders placed");
    // Another host took over dispatching.
    let others = hosts.iter().enumerate().filter(|(i, _)| *i != holder);
    let took_over = others.map(|(_, h)| h).any(|h| h.log().contains("this host dispatches"));
    assert!(took_over, "no host took the dispatcher lease over");
}

#[tokio::test]
async fn dead_letters_are_listed_replayed_and_discarded_through_any_host() {
    let nats = Nats::start();
    let config = single_component_config("busprobe", "busprobe", "", "/probe")
        + "\n[bus]\nmax_attempts = 1\nbackoff_base_ms = 50\n";
    let hosts = hosts(&nats, 3, Some(&config)).await;
    for (i, payload) in ["first", "second"].iter().enumerate() {
        let published = hosts[i].send("POST", "/probe/publish/probe.poison", *payload).await;
        assert_eq!(published.status, 200, "{}", String::from_utf8_lossy(&published.body));
    }
    // Listed through a host that neither published nor (necessarily) dispatched.
    let letters = eventually("two dead letters", Duration::from_secs(20), || async {
        let listed = hosts[2].admin("GET", "/admin/dead-letters?subscriber=busprobe", "").await;
        let letters = listed.json()["dead_letters"].as_array().unwrap().clone();
        (letters.len() == 2).then_some(letters)
    })
    .await;
    let id = |payload: &str| {
        letters.iter().find(|l| l["payload"] == payload).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let replayed = hosts[1]
        .admin("POST", &format!("/admin/dead-letters/busprobe/{}/replay", id("first")), "")
        .await;
    assert_eq!(replayed.status, 200, "{}", String::from_utf8_lossy(&replayed.body));
    let discarded = hosts[0]
        .admin("DELETE", &format!("/admin/dead-letters/busprobe/{}", id("second")), "")
        .await;
    assert_eq!(discarded.status, 200, "{}", String::from_utf8_lossy(&discarded.body));
    // The replayed one is delivered again (and, a poison, dies again); the
    // discarded one is gone for every host.
    eventually("the replay delivered and dead again", Duration::from_secs(20), || async {
        let listed = hosts[0].admin("GET", "/admin/dead-letters?subscriber=busprobe", "").await;
        let letters = listed.json()["dead_letters"].as_array().unwrap().clone();
        (letters.len() == 1 && letters[0]["payload"] == "first").then_some(())
    })
    .await;
    let gone = hosts[2]
        .admin("DELETE", &format!("/admin/dead-letters/busprobe/{}", id("second")), "")
        .await;
    assert_eq!(gone.status, 404, "{}", String::from_utf8_lossy(&gone.body));
}

/// A host that cannot reach NATS at start exits, naming the server
/// (docs/cluster.md), instead of serving without its storage.
#[test]
fn a_host_that_cannot_reach_nats_at_start_says_so() {
    let url = format!("nats://{}", crate::support::refusing_address());
    let started = std::time::Instant::now();
    let stderr = crate::support::serve_refuses(&format!("[cluster]\nnats = \"{url}\"\n"));
    assert!(stderr.contains(&format!("cannot reach NATS at {url}")), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "gave up after {:?}", started.elapsed());
}
