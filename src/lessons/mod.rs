//! Lesson reports: which lessons made it to air, and why the others did not.
//!
//! One record per schedule window or manual broadcast (one outside any window, or with no
//! schedule): the planned window against the time on air (publishing), the share of the window
//! on air, each gap (not publishing while the lesson should be on air) with its start, end and
//! cause ([`Cause`]: uplink, ingest, platform, device, starting, failed, off), reconnects,
//! drops, the media alarms raised, and the safety-recording segments that cover each gap.
//!
//! - [`recorder`]: pure: observations with the time passed in, a [`Lesson`] out when one ends.
//! - [`store`]: the JSON-lines log under the state directory (`lessons.jsonl`), rotated.
//! - `report`: `polypush lessons` (table or JSON lines, `--since`).
//! - [`spawn`]: the service's hook: a task that watches the status hub (every change, and
//!   every second), feeds the recorder on the service's wall clock, appends each lesson that
//!   ends, and shows the last one in the hub (`/status` `lessons`, the metric
//!   `polypush_last_lesson_on_air_ratio`). [`LessonTask::finish`] closes the lesson open at a
//!   clean stop.

pub mod recorder;
mod report;
pub mod store;

pub use recorder::{Cause, Drops, Gap, Lesson, Observation, Planned, Recorder, Segment};
pub use report::{parse_since, render};
pub use store::LessonLog;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use crate::config::Config;
use crate::rtmp::SenderPhase;
use crate::service::WallClock;
use crate::status::{DaemonState, Snapshot, StatusHub};

/// The box's time zone (TZ, else /etc/localtime; UTC when neither says).
pub fn local_zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC)
}

/// [`parse_since`] in the box's time zone (for the command line).
pub fn parse_since_local(s: &str) -> Result<SystemTime, String> {
    parse_since(s, &local_zone())
}

/// What the hub shows of the lesson log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LessonsStatus {
    /// Lessons in the log (all its files).
    pub count: u64,
    /// The last lesson that ended.
    pub last: Option<Lesson>,
    /// The lesson under way, as it stands (its window up to now).
    pub current: Option<Lesson>,
}

/// Reduces a hub snapshot (at `now`) to what the recorder needs.
pub fn observe(snap: &Snapshot, now: Instant) -> Observation {
    let active = matches!(snap.state, DaemonState::Live | DaemonState::Failed { .. });
    let s = &snap.schedule;
    let planned = match (s.configured && s.in_window, s.window_start, s.window_end) {
        (true, Some(start), Some(end)) => Some(Planned {
            title: s.title.clone(),
            start,
            end,
        }),
        _ => None,
    };
    let b = snap.broadcast.as_ref();
    let platform_refusal = b.and_then(|b| {
        b.refusal.as_ref().map(|r| r.reason).or_else(|| {
            (b.sender_state == SenderPhase::CredentialsRejected).then_some("credentials")
        })
    });
    let detail = match (&snap.media_wait, b) {
        (Some(w), _) => Some(w.reason.clone()),
        (None, Some(b)) => b
            .refusal
            .as_ref()
            .map(|r| r.message.clone())
            .or_else(|| b.sender_error.clone()),
        (None, None) => match &snap.state {
            DaemonState::Failed { reason } => Some(reason.clone()),
            _ => None,
        },
    };
    Observation {
        active,
        planned,
        publishing: snap.publishing(),
        not_publishing_for: snap
            .not_publishing_since
            .map(|t| now.saturating_duration_since(t)),
        capture_down: snap.media_wait.is_some(),
        failed: matches!(snap.state, DaemonState::Failed { .. }),
        platform_refusal,
        publish_rejections: b.map_or(0, |b| b.sender.publish_rejections),
        connections_lost: b.map_or(0, |b| b.sender.connections_lost),
        connect_failures: b.map_or(0, |b| b.sender.connect_failures),
        detail,
        totals: snap.totals,
    }
}

/// The state directory and the log's size limit, from `[service]`.
#[derive(Debug, Clone)]
pub struct LessonOptions {
    pub state_dir: PathBuf,
    pub max_bytes: u64,
    /// The safety recording's directory, when recording is on.
    pub record_dir: Option<PathBuf>,
}

