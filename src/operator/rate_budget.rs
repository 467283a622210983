//! Dividing the cluster's ZITADEL request budget (ZITADEL Cloud bans an
//! address above 50 requests/s, and every server leaves through the same
//! NAT) between the operator and the tenant servers, pure.
//!
//! The operator keeps a fixed slice; tenants with a `maxRequestsPerSecond`
//! in their spec get exactly that; the rest is divided so that an idle
//! server keeps a small share and the servers with work split what is left.
//! A share is written into the tenant's ConfigMap, which the server re-reads
//! in place, and the server reports the rate it runs at in `/status`.
//!
//! Never above the budget, even while shares move: a share goes down at once,
//! but goes up only within the headroom left by every other server's larger
//! of (the rate it last reported, the highest share written to it since).
//!
//! Shares are whole requests per second (see [`Budget::targets`]), so an
//! uneven division leaves some busy servers one request per second behind
//! the others. The one left over of an uneven division goes to the busy
//! servers that have made the fewest calls since they turned busy, so every
//! server with work progresses alike instead of some finishing long after
//! the rest. A division is kept (the plan, [`Budget::replan`]) until the busy
//! set changes or the servers it favours are [`SWAP_LAG`] calls ahead, so
//! shares do not move with every poll.

use std::collections::HashMap;

/// Fractional shares (only when there are more servers than whole requests
/// per second to divide) are multiples of this.
pub(crate) const STEP: f64 = 0.1;
/// What an idle server keeps, at most: enough for Entra's incremental
/// changes, and a burst of work marks it busy within a poll.
const IDLE_SHARE: f64 = 1.0;
/// A plan is kept until a server it gives more has made this many calls
/// more (since turning busy) than one it gives less. Every change of plan
/// holds a share back for a moment (the lower one must be confirmed first),
/// so swapping at every poll would cost more than the lag it evens out.
const SWAP_LAG: u64 = 6;

/// What the operator knows about one tenant's share.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Share {
    /// The server reported work waiting for its rate (or a projection backlog).
    pub busy: bool,
    /// ZITADEL calls the server has made (its `/status` counter), and the
    /// count when it last turned busy.
    pub calls: u64,
    pub busy_from: u64,
    /// Its share in the division in force, and whether it was busy then.
    pub planned: Option<f64>,
    pub planned_busy: bool,

    /// `spec.zitadel.maxRequestsPerSecond`: fixed, outside the division.
    pub fixed: Option<f64>,
    /// The rate the server last reported running at.
    pub confirmed: Option<f64>,
    /// The share last written to its ConfigMap.
    pub written: Option<f64>,
    /// The highest share written since the server last confirmed `written`:
    /// the server may run at any of them until it says otherwise.
    pub unconfirmed_max: f64,
    /// Known only from its ConfigMap in the cache (not yet reconciled by this
    /// process), in this namespace: dropped when the ConfigMap is gone.
    pub seeded_in: Option<String>,
}

impl Share {
    /// The most this server may be running at now.
    fn counted(&self) -> f64 {
        self.confirmed.unwrap_or(0.0).max(self.unconfirmed_max).max(self.written.unwrap_or(0.0))
    }

    /// Calls made since the server last turned busy.
    fn served(&self) -> u64 {
        self.calls.saturating_sub(self.busy_from)
    }

    /// What the server's `/status` says about its work: whether it has any,
    /// and its call counter (which starts again from 0 when it restarts).
    pub(crate) fn observe_work(&mut self, busy: bool, calls: u64) {
        if (busy && !self.busy) || calls < self.calls {
            self.busy_from = if calls < self.calls { 0 } else { calls };
        }
        self.busy = busy;
        self.calls = calls;
    }

    /// The server reported `rate` in `/status`.
    pub(crate) fn confirm(&mut self, rate: f64) {
        self.confirmed = Some(rate);
        if self.written.is_some_and(|w| (w - rate).abs() < STEP / 2.0) {
            self.unconfirmed_max = rate;
        }
    }

    /// `share` is in the ConfigMap now.
    pub(crate) fn wrote(&mut self, share: f64) {
        self.written = Some(share);
        self.unconfirmed_max = self.unconfirmed_max.max(share);
    }

    /// Whether the server has not yet reported running at its written share.
    pub(crate) fn unconfirmed(&self) -> bool {
        match (self.written, self.confirmed) {
            (Some(w), Some(c)) => (w - c).abs() >= STEP / 2.0,
            (Some(_), None) => true,
            _ => false,
        }
    }
}

