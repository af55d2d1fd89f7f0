//! The viewer poller: Polyv's viewer count ([`PolyvClient::viewers`]: the signed
//! `count-online-user` with an appId, the chat room's `listUsers` otherwise or when that
//! fails) into [`StatusHub::set_viewers`], only while a broadcast runs (state `live`, devices
//! open), never more often than every [`MIN_INTERVAL`] (Polyv asks for that).
//!
//! The count is decoration: a failed poll never touches the broadcast. It is logged at DEBUG,
//! at most once per [`ERROR_LOG_EVERY`]; the last known count stays shown until it is
//! [`STALE_AFTER`] old, then the count is unknown (`None`), as it is outside a broadcast.

use super::hub::StatusHub;
use crate::platform::PolyvClient;
use crate::throttle::Throttle;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The shortest interval between two polls, whatever is asked.
pub(super) const MIN_INTERVAL: Duration = Duration::from_secs(10);
/// At most one DEBUG line about failing polls per this long.
pub(super) const ERROR_LOG_EVERY: Duration = Duration::from_secs(300);
/// A count this old (polls failing since) is no longer shown as the current one.
pub(super) const STALE_AFTER: Duration = Duration::from_secs(60);
/// How often the poller looks at the daemon's state (cheap: one mutex).
const STATE_CHECK: Duration = Duration::from_secs(1);

/// `interval`, raised to [`MIN_INTERVAL`].
pub(super) fn effective_interval(interval: Duration) -> Duration {
    interval.max(MIN_INTERVAL)
}

/// Polls the viewer count of `client`'s channel every `interval` (at least 10 s) while the
/// daemon is live, until the task is aborted. The channel is the client's own
/// ([`PolyvClient::channel_id`]).
pub fn spawn_viewer_poller(
    client: PolyvClient,
    hub: StatusHub,
    interval: Duration,
) -> JoinHandle<()> {
    let interval = effective_interval(interval);
    tracing::debug!(
        channel = client.channel_id(),
        interval_s = interval.as_secs(),
        "viewer poller started"
    );
    tokio::spawn(poll_loop(
        move || {
            let client = client.clone();
            async move { client.viewers().await.map(|v| v.count) }
        },
        hub,
        interval,
        STATE_CHECK,
    ))
}

/// The loop behind [`spawn_viewer_poller`], over any `fetch`; `interval` is used as given.
pub(crate) async fn poll_loop<F, Fut, E>(
    mut fetch: F,
    hub: StatusHub,
    interval: Duration,
    check_every: Duration,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, E>>,
    E: Display,
{
    let mut last_poll: Option<Instant> = None;
    let mut last_count: Option<Instant> = None;
    let mut was_live = false;
    let mut errors = ErrorLog::default();
    loop {
        // A broadcast runs (logged in, devices open): before that there is no stream to
        // count viewers of, and the login must be the first request Polyv sees.
        let live = hub.is_broadcasting();
        if live {
            if last_poll.is_none_or(|t| t.elapsed() >= interval) {
                last_poll = Some(Instant::now());
                match fetch().await {
                    Ok(n) => {
                        errors.recovered();
                        last_count = Some(Instant::now());
                        hub.set_viewers(Some(n));
                    }
                    Err(e) => {
                        errors.failed(&e);
                        if last_count.is_none_or(|t| t.elapsed() >= STALE_AFTER) {
                            hub.set_viewers(None);
                        }
                    }
                }
            }
        } else if was_live {
            last_count = None;
            hub.set_viewers(None);
        }
        was_live = live;
        tokio::time::sleep(check_every).await;
    }
}

/// Rate-limited DEBUG lines about failing polls.
struct ErrorLog {
    throttle: Throttle<Instant>,
    failing: bool,
}

impl Default for ErrorLog {
    fn default() -> Self {
        Self {
            throttle: Throttle::new(ERROR_LOG_EVERY),
            failing: false,
        }
    }
}

impl ErrorLog {
    fn failed(&mut self, e: &dyn Display) {
        self.failing = true;
        if let Some(suppressed) = self.throttle.allow(Instant::now()) {
            tracing::debug!(
                error = %e,
                suppressed,
                "viewer count unavailable; keeping the last known"
            );
        }
    }

    fn recovered(&mut self) {
        if std::mem::take(&mut self.failing) {
            tracing::debug!("viewer count available again");
        }
        self.throttle.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::DaemonState;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;

    #[test]
    fn interval_has_a_floor() {
        assert_eq!(effective_interval(Duration::ZERO), MIN_INTERVAL);
        assert_eq!(effective_interval(Duration::from_secs(1)), MIN_INTERVAL);
        assert_eq!(
            effective_interval(Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    /// The real schedule (10 s, the state looked at every second) on tokio's paused clock:
    /// the polls are counted exactly.
    #[tokio::test(start_paused = true)]
    async fn polls_only_while_live_and_at_most_once_per_interval() {
        let hub = StatusHub::new();
        hub.set_state(DaemonState::Idle);
        let calls: Arc<std::sync::Mutex<Vec<Instant>>> = Arc::default();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn(poll_loop(
            {
                let (calls, fail) = (calls.clone(), fail.clone());
                move || {
                    let n = {
                        let mut c = calls.lock().unwrap();
                        c.push(Instant::now());
                        c.len() as u64
                    };
                    let fail = fail.load(Ordering::SeqCst);
                    async move {
                        if fail {
                            Err("HTTP 500")
                        } else {
                            Ok(n * 10)
                        }
                    }
                }
            },
            hub.clone(),
            effective_interval(Duration::from_secs(1)),
            STATE_CHECK,
        ));
        let pass = |d: u64| tokio::time::sleep_until(Instant::now() + Duration::from_millis(d));
        let count = || calls.lock().unwrap().len();
        pass(30_000).await;
        assert_eq!(count(), 0, "idle: no polls");
        assert_eq!(hub.snapshot().viewers, None);

        hub.set_state(DaemonState::Live);
        hub.broadcast_started(crate::rtmp::SenderControl::new());
        let live_at = Instant::now();
        pass(1_500).await;
        assert_eq!(count(), 1, "the first poll at the next look");
        assert_eq!(hub.snapshot().viewers, Some(10));

        pass(60_000).await;
        let polls = calls.lock().unwrap().clone();
        assert!(
            polls[0] - live_at <= STATE_CHECK,
            "{:?}",
            polls[0] - live_at
        );
        let gaps: Vec<Duration> = polls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            gaps.iter()
                .all(|g| *g >= MIN_INTERVAL && *g <= MIN_INTERVAL + STATE_CHECK),
            "every 10 s (at the next look): {gaps:?}"
        );
        assert_eq!(polls.len(), 7, "61.5 s live: {gaps:?}");

        fail.store(true, Ordering::SeqCst);
        let known = hub.snapshot().viewers;
        pass(25_000).await;
        assert!(count() > polls.len(), "still polling");
        assert_eq!(
            hub.snapshot().viewers,
            known,
            "errors keep the last known count"
        );
        // A minute after the last count: unknown, not a stale number.
        pass(40_000).await;
        assert_eq!(hub.snapshot().viewers, None, "a stale count is unknown");
        fail.store(false, Ordering::SeqCst);
        pass(MIN_INTERVAL.as_millis() as u64 + 1_500).await;
        assert!(hub.snapshot().viewers.is_some(), "counted again");

        hub.set_state(DaemonState::Idle);
        pass(1_500).await;
        let n = count();
        assert_eq!(hub.snapshot().viewers, None, "unknown outside a broadcast");
        pass(60_000).await;
        assert_eq!(count(), n, "idle again: no polls");
        task.abort();
    }
}
