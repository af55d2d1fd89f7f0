//! When to try again after a failed or lost connection: full-jitter exponential backoff with a
//! fast-retry window. Pure: every method takes `now`, and the randomness comes in as an `Rng`,
//! so the schedule is unit-tested with a seeded generator and no sleeping.
//!
//! # The schedule
//! The delay before retry *n* is drawn uniformly from `[0, ceiling(n)]` ("full jitter": boxes
//! that lost the same ingest at the same moment spread out instead of reconnecting in waves).
//! The ceiling starts at `initial` and doubles per failure up to `cap`, except:
//!
//! - **Fast-retry window.** For the first `fast_retry_window` of an outage the ceiling stays at
//!   `fast_cap` (1 s). A restarting ingest comes back within seconds, and a refused connect on
//!   the way is cheap, so the sender is publishing again at most about `fast_cap` after the
//!   ingest is back. Plain exponential backoff cannot promise that: after three failures its
//!   ceiling is already 4 s. Once the window is over the ceiling doubles from there to `cap`.
//! - **Rejections end the window.** When the ingest answers and refuses (a rejected key, a
//!   platform that cannot hand out an address) retrying fast only hammers it (Polyv blocks an
//!   address that logs in too often for 5 minutes), so such a failure turns the window off for
//!   the rest of the outage.
//! - **Reset.** A session that stayed up for `reset_after` (3 s) ends the outage: the next loss
//!   starts again from `initial`, with a fresh fast window. A session that dies sooner counts
//!   as one more failure, so an ingest that accepts and then drops us at once (nginx-rtmp's
//!   `deny publish`, a failing auth hook, a CDN refusing a key after `Publish.Start`: all
//!   within a second) still backs off. 3 s rather than more, so that an ingest restarted
//!   several times in a row (a deployment, an operator retrying) gets the fast window every
//!   time; a session that carried 3 s of media was not a rejection in disguise, and reconnecting
//!   at most once per 3 s is no load on anyone.
//!
//! With the defaults (0.5 s, cap 30 s, window 10 s, fast cap 1 s) the ceilings are
//! 0.5, 1, 1, 1 … s for the first 10 s of an outage, then 1, 2, 4, 8, 16, 30, 30 … s; a run of
//! rejections gets 0.5, 1, 2, 4, 8, 16, 30 … s.

use std::time::Duration;
use tokio::time::Instant;

use crate::throttle::Throttle;

use rand::Rng;

/// Settings of [`Backoff`]; see the module docs for how they combine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackoffConfig {
    /// Ceiling of the first retry's delay: the first retry comes within this.
    pub initial: Duration,
    /// Highest ceiling.
    pub cap: Duration,
    /// How long after an outage starts the ceiling stays at `fast_cap` (zero: never).
    pub fast_retry_window: Duration,
    /// Ceiling during the fast-retry window.
    pub fast_cap: Duration,
    /// A session that stayed up this long resets the backoff.
    pub reset_after: Duration,
    /// Give up after this many consecutive failures (`None`: never, the default for a box that
    /// must come back on its own).
    pub max_attempts: Option<u32>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            cap: Duration::from_secs(30),
            fast_retry_window: Duration::from_secs(10),
            fast_cap: Duration::from_secs(1),
            reset_after: Duration::from_secs(3),
            max_attempts: None,
        }
    }
}

/// What kind of failure the backoff is told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// The ingest is down or the path to it is broken (refused, timed out, reset, stalled):
    /// cheap to retry, and worth retrying fast while it restarts.
    Unreachable,
    /// Something answered and said no, or cannot help right now (a rejected publish, the
    /// platform failing to hand out an address): retry, but never fast.
    Rejected,
}

/// The next retry, as decided by [`Backoff::on_failure`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retry {
    /// How long to wait before the next attempt: uniform in `[0, ceiling]`.
    pub delay: Duration,
    /// The ceiling the delay was drawn under (the "backoff step").
    pub ceiling: Duration,
    /// Consecutive failures so far in this outage, this one included.
    pub failures: u32,
}

/// The backoff state of one sender; see the module docs.
#[derive(Debug, Clone)]
pub struct Backoff {
    cfg: BackoffConfig,
    /// Consecutive failures since the last reset.
    failures: u32,
    /// The ceiling is `initial * 2^exponent` (before the caps).
    exponent: u32,
    /// When the first failure of this outage happened.
    outage_start: Option<Instant>,
    /// Whether the fast-retry window may still apply in this outage.
    fast_allowed: bool,
    /// When the current session reached publishing, if one is up.
    connected_at: Option<Instant>,
}

