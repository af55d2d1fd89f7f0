//! Video bitrate adaptation: a classroom uplink that falls from 5 to 1 Mbit/s must cost
//! picture quality, never the broadcast and never seconds of delay.
//!
//! This module owns the *decision* only. It is sans-IO like quinn's congestion controllers:
//! the broadcast fills a [`LinkStats`] from the ring and the sender every tick (100 ms is
//! what the tests use), calls [`Controller::on_tick`] with a monotonic `now`, and hands a
//! returned [`Target`] to `PipelineControl::set_video_target`. Nothing here reads a clock,
//! touches a socket or sleeps, so every behaviour is tested with injected time
//! (`tests/adapt_scenarios.rs` drives it through a link simulator).
//!
//! # Layout
//! - `config`: [`AdaptConfig`], the `[adapt]` table: every parameter with its range.
//! - `measure`: [`Measure`], counters → delivery rate, link rate and queue delay.
//! - `delay`: [`DelayController`], the default algorithm.
//!
//! # The signal
//! Congestion shows as *delay*: media waiting to leave. Three places hold it: the ring
//! (which knows its media duration), our serialized backlog, and the kernel's send buffer
//! (`SIOCOUTQ`, bounded to 256 KiB by the driver). At 1 Mbit/s those 256 KiB alone are two
//! seconds, which a controller that looks only at its own queue (OBS) does not see. So the
//! queue delay is `ring delay + (kernel unsent + backlog) / delivery rate − base`, where
//! - the delivery rate counts bytes the peer's TCP *acknowledged* over a sliding window
//!   (RTMP acknowledgements where the kernel counter is missing); while media waits it is
//!   the link's capacity, measured over a short trailing span: a number to cut *to*;
//! - the base is the smallest kernel delay seen over minutes (LEDBAT's base delay, BBR's
//!   min RTT): `SIOCOUTQ` counts bytes in flight too, a round trip's worth at any rate;
//! - the peak single-tick delivery rate shows room: a keyframe leaves as fast as the link
//!   allows, so with headroom the peak is well above the send rate, at the limit it is not.
//!   Unless a token-bucket shaper sits on the path (`tc tbf`, many ISPs' policers): capacity
//!   left unused accumulates in its bucket and the next keyframe leaves at line rate, so the
//!   peak shows room that is not there. The controller learns that (below).
//!
//! The sender refreshes these counters every 50 ms (`rtmp::sender`): counters older than
//! `stall_ms` would read as a stalled link.
//!
//! # The algorithm ([`DelayController`])
//! - **Cut fast, to a measured rate.** When the queue delay passes `cut_delay_ms`, cut to
//!   `(link rate − audio) × safety`, deeper by what drains the standing queue within
//!   `drain_ms`; never below `min_kbps`. The first cut of an episode is at least the safety
//!   factor (the rate may still remember the link before it fell). Further cuts wait
//!   `cut_interval_ms` and the delay must still grow (a queue that drains is left to drain),
//!   unless the measured rate asks for far less: a link that just fell is followed tick by
//!   tick. Reference points: OBS cuts to its send-rate estimate once its own queue holds
//!   200 ms; belacoder cuts 100 kbit/s + 10 % at most every 250 ms (and to its minimum when
//!   the RTT explodes). One measured cut lands where several of belacoder's would, and unlike
//!   OBS (which aims at 100 % of its estimate) it leaves room for the queue to drain.
//! - **Remember where congestion appeared** (CUBIC's `w_max`, here the *ceiling*): the target
//!   at the start of each episode, lowered to the link's measured video rate while it is
//!   measured. A link measured well above the ceiling (a queue draining after a brief dip)
//!   replaces it.
//! - **Raise fast far below the ceiling, carefully near it, past it only on evidence.** With
//!   the queue clear (below `clear_delay_ms`) for `raise_interval_ms`: below the knee
//!   (`ceiling − near_pct`) close at least half the gap per interval; between the knee and
//!   half the band below the ceiling, additive probes of `probe_pct` of the ceiling every
//!   `probe_interval_ms`; there it stays, unless the peak delivery rate shows the link
//!   carries more than `ceiling + near_pct`: then the ceiling is passed and raises are
//!   multiplicative again, each as far as the peak (less the safety margin) reaches, at least
//!   `fast_raise_pct`, at most a doubling, up to the configured rate. Without a ceiling the
//!   same evidence rule applies; without evidence raises are additive probes.
//! - **Distrust bursts once they have lied.** Congestion again after a ceiling was passed on
//!   burst evidence means the bursts left faster than the link carries (a shaper's bucket).
//!   From then on a ceiling is passed only by a *ceiling test*: within the band, after
//!   the (doubled) probe interval, the target goes to `ceiling + 2 × near_pct` and must keep
//!   the queue clear for `ceiling_test_ms` with the target exercised. A bucket hides an
//!   excess for seconds at most (32 KiB at 20 % of 1 Mbit/s: 1.3 s), so the queue shows or it
//!   does not. A failed test goes back to where it started and doubles the next wait; a
//!   passed one is followed by further tests, each step twice the last (slow start: 40 %,
//!   80 %, at most a doubling), so a lifted link is found within a few tests. Tests stay in use until
//!   the ceiling is forgotten. The ceiling noted at an episode's start is the lower of the
//!   short link measurement and the window's delivery rate, and a link measured above the
//!   ceiling replaces it only after `rate_window_ms / 2` of such measurements (their
//!   lowest): loss recovery acknowledges a burst of bytes at once. OBS adds 10 %
//!   of the configured rate every 4 s and belacoder 30 kbit/s + 1/30 every 500 ms wherever
//!   they are, so after a deep cut both take tens of seconds to come back, and both keep
//!   bumping into the same limit.
//! - **No oscillation.** Between `clear_delay_ms` and `cut_delay_ms` nothing changes. A link
//!   that is exactly full shows no peak above the ceiling, so the target stays just under it.
//!   Each time congestion comes back near the same ceiling, the first probe after the cut
//!   waits twice as long (up to `probe_interval_max_ms`). After `ceiling_forget_s` without
//!   congestion the ceiling goes (the one periodic re-probe).
//! - **Hold when there is nothing to measure.** Disconnected, or connected with no delivery
//!   progress for `stall_ms` while bytes wait (a dead link before the stall detector
//!   reconnects), or a tick without any progress: the target stays. A rate of zero says
//!   nothing about capacity, and ratcheting to the floor during a 20 s outage would cost a
//!   climb back afterwards while gaining nothing: no bytes leave either way, and the ring's
//!   GOP-aware drops bound the delay. After a reconnect the meter starts afresh and the last
//!   target is kept, not the configured one.
//! - **Step-downs at the floor** (`step_down`, off by default): congested at the floor for
//!   `step_down_after_s` with the queue not draining suggests halving the frame rate, then the
//!   resolution ([`Target::fps_divisor`], [`Target::scale_divisor`]); each step also halves
//!   the floor, so the bitrate can follow the link further down at the same bits per frame.
//!   They are undone, resolution first, once the target is back above `step_up_above_pct` of
//!   the floor.
//! - Dropping is the ring's job, GOP-aware, past [`AdaptConfig::hard_delay_ms`].

