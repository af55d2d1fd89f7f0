//! Polyv's rate limit, counted per client IP: more than `per_10s` requests within 10 s block
//! that IP for `block_s` seconds (Polyv: 1500 and 5 minutes, polyv-java-sdk
//! `docs/live/limit.md`, for the whole api.polyv.net domain).
//!
//! Sans-IO: the caller passes the simulator's `now` and the current settings, so the counting
//! is tested with an injected clock. Which requests count is the caller's choice (see
//! `handlers`). (inferred) The window slides (a request counts for 10 s after it arrives),
//! requests answered while blocked are not counted, and counting starts afresh when a block
//! ends; Polyv documents none of this.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use serde::Serialize;

/// The counting window, in ms.
pub const WINDOW_MS: i64 = 10_000;
/// Past this many tracked IPs, idle ones are forgotten.
const PRUNE_ABOVE: usize = 1024;

#[derive(Debug, Default)]
struct PerIp {
    /// Arrival times (ms) of the requests still inside the window, oldest first.
    recent: VecDeque<i64>,
    /// When the current block began.
    blocked_since: Option<i64>,
}

/// A blocked IP, for `GET /_sim/faults`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Blocked {
    pub ip: String,
    pub since_ms: i64,
    pub until_ms: i64,
}

/// Request counts and blocks per client IP.
#[derive(Debug, Default)]
pub struct Limiter {
    ips: HashMap<IpAddr, PerIp>,
}

fn block_ms(block_s: u64) -> i64 {
    i64::try_from(block_s.saturating_mul(1000)).unwrap_or(i64::MAX)
}

impl Limiter {
    /// Counts one request from `ip` at `now_ms`. `false`: the IP is blocked (now or by this
    /// very request) and the request must be refused. `per_10s == 0` counts nothing.
    pub fn admit(&mut self, ip: IpAddr, now_ms: i64, per_10s: u32, block_s: u64) -> bool {
        if per_10s == 0 {
            return true;
        }
        if self.ips.len() > PRUNE_ABOVE {
            self.prune(now_ms, block_s);
        }
        let st = self.ips.entry(ip).or_default();
        if let Some(since) = st.blocked_since {
            if now_ms < since.saturating_add(block_ms(block_s)) {
                return false;
            }
            st.blocked_since = None;
        }
        let oldest_kept = now_ms.saturating_sub(WINDOW_MS);
        while st.recent.front().is_some_and(|&t| t <= oldest_kept) {
            st.recent.pop_front();
        }
        st.recent.push_back(now_ms);
        if st.recent.len() > per_10s as usize {
            st.recent.clear();
            st.blocked_since = Some(now_ms);
            return false;
        }
        true
    }

    /// The IPs blocked at `now_ms` under the current `block_s`.
    pub fn blocked(&self, now_ms: i64, block_s: u64) -> Vec<Blocked> {
        let mut out: Vec<Blocked> = self
            .ips
            .iter()
            .filter_map(|(ip, st)| {
                let since = st.blocked_since?;
                let until = since.saturating_add(block_ms(block_s));
                (now_ms < until).then(|| Blocked {
                    ip: ip.to_string(),
                    since_ms: since,
                    until_ms: until,
                })
            })
            .collect();
        out.sort_by(|a, b| a.ip.cmp(&b.ip));
        out
    }

    /// Forgets every count and block.
    pub fn clear(&mut self) {
        self.ips.clear();
    }

    fn prune(&mut self, now_ms: i64, block_s: u64) {
        let oldest_kept = now_ms.saturating_sub(WINDOW_MS);
        self.ips.retain(|_, st| {
            st.blocked_since
                .is_some_and(|s| now_ms < s.saturating_add(block_ms(block_s)))
                || st.recent.back().is_some_and(|&t| t > oldest_kept)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_700_000_000_000;
    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 1));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

    #[test]
    fn polyvs_numbers() {
        let mut l = Limiter::default();
        for i in 0..1500 {
            assert!(l.admit(A, T0 + i * 6, 1500, 300), "request {}", i + 1);
        }
        // The 1501st within 10 s blocks.
        assert!(!l.admit(A, T0 + 9_000, 1500, 300));
        // Another IP is unaffected.
        assert!(l.admit(B, T0 + 9_000, 1500, 300));
        assert!(!l.admit(A, T0 + 9_000 + 299_999, 1500, 300));
        assert_eq!(
            l.blocked(T0 + 9_000 + 299_999, 300),
            vec![Blocked {
                ip: "127.0.0.1".into(),
                since_ms: T0 + 9_000,
                until_ms: T0 + 309_000
            }]
        );
        // Free exactly 300 s after the block began, counting afresh.
        assert!(l.admit(A, T0 + 9_000 + 300_000, 1500, 300));
        assert!(l.blocked(T0 + 309_000, 300).is_empty());
    }

    #[test]
    fn window_slides() {
        let mut l = Limiter::default();
        for i in 0..5 {
            assert!(l.admit(A, T0 + i * 1000, 5, 4));
        }
        // The first request (at T0) leaves the window at T0 + 10 s.
        assert!(l.admit(A, T0 + 10_000, 5, 4));
        assert!(!l.admit(A, T0 + 10_001, 5, 4));
        // block_s is read at check time: a shorter block ends an existing one sooner.
        assert!(!l.admit(A, T0 + 12_000, 5, 4));
        assert!(l.admit(A, T0 + 12_001, 5, 1));
        // 0 counts nothing.
        let mut l = Limiter::default();
        for _ in 0..10 {
            assert!(l.admit(A, T0, 0, 300));
        }
        l.admit(A, T0, 1, 300);
        assert!(!l.admit(A, T0, 1, 300));
        l.clear();
        assert!(l.admit(A, T0, 1, 300));
    }

    #[test]
    fn idle_ips_are_forgotten() {
        let mut l = Limiter::default();
        for i in 0..=PRUNE_ABOVE as u32 {
            l.admit(IpAddr::from(i.to_be_bytes()), T0, 10, 300);
        }
        assert!(l.ips.len() > PRUNE_ABOVE);
        l.admit(A, T0 + WINDOW_MS, 10, 300);
        assert_eq!(l.ips.len(), 1);
    }
}
