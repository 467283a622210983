//! The ZITADEL client's request rate: a limiter whose rate can change while
//! requests wait, and the reloader that takes a new rate from a file the
//! operator rewrites (the tenant's share of the cluster-wide budget).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

// Tokio's clock, so that tests with paused time see the schedule move.
use tokio::time::Instant;

/// A server that had to hold a call back this recently still has work.
/// Short, so that a server done with its work hands its share on at the
/// operator's next look; long enough to cover the gaps between Entra's
/// requests within a cycle.
const BUSY_WINDOW: Duration = Duration::from_secs(3);

/// Spaces requests so that at most `rate` start per second, and holds all of
/// them back after a 429 for as long as ZITADEL asked.
///
/// Calls take tickets in order; ticket `t` may start at
/// `base_time + (t - base_ticket) × interval`. A new rate (or a pause)
/// re-plans the calls already waiting from the last start, so it holds for
/// them too: a lower rate at once, a higher one without waiting out the
/// slots given at the old rate.
pub(crate) struct RateLimiter {
    /// Nanoseconds between two request starts.
    interval_ns: AtomicU64,
    schedule: parking_lot::Mutex<Schedule>,
    /// Wakes the waiting calls when the schedule is re-planned.
    replanned: tokio::sync::Notify,
    /// Calls waiting for their turn now.
    waiting: AtomicUsize,
    created: Instant,
    /// When a call last had to wait, in ms since `created` (0: never).
    last_held_ms: AtomicU64,
    /// Rate files that changed but could not be used.
    reload_failures: AtomicU64,
}

struct Schedule {
    base_ticket: u64,
    base_time: Instant,
    next_ticket: u64,
    /// Every ticket below this has started.
    started_below: u64,
    last_start: Option<Instant>,
}

impl Schedule {
    fn slot(&self, ticket: u64, interval: Duration) -> Instant {
        let steps = u32::try_from(ticket.saturating_sub(self.base_ticket)).unwrap_or(u32::MAX);
        self.base_time + interval * steps
    }

    /// The first call not yet started goes no earlier than `earliest` and
    /// one interval after the last start; the others follow it.
    fn replan(&mut self, interval: Duration, earliest: Instant) {
        self.base_ticket = self.started_below;
        self.base_time = self.last_start.map_or(earliest, |l| (l + interval).max(earliest));
    }
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
            schedule: parking_lot::Mutex::new(Schedule {
                base_ticket: 0,
                base_time: now,
                next_ticket: 0,
                started_below: 0,
                last_start: None,
            }),
            replanned: tokio::sync::Notify::new(),
            waiting: AtomicUsize::new(0),
            created: now,
            last_held_ms: AtomicU64::new(0),
            reload_failures: AtomicU64::new(0),
        }
    }

    fn interval(&self) -> Duration {
        Duration::from_nanos(self.interval_ns.load(Ordering::Relaxed))
    }

    /// The rate calls start at, which the server reports. Calls already
    /// waiting follow a new rate at once, so it is the rate set.
    pub(crate) fn effective_rate(&self) -> f64 {
        self.rate()
    }

    /// Requests per second now allowed.
    pub(crate) fn rate(&self) -> f64 {
        // Rounded: 7.5/s is an interval of 133333333 ns, which reads back as 7.50000001875.
        let second = 1e9 + ARRIVAL_GUARD.as_nanos() as f64;
        let exact = second / self.interval_ns.load(Ordering::Relaxed) as f64;
        (exact * 1e6).round() / 1e6
    }

    /// Takes effect for every call not yet started, spaced from the last start.
    pub(crate) fn set_rate(&self, rate: f64) {
        self.interval_ns.store(interval_ns(rate), Ordering::Relaxed);
        self.schedule.lock().replan(self.interval(), Instant::now());
        self.replanned.notify_waiters();
    }

    pub(crate) async fn acquire(&self) {
        let ticket = {
            let mut s = self.schedule.lock();
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            let now = Instant::now();
            if s.slot(ticket, self.interval()) < now {
                // Idle until now: the schedule starts again from now.
                s.started_below = s.started_below.max(ticket);
                s.replan(self.interval(), now);
            }
            ticket
        };
        let mut held = false;
        loop {
            let replanned = self.replanned.notified();
            tokio::pin!(replanned);
            replanned.as_mut().enable();
            let wait = {
                let mut s = self.schedule.lock();
                let now = Instant::now();
                let wait = s.slot(ticket, self.interval()).saturating_duration_since(now);
                if wait.is_zero() {
                    s.started_below = s.started_below.max(ticket + 1);
                    s.last_start = Some(s.last_start.map_or(now, |l| l.max(now)));
                }
                wait
            };
            if wait.is_zero() {
                break;
            }
            if !held {
                held = true;
                self.waiting.fetch_add(1, Ordering::Relaxed);
                let ms = u64::try_from(self.created.elapsed().as_millis()).unwrap_or(u64::MAX).max(1);
                self.last_held_ms.store(ms, Ordering::Relaxed);
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = &mut replanned => {}
            }
        }
        if held {
            self.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn pause(&self, d: Duration) {
        let mut s = self.schedule.lock();
        let now = Instant::now();
        let first_waiting = s.slot(s.started_below, self.interval());
        s.replan(self.interval(), first_waiting.max(now + d));
        drop(s);
        self.replanned.notify_waiters();
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

/// How often the rate file is read: a lower share must be in force (and
/// reported) before the operator lets another server rise, so every
/// interval here delays the whole cluster's division. Reading a file of a
/// few bytes twice a second costs nothing.
pub(crate) const RELOAD_INTERVAL: Duration = Duration::from_millis(500);

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

    /// Starts `n` calls at once; their start times, once all have started.
    async fn starts(l: &Arc<RateLimiter>, n: usize, then_rate: f64) -> Vec<Instant> {
        let at = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let calls: Vec<_> = (0..n)
            .map(|_| {
                let (l, at) = (l.clone(), at.clone());
                tokio::spawn(async move {
                    l.acquire().await;
                    at.lock().push(Instant::now());
                })
            })
            .collect();
        while l.waiting() < n - 1 {
            tokio::task::yield_now().await;
        }
        l.set_rate(then_rate);
        for c in calls {
            c.await.unwrap();
        }
        let mut at = at.lock().clone();
        at.sort();
        at
    }

    #[tokio::test(start_paused = true)]
    async fn calls_already_waiting_follow_a_new_rate() {
        let l = Arc::new(RateLimiter::new(1.0));
        // Five calls at 1/s: one starts, four wait. Raised to 10/s, the four
        // go 105 ms apart rather than in the 1 s slots they were given.
        let at = starts(&l, 5, 10.0).await;
        let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g >= Duration::from_millis(104) && *g < Duration::from_millis(200)), "{gaps:?}");
        // Lowered to 1/s with four waiting: they go 1.05 s apart at once.
        let at = starts(&l, 5, 1.0).await;
        let gaps: Vec<Duration> = at.windows(2).skip(1).map(|w| w[1] - w[0]).collect();
        assert!(gaps.iter().all(|g| *g >= Duration::from_millis(1049)), "{gaps:?}");
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
