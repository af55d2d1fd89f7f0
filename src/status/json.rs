//! `/status`: the snapshot as JSON. Times are RFC 3339 (UTC), durations in seconds or
//! milliseconds as the key says, rates in kbit/s as in the config. Nothing here is a secret:
//! the snapshot holds none (sender errors name push addresses masked, as the sender logs them).

use super::health::health;
use super::hub::{BroadcastSnapshot, DaemonState, Snapshot, Totals};
use crate::encode::TrackStats;
use crate::health::{Alarm, MediaReport, TrackHealth};
use crate::ring::DropReason;
use crate::rtmp::SenderPhase;
use serde_json::{json, Map, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// `/status` for `snap` at `now`.
pub(super) fn status_json(snap: &Snapshot, now: Instant) -> Value {
    let h = health(snap, now);
    let since = |t: Option<Instant>| t.map(|t| secs(now.saturating_duration_since(t)));
    let s = &snap.schedule;
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "state": snap.state.as_str(),
        "state_reason": match &snap.state {
            DaemonState::Failed { reason } => Some(reason.as_str()),
            _ => None,
        },
        "state_for_s": since(snap.state_since),
        "health": { "healthy": h.healthy, "message": h.message },
        "schedule": {
            "configured": s.configured,
            "in_window": snap.should_stream(),
            "window_end": s.window_end.map(rfc3339),
            "next_start": s.next_start.map(rfc3339),
            "next_end": s.next_end.map(rfc3339),
            "title": s.title,
            "reason": s.why.map(|w| w.as_str()),
            "override": s.control.as_ref().map(super::control::override_json),
        },
        "broadcast": snap.broadcast.as_ref().map(|b| broadcast(b, snap, now)),
        "viewers": snap.viewers,
        "broadcasts": snap.broadcasts,
        "reloads": { "ok": snap.reloads, "failed": snap.reloads_failed },
        "capture_errors": snap.capture_errors,
        "capture": match &snap.media_wait {
            Some(w) => json!({
                "state": "down",
                "reason": w.reason,
                "down_for_s": secs(now.saturating_duration_since(w.since)),
                "attempts": w.attempts,
                "retry_in_s": secs(w.retry_in),
            }),
            None if snap.broadcast.is_some() => json!({ "state": "running" }),
            None => json!({ "state": "off" }),
        },
        "last_error": snap.last_error,
        "totals": totals(&snap.totals),
        "media": snap
            .broadcast
            .as_ref()
            .and_then(|b| b.media.as_ref())
            .map(|m| media(m, &snap.totals)),
        "lessons": lessons(&snap.lessons),
    })
}

/// `/status`'s `lessons`: how many are logged and a summary of the last one (the whole
/// record is in the log: `polypush lessons --json`).
fn lessons(l: &crate::lessons::LessonsStatus) -> Value {
    json!({
        "count": l.count,
        "last": l.last.as_ref().map(lesson_summary),
        "current": l.current.as_ref().map(lesson_summary),
    })
}

fn lesson_summary(l: &crate::lessons::Lesson) -> Value {
    json!({
            "kind": l.kind,
            "title": l.title,
            "planned_start": l.planned_start.map(rfc3339),
            "planned_end": l.planned_end.map(rfc3339),
            "started": rfc3339(l.started),
            "ended": rfc3339(l.ended),
            "on_air_s": l.on_air_s,
            "on_air_ratio": l.on_air_ratio,
            "gaps": l.gaps.len(),
            "off_air_s": l.gaps.iter().map(|g| g.duration_s).sum::<f64>(),
        "causes": l.causes().iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        "reconnects": l.reconnects,
    })
}

