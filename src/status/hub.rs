//! The daemon's shared state: what the supervisor and the schedule loop write, and what the
//! status server, the metrics, the health check and the systemd watchdog read. One mutex over
//! a plain snapshot, written twice a second and read at scrape time: nothing here is on the
//! packet path.

use crate::adapt::AdaptStats;
use crate::encode::PipelineStats;
use crate::ring::RingStats;
use crate::rtmp::{SenderControl, SenderStats};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Instant, SystemTime};

/// Where the daemon is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DaemonState {
    /// Started, config loaded, nothing decided yet.
    #[default]
    Starting,
    /// Outside every schedule window: no camera, no connection.
    Idle,
    /// Inside a window (or unscheduled): the broadcast runs; the sender's state says whether
    /// it is publishing.
    Live,
    /// Shutting down.
    Stopping,
    /// The broadcast failed and the daemon waits before the next try (`reason`).
    Failed { reason: String },
}

impl DaemonState {
    /// A stable label for metrics and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Idle => "idle",
            Self::Live => "live",
            Self::Stopping => "stopping",
            Self::Failed { .. } => "failed",
        }
    }
}

/// What the schedule says now.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ScheduleStatus {
    /// Any window configured at all (none: stream all the time).
    pub configured: bool,
    /// Inside a window now (always true when none is configured).
    pub in_window: bool,
    /// The current window's end, if inside one.
    pub window_end: Option<SystemTime>,
    /// The next window's start and end after now (after the current one, if inside).
    pub next_start: Option<SystemTime>,
    pub next_end: Option<SystemTime>,
    /// The current (or next) window's title, if any.
    pub title: Option<String>,
}

/// The live numbers of a running broadcast, refreshed by the supervisor every 500 ms.
#[derive(Debug, Clone, Default)]
pub struct BroadcastSnapshot {
    /// When this broadcast started.
    pub started: Option<Instant>,
    pub pipeline: PipelineStats,
    pub ring: RingStats,
    pub sender: SenderStats,
    /// `SenderState::name()`: connecting, publishing, waiting, credentials_rejected, …
    pub sender_state: &'static str,
    /// The last error the sender saw, if any (for /status and /healthz reasons).
    pub sender_error: Option<String>,
    pub adapt: Option<AdaptStats>,
    /// The video bitrate asked of the encoder, kbit/s.
    pub target_kbps: u32,
    /// The configured video bitrate, kbit/s.
    pub configured_kbps: u32,
    /// Delivered bit rate over the last second, kbit/s (TCP-acknowledged bytes).
    pub delivered_kbps: f64,
    /// Video frames encoded per second over the last second.
    pub encoder_fps: f64,
    /// The configured frame rate.
    pub configured_fps: f64,
}

/// Everything at once, for `/status`, `/metrics` and `/healthz`.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub state: DaemonState,
    pub schedule: ScheduleStatus,
    /// `None` outside a broadcast.
    pub broadcast: Option<BroadcastSnapshot>,
    /// Viewers from Polyv's listUsers (polled at most every 10 s), if known.
    pub viewers: Option<u64>,
    /// Broadcasts started since the daemon started.
    pub broadcasts: u64,
    /// Config reloads applied / refused (SIGHUP).
    pub reloads: u64,
    pub reloads_failed: u64,
    /// Capture or encoder failures that ended a broadcast.
    pub capture_errors: u64,
    /// The last broadcast failure, if any.
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Inner {
    snap: Snapshot,
    reconnect: Option<SenderControl>,
}

/// Cheap to clone; every clone sees the same state.
#[derive(Clone, Default)]
pub struct StatusHub {
    inner: Arc<Mutex<Inner>>,
}

impl std::fmt::Debug for StatusHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatusHub").finish_non_exhaustive()
    }
}

impl StatusHub {
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        self.with(|i| i.snap.clone())
    }

    pub fn set_state(&self, state: DaemonState) {
        self.with(|i| i.snap.state = state);
    }

    pub fn set_schedule(&self, s: ScheduleStatus) {
        self.with(|i| i.snap.schedule = s);
    }

    /// A broadcast starts: counts it and keeps its sender's handle for `POST /reconnect`.
    pub fn broadcast_started(&self, control: SenderControl) {
        self.with(|i| {
            i.snap.broadcasts += 1;
            i.snap.broadcast = Some(BroadcastSnapshot {
                started: Some(Instant::now()),
                ..BroadcastSnapshot::default()
            });
            i.reconnect = Some(control);
        });
    }

    pub fn update_broadcast(&self, b: BroadcastSnapshot) {
        self.with(|i| i.snap.broadcast = Some(b));
    }

    /// The broadcast ended (`error`: why, if it failed).
    pub fn broadcast_ended(&self, error: Option<String>, capture_error: bool) {
        self.with(|i| {
            i.snap.broadcast = None;
            i.reconnect = None;
            if capture_error {
                i.snap.capture_errors += 1;
            }
            if error.is_some() {
                i.snap.last_error = error;
            }
        });
    }

    pub fn set_viewers(&self, viewers: Option<u64>) {
        self.with(|i| i.snap.viewers = viewers);
    }

    pub fn reload_applied(&self) {
        self.with(|i| i.snap.reloads += 1);
    }

    pub fn reload_failed(&self, why: String) {
        self.with(|i| {
            i.snap.reloads_failed += 1;
            i.snap.last_error = Some(why);
        });
    }

    /// `POST /reconnect`: asks the running broadcast's sender to reconnect now. `false` when
    /// no broadcast runs.
    pub fn reconnect_now(&self) -> bool {
        match self.with(|i| i.reconnect.clone()) {
            Some(c) => {
                c.reconnect_now();
                true
            }
            None => false,
        }
    }

    /// For the watchdog: `None` while no broadcast should run (idle, starting, stopping, or
    /// waiting after a failure), else the counters that move only while frames flow.
    pub fn progress(&self) -> Option<Progress> {
        self.with(|i| match (&i.snap.state, &i.snap.broadcast) {
            (DaemonState::Live, Some(b)) => Some(Progress {
                frames_encoded: b.pipeline.video.frames_encoded + b.pipeline.audio.frames_encoded,
                packets_sent: b.sender.packets_sent,
                publishing: b.sender_state == "publishing",
            }),
            (DaemonState::Live, None) => Some(Progress::default()),
            _ => None,
        })
    }
}

/// What the watchdog compares between pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Video plus audio frames through the encoders.
    pub frames_encoded: u64,
    /// Packets the sender wrote to the ingest.
    pub packets_sent: u64,
    /// The sender is publishing: then its packets must move too. (While it reconnects after
    /// a network failure they cannot, and a restart would not help: it reconnects on its own.)
    pub publishing: bool,
}
