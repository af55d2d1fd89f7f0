//! The bounded hand-off between the encode threads and the recorder's writer thread.
//!
//! Pushing takes a mutex that the writer holds only to swap the whole queue out (never across
//! disk I/O), checks the bounds and returns: an encode thread never waits for the disk. Over a
//! bound the packet is dropped and counted. Video drops are GOP-aware, as in the ring: after a
//! dropped video frame, the rest of its GOP is dropped too (it could not be decoded), until the
//! next keyframe that fits. Headers are never dropped and do not count towards the bounds: they
//! come once per encoder (re)configuration, and the segmenter needs every one.
//!
//! Drops are logged at most once a second, from the pushing thread (the writer is the one
//! that is stuck).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::media::MediaPacket;
use crate::throttle::Throttle;

/// What [`Queue::stats`] reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QueueStats {
    pub queued_packets: usize,
    pub queued_bytes: usize,
    pub dropped_packets: u64,
    pub dropped_bytes: u64,
}

#[derive(Debug)]
pub(crate) struct Queue {
    state: Mutex<State>,
    /// Wakes the writer when the queue stops being empty, is closed or is resumed.
    wake: Condvar,
}

#[derive(Debug)]
struct State {
    packets: VecDeque<MediaPacket>,
    /// Body bytes of the media packets queued.
    bytes: usize,
    /// Media packets queued.
    media: usize,
    max_bytes: usize,
    max_packets: usize,
    closed: bool,
    /// A video frame was dropped: drop non-key video until a keyframe is queued.
    await_keyframe: bool,
    dropped_packets: u64,
    dropped_bytes: u64,
    log: DropLog,
    /// Test hook: the writer takes nothing while set, as if the disk hung.
    paused: bool,
}

impl Queue {
    pub(super) fn new(max_bytes: usize, max_packets: usize) -> Self {
        Self {
            state: Mutex::new(State {
                packets: VecDeque::with_capacity(max_packets.min(4096)),
                bytes: 0,
                media: 0,
                max_bytes,
                max_packets,
                closed: false,
                await_keyframe: false,
                dropped_packets: 0,
                dropped_bytes: 0,
                log: DropLog::default(),
                paused: false,
            }),
            wake: Condvar::new(),
        }
    }

    /// Queues a clone of `pkt` (it shares the body) or drops it; never waits for the writer.
    /// After [`Queue::close`] packets are discarded uncounted: the recorder is stopping.
    pub(super) fn push(&self, pkt: &MediaPacket) {
        let (wake, report) = {
            let mut s = self.lock();
            if s.closed {
                return;
            }
            let was_empty = s.packets.is_empty();
            let queued = s.offer(pkt);
            let report = if queued {
                None
            } else {
                s.log.pending += 1;
                s.log.take_report(Instant::now)
            };
            (queued && was_empty, report)
        };
        if let Some(n) = report {
            tracing::warn!(
                dropped_packets = n,
                "recorder queue full: the disk is slower than the encoders; these packets are \
                 missing from the safety recording (the broadcast is not affected)"
            );
        }
        if wake {
            self.wake.notify_one();
        }
    }

    /// Waits until there is something to write, then moves all of it into `into` (which must
    /// be empty; the two buffers trade places, so nothing is allocated in steady state).
    /// Returns false once the queue is closed and drained: the writer should finish.
    pub(super) fn take_all(&self, into: &mut VecDeque<MediaPacket>) -> bool {
        debug_assert!(into.is_empty());
        let mut s = self.lock();
        while (s.packets.is_empty() || s.paused) && !s.closed {
            s = self.wake.wait(s).unwrap_or_else(PoisonError::into_inner);
        }
        if s.packets.is_empty() {
            return false;
        }
        std::mem::swap(into, &mut s.packets);
        s.bytes = 0;
        s.media = 0;
        true
    }

    /// No more packets are accepted; the writer drains what is queued and finishes.
    pub(super) fn close(&self) {
        let mut s = self.lock();
        s.closed = true;
        s.paused = false;
        drop(s);
        self.wake.notify_all();
    }

    pub(super) fn stats(&self) -> QueueStats {
        let s = self.lock();
        QueueStats {
            queued_packets: s.packets.len(),
            queued_bytes: s.bytes,
            dropped_packets: s.dropped_packets,
            dropped_bytes: s.dropped_bytes,
        }
    }

    /// Test hook: stop (or resume) handing packets to the writer, as a hung disk would.
    #[cfg(test)]
    pub(super) fn set_paused(&self, paused: bool) {
        self.lock().paused = paused;
        self.wake.notify_all();
    }

