//! Host memory after guests that use much of theirs: what an instance
//! touched goes back to the kernel soon after the instance ends, rather than
//! piling up until a large batch of instances is returned at once.

use crate::support::rss_kib;
use crate::{alone, config, start};

/// Requests in a row, each touching [`TOUCH_MB`] of guest memory.
const REQUESTS: usize = 100;
const TOUCH_MB: usize = 60;
/// The most the host's resident memory may grow over idle meanwhile.
const GROWTH_KIB: u64 = 512 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_that_touch_much_memory_do_not_pile_it_up_in_the_host() {
    let _alone = alone().await;
    let (server, _) = start(&config("", ""), &[]).await;
    let idle = rss_kib(server.pid());
    let mut peak = idle;
    for _ in 0..REQUESTS {
        let answer = server.get(&format!("/busy/touch/{TOUCH_MB}")).await;
        assert_eq!(answer.status, 200, "{}", String::from_utf8_lossy(&answer.body));
        peak = peak.max(rss_kib(server.pid()));
    }
    println!(
        "host RSS: {} MiB idle, at most {} MiB after each of {REQUESTS} x GET /busy/touch/{TOUCH_MB}",
        idle / 1024,
        peak / 1024
    );
    assert!(
        peak < idle + GROWTH_KIB,
        "host RSS grew from {} MiB to {} MiB",
        idle / 1024,
        peak / 1024
    );
}

/// 300 requests at once, each touching 60 MB of guest memory and keeping
/// it for a second, against a component allowed 1 GiB of host memory: the instances that would take it
/// past that trap at their grow with the limit named, the host's RSS grows
/// by about that and no more (4.3 GB for three such components before),
/// and the gateway and the user service keep answering fast.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_guests_stop_at_the_component_memory_limit() {
    let _alone = alone().await;
    let settings = "max_component_memory = 1073741824\nmax_concurrency = 300";
    let (server, user) = start(&config(settings, ""), &[]).await;
    let idle = rss_kib(server.pid());
    let peak = std::sync::atomic::AtomicU64::new(idle);
    let flood = crate::probing(&server, &user, async {
        let touches = crate::probe::concurrently(300, || async {
            let answer = server.get(&format!("/busy/touch/{TOUCH_MB}?hold=1000")).await;
            peak.fetch_max(rss_kib(server.pid()), std::sync::atomic::Ordering::Relaxed);
            answer
        });
        touches.await
    })
    .await;
    let peak = peak.into_inner();
    println!(
        "300 x GET /busy/touch/{TOUCH_MB}?hold=1000 at once, max_component_memory 1 GiB: {}; host RSS {} MiB \
         idle, at most {} MiB",
        crate::tally(&flood),
        idle / 1024,
        peak / 1024
    );
    let mut refused = 0;
    for (answer, _) in &flood {
        match answer.status {
            200 => {}
            500 => {
                assert!(answer.error().contains("max_component_memory"), "{}", answer.error());
                refused += 1;
            }
            other => panic!("{other}: {}", answer.error()),
        }
    }
    assert!(refused > 0, "no instance was refused memory");
    assert!(peak < idle + 1280 * 1024, "host RSS grew from {} to {} MiB", idle / 1024, peak / 1024);
}