/// Rounds down to a multiple of [`STEP`], and not below one step.
pub(crate) fn quantise(rate: f64) -> f64 {
    // The small epsilon keeps 1.9 from becoming 1.8 through 18.999999;
    // dividing by the steps per unit keeps 1.9 exact (19 × 0.1 is not).
    let steps_per_unit = (1.0 / STEP).round();
    ((rate * steps_per_unit + 1e-9).floor() / steps_per_unit).max(STEP)
}

/// The cluster-wide budget in requests per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Budget {
    pub total: f64,
}

impl Budget {
    /// The operator's own slice: a fortieth of the budget, at least 1/s and
    /// at most half. The operator's calls are few (binding a tenant takes
    /// about five, then a drift check every resync), while every request per
    /// second kept here is one a tenant's sync cannot use.
    pub(crate) fn operator_share(&self) -> f64 {
        quantise((self.total / 40.0).max(1.0).min(self.total / 2.0))
    }

    /// What each tenant should get when every share has settled: the plan in
    /// force while it still fits (see [`SWAP_LAG`]), else a fresh division.
    pub(crate) fn targets(&self, shares: &HashMap<String, Share>) -> HashMap<String, f64> {
        let fresh = self.division(shares);
        self.kept_plan(shares, &fresh).unwrap_or(fresh)
    }

    /// Records the current targets as the plan in force. Called whenever
    /// what the division depends on was observed (busy set, calls made,
    /// overrides).
    pub(crate) fn replan(&self, shares: &mut HashMap<String, Share>) {
        let targets = self.targets(shares);
        for (uid, share) in shares.iter_mut() {
            share.planned = targets.get(uid).copied();
            share.planned_busy = share.busy;
        }
    }

    /// The plan in force, when it divides the same pool between the same busy
    /// servers as `fresh` and favours no server that is far ahead.
    fn kept_plan(&self, shares: &HashMap<String, Share>, fresh: &HashMap<String, f64>) -> Option<HashMap<String, f64>> {
        let mut plan = HashMap::with_capacity(shares.len());
        let (mut planned_pool, mut fresh_pool) = (0.0, 0.0);
        for (uid, share) in shares {
            let planned = share.planned?;
            let now = *fresh.get(uid)?;
            if share.planned_busy != share.busy {
                return None;
            }
            if share.busy && share.fixed.is_none() {
                planned_pool += planned;
                fresh_pool += now;
            } else if (planned - now).abs() > 1e-9 {
                return None;
            }
            plan.insert(uid.clone(), planned);
        }
        if (planned_pool - fresh_pool).abs() > 1e-9 {
            return None;
        }
        let divided = shares
            .iter()
            .filter(|(_, s)| s.busy && s.fixed.is_none())
            .map(|(uid, s)| (plan.get(uid).copied().unwrap_or(0.0), s.served()))
            .collect();
        (most_ahead(divided) <= SWAP_LAG).then_some(plan)
    }

    /// A fresh division of the budget.
    ///
    /// Whole requests per second while the pool allows every server at least
    /// one: a server at `r`/s can start `ceil(r)` calls within one second, so
    /// with whole shares the calls in any one-second window stay within the
    /// budget. The busy servers split the pool evenly, and the remainder of an
    /// uneven division goes one each to those that have made the fewest calls
    /// since they turned busy (then by uid), so the shares add up to the
    /// whole pool.
    fn division(&self, shares: &HashMap<String, Share>) -> HashMap<String, f64> {
        let fixed: f64 = shares.values().filter_map(|s| s.fixed).sum();
        let pool = (self.total - self.operator_share() - fixed).max(0.0);
        let mut divided: Vec<(&String, &Share)> = shares.iter().filter(|(_, s)| s.fixed.is_none()).collect();
        divided.sort_by(|a, b| a.0.cmp(b.0));
        let mut out: HashMap<String, f64> =
            shares.iter().filter_map(|(uid, s)| s.fixed.map(|f| (uid.clone(), f))).collect();
        let n = divided.len();
        if n == 0 {
            return out;
        }
        if pool < n as f64 {
            // More servers than whole requests: each gets an equal fraction.
            let each = quantise(pool / n as f64);
            out.extend(divided.into_iter().map(|(uid, _)| (uid.clone(), each)));
            return out;
        }
        let (busy, idle): (Vec<_>, Vec<_>) = divided.into_iter().partition(|(_, s)| s.busy);
        out.extend(idle.iter().map(|(uid, _)| ((*uid).clone(), IDLE_SHARE)));
        let busy_pool = (pool - idle.len() as f64 * IDLE_SHARE).floor();
        out.extend(evenly(busy_pool, &busy));
        out
    }

    pub(crate) fn target(&self, uid: &str, shares: &HashMap<String, Share>) -> f64 {
        self.targets(shares).get(uid).copied().unwrap_or(IDLE_SHARE)
    }

