//! Outgoing connections under attack: a guest fanning out to a host that
//! never answers gets its component's share of connections and no more,
//! and the gateway and the other components keep answering fast.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::support::{Answer, eventually, open_fds, silent_host, test_components};
use crate::{alone, config, probing, start};

/// Each of [`FANNERS`] clients asks, again and again for [`ATTACK`], for
/// [`REQUESTS`] outgoing requests at once (the attack: 5 x 6,000).
const FANNERS: usize = 5;
const REQUESTS: usize = 6000;
const ATTACK: Duration = Duration::from_secs(3);
/// `max_outbound_connections`' default, which this test leaves as it is.
const COMPONENT_CONNECTIONS: usize = 128;
/// File descriptors the host may open meanwhile besides the outgoing
/// connections: the clients' and probes' own connections, the data files.
const OTHER_FDS: usize = 64;

/// Five clients each asking a guest for 6,000 requests to a silent host,
/// for 3 s: the host holds at most the component's 128 connections open
/// (16,901 file descriptors before, `/health` p99 1.2 s, another
/// component's 3.5 s), refuses the rest with `connection-limit-reached`,
/// closes them with their invocations, and the probes stay under their
/// bars.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_fanning_out_to_a_silent_host_starves_neither_the_gateway_nor_the_others() {
    let _alone = alone().await;
    let (up, open, accepted) = silent_host().await;
    let web = format!(
        "[components.web]\npath = \"{}\"\ndeadline_ms = 3000\nallowed_outbound_hosts = [\"{up}\"]\n\
         [[routes]]\nprefix = \"/h\"\ncomponent = \"web\"\n",
        test_components().join("http_probe.wasm").display()
    );
    let (server, user) = start(&config("", &web), &[]).await;
    let idle_fds = open_fds(server.pid());
    // The silent host's count lags the host's closes a little; the host's
    // own file descriptors are the bound asserted.
    let (peak_fds, peak_open) = (AtomicUsize::new(idle_fds), AtomicUsize::new(0));
    let until = Instant::now() + ATTACK;
    let fanner = || async {
        let mut answers: Vec<Answer> = Vec::new();
        while Instant::now() < until {
            answers.push(server.get(&format!("/h/fan/{REQUESTS}/{up}/x")).await);
        }
        answers
    };
    let sampler = async {
        while Instant::now() < until {
            peak_fds.fetch_max(open_fds(server.pid()), Ordering::Relaxed);
            peak_open.fetch_max(open.load(Ordering::SeqCst), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let (answers, ()) = probing(&server, &user, async {
        tokio::join!(futures::future::join_all((0..FANNERS).map(|_| fanner())), sampler)
    })
    .await;
    let answers: Vec<Answer> = answers.into_iter().flatten().collect();
    let (peak_fds, peak_open) = (peak_fds.into_inner(), peak_open.into_inner());
    println!(
        "{FANNERS} clients x GET /h/fan/{REQUESTS} to a silent host for {} s: {} invocations, {} \
         connections accepted; at most {peak_open} open at once; host fds {idle_fds} idle, at \
         most {peak_fds}",
        ATTACK.as_secs(),
        answers.len(),
        accepted.load(Ordering::SeqCst)
    );
    for answer in &answers {
        let text = String::from_utf8_lossy(&answer.body);
        assert_eq!(answer.status, 200, "{text}");
        let counts: Vec<usize> =
            text.split_whitespace().filter_map(|word| word.parse().ok()).collect();
        let [pending, refused, answered, other] = counts[..] else { panic!("{text}") };
        // A refusal reaches the guest when the host polls the request's
        // future, so under this load many are still "pending" after the
        // guest's 500 ms; none of them holds a socket (the bound below).
        assert_eq!(pending + refused, REQUESTS, "{text}");
        assert_eq!((answered, other), (0, 0), "{text}");
    }
    assert!(
        peak_fds <= idle_fds + COMPONENT_CONNECTIONS + OTHER_FDS,
        "the host's file descriptors grew from {idle_fds} to {peak_fds}"
    );
    eventually("the connections closed", Duration::from_secs(2), || async {
        (open.load(Ordering::SeqCst) == 0).then_some(())
    })
    .await;
}
