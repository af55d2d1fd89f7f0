//! The pure part of the recorder: which packet goes into which segment, at which timestamp.
//! Packets in, [`Step`]s out; no files and no clock, so every cutting rule is tested with
//! synthetic packets and the writer thread only executes steps.
//!
//! # Rules
//! - **Interleaving.** The encode threads push audio and video independently, so a packet's
//!   arrival order is not its time order (x264 latency puts audio ahead, an AAC frame's 21 ms
//!   can put video ahead). Packets wait in one FIFO per track and leave in DTS order, as a
//!   muxer interleaves. A track waits for the other at most [`MAX_INTERLEAVE_MS`] of its own
//!   media (the other track may have stalled or ended), and not at all when the other track
//!   does not exist (no header seen for it). Because cuts are decided in DTS order, each
//!   segment holds exactly the audio whose DTS lies between its first keyframe and the next
//!   segment's: no audio is duplicated or missing at a cut.
//! - **Segments** open at a video keyframe: the FLV file header, the latest Metadata,
//!   VideoHeader and AudioHeader at timestamp 0, then the keyframe at 0. Every timestamp in
//!   the segment is `dts - keyframe dts`, so files start at 0 and audio keeps its exact offset
//!   to video. A segment is cut at the first keyframe at least `segment_ms` after its start.
//! - **Before the first keyframe** nothing is written (there is nothing to decode audio
//!   against, and a file starting with seconds of audio and no picture confuses editors); such
//!   packets are counted as skipped.
//! - **A header that changes** (encoder reopened with new parameters) is written into the open
//!   segment where it occurs (FLV carries sequence headers mid-stream and FFmpeg applies them as
//!   new extradata, so audio in between stays decodable) and the segment is cut at the next
//!   keyframe, so every file starts with one consistent set. Non-key video after a changed
//!   VideoHeader cannot be decoded by either set and is skipped until that keyframe. A header
//!   equal to the current one (a replay) changes nothing.
//! - **Audio older than its segment's keyframe** can only arrive when the tracks were more
//!   than [`MAX_INTERLEAVE_MS`] apart; it is skipped (timestamps cannot go below 0).
//! - **After a write error** ([`Segmenter::abandon`]) nothing is written until a keyframe at
//!   least [`RETRY_AFTER_MS`] later: a full disk is retried every few seconds, not per packet.
//!   Packets in between are counted as lost.

use std::collections::VecDeque;

use bytes::Bytes;

use crate::flv::tag_type;
use crate::media::{MediaPacket, PacketKind};

/// How much media (DTS span) one track may queue while the other has nothing queued, before
/// it is written without waiting. Covers encoder and capture latency differences (x264 runs
/// with `tune=zerolatency`; capture queues hold ~250 ms) with a wide margin; it is also the
/// longest a stalled track delays the recording of the other.
pub(crate) const MAX_INTERLEAVE_MS: u64 = 2_000;

/// After a write error, the next segment opens at the first keyframe this much (media time)
/// after the failure.
pub(crate) const RETRY_AFTER_MS: u64 = 5_000;

/// What the writer must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Step {
    /// Complete the open segment: flush, fdatasync, rename `.part` to `.flv`.
    Close,
    /// Open a new segment and write the FLV file header with these presence flags.
    Open { has_audio: bool, has_video: bool },
    /// One tag into the open segment. `media` is true for audio and video frames (what
    /// `packets_written` counts), false for headers.
    Tag {
        tag_type: u8,
        ts_ms: u32,
        body: Bytes,
        media: bool,
    },
    /// Flush and fdatasync the open segment: `sync_ms` of media went by since the last one.
    Sync,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SegmenterConfig {
    /// Cut at the first keyframe this long after the segment's start.
    pub segment_ms: u64,
    /// Emit [`Step::Sync`] after this much media.
    pub sync_ms: u64,
}

/// Media packets that reached the segmenter but no file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Discards {
    /// Not recordable by design: before the first keyframe, late audio, undecodable video
    /// after a VideoHeader change.
    pub skipped: u64,
    /// Waiting for the retry keyframe after a write error.
    pub lost: u64,
}

#[derive(Debug)]
enum State {
    /// No segment open. The first keyframe with DTS at or after `not_before` opens one.
    Waiting {
        not_before: u64,
        after_error: bool,
    },
    Recording(Segment),
}

