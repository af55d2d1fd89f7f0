//! `[target]` and `[record]`: where to push, and the safety recording. (`[video]` and
//! `[audio]` are the encode layer's own tables, [`crate::encode::settings`].)

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[target]`: the RTMP destination and the send queue.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TargetConfig {
    /// Push here instead of asking Polyv (teacher_login) for the address:
    /// `rtmp://host[:port]/app[/instance]/stream[?query]`, or `rtmps://` for RTMP over TLS
    /// (port 443 unless given; the certificate must chain to a CA in the system store or in
    /// the PEM file `SSL_CERT_FILE` names). With an address no `[polyv]` is needed; empty: log
    /// in to Polyv.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// TCP connect timeout, TLS handshake included for `rtmps://`, seconds (1..=60).
    pub connect_timeout_s: u64,
    /// RTMP handshake + connect + publish timeout, seconds (1..=120).
    pub handshake_timeout_s: u64,
    /// Bytes the send queue may hold before video is dropped (64 KiB..=256 MiB).
    pub max_queue_bytes: usize,
    /// Longest wait between reconnect attempts, seconds (1..=600). Attempts never stop.
    pub reconnect_max_delay_s: u64,
    /// A connection that accepts no bytes for this long while media is queued is dropped and
    /// reconnected, seconds (2..=10).
    pub stall_timeout_s: u64,
    /// When Polyv rejects the channel credentials, log in again this often, seconds (30..=3600).
    pub credentials_retry_s: u64,
    /// TCP congestion control for the push connection, e.g. `"bbr"`; `""` (the default) keeps
    /// the system's. Best effort: if the kernel refuses it, the system's is used (logged
    /// once).
    pub congestion: String,
    /// Added to every timestamp sent, milliseconds (0..=4294967295). 0 for a normal broadcast;
    /// for testing the extended-timestamp range (start near 16777215) and the 2^32 wrap.
    pub timestamp_offset_ms: u64,
}

impl Default for TargetConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            connect_timeout_s: 5,
            handshake_timeout_s: 10,
            max_queue_bytes: 8 << 20,
            reconnect_max_delay_s: 30,
            stall_timeout_s: 10,
            credentials_retry_s: 300,
            congestion: String::new(),
            timestamp_offset_ms: 0,
        }
    }
}

impl super::Config {
    pub(super) fn validate_media(&self, src: &super::Source<'_>) -> Result<(), super::ConfigError> {
        let t = &self.target;
        if !t.url.is_empty() {
            crate::rtmp::RtmpUrl::parse(&t.url)
                .map_err(|e| src.invalid("target.url", e.to_string()))?;
        }
        range(src, "target.connect_timeout_s", t.connect_timeout_s, 1, 60)?;
        range(
            src,
            "target.handshake_timeout_s",
            t.handshake_timeout_s,
            1,
            120,
        )?;
        range(
            src,
            "target.max_queue_bytes",
            t.max_queue_bytes as u64,
            64 << 10,
            256 << 20,
        )?;

        range(
            src,
            "target.reconnect_max_delay_s",
            t.reconnect_max_delay_s,
            1,
            600,
        )?;
        range(src, "target.stall_timeout_s", t.stall_timeout_s, 2, 10)?;
        range(
            src,
            "target.credentials_retry_s",
            t.credentials_retry_s,
            30,
            3600,
        )?;
        if !t
            .congestion
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            || t.congestion.len() > 15
        {
            return Err(src.invalid(
                "target.congestion",
                format!(
                    "{:?} is not a congestion control name: use one the kernel lists in \
                     /proc/sys/net/ipv4/tcp_available_congestion_control (such as \"bbr\" or \
                     \"cubic\"), or \"\" for the system's default",
                    t.congestion
                ),
            ));
        }
        range(
            src,
            "target.timestamp_offset_ms",
            t.timestamp_offset_ms,
            0,
            u64::from(u32::MAX),
        )?;
        let r = &self.record;
        if r.enabled {
            if !r.dir.is_absolute() {
                return Err(src.invalid(
                    "record.dir",
                    format!("{} is not an absolute path: use a directory such as /var/lib/polypush/recordings", r.dir.display()),
                ));
            }
            range(src, "record.segment_s", r.segment_s, 10, 24 * 3600)?;
            range(src, "record.max_total_mb", r.max_total_mb, 64, 16 << 20)?;
            range(src, "record.min_free_mb", r.min_free_mb, 0, 1 << 20)?;
        }

        self.video
            .validate()
            .and_then(|()| self.audio.validate(&self.video))
            .map_err(|e| src.invalid(&e.key, e.message))?;
        Ok(())
    }
}

fn range(
    src: &super::Source<'_>,
    key: &str,
    v: u64,
    lo: u64,
    hi: u64,
) -> Result<(), super::ConfigError> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(src.invalid(key, format!("{v} is out of range: use {lo} to {hi}")))
    }
}

/// `[record]`: the safety recording, written from the same encoded packets as the broadcast,
/// also while the uplink is down.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RecordConfig {
    /// Keep a local recording of everything encoded.
    pub enabled: bool,
    /// Where segments go (absolute; systemd's StateDirectory is /var/lib/polypush).
    pub dir: PathBuf,
    /// Segment length, seconds (10..=86400); segments are cut at keyframes.
    pub segment_s: u64,
    /// Disk quota for all segments, MiB (64..); the oldest segments are deleted first.
    pub max_total_mb: u64,
    /// Keep at least this much free on the filesystem, MiB; the oldest segments go first.
    pub min_free_mb: u64,
}

impl Default for RecordConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            dir: PathBuf::from("/var/lib/polypush/recordings"),
            segment_s: 600,
            max_total_mb: 4096,
            min_free_mb: 512,
        }
    }
}
