//! The service's hook for the lesson reports ([`crate::lessons`]): a task that watches the
//! status hub, feeds the pure recorder on the service's wall clock, and writes each lesson
//! that ends to the log under `[service] state_dir`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::WallClock;
use crate::config::Config;
use crate::health::Alarm;
use crate::lessons::{
    Counters, Lesson, LessonLog, LessonsStatus, Observation, Planned, Recorder, Segment,
};
use crate::ring::DropReason;
use crate::rtmp::SenderPhase;
use crate::status::{DaemonState, Snapshot, StatusHub, Totals};

/// The counters a lesson reports, from the hub's totals.
fn counters(t: &Totals) -> Counters {
    let mut alarms_raised = [0; Alarm::ALL.len()];
    for (slot, a) in alarms_raised.iter_mut().zip(Alarm::ALL) {
        *slot = t.alarms_raised(a);
    }
    Counters {
        reconnects: t.reconnects,
        ring_dropped: DropReason::ALL.iter().map(|r| t.ring_dropped(*r)).sum(),
        video_frames_dropped: t.video_frames_dropped,
        audio_frames_dropped: t.audio_frames_dropped,
        alarms_raised,
    }
}

/// Reduces a hub snapshot (at `now`) to what the recorder needs.
pub(super) fn observe(snap: &Snapshot, now: Instant) -> Observation {
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
        totals: counters(&snap.totals),
    }
}

/// The state directory and the log's size limit, from `[service]`.
#[derive(Debug, Clone)]
pub(super) struct Options {
    state_dir: PathBuf,
    max_bytes: u64,
    /// The safety recording's directory, when recording is on.
    record_dir: Option<PathBuf>,
}

impl Options {
    pub(super) fn from_config(cfg: &Config) -> Self {
        Self {
            state_dir: cfg.service.state_dir.clone(),
            max_bytes: cfg.service.lessons_max_bytes,
            record_dir: cfg.record.enabled.then(|| cfg.record.dir.clone()),
        }
    }

    fn log(&self) -> LessonLog {
        LessonLog::new(&self.state_dir, self.max_bytes)
    }
}

/// The running lesson task.
pub(super) struct LessonTask {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl LessonTask {
    /// Closes the lesson still open (a clean stop) and writes it; bounded.
    pub(super) async fn finish(self) {
        let _ = self.stop.send(());
        let _ = tokio::time::timeout(Duration::from_secs(5), self.task).await;
    }
}

/// Starts the lesson task (see the module docs). Loads the log's last lesson and count into
/// the hub first, so the metric survives a restart.
pub(super) fn spawn(opts: Options, hub: &StatusHub, clock: &Arc<dyn WallClock>) -> LessonTask {
    let (hub, clock) = (hub.clone(), clock.clone());
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
async fn write(opts: &Options, log: &LessonLog, hub: &StatusHub, mut lesson: Lesson) {
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
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::warn!(error = %e, "lesson report kept in memory only (/status, /metrics)")
        }
        Err(e) => tracing::error!(
            error = %e,
            file = %log.path().display(),
            "lesson report not written: make the state directory ([service] state_dir) writable"
        ),
    }
    hub.lesson_recorded(lesson);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{BroadcastSnapshot, MediaWait, ScheduleStatus};
    use std::time::UNIX_EPOCH;

    #[test]
    fn what_the_recorder_sees_of_the_hub() {
        let t = |s: u64| UNIX_EPOCH + Duration::from_secs(s);
        let now = Instant::now();
        let idle = Snapshot {
            state: DaemonState::Idle,
            ..Snapshot::default()
        };
        assert!(!observe(&idle, now).active);

        let mut b = BroadcastSnapshot {
            sender_state: SenderPhase::Waiting,
            sender_error: Some("connection reset".into()),
            ..BroadcastSnapshot::default()
        };
        b.sender.connections_lost = 2;
        let live = Snapshot {
            state: DaemonState::Live,
            schedule: ScheduleStatus {
                configured: true,
                in_window: true,
                window_start: Some(t(100)),
                window_end: Some(t(200)),
                title: Some("Maths".into()),
                ..ScheduleStatus::default()
            },
            broadcast: Some(b),
            not_publishing_since: Some(now - Duration::from_secs(3)),
            ..Snapshot::default()
        };
        let o = observe(&live, now);
        assert!(o.active && !o.publishing && !o.capture_down && !o.failed);
        let p = o.planned.expect("in a window");
        assert_eq!(
            (p.start, p.end, p.title.as_deref()),
            (t(100), t(200), Some("Maths"))
        );
        assert_eq!(o.connections_lost, 2);
        assert_eq!(o.not_publishing_for, Some(Duration::from_secs(3)));
        assert_eq!(o.detail.as_deref(), Some("connection reset"));

        // Outside any window (a manual broadcast), capture down.
        let mut manual = live.clone();
        manual.schedule.in_window = false;
        manual.media_wait = Some(MediaWait {
            reason: "no camera at /dev/video0".into(),
            since: now,
            attempts: 1,
            retry_in: Duration::from_secs(2),
        });
        let o = observe(&manual, now);
        assert!(o.active && o.planned.is_none() && o.capture_down);
        assert_eq!(o.detail.as_deref(), Some("no camera at /dev/video0"));

        let failed = Snapshot {
            state: DaemonState::Failed {
                reason: "encoder gone".into(),
            },
            ..Snapshot::default()
        };
        let o = observe(&failed, now);
        assert!(o.active && o.failed);
        assert_eq!(o.detail.as_deref(), Some("encoder gone"));
    }
}
