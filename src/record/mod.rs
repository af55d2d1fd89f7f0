//! The safety recording: a lesson is never lost to a network outage.
//!
//! This module owns the optional local copy of the broadcast: segmented FLV files in one
//! directory under the state directory, written from the *same* encoded packets as the
//! broadcast. The encode threads hand every packet to [`Recorder::push`] right before the
//! ring, so ring drops and uplink outages do not touch the recording; the body `Bytes` are
//! shared, not copied.
//!
//! # Threads and queues
//! `push` never blocks an encode thread on the disk: it queues a cheap clone into a bounded
//! queue (bytes and packets, [`RecordConfig::queue_bytes`], [`RecordConfig::queue_packets`];
//! tens of seconds of media by default) drained by one writer thread, `polypush-record`. When
//! the disk is so slow that the queue fills, packets are dropped (video GOP-aware), counted in
//! [`RecordStats::packets_dropped`] and logged at most once a second.
//!
//! # Files
//! Segments are named `polypush-YYYYmmddTHHMMSSZ-NNNN.flv`: the UTC time at segment open and
//! a sequence number that continues from the highest in the directory, so names sort and never
//! collide. A segment is written as `NAME.flv.part` and renamed to `NAME.flv` when complete,
//! so an uploader that picks `*.flv` never takes a half-written file. Each segment starts with
//! the FLV header and the current onMetaData, AVC and AAC sequence headers, then media from a
//! video keyframe, with timestamps rebased so the file starts at 0. A segment is cut at the
//! first keyframe after [`RecordConfig::segment_s`], or at the next keyframe after a header
//! changes (encoder reopened). Audio is interleaved by DTS, so each segment holds exactly the
//! audio between its first keyframe and the next segment's. Before the first keyframe nothing
//! is recorded (there is no picture to start a file with). See `segmenter` for every rule.
//!
//! # Quota
//! At start, before each segment opens and when the recorder stops, the oldest complete segments
//! (`polypush-*.flv`, by sequence number) are deleted while their total size exceeds
//! [`RecordConfig::max_total_bytes`] or the file system has less than
//! [`RecordConfig::min_free_bytes`] free (`statvfs`). Each deletion is logged at INFO. The open
//! segment is never deleted; if it alone outgrows the limits, it is cut early (checked at every
//! sync). If even deleting everything leaves less than `min_free_bytes`, no segment is opened:
//! the reserve belongs to the system, and the recorder retries every few seconds.
//!
//! # Durability, crashes and a full disk
//! Segments are fdatasync'ed every [`RecordConfig::sync_interval_s`] of media and on close, so
//! a power cut loses seconds. After a crash the `.part` stays and is playable up to its last
//! complete tag (FLV is append-only); at the next start every `.part` is cut back to its last
//! complete tag (a torn or zero-filled tail is detected by walking the tag headers) and renamed
//! to `.flv`. A write error (disk full, I/O error) is logged at ERROR once, the segment is
//! completed the same way, packets are counted as lost, and a new segment is tried at a
//! keyframe a few seconds later. The broadcast never stops because of the recorder.
//!
//! # Layout
//! - `name`: segment names and the UTC date arithmetic.
//! - `segmenter`: pure: packets in, open/tag/sync/close steps out (interleaving, cuts, rebasing).
//! - `queue`: the bounded hand-off from the encode threads.
//! - `writer`: the writer thread: executes steps, quota, error policy.
//! - `disk`: directory preparation, `statvfs`, listing, quota planning, `.part` recovery.

mod disk;
mod name;

/// Free space for a recording directory, and civil dates: also used by `selftest` and the
/// status JSON.
pub(crate) use disk::free_bytes;
pub(crate) use name::civil_from_days;
mod queue;
mod segmenter;
mod writer;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

use crate::media::MediaPacket;

use queue::Queue;
use segmenter::Discards;

/// Where and how to record. Built by the broadcast from `[record]` in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordConfig {
    /// The recording directory, created (mode 0750) if missing. Put it under the service's
    /// `StateDirectory=` (`/var/lib/polypush`) so systemd gives the daemon write access.
    pub dir: PathBuf,
    /// Segment length, seconds of media; segments are cut at the first keyframe after it.
    pub segment_s: u64,
    /// Most bytes all complete segments may use together; the oldest go first.
    pub max_total_bytes: u64,
    /// Free space to leave on the file system; the oldest segments go first to keep it.
    pub min_free_bytes: u64,
    /// Most body bytes queued for the writer before packets are dropped: tens of seconds of
    /// media, so a slow SD card or a long fsync stalls nothing.
    pub queue_bytes: usize,
    /// Most packets queued for the writer (video plus ~47 AAC frames a second).
    pub queue_packets: usize,
    /// fdatasync the open segment after this much media, seconds: what a power cut may lose.
    pub sync_interval_s: u64,
}

