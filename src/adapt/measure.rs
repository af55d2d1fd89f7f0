//! Turns the broadcast's successive counters into the two numbers the controller decides on:
//! how fast the peer takes our bytes, and how long media now waits before it leaves.
//!
//! **Delivery rate.** Bytes the peer's TCP acknowledged (`bytes sent − SIOCOUTQ`), falling
//! back to RTMP Acknowledgement progress where the kernel counter is not available, per second
//! over a sliding window. Bytes the kernel merely *accepted* say nothing about the link: the
//! send buffer takes 256 KiB at once.
//!
//! **Link rate.** The same counter, but only over the trailing span during which media was
//! waiting. A sender with a backlog is limited by the link, not by the encoder, so that rate
//! *is* the link's capacity (BBR's "delivery rate sample that is not app-limited"); the window
//! rate mixes in the seconds before the link changed.
//!
//! **Peak rate.** The largest delivery rate over a single tick within the window. A keyframe
//! is several frames' worth of bytes at once; the link drains it as fast as it can, so the
//! ticks after a keyframe show the link's capacity up to the burst's size (BBR's max-filtered
//! delivery rate). That is the evidence that a link has room above what we send: with
//! headroom the peak is well above the send rate, at the limit it equals it. The window
//! should span a GOP (2 s by default, as is the default GOP) so it holds a keyframe.
//!
//! **Queue delay.** `ring delay + (kernel unsent + our backlog) / rate − base`: the ring knows
//! its media duration, the bytes below it are converted at the rate they leave with. At a rate
//! of zero with bytes waiting the delay is unbounded ([`QUEUE_DELAY_CAP_MS`]); the controller
//! treats that as a stall, not as a measurement.
//!
//! **Base delay.** `SIOCOUTQ` also counts bytes in flight, not yet acknowledged: a path with a
//! 200 ms round trip always shows about 200 ms of "queue" in the kernel at any rate. Like
//! LEDBAT's base delay and BBR's min RTT, the smallest kernel delay seen over
//! `base_window_s` is that floor and is subtracted; what remains is the standing queue.

use super::{AdaptConfig, LinkStats};
use std::collections::VecDeque;
use std::time::Duration;

/// The delay reported when bytes wait and nothing leaves: ten minutes, i.e. "unbounded"
/// without overflowing arithmetic further on.
pub const QUEUE_DELAY_CAP_MS: u64 = 600_000;

/// Samples kept at most: a 10 s window at 100 ms ticks fits with room to spare. Bounded so a
/// broadcast ticking far too often only shortens the window, never grows memory.
const MAX_SAMPLES: usize = 256;

/// `ring_delay_ms` plus `queued_bytes` converted to time at `rate_bps` (bits per second).
///
/// `rate_bps` of `None` or 0 with bytes queued gives [`QUEUE_DELAY_CAP_MS`]; no bytes queued
/// gives the ring delay whatever the rate.
pub fn queue_delay_ms(ring_delay_ms: u64, queued_bytes: u64, rate_bps: Option<u64>) -> u64 {
    let socket_ms = match (queued_bytes, rate_bps) {
        (0, _) => 0,
        (_, None | Some(0)) => QUEUE_DELAY_CAP_MS,
        (bytes, Some(rate)) => (bytes.saturating_mul(8_000) / rate).min(QUEUE_DELAY_CAP_MS),
    };
    ring_delay_ms
        .saturating_add(socket_ms)
        .min(QUEUE_DELAY_CAP_MS)
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Duration,
    delivered: u64,
    /// Media was waiting at this tick and the previous one: the interval ending here was
    /// limited by the link.
    backlogged: bool,
}

/// What one tick's counters amount to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measurement {
    /// Delivered bytes per second over the window, in bit/s; `None` until the window spans at
    /// least a quarter of its length (after start or a reconnect).
    pub delivery_bps: Option<u64>,
    /// The delivery rate over the trailing backlogged span, bit/s; `None` unless media has
    /// been waiting for at least `link_span`.
    pub link_bps: Option<u64>,
    /// The largest single-tick delivery rate in the window, bit/s: what the link has been
    /// seen to carry in a burst.
    pub peak_bps: Option<u64>,
    /// The standing queue: ring delay plus kernel and backlog bytes at the send rate, less
    /// the base delay, ms.
    pub queue_delay_ms: u64,
    /// Kernel and backlog bytes at the send rate, ms, base included.
    pub socket_delay_ms: u64,
    /// The floor of `socket_delay_ms` over the base window: bytes in flight, not queued.
    pub base_delay_ms: u64,
    /// Kernel unsent plus our own backlog, bytes.
    pub socket_bytes: u64,
    /// No delivery progress for `stall` while bytes wait.
    pub stalled: bool,
    /// The delivered counter moved since the previous tick (or nothing was waiting). A tick
    /// without progress while bytes wait may be the start of a stall: no evidence either way.
    pub progressed: bool,
}

