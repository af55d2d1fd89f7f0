//! The pure lesson recorder: observations of the daemon in, one [`Lesson`] out when a lesson
//! ends. Time is passed in (`now`), so every rule is tested with an injected clock.
//!
//! A lesson is open while the daemon should be broadcasting: live (a broadcast running) or
//! failed (waiting to start one again) — inside a schedule window, or a manual broadcast
//! (outside any window, or with no schedule at all). It ends when the daemon idles, stops, or
//! when a different window opens. Within it, every stretch without publishing is a [`Gap`]
//! whose cause is the strongest evidence seen during it ([`Cause`] ranks them).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::health::Alarm;

/// The daemon-wide counters a lesson reports the growth of (from the status hub's totals,
/// which never go down).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    /// Sessions after the first.
    pub reconnects: u64,
    /// Packets the send queue dropped, all reasons.
    pub ring_dropped: u64,
    pub video_frames_dropped: u64,
    pub audio_frames_dropped: u64,
    /// Media alarms raised, in [`Alarm::ALL`] order.
    pub alarms_raised: [u64; Alarm::ALL.len()],
}

/// Why the lesson was not on air. Serialized as the lower-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Cause {
    /// The service was not broadcasting in this part of the window (started late, stopped
    /// early, or restarted).
    Off,
    /// The first connection of the broadcast, before anything failed.
    Starting,
    /// The broadcast failed and waits to start again (the daemon's `failed` state).
    Failed,
    /// The path to the ingest: a session lost or stalled, connections that fail (refused,
    /// timed out, unreachable). polypush cannot tell a dead link from a dead server.
    Uplink,
    /// The RTMP server answered and refused the connect or the publish.
    Ingest,
    /// Polyv refused the login (credentials, rate limit, channel state) or was unavailable.
    Platform,
    /// Capture is down (camera or microphone missing or failed).
    Device,
}

impl Cause {
    pub const ALL: [Cause; 7] = [
        Cause::Off,
        Cause::Starting,
        Cause::Failed,
        Cause::Uplink,
        Cause::Ingest,
        Cause::Platform,
        Cause::Device,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Off => "off",
            Cause::Starting => "starting",
            Cause::Failed => "failed",
            Cause::Uplink => "uplink",
            Cause::Ingest => "ingest",
            Cause::Platform => "platform",
            Cause::Device => "device",
        }
    }
}

/// A schedule window: what was planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub title: Option<String>,
    pub start: SystemTime,
    pub end: SystemTime,
}

/// What the daemon looks like at one instant, reduced to what a lesson report needs. Built
/// from the status hub's snapshot by [`super::observe`].
#[derive(Debug, Clone, Default)]
pub struct Observation {
    /// A broadcast should be running (live or failed and retrying).
    pub active: bool,
    /// The window open now; `None`: a manual broadcast (outside any window, or no schedule).
    pub planned: Option<Planned>,
    pub publishing: bool,
    /// How long the sender has already not been publishing (refines a gap's start).
    pub not_publishing_for: Option<Duration>,
    /// Capture is down and being retried.
    pub capture_down: bool,
    /// The daemon is in its `failed` state (or no broadcast runs although one should).
    pub failed: bool,
    /// The platform refusal being waited out (its reason label), if any.
    pub platform_refusal: Option<&'static str>,
    /// The current sender's counters (they restart at 0 with each broadcast).
    pub publish_rejections: u64,
    pub connections_lost: u64,
    pub connect_failures: u64,
    /// What the sender, capture or the daemon said last (no secrets: push addresses are
    /// masked where they are made).
    pub detail: Option<String>,
    /// The daemon-wide counters now.
    pub totals: Counters,
}

/// One stretch of a lesson off air.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Gap {
    #[serde(with = "super::ts")]
    pub start: SystemTime,
    #[serde(with = "super::ts")]
    pub end: SystemTime,
    pub duration_s: f64,
    pub cause: Cause,
    /// The message that decided the cause, if there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Safety-recording segments (file names in `[record] dir`) that overlap the gap.
    #[serde(default)]
    pub recordings: Vec<String>,
}

/// Frames and packets dropped during the lesson.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drops {
    /// Packets the send queue dropped (all reasons).
    pub ring_packets: u64,
    /// Captured frames dropped before the encoders.
    pub video_frames: u64,
    pub audio_frames: u64,
}

