//! The ZITADEL client's request rate: a limiter whose rate can change while
//! requests wait, and the reloader that takes a new rate from a file the
//! operator rewrites (the tenant's share of the cluster-wide budget).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A server that had to hold a call back this recently still has work.
/// Short, so that a server done with its work hands its share on at the
/// operator's next look; long enough to cover the gaps between Entra's
/// requests within a cycle.
const BUSY_WINDOW: Duration = Duration::from_secs(3);

/// Spaces requests so that at most `rate` start per second, and holds all of
/// them back after a 429 for as long as ZITADEL asked.
pub(crate) struct RateLimiter {
    /// Nanoseconds between two request starts.
    interval_ns: AtomicU64,
    next: parking_lot::Mutex<Instant>,
    /// Calls waiting for their turn now.
    waiting: AtomicUsize,
    created: Instant,
    /// When a call last had to wait, in ms since `created` (0: never).
    last_held_ms: AtomicU64,
    /// Rate files that changed but could not be used.
    reload_failures: AtomicU64,
    /// After a lower rate: the old rate, and the last slot given at it.
    /// Until that slot has passed, calls still start at the old rate.
    draining: parking_lot::Mutex<Option<(f64, Instant)>>,
}

/// Spacing `rate` calls over a second and this much more: ZITADEL counts
/// calls when they arrive, and a call that leaves a little late puts one
/// more into the second that ends just before a later call's arrival.
const ARRIVAL_GUARD: Duration = Duration::from_millis(50);

fn interval_ns(rate: f64) -> u64 {
    // Rates are validated positive; a zero or NaN here would mean "no limit".
    let second = 1e9 + ARRIVAL_GUARD.as_nanos() as f64;
    if rate > 0.0 && rate.is_finite() { (second / rate).round().max(1.0) as u64 } else { 1 }
}

impl RateLimiter {
    pub(crate) fn new(rate: f64) -> Self {
        let now = Instant::now();
        RateLimiter {
            interval_ns: AtomicU64::new(interval_ns(rate)),
            next: parking_lot::Mutex::new(now),
            waiting: AtomicUsize::new(0),
            created: now,
            last_held_ms: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
            draining: parking_lot::Mutex::new(None),
        }
    }

    /// The rate calls may still start at: the old one after a lowering,
    /// until the calls it already scheduled have started. This, not the new
    /// rate, is what the server reports, so the operator gives the
    /// difference to another server only once it is really free.
    pub(crate) fn effective_rate(&self) -> f64 {
        let rate = self.rate();
        match *self.draining.lock() {
            Some((old, until)) if Instant::now() < until => rate.max(old),
            _ => rate,
        }
    }

    /// Requests per second now allowed.
    pub(crate) fn rate(&self) -> f64 {
        // Rounded: 7.5/s is an interval of 133333333 ns, which reads back as 7.50000001875.
        let second = 1e9 + ARRIVAL_GUARD.as_nanos() as f64;
        let exact = second / self.interval_ns.load(Ordering::Relaxed) as f64;
        (exact * 1e6).round() / 1e6
    }

    /// Takes effect for the next request to start: one already given a slot
    /// at the old rate keeps it, so a lower rate holds from the next slot on.
    pub(crate) fn set_rate(&self, rate: f64) {
        let old = self.rate();
        let last_slot = *self.next.lock();
        self.interval_ns.store(interval_ns(rate), Ordering::Relaxed);
        if rate < old {
            *self.draining.lock() = Some((old, last_slot));
        }
    }

    pub(crate) async fn acquire(&self) {
        let wait = {
            let mut next = self.next.lock();
            let now = Instant::now();
            let start = (*next).max(now);
            *next = start + Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed));
            start - now
        };
        if !wait.is_zero() {
            self.waiting.fetch_add(1, Ordering::Relaxed);
            let held = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
            self.last_held_ms.store(held, Ordering::Relaxed);
            tokio::time::sleep(wait).await;
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn pause(&self, d: Duration) {
        let mut next = self.next.lock();
        let until = Instant::now() + d;
        if *next < until {
            *next = until;
        }
    }

    /// Calls waiting for their turn now.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    pub(crate) fn reload_failures(&self) -> u64 {
        self.reload_failures.load(Ordering::Relaxed)
    }

    /// Whether the rate held work back within [`BUSY_WINDOW`]: the server
    /// would use a larger share of the budget.
    pub(crate) fn busy(&self) -> bool {
        let held = self.last_held_ms.load(Ordering::Relaxed);
        let now = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.waiting() > 0 || (held > 0 && now.saturating_sub(held) < BUSY_WINDOW.as_millis() as u64)
    }
}

/// The rate file's name beside the config file, where the operator puts it.
pub const RATE_FILE_NAME: &str = "zitadel-rate";

/// `zitadel-rate` beside the config file at `config`, when it exists.
pub fn beside_config(config: &Path) -> Option<PathBuf> {
    let path = config.parent()?.join(RATE_FILE_NAME);
    path.exists().then_some(path)
}

