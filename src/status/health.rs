//! `/healthz`: is the daemon where it should be? A pure function of a [`Snapshot`] and "now",
//! so every rule is tested here without a server.
//!
//! Healthy: idle outside every schedule window, or live inside one (or with no schedule at
//! all) with the sender publishing. A broadcast gets [`GRACE`] from its start (or from the
//! daemon going live, before the broadcast reports) to reach its first publish before "not
//! publishing" counts; rejected credentials count at once, since waiting will not fix them.

use super::hub::{DaemonState, Snapshot};
use crate::rtmp::SenderPhase;
use std::time::Duration;
use tokio::time::Instant;

/// How long a starting broadcast may take to publish before it counts as unhealthy.
pub(super) const GRACE: Duration = Duration::from_secs(30);

/// The verdict: `healthy` → 200, otherwise 503; `message` is the body (`ok: live`, or the
/// reason).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    pub healthy: bool,
    pub message: String,
}

impl Health {
    fn ok(message: impl Into<String>) -> Self {
        Self {
            healthy: true,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> Self {
        Self {
            healthy: false,
            message: message.into(),
        }
    }
}

/// The health of `snap` at `now`.
pub fn health(snap: &Snapshot, now: Instant) -> Health {
    let should = snap.should_stream();
    let where_ = if snap.schedule.configured {
        "inside a window"
    } else {
        "no schedule (always on)"
    };
    match &snap.state {
        DaemonState::Starting => Health::bad("starting: the daemon has not started its work yet"),
        DaemonState::Stopping => Health::bad("stopping"),
        DaemonState::Failed { reason } => Health::bad(format!("broadcast failed: {reason}")),
        DaemonState::Idle if !should => Health::ok("ok: idle"),
        DaemonState::Idle => Health::bad(format!("{where_} but idle: no broadcast is running")),
        DaemonState::Live if !should => {
            Health::bad("live outside every window: the broadcast should have stopped")
        }
        DaemonState::Live => live(snap, now, where_),
    }
}

fn live(snap: &Snapshot, now: Instant, where_: &str) -> Health {
    // Capture down: nothing can go out, and polypush does not log in until it is back.
    if let Some(w) = &snap.media_wait {
        return Health::bad(format!(
            "{where_} but capture is down for {} s (attempt {}, next in {:.1} s): {}",
            now.saturating_duration_since(w.since).as_secs(),
            w.attempts,
            w.retry_in.as_secs_f64(),
            w.reason
        ));
    }
    let Some(b) = &snap.broadcast else {
        // Live, but the broadcast has not reported yet (logging in, opening the camera).
        let since = snap.state_since.unwrap_or(now);
        let waited = now.saturating_duration_since(since);
        return if waited < GRACE {
            Health::ok("ok: live (starting the broadcast)")
        } else {
            Health::bad(format!(
                "{where_} but not publishing: the broadcast has not started for {} s",
                waited.as_secs()
            ))
        };
    };
    let error = b
        .sender_error
        .as_deref()
        .map(|e| format!(" ({e})"))
        .unwrap_or_default();
    match b.sender_state {
        SenderPhase::Publishing => return Health::ok("ok: live"),
        SenderPhase::CredentialsRejected => {
            return Health::bad(match b.refusal.as_ref().map(|r| r.reason) {
                None | Some("password") => {
                    format!("credentials rejected{error}: fix the channel password")
                }
                Some(reason) => {
                    format!("Polyv refuses the login ({reason}){error}: an operator must act")
                }
            });
        }
        _ => {}
    }
    let started = b.started.or(snap.state_since).unwrap_or(now);
    if now.saturating_duration_since(started) < GRACE {
        return Health::ok(format!("ok: live (starting: {})", b.sender_state.as_str()));
    }
    let doing = match b.sender_state {
        SenderPhase::Connecting | SenderPhase::Waiting if b.sender.sessions > 0 => "reconnecting",
        SenderPhase::Connecting | SenderPhase::Waiting => "connecting",
        SenderPhase::Starting => "the sender has not started",
        SenderPhase::Stopped => "the sender stopped",
        other => other.as_str(),
    };
    let since = snap.not_publishing_since.unwrap_or(started);
    Health::bad(format!(
        "{where_} but not publishing: {doing}{error} for {} s",
        now.saturating_duration_since(since).as_secs()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::hub::{BroadcastSnapshot, ScheduleStatus};

    fn scheduled(in_window: bool) -> ScheduleStatus {
        ScheduleStatus {
            configured: true,
            in_window,
            ..ScheduleStatus::default()
        }
    }

    fn live_snapshot(t0: Instant, sender_state: SenderPhase, error: Option<&str>) -> Snapshot {
        let mut b = BroadcastSnapshot {
            started: Some(t0),
            sender_state,
            sender_error: error.map(str::to_string),
            ..BroadcastSnapshot::default()
        };
        b.sender.sessions = 1;
        Snapshot {
            state: DaemonState::Live,
            schedule: scheduled(true),
            broadcast: Some(b),
            state_since: Some(t0),
            not_publishing_since: (sender_state != SenderPhase::Publishing).then_some(t0),
            ..Snapshot::default()
        }
    }

    #[test]
    fn idle_outside_a_window_is_healthy_inside_it_is_not() {
        let now = Instant::now();
        let mut s = Snapshot {
            state: DaemonState::Idle,
            schedule: scheduled(false),
            ..Snapshot::default()
        };
        assert_eq!(health(&s, now), Health::ok("ok: idle"));
        s.schedule.in_window = true;
        let h = health(&s, now);
        assert!(!h.healthy);
        assert_eq!(
            h.message,
            "inside a window but idle: no broadcast is running"
        );
        // No schedule: always on, so idle is wrong.
        s.schedule = ScheduleStatus::default();
        assert!(!health(&s, now).healthy);
    }

    #[test]
    fn publishing_inside_a_window_or_unscheduled_is_healthy() {
        let t0 = Instant::now();
        let mut s = live_snapshot(t0, SenderPhase::Publishing, None);
        assert_eq!(
            health(&s, t0 + Duration::from_secs(3600)),
            Health::ok("ok: live")
        );
        s.schedule = ScheduleStatus::default();
        assert!(health(&s, t0).healthy);
        // Live after the window closed: the broadcast should have stopped.
        s.schedule = scheduled(false);
        assert!(!health(&s, t0).healthy);
    }

    #[test]
    fn not_publishing_counts_after_the_grace_period() {
        let t0 = Instant::now();
        let s = live_snapshot(t0, SenderPhase::Waiting, Some("connection refused"));
        let h = health(&s, t0 + Duration::from_secs(5));
        assert!(h.healthy, "{h:?}");
        assert_eq!(h.message, "ok: live (starting: waiting)");
        let h = health(&s, t0 + Duration::from_secs(42));
        assert_eq!(
            h,
            Health::bad(
                "inside a window but not publishing: reconnecting (connection refused) for 42 s"
            )
        );
        // Lost after publishing for an hour: counted from the loss, no new grace.
        let mut s = live_snapshot(t0, SenderPhase::Connecting, None);
        s.not_publishing_since = Some(t0 + Duration::from_secs(3600));
        let h = health(&s, t0 + Duration::from_secs(3605));
        assert_eq!(
            h,
            Health::bad("inside a window but not publishing: reconnecting for 5 s")
        );
        // Never published yet.
        let mut s = live_snapshot(t0, SenderPhase::Connecting, None);
        s.broadcast.as_mut().unwrap().sender.sessions = 0;
        s.schedule = ScheduleStatus::default();
        let h = health(&s, t0 + GRACE);
        assert_eq!(
            h.message,
            "no schedule (always on) but not publishing: connecting for 30 s"
        );
    }

    #[test]
    fn rejected_credentials_and_failures_are_unhealthy_at_once() {
        let t0 = Instant::now();
        let s = live_snapshot(t0, SenderPhase::CredentialsRejected, Some("password wrong"));
        let h = health(&s, t0);
        assert!(!h.healthy);
        assert!(
            h.message
                .starts_with("credentials rejected (password wrong)"),
            "{h:?}"
        );

        let s = Snapshot {
            state: DaemonState::Failed {
                reason: "camera /dev/video0 is gone".into(),
            },
            schedule: scheduled(true),
            ..Snapshot::default()
        };
        assert_eq!(
            health(&s, t0),
            Health::bad("broadcast failed: camera /dev/video0 is gone")
        );
        for state in [DaemonState::Starting, DaemonState::Stopping] {
            let s = Snapshot {
                state,
                ..Snapshot::default()
            };
            assert!(!health(&s, t0).healthy);
        }
    }

    #[test]
    fn capture_down_is_unhealthy_at_once_with_the_reason() {
        let t0 = Instant::now();
        let mut s = Snapshot {
            state: DaemonState::Live,
            schedule: ScheduleStatus::default(),
            state_since: Some(t0),
            media_wait: Some(crate::status::MediaWait {
                reason: "cannot open [video] device /dev/video0: No such file or directory".into(),
                since: t0,
                attempts: 4,
                retry_in: Duration::from_secs(3),
            }),
            ..Snapshot::default()
        };
        // No grace: a missing camera will not appear by waiting for it to publish.
        let h = health(&s, t0 + Duration::from_secs(12));
        assert_eq!(
            h,
            Health::bad(
                "no schedule (always on) but capture is down for 12 s (attempt 4, next in 3.0 s): \
                 cannot open [video] device /dev/video0: No such file or directory"
            )
        );
        // Also while a broadcast runs (its pipeline failed and is being restarted).
        s.broadcast = live_snapshot(t0, SenderPhase::Publishing, None).broadcast;
        assert!(!health(&s, t0).healthy);
        s.media_wait = None;
        assert!(health(&s, t0).healthy);
    }

    #[test]
    fn an_operator_refusal_other_than_the_password_names_its_reason() {
        let t0 = Instant::now();
        let mut s = live_snapshot(
            t0,
            SenderPhase::CredentialsRejected,
            Some("invalid signature."),
        );
        s.broadcast.as_mut().unwrap().refusal = Some(crate::rtmp::Refusal {
            class: crate::rtmp::AddressClass::OperatorMustAct,
            reason: "clock",
            message: "invalid timestamp.".into(),
        });
        let h = health(&s, t0);
        assert!(!h.healthy);
        assert!(
            h.message.starts_with("Polyv refuses the login (clock)"),
            "{h:?}"
        );
    }

    #[test]
    fn live_before_the_broadcast_reports_gets_the_grace_too() {
        let t0 = Instant::now();
        let s = Snapshot {
            state: DaemonState::Live,
            state_since: Some(t0),
            ..Snapshot::default()
        };
        assert!(health(&s, t0 + Duration::from_secs(29)).healthy);
        let h = health(&s, t0 + Duration::from_secs(31));
        assert_eq!(
            h.message,
            "no schedule (always on) but not publishing: the broadcast has not started for 31 s"
        );
    }
}