impl LessonOptions {
    pub fn from_config(cfg: &Config) -> Self {
        Self {
            state_dir: cfg.service.state_dir.clone(),
            max_bytes: cfg.service.lessons_max_bytes,
            record_dir: cfg.record.enabled.then(|| cfg.record.dir.clone()),
        }
    }

    pub fn log(&self) -> LessonLog {
        LessonLog::new(&self.state_dir, self.max_bytes)
    }
}

/// The running lesson task.
pub struct LessonTask {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LessonTask {
    /// Closes the lesson still open (a clean stop) and writes it; bounded.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Starts the lesson task (see the module docs). Loads the log's last lesson and count into
/// the hub first, so the metric survives a restart.
pub fn spawn(opts: LessonOptions, hub: StatusHub, clock: Arc<dyn WallClock>) -> LessonTask {
    let log = opts.log();
    match log.read() {
        Ok(c) => {
            if c.skipped > 0 {
                tracing::warn!(
                    skipped = c.skipped,
                    file = %log.path().display(),
                    "lesson log: lines that do not parse were skipped"
                );
            }
            hub.set_lessons(LessonsStatus {
                count: c.lessons.len() as u64,
                last: c.lessons.last().cloned(),
                current: None,
            });
        }
        Err(e) => tracing::warn!(error = %e, "lesson log not readable"),
    }
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut rec = Recorder::new();
        let mut changes = hub.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let closing = tokio::select! {
                _ = &mut stopped => true,
                r = changes.changed() => r.is_err(),
                _ = tick.tick() => false,
            };
            let now = clock.now();
            let obs = observe(&hub.snapshot(), Instant::now());
            if let Some(lesson) = rec.observe(now, &obs) {
                write(&opts, &log, &hub, lesson).await;
            }
            hub.set_current_lesson(rec.peek(now));
            if closing {
                if let Some(lesson) = rec.close(now) {
                    write(&opts, &log, &hub, lesson).await;
                }
                return;
            }
        }
    });
    LessonTask { stop, task }
}

/// Attaches the recordings, appends the lesson to the log and shows it in the hub.
async fn write(opts: &LessonOptions, log: &LessonLog, hub: &StatusHub, mut lesson: Lesson) {
    let record_dir = opts.record_dir.clone();
    let log2 = log.clone();
    let ended = lesson.ended;
    let written = tokio::task::spawn_blocking(move || {
        if let Some(dir) = record_dir {
            match crate::record::segment_spans(&dir) {
                Ok(spans) => {
                    let segments: Vec<Segment> = spans
                        .into_iter()
                        // A segment still being written covers up to the lesson's end (its last
                        // write lags by up to [record] sync_interval_s).
                        .map(|(name, start, end, open)| Segment {
                            name,
                            start,
                            end: if open { end.max(ended) } else { end },
                        })
                        .collect();
                    lesson.attach_recordings(&segments);
                }
                Err(e) => tracing::warn!(error = %e, "lesson report: cannot list the recordings"),
            }
        }
        let r = log2.append(&lesson);
        (lesson, r)
    })
    .await;
    let Ok((lesson, result)) = written else {
        return;
    };
    match result {
        Ok(()) => tracing::info!(
            title = lesson.title.as_deref().unwrap_or(""),
            on_air_pct = format!("{:.1}", lesson.on_air_ratio * 100.0),
            gaps = lesson.gaps.len(),
            file = %log.path().display(),
            "lesson ended"
        ),
        Err(e) => tracing::error!(
            error = %e,
            file = %log.path().display(),
            "lesson report not written: make the state directory ([service] state_dir) writable"
        ),
    }
    hub.lesson_recorded(lesson);
}

/// RFC 3339 (UTC, milliseconds) for the lesson records.
pub(crate) mod ts {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn format(t: SystemTime) -> String {
        let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        };
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    pub(crate) fn parse(s: &str) -> Result<SystemTime, String> {
        s.parse::<jiff::Timestamp>()
            .map(SystemTime::from)
            .map_err(|e| format!("{s:?}: {e}"))
    }

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// [`ts`] for an optional time (`null`).
pub(crate) mod ts_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::ts::format(*t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::ts::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
