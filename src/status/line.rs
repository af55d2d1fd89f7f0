//! The ffmpeg-like live line on a terminal (`polypush run` on a TTY): elapsed, frame rate,
//! bitrate, queue delay, drops and the sender's state, rewritten in place every tick from the
//! same [`BroadcastSnapshot`] the hub gets.

use std::io::Write;

use tokio::time::Instant;

use super::hub::BroadcastSnapshot;
use super::rate::RateMeter;

/// Writes the line to stderr when enabled (a TTY and not `--json`).
#[derive(Debug)]
pub struct StatusLine {
    enabled: bool,
    rate: RateMeter,
}

impl StatusLine {
    pub fn new(enabled: bool) -> Self {
        Self {
            enabled,
            rate: RateMeter::default(),
        }
    }

    /// The line for `b` at `now`.
    pub fn render(&mut self, b: &BroadcastSnapshot, now: Instant) -> String {
        let mut state = b.sender_state.as_str().to_string();
        if b.pipeline.video.state.is_reconnecting() {
            state.push_str(", camera reconnecting");
        }
        if b.pipeline.audio.state.is_reconnecting() {
            state.push_str(", microphone reconnecting");
        }
        if let Some(alarms) = b.alarm_text() {
            state.push_str(", ");
            state.push_str(&alarms);
        }
        let (kbps, fps) =
            self.rate
                .update(now, b.sender.bytes_sent, b.pipeline.video.frames_encoded);
        let e = b
            .started
            .map_or(0, |s| now.saturating_duration_since(s).as_secs());
        format!(
            "\r{:02}:{:02}:{:02}  {fps:5.1} fps  {kbps:7.0} kbit/s  queue {:4} ms  dropped {}  {state}   ",
            e / 3600,
            e / 60 % 60,
            e % 60,
            b.ring.queued_delay_ms,
            b.ring.dropped.total().packets
        )
    }

    pub fn update(&mut self, b: &BroadcastSnapshot, now: Instant) {
        if !self.enabled {
            return;
        }
        let line = self.render(b, now);
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(line.as_bytes());
        let _ = err.flush();
    }

    /// Ends the line, if one was written.
    pub fn finish(&mut self) {
        if self.enabled && self.rate.started() {
            eprintln!();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rtmp::SenderPhase;
    use std::time::Duration;

    #[test]
    fn the_line_shows_elapsed_rates_queue_and_state() {
        let t0 = Instant::now();
        let mut line = StatusLine::new(false);
        let mut b = BroadcastSnapshot {
            started: Some(t0),
            sender_state: SenderPhase::Publishing,
            ..BroadcastSnapshot::default()
        };
        line.render(&b, t0);
        b.sender.bytes_sent = 312_500;
        b.pipeline.video.frames_encoded = 25;
        b.ring.queued_delay_ms = 120;
        let s = line.render(&b, t0 + Duration::from_secs(3661));
        assert!(s.starts_with("\r01:01:01"), "{s:?}");
        assert!(
            s.contains("queue  120 ms") && s.contains("publishing"),
            "{s:?}"
        );
        let mut media = crate::health::MediaReport::disabled(true, true, 25);
        media.alarms[0].active = true; // silence
        media.alarms[3].active = true; // frozen
        b.media = Some(media);
        let s = line.render(&b, t0 + Duration::from_secs(3662));
        assert!(s.contains("publishing, ALARM silence,frozen"), "{s:?}");
    }
}