mod config;
mod delay;
mod measure;

pub use config::AdaptConfig;
pub use delay::DelayController;
pub use measure::{queue_delay_ms, Measure, Measurement, QUEUE_DELAY_CAP_MS};

use std::time::Duration;

/// What the broadcast knows about the uplink at one tick. Plain data, filled from the ring's
/// and the sender's snapshots by the broadcast's wiring (this module imports neither).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LinkStats {
    /// A session is publishing. While false the controller holds.
    pub connected: bool,
    /// Media duration queued in the ring.
    pub ring_delay_ms: u64,
    /// Bytes queued in the ring.
    pub ring_bytes: u64,
    /// Bytes in the kernel's send queue not yet acknowledged (`SIOCOUTQ`).
    pub kernel_unsent_bytes: u64,
    /// Serialized bytes waiting for socket space in the sender's own queue.
    pub backlog_bytes: u64,
    /// Bytes the kernel accepted, monotonic over all sessions.
    pub bytes_sent_total: u64,
    /// Bytes the peer's TCP acknowledged, monotonic over all sessions (0 where unavailable).
    pub bytes_delivered_total: u64,
    /// Bytes the peer acknowledged with RTMP Acknowledgement messages, monotonic.
    pub bytes_acked_total: u64,
    /// The video bitrate the encoder currently runs at, kbit/s.
    pub current_target_kbps: u32,
    /// The audio bitrate, kbit/s: it shares the link and is never adapted.
    pub audio_kbps: u32,
}

