//! The free-space watermark of the data dir: below it, the embedded store
//! refuses writes before the disk is full.
//!
//! sled does not survive a full disk gracefully: a flush that cannot write
//! waits for ever while holding its locks, and every request behind it
//! hangs, reads and `/health` included. So writes stop while there is
//! still room: [`refusal`] reads the data dir's free space before every
//! write and says why it must wait, counting recent writes against it
//! ([`note_written`], twice their size: sled writes them to its log, and
//! its pages later, when it flushes and when it cleans its segments). A
//! write counts until the disk shows that much spent, or for [`SETTLE`]:
//! forgetting it at the next reading let sled's later page writes take the
//! disk about 8 MiB below a 16 MiB watermark in a test. A thread reads the
//! free space every [`POLL`] and logs when the disk crosses the watermark.
//! Commits then get
//! 507, reads and `/health` go on, and writes resume on their own once
//! space returns. Removals are still let through, so a component can free
//! what it holds.
//!
//! One process has one data dir, so the watch is the process's:
//! [`watch`] installs it at start; without it (the test harness's
//! temporary stores) nothing is refused.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

/// How often the free space is read.
pub const POLL: Duration = Duration::from_millis(100);

/// How long a write counts against the free space at most, if the disk
/// never shows it spent (sled may overwrite a page in place, or compress).
pub const SETTLE: Duration = Duration::from_secs(2);

/// Readings in [`SETTLE`]: the recent writes are kept in one bucket per
/// reading, the oldest dropped at each.
const BUCKETS: usize = (SETTLE.as_millis() / POLL.as_millis()) as usize;

/// The default watermark: 5% of the filesystem, at most 1 GiB.
pub fn default_min_free(total: u64) -> u64 {
    (total / 20).min(1 << 30)
}

/// The data dir's free space against its watermark.
struct DiskSpace {
    dir: PathBuf,
    min_free: u64,
    free: AtomicU64,
    /// Bytes written, counted as sled may spend them, that the disk has
    /// not shown spent yet: one bucket per reading of the last [`SETTLE`].
    written: [AtomicU64; BUCKETS],
    /// The bucket new writes go to.
    current: AtomicUsize,
    low: AtomicBool,
}

static WATCH: OnceLock<DiskSpace> = OnceLock::new();

/// Watch the filesystem holding `dir`, refusing writes while fewer than
/// `min_free` bytes are free there (`None`: [`default_min_free`]).
/// Returns the watermark.
pub fn watch(dir: &Path, min_free: Option<u64>) -> std::io::Result<u64> {
    let (free, total) = free_space(dir)?;
    let min_free = min_free.unwrap_or_else(|| default_min_free(total));
    let space = DiskSpace {
        dir: dir.to_path_buf(),
        min_free,
        free: AtomicU64::new(free),
        written: std::array::from_fn(|_| AtomicU64::new(0)),
        current: AtomicUsize::new(0),
        low: AtomicBool::new(free < min_free),
    };
    if WATCH.set(space).is_ok() {
        std::thread::Builder::new().name("pitstop-disk".into()).spawn(|| {
            let space = WATCH.get().expect("set above");
            loop {
                std::thread::sleep(POLL);
                space.refresh();
            }
        })?;
    }
    Ok(min_free)
}

impl DiskSpace {
    fn refresh(&self) {
        // Unreadable: keep the last reading rather than stop every write.
        if let Ok((free, _)) = free_space(&self.dir) {
            let before = self.free.swap(free, Ordering::Relaxed);
            self.settle(before.saturating_sub(free));
            let low = free < self.min_free;
            if self.low.swap(low, Ordering::Relaxed) != low {
                match low {
                    true => tracing::warn!(
                        free,
                        min_free = self.min_free,
                        "free disk space below the watermark: writes are refused"
                    ),
                    false => tracing::info!(free, "free disk space back: writes resume"),
                }
            }
        }
    }
}

impl DiskSpace {
    /// The disk shows `spent` more bytes used since the last reading: that
    /// many of the oldest writes counted are on it now. Then the oldest
    /// bucket is forgotten and starts again as the newest.
    fn settle(&self, mut spent: u64) {
        let current = self.current.load(Ordering::Relaxed);
        for age in 1..=BUCKETS {
            if spent == 0 {
                break;
            }
            let bucket = &self.written[(current + age) % BUCKETS];
            let taken = bucket
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(spent))
                })
                .unwrap_or(0)
                .min(spent);
            spent -= taken;
        }
        let next = (current + 1) % BUCKETS;
        self.written[next].store(0, Ordering::Relaxed);
        self.current.store(next, Ordering::Relaxed);
    }

    /// Bytes written that the disk does not show spent yet.
    fn pending(&self) -> u64 {
        self.written.iter().map(|bucket| bucket.load(Ordering::Relaxed)).sum()
    }
}

/// Why a write must not happen now, if it must not: the data dir's disk is
/// below its watermark.
pub fn refusal() -> Option<String> {
    let space = WATCH.get()?;
    // Read now, not only every `POLL`: someone else may have filled the
    // disk since the last reading, and a write sled cannot flush hangs it.
    // (A statvfs costs about a microsecond; a commit, hundreds.)
    let read =
        free_space(&space.dir).map_or_else(|_| space.free.load(Ordering::Relaxed), |(f, _)| f);
    let free = read.saturating_sub(space.pending());
    (free < space.min_free).then(|| {
        format!(
            "the data dir's disk has {free} bytes free, below the {} the platform keeps free \
             (min_free_disk_bytes); writes resume when space returns",
            space.min_free
        )
    })
}

/// `bytes` were just written: count them against the free space until
/// the disk shows them spent (or [`SETTLE`] has passed), so neither a
/// burst between two readings nor sled's later page writes can run the
/// disk full.
pub fn note_written(bytes: u64) {
    if let Some(space) = WATCH.get() {
        let current = space.current.load(Ordering::Relaxed);
        space.written[current].fetch_add(bytes.saturating_mul(2), Ordering::Relaxed);
    }
}

/// Bytes free to an unprivileged writer, and the filesystem's size, where
/// `dir` is.
fn free_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let stat = rustix::fs::statvfs(dir)?;
    Ok((stat.f_bavail * stat.f_frsize, stat.f_blocks * stat.f_frsize))
}
