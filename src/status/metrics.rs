//! `/metrics`: a `prometheus-client` registry built at scrape time from one [`Snapshot`].
//!
//! Every name has the `polypush_` prefix and a base unit (seconds, bytes); counters end in
//! `_total` and come from [`Snapshot::totals`], which never goes down across broadcasts. The
//! counters and the state gauges are always there (0 while idle), so no series vanishes
//! between broadcasts; the gauges that describe a running broadcast (fps, bitrates, queue
//! delay) are there only while one runs, viewers and schedule times only when known.
//!
//! Two encodings of the same registry: OpenMetrics (what `prometheus-client` writes) for a
//! scraper that asks for it in `Accept`, as Prometheus does, and otherwise the classic text
//! format 0.0.4, which `promtool check metrics` and older tools read. They differ only in
//! metadata: OpenMetrics names a counter family without `_total` and ends with `# EOF`.

use super::hub::Snapshot;
use crate::health::Alarm;
use crate::ring::DropReason;
use crate::rtmp::SenderPhase;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::HashSet;
use std::sync::atomic::AtomicU64;
use std::time::{SystemTime, UNIX_EPOCH};

/// `Content-Type` of the classic text format.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";
/// `Content-Type` of OpenMetrics.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

type Labels = Vec<(&'static str, String)>;

/// Every [`super::DaemonState::as_str`] value: `polypush_state` has one series for each.
const STATES: [&str; 5] = ["starting", "idle", "live", "stopping", "failed"];

/// Adds metrics to a registry; names and help without the trailing period the encoder adds.
struct Builder {
    reg: Registry,
}

impl Builder {
    /// A counter: `name` without `_total` (the encoder appends it).
    fn counter(&mut self, name: &str, help: &str, value: u64) {
        let c: Counter = Counter::default();
        c.inc_by(value);
        self.reg.register(name, help, c);
    }

    fn counters(&mut self, name: &str, help: &str, values: &[(Labels, u64)]) {
        let f: Family<Labels, Counter> = Family::default();
        for (labels, v) in values {
            f.get_or_create(labels).inc_by(*v);
        }
        self.reg.register(name, help, f);
    }

    fn gauge(&mut self, name: &str, help: &str, value: f64) {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        self.reg.register(name, help, g);
    }

    fn gauges(&mut self, name: &str, help: &str, values: &[(Labels, f64)]) {
        let f: Family<Labels, Gauge<f64, AtomicU64>> = Family::default();
        for (labels, v) in values {
            f.get_or_create(labels).set(*v);
        }
        self.reg.register(name, help, f);
    }

    fn int_gauge(&mut self, name: &str, help: &str, value: i64) {
        let g: Gauge = Gauge::default();
        g.set(value);
        self.reg.register(name, help, g);
    }

    fn int_gauges(&mut self, name: &str, help: &str, values: &[(Labels, i64)]) {
        let f: Family<Labels, Gauge> = Family::default();
        for (labels, v) in values {
            f.get_or_create(labels).set(*v);
        }
        self.reg.register(name, help, f);
    }
}

fn label(key: &'static str, value: impl Into<String>) -> Labels {
    vec![(key, value.into())]
}

fn unix_seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    }
}

/// kbit/s to bytes per second (the base unit promtool asks for).
fn kbps_to_bytes_per_second(kbps: f64) -> f64 {
    kbps * 1000.0 / 8.0
}

/// The FFmpeg this binary runs with: (`ffmpeg` release, libavcodec `major.minor.micro`).
fn ffmpeg_versions() -> (String, String) {
    // SAFETY: both return constants of the linked libraries; av_version_info() a static
    // NUL-terminated string.
    let (info, codec) = unsafe {
        let p = ffmpeg_next::ffi::av_version_info();
        let info = if p.is_null() {
            String::new()
        } else {
            std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
        };
        (info, ffmpeg_next::ffi::avcodec_version())
    };
    let codec = format!("{}.{}.{}", codec >> 16, (codec >> 8) & 0xff, codec & 0xff);
    (info, codec)
}