/// Parses the rate file: one positive number of requests per second.
pub(crate) fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the file is empty".into());
    }
    match t.parse::<f64>() {
        Ok(r) if r > 0.0 && r.is_finite() => Ok(r),
        _ => {
            Err(format!("'{}' is not a positive number of requests per second", t.chars().take(40).collect::<String>()))
        }
    }
}

/// Reads the rate file now, for the start: `None` when it is missing or unusable.
pub(crate) fn read_rate(path: &Path) -> Option<f64> {
    std::fs::read_to_string(path).ok().and_then(|t| parse_rate(&t).ok())
}

/// Waits between the two reads that must agree before a changed file is taken.
const SETTLE: Duration = Duration::from_millis(100);

/// Polls the rate file and applies a changed rate. Like the keys file
/// (`src/server/auth.rs`), a file that is missing, empty or not a positive
/// number keeps the current rate, with a WARN and one more reload failure;
/// a change is taken only when two reads [`SETTLE`] apart agree, so a
/// half-written file is never taken. The file is a ConfigMap key mounted as a
/// directory, which the kubelet updates in place without a restart.
pub(crate) fn spawn_rate_reloader(
    limiter: Arc<RateLimiter>,
    path: PathBuf,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    // The first read is taken now, so a change made right after the start counts.
    let mut last = std::fs::read_to_string(&path).map_err(|e| e.to_string());
    tokio::spawn(async move {
        let read = |p: PathBuf| async move { tokio::fs::read_to_string(&p).await.map_err(|e| e.to_string()) };
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            let now = read(path.clone()).await;
            if now == last {
                continue;
            }
            if now.is_ok() {
                tokio::time::sleep(SETTLE).await;
                if read(path.clone()).await != now {
                    continue;
                }
            }
            match now.as_deref().map_err(|e| format!("cannot read it: {e}")).and_then(parse_rate) {
                Ok(rate) => {
                    tracing::info!(path = %path.display(), rate, "ZITADEL request rate changed");
                    limiter.set_rate(rate);
                }
                Err(e) => {
                    limiter.reload_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(path = %path.display(), error = %e, "ZITADEL rate file changed but cannot be used; keeping the current rate");
                }
            }
            last = now;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_file_is_one_positive_number() {
        assert_eq!(parse_rate("12.5\n"), Ok(12.5));
        assert!(parse_rate("").is_err());
        assert!(parse_rate("  \n").is_err());
        assert!(parse_rate("0").is_err());
        assert!(parse_rate("-3").is_err());
        assert!(parse_rate("NaN").is_err());
        assert!(parse_rate("fast").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_rate_spaces_the_next_requests() {
        let l = RateLimiter::new(10.0);
        assert!((l.rate() - 10.0).abs() < 1e-9);
        let t0 = tokio::time::Instant::now();
        for _ in 0..3 {
            l.acquire().await;
        }
        // Slots at 0, 100 and 200 ms.
        assert!(t0.elapsed() >= Duration::from_millis(200));
        l.set_rate(2.0);
        let t1 = tokio::time::Instant::now();
        l.acquire().await;
        l.acquire().await;
        // The slot given at the old rate (300 ms), then one 500 ms later.
        assert!(t1.elapsed() >= Duration::from_millis(500), "{:?}", t1.elapsed());
        assert!(l.busy());
    }

    #[tokio::test]
    async fn a_lower_rate_counts_once_the_calls_scheduled_at_the_old_one_have_started() {
        let l = Arc::new(RateLimiter::new(10.0));
        let waiting: Vec<_> = (0..5)
            .map(|_| {
                let l = l.clone();
                tokio::spawn(async move { l.acquire().await })
            })
            .collect();
        while l.waiting() < 4 {
            tokio::task::yield_now().await;
        }
        l.set_rate(1.0);
        assert_eq!(l.rate(), 1.0);
        assert_eq!(l.effective_rate(), 10.0, "calls are still scheduled 100 ms apart");
        for w in waiting {
            w.await.unwrap();
        }
        // The last old slot has started; the next would come 100 ms later.
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert_eq!(l.effective_rate(), 1.0);
    }

    #[tokio::test]
    async fn reloader_keeps_the_rate_on_an_unusable_file_and_takes_a_good_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rate");
        std::fs::write(&path, "5\n").unwrap();
        let l = Arc::new(RateLimiter::new(read_rate(&path).unwrap()));
        let task = spawn_rate_reloader(l.clone(), path.clone(), Duration::from_millis(20));
        std::fs::write(&path, "").unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while l.reload_failures() == 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(l.reload_failures(), 1, "an empty file is a failure");
        assert!((l.rate() - 5.0).abs() < 1e-9, "and keeps the rate");
        std::fs::write(&path, "7.5").unwrap();
        while (l.rate() - 7.5).abs() > 1e-9 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!((l.rate() - 7.5).abs() < 1e-9);
        task.abort();
    }
}
