//! The bounded packet ring between the encode threads and the RTMP sender.
//!
//! This module owns the one place where media waits for the network, and therefore the drop
//! policy. Encoders run on OS threads and must never wait for the uplink, so
//! [`Ring::push`] never blocks: when the queue would exceed its bounds the ring drops video,
//! GOP-aware, and counts why. The sender is one tokio task that awaits [`Ring::pop`].
//!
//! # Policy
//! - Sequence headers and metadata are never dropped. The latest of each is also kept aside
//!   ([`Ring::headers`]) so a sender that reconnects can replay them before any frame.
//! - Audio is never dropped by the normal bounds: it is small, and gaps in it are what a
//!   viewer notices first.
//! - Video is dropped from the oldest end, a GOP tail at a time: a dropped frame is a
//!   reference for every later frame of its GOP, so those go too, up to the next keyframe.
//!   When the cut reaches the newest GOP, incoming frames of that GOP are dropped on arrival
//!   (`GopTail`) until the next keyframe. An incoming frame that still does not fit once no
//!   older video is left is dropped itself, and so is the rest of its GOP, keyframe or not.
//! - The delay bound is for the whole wait, not only the ring's share: the sender reports how
//!   much of it the kernel holds beyond the path's floor ([`Ring::set_outside_delay`]), and
//!   the ring keeps the rest (never less than a quarter of the bound, so a noisy estimate
//!   cannot empty it). When the link falls, the bytes already in the kernel drain at the new
//!   rate; without this the viewer's delay would be the bound plus that.
//! - The delay bound spans audio too. If audio alone spans more than `max_delay_ms` (the
//!   uplink cannot even carry the audio), all video is shed until the backlog is back under
//!   the bound: video that late is no use to a live viewer, and sending it would only delay
//!   the audio further.
//! - Every queue is bounded, so audio has a hard cap of 4× the bounds. It is reached only
//!   when the uplink has been dead for several times `max_delay_ms`; then the oldest audio
//!   goes (`AudioOverflow`).
//!
//! As a result, after every push the queue is within the bounds or holds no video; and,
//! headers aside, it never holds more than 4× the bounds. Headers count towards the bounds but
//! are pushed once per encoder (re)configuration, so they cannot grow the queue on their own.
//! DTS is assumed monotonic per track, as [`MediaPacket`] promises.
//!
//! Drops are logged at most once a second with counts; the totals are in [`Ring::stats`].
//!
//! # Layout
//! Three FIFOs (headers, video, audio) whose entries carry a push sequence number: popping
//! takes the smallest front, so packets leave in push order, while dropping a GOP tail is a
//! `pop_front` on the video FIFO and the queue delay is read from the FIFO ends, all O(1).

mod stats;
#[cfg(test)]
mod tests;

pub use stats::{DropCount, DropCounts, DropReason, RingStats};

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use crate::media::{MediaPacket, PacketKind};

/// The ring's bounds. Only video is dropped to meet them; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Most body bytes queued before video is dropped. Sized to hold a few seconds at the
    /// highest bitrate so that short uplink stalls (Wi-Fi roaming, a TCP retransmit storm) are
    /// absorbed without a visible drop.
    pub max_bytes: usize,
    /// Longest span of queued media (newest minus oldest DTS) before video is dropped. This is
    /// the latency the ring can add; older video is worth less to a live viewer than a smaller
    /// gap.
    pub max_delay_ms: u64,
}

impl Default for RingConfig {
    /// 8 MiB and 3 s: about 3 s of 20 Mbit/s video, far above what a capture box sends.
    fn default() -> Self {
        Self {
            max_bytes: 8 << 20,
            max_delay_ms: 3000,
        }
    }
}

impl RingConfig {
    /// Audio and headers alone may grow to this factor of the bounds before audio is dropped.
    const HARD_CAP_FACTOR: u64 = 4;

    fn hard_cap_bytes(&self) -> usize {
        self.max_bytes
            .saturating_mul(Self::HARD_CAP_FACTOR as usize)
    }

    fn hard_cap_delay_ms(&self) -> u64 {
        self.max_delay_ms.saturating_mul(Self::HARD_CAP_FACTOR)
    }
}

