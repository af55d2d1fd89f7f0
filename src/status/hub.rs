//! The daemon's shared state: what the broadcast and the service loop write, and what the
//! status server, the metrics, the health check and the systemd watchdog read. One mutex over
//! a plain snapshot, written twice a second and read at scrape time: nothing here is on the
//! packet path.

use crate::adapt::AdaptStats;
use crate::encode::{PipelineControl, PipelineStats};
use crate::health::{Alarm, MediaReport};
use crate::ring::{DropReason, RingStats};
use crate::rtmp::{Refusal, SenderControl, SenderPhase, SenderStats};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

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
    /// A broadcast should run now: inside a window (its lead included), or an override
    /// (extend, start now) keeps it on; false while stopped now. Always true when no window
    /// is configured.
    pub in_window: bool,
    /// The current window's start, if inside one (the lesson reports' planned start).
    pub window_start: Option<SystemTime>,
    /// When what is on now ends (the window's end, or the override's), if on.
    pub window_end: Option<SystemTime>,
    /// The next window's start and end after now (after the current one, if inside).
    pub next_start: Option<SystemTime>,
    pub next_end: Option<SystemTime>,
    /// The current (or next) window's title, if any.
    pub title: Option<String>,
    /// Why a broadcast should run or not (`None` before the service first looked).
    pub why: Option<crate::schedule::Why>,
    /// The lesson-control override in force (extend, start now, stop now), if any.
    pub control: Option<crate::schedule::Override>,
}

/// The live numbers of a running broadcast, refreshed by the broadcast every 500 ms.
#[derive(Debug, Clone, Default)]
pub struct BroadcastSnapshot {
    /// When this broadcast started.
    pub started: Option<Instant>,
    pub pipeline: PipelineStats,
    pub ring: RingStats,
    pub sender: SenderStats,
    /// What the sender is doing: connecting, publishing, waiting, credentials_rejected, …
    pub sender_state: SenderPhase,
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
    /// The platform's refusal the sender is waiting out (class, reason label, its message).
    pub refusal: Option<Refusal>,
    /// Media health (levels, alarms), when the pipeline has reported it.
    pub media: Option<MediaReport>,
}

impl BroadcastSnapshot {
    /// The active media alarms (none without a report).
    pub fn media_alarms(&self) -> Vec<Alarm> {
        self.media
            .as_ref()
            .map(MediaReport::active)
            .unwrap_or_default()
    }

    /// `ALARM silence,frozen` while media alarms are active, for the short status lines.
    pub fn alarm_text(&self) -> Option<String> {
        let active = self.media_alarms();
        (!active.is_empty()).then(|| {
            let names: Vec<&str> = active.iter().map(|a| a.as_str()).collect();
            format!("ALARM {}", names.join(","))
        })
    }
}

/// Capture and encoding are not running and are being retried: the devices did not open at
/// the start (a camera not plugged in), or the pipeline failed during the broadcast.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaWait {
    /// The last error, with what to do.
    pub reason: String,
    /// Since when capture has been down.
    pub since: Instant,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The next attempt in.
    pub retry_in: Duration,
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
    /// Capture or encoder failures: devices that did not open, pipelines that failed.
    pub capture_errors: u64,
    /// Set while capture and encoding are down and being retried (no login meanwhile).
    pub media_wait: Option<MediaWait>,
    /// The last broadcast failure, if any.
    pub last_error: Option<String>,
    /// Counters summed over every broadcast since the daemon started, the running one
    /// included: monotonic, for `/metrics` (the [`BroadcastSnapshot`] starts at 0 each time).
    pub totals: Totals,
    /// When `state` last changed (`None`: not since the hub was created).
    pub state_since: Option<Instant>,
    /// Since when the running broadcast's sender has not been publishing: its start until the
    /// first publish, then from each lost session until the next; `None` while publishing or
    /// without a broadcast.
    pub not_publishing_since: Option<Instant>,
    /// The lesson log: how many lessons, the last one ([`crate::lessons`]).
    pub lessons: crate::lessons::LessonsStatus,
}

impl Snapshot {
    /// Whether a broadcast should run now: inside a window, or no schedule at all.
    pub fn should_stream(&self) -> bool {
        !self.schedule.configured || self.schedule.in_window
    }

