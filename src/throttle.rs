//! "At most once per interval", for log lines: the one throttle every module uses (ring and
//! recorder drops, capture resyncs and drops, the viewer poller, the sender's repeated
//! failures). Pure: the caller passes `now`, from whichever clock its component runs on
//! (`std::time::Instant` on the capture and encode threads, tokio's `Instant` on the async
//! side), so it is tested with an injected clock and never reads one itself.

use std::ops::Sub;
use std::time::Duration;

/// Lets one event through per `interval` and counts the ones it holds back.
#[derive(Debug, Clone)]
pub struct Throttle<I> {
    interval: Duration,
    last: Option<I>,
    suppressed: u64,
}

impl<I> Throttle<I>
where
    I: Copy + Sub<I, Output = Duration>,
{
    /// The first event always passes.
    pub const fn new(interval: Duration) -> Self {
        Self {
            interval,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether an event at `now` may be logged. `Some(n)`: yes, and `n` events were held back
    /// since the last one that passed; `None`: not yet (this one is counted as held back).
    /// An earlier `now` than the last one passed (another clock's reading) never panics: the
    /// subtraction saturates to zero for both `Instant` types.
    pub fn allow(&mut self, now: I) -> Option<u64> {
        if self.last.is_some_and(|last| now - last < self.interval) {
            self.suppressed += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.suppressed))
    }

    /// [`Throttle::allow`] as a yes/no, for callers that do not report the held-back count.
    pub fn ready(&mut self, now: I) -> bool {
        self.allow(now).is_some()
    }

    /// Forgets the last event: the next one passes (a condition cleared, an outage over).
    pub fn reset(&mut self) {
        self.last = None;
        self.suppressed = 0;
    }

    /// When the last event passed.
    pub fn last(&self) -> Option<I> {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn one_per_interval_and_the_held_back_are_counted() {
        let t0 = Instant::now();
        let mut t = Throttle::new(S);
        assert_eq!(t.allow(t0), Some(0));
        assert_eq!(t.allow(t0 + S / 2), None);
        assert_eq!(t.allow(t0 + S * 9 / 10), None);
        assert_eq!(t.allow(t0 + S), Some(2));
        assert!(!t.ready(t0 + S + S / 10));
        t.reset();
        assert_eq!(t.allow(t0 + S + S / 5), Some(0));
    }

    #[test]
    fn an_earlier_reading_does_not_panic() {
        let t0 = tokio::time::Instant::now();
        let mut t = Throttle::new(S);
        assert!(t.ready(t0 + S));
        assert!(!t.ready(t0));
    }
}