#[derive(Debug)]
struct Segment {
    /// DTS of the keyframe that opened the segment: timestamp 0.
    base: u64,
    /// DTS at the last [`Step::Sync`] (or the open).
    last_sync: u64,
    /// Newest timestamp written, where a mid-segment header goes.
    last_ts: u32,
    /// A header changed: cut at the next keyframe whatever the length.
    cut_at_next_keyframe: bool,
    /// The VideoHeader changed: non-key video cannot be decoded until the next keyframe.
    video_broken: bool,
}

/// The latest header of each kind, repeated at the start of every segment.
#[derive(Debug, Default)]
struct Headers {
    metadata: Option<MediaPacket>,
    video: Option<MediaPacket>,
    audio: Option<MediaPacket>,
}

/// Which FIFO the next packet leaves from.
enum Next {
    Video,
    Audio,
    Wait,
}

#[derive(Debug)]
pub(crate) struct Segmenter {
    cfg: SegmenterConfig,
    headers: Headers,
    /// A track exists once its header or a packet of it was pushed; only then does the other
    /// track wait for it.
    has_audio: bool,
    has_video: bool,
    /// Video, VideoHeader and Metadata, in push order.
    video: VecDeque<MediaPacket>,
    /// Audio and AudioHeader, in push order.
    audio: VecDeque<MediaPacket>,
    state: State,
    /// Newest media DTS taken out of the FIFOs: where a retry is counted from.
    last_dts: u64,
    discards: Discards,
}

impl Segmenter {
    pub(super) fn new(cfg: SegmenterConfig) -> Self {
        Self {
            cfg,
            headers: Headers::default(),
            has_audio: false,
            has_video: false,
            // ~MAX_INTERLEAVE_MS of 60 fps video or 48 kHz AAC, so steady state does not
            // reallocate.
            video: VecDeque::with_capacity(128),
            audio: VecDeque::with_capacity(128),
            state: State::Waiting {
                not_before: 0,
                after_error: false,
            },
            last_dts: 0,
            discards: Discards::default(),
        }
    }

    /// Takes one packet; appends what to do now to `out`.
    pub(super) fn push(&mut self, pkt: MediaPacket, out: &mut Vec<Step>) {
        match pkt.kind {
            PacketKind::Audio | PacketKind::AudioHeader => {
                self.has_audio = true;
                self.audio.push_back(pkt);
            }
            PacketKind::Video { .. } | PacketKind::VideoHeader => {
                self.has_video = true;
                self.video.push_back(pkt);
            }
            PacketKind::Metadata => self.video.push_back(pkt),
        }
        self.drain(false, out);
    }

    /// End of stream: writes everything still waiting for the other track and closes the
    /// open segment.
    pub(super) fn finish(&mut self, out: &mut Vec<Step>) {
        self.drain(true, out);
        if matches!(self.state, State::Recording(_)) {
            out.push(Step::Close);
        }
        self.state = State::Waiting {
            not_before: 0,
            after_error: false,
        };
    }

    /// The writer could not write the open segment (it has closed what it could). Nothing is
    /// written until a keyframe [`RETRY_AFTER_MS`] later.
    pub(super) fn abandon(&mut self) {
        self.state = State::Waiting {
            not_before: self.last_dts.saturating_add(RETRY_AFTER_MS),
            after_error: true,
        };
    }

    /// Cut the open segment at the next keyframe (the quota needs room now).
    pub(super) fn request_cut(&mut self) {
        if let State::Recording(seg) = &mut self.state {
            seg.cut_at_next_keyframe = true;
        }
    }

    pub(super) fn discards(&self) -> Discards {
        self.discards
    }

    /// Media packets held for interleaving (not yet written nor discarded).
    #[cfg(test)]
    pub(super) fn pending(&self) -> usize {
        self.video
            .iter()
            .chain(&self.audio)
            .filter(|p| !p.kind.is_header())
            .count()
    }

    fn next(&self, force: bool) -> Next {
        // DTS span of a FIFO; a header at either end only makes it look shorter (it waits).
        let span = |q: &VecDeque<MediaPacket>| match (q.front(), q.back()) {
            (Some(f), Some(b)) => b.dts_ms.saturating_sub(f.dts_ms),
            _ => 0,
        };
        match (self.video.front(), self.audio.front()) {
            // A header applies to what follows it in its track: no waiting.
            (Some(v), _) if v.kind.is_header() => Next::Video,
            (_, Some(a)) if a.kind.is_header() => Next::Audio,
            // Ties go to video, so audio at a cut keyframe's DTS lands in the new segment.
            (Some(v), Some(a)) if v.dts_ms <= a.dts_ms => Next::Video,
            (Some(_), Some(_)) => Next::Audio,
            (Some(_), None)
                if force || !self.has_audio || span(&self.video) > MAX_INTERLEAVE_MS =>
            {
                Next::Video
            }
            (None, Some(_))
                if force || !self.has_video || span(&self.audio) > MAX_INTERLEAVE_MS =>
            {
                Next::Audio
            }
            _ => Next::Wait,
        }
    }