/// A cheaply cloneable handle to one ring; encoders and the sender each hold one.
#[derive(Debug, Clone)]
pub struct Ring {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the sender in [`Ring::pop`]; `notify_one` stores a permit, so a push between the
    /// sender's empty check and its wait is not lost.
    notify: Notify,
}

impl Ring {
    pub fn new(cfg: RingConfig) -> Ring {
        Ring {
            shared: Arc::new(Shared {
                state: Mutex::new(State::new(cfg)),
                notify: Notify::new(),
            }),
        }
    }

    pub fn config(&self) -> RingConfig {
        self.lock().cfg
    }

    /// Queues `pkt`, or drops video to stay within the bounds; never waits. Header packets
    /// also replace the corresponding entry of [`Ring::headers`]. After [`Ring::close`] the
    /// packet is discarded uncounted: the pipeline is shutting down.
    pub fn push(&self, pkt: MediaPacket) {
        let (queued, report) = {
            let mut state = self.lock();
            let queued = state.push(pkt);
            (queued, state.drop_log.take_report(Instant::now))
        };
        if let Some(counts) = report {
            log_drops(&counts);
        }
        if queued {
            self.shared.notify.notify_one();
        }
    }

    /// The oldest queued packet, if any. Queued packets are still returned after `close`.
    pub fn try_pop(&self) -> Option<MediaPacket> {
        self.lock().pop()
    }

    /// Waits for the oldest queued packet. Returns `None` once the ring is closed and drained.
    /// Cancel-safe: dropping the future never loses a packet.
    pub async fn pop(&self) -> Option<MediaPacket> {
        loop {
            // Created before checking, so a `close` in between still wakes us.
            let notified = self.shared.notify.notified();
            {
                let mut state = self.lock();
                if let Some(pkt) = state.pop() {
                    return Some(pkt);
                }
                if state.closed {
                    return None;
                }
            }
            notified.await;
        }
    }

    /// Copies of the latest Metadata, VideoHeader and AudioHeader packets pushed, in that
    /// order (absent kinds skipped): what a new RTMP session must send before any frame.
    /// The copies share their bodies with the originals.
    pub fn headers(&self) -> Vec<MediaPacket> {
        let state = self.lock();
        let current = &state.current;
        [&current.metadata, &current.video, &current.audio]
            .into_iter()
            .flatten()
            .cloned()
            .collect()
    }

