//! The writer thread (`polypush-record`): takes packets from the queue, runs them through the
//! [`Segmenter`] and executes its steps on disk. It owns the open segment, the quota and the
//! error policy; nothing here can reach the encode threads except through the stats.
//!
//! # Errors
//! A failed write, sync, open or rename abandons the open segment: its `.part` is cut back to
//! the last complete tag and renamed to `.flv` ([`disk::finish_part`]), the segmenter waits
//! for a keyframe a few seconds later ([`super::segmenter::RETRY_AFTER_MS`]) and a new segment
//! is tried then. The first failure of a run of failures is logged at ERROR with what to do;
//! the rest are only counted (`errors`, `packets_lost`) until a segment opens again, which is
//! logged at INFO. A disk that stays full is therefore retried every few seconds, each retry
//! deleting old segments first per the quota.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::disk::{self, Finished, Quota};
use super::name::{segment_name, FileKind, PART_EXT};
use super::segmenter::{Segmenter, SegmenterConfig, Step};
use super::{CurrentSegment, RecordConfig, Shared, WriterStats};
use crate::flv::{FlvError, FlvFileWriter};
use crate::media::MediaPacket;

/// Write buffer per segment: ~0.5 s of 4 Mbit/s, so a write syscall moves a useful amount.
const WRITE_BUFFER: usize = 256 << 10;

