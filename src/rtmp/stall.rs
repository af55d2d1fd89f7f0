//! Dead-link detection for a publishing connection. Pure: the sender feeds it a progress
//! counter and whether anything is waiting for the peer, with `now`.
//!
//! A cut link does not make `write` fail: the kernel takes bytes until the send buffer is
//! full, and TCP retransmits for many minutes before giving up. What stops is the *peer
//! receiving*: the bytes its TCP acknowledged (written minus `SIOCOUTQ`) and its RTMP
//! acknowledgements. When that progress stands still for `timeout` while bytes are waiting
//! (in the kernel or in the publisher's queue), the connection is dead or useless, and a new
//! one is the fastest way back. When nothing is waiting (the encoders paused) nothing is
//! expected to move, so that is never a stall; TCP keepalive covers that case.

use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub(crate) struct StallDetector {
    timeout: Duration,
    progress: u64,
    /// Since when `progress` has not moved while bytes were waiting.
    since: Instant,
}

impl StallDetector {
    pub(crate) fn new(timeout: Duration, progress: u64, now: Instant) -> Self {
        Self {
            timeout,
            progress,
            since: now,
        }
    }

    /// `progress`: any counter that moves only while the peer receives (delivered plus acked
    /// bytes). `pending`: bytes are waiting to reach the peer. Returns how long the connection
    /// has been stuck once that reaches the timeout.
    pub(crate) fn observe(
        &mut self,
        now: Instant,
        progress: u64,
        pending: bool,
    ) -> Option<Duration> {
        if progress != self.progress || !pending {
            self.progress = progress;
            self.since = now;
            return None;
        }
        let stuck = now.saturating_duration_since(self.since);
        (stuck >= self.timeout).then_some(stuck)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn progress_while_pending_is_not_a_stall() {
        let t0 = Instant::now();
        let mut d = StallDetector::new(3 * S, 0, t0);
        for i in 1..100u32 {
            assert_eq!(d.observe(t0 + i * S, u64::from(i) * 1000, true), None);
        }
    }

    #[test]
    fn no_progress_while_pending_is_a_stall_after_the_timeout() {
        let t0 = Instant::now();
        let mut d = StallDetector::new(3 * S, 0, t0);
        assert_eq!(d.observe(t0 + S, 5000, true), None);
        assert_eq!(d.observe(t0 + 2 * S, 5000, true), None);
        assert_eq!(d.observe(t0 + 3 * S, 5000, true), None);
        assert_eq!(d.observe(t0 + 4 * S, 5000, true), Some(3 * S));
    }

    #[test]
    fn nothing_pending_is_never_a_stall_and_restarts_the_clock() {
        let t0 = Instant::now();
        let mut d = StallDetector::new(3 * S, 0, t0);
        assert_eq!(d.observe(t0 + 10 * S, 0, false), None);
        // Bytes queued again at 10 s: the clock starts there.
        assert_eq!(d.observe(t0 + 12 * S, 0, true), None);
        assert_eq!(d.observe(t0 + 13 * S, 0, true), Some(3 * S));
    }
}