    /// The running broadcast's sender is publishing.
    pub fn publishing(&self) -> bool {
        self.broadcast
            .as_ref()
            .is_some_and(|b| b.sender_state == SenderPhase::Publishing)
    }
}

/// Daemon-wide counters: everything the broadcasts counted, summed. Each broadcast's own
/// counters are folded in as they grow (a counter that goes down, as when a broadcast or its
/// pipeline starts again, counts as a reset from 0), so these never go down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Sessions after the first, per broadcast.
    pub reconnects: u64,
    /// Bytes the kernel accepted for the ingest.
    pub bytes_sent: u64,
    /// Bytes the ingest's TCP acknowledged.
    pub bytes_delivered: u64,
    pub video_frames_encoded: u64,
    pub audio_frames_encoded: u64,
    /// Captured frames dropped before the encoder because it fell behind.
    pub video_frames_dropped: u64,
    pub audio_frames_dropped: u64,
    pub video_device_losses: u64,
    pub audio_device_losses: u64,
    /// Logins the platform refused: an operator must act (password, appId, signature, clock).
    pub operator_refusals: u64,
    /// Logins the platform refused for now, or could not answer (try later, unavailable).
    pub platform_refusals: u64,
    /// Ring drops (packets) per reason, in [`DropReason::ALL`] order.
    ring_dropped: [u64; DropReason::ALL.len()],
    /// Media alarms raised, in [`Alarm::ALL`] order.
    media_raised: [u64; Alarm::ALL.len()],
}

impl Totals {
    /// Packets the ring dropped for `reason`.
    pub fn ring_dropped(&self, reason: DropReason) -> u64 {
        DropReason::ALL
            .iter()
            .position(|r| *r == reason)
            .map_or(0, |i| self.ring_dropped[i])
    }

    /// Times the media alarm `alarm` was raised.
    pub fn alarms_raised(&self, alarm: Alarm) -> u64 {
        Alarm::ALL
            .iter()
            .position(|a| *a == alarm)
            .map_or(0, |i| self.media_raised[i])
    }

    /// One broadcast's own counters, as they stand in `b`.
    pub fn of_broadcast(b: &BroadcastSnapshot) -> Self {
        let mut ring_dropped = [0; DropReason::ALL.len()];
        for (slot, reason) in ring_dropped.iter_mut().zip(DropReason::ALL) {
            *slot = b.ring.dropped.get(reason).packets;
        }
        let mut media_raised = [0; Alarm::ALL.len()];
        if let Some(m) = &b.media {
            for (slot, alarm) in media_raised.iter_mut().zip(Alarm::ALL) {
                *slot = m.alarm(alarm).raised;
            }
        }
        Self {
            reconnects: b.sender.reconnects,
            bytes_sent: b.sender.bytes_sent,
            bytes_delivered: b.sender.bytes_delivered,
            video_frames_encoded: b.pipeline.video.frames_encoded,
            audio_frames_encoded: b.pipeline.audio.frames_encoded,
            video_frames_dropped: b.pipeline.video.frames_dropped,
            audio_frames_dropped: b.pipeline.audio.frames_dropped,
            video_device_losses: b.pipeline.video.device_losses,
            audio_device_losses: b.pipeline.audio.device_losses,
            operator_refusals: b.sender.credentials_rejections,
            platform_refusals: b.sender.platform_refusals,
            ring_dropped,
            media_raised,
        }
    }