/// A ring holding less media than this (a frame or two) does not disqualify a base sample.
const BASE_RING_MS: u64 = 50;

/// Buckets of the base-delay filter: its minimum is over the last `BASE_BUCKETS` bucket
/// lengths (the base window divided by this).
const BASE_BUCKETS: u32 = 10;

/// The sliding-window meter. Sans-IO: time comes in as an argument.
#[derive(Debug, Clone)]
pub struct Measure {
    window: Duration,
    link_span: Duration,
    stall: Duration,
    busy_delay_ms: u64,
    base_bucket: Duration,
    /// `(bucket start, minimum socket delay in it)`, oldest first, at most `BASE_BUCKETS`.
    base: VecDeque<(Duration, u64)>,
    samples: VecDeque<Sample>,
    /// When the delivered counter last moved (or the meter started).
    last_progress: Option<Duration>,
    last_busy: bool,
}

impl Measure {
    /// A meter with `cfg`'s window (`rate_window_ms`), link span (`link_span_ms`), stall time
    /// (`stall_ms`), base window (`base_window_s`) and "media is waiting" threshold
    /// (`clear_delay_ms`).
    pub fn new(cfg: &AdaptConfig) -> Self {
        Self {
            window: Duration::from_millis(cfg.rate_window_ms),
            link_span: Duration::from_millis(cfg.link_span_ms),
            stall: Duration::from_millis(cfg.stall_ms),
            busy_delay_ms: cfg.clear_delay_ms,
            base_bucket: (Duration::from_secs(cfg.base_window_s) / BASE_BUCKETS)
                .max(Duration::from_millis(1)),
            base: VecDeque::with_capacity(BASE_BUCKETS as usize + 1),
            samples: VecDeque::with_capacity(MAX_SAMPLES),
            last_progress: None,
            last_busy: false,
        }
    }

    /// Forgets every sample: after a reconnect the old connection's rate says little about
    /// the new one, and its counters may not continue. The base delay goes too: the new
    /// connection may take another path.
    pub fn reset(&mut self) {
        self.samples.clear();
        self.base.clear();
        self.last_progress = None;
        self.last_busy = false;
    }

    /// Takes `socket_ms` into the base filter and returns the filter's minimum.
    fn base_delay(&mut self, now: Duration, socket_ms: u64) -> u64 {
        match self.base.back_mut() {
            Some((start, min)) if now.saturating_sub(*start) < self.base_bucket => {
                *min = (*min).min(socket_ms);
            }
            _ => {
                if self.base.len() == BASE_BUCKETS as usize {
                    self.base.pop_front();
                }
                self.base.push_back((now, socket_ms));
            }
        }
        self.base.iter().map(|&(_, m)| m).min().unwrap_or(0)
    }

    /// The delivered-bytes counter the meter follows: the kernel's when it moves, else the
    /// peer's RTMP acknowledgements (coarser: every window size).
    fn delivered(stats: &LinkStats) -> u64 {
        stats.bytes_delivered_total.max(stats.bytes_acked_total)
    }