/// What went wrong on disk, for the one ERROR line.
struct Failure {
    /// What the writer was doing, e.g. "writing".
    what: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl Failure {
    fn new(what: &'static str, path: &Path, source: io::Error) -> Self {
        Self {
            what,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The open segment and everything that is valid only while it is open.
struct OpenSegment {
    seq: u32,
    part: PathBuf,
    path: PathBuf,
    out: FlvFileWriter<BufWriter<File>>,
    bytes: u64,
    duration_ms: u32,
}

pub(crate) struct Writer {
    dir: PathBuf,
    quota: Quota,
    segmenter: Segmenter,
    steps: Vec<Step>,
    open: Option<OpenSegment>,
    next_seq: u32,
    /// A failure was logged at ERROR and no segment has opened since.
    failing: bool,
    /// `statvfs` failed and that was logged (free space is then taken as unlimited).
    statvfs_warned: bool,
    stats: WriterStats,
    shared: Arc<Shared>,
}

impl Writer {
    pub(super) fn new(cfg: &RecordConfig, shared: Arc<Shared>) -> Self {
        Self {
            dir: cfg.dir.clone(),
            quota: Quota {
                max_total_bytes: cfg.max_total_bytes,
                min_free_bytes: cfg.min_free_bytes,
            },
            segmenter: Segmenter::new(SegmenterConfig {
                segment_ms: cfg.segment_s.saturating_mul(1000),
                sync_ms: cfg.sync_interval_s.saturating_mul(1000),
            }),
            steps: Vec::with_capacity(16),
            open: None,
            next_seq: 0,
            failing: false,
            statvfs_warned: false,
            stats: WriterStats::default(),
            shared,
        }
    }

    /// The thread body: recover, then write until the queue is closed and drained.
    pub(super) fn run(mut self) {
        self.recover();
        self.enforce_quota();
        self.publish();
        let mut batch = VecDeque::with_capacity(1024);
        while self.shared.queue.take_all(&mut batch) {
            for pkt in batch.drain(..) {
                self.handle(pkt);
            }
            self.publish();
        }
        let mut steps = std::mem::take(&mut self.steps);
        self.segmenter.finish(&mut steps);
        self.execute(&mut steps);
        self.enforce_quota();
        self.publish();
    }

    fn handle(&mut self, pkt: MediaPacket) {
        let mut steps = std::mem::take(&mut self.steps);
        self.segmenter.push(pkt, &mut steps);
        self.execute(&mut steps);
        self.steps = steps;
    }

    /// Runs `steps` in order. After a failure the rest are not executed (their media counts
    /// as lost) and the segmenter is told to wait for the retry keyframe.
    fn execute(&mut self, steps: &mut Vec<Step>) {
        let mut failed = false;
        for step in steps.drain(..) {
            let media = matches!(step, Step::Tag { media: true, .. });
            if failed {
                self.stats.packets_lost += u64::from(media);
                continue;
            }
            if let Err(failure) = self.step(step) {
                self.stats.packets_lost += u64::from(media);
                self.fail(failure);
                failed = true;
            }
        }
        self.stats.discards = self.segmenter.discards();
    }

    fn step(&mut self, step: Step) -> Result<(), Failure> {
        match step {
            Step::Open {
                has_audio,
                has_video,
            } => self.open_segment(has_audio, has_video),
            Step::Tag {
                tag_type,
                ts_ms,
                body,
                media,
            } => {
                let Some(seg) = self.open.as_mut() else {
                    return Ok(()); // the segmenter never tags without an Open
                };
                #[cfg(test)]
                if media
                    && self
                        .shared
                        .fail_write_at
                        .compare_exchange(
                            self.stats.packets_written,
                            u64::MAX,
                            std::sync::atomic::Ordering::Relaxed,
                            std::sync::atomic::Ordering::Relaxed,
                        )
                        .is_ok()
                {
                    let e = io::Error::from_raw_os_error(libc::ENOSPC);
                    return Err(Failure::new("writing", &seg.part, e));
                }
                match seg.out.tag(tag_type, ts_ms, &body) {
                    Ok(()) => {}
                    Err(FlvError::Io(e)) => return Err(Failure::new("writing", &seg.part, e)),
                    Err(e) => {
                        // Checked before anything is written (a tag over 16 MiB, which no
                        // encoder setting here produces): skip the tag, keep the segment.
                        tracing::warn!(error = %e, "tag not recorded");
                        self.stats.packets_lost += u64::from(media);
                        return Ok(());
                    }
                }
                let n = 11 + body.len() as u64 + 4;
                seg.bytes += n;
                seg.duration_ms = seg.duration_ms.max(ts_ms);
                self.stats.bytes_written += n;
                self.stats.packets_written += u64::from(media);
                Ok(())
            }
            Step::Sync => {
                let Some(seg) = self.open.as_mut() else {
                    return Ok(());
                };
                sync(seg).map_err(|e| Failure::new("syncing", &seg.part, e))?;
                let current = seg.bytes;
                // Room check between segment boundaries, so one long segment cannot eat the
                // free-space reserve: the segmenter then cuts at the next keyframe and the
                // quota runs at the open.
                let total = disk::list(&self.dir, FileKind::Segment)
                    .map(|v| v.iter().map(|f| f.size).sum::<u64>())
                    .unwrap_or(0);
                let free = self.free();
                if self.quota.exceeded(total + current, free) {
                    self.segmenter.request_cut();
                }
                Ok(())
            }
            Step::Close => self.close_segment(),
        }
    }

    fn open_segment(&mut self, has_audio: bool, has_video: bool) -> Result<(), Failure> {
        if self.open.is_some() {
            self.close_segment()?; // not expected: the segmenter closes first
        }
        self.enforce_quota();
        let free = self.free();
        if free < self.quota.min_free_bytes {
            let e = io::Error::other(format!(
                "only {} MiB free, below record.min_free_mb ({} MiB), with no older segment \
                 left to delete",
                free >> 20,
                self.quota.min_free_bytes >> 20
            ));
            return Err(Failure::new("keeping the free-space reserve", &self.dir, e));
        }
        let unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let seq = self.next_seq;
        let path = self.dir.join(segment_name(unix, seq));
        let part = part_path(&path);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o640)
            .open(&part)
            .map_err(|e| Failure::new("creating a segment", &part, e))?;
        self.next_seq = seq.saturating_add(1);
        let mut out = FlvFileWriter::new(BufWriter::with_capacity(WRITE_BUFFER, file));
        if let Err(e) = out.header(has_audio, has_video) {
            // Nothing useful in it: remove rather than finish.
            drop(out);
            let _ = fs::remove_file(&part);
            return Err(Failure::new("writing", &part, flv_io(e)));
        }
        self.stats.bytes_written += 13;
        self.open = Some(OpenSegment {
            seq,
            part,
            path,
            out,
            bytes: 13,
            duration_ms: 0,
        });
        if std::mem::take(&mut self.failing) {
            tracing::info!(dir = %self.dir.display(), seq, "safety recording resumed");
        } else {
            tracing::debug!(seq, "segment opened");
        }
        Ok(())
    }

    /// Flush, fdatasync, rename to `.flv`, fsync the directory.
    fn close_segment(&mut self) -> Result<(), Failure> {
        let Some(mut seg) = self.open.take() else {
            return Ok(());
        };
        if let Err(e) = sync(&mut seg) {
            // `fail` can only finish what is open: put it back.
            let part = seg.part.clone();
            self.open = Some(seg);
            return Err(Failure::new("syncing", &part, e));
        }
        drop(seg.out);
        fs::rename(&seg.part, &seg.path)
            .map_err(|e| Failure::new("completing a segment", &seg.part, e))?;
        if let Err(e) = disk::sync_dir(&self.dir) {
            tracing::debug!(error = %e, "fsync of the recording directory failed");
        }
        self.stats.segments_written += 1;
        tracing::debug!(
            path = %seg.path.display(),
            bytes = seg.bytes,
            duration_ms = seg.duration_ms,
            "segment complete"
        );
        Ok(())
    }

    /// A write, sync, open or rename failed: finish what is on disk, wait for the retry.
    fn fail(&mut self, f: Failure) {
        self.stats.errors += 1;
        if !std::mem::replace(&mut self.failing, true) {
            tracing::error!(
                path = %f.path.display(),
                error = %f.source,
                "safety recording interrupted while {}: the broadcast goes on and a new segment \
                 is tried every few seconds; free space on that file system, or lower \
                 record.max_total_mb or record.min_free_mb",
                f.what
            );
        } else {
            tracing::debug!(path = %f.path.display(), error = %f.source, what = f.what, "recording still failing");
        }
        if let Some(mut seg) = self.open.take() {
            // Complete tags still buffered are worth one more try (the error may have been
            // about one write); a torn tail is cut off by `finish_part`, and what still does
            // not fit is dropped.
            let _ = seg.out.get_mut().flush();
            let (file, _unwritten) = seg.out.into_inner().into_parts();
            drop(file);
            match disk::finish_part(&seg.part, &seg.path) {
                Ok(Finished::Kept { .. }) => self.stats.segments_written += 1,
                Ok(_) => {}
                Err(e) => tracing::debug!(
                    path = %seg.part.display(),
                    error = %e,
                    "could not complete the interrupted segment; it is recovered at the next start"
                ),
            }
        }
        self.segmenter.abandon();
    }

    /// `.part` files left by a crash become segments; sets the next sequence number.
    fn recover(&mut self) {
        // Before recovery, so the number of a part that is removed is not reused.
        self.next_seq = disk::next_seq(&self.dir).unwrap_or(0);
        match disk::list(&self.dir, FileKind::Part) {
            Ok(parts) => {
                for f in parts {
                    let done = f.path.with_extension(""); // NAME.flv.part → NAME.flv
                    match disk::finish_part(&f.path, &done) {
                        Ok(Finished::Kept { len, truncated }) => {
                            self.stats.segments_recovered += 1;
                            tracing::info!(
                                path = %done.display(),
                                bytes = len,
                                truncated_bytes = truncated,
                                "recovered a segment left incomplete by a crash"
                            );
                        }
                        Ok(Finished::Removed) => tracing::info!(
                            path = %f.path.display(),
                            "removed a segment left empty by a crash"
                        ),
                        Ok(Finished::NotFlv) => tracing::warn!(
                            path = %f.path.display(),
                            "left alone: named like a recording segment but not an FLV file"
                        ),
                        Err(e) => {
                            self.stats.errors += 1;
                            tracing::warn!(
                                path = %f.path.display(),
                                error = %e,
                                "could not recover a segment left by a crash"
                            );
                        }
                    }
                }
            }
            Err(e) => {
                self.stats.errors += 1;
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the recording directory");
            }
        }
    }

    /// Deletes the oldest complete segments while over the quota. The open segment (counted
    /// in the total) is never deleted: it is not a `.flv` yet.
    fn enforce_quota(&mut self) {
        let files = match disk::list(&self.dir, FileKind::Segment) {
            Ok(f) => f,
            Err(e) => {
                self.stats.errors += 1;
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot list the recording directory");
                return;
            }
        };
        let current = self.open.as_ref().map_or(0, |s| s.bytes);
        let free = self.free();
        let n = self.quota.plan(&files, current, free);
        let mut deleted = false;
        for f in &files[..n] {
            match fs::remove_file(&f.path) {
                Ok(()) => {
                    deleted = true;
                    self.stats.segments_deleted += 1;
                    tracing::info!(
                        path = %f.path.display(),
                        bytes = f.size,
                        max_total_bytes = self.quota.max_total_bytes,
                        min_free_bytes = self.quota.min_free_bytes,
                        "deleted the oldest recording segment to stay within the quota"
                    );
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    self.stats.errors += 1;
                    tracing::warn!(path = %f.path.display(), error = %e, "cannot delete an old segment");
                }
            }
        }
        if deleted {
            let _ = disk::sync_dir(&self.dir);
        }
    }

    /// Free bytes on the recording file system; unlimited if `statvfs` fails (logged once),
    /// so an odd file system never stops the recording.
    fn free(&mut self) -> u64 {
        match disk::free_bytes(&self.dir) {
            Ok(f) => f,
            Err(e) => {
                if !std::mem::replace(&mut self.statvfs_warned, true) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "statvfs failed; record.min_free_mb is not enforced");
                }
                u64::MAX
            }
        }
    }

    /// Makes the writer's counters visible to [`super::Recorder::stats`].
    fn publish(&mut self) {
        self.stats.current = self.open.as_ref().map(|s| CurrentSegment {
            seq: s.seq,
            bytes: s.bytes,
            duration_ms: u64::from(s.duration_ms),
        });
        *self.shared.lock_writer_stats() = self.stats;
    }
}

fn part_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(&PART_EXT[EXT_LEN..]);
    PathBuf::from(s)
}

/// `.flv.part` minus `.flv`: what turns a segment name into its part name.
const EXT_LEN: usize = super::name::EXT.len();

fn sync(seg: &mut OpenSegment) -> io::Result<()> {
    let buf = seg.out.get_mut();
    buf.flush()?;
    buf.get_ref().sync_data()
}

/// The file header write can only fail with I/O.
fn flv_io(e: FlvError) -> io::Error {
    match e {
        FlvError::Io(e) => e,
        other => io::Error::other(other.to_string()),
    }
}
