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
//! Shares are rounded down to [`STEP`], so they change only when the set of
//! busy servers (or the overrides) change, not with every poll.

use std::collections::HashMap;

/// Shares are multiples of this (requests per second).
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
    pub(crate) fn target(&self, uid: &str, shares: &HashMap<String, Share>) -> f64 {
        if let Some(f) = shares.get(uid).and_then(|s| s.fixed) {
            return f;
        }
        let fixed: f64 = shares.values().filter_map(|s| s.fixed).sum();
        let pool = (self.total - self.operator_share() - fixed).max(0.0);
        let divided = shares.values().filter(|s| s.fixed.is_none());
        let (busy, idle) = divided.fold((0usize, 0usize), |(b, i), s| if s.busy { (b + 1, i) } else { (b, i + 1) });
        let all = (busy + idle).max(1) as f64;
        let idle_share = quantise(IDLE_SHARE.min(pool / all));
        let busy_here = shares.get(uid).is_some_and(|s| s.busy);
        if !busy_here || busy == 0 {
            return idle_share;
        }
        quantise(((pool - idle_share * idle as f64) / busy as f64).max(idle_share))
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
        let Some(written) = own.written else {
            return self.headroom(uid, shares).min(target).max(STEP);
        };
        if target <= written {
            return target;
        }
        quantise(self.headroom(uid, shares).min(target).max(written))
    }

    fn headroom(&self, uid: &str, shares: &HashMap<String, Share>) -> f64 {
        let others: f64 = shares.iter().filter(|(k, _)| k.as_str() != uid).map(|(_, s)| s.counted()).sum();
        quantise((self.total - self.operator_share() - others).max(0.0))
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
        let mut s = tenants(&[true; 20]);
        pass(&b, &mut s, true);
        assert!(s.values().all(|x| x.written == Some(1.9)), "{s:?}");
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
        assert_eq!(s["t0"].written, Some(18.5));
        assert_eq!(s["t1"].written, Some(1.0), "no headroom while t0 may run at 36");
        assert!(in_use(&s) + b.operator_share() <= 40.0 + 1e-9);
        // t0 confirms its lower share: t1 gets its target.
        s.get_mut("t0").unwrap().confirm(18.5);
        pass(&b, &mut s, true);
        assert_eq!(s["t1"].written, Some(18.5));
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