impl Backoff {
    pub fn new(cfg: BackoffConfig) -> Self {
        Self {
            cfg,
            failures: 0,
            exponent: 0,
            outage_start: None,
            fast_allowed: true,
            connected_at: None,
        }
    }

    pub fn config(&self) -> &BackoffConfig {
        &self.cfg
    }

    /// Consecutive failures since the last reset.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the current outage started, if one is going on.
    pub fn outage_start(&self) -> Option<Instant> {
        self.outage_start
    }

    /// An attempt failed (or a session was lost) at `now`. Returns when to retry, or `None`
    /// once `max_attempts` consecutive failures have happened.
    pub fn on_failure<R: Rng + ?Sized>(
        &mut self,
        now: Instant,
        kind: FailureKind,
        rng: &mut R,
    ) -> Option<Retry> {
        self.connected_at = None;
        let start = *self.outage_start.get_or_insert(now);
        if kind == FailureKind::Rejected {
            self.fast_allowed = false;
        }
        self.failures = self.failures.saturating_add(1);
        if self
            .cfg
            .max_attempts
            .is_some_and(|max| self.failures >= max)
        {
            return None;
        }
        let in_window =
            self.fast_allowed && now.saturating_duration_since(start) < self.cfg.fast_retry_window;
        let raw = self.raw_ceiling();
        let ceiling = if in_window {
            raw.min(self.cfg.fast_cap)
        } else {
            raw
        };
        // Inside the window the exponent stops once the fast cap is reached, so the growth
        // after the window continues from there rather than jumping straight to `cap`.
        if !(in_window && raw >= self.cfg.fast_cap) && raw < self.cfg.cap {
            self.exponent = self.exponent.saturating_add(1);
        }
        let delay = if ceiling.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(rng.gen_range(0..=ceiling.as_nanos().min(u64::MAX as u128) as u64))
        };
        Some(Retry {
            delay,
            ceiling,
            failures: self.failures,
        })
    }

    /// A session reached publishing at `now`.
    pub fn on_connected(&mut self, now: Instant) {
        self.connected_at = Some(now);
    }

    /// The session that reached publishing ended at `now` (call before
    /// [`Backoff::on_failure`] for the loss). Returns whether it lasted `reset_after` and so
    /// reset the backoff.
    pub fn on_disconnected(&mut self, now: Instant) -> bool {
        let long = self
            .connected_at
            .take()
            .is_some_and(|t| now.saturating_duration_since(t) >= self.cfg.reset_after);
        if long {
            self.reset();
        }
        long
    }

    /// Forgets the outage: the next failure starts from `initial` ("reconnect now", or a
    /// session that stayed up).
    pub fn reset(&mut self) {
        self.failures = 0;
        self.exponent = 0;
        self.outage_start = None;
        self.fast_allowed = true;
    }

    /// `initial * 2^exponent`, capped.
    fn raw_ceiling(&self) -> Duration {
        let factor = 1u32 << self.exponent.min(31);
        self.cfg
            .initial
            .checked_mul(factor)
            .unwrap_or(self.cfg.cap)
            .min(self.cfg.cap)
    }
}

/// Rate limit for "still failing" warnings: one per backoff step (when the ceiling grows), and
/// at the cap at most one per `repeat`. Everything else goes to DEBUG. Pure, `now` passed in.
#[derive(Debug, Clone)]
pub(crate) struct WarnLimiter {
    last_ceiling: Duration,
    repeat: Throttle<Instant>,
}

impl WarnLimiter {
    pub(crate) fn new(repeat: Duration) -> Self {
        Self {
            last_ceiling: Duration::ZERO,
            repeat: Throttle::new(repeat),
        }
    }

    /// Whether the failure that produced `ceiling` at `now` deserves a WARN.
    pub(crate) fn should_warn(&mut self, ceiling: Duration, now: Instant) -> bool {
        if ceiling > self.last_ceiling {
            // A new step always warns.
            self.repeat.reset();
        }
        let due = self.repeat.ready(now);
        if due {
            self.last_ceiling = self.last_ceiling.max(ceiling);
        }
        due
    }

