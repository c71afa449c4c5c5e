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