    /// Stops accepting packets and wakes the sender, which drains what is queued and then gets
    /// `None` from [`Ring::pop`].
    pub fn close(&self) {
        self.lock().closed = true;
        self.shared.notify.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// How much of the delay bound is spent outside the ring (in the kernel's send buffer,
    /// beyond the path's floor), ms. The ring's own budget becomes the bound minus this, at
    /// least a quarter of the bound; queued video over the new budget is dropped now,
    /// GOP-aware, and counts as `QueueDelay`.
    pub fn set_outside_delay(&self, ms: u64) {
        let report = {
            let mut state = self.lock();
            state.outside_delay_ms = ms;
            state.enforce_delay_budget();
            state.drop_log.take_report(Instant::now)
        };
        if let Some(counts) = report {
            log_drops(&counts);
        }
    }

    /// Makes the next popped video frame a keyframe, for a new RTMP session: discards queued
    /// video before the first queued keyframe (audio stays) and, if no keyframe is queued,
    /// drops incoming non-key video until one arrives. The encoder is not asked for a keyframe
    /// here; the caller may do that to shorten the wait. Drops count as `Reconnect`.
    pub fn skip_to_keyframe(&self) {
        let report = {
            let mut state = self.lock();
            state.skip_to_keyframe();
            state.drop_log.take_report(Instant::now)
        };
        if let Some(counts) = report {
            log_drops(&counts);
        }
    }

    pub fn stats(&self) -> RingStats {
        self.lock().stats()
    }

    /// A panic elsewhere while holding the lock leaves the queue consistent (every mutation
    /// keeps the invariants between statements that cannot panic), so poisoning is ignored
    /// rather than taking the encoder threads down too.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.shared
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

fn log_drops(counts: &DropCounts) {
    let total = counts.total();
    tracing::warn!(
        dropped_packets = total.packets,
        dropped_bytes = total.bytes,
        queue_full = counts.get(DropReason::QueueFull).packets,
        queue_delay = counts.get(DropReason::QueueDelay).packets,
        gop_tail = counts.get(DropReason::GopTail).packets,
        reconnect = counts.get(DropReason::Reconnect).packets,
        audio_overflow = counts.get(DropReason::AudioOverflow).packets,
        "ring dropped packets since the last report: the uplink is slower than the encoders \
         or reconnected"
    );
}

/// One queued packet and its push sequence number, which orders packets across the FIFOs.
#[derive(Debug)]
struct Entry {
    seq: u64,
    pkt: MediaPacket,
}

/// The latest header of each kind.
#[derive(Debug, Default)]
struct CurrentHeaders {
    metadata: Option<MediaPacket>,
    video: Option<MediaPacket>,
    audio: Option<MediaPacket>,
}

/// Whether incoming video can be queued. Closed after a cut left the newest GOP without
/// its earlier frames, until a keyframe starts a decodable GOP again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VideoGate {
    Open,
    /// Drop incoming non-key video, counting it under this reason.
    AwaitKeyframe(DropReason),
}

/// Packets and bytes moved through one door of the ring.
#[derive(Debug, Default, Clone, Copy)]
struct Totals {
    packets: u64,
    bytes: u64,
}

impl Totals {
    fn add(&mut self, bytes: usize) {
        self.packets += 1;
        self.bytes += bytes as u64;
    }
}

/// Rate limit for the drop warning: the first drop is reported at once, later ones are summed
/// and reported at most once a second (on the next push or skip after the second has passed;
/// the totals in the stats are always current).
#[derive(Debug)]
struct DropLog {
    /// When the last report went out.
    last: Option<Instant>,
    /// The wait before the next report: 1 s after a quiet spell, doubling per report while
    /// drops go on, at most [`DropLog::MAX_INTERVAL`] (an hour of outage is a few dozen lines,
    /// not thousands; the counters in `/metrics` have every drop).
    interval: Duration,
    pending: DropCounts,
}

impl Default for DropLog {
    fn default() -> Self {
        Self {
            last: None,
            interval: Self::MIN_INTERVAL,
            pending: DropCounts::default(),
        }
    }
}

impl DropLog {
    const MIN_INTERVAL: Duration = Duration::from_secs(1);
    const MAX_INTERVAL: Duration = Duration::from_secs(60);

    /// The counts to log now, if any. `now` is only called when drops are pending, so the
    /// clock is not read per packet in the steady state.
    fn take_report(&mut self, now: impl FnOnce() -> Instant) -> Option<DropCounts> {
        if self.pending.is_empty() {
            return None;
        }
        let now = now();
        if let Some(last) = self.last {
            let since = now.saturating_duration_since(last);
            if since < self.interval {
                return None;
            }
            // Drops that come back after a quiet spell are news again.
            self.interval = if since >= self.interval * 4 {
                Self::MIN_INTERVAL
            } else {
                (self.interval * 2).min(Self::MAX_INTERVAL)
            };
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.pending))
    }
}

/// Everything behind the lock. Methods here never allocate in the steady state: the FIFOs are
/// reserved up front and packets are moved, not copied.
#[derive(Debug)]
struct State {
    cfg: RingConfig,
    /// The share of the delay bound spent outside the ring, ms; see [`Ring::set_outside_delay`].
    outside_delay_ms: u64,
    headers: VecDeque<Entry>,
    video: VecDeque<Entry>,
    audio: VecDeque<Entry>,
    next_seq: u64,
    /// Body bytes in the three FIFOs.
    queued_bytes: usize,
    current: CurrentHeaders,
    video_gate: VideoGate,
    closed: bool,
    pushed: Totals,
    popped: Totals,
    dropped: DropCounts,
    drop_log: DropLog,
}

