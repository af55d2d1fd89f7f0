//! Status-hub fixtures shared by the status server and fleet kit tests.

use polypush::rtmp::SenderPhase;
use polypush::status::BroadcastSnapshot;
use tokio::time::Instant;

/// A running broadcast's numbers as the broadcast would report them.
pub fn broadcast(
    started: Instant,
    sender_state: SenderPhase,
    error: Option<&str>,
) -> BroadcastSnapshot {
    let mut b = BroadcastSnapshot {
        started: Some(started),
        sender_state,
        sender_error: error.map(str::to_string),
        target_kbps: 1800,
        configured_kbps: 2500,
        delivered_kbps: 1790.5,
        encoder_fps: 25.0,
        configured_fps: 25.0,
        ..BroadcastSnapshot::default()
    };
    b.sender.sessions = 2;
    b.sender.reconnects = 1;
    b.sender.bytes_sent = 5_000_000;
    b.sender.bytes_delivered = 4_900_000;
    b.pipeline.video.frames_encoded = 1500;
    b.pipeline.audio.frames_encoded = 2800;
    b.pipeline.video.frames_dropped = 3;
    b.pipeline.video.device_losses = 1;
    b.ring.queued_delay_ms = 120;
    // Media health: a tone on two channels, a moving picture, one alarm raised and active.
    let mut media = polypush::health::MediaReport::disabled(true, true, 25);
    media.enabled = true;
    media.channels = vec![
        polypush::health::ChannelLevel {
            peak_dbfs: -18.1,
            rms_dbfs: -21.0,
        };
        2
    ];
    media.luma_mean = Some(120.5);
    media.frame_change = Some(4.2);
    media.capture_fps = Some(25.0);
    media.alarms[1].active = true; // clipping
    media.alarms[1].for_s = Some(3.0);
    media.alarms[1].raised = 1;
    b.media = Some(media);
    b
}

/// A lesson log whose last lesson was on air for 80 % of its window (a 60 s outage in a
/// 300 s window).
#[allow(dead_code)]
pub fn lessons() -> polypush::lessons::LessonsStatus {
    use polypush::lessons::{Observation, Planned, Recorder};
    use std::time::{Duration, SystemTime};
    let start = SystemTime::now() - Duration::from_secs(3600);
    let planned = Some(Planned {
        title: Some("Physics".into()),
        start,
        end: start + Duration::from_secs(300),
    });
    let o = |publishing: bool| Observation {
        active: true,
        planned: planned.clone(),
        publishing,
        ..Observation::default()
    };
    let mut r = Recorder::new();
    r.observe(start, &o(true));
    r.observe(start + Duration::from_secs(100), &o(false));
    r.observe(start + Duration::from_secs(160), &o(true));
    let last = r.close(start + Duration::from_secs(300));
    polypush::lessons::LessonsStatus {
        count: 3,
        last,
        current: None,
    }
}