    /// Takes one tick's counters. `now` is monotonic; a `now` that goes backwards or a counter
    /// that shrinks resets the window instead of producing nonsense.
    pub fn update(&mut self, now: Duration, stats: &LinkStats) -> Measurement {
        let delivered = Self::delivered(stats);
        if let Some(last) = self.samples.back() {
            if now < last.at || delivered < last.delivered {
                self.reset();
            }
        }
        let moved = match self.samples.back() {
            Some(last) => delivered != last.delivered,
            None => true,
        };
        if moved {
            self.last_progress = Some(now);
        }
        let socket_bytes = stats
            .kernel_unsent_bytes
            .saturating_add(stats.backlog_bytes);

        // The socket bytes leave at the window rate up to this tick, or at the link rate when
        // media has been waiting and the link measured lower: the window still remembers the
        // link before it fell, and would make a fresh backlog look short.
        let delivery_bps = self.rate_to(now, delivered);
        let delivery_bps = match (delivery_bps, self.link_rate()) {
            (Some(w), Some(l)) => Some(w.min(l)),
            (w, _) => w,
        };
        let rate_for_delay = delivery_bps.filter(|&r| r > 0).or_else(|| {
            // No measurement yet: the bytes leave at about the rate they are produced.
            let nominal = u64::from(stats.current_target_kbps) + u64::from(stats.audio_kbps);
            Some(nominal * 1000).filter(|&r| r > 0)
        });
        let waiting = socket_bytes > 0 || stats.ring_delay_ms > 0;
        let stalled = waiting
            && self
                .last_progress
                .is_some_and(|p| now.saturating_sub(p) >= self.stall);
        let rate_for_delay = if stalled { Some(0) } else { rate_for_delay };
        let socket_delay_ms = queue_delay_ms(0, socket_bytes, rate_for_delay);
        // Only a kernel that holds everything waiting can show the floor: with media queued
        // in the ring or our backlog, the kernel is full, and what it holds is queue.
        let base_sample =
            !stalled && stats.ring_delay_ms < BASE_RING_MS && stats.backlog_bytes == 0;
        let base_delay_ms = if base_sample {
            self.base_delay(now, socket_delay_ms)
        } else {
            self.base.iter().map(|&(_, m)| m).min().unwrap_or(0)
        };
        let queue_delay_ms = if stalled {
            QUEUE_DELAY_CAP_MS
        } else {
            stats
                .ring_delay_ms
                .saturating_add(socket_delay_ms - base_delay_ms.min(socket_delay_ms))
                .min(QUEUE_DELAY_CAP_MS)
        };

        let busy = queue_delay_ms >= self.busy_delay_ms;
        self.push(Sample {
            at: now,
            delivered,
            backlogged: busy && self.last_busy,
        });
        self.last_busy = busy;

        Measurement {
            delivery_bps: self.window_rate(),
            link_bps: self.link_rate(),
            peak_bps: self.peak_rate(),
            queue_delay_ms,
            socket_delay_ms,
            base_delay_ms,
            socket_bytes,
            stalled,
            progressed: moved || !waiting,
        }
    }

    fn push(&mut self, s: Sample) {
        // Ticks closer than the window allows to keep replace the newest sample, so a
        // broadcast ticking far too often still gets the full window.
        let spacing = self.window / (MAX_SAMPLES as u32 / 2);
        let len = self.samples.len();
        if len >= 2 && s.at.saturating_sub(self.samples[len - 2].at) < spacing {
            self.samples[len - 1] = s;
        } else {
            if len == MAX_SAMPLES {
                self.samples.pop_front();
            }
            self.samples.push_back(s);
        }
        // Keep one sample at or before the window start so the window is spanned fully.
        while self.samples.len() >= 2 && s.at.saturating_sub(self.samples[1].at) >= self.window {
            self.samples.pop_front();
        }
    }

    /// The rate from the oldest sample to (`now`, `delivered`).
    fn rate_to(&self, now: Duration, delivered: u64) -> Option<u64> {
        let first = self.samples.front()?;
        let span = now.saturating_sub(first.at);
        if span < self.window / 4 || span.is_zero() {
            return None;
        }
        Some(bits_per_second(delivered - first.delivered, span))
    }

    /// Delivered bit/s over the window (`None` until it spans a quarter of its length).
    pub fn window_rate(&self) -> Option<u64> {
        let last = self.samples.back()?;
        self.rate_to(last.at, last.delivered)
    }

    /// The largest delivery rate between two consecutive samples in the window, over
    /// intervals of at least 50 ms (shorter ones turn one early acknowledgement into a peak).
    pub fn peak_rate(&self) -> Option<u64> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .filter_map(|(a, b)| {
                let span = b.at.saturating_sub(a.at);
                (span >= Duration::from_millis(50))
                    .then(|| bits_per_second(b.delivered - a.delivered, span))
            })
            .max()
    }

    /// Delivered bit/s over the trailing `link_span` of backlogged samples, if media has been
    /// waiting that long. Only the trailing span: a backlogged sender is link-limited, so
    /// there is no app-limited bias to average away, and a short span sees a link that just
    /// changed while the window still remembers the old one.
    pub fn link_rate(&self) -> Option<u64> {
        let last = self.samples.back()?;
        if !last.backlogged {
            return None;
        }
        // Walk back over backlogged intervals until the span is covered. A sample's interval
        // ends at it, so the span starts at the sample before the oldest backlogged one.
        let mut first = None;
        for (i, s) in self.samples.iter().enumerate().rev().skip(1) {
            first = Some(*s);
            if last.at.saturating_sub(s.at) >= self.link_span || !self.samples[i + 1].backlogged {
                break;
            }
        }
        let first = first?;
        let span = last.at.saturating_sub(first.at);
        if span < self.link_span || span.is_zero() {
            return None;
        }
        Some(bits_per_second(last.delivered - first.delivered, span))
    }
}