/// One lesson: a window or a manual broadcast, as it went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Lesson {
    /// `window` or `manual`.
    pub kind: String,
    pub title: Option<String>,
    /// The window (none for a manual broadcast).
    #[serde(with = "super::ts_opt")]
    pub planned_start: Option<SystemTime>,
    #[serde(with = "super::ts_opt")]
    pub planned_end: Option<SystemTime>,
    /// When the daemon started and stopped broadcasting for it.
    #[serde(with = "super::ts")]
    pub started: SystemTime,
    #[serde(with = "super::ts")]
    pub ended: SystemTime,
    /// What the share is of: the planned window, or the manual broadcast's length.
    pub planned_s: f64,
    /// Time publishing.
    pub on_air_s: f64,
    /// `on_air_s / planned_s`, 0..=1.
    pub on_air_ratio: f64,
    #[serde(with = "super::ts_opt")]
    pub first_on_air: Option<SystemTime>,
    pub gaps: Vec<Gap>,
    /// Sessions after the first.
    pub reconnects: u64,
    pub drops: Drops,
    /// Media alarms raised during the lesson, by name (all five).
    pub media_alarms: BTreeMap<String, u64>,
}

impl Lesson {
    /// Fills each gap's `recordings` with the segments that overlap it.
    pub fn attach_recordings(&mut self, segments: &[Segment]) {
        for g in &mut self.gaps {
            g.recordings = segments
                .iter()
                .filter(|s| s.start < g.end && s.end > g.start)
                .map(|s| s.name.clone())
                .collect();
        }
    }

    /// The distinct causes of its gaps, strongest first.
    pub fn causes(&self) -> Vec<Cause> {
        let mut c: Vec<Cause> = self.gaps.iter().map(|g| g.cause).collect();
        c.sort_unstable_by(|a, b| b.cmp(a));
        c.dedup();
        c
    }
}

/// A safety-recording segment and the time it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// The file name as it is once complete (`….flv`).
    pub name: String,
    pub start: SystemTime,
    pub end: SystemTime,
}

/// A gap still open.
#[derive(Debug, Clone)]
struct OpenGap {
    start: SystemTime,
    cause: Cause,
    detail: Option<String>,
}

#[derive(Debug, Clone)]
struct Open {
    planned: Option<Planned>,
    started: SystemTime,
    baseline: Counters,
    last_totals: Counters,
    gaps: Vec<Gap>,
    gap: Option<OpenGap>,
    first_on_air: Option<SystemTime>,
    rejections: u64,
    lost: u64,
    connect_failures: u64,
}

/// Keeps the open lesson; see the module docs.
#[derive(Debug, Default)]
pub struct Recorder {
    open: Option<Open>,
}

/// Gaps shorter than this at a window's edges are not reported as `off` (sampling, the
/// service's own start-up).
const EDGE_SLACK: Duration = Duration::from_secs(2);