    fn drain(&mut self, force: bool, out: &mut Vec<Step>) {
        loop {
            let pkt = match self.next(force) {
                Next::Video => self.video.pop_front(),
                Next::Audio => self.audio.pop_front(),
                Next::Wait => None,
            };
            let Some(pkt) = pkt else { return };
            if pkt.kind.is_header() {
                self.on_header(pkt, out);
            } else {
                self.on_media(pkt, out);
            }
        }
    }

    fn on_header(&mut self, pkt: MediaPacket, out: &mut Vec<Step>) {
        let slot = match pkt.kind {
            PacketKind::Metadata => &mut self.headers.metadata,
            PacketKind::VideoHeader => &mut self.headers.video,
            _ => &mut self.headers.audio,
        };
        if slot.as_ref().is_some_and(|h| h.body == pkt.body) {
            return;
        }
        let (kind, body) = (pkt.kind, pkt.body.clone());
        *slot = Some(pkt);
        if let State::Recording(seg) = &mut self.state {
            out.push(Step::Tag {
                tag_type: tag_type(kind),
                ts_ms: seg.last_ts,
                body,
                media: false,
            });
            seg.cut_at_next_keyframe = true;
            seg.video_broken |= kind == PacketKind::VideoHeader;
        }
    }

    fn on_media(&mut self, pkt: MediaPacket, out: &mut Vec<Step>) {
        self.last_dts = self.last_dts.max(pkt.dts_ms);
        let keyframe = pkt.kind.is_keyframe();
        match &mut self.state {
            State::Waiting {
                not_before,
                after_error,
            } => {
                if keyframe && pkt.dts_ms >= *not_before {
                    self.open(pkt.dts_ms, out);
                    self.write(pkt, out);
                } else if *after_error {
                    self.discards.lost += 1;
                } else {
                    self.discards.skipped += 1;
                }
            }
            State::Recording(seg) => {
                let long_enough = pkt.dts_ms.saturating_sub(seg.base) >= self.cfg.segment_ms;
                if keyframe && (seg.cut_at_next_keyframe || long_enough) {
                    out.push(Step::Close);
                    self.open(pkt.dts_ms, out);
                    self.write(pkt, out);
                } else if (pkt.kind.is_video() && !keyframe && seg.video_broken)
                    || pkt.dts_ms < seg.base
                {
                    self.discards.skipped += 1;
                } else {
                    self.write(pkt, out);
                }
            }
        }
    }

    /// A new segment starting at the keyframe with DTS `base`: file header, then the current
    /// headers at timestamp 0.
    fn open(&mut self, base: u64, out: &mut Vec<Step>) {
        out.push(Step::Open {
            has_audio: self.has_audio,
            has_video: self.has_video,
        });
        let h = &self.headers;
        for header in [&h.metadata, &h.video, &h.audio].into_iter().flatten() {
            out.push(Step::Tag {
                tag_type: tag_type(header.kind),
                ts_ms: 0,
                body: header.body.clone(),
                media: false,
            });
        }
        self.state = State::Recording(Segment {
            base,
            last_sync: base,
            last_ts: 0,
            cut_at_next_keyframe: false,
            video_broken: false,
        });
    }

    /// A media packet into the open segment, rebased.
    fn write(&mut self, pkt: MediaPacket, out: &mut Vec<Step>) {
        let State::Recording(seg) = &mut self.state else {
            return;
        };
        // Wraps after 49.7 days in one segment, as FLV timestamps do; segments are cut long
        // before (segment_s is at most a day).
        let ts_ms = (pkt.dts_ms - seg.base) as u32;
        seg.last_ts = seg.last_ts.max(ts_ms);
        out.push(Step::Tag {
            tag_type: tag_type(pkt.kind),
            ts_ms,
            body: pkt.body,
            media: true,
        });
        if pkt.dts_ms.saturating_sub(seg.last_sync) >= self.cfg.sync_ms {
            seg.last_sync = pkt.dts_ms;
            out.push(Step::Sync);
        }
    }
}

#[cfg(test)]
mod tests;