    /// The outage is over: the next one warns from its first step again.
    pub(crate) fn reset(&mut self) {
        self.last_ceiling = Duration::ZERO;
        self.repeat.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    const MS: Duration = Duration::from_millis(1);

    fn rng() -> StdRng {
        StdRng::seed_from_u64(7)
    }

    /// Fails `n` times, each `gap` after the previous retry was due; returns the retries.
    fn fail(b: &mut Backoff, now: &mut Instant, kind: FailureKind, n: usize) -> Vec<Retry> {
        let mut rng = rng();
        (0..n)
            .map(|_| {
                let r = b.on_failure(*now, kind, &mut rng).expect("unlimited");
                *now += r.delay;
                r
            })
            .collect()
    }

    #[test]
    fn delays_stay_within_their_ceiling_and_are_jittered() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut now = Instant::now();
        let retries = fail(&mut b, &mut now, FailureKind::Unreachable, 200);
        for r in &retries {
            assert!(r.delay <= r.ceiling, "{r:?}");
        }
        // Full jitter: spread over the whole range, not clustered at the ceiling.
        let at_cap: Vec<_> = retries.iter().filter(|r| r.ceiling == b.cfg.cap).collect();
        assert!(at_cap.len() > 100);
        assert!(at_cap.iter().any(|r| r.delay < 10 * 1000 * MS));
        assert!(at_cap.iter().any(|r| r.delay > 20 * 1000 * MS));
        let first = retries[0];
        assert_eq!(
            first.ceiling,
            500 * MS,
            "the first retry comes within 0.5 s"
        );
        assert_eq!(first.failures, 1);
    }

    #[test]
    fn fast_window_holds_the_ceiling_at_one_second_then_it_doubles_to_the_cap() {
        let mut b = Backoff::new(BackoffConfig::default());
        let start = Instant::now();
        let mut rng = rng();
        // Failures every 300 ms: 10 s of fast retries.
        let mut ceilings = Vec::new();
        let mut now = start;
        while now < start + Duration::from_secs(10) {
            ceilings.push(
                b.on_failure(now, FailureKind::Unreachable, &mut rng)
                    .unwrap()
                    .ceiling,
            );
            now += 300 * MS;
        }
        assert_eq!(ceilings[0], 500 * MS);
        assert!(
            ceilings[1..].iter().all(|&c| c == 1000 * MS),
            "{ceilings:?}"
        );
        // After the window: 1 s (where the window left it), then doubling to the cap.
        let after: Vec<u64> = (0..8)
            .map(|i| {
                b.on_failure(
                    now + Duration::from_secs(i),
                    FailureKind::Unreachable,
                    &mut rng,
                )
                .unwrap()
                .ceiling
                .as_millis() as u64
            })
            .collect();
        assert_eq!(after, [1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]);
    }

