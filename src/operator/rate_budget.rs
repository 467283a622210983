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
//! Shares are whole requests per second (see [`Budget::targets`]) and a
//! function of the set of busy servers and the overrides alone, so they
//! change only when that set does, not with every poll.

use std::collections::HashMap;

/// Fractional shares (only when there are more servers than whole requests
/// per second to divide) are multiples of this.
pub(crate) const STEP: f64 = 0.1;
/// What an idle server keeps, at most: enough for Entra's incremental
/// changes, and a burst of work marks it busy within a poll.
const IDLE_SHARE: f64 = 1.0;

/// What the operator knows about one tenant's share.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Share {
    /// The server reported work waiting for its rate (or a projection backlog).
    pub busy: bool,

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
    /// The operator's own slice: a twentieth of the budget, at least 1/s and
    /// at most half. The operator's calls are few (binding, key rotation).
    pub(crate) fn operator_share(&self) -> f64 {
        quantise((self.total / 20.0).max(1.0).min(self.total / 2.0))
    }

    /// What each tenant should get when every share has settled.
    ///
    /// Whole requests per second while the pool allows every server at least
    /// one: a server at `r`/s can start `ceil(r)` calls within one second, so
    /// with whole shares the calls in any one-second window stay within the
    /// budget. The remainder of an uneven division goes one each to the first
    /// busy servers by uid, so the shares add up to the whole pool and stay
    /// put while the set of busy servers does.
    pub(crate) fn targets(&self, shares: &HashMap<String, Share>) -> HashMap<String, f64> {
        let fixed: f64 = shares.values().filter_map(|s| s.fixed).sum();
        let pool = (self.total - self.operator_share() - fixed).max(0.0);
        let mut divided: Vec<(&String, bool)> =
            shares.iter().filter(|(_, s)| s.fixed.is_none()).map(|(uid, s)| (uid, s.busy)).collect();
        divided.sort();
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
        let busy = divided.iter().filter(|(_, b)| *b).count();
        let idle = n - busy;
        let busy_pool = (pool - idle as f64).floor();
        let (base, mut extra) = match busy {
            0 => (IDLE_SHARE, 0.0),
            b => ((busy_pool / b as f64).floor(), busy_pool - (busy_pool / b as f64).floor() * b as f64),
        };
        for (uid, is_busy) in divided {
            let share = if !is_busy {
                IDLE_SHARE
            } else if extra >= 1.0 {
                extra -= 1.0;
                base + 1.0
            } else {
                base
            };
            out.insert(uid.clone(), share);
        }
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
        assert_eq!(b.operator_share(), 2.0);
        let mut s = tenants(&[true, true, false, false]);
        pass(&b, &mut s, true);
        assert_eq!(s["t2"].written, Some(1.0));
        assert_eq!(s["t0"].written, Some(18.0));
        assert!(in_use(&s) + b.operator_share() <= 40.0);
        // 20 tenants all syncing: 38 / 20 = 1.9 each.
        // 20 tenants all syncing divide 38/s: 18 of them 2/s, 2 of them 1/s.
        let mut s = tenants(&[true; 20]);
        pass(&b, &mut s, true);
        let mut written: Vec<f64> = s.values().map(|x| x.written.unwrap()).collect();
        written.sort_by(f64::total_cmp);
        assert_eq!(written.iter().sum::<f64>(), 38.0);
        assert_eq!((written[0], written[1], written[2], written[19]), (1.0, 1.0, 2.0, 2.0));
        // More servers than the pool has whole requests: equal fractions.
        let mut s = tenants(&[false; 50]);
        pass(&b, &mut s, true);
        assert!(s.values().all(|x| x.written == Some(0.7)), "{s:?}");
        // An override is taken as it is and the rest divided.
        let mut s = tenants(&[true, true]);
        s.get_mut("t0").unwrap().fixed = Some(10.0);
        pass(&b, &mut s, true);
        assert_eq!((s["t0"].written, s["t1"].written), (Some(10.0), Some(28.0)));
    }

    #[test]
    fn shares_move_only_within_the_budget_until_servers_confirm() {
        let b = Budget { total: 40.0 };
        let mut s = tenants(&[true, false, false]);
        pass(&b, &mut s, true);
        assert_eq!(s["t0"].written, Some(36.0));
        // t1 gets work. Nothing confirms yet: t0 goes down at once, t1 may
        // not rise past what t0 may still be using.
        s.get_mut("t1").unwrap().busy = true;
        pass(&b, &mut s, false);
        assert_eq!(s["t0"].written, Some(19.0));
        assert_eq!(s["t1"].written, Some(1.0), "no headroom while t0 may run at 36");
        assert!(in_use(&s) + b.operator_share() <= 40.0 + 1e-9);
        // t0 confirms its lower share: t1 gets its target.
        s.get_mut("t0").unwrap().confirm(19.0);
        pass(&b, &mut s, true);
        assert_eq!(s["t1"].written, Some(18.0));
        assert!(in_use(&s) + b.operator_share() <= 40.0 + 1e-9);
        // Nothing changed: the next pass writes the same shares.
        let before = s.clone();
        pass(&b, &mut s, true);
        assert_eq!(before, s);
    }

    #[test]
    fn quantised_down() {
        assert_eq!(quantise(1.9), 1.9);
        assert_eq!(quantise(1.94), 1.9);
        assert_eq!(quantise(0.01), STEP);
    }
}