/// The registry for `snap`.
pub fn registry(snap: &Snapshot) -> Registry {
    let mut m = Builder {
        reg: Registry::default(),
    };
    let t = &snap.totals;
    let b = snap.broadcast.as_ref();

    let current = snap.state.as_str();
    m.int_gauges(
        "polypush_state",
        "The daemon's state, one-hot: starting, idle (outside every window), live (broadcasting), stopping, failed (waiting to try again)",
        &STATES
            .iter()
            .map(|s| (label("state", *s), i64::from(*s == current)))
            .collect::<Vec<_>>(),
    );
    m.int_gauge(
        "polypush_connected",
        "1 while the sender is publishing to the ingest, else 0",
        i64::from(snap.publishing()),
    );
    m.int_gauge(
        "polypush_credentials_rejected",
        "1 while Polyv rejects the channel credentials (the sender retries every credentials_retry_s), else 0",
        i64::from(b.is_some_and(|b| b.sender_state == SenderPhase::CredentialsRejected)),
    );
    m.counter(
        "polypush_reconnects",
        "RTMP sessions after the first of each broadcast",
        t.reconnects,
    );
    m.counter(
        "polypush_sent_bytes",
        "Bytes the kernel accepted for the ingest",
        t.bytes_sent,
    );
    m.counter(
        "polypush_acknowledged_bytes",
        "Bytes the ingest's TCP acknowledged",
        t.bytes_delivered,
    );
    m.counters(
        "polypush_frames_encoded",
        "Frames handed to the encoders, by track",
        &[
            (label("track", "video"), t.video_frames_encoded),
            (label("track", "audio"), t.audio_frames_encoded),
        ],
    );
    let mut dropped: Vec<(Labels, u64)> = DropReason::ALL
        .iter()
        .map(|r| (label("reason", r.as_str()), t.ring_dropped(*r)))
        .collect();
    dropped.push((
        label("reason", "encoder_behind"),
        t.video_frames_dropped + t.audio_frames_dropped,
    ));
    m.counters(
        "polypush_frames_dropped",
        "Frames dropped, by reason: in the send queue (queue_full, queue_delay, gop_tail, reconnect, audio_overflow) or before the encoder (encoder_behind)",
        &dropped,
    );
    m.counters(
        "polypush_device_losses",
        "Times a live camera or microphone went away mid-broadcast, by track",
        &[
            (label("track", "video"), t.video_device_losses),
            (label("track", "audio"), t.audio_device_losses),
        ],
    );
    m.counter(
        "polypush_capture_errors",
        "Capture or encoder failures: devices that did not open at a start or a retry, pipelines that failed",
        snap.capture_errors,
    );
    m.int_gauge(
        "polypush_capture_down",
        "1 while capture and encoding are down and being retried (nothing is sent and polypush does not log in meanwhile), else 0",
        i64::from(snap.media_wait.is_some()),
    );
    m.counters(
        "polypush_platform_refusals",
        "Logins the platform refused, by class: operator_must_act (password, appId, signature, clock) or try_later (refused for now, rate limited, unreachable)",
        &[
            (label("class", "operator_must_act"), t.operator_refusals),
            (label("class", "try_later"), t.platform_refusals),
        ],
    );
    // The refusal being waited out now, one series (absent when there is none); `reason` is
    // one of a small fixed set (broadcast::REFUSAL_REASONS).
    let refusal: Vec<(Labels, i64)> = b
        .and_then(|b| b.refusal.as_ref())
        .map(|r| {
            vec![(
                vec![
                    ("class", r.class.as_str().to_string()),
                    ("reason", r.reason.to_string()),
                ],
                1,
            )]
        })
        .unwrap_or_default();
    m.int_gauges(
        "polypush_platform_refusal",
        "1 for the platform's refusal being waited out now, by class and reason (password, app_id, signature, clock, already_logged_in, channel_live, login_forbidden, rate_limited, refused, server_error, unreachable, unreadable, bad_address)",
        &refusal,
    );
    m.counter(
        "polypush_broadcasts",
        "Broadcasts started since the daemon started",
        snap.broadcasts,
    );
    m.counters(
        "polypush_config_reloads",
        "Configuration reloads (SIGHUP), by result",
        &[
            (label("result", "ok"), snap.reloads),
            (label("result", "failed"), snap.reloads_failed),
        ],
    );

    // Media health: the alarms always (0 outside a broadcast), the levels while measured.
    let media = b.and_then(|b| b.media.as_ref());
    m.int_gauges(
        "polypush_media_alarm",
        "1 while a media-health alarm is active, by alarm: silence, clipping, black, frozen, low_fps (warnings: the broadcast goes on)",
        &Alarm::ALL
            .iter()
            .map(|a| {
                (
                    label("alarm", a.as_str()),
                    i64::from(media.is_some_and(|m| m.alarm(*a).active)),
                )
            })
            .collect::<Vec<_>>(),
    );
    m.counters(
        "polypush_media_alarms_raised",
        "Media-health alarms raised since the daemon started, by alarm",
        &Alarm::ALL
            .iter()
            .map(|a| (label("alarm", a.as_str()), t.alarms_raised(*a)))
            .collect::<Vec<_>>(),
    );
    if let Some(m_) = media.filter(|m| m.enabled) {
        let per_channel = |f: fn(&crate::health::ChannelLevel) -> f64| {
            m_.channels
                .iter()
                .enumerate()
                .map(|(i, c)| (label("channel", i.to_string()), f(c)))
                .collect::<Vec<_>>()
        };
        if !m_.channels.is_empty() {
            m.gauges(
                "polypush_audio_peak_dbfs",
                "Audio meter peak by channel (instant attack, 1 s hold, 11.8 dB/s fall), dBFS, floor -90",
                &per_channel(|c| c.peak_dbfs),
            );
            m.gauges(
                "polypush_audio_rms_dbfs",
                "Audio RMS by channel over the last 100 ms block, dBFS, floor -90",
                &per_channel(|c| c.rms_dbfs),
            );
        }
        if let Some(v) = m_.luma_mean {
            m.gauge(
                "polypush_video_luma_mean",
                "Mean luma of the last 1 s picture sample, 0..255 full range",
                v,
            );
        }
        if let Some(v) = m_.frame_change {
            m.gauge(
                "polypush_video_frame_change",
                "Mean absolute luma difference between the last two 1 s picture samples, 8-bit levels",
                v,
            );
        }
        if let Some(v) = m_.capture_fps {
            m.gauge(
                "polypush_video_capture_fps",
                "Video frames captured per second, measured over the last second",
                v,
            );
        }
    }

    if let Some(b) = b {
        m.gauge(
            "polypush_encoder_fps",
            "Video frames encoded per second over the last second",
            b.encoder_fps,
        );
        m.gauge(
            "polypush_video_target_bitrate_bytes_per_second",
            "The video bitrate asked of the encoder now (bitrate adaptation), in bytes per second",
            kbps_to_bytes_per_second(f64::from(b.target_kbps)),
        );
        m.gauge(
            "polypush_video_configured_bitrate_bytes_per_second",
            "The configured video bitrate, in bytes per second",
            kbps_to_bytes_per_second(f64::from(b.configured_kbps)),
        );
        m.gauge(
            "polypush_delivered_bitrate_bytes_per_second",
            "Bytes per second the ingest acknowledged over the last second",
            kbps_to_bytes_per_second(b.delivered_kbps),
        );
        let delay_ms = b
            .adapt
            .as_ref()
            .map_or(b.ring.queued_delay_ms, |a| a.queue_delay_ms);
        m.gauge(
            "polypush_queue_delay_seconds",
            "How far the sender lags behind the encoders: media waiting in the send queue and the socket",
            delay_ms as f64 / 1000.0,
        );
        audio_sync(&mut m, &b.pipeline.audio_sync);
    }
    if let Some(v) = snap.viewers {
        m.int_gauge(
            "polypush_viewers",
            "Viewers online in the channel's chat room (Polyv listUsers, polled at most every 10 s while live)",
            i64::try_from(v).unwrap_or(i64::MAX),
        );
    }
    m.int_gauge(
        "polypush_schedule_in_window",
        "1 inside a schedule window or with no schedule (a broadcast should run), else 0",
        i64::from(snap.should_stream()),
    );
    if let Some(start) = snap.schedule.next_start {
        m.int_gauge(
            "polypush_schedule_next_start_timestamp_seconds",
            "Start of the next schedule window, Unix time",
            unix_seconds(start),
        );
    }
    if let Some(end) = snap.schedule.window_end.or(snap.schedule.next_end) {
        m.int_gauge(
            "polypush_schedule_next_end_timestamp_seconds",
            "End of the current schedule window, or of the next one outside a window, Unix time",
            unix_seconds(end),
        );
    }
    if let Some(l) = &snap.lessons.last {
        m.gauge(
            "polypush_last_lesson_on_air_ratio",
            "Share of the last lesson that ended (its schedule window, or a manual broadcast's length) that was on air, 0..1",
            l.on_air_ratio,
        );
    }
    let (ffmpeg, libavcodec) = ffmpeg_versions();
    m.int_gauges(
        "polypush_build_info",
        "The polypush version and the FFmpeg it runs with; always 1",
        &[(
            vec![
                ("version", env!("CARGO_PKG_VERSION").to_string()),
                ("ffmpeg", ffmpeg),
                ("libavcodec", libavcodec),
            ],
            1,
        )],
    );
    m.reg
}