    /// What to write for `uid` now: its target, except that an increase is
    /// held to the headroom the other servers leave (see the module's
    /// documentation); it never goes below what is written already.
    pub(crate) fn grant(&self, uid: &str, shares: &HashMap<String, Share>) -> f64 {
        let target = self.target(uid, shares);
        let own = shares.get(uid).cloned().unwrap_or_default();
        if own.fixed.is_some() {
            return target;
        }
        let headroom = self.headroom(uid, shares);
        // Partial increases stay whole when the target is.
        let allowed = if target >= 1.0 { headroom.floor() } else { quantise(headroom) };
        match own.written {
            Some(written) if target <= written => target,
            Some(written) => allowed.min(target).max(written),
            None => allowed.min(target).max(STEP),
        }
    }

    fn headroom(&self, uid: &str, shares: &HashMap<String, Share>) -> f64 {
        let others: f64 = shares.iter().filter(|(k, _)| k.as_str() != uid).map(|(_, s)| s.counted()).sum();
        (self.total - self.operator_share() - others).max(0.0)
    }
}

/// How many calls a server given a larger share (share, calls served) is
/// ahead of one given a smaller share, at most. Sorted by share, each server
/// is compared with the least served of every smaller share: once per server
/// rather than once per pair, which a thousand busy tenants would feel on
/// every pass.
fn most_ahead(mut divided: Vec<(f64, u64)>) -> u64 {
    divided.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut ahead, mut least_served_below) = (0, None::<u64>);
    for level in divided.chunk_by(|a, b| a.0 == b.0) {
        if let Some(low) = least_served_below {
            ahead = level.iter().map(|(_, served)| served.saturating_sub(low)).fold(ahead, u64::max);
        }
        let least = level.iter().map(|(_, served)| *served).min();
        least_served_below = least_served_below.into_iter().chain(least).min();
    }
    ahead
}

