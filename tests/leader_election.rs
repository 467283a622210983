//! Leader election against the fake Kubernetes API with wall clocks that
//! disagree by minutes: at most one candidate leads at any time, a live
//! leader keeps the lease, and a dead one is replaced after the lease
//! duration whichever way the standby's clock is off.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use parking_lot::Mutex;
use scim_operator::operator::leader::{Candidate, LeaseConfig, WallClock};
use scim_test_support::kube_fake::KubeFake;
use scim_test_support::wait_until;

const WAIT: Duration = Duration::from_secs(30);
const LEASE: Duration = Duration::from_secs(4);

/// Who believes it leads, and every time two did at once.
#[derive(Default)]
struct Leaders {
    leading: Vec<String>,
    overlaps: Vec<String>,
    took_over: Vec<String>,
}

fn skewed(by_minutes: i64) -> WallClock {
    Arc::new(move || Timestamp::now() + SignedDuration::from_mins(by_minutes))
}

/// Runs a candidate for ever: take the lease, lead until it is lost, again.
fn run(api: Api<Lease>, id: &str, clock: WallClock, leaders: Arc<Mutex<Leaders>>) -> tokio::task::JoinHandle<()> {
    let cfg = LeaseConfig {
        name: "scim-operator".into(),
        namespace: "operators".into(),
        identity: id.into(),
        duration: LEASE,
        renew_every: Duration::from_millis(250),
    };
    let id = id.to_string();
    tokio::spawn(async move {
        let mut c = Candidate::with_wall_clock(api, cfg, clock);
        loop {
            c.acquire().await;
            {
                let mut l = leaders.lock();
                if !l.leading.is_empty() {
                    let msg = format!("{id} took the lease while {:?} led", l.leading);
                    l.overlaps.push(msg);
                }
                l.leading.push(id.clone());
                l.took_over.push(id.clone());
            }
            c.hold().await;
            leaders.lock().leading.retain(|x| *x != id);
        }
    })
}

/// A crash: the process is gone without releasing the lease.
fn crash(task: tokio::task::JoinHandle<()>, id: &str, leaders: &Mutex<Leaders>) {
    task.abort();
    leaders.lock().leading.retain(|x| x != id);
}

fn transitions(kube: &KubeFake) -> (String, i64) {
    let lease = kube.get("coordination.k8s.io/v1", "leases", Some("operators"), "scim-operator").unwrap_or_default();
    let holder = lease["spec"]["holderIdentity"].as_str().unwrap_or_default().to_string();
    (holder, lease["spec"]["leaseTransitions"].as_i64().unwrap_or(-1))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clocks_minutes_apart_never_give_two_leaders() {
    scim_test_support::init_tracing();
    let kube = KubeFake::start().await;
    let api: Api<Lease> = Api::namespaced(kube.client(), "operators");
    let leaders = Arc::new(Mutex::new(Leaders::default()));

    let a = run(api.clone(), "a", skewed(0), leaders.clone());
    assert!(wait_until(WAIT, || async { leaders.lock().leading == ["a"] }).await);
    // b's clock is ten minutes ahead: a's renewTime looks ten minutes old to
    // it. A rule comparing timestamps would take the lease at once.
    let b = run(api.clone(), "b", skewed(10), leaders.clone());
    // Three lease durations with a renewing: b waits all along.
    let until = tokio::time::Instant::now() + LEASE * 3;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leaders.lock().took_over, ["a"], "b took the lease from a live leader");
    }
    assert_eq!(transitions(&kube), ("a".to_string(), 0));

    // a dies without releasing: b takes over once a's record has not changed
    // for a lease duration.
    crash(a, "a", &leaders);
    assert!(wait_until(WAIT, || async { leaders.lock().leading == ["b"] }).await);
    assert_eq!(transitions(&kube), ("b".to_string(), 1));

    // c's clock is ten minutes behind: b's renewTime lies twenty minutes in
    // its future. It must neither take the lease from b nor wait for that
    // future to arrive once b is gone.
    let c = run(api.clone(), "c", skewed(-10), leaders.clone());
    let until = tokio::time::Instant::now() + LEASE * 2;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(leaders.lock().took_over, ["a", "b"], "c took the lease from a live leader");
    }
    crash(b, "b", &leaders);
    assert!(wait_until(WAIT, || async { leaders.lock().leading == ["c"] }).await);
    assert_eq!(transitions(&kube), ("c".to_string(), 2));

    c.abort();
    let l = leaders.lock();
    assert!(l.overlaps.is_empty(), "two leaders at once: {:?}", l.overlaps);
    assert_eq!(l.took_over, ["a", "b", "c"]);
}