/// `/status`'s `media`: the alarms (raised counts daemon-wide, from `totals`), the meter and
/// the picture numbers.
pub(super) fn media(m: &MediaReport, totals: &Totals) -> Value {
    let alarms: Map<String, Value> = Alarm::ALL
        .iter()
        .map(|a| {
            let s = m.alarm(*a);
            (
                a.as_str().to_string(),
                json!({
                    "active": s.active,
                    "for_s": s.for_s,
                    "raised": totals.alarms_raised(*a).max(s.raised),
                }),
            )
        })
        .collect();
    let round = |x: Option<f64>, k: f64| x.map(|v| (v * k).round() / k);
    json!({
        "enabled": m.enabled,
        "active": m.active().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
        "alarms": alarms,
        "audio": {
            "state": m.audio_state.as_str(),
            "channels": channels(m),
        },
        "video": {
            "state": m.video_state.as_str(),
            "luma_mean": round(m.luma_mean, 10.0),
            "frame_change": round(m.frame_change, 1000.0),
            "capture_fps": round(m.capture_fps, 10.0),
            "configured_fps": m.configured_fps,
        },
    })
}

/// The meter's channels, levels in dBFS to 0.1 dB, floored (never null).
fn channels(m: &MediaReport) -> Vec<Value> {
    m.channels
        .iter()
        .map(|c| {
            json!({
                "peak_dbfs": (c.peak_dbfs * 10.0).round() / 10.0,
                "rms_dbfs": (c.rms_dbfs * 10.0).round() / 10.0,
            })
        })
        .collect()
}

/// `GET /meter`: the levels and active alarms now (`None`: no broadcast), and how old the
/// last audio block is.
pub(super) fn meter_json(m: Option<&MediaReport>) -> Value {
    match m {
        Some(m) => json!({
            "channels": if m.audio_state == TrackHealth::Live { channels(m) } else { Vec::new() },
            "alarms": m.active().iter().map(|a| a.as_str()).collect::<Vec<_>>(),
            "age_ms": m.audio_at.map(|t| t.elapsed().as_millis() as u64),
        }),
        None => json!({ "channels": [], "alarms": [], "age_ms": null }),
    }
}