/// A lesson that never went on air and lasted less than this is not recorded.
const MIN_LESSON: Duration = Duration::from_secs(1);

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a lesson is open.
    pub fn is_open(&self) -> bool {
        self.open.is_some()
    }

    /// Takes one observation at `now`; returns the lesson that ended, if one did.
    pub fn observe(&mut self, now: SystemTime, obs: &Observation) -> Option<Lesson> {
        let mut ended = None;
        if let Some(open) = &self.open {
            // A window that ends while the broadcast is still stopping stays the same
            // lesson (the schedule says "no window" a moment before the daemon idles); a
            // window opening during a manual broadcast starts a new one.
            let other_window = match (&open.planned, &obs.planned) {
                (Some(a), Some(b)) => a.start != b.start,
                (None, Some(_)) => true,
                (_, None) => false,
            };
            if !obs.active || other_window {
                ended = self.close(now);
            }
        }
        if !obs.active {
            return ended;
        }
        let open = self.open.get_or_insert_with(|| Open {
            planned: obs.planned.clone(),
            started: now,
            baseline: obs.totals,
            last_totals: obs.totals,
            gaps: Vec::new(),
            gap: None,
            first_on_air: None,
            rejections: obs.publish_rejections,
            lost: obs.connections_lost,
            connect_failures: obs.connect_failures,
        });
        // The window may move (extended, shortened by a reload): keep the latest.
        if let (Some(p), Some(new)) = (&mut open.planned, &obs.planned) {
            p.end = new.end;
            p.title = new.title.clone();
        }
        open.last_totals = obs.totals;
        let evidence = evidence(open, obs);
        open.rejections = obs.publish_rejections;
        open.lost = obs.connections_lost;
        open.connect_failures = obs.connect_failures;
        if obs.publishing {
            if open.first_on_air.is_none() {
                open.first_on_air = Some(now);
            }
            if let Some(g) = open.gap.take() {
                push_gap(&mut open.gaps, g, now);
            }
        } else {
            let gap = open.gap.get_or_insert_with(|| {
                // The sender says since when it has not been publishing.
                let since = obs
                    .not_publishing_for
                    .and_then(|d| now.checked_sub(d))
                    .map_or(now, |t| t.max(open.started));
                OpenGap {
                    start: since,
                    cause: Cause::Starting,
                    detail: None,
                }
            });
            let (cause, detail) = evidence.unwrap_or_else(|| {
                let default = if open.first_on_air.is_some() {
                    Cause::Uplink
                } else {
                    Cause::Starting
                };
                (default, obs.detail.clone())
            });
            if cause > gap.cause || (cause == gap.cause && gap.detail.is_none()) {
                gap.cause = cause;
                gap.detail = detail;
            }
        }
        ended
    }

    /// The open lesson as it stands at `now`, as if it ended then (without the part of its
    /// window still ahead); `None` when none is open.
    pub fn peek(&self, now: SystemTime) -> Option<Lesson> {
        let mut open = self.open.clone()?;
        if let Some(p) = &mut open.planned {
            p.end = p.end.min(now.max(open.started));
        }
        Recorder { open: Some(open) }.close(now)
    }

    /// Ends the open lesson at `now` (the service stops); `None` when none is open.
    pub fn close(&mut self, now: SystemTime) -> Option<Lesson> {
        let mut open = self.open.take()?;
        let ended = now.max(open.started);
        if open.first_on_air.is_none() && ended < open.started + MIN_LESSON {
            // A blink of the state machine (a reload, a failed start), not a lesson.
            return None;
        }
        if let Some(g) = open.gap.take() {
            push_gap(&mut open.gaps, g, ended);
        }
        let mut gaps = Vec::new();
        if let Some(p) = &open.planned {
            if open.started > p.start + EDGE_SLACK {
                gaps.push(gap(p.start, open.started, Cause::Off, None));
            }
        }
        gaps.append(&mut open.gaps);
        if let Some(p) = &open.planned {
            if p.end > ended + EDGE_SLACK {
                gaps.push(gap(ended, p.end, Cause::Off, None));
            }
        }
        let observed = secs(ended, open.started);
        let off_air_inside: f64 = gaps
            .iter()
            .filter(|g| g.cause != Cause::Off)
            .map(|g| g.duration_s)
            .sum();
        let on_air_s = (observed - off_air_inside).max(0.0);
        let planned_s = match &open.planned {
            Some(p) => secs(p.end, p.start),
            None => observed,
        };
        let on_air_ratio = if planned_s > 0.0 {
            (on_air_s / planned_s).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let (b, t) = (open.baseline, open.last_totals);
        let d = |now: u64, then: u64| now.saturating_sub(then);
        let ring_packets = d(t.ring_dropped, b.ring_dropped);
        let media_alarms = Alarm::ALL
            .iter()
            .enumerate()
            .map(|(i, a)| {
                (
                    a.as_str().to_string(),
                    d(t.alarms_raised[i], b.alarms_raised[i]),
                )
            })
            .collect();
        Some(Lesson {
            kind: if open.planned.is_some() {
                "window"
            } else {
                "manual"
            }
            .to_string(),
            title: open.planned.as_ref().and_then(|p| p.title.clone()),
            planned_start: open.planned.as_ref().map(|p| p.start),
            planned_end: open.planned.as_ref().map(|p| p.end),
            started: open.started,
            ended,
            planned_s: round3(planned_s),
            on_air_s: round3(on_air_s),
            on_air_ratio: (on_air_ratio * 10_000.0).round() / 10_000.0,
            first_on_air: open.first_on_air,
            gaps,
            reconnects: d(t.reconnects, b.reconnects),
            drops: Drops {
                ring_packets,
                video_frames: d(t.video_frames_dropped, b.video_frames_dropped),
                audio_frames: d(t.audio_frames_dropped, b.audio_frames_dropped),
            },
            media_alarms,
        })
    }
}

/// What this observation says about why the lesson is off air (strongest first).
fn evidence(open: &Open, obs: &Observation) -> Option<(Cause, Option<String>)> {
    let grew = |now: u64, then: u64| now > then;
    let cause = if obs.capture_down {
        Cause::Device
    } else if obs.platform_refusal.is_some_and(|r| r != "unreachable") {
        Cause::Platform
    } else if grew(obs.publish_rejections, open.rejections) {
        Cause::Ingest
    } else if obs.platform_refusal.is_some()
        || grew(obs.connections_lost, open.lost)
        || grew(obs.connect_failures, open.connect_failures)
    {
        Cause::Uplink
    } else if obs.failed {
        Cause::Failed
    } else {
        return None;
    };
    Some((cause, obs.detail.clone()))
}

fn push_gap(gaps: &mut Vec<Gap>, g: OpenGap, end: SystemTime) {
    let end = end.max(g.start);
    if end > g.start {
        gaps.push(gap(g.start, end, g.cause, g.detail));
    }
}

fn gap(start: SystemTime, end: SystemTime, cause: Cause, detail: Option<String>) -> Gap {
    Gap {
        start,
        end,
        duration_s: round3(secs(end, start)),
        cause,
        detail,
        recordings: Vec::new(),
    }
}

fn secs(a: SystemTime, b: SystemTime) -> f64 {
    a.duration_since(b).map_or(0.0, |d| d.as_secs_f64())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