impl State {
    fn new(cfg: RingConfig) -> Self {
        // Room for `max_delay_ms` of 60 fps video and for the audio hard cap (4× that) of
        // 48 kHz AAC (~47 frames/s), so pushes do not reallocate; capped for huge settings.
        let secs = cfg.max_delay_ms.div_ceil(1000).clamp(1, 60) as usize;
        Self {
            cfg,
            outside_delay_ms: 0,
            headers: VecDeque::with_capacity(16),
            video: VecDeque::with_capacity(64 * secs),
            audio: VecDeque::with_capacity(4 * 50 * secs),
            next_seq: 0,
            queued_bytes: 0,
            current: CurrentHeaders::default(),
            video_gate: VideoGate::Open,
            closed: false,
            pushed: Totals::default(),
            popped: Totals::default(),
            dropped: DropCounts::default(),
            drop_log: DropLog::default(),
        }
    }

    /// Returns whether `pkt` was queued.
    fn push(&mut self, pkt: MediaPacket) -> bool {
        if self.closed {
            return false;
        }
        let len = pkt.body.len();
        self.pushed.add(len);
        match pkt.kind {
            PacketKind::Metadata => self.current.metadata = Some(pkt.clone()),
            PacketKind::VideoHeader => self.current.video = Some(pkt.clone()),
            PacketKind::AudioHeader => self.current.audio = Some(pkt.clone()),
            PacketKind::Video { keyframe: false } => {
                if let VideoGate::AwaitKeyframe(reason) = self.video_gate {
                    self.record_drop(reason, len);
                    return false;
                }
            }
            PacketKind::Video { keyframe: true } | PacketKind::Audio => {}
        }

        let dts = (!pkt.kind.is_header()).then_some(pkt.dts_ms);
        while let Some(reason) = self.over_bounds(len, dts) {
            if !self.drop_oldest_video(reason) {
                break;
            }
        }

        if let PacketKind::Video { keyframe } = pkt.kind {
            if let Some(reason) = self.over_bounds(len, dts) {
                // No queued video is left to drop: the uplink cannot even carry the audio.
                // The frames that follow this one would reference it.
                self.record_drop(reason, len);
                self.video_gate = VideoGate::AwaitKeyframe(DropReason::GopTail);
                return false;
            }
            if keyframe {
                self.video_gate = VideoGate::Open;
            } else if self.video_gate != VideoGate::Open {
                // Making room cut this frame's own GOP.
                self.record_drop(DropReason::GopTail, len);
                return false;
            }
        }

        self.enqueue(pkt);
        self.enforce_audio_hard_cap();
        true
    }

    fn enqueue(&mut self, pkt: MediaPacket) {
        let entry = Entry {
            seq: self.next_seq,
            pkt,
        };
        self.next_seq += 1;
        self.queued_bytes += entry.pkt.body.len();
        match entry.pkt.kind {
            PacketKind::Video { .. } => self.video.push_back(entry),
            PacketKind::Audio => self.audio.push_back(entry),
            _ => self.headers.push_back(entry),
        }
    }

    fn pop(&mut self) -> Option<MediaPacket> {
        let front = |q: &VecDeque<Entry>| q.front().map_or(u64::MAX, |e| e.seq);
        let (h, v, a) = (front(&self.headers), front(&self.video), front(&self.audio));
        let fifo = if h <= v && h <= a {
            &mut self.headers
        } else if v <= a {
            &mut self.video
        } else {
            &mut self.audio
        };
        let pkt = fifo.pop_front()?.pkt;
        self.queued_bytes -= pkt.body.len();
        self.popped.add(pkt.body.len());
        Some(pkt)
    }

    /// Newest minus oldest DTS over queued audio and video, plus `incoming` if given. Each
    /// track's DTS is monotonic, so its extremes sit at the ends of its FIFO.
    fn delay_ms(&self, incoming: Option<u64>) -> u64 {
        let ends = |q: &VecDeque<Entry>| {
            q.front()
                .zip(q.back())
                .map(|(f, b)| (f.pkt.dts_ms, b.pkt.dts_ms))
        };
        let (oldest, newest) = [
            ends(&self.video),
            ends(&self.audio),
            incoming.map(|d| (d, d)),
        ]
        .into_iter()
        .flatten()
        .fold((u64::MAX, 0), |(lo, hi), (f, b)| (lo.min(f), hi.max(b)));
        newest.saturating_sub(oldest)
    }

