//! `polypush run --stats-file FILE`: one JSON line per second of what the broadcast is doing,
//! from the same [`BroadcastSnapshot`] the hub gets: the numbers tests, benchmarks and field
//! logs read.

use std::io::Write;
use std::path::{Path, PathBuf};

use tokio::time::Instant;

use super::hub::BroadcastSnapshot;
use super::rate::RateMeter;

/// The file could not be created.
#[derive(Debug, thiserror::Error)]
#[error("--stats-file {}: cannot create it: {source}; give a writable path", path.display())]
pub struct StatsFileError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// An open stats file.
#[derive(Debug)]
pub struct StatsFile {
    out: std::io::BufWriter<std::fs::File>,
    /// Its own meter: the file's rates are per line (1 s), the hub's per tick.
    rate: RateMeter,
}

impl StatsFile {
    pub fn create(path: &Path) -> Result<Self, StatsFileError> {
        let f = std::fs::File::create(path).map_err(|source| StatsFileError {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Self {
            out: std::io::BufWriter::new(f),
            rate: RateMeter::default(),
        })
    }

    /// The line for `b` at `now`.
    pub fn line(&mut self, b: &BroadcastSnapshot, now: Instant) -> serde_json::Value {
        let (p, r, snd) = (&b.pipeline, &b.ring, &b.sender);
        let drops: serde_json::Map<String, serde_json::Value> = r
            .dropped
            .iter()
            .map(|(reason, c)| (reason.as_str().to_string(), c.packets.into()))
            .collect();
        // The rate the ingest's TCP acknowledged since the last line.
        let delivered_kbps = self.rate.update(now, snd.bytes_delivered, 0).0;
        serde_json::json!({
            "t": b.started.map_or(0.0, |s| now.saturating_duration_since(s).as_secs_f64()),
            "state": b.sender_state.as_str(),
            "target_kbps": b.target_kbps,
            "queue_delay_ms": b.adapt.map(|a| a.queue_delay_ms),
            "send_rate_kbps": b.adapt.and_then(|a| a.send_rate_kbps),
            "adapt_state": b.adapt.map(|a| a.state.as_str()),
            "delivered_kbps": delivered_kbps,
            "ring_delay_ms": r.queued_delay_ms,
            "ring_bytes": r.queued_bytes,
            "socket_unsent_bytes": snd.socket_unsent_bytes,
            "backlog_bytes": snd.backlog_bytes,
            "dropped": drops,
            "video_frames": p.video.frames_encoded,
            "audio_frames": p.audio.frames_encoded,
            "reconnects": snd.reconnects,
        })
    }

    /// Appends the line for `b`; a write error is ignored (the broadcast matters more).
    pub fn write(&mut self, b: &BroadcastSnapshot, now: Instant) {
        let line = self.line(b, now);
        let _ = serde_json::to_writer(&mut self.out, &line);
        let _ = self.out.write_all(b"\n");
        let _ = self.out.flush();
    }
}