/// `pool` whole requests per second between `busy` servers (sorted by uid,
/// `pool` at least one each): evenly, the remainder to the least served.
fn evenly(pool: f64, busy: &[(&String, &Share)]) -> Vec<(String, f64)> {
    let Some(n) = std::num::NonZeroUsize::new(busy.len()) else { return Vec::new() };
    let base = (pool / n.get() as f64).floor();
    let extra = (pool - base * n.get() as f64).round() as usize;
    let mut order: Vec<usize> = (0..busy.len()).collect();
    // Stable: ties keep uid order.
    order.sort_by_key(|&i| busy[i].1.served());
    let mut out: Vec<(String, f64)> = busy.iter().map(|(uid, _)| ((*uid).clone(), base)).collect();
    for &i in order.iter().take(extra) {
        out[i].1 += 1.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenants(busy: &[bool]) -> HashMap<String, Share> {
        busy.iter().enumerate().map(|(i, b)| (format!("t{i}"), Share { busy: *b, ..Default::default() })).collect()
    }

    /// Writes every tenant's grant once (in uid order), the server confirming at once or not.
    fn pass(b: &Budget, shares: &mut HashMap<String, Share>, confirm: bool) {
        let mut uids: Vec<String> = shares.keys().cloned().collect();
        uids.sort();
        for uid in uids {
            let g = b.grant(&uid, shares);
            let s = shares.get_mut(&uid).unwrap();
            s.wrote(g);
            if confirm {
                s.confirm(g);
            }
        }
    }

    fn in_use(shares: &HashMap<String, Share>) -> f64 {
        shares.values().map(Share::counted).sum()
    }

    #[test]
    fn busy_servers_split_what_idle_ones_leave() {
        let b = Budget { total: 40.0 };
        assert_eq!(b.operator_share(), 1.0);
        let mut s = tenants(&[true, true, false, false]);
        pass(&b, &mut s, true);
        assert_eq!(s["t2"].written, Some(1.0));
        assert_eq!((s["t0"].written, s["t1"].written), (Some(19.0), Some(18.0)));
        assert!(in_use(&s) + b.operator_share() <= 40.0);
        // 20 tenants all syncing divide 39/s: 19 of them 2/s, one 1/s.
        let mut s = tenants(&[true; 20]);
        pass(&b, &mut s, true);
        let mut written: Vec<f64> = s.values().map(|x| x.written.unwrap()).collect();
        written.sort_by(f64::total_cmp);
        assert_eq!(written.iter().sum::<f64>(), 39.0);
        assert_eq!((written[0], written[1], written[19]), (1.0, 2.0, 2.0));
        // More servers than the pool has whole requests: equal fractions.
        let mut s = tenants(&[false; 50]);
        pass(&b, &mut s, true);
        assert!(s.values().all(|x| x.written == Some(0.7)), "{s:?}");
        // An override is taken as it is and the rest divided.
        let mut s = tenants(&[true, true]);
        s.get_mut("t0").unwrap().fixed = Some(10.0);
        pass(&b, &mut s, true);
        assert_eq!((s["t0"].written, s["t1"].written), (Some(10.0), Some(29.0)));
    }

    #[test]
    fn shares_move_only_within_the_budget_until_servers_confirm() {
        let b = Budget { total: 40.0 };
        let mut s = tenants(&[true, false, false]);
        pass(&b, &mut s, true);
        assert_eq!(s["t0"].written, Some(37.0));
        // t1 gets work. Nothing confirms yet: t0 goes down at once, t1 may
        // not rise past what t0 may still be using.
        s.get_mut("t1").unwrap().busy = true;
        pass(&b, &mut s, false);
        assert_eq!(s["t0"].written, Some(19.0));
        assert_eq!(s["t1"].written, Some(1.0), "no headroom while t0 may run at 37");
        assert!(in_use(&s) + b.operator_share() <= 40.0 + 1e-9);
        // t0 confirms its lower share: t1 gets its target.
        s.get_mut("t0").unwrap().confirm(19.0);
        pass(&b, &mut s, true);
        assert_eq!(s["t1"].written, Some(19.0));
        assert!(in_use(&s) + b.operator_share() <= 40.0 + 1e-9);
        // Nothing changed: the next pass writes the same shares.
        let before = s.clone();
        pass(&b, &mut s, true);
        assert_eq!(before, s);
    }

    #[test]
    fn the_remainder_goes_to_the_least_served_and_moves_only_past_the_lag() {
        let b = Budget { total: 40.0 };
        let mut s = tenants(&[true; 20]);
        b.replan(&mut s);
        // 39 between 20: the last by uid (t9) at 1/s.
        let behind = |s: &HashMap<String, Share>| {
            let mut v: Vec<String> = s.iter().filter(|(_, x)| x.planned == Some(1.0)).map(|(k, _)| k.clone()).collect();
            v.sort();
            v
        };
        assert_eq!(behind(&s), ["t9"]);
        assert_eq!(s.values().filter_map(|x| x.planned).sum::<f64>(), 39.0);
        let run = |s: &mut HashMap<String, Share>, secs: u64| {
            for x in s.values_mut() {
                let calls = x.calls + secs * x.planned.unwrap_or(0.0) as u64;
                x.observe_work(true, calls);
            }
        };
        // Three seconds on: t9 is 3 calls behind; kept.
        run(&mut s, 3);
        let before = s.clone();
        b.replan(&mut s);
        assert_eq!(behind(&s), ["t9"], "within the lag: kept");
        assert_eq!(
            s.iter().map(|(k, x)| (k.clone(), x.planned)).collect::<HashMap<_, _>>(),
            before.iter().map(|(k, x)| (k.clone(), x.planned)).collect::<HashMap<_, _>>()
        );
        // Seven seconds on: 7 calls behind; it gets 2/s, and another 1/s.
        run(&mut s, 4);
        b.replan(&mut s);
        assert_eq!(s["t9"].planned, Some(2.0));
        assert_eq!(behind(&s).len(), 1);
        assert_eq!(s.values().filter_map(|x| x.planned).sum::<f64>(), 39.0);
        // A server going idle is divided for at once; a restarted server's
        // counter starts again from 0.
        s.get_mut("t0").unwrap().observe_work(false, 20);
        b.replan(&mut s);
        assert_eq!(s["t0"].planned, Some(1.0));
        assert_eq!(s.values().filter_map(|x| x.planned).sum::<f64>(), 39.0);
        s.get_mut("t1").unwrap().observe_work(true, 2);
        assert_eq!(s["t1"].served(), 2);
    }

    proptest::proptest! {
        /// Against the definition: every pair with a larger and a smaller share.
        #[test]
        fn most_ahead_is_the_largest_lead_over_any_smaller_share(
            divided in proptest::collection::vec((0u8..4, 0u64..50), 0..12),
        ) {
            let divided: Vec<(f64, u64)> = divided.into_iter().map(|(share, served)| (f64::from(share), served)).collect();
            let pairwise = divided
                .iter()
                .flat_map(|(more, a)| divided.iter().filter(move |(less, _)| less < more).map(move |(_, b)| a.saturating_sub(*b)))
                .max()
                .unwrap_or(0);
            proptest::prop_assert_eq!(most_ahead(divided), pairwise);
        }
    }

    #[test]
    fn quantised_down() {
        assert_eq!(quantise(1.9), 1.9);
        assert_eq!(quantise(1.94), 1.9);
        assert_eq!(quantise(0.01), STEP);
    }
}