impl Default for RecordConfig {
    /// 10-minute segments, 4 GiB quota, 512 MiB kept free; a 64 MiB / 8192-packet queue
    /// (over a minute at 4 Mbit/s and 25 fps); fdatasync every 10 s.
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/polypush/recordings"),
            segment_s: 600,
            max_total_bytes: 4 << 30,
            min_free_bytes: 512 << 20,
            queue_bytes: 64 << 20,
            queue_packets: 8192,
            sync_interval_s: 10,
        }
    }
}

/// Why the recorder could not start (or stop cleanly). Errors while recording are not
/// returned: they are logged, counted in [`RecordStats::errors`] and retried, because the
/// broadcast must go on.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(
        "cannot create the recording directory {}: {source}; check that the systemd unit's \
         StateDirectory= covers it (StateDirectory=polypush gives /var/lib/polypush) or set \
         record.dir to a writable directory", dir.display()
    )]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the recording directory {d} is not writable: {source}; check that the systemd unit's \
         StateDirectory= covers it and that the polypush user owns it (chown polypush {d}; \
         chmod 0750 {d}), or set record.dir", d = dir.display()
    )]
    NotWritable {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the recording directory {} exists but is not a directory: remove it or set record.dir",
        dir.display()
    )]
    NotADirectory { dir: PathBuf },
    #[error("invalid recording settings: {0}")]
    InvalidConfig(String),
    #[error("cannot start the recorder thread: {0}")]
    Spawn(std::io::Error),
    #[error(
        "the recorder thread panicked; the last segment stays as .part in {} and is recovered \
         at the next start", dir.display()
    )]
    WriterPanicked { dir: PathBuf },
}

/// The segments in `dir` and the time each covers, oldest first: `(name, opened, last
/// written, still being written)`. The start is the UTC time in the name, the end the file's modification time. A
/// `.part` (being written, or left by a crash) is named as it will be once complete. For the
/// lesson reports (which segments cover an outage); a missing directory lists nothing.
pub fn segment_spans(
    dir: &std::path::Path,
) -> std::io::Result<Vec<(String, std::time::SystemTime, std::time::SystemTime, bool)>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry?;
        let file = entry.file_name().to_string_lossy().to_string();
        let Some((seq, kind)) = name::parse_name(&file) else {
            continue;
        };
        let stamp = &file[name::PREFIX.len()..name::PREFIX.len() + 16];
        let Ok(opened) = jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", stamp)
            .and_then(|dt| dt.to_zoned(jiff::tz::TimeZone::UTC))
        else {
            continue;
        };
        let Ok(modified) = entry.metadata().and_then(|m| m.modified()) else {
            continue;
        };
        let open = kind == name::FileKind::Part;
        let complete = if open {
            format!("{}{}", file.trim_end_matches(name::PART_EXT), name::EXT)
        } else {
            file
        };
        let opened = std::time::SystemTime::from(opened.timestamp());
        out.push((seq, (complete, opened, modified, open)));
    }
    out.sort_by_key(|s| s.0);
    Ok(out.into_iter().map(|(_, s)| s).collect())
}

/// The segment being written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CurrentSegment {
    /// Its sequence number (`NNNN` in the name).
    pub seq: u32,
    /// Bytes written to it so far (some may still be in the write buffer).
    pub bytes: u64,
    /// Its media duration so far, milliseconds.
    pub duration_ms: u64,
}

/// A snapshot of the recorder's counters, monotonic since start. For `/metrics`
/// (`polypush_record_*`) and the end-of-run summary.
///
/// Every media packet pushed ends up in exactly one of `packets_written`, `packets_dropped`,
/// `packets_lost`, `packets_skipped`, or is still queued or held for interleaving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordStats {
    /// Segments completed (renamed to `.flv`), including ones cut short by an error.
    pub segments_written: u64,
    /// Old segments deleted for the quota.
    pub segments_deleted: u64,
    /// `.part` files from a crash turned into segments at start.
    pub segments_recovered: u64,
    /// Bytes written to segment files (headers included).
    pub bytes_written: u64,
    /// Audio and video packets written.
    pub packets_written: u64,
    /// Media packets dropped because the queue was full: the disk did not keep up.
    pub packets_dropped: u64,
    /// Media packets that reached the writer but not the disk because of a write error.
    pub packets_lost: u64,
    /// Media packets not recorded by design: before the first keyframe, audio older than its
    /// segment, video undecodable after a sequence header change.
    pub packets_skipped: u64,
    /// I/O errors (write, sync, open, rename, delete, list).
    pub errors: u64,
    /// Packets waiting for the writer now.
    pub queued_packets: usize,
    /// Body bytes waiting for the writer now.
    pub queued_bytes: usize,
    /// The segment being written, if any.
    pub current_segment: Option<CurrentSegment>,
}