    #[test]
    fn an_ingest_back_within_the_window_is_retried_within_a_second() {
        // The requirement behind the window: an outage of 1-3 s, refused connects meanwhile.
        for seed in 0..200 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut b = Backoff::new(BackoffConfig::default());
            let lost = Instant::now();
            let back = lost + Duration::from_millis(3000);
            let mut now = lost;
            loop {
                let r = b
                    .on_failure(now, FailureKind::Unreachable, &mut rng)
                    .unwrap();
                now += r.delay;
                if now >= back {
                    assert!(now - back <= 1000 * MS, "seed {seed}: {:?}", now - back);
                    break;
                }
            }
        }
    }

    #[test]
    fn rejections_never_retry_fast() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut now = Instant::now();
        let c: Vec<u64> = fail(&mut b, &mut now, FailureKind::Rejected, 8)
            .iter()
            .map(|r| r.ceiling.as_millis() as u64)
            .collect();
        assert_eq!(c, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);

        // A rejection in the middle of fast retries ends the window for this outage.
        let mut b = Backoff::new(BackoffConfig::default());
        let mut now = Instant::now();
        fail(&mut b, &mut now, FailureKind::Unreachable, 3);
        let r = fail(&mut b, &mut now, FailureKind::Rejected, 1)[0];
        assert_eq!(r.ceiling, 1000 * MS);
        let r = fail(&mut b, &mut now, FailureKind::Unreachable, 1)[0];
        assert_eq!(r.ceiling, 2000 * MS);
    }

    #[test]
    fn a_session_that_stayed_up_resets_a_short_one_does_not() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut now = Instant::now();
        fail(&mut b, &mut now, FailureKind::Rejected, 5);
        assert_eq!(b.failures(), 5);

        // Up for 2 s: a flapping ingest; the next failure continues the growth.
        b.on_connected(now);
        now += Duration::from_secs(2);
        assert!(!b.on_disconnected(now));
        let r = fail(&mut b, &mut now, FailureKind::Unreachable, 1)[0];
        assert_eq!(r.failures, 6);
        assert_eq!(r.ceiling, 16000 * MS);

        // Up for 10 s: healthy; the next loss starts over, with a fast window.
        b.on_connected(now);
        now += Duration::from_secs(10);
        assert!(b.on_disconnected(now));
        assert_eq!(b.failures(), 0);
        assert_eq!(b.outage_start(), None);
        let r = fail(&mut b, &mut now, FailureKind::Unreachable, 3);
        assert_eq!(
            r.iter().map(|r| r.ceiling).collect::<Vec<_>>(),
            [500 * MS, 1000 * MS, 1000 * MS]
        );
        assert_eq!(
            b.outage_start(),
            Some(now - r[0].delay - r[1].delay - r[2].delay)
        );
    }

    #[test]
    fn reset_starts_over() {
        let mut b = Backoff::new(BackoffConfig::default());
        let mut now = Instant::now();
        fail(&mut b, &mut now, FailureKind::Rejected, 6);
        b.reset();
        let r = fail(&mut b, &mut now, FailureKind::Unreachable, 1)[0];
        assert_eq!((r.failures, r.ceiling), (1, 500 * MS));
    }

    #[test]
    fn max_attempts_gives_up() {
        let mut b = Backoff::new(BackoffConfig {
            max_attempts: Some(3),
            ..BackoffConfig::default()
        });
        let mut rng = rng();
        let now = Instant::now();
        assert!(b
            .on_failure(now, FailureKind::Unreachable, &mut rng)
            .is_some());
        assert!(b
            .on_failure(now, FailureKind::Unreachable, &mut rng)
            .is_some());
        assert!(b
            .on_failure(now, FailureKind::Unreachable, &mut rng)
            .is_none());
    }

    #[test]
    fn odd_configurations_do_not_overflow_or_panic() {
        let mut rng = rng();
        let now = Instant::now();
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::ZERO,
            cap: Duration::ZERO,
            ..BackoffConfig::default()
        });
        for _ in 0..100 {
            let r = b
                .on_failure(now, FailureKind::Unreachable, &mut rng)
                .unwrap();
            assert_eq!(r.delay, Duration::ZERO);
        }
        let mut b = Backoff::new(BackoffConfig {
            initial: Duration::from_secs(u64::MAX / 4),
            cap: Duration::MAX,
            fast_retry_window: Duration::ZERO,
            ..BackoffConfig::default()
        });
        for _ in 0..100 {
            let r = b
                .on_failure(now, FailureKind::Unreachable, &mut rng)
                .unwrap();
            assert!(r.delay <= r.ceiling);
        }
        // No window: plain exponential backoff from `initial`.
        let mut b = Backoff::new(BackoffConfig {
            fast_retry_window: Duration::ZERO,
            ..BackoffConfig::default()
        });
        let mut t = now;
        let c: Vec<u64> = fail(&mut b, &mut t, FailureKind::Unreachable, 4)
            .iter()
            .map(|r| r.ceiling.as_millis() as u64)
            .collect();
        assert_eq!(c, [500, 1000, 2000, 4000]);
    }

    #[test]
    fn warnings_once_per_step_and_rarely_at_the_cap() {
        let mut w = WarnLimiter::new(Duration::from_secs(600));
        let t0 = Instant::now();
        assert!(w.should_warn(500 * MS, t0));
        assert!(w.should_warn(1000 * MS, t0 + 100 * MS));
        assert!(!w.should_warn(1000 * MS, t0 + 900 * MS));
        assert!(!w.should_warn(1000 * MS, t0 + 1800 * MS));
        assert!(w.should_warn(30000 * MS, t0 + Duration::from_secs(40)));
        assert!(!w.should_warn(30000 * MS, t0 + Duration::from_secs(70)));
        assert!(w.should_warn(30000 * MS, t0 + Duration::from_secs(641)));
        w.reset();
        assert!(w.should_warn(500 * MS, t0 + Duration::from_secs(700)));
    }
}