fn secs(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

fn broadcast(b: &BroadcastSnapshot, snap: &Snapshot, now: Instant) -> Value {
    let snd = &b.sender;
    let dropped: Map<String, Value> = b
        .ring
        .dropped
        .iter()
        .map(|(r, c)| (r.as_str().to_string(), c.packets.into()))
        .collect();
    json!({
        "uptime_s": b.started.map(|t| secs(now.saturating_duration_since(t))),
        "sender_state": b.sender_state.as_str(),
        "sender_error": b.sender_error,
        "platform_refusal": b.refusal.as_ref().map(|r| json!({
            "class": r.class.as_str(),
            "reason": r.reason,
            "message": r.message,
        })),
        "publishing": b.sender_state == SenderPhase::Publishing,
        "not_publishing_for_s": snap
            .not_publishing_since
            .map(|t| secs(now.saturating_duration_since(t))),
        "sessions": snd.sessions,
        "reconnects": snd.reconnects,
        "connect_failures": snd.connect_failures,
        "connections_lost": snd.connections_lost,
        "publish_rejections": snd.publish_rejections,
        "credentials_rejections": snd.credentials_rejections,
        "stalls": snd.stalls,
        "bytes_sent": snd.bytes_sent,
        "bytes_acknowledged": snd.bytes_delivered,
        "packets_sent": snd.packets_sent,
        "last_recovery_ms": snd.last_recovery.map(|d| d.as_millis() as u64),
        "target_kbps": b.target_kbps,
        "configured_kbps": b.configured_kbps,
        "delivered_kbps": (b.delivered_kbps * 10.0).round() / 10.0,
        "encoder_fps": (b.encoder_fps * 100.0).round() / 100.0,
        "configured_fps": b.configured_fps,
        "queue_delay_ms": b.adapt.as_ref().map_or(b.ring.queued_delay_ms, |a| a.queue_delay_ms),
        "ring": {
            "queued_packets": b.ring.queued_packets,
            "queued_bytes": b.ring.queued_bytes,
            "queued_delay_ms": b.ring.queued_delay_ms,
            "dropped": dropped,
        },
        "video": track(&b.pipeline.video),
        "audio": track(&b.pipeline.audio),
        "audio_sync": {
            "drift_ppm": b.pipeline.audio_sync.drift_ppm().map(|p| (p * 10.0).round() / 10.0),
            "av_offset_ms": b.pipeline.audio_sync.av_offset_s().map(|s| (s * 1e4).round() / 10.0),
            "silence_inserted": b.pipeline.audio_sync.silence_inserted,
            "frames_skipped": b.pipeline.audio_sync.frames_skipped,
        },
        "pipeline_errors": b.pipeline.errors,
        "adapt": b.adapt.as_ref().map(|a| json!({
            "state": a.state.as_str(),
            "target_kbps": a.target_kbps,
            "send_rate_kbps": a.send_rate_kbps,
            "link_rate_kbps": a.link_rate_kbps,
            "ceiling_kbps": a.ceiling_kbps,
            "queue_delay_ms": a.queue_delay_ms,
            "fps_divisor": a.fps_divisor,
            "scale_divisor": a.scale_divisor,
            "cuts": a.cuts,
            "raises": a.raises,
        })),
    })
}

/// A track's numbers. A lost device's `since` is on the capture threads' own clock, so it is
/// read against that clock.
fn track(t: &TrackStats) -> Value {
    let reconnecting_for_s = match t.state {
        crate::encode::TrackState::Reconnecting { since } => Some(secs(since.elapsed())),
        crate::encode::TrackState::Live => None,
    };
    json!({
        "state": if reconnecting_for_s.is_some() { "reconnecting" } else { "live" },
        "reconnecting_for_s": reconnecting_for_s,
        "frames_captured": t.frames_captured,
        "frames_encoded": t.frames_encoded,
        "frames_dropped": t.frames_dropped,
        "frames_filled": t.frames_filled,
        "packets": t.packets,
        "bytes": t.bytes,
        "keyframes": t.keyframes,
        "device_losses": t.device_losses,
        "encoder_reopens": t.encoder_reopens,
    })
}

fn totals(t: &Totals) -> Value {
    let ring: Map<String, Value> = DropReason::ALL
        .iter()
        .map(|r| (r.as_str().to_string(), t.ring_dropped(*r).into()))
        .collect();
    json!({
        "reconnects": t.reconnects,
        "bytes_sent": t.bytes_sent,
        "bytes_acknowledged": t.bytes_delivered,
        "frames_encoded": { "video": t.video_frames_encoded, "audio": t.audio_frames_encoded },
        "frames_dropped": {
            "ring": ring,
            "encoder_behind": t.video_frames_dropped + t.audio_frames_dropped,
        },
        "device_losses": { "video": t.video_device_losses, "audio": t.audio_device_losses },
    })
}

/// `YYYY-MM-DDTHH:MM:SSZ` (RFC 3339, UTC, whole seconds).
pub(super) fn rfc3339(t: SystemTime) -> String {
    let secs = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs_f64().ceil() as i64),
    };
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = crate::record::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_utc() {
        let at = |s| rfc3339(UNIX_EPOCH + Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH - Duration::from_secs(1)),
            "1969-12-31T23:59:59Z"
        );
    }

    #[test]
    fn idle_snapshot_as_json() {
        let snap = Snapshot {
            state: DaemonState::Idle,
            schedule: crate::status::ScheduleStatus {
                configured: true,
                next_start: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000)),
                title: Some("Physics".into()),
                ..Default::default()
            },
            ..Snapshot::default()
        };
        let v = status_json(&snap, Instant::now());
        assert_eq!(v["state"], "idle");
        assert_eq!(v["health"]["healthy"], true);
        assert_eq!(v["schedule"]["next_start"], "2023-11-14T22:13:20Z");
        assert_eq!(v["schedule"]["in_window"], false);
        assert_eq!(v["schedule"]["title"], "Physics");
        assert!(v["broadcast"].is_null());
        assert_eq!(v["totals"]["frames_dropped"]["ring"]["gop_tail"], 0);
    }
}