/// A cheap, cloneable handle to one running recorder. The writer thread stops when
/// [`Recorder::stop`] is called or the last handle is dropped (then without waiting for it).
#[derive(Clone)]
pub struct Recorder {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Inner {
    /// The last handle is gone: let the writer drain, finish the segment and exit on its own.
    fn drop(&mut self) {
        self.shared.queue.close();
    }
}

/// What the handles and the writer thread share.
pub(crate) struct Shared {
    dir: PathBuf,
    queue: Queue,
    writer_stats: Mutex<WriterStats>,
    /// Test hook: the write of the media packet with this index (0-based count of media
    /// packets written) fails with ENOSPC, as on a full disk.
    #[cfg(test)]
    fail_write_at: std::sync::atomic::AtomicU64,
}

impl Shared {
    fn lock_writer_stats(&self) -> MutexGuard<'_, WriterStats> {
        self.writer_stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer thread's counters, published after every batch.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct WriterStats {
    segments_written: u64,
    segments_deleted: u64,
    segments_recovered: u64,
    bytes_written: u64,
    packets_written: u64,
    /// Lost in a batch of steps interrupted by an error (the segmenter counts the rest).
    packets_lost: u64,
    discards: Discards,
    errors: u64,
    current: Option<CurrentSegment>,
}

impl Recorder {
    /// Prepares the directory (creating it, proving it writable) and starts the writer
    /// thread, which first recovers `.part` files left by a crash and applies the quota.
    pub fn start(cfg: RecordConfig) -> Result<Recorder, RecordError> {
        if cfg.segment_s == 0 || cfg.sync_interval_s == 0 {
            return Err(RecordError::InvalidConfig(
                "segment_s and sync_interval_s must be at least 1 second".into(),
            ));
        }
        if cfg.queue_bytes == 0 || cfg.queue_packets == 0 {
            return Err(RecordError::InvalidConfig(
                "queue_bytes and queue_packets must be at least 1".into(),
            ));
        }
        disk::prepare_dir(&cfg.dir)?;
        let shared = Arc::new(Shared {
            dir: cfg.dir.clone(),
            queue: Queue::new(cfg.queue_bytes, cfg.queue_packets),
            writer_stats: Mutex::new(WriterStats::default()),
            #[cfg(test)]
            fail_write_at: std::sync::atomic::AtomicU64::new(u64::MAX),
        });
        let writer = writer::Writer::new(&cfg, shared.clone());
        let thread = std::thread::Builder::new()
            .name("polypush-record".into())
            .spawn(move || writer.run())
            .map_err(RecordError::Spawn)?;
        // The caller announces the recording at INFO; this adds the effective limits.
        tracing::debug!(
            dir = %cfg.dir.display(),
            segment_s = cfg.segment_s,
            max_total_bytes = cfg.max_total_bytes,
            min_free_bytes = cfg.min_free_bytes,
            queue_bytes = cfg.queue_bytes,
            "recorder started"
        );
        Ok(Recorder {
            inner: Arc::new(Inner {
                shared,
                thread: Mutex::new(Some(thread)),
            }),
        })
    }

    /// Hands a packet to the writer; never blocks on the disk (drops and counts when the
    /// queue is full). Call it with every packet, headers included, in the order the encode
    /// thread produces them. Ignored once the recorder is stopping.
    pub fn push(&self, pkt: &MediaPacket) {
        self.inner.shared.queue.push(pkt);
    }

    pub fn stats(&self) -> RecordStats {
        let q = self.inner.shared.queue.stats();
        let w = *self.inner.shared.lock_writer_stats();
        RecordStats {
            segments_written: w.segments_written,
            segments_deleted: w.segments_deleted,
            segments_recovered: w.segments_recovered,
            bytes_written: w.bytes_written,
            packets_written: w.packets_written,
            packets_dropped: q.dropped_packets,
            packets_lost: w.packets_lost + w.discards.lost,
            packets_skipped: w.discards.skipped,
            errors: w.errors,
            queued_packets: q.queued_packets,
            queued_bytes: q.queued_bytes,
            current_segment: w.current,
        }
    }

    /// Stops accepting packets, writes what is queued, completes the last segment (fdatasync,
    /// rename to `.flv`), applies the quota and joins the writer. With a slow disk this takes
    /// as long as writing the queue does. Any handle may stop the recorder; pushes through the
    /// others are then ignored, and stopping again just returns the stats.
    pub fn stop(self) -> Result<RecordStats, RecordError> {
        self.inner.shared.queue.close();
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            thread.join().map_err(|_| RecordError::WriterPanicked {
                dir: self.inner.shared.dir.clone(),
            })?;
        }
        Ok(self.stats())
    }

    /// Test hook: the writer takes nothing from the queue while paused, as if the disk hung.
    #[cfg(test)]
    fn pause_writer(&self, paused: bool) {
        self.inner.shared.queue.set_paused(paused);
    }
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("dir", &self.inner.shared.dir)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