    /// The span of media the ring may hold: the bound minus what waits outside the ring, but
    /// at least a quarter of the bound.
    fn delay_budget_ms(&self) -> u64 {
        let floor = self.cfg.max_delay_ms / 4;
        self.cfg
            .max_delay_ms
            .saturating_sub(self.outside_delay_ms)
            .max(floor)
    }

    /// Drops the oldest video, GOP-aware, while the queue spans more than the budget.
    fn enforce_delay_budget(&mut self) {
        while self.delay_ms(None) > self.delay_budget_ms() {
            if !self.drop_oldest_video(DropReason::QueueDelay) {
                break;
            }
        }
    }

    /// Which bound the queue would break with a packet of `len` bytes (and `dts`, for media)
    /// added, if any.
    fn over_bounds(&self, len: usize, dts: Option<u64>) -> Option<DropReason> {
        if self.queued_bytes.saturating_add(len) > self.cfg.max_bytes {
            Some(DropReason::QueueFull)
        } else if self.delay_ms(dts) > self.delay_budget_ms() {
            Some(DropReason::QueueDelay)
        } else {
            None
        }
    }

    /// Drops the oldest queued video frame and the rest of its GOP (every following frame up
    /// to the next queued keyframe). If no keyframe follows, the newest GOP was cut and the
    /// gate closes. Returns false when no video is queued.
    fn drop_oldest_video(&mut self, reason: DropReason) -> bool {
        let Some(first) = self.video.pop_front() else {
            return false;
        };
        self.forget(first, reason);
        if !self.drop_video_before_keyframe(reason) {
            self.video_gate = VideoGate::AwaitKeyframe(DropReason::GopTail);
        }
        true
    }

    fn skip_to_keyframe(&mut self) {
        if !self.drop_video_before_keyframe(DropReason::Reconnect) {
            // No keyframe queued: the session must wait for the encoder's next one.
            self.video_gate = VideoGate::AwaitKeyframe(DropReason::Reconnect);
        }
    }

    /// Drops queued video from the front up to (not including) the first queued keyframe.
    /// Returns whether a keyframe is queued.
    fn drop_video_before_keyframe(&mut self, reason: DropReason) -> bool {
        let n = self
            .video
            .iter()
            .position(|e| e.pkt.kind.is_keyframe())
            .unwrap_or(self.video.len());
        for entry in self.video.drain(..n) {
            let len = entry.pkt.body.len();
            self.queued_bytes -= len;
            self.dropped.add(reason, len);
            self.drop_log.pending.add(reason, len);
        }
        !self.video.is_empty()
    }

    /// Drops the oldest audio while audio and headers alone exceed the hard cap. Only
    /// reachable with no video queued, because video is dropped first at 1× the bounds.
    fn enforce_audio_hard_cap(&mut self) {
        while self.queued_bytes > self.cfg.hard_cap_bytes()
            || self.delay_ms(None) > self.cfg.hard_cap_delay_ms()
        {
            let Some(entry) = self.audio.pop_front() else {
                break;
            };
            self.forget(entry, DropReason::AudioOverflow);
        }
    }

    /// Removes a dequeued entry from the accounting as a drop.
    fn forget(&mut self, entry: Entry, reason: DropReason) {
        self.queued_bytes -= entry.pkt.body.len();
        self.record_drop(reason, entry.pkt.body.len());
    }

    fn record_drop(&mut self, reason: DropReason, bytes: usize) {
        self.dropped.add(reason, bytes);
        self.drop_log.pending.add(reason, bytes);
    }

    fn stats(&self) -> RingStats {
        RingStats {
            queued_packets: self.headers.len() + self.video.len() + self.audio.len(),
            queued_bytes: self.queued_bytes,
            queued_delay_ms: self.delay_ms(None),
            pushed_packets: self.pushed.packets,
            pushed_bytes: self.pushed.bytes,
            popped_packets: self.popped.packets,
            popped_bytes: self.popped.bytes,
            dropped: self.dropped,
        }
    }
}