    /// Adds what moved from `prev` to `now` (two readings of the same counters); a counter
    /// below its previous reading started again from 0, so all of `now` is new.
    pub fn advance(&mut self, prev: &Totals, now: &Totals) {
        fn add(total: &mut u64, prev: u64, now: u64) {
            let delta = if now >= prev { now - prev } else { now };
            *total = total.saturating_add(delta);
        }
        add(&mut self.reconnects, prev.reconnects, now.reconnects);
        add(&mut self.bytes_sent, prev.bytes_sent, now.bytes_sent);
        add(
            &mut self.bytes_delivered,
            prev.bytes_delivered,
            now.bytes_delivered,
        );
        add(
            &mut self.video_frames_encoded,
            prev.video_frames_encoded,
            now.video_frames_encoded,
        );
        add(
            &mut self.audio_frames_encoded,
            prev.audio_frames_encoded,
            now.audio_frames_encoded,
        );
        add(
            &mut self.video_frames_dropped,
            prev.video_frames_dropped,
            now.video_frames_dropped,
        );
        add(
            &mut self.audio_frames_dropped,
            prev.audio_frames_dropped,
            now.audio_frames_dropped,
        );
        add(
            &mut self.video_device_losses,
            prev.video_device_losses,
            now.video_device_losses,
        );
        add(
            &mut self.audio_device_losses,
            prev.audio_device_losses,
            now.audio_device_losses,
        );
        add(
            &mut self.operator_refusals,
            prev.operator_refusals,
            now.operator_refusals,
        );
        add(
            &mut self.platform_refusals,
            prev.platform_refusals,
            now.platform_refusals,
        );
        for i in 0..self.ring_dropped.len() {
            add(
                &mut self.ring_dropped[i],
                prev.ring_dropped[i],
                now.ring_dropped[i],
            );
        }
        for i in 0..self.media_raised.len() {
            add(
                &mut self.media_raised[i],
                prev.media_raised[i],
                now.media_raised[i],
            );
        }
    }
}

#[derive(Default)]
struct Inner {
    snap: Snapshot,
    reconnect: Option<SenderControl>,
    /// The running pipeline, for `/snapshot.jpg` and `/meter` (swapped when the broadcast
    /// restarts it).
    pictures: Option<PipelineControl>,
    /// The running broadcast's counters as last folded into `snap.totals`.
    counted: Option<Totals>,
    /// Where lesson-control requests go (the service loop), once it takes them.
    control: Option<tokio::sync::mpsc::Sender<super::control::ControlRequest>>,
}

/// Cheap to clone; every clone sees the same state.
#[derive(Clone)]
pub struct StatusHub {
    inner: Arc<Mutex<Inner>>,
    /// Bumped on every change, so a reader can wait for one instead of polling.
    version: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Default for StatusHub {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            version: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }
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