    /// Poisoning is ignored: every mutation leaves the state consistent, and a panic elsewhere
    /// must not take the encode threads down with it.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Queues the packet if the policy allows; true if queued.
    fn offer(&mut self, pkt: &MediaPacket) -> bool {
        if pkt.kind.is_header() {
            self.packets.push_back(pkt.clone());
            return true;
        }
        let len = pkt.body.len();
        let video = pkt.kind.is_video();
        let keyframe = pkt.kind.is_keyframe();
        let fits = self.media < self.max_packets && self.bytes + len <= self.max_bytes;
        if !fits || (video && !keyframe && self.await_keyframe) {
            self.await_keyframe |= video;
            self.dropped_packets += 1;
            self.dropped_bytes += len as u64;
            return false;
        }
        if keyframe {
            self.await_keyframe = false;
        }
        self.bytes += len;
        self.media += 1;
        self.packets.push_back(pkt.clone());
        true
    }
}

/// Rate limit for the drop warning: the first drop is reported at once, later ones are summed
/// and reported at most once a second (on the next drop after the second has passed; the
/// totals in the stats are always current).
#[derive(Debug)]
struct DropLog {
    throttle: Throttle<Instant>,
    pending: u64,
}

impl Default for DropLog {
    fn default() -> Self {
        Self {
            throttle: Throttle::new(Duration::from_secs(1)),
            pending: 0,
        }
    }
}

impl DropLog {
    /// The count to log now, if any. `now` is only called when drops are pending.
    fn take_report(&mut self, now: impl FnOnce() -> Instant) -> Option<u64> {
        if self.pending == 0 || !self.throttle.ready(now()) {
            return None;
        }
        Some(std::mem::take(&mut self.pending))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PacketKind;
    use bytes::Bytes;

    fn pkt(kind: PacketKind, len: usize) -> MediaPacket {
        MediaPacket::new(kind, 0, Bytes::from(vec![0u8; len]))
    }

    const KEY: PacketKind = PacketKind::Video { keyframe: true };
    const DELTA: PacketKind = PacketKind::Video { keyframe: false };

    #[test]
    fn bounds_by_bytes_and_by_count() {
        let q = Queue::new(100, 3);
        q.push(&pkt(KEY, 60));
        q.push(&pkt(PacketKind::Audio, 50)); // 110 > 100
        q.push(&pkt(PacketKind::Audio, 40));
        assert_eq!(q.stats().queued_packets, 2);
        assert_eq!(q.stats().dropped_packets, 1);
        assert_eq!(q.stats().dropped_bytes, 50);

        let q = Queue::new(1 << 20, 3);
        for _ in 0..5 {
            q.push(&pkt(PacketKind::Audio, 1));
        }
        assert_eq!(q.stats().queued_packets, 3);
        assert_eq!(q.stats().dropped_packets, 2);
    }

    #[test]
    fn headers_are_never_dropped_and_do_not_count() {
        let q = Queue::new(10, 1);
        q.push(&pkt(PacketKind::Audio, 10));
        q.push(&pkt(PacketKind::VideoHeader, 1000));
        q.push(&pkt(PacketKind::Metadata, 1000));
        q.push(&pkt(PacketKind::Audio, 1));
        let s = q.stats();
        assert_eq!(
            (s.queued_packets, s.queued_bytes, s.dropped_packets),
            (3, 10, 1)
        );
    }

    #[test]
    fn a_dropped_video_frame_drops_the_rest_of_its_gop() {
        let q = Queue::new(100, 100);
        q.push(&pkt(KEY, 60));
        q.push(&pkt(DELTA, 50)); // does not fit
        let mut out = VecDeque::new();
        assert!(q.take_all(&mut out));
        q.push(&pkt(DELTA, 10)); // fits, but its reference was dropped
        q.push(&pkt(PacketKind::Audio, 10)); // audio is unaffected
        q.push(&pkt(KEY, 10));
        q.push(&pkt(DELTA, 10));
        assert_eq!(q.stats().dropped_packets, 2);
        let mut next = VecDeque::new();
        assert!(q.take_all(&mut next));
        let kinds: Vec<_> = next.iter().map(|p| p.kind).collect();
        assert_eq!(kinds, [PacketKind::Audio, KEY, DELTA]);
    }

    #[test]
    fn take_all_returns_false_once_closed_and_drained() {
        let q = Queue::new(100, 100);
        q.push(&pkt(PacketKind::Audio, 1));
        q.close();
        q.push(&pkt(PacketKind::Audio, 1)); // after close: discarded, not counted
        let mut out = VecDeque::new();
        assert!(q.take_all(&mut out));
        assert_eq!(out.len(), 1);
        out.clear();
        assert!(!q.take_all(&mut out));
        assert_eq!(q.stats().dropped_packets, 0);
    }

    #[test]
    fn drop_log_reports_at_most_once_a_second() {
        let mut log = DropLog::default();
        let t0 = Instant::now();
        assert_eq!(log.take_report(|| unreachable!("no drops, no clock")), None);
        log.pending = 1;
        assert_eq!(log.take_report(|| t0), Some(1));
        log.pending = 2;
        assert_eq!(log.take_report(|| t0 + Duration::from_millis(999)), None);
        log.pending += 1;
        assert_eq!(log.take_report(|| t0 + Duration::from_secs(1)), Some(3));
        assert_eq!(log.pending, 0);
    }
}