/// What the controller asks of the encoder; the broadcast applies all of it
/// (`PipelineControl::set_video_target`): the bitrate in place where the encoder can (libx264),
/// by a rate-limited reopen at a keyframe otherwise (`h264_v4l2m2m`), and the divisors by a
/// reopen at the smaller frame rate or size. 1 means "as configured".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    /// Video bitrate, kbit/s.
    pub video_kbps: u32,
    /// Divide the frame rate by this (1 or 2).
    pub fps_divisor: u8,
    /// Divide width and height by this (1 or 2).
    pub scale_divisor: u8,
}

impl Target {
    /// The configured picture at `video_kbps`.
    pub fn kbps(video_kbps: u32) -> Self {
        Self {
            video_kbps,
            fps_divisor: 1,
            scale_divisor: 1,
        }
    }
}

/// What the controller is doing, for the status line and a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AdaptState {
    /// At the configured rate with nothing to do.
    #[default]
    Steady,
    /// Congested: cut, waiting for the queue to drain.
    Cutting,
    /// Below the configured rate, raising while the queue stays clear.
    Probing,
    /// Disconnected or stalled: nothing to measure, the target is held.
    Holding,
}

impl AdaptState {
    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Steady => "steady",
            Self::Cutting => "cutting",
            Self::Probing => "probing",
            Self::Holding => "holding",
        }
    }
}

impl std::fmt::Display for AdaptState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot for `/metrics` and the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AdaptStats {
    /// The current video target, kbit/s.
    pub target_kbps: u32,
    /// Frame-rate and resolution divisors in force (1 = none).
    pub fps_divisor: u8,
    pub scale_divisor: u8,
    /// Delivery rate over the window, kbit/s (`None` while unknown).
    pub send_rate_kbps: Option<u32>,
    /// Link rate measured while media waited, kbit/s (`None` unless backlogged).
    pub link_rate_kbps: Option<u32>,
    /// The last queue-delay estimate, ms.
    pub queue_delay_ms: u64,
    /// The part of `queue_delay_ms` outside the ring: bytes the kernel holds beyond the
    /// path's floor, as time at the delivery rate, ms. 0 while the link is stalled (that
    /// estimate is a cap, not a measurement). The broadcast takes it off the ring's delay
    /// budget so that the hard bound holds for the whole queue, not only the ring's share.
    pub outside_delay_ms: u64,
    /// The remembered rate at which congestion last appeared, kbit/s.
    pub ceiling_kbps: Option<u32>,
    /// Cuts and raises since start (monotonic).
    pub cuts: u64,
    pub raises: u64,
    pub state: AdaptState,
}

/// A bitrate controller: the analogue of quinn's `congestion::Controller`, with the target
/// bitrate in place of the congestion window. Implementations are sans-IO and deterministic:
/// the same `now`s and stats give the same targets.
pub trait Controller: Send {
    /// One tick: `now` is monotonic time since start, `stats` the uplink as the broadcast
    /// sees it. Returns the new target when it changed, `None` otherwise.
    fn on_tick(&mut self, now: Duration, stats: &LinkStats) -> Option<Target>;
    /// The target in force.
    fn target(&self) -> Target;
    /// Counters and state for metrics.
    fn stats(&self) -> AdaptStats;
}