    /// A change: waiters of [`StatusHub::wait_for`] look again.
    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let r = self.read(f);
        self.version.send_modify(|v| *v = v.wrapping_add(1));
        r
    }

    fn read<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut g = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        f(&mut g)
    }

    /// Waits until `pred` holds for the snapshot (checked now and after every change).
    pub async fn wait_for(&self, mut pred: impl FnMut(&Snapshot) -> bool) {
        let mut changes = self.version.subscribe();
        while !pred(&self.snapshot()) {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// A receiver that sees every change (for the lesson recorder).
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// The lesson log as it stands (at start).
    pub fn set_lessons(&self, lessons: crate::lessons::LessonsStatus) {
        self.with(|i| i.snap.lessons = lessons);
    }

    /// The lesson under way (not a change waiters wake for: the lesson task sets it after
    /// every change it sees).
    pub fn set_current_lesson(&self, lesson: Option<crate::lessons::Lesson>) {
        self.read(|i| i.snap.lessons.current = lesson);
    }

    /// A lesson ended and was logged.
    pub fn lesson_recorded(&self, lesson: crate::lessons::Lesson) {
        self.with(|i| {
            i.snap.lessons.count += 1;
            i.snap.lessons.last = Some(lesson);
            i.snap.lessons.current = None;
        });
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> Snapshot {
        self.read(|i| i.snap.clone())
    }

    /// The state alone (cheaper than a whole snapshot).
    pub fn state(&self) -> DaemonState {
        self.read(|i| i.snap.state.clone())
    }

    /// Live with a broadcast running (logged in, devices open), without copying the snapshot.
    pub fn is_broadcasting(&self) -> bool {
        self.read(|i| i.snap.state == DaemonState::Live && i.snap.broadcast.is_some())
    }

    pub fn set_state(&self, state: DaemonState) {
        self.with(|i| {
            if i.snap.state != state {
                i.snap.state_since = Some(Instant::now());
            }
            i.snap.state = state;
        });
    }

    pub fn set_schedule(&self, s: ScheduleStatus) {
        self.with(|i| i.snap.schedule = s);
    }

    /// A broadcast starts: counts it and keeps its sender's handle for `POST /reconnect`.
    pub fn broadcast_started(&self, control: SenderControl) {
        self.with(|i| {
            let now = Instant::now();
            i.snap.broadcasts += 1;
            i.snap.broadcast = Some(BroadcastSnapshot {
                started: Some(now),
                ..BroadcastSnapshot::default()
            });
            i.snap.not_publishing_since = Some(now);
            i.reconnect = Some(control);
            i.counted = Some(Totals::default());
        });
    }

    /// The running broadcast's numbers; also folds its counters into [`Snapshot::totals`].
    pub fn update_broadcast(&self, b: BroadcastSnapshot) {
        self.with(|i| {
            let now = Totals::of_broadcast(&b);
            let prev = i.counted.unwrap_or_default();
            i.snap.totals.advance(&prev, &now);
            i.counted = Some(now);
            if b.sender_state == SenderPhase::Publishing {
                i.snap.not_publishing_since = None;
            } else if i.snap.not_publishing_since.is_none() {
                i.snap.not_publishing_since = Some(Instant::now());
            }
            i.snap.broadcast = Some(b);
        });
    }

    /// The broadcast ended (`error`: why, if it failed).
    pub fn broadcast_ended(&self, error: Option<String>, capture_error: bool) {
        self.with(|i| {
            i.snap.broadcast = None;
            i.snap.media_wait = None;
            i.snap.not_publishing_since = None;
            i.reconnect = None;
            i.pictures = None;
            // `counted` stays: a late update of the ended broadcast adds only what moved.
            if capture_error {
                i.snap.capture_errors += 1;
            }
            if error.is_some() {
                i.snap.last_error = error;
            }
        });
    }

    /// Capture and encoding failed to start (attempt `attempts`); the next try in `retry_in`.
    pub fn media_waiting(&self, reason: String, attempts: u32, retry_in: Duration) {
        self.with(|i| {
            let since = i
                .snap
                .media_wait
                .as_ref()
                .map_or_else(Instant::now, |w| w.since);
            i.snap.capture_errors += 1;
            i.snap.media_wait = Some(MediaWait {
                reason,
                since,
                attempts,
                retry_in,
            });
        });
    }

    /// Capture and encoding run (again).
    pub fn media_ready(&self) {
        self.with(|i| i.snap.media_wait = None);
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

    /// The pipeline `/snapshot.jpg` takes its pictures from: set by the broadcast when its
    /// capture and encoding run (again), cleared when they stop or the broadcast ends.
    pub fn set_picture_source(&self, pipeline: Option<PipelineControl>) {
        self.read(|i| i.pictures = pipeline);
    }

    /// Where a snapshot comes from now: the running pipeline, or why there is none.
    pub fn picture_source(&self) -> PictureSource {
        self.read(|i| match (&i.snap.media_wait, &i.pictures) {
            (Some(w), _) => PictureSource::CaptureDown(w.reason.clone()),
            (None, Some(p)) => PictureSource::Pipeline(p.clone()),
            (None, None) => PictureSource::NoBroadcast,
        })
    }

    /// The latest media report, straight from the running pipeline (fresher than the
    /// snapshot's, which the broadcast updates twice a second); the last snapshot's while
    /// capture is down; `None` without a broadcast.
    pub fn media_now(&self) -> Option<MediaReport> {
        let (pipeline, last) = self.read(|i| {
            (
                i.pictures.clone(),
                i.snap.broadcast.as_ref().and_then(|b| b.media.clone()),
            )
        });
        pipeline.and_then(|p| p.media()).or(last)
    }

    /// `POST /reconnect`: asks the running broadcast's sender to reconnect now. `false` when
    /// no broadcast runs.
    /// The service loop takes lesson-control requests (`POST /extend`, `/start`, `/stop`)
    /// through `tx`.
    pub fn set_control(&self, tx: tokio::sync::mpsc::Sender<super::control::ControlRequest>) {
        self.read(|i| i.control = Some(tx));
    }

    /// Where to send a lesson-control request, if a service loop takes them.
    pub fn control_sender(
        &self,
    ) -> Option<tokio::sync::mpsc::Sender<super::control::ControlRequest>> {
        self.read(|i| i.control.clone())
    }

    pub fn reconnect_now(&self) -> bool {
        match self.read(|i| i.reconnect.clone()) {
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
        self.read(|i| match (&i.snap.state, &i.snap.broadcast) {
            (DaemonState::Live, Some(b)) => Some(Progress {
                // The camera's frames when there is a camera (a microphone that keeps going
                // must not hide a wedged camera; a lost device is filled with stills or
                // silence, which count), else the microphone's.
                frames_encoded: if b.pipeline.video.frames_captured
                    + b.pipeline.video.frames_encoded
                    > 0
                    || b.configured_fps > 0.0
                {
                    b.pipeline.video.frames_encoded
                } else {
                    b.pipeline.audio.frames_encoded
                },
                packets_sent: b.sender.packets_sent,
                publishing: b.sender_state == SenderPhase::Publishing,
            }),
            // Logging in and opening the devices: nothing can flow yet, and the start has
            // its own bounds (login retries, device timeouts).
            (DaemonState::Live, None) => None,
            _ => None,
        })
    }
}

/// Where `/snapshot.jpg` gets its picture ([`StatusHub::picture_source`]).
#[derive(Debug, Clone)]
pub enum PictureSource {
    /// No broadcast runs (idle, starting, or between broadcasts).
    NoBroadcast,
    /// Capture and encoding are down and being retried, for this reason.
    CaptureDown(String),
    /// The running pipeline.
    Pipeline(PipelineControl),
}

/// What the watchdog compares between pings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    /// Frames through the video encoder (audio's when there is no video).
    pub frames_encoded: u64,
    /// Packets the sender wrote to the ingest.
    pub packets_sent: u64,
    /// The sender is publishing: then its packets must move too. (While it reconnects after
    /// a network failure they cannot, and a restart would not help: it reconnects on its own.)
    pub publishing: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_counters(sent: u64, video: u64) -> BroadcastSnapshot {
        let mut b = BroadcastSnapshot::default();
        b.sender.bytes_sent = sent;
        b.pipeline.video.frames_encoded = video;
        b.sender_state = SenderPhase::Publishing;
        b
    }

    #[test]
    fn totals_stay_monotonic_across_broadcasts_and_resets() {
        let hub = StatusHub::new();
        hub.broadcast_started(SenderControl::new());
        hub.update_broadcast(with_counters(1000, 10));
        hub.update_broadcast(with_counters(3000, 25));
        assert_eq!(hub.snapshot().totals.bytes_sent, 3000);
        // The pipeline restarted inside the broadcast (a reload): its counter began at 0.
        hub.update_broadcast(with_counters(3500, 4));
        assert_eq!(hub.snapshot().totals.video_frames_encoded, 29);
        hub.broadcast_ended(None, false);
        // A late update of the ended broadcast adds only what moved.
        hub.update_broadcast(with_counters(3500, 4));
        let s = hub.snapshot();
        assert_eq!(
            (s.totals.bytes_sent, s.totals.video_frames_encoded),
            (3500, 29)
        );

        hub.broadcast_started(SenderControl::new());
        let s = hub.snapshot();
        assert_eq!(
            s.totals.bytes_sent, 3500,
            "a new broadcast keeps the totals"
        );
        assert!(s.not_publishing_since.is_some());
        hub.update_broadcast(with_counters(200, 5));
        let s = hub.snapshot();
        assert_eq!(
            (s.totals.bytes_sent, s.totals.video_frames_encoded),
            (3700, 34)
        );
        assert_eq!(s.broadcasts, 2);
        assert!(s.not_publishing_since.is_none(), "publishing");
        let mut waiting = with_counters(300, 6);
        waiting.sender_state = SenderPhase::Waiting;
        hub.update_broadcast(waiting.clone());
        let since = hub.snapshot().not_publishing_since.expect("not publishing");
        hub.update_broadcast(waiting);
        assert_eq!(
            hub.snapshot().not_publishing_since,
            Some(since),
            "kept, not renewed"
        );
    }

    #[test]
    fn state_since_changes_only_with_the_state() {
        let hub = StatusHub::new();
        assert_eq!(hub.snapshot().state_since, None);
        hub.set_state(DaemonState::Idle);
        let t = hub.snapshot().state_since.expect("set");
        hub.set_state(DaemonState::Idle);
        assert_eq!(hub.snapshot().state_since, Some(t));
        hub.set_state(DaemonState::Live);
        assert!(hub.snapshot().state_since >= Some(t));
        assert!(
            hub.snapshot().should_stream(),
            "no schedule: stream all the time"
        );
    }
}