fn bits_per_second(bytes: u64, span: Duration) -> u64 {
    let micros = span.as_micros().max(1);
    (u128::from(bytes) * 8 * 1_000_000 / micros).min(u128::from(u64::MAX)) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    fn cfg() -> AdaptConfig {
        AdaptConfig {
            rate_window_ms: 2000,
            link_span_ms: 500,
            stall_ms: 300,
            clear_delay_ms: 150,
            base_window_s: 10,
            ..AdaptConfig::default()
        }
    }

    fn meter() -> Measure {
        Measure::new(&cfg())
    }

    fn stats(delivered: u64) -> LinkStats {
        LinkStats {
            connected: true,
            bytes_delivered_total: delivered,
            bytes_sent_total: delivered,
            current_target_kbps: 1000,
            audio_kbps: 128,
            ..LinkStats::default()
        }
    }

    #[test]
    fn delay_converts_bytes_at_the_rate() {
        // 125 000 bytes at 1 Mbit/s is one second.
        assert_eq!(queue_delay_ms(200, 125_000, Some(1_000_000)), 1200);
        assert_eq!(queue_delay_ms(0, 0, Some(1_000_000)), 0);
    }

    #[test]
    fn delay_at_zero_rate_is_capped_not_a_division_by_zero() {
        assert_eq!(queue_delay_ms(100, 1, Some(0)), QUEUE_DELAY_CAP_MS);
        assert_eq!(queue_delay_ms(100, 1, None), QUEUE_DELAY_CAP_MS);
        // Nothing in the socket: only the ring counts, whatever the rate.
        assert_eq!(queue_delay_ms(100, 0, Some(0)), 100);
        assert_eq!(
            queue_delay_ms(u64::MAX, u64::MAX, Some(1)),
            QUEUE_DELAY_CAP_MS
        );
    }

    #[test]
    fn rate_over_the_window() {
        let mut m = meter();
        // 1 Mbit/s = 12 500 bytes per 100 ms.
        let mut out = Measurement::default();
        for i in 0..=30u64 {
            out = m.update(ms(i * 100), &stats(i * 12_500));
        }
        assert_eq!(out.delivery_bps, Some(1_000_000));
        // The rate then halves: after a full window the meter shows only the new rate.
        let base = 30 * 12_500;
        for i in 1..=20u64 {
            out = m.update(ms(3000 + i * 100), &stats(base + i * 6_250));
        }
        assert_eq!(out.delivery_bps, Some(500_000));
    }

    #[test]
    fn no_rate_until_a_quarter_window() {
        let mut m = meter();
        assert_eq!(m.update(ms(0), &stats(0)).delivery_bps, None);
        assert_eq!(m.update(ms(400), &stats(50_000)).delivery_bps, None);
        assert_eq!(
            m.update(ms(500), &stats(62_500)).delivery_bps,
            Some(1_000_000)
        );
    }

    #[test]
    fn unknown_rate_falls_back_to_the_nominal_rate() {
        let mut m = meter();
        let s = LinkStats {
            kernel_unsent_bytes: 14_100, // 1128 kbit/s for 100 ms
            ..stats(0)
        };
        let out = m.update(ms(0), &s);
        assert_eq!(out.socket_delay_ms, 100);
        // The first sample is its own base: in flight, not queued.
        assert_eq!(out.base_delay_ms, 100);
        assert_eq!(out.queue_delay_ms, 0);
    }

    #[test]
    fn base_delay_is_subtracted_and_expires() {
        let mut m = meter();
        // 1 Mbit/s with 5000 bytes always in flight: 40 ms of round trip, no queue.
        let mut d = 0;
        let mut at = |m: &mut Measure, t: u64, in_kernel: u64, ring: u64| {
            d += 12_500;
            let s = LinkStats {
                kernel_unsent_bytes: in_kernel,
                ring_delay_ms: ring,
                audio_kbps: 0, // the nominal rate before the first measurement is exact
                ..stats(d)
            };
            m.update(ms(t), &s)
        };
        let mut out = Measurement::default();
        for i in 0..30 {
            out = at(&mut m, i * 100, 5_000, 0);
        }
        assert_eq!(
            (out.socket_delay_ms, out.base_delay_ms, out.queue_delay_ms),
            (40, 40, 0)
        );
        // A standing queue of 100 ms in the kernel and 50 ms in the ring on top.
        out = at(&mut m, 3000, 17_500, 50);
        assert_eq!((out.base_delay_ms, out.queue_delay_ms), (40, 150));
        // A queue that never drains becomes the base after the base window (10 s here).
        for i in 31..=140 {
            out = at(&mut m, i * 100, 17_500, 0);
        }
        assert_eq!((out.base_delay_ms, out.queue_delay_ms), (140, 0));
    }

    #[test]
    fn stall_needs_waiting_bytes_and_no_progress() {
        let mut m = meter();
        let waiting = |d| LinkStats {
            kernel_unsent_bytes: 10_000,
            ..stats(d)
        };
        assert!(!m.update(ms(0), &waiting(1000)).stalled);
        assert!(!m.update(ms(200), &waiting(1000)).stalled);
        let out = m.update(ms(300), &waiting(1000));
        assert!(out.stalled);
        assert_eq!(out.queue_delay_ms, QUEUE_DELAY_CAP_MS);
        // Progress ends it.
        assert!(!m.update(ms(400), &waiting(2000)).stalled);
        // Nothing waiting is idle, not stalled.
        let mut m = meter();
        m.update(ms(0), &stats(5));
        assert!(!m.update(ms(1000), &stats(5)).stalled);
    }

    #[test]
    fn link_rate_only_over_the_backlogged_span() {
        let mut m = meter();
        // 2 s at 2 Mbit/s with an empty queue: no link measurement (app-limited).
        let mut d = 0;
        for i in 0..20u64 {
            d += 25_000;
            let out = m.update(ms(i * 100), &stats(d));
            assert_eq!(out.link_bps, None);
        }
        // Then 1 Mbit/s with 100 kB waiting in the kernel (800 ms): after the minimum span the
        // link rate is exactly the new rate while the window still mixes both.
        let mut out = Measurement::default();
        for i in 20..28u64 {
            d += 12_500;
            let s = LinkStats {
                kernel_unsent_bytes: 100_000,
                ..stats(d)
            };
            out = m.update(ms(i * 100), &s);
        }
        assert_eq!(out.link_bps, Some(1_000_000));
        assert!(out.delivery_bps.unwrap() > 1_200_000, "{out:?}");
    }

    #[test]
    fn peak_is_the_fastest_tick() {
        let mut m = meter();
        let mut d = 0;
        let mut out = Measurement::default();
        // 1 Mbit/s, with one tick in which a keyframe burst left at 3 Mbit/s.
        for i in 0..20u64 {
            d += if i == 10 { 37_500 } else { 12_500 };
            out = m.update(ms(i * 100), &stats(d));
        }
        assert_eq!(out.peak_bps, Some(3_000_000));
        // Two seconds later the burst has left the window.
        for i in 20..41u64 {
            d += 12_500;
            out = m.update(ms(i * 100), &stats(d));
        }
        assert_eq!(out.peak_bps, Some(1_000_000));
    }

    #[test]
    fn counter_going_backwards_resets() {
        let mut m = meter();
        for i in 0..10u64 {
            m.update(ms(i * 100), &stats(i * 10_000));
        }
        let out = m.update(ms(1000), &stats(5));
        assert_eq!(out.delivery_bps, None);
    }

    #[test]
    fn rtmp_acks_stand_in_for_the_kernel_counter() {
        let mut m = meter();
        let mut out = Measurement::default();
        for i in 0..=10u64 {
            let s = LinkStats {
                bytes_delivered_total: 0,
                bytes_acked_total: i * 12_500,
                ..stats(0)
            };
            out = m.update(ms(i * 100), &s);
        }
        assert_eq!(out.delivery_bps, Some(1_000_000));
    }

    #[test]
    fn memory_is_bounded() {
        let mut m = Measure::new(&AdaptConfig {
            rate_window_ms: 10_000,
            ..cfg()
        });
        for i in 0..10_000u64 {
            m.update(ms(i), &stats(i));
        }
        assert!(m.samples.len() <= MAX_SAMPLES);
        assert!(m.window_rate().is_some());
    }
}