/// The audio timeline against the capture clock (see `encode::drift`), during a broadcast with
/// audio: the drift once measured, the offset once audio flows, and the gross corrections.
fn audio_sync(m: &mut Builder, s: &crate::encode::AudioSyncStats) {
    if let Some(ppm) = s.drift_ppm() {
        m.gauge(
            "polypush_audio_clock_drift_ppm",
            "The microphone's sample clock against the pipeline clock, ppm (positive: it runs fast); resampling follows it",
            ppm,
        );
    }
    if let Some(offset) = s.av_offset_s() {
        m.gauge(
            "polypush_av_offset_seconds",
            "How late audio is stamped against its capture time, low-passed over 1 s (positive: audio behind video)",
            offset,
        );
    }
    m.int_gauges(
        "polypush_audio_timeline_corrections",
        "Gross corrections of the audio timeline in this broadcast (a device reopened, samples lost): silence inserted, captured frames skipped",
        &[
            (
                label("kind", "silence_inserted"),
                i64::try_from(s.silence_inserted).unwrap_or(i64::MAX),
            ),
            (
                label("kind", "frame_skipped"),
                i64::try_from(s.frames_skipped).unwrap_or(i64::MAX),
            ),
        ],
    );
}

/// The registry in OpenMetrics text.
pub fn openmetrics(snap: &Snapshot) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &registry(snap));
    out
}

/// The registry in the classic text format 0.0.4.
pub fn text(snap: &Snapshot) -> String {
    openmetrics_to_text(&openmetrics(snap))
}

/// Rewrites `prometheus-client`'s OpenMetrics into the text format 0.0.4: a counter family's
/// `# HELP`/`# TYPE` name gets the `_total` its samples carry, `# UNIT` and `# EOF` go. (The
/// samples are the same in both formats.)
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len() + counters.len() * 16);
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push_str(prefix);
                out.push_str(name);
                if counters.contains(name) && !name.ends_with("_total") {
                    out.push_str("_total");
                }
                if !tail.is_empty() {
                    out.push(' ');
                    out.push_str(tail);
                }
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|part| {
        let mut fields = part.split(';').map(str::trim);
        let ty = fields.next().unwrap_or("");
        let q_zero = fields.any(|f| {
            f.strip_prefix("q=")
                .and_then(|q| q.parse::<f64>().ok())
                .is_some_and(|q| q <= 0.0)
        });
        ty.eq_ignore_ascii_case("application/openmetrics-text") && !q_zero
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::hub::{BroadcastSnapshot, DaemonState, ScheduleStatus};
    use std::time::Duration;

    #[test]
    fn every_state_has_a_series() {
        for s in [
            DaemonState::Starting,
            DaemonState::Idle,
            DaemonState::Live,
            DaemonState::Stopping,
            DaemonState::Failed { reason: "x".into() },
        ] {
            assert!(STATES.contains(&s.as_str()), "{s:?}");
        }
    }

    #[test]
    fn counter_metadata_gets_total_and_eof_goes() {
        let om = "# HELP a_b Things.\n# TYPE a_b counter\n# UNIT a_b bytes\na_b_total{x=\"1\"} 3\n# HELP g G.\n# TYPE g gauge\ng 1.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_text(om),
            "# HELP a_b_total Things.\n# TYPE a_b_total counter\na_b_total{x=\"1\"} 3\n# HELP g G.\n# TYPE g gauge\ng 1.5\n"
        );
    }

    #[test]
    fn accept_negotiation() {
        assert!(wants_openmetrics(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        ));
        assert!(!wants_openmetrics("text/plain"));
        assert!(!wants_openmetrics("*/*"));
        assert!(!wants_openmetrics("application/openmetrics-text;q=0"));
    }

    #[test]
    fn idle_exports_counters_and_state_but_no_broadcast_gauges() {
        let snap = Snapshot {
            state: DaemonState::Idle,
            schedule: ScheduleStatus {
                configured: true,
                in_window: false,
                next_start: Some(UNIX_EPOCH + Duration::from_secs(1_800_000_000)),
                next_end: Some(UNIX_EPOCH + Duration::from_secs(1_800_003_600)),
                ..ScheduleStatus::default()
            },
            ..Snapshot::default()
        };
        let t = text(&snap);
        for line in [
            "polypush_state{state=\"idle\"} 1",
            "polypush_state{state=\"live\"} 0",
            "polypush_connected 0",
            "polypush_reconnects_total 0",
            "polypush_frames_dropped_total{reason=\"encoder_behind\"} 0",
            "polypush_frames_dropped_total{reason=\"gop_tail\"} 0",
            "polypush_schedule_in_window 0",
            "polypush_schedule_next_start_timestamp_seconds 1800000000",
            "polypush_schedule_next_end_timestamp_seconds 1800003600",
            "# TYPE polypush_sent_bytes_total counter",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(!t.contains("polypush_encoder_fps"), "{t}");
        assert!(!t.contains("polypush_viewers"), "{t}");
        assert!(t.contains("polypush_build_info{version=\"0.1.0\""), "{t}");
        assert!(openmetrics(&snap).ends_with("# EOF\n"));
    }

    #[test]
    fn live_broadcast_numbers_in_base_units() {
        let hub = crate::status::StatusHub::new();
        hub.set_state(DaemonState::Live);
        hub.broadcast_started(crate::rtmp::SenderControl::new());
        let mut b = BroadcastSnapshot {
            sender_state: SenderPhase::Publishing,
            target_kbps: 2000,
            configured_kbps: 2500,
            delivered_kbps: 1600.0,
            encoder_fps: 25.0,
            ..BroadcastSnapshot::default()
        };
        b.ring.queued_delay_ms = 250;
        b.sender.bytes_sent = 12345;
        b.pipeline.video.frames_dropped = 2;
        b.pipeline.audio.frames_dropped = 1;
        b.pipeline.audio_sync = crate::encode::AudioSyncStats {
            drift_milli_ppm: Some(-298_500),
            av_offset_us: Some(1_500),
            silence_inserted: 1,
            frames_skipped: 0,
        };
        hub.update_broadcast(b);
        hub.set_viewers(Some(7));
        let t = text(&hub.snapshot());
        for line in [
            "polypush_state{state=\"live\"} 1",
            "polypush_connected 1",
            "polypush_sent_bytes_total 12345",
            "polypush_broadcasts_total 1",
            "polypush_frames_dropped_total{reason=\"encoder_behind\"} 3",
            "polypush_video_target_bitrate_bytes_per_second 250000.0",
            "polypush_video_configured_bitrate_bytes_per_second 312500.0",
            "polypush_delivered_bitrate_bytes_per_second 200000.0",
            "polypush_queue_delay_seconds 0.25",
            "polypush_encoder_fps 25.0",
            "polypush_viewers 7",
            "polypush_schedule_in_window 1",
            "polypush_audio_clock_drift_ppm -298.5",
            "polypush_av_offset_seconds 0.0015",
            "polypush_audio_timeline_corrections{kind=\"silence_inserted\"} 1",
            "polypush_audio_timeline_corrections{kind=\"frame_skipped\"} 0",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        let v = crate::status::json::status_json(&hub.snapshot(), tokio::time::Instant::now());
        let sync = &v["broadcast"]["audio_sync"];
        assert_eq!(sync["drift_ppm"], -298.5);
        assert_eq!(sync["av_offset_ms"], 1.5);
        assert_eq!(sync["silence_inserted"], 1);
    }

    #[test]
    fn media_alarms_always_there_levels_while_measured() {
        let t = text(&Snapshot::default());
        for a in Alarm::ALL {
            let line = format!("polypush_media_alarm{{alarm=\"{}\"}} 0", a.as_str());
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        assert!(t.contains("polypush_media_alarms_raised_total{alarm=\"low_fps\"} 0"));
        assert!(!t.contains("polypush_audio_peak_dbfs"), "{t}");

        let hub = crate::status::StatusHub::new();
        hub.set_state(DaemonState::Live);
        hub.broadcast_started(crate::rtmp::SenderControl::new());
        let mut core = crate::health::HealthCore::new(
            crate::health::HealthSettings {
                silence_s: 1,
                ..Default::default()
            },
            true,
            true,
            25,
        );
        let quiet = crate::health::AudioBlock {
            count: 2,
            ..Default::default()
        };
        for i in 1..=12 {
            core.on_audio_block(f64::from(i) * 0.1, &quiet);
        }
        core.on_picture(0.0, &[100; 14_400]);
        core.on_picture(1.0, &[104; 14_400]);
        hub.update_broadcast(BroadcastSnapshot {
            media: Some(core.report(1.2)),
            ..BroadcastSnapshot::default()
        });
        let t = text(&hub.snapshot());
        for line in [
            "polypush_media_alarm{alarm=\"silence\"} 1",
            "polypush_media_alarm{alarm=\"frozen\"} 0",
            "polypush_media_alarms_raised_total{alarm=\"silence\"} 1",
            "polypush_audio_peak_dbfs{channel=\"1\"} -90.0",
            "polypush_audio_rms_dbfs{channel=\"0\"} -90.0",
            "polypush_video_luma_mean 104.0",
            "polypush_video_frame_change 4.0",
        ] {
            assert!(t.lines().any(|l| l == line), "missing {line:?} in\n{t}");
        }
        let v = crate::status::json::status_json(&hub.snapshot(), tokio::time::Instant::now());
        assert_eq!(v["media"]["active"], serde_json::json!(["silence"]));
        assert_eq!(v["media"]["alarms"]["silence"]["raised"], 1);
        assert_eq!(
            v["media"]["alarms"]["black"]["for_s"],
            serde_json::Value::Null
        );
        assert_eq!(v["media"]["audio"]["channels"][0]["rms_dbfs"], -90.0);
        assert_eq!(v["media"]["video"]["frame_change"], 4.0);
        assert_eq!(v["media"]["video"]["configured_fps"], 25);
        let m = crate::status::json::meter_json(hub.snapshot().broadcast.unwrap().media.as_ref());
        assert_eq!(m["alarms"], serde_json::json!(["silence"]));
        assert_eq!(m["channels"].as_array().unwrap().len(), 2);
    }
}
