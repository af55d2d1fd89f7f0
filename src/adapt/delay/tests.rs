//! Unit tests of the delay-based controller.

use super::*;
use proptest::prelude::*;

/// A crude link for unit tests: the encoder produces the target plus audio, with a
/// keyframe burst every 2 s; the peer acknowledges up to `link_kbps`; the rest piles up in
/// the kernel (5000 bytes are always in flight).
struct Feed {
    now: Duration,
    tick: u64,
    delivered: u64,
    queued: u64,
}

impl Feed {
    fn new() -> Self {
        Self {
            now: Duration::ZERO,
            tick: 0,
            delivered: 0,
            queued: 5_000,
        }
    }

    /// Runs `secs` of 100 ms ticks; returns every target the controller asked for.
    fn run(
        &mut self,
        ctl: &mut DelayController,
        secs: u64,
        link_kbps: u64,
        connected: bool,
    ) -> Vec<Target> {
        let mut out = Vec::new();
        for _ in 0..secs * 10 {
            self.now += Duration::from_millis(100);
            self.tick += 1;
            // 20 ticks per GOP: one at 3×, nineteen at 0.9× the average.
            let shape = if self.tick % 20 == 0 { 30 } else { 9 };
            let produced = (u64::from(ctl.target().video_kbps) + 128) * 100 / 8 * shape / 10;
            let capacity = link_kbps * 100 / 8;
            if connected {
                self.queued += produced;
                let sent = self.queued.saturating_sub(5_000).min(capacity);
                self.queued -= sent;
                self.delivered += sent;
            }
            let stats = LinkStats {
                connected,
                kernel_unsent_bytes: if connected { self.queued } else { 0 },
                bytes_delivered_total: self.delivered,
                bytes_sent_total: self.delivered + self.queued,
                current_target_kbps: ctl.target().video_kbps,
                audio_kbps: 128,
                ..LinkStats::default()
            };
            out.extend(ctl.on_tick(self.now, &stats));
        }
        out
    }
}

fn controller() -> DelayController {
    DelayController::new(AdaptConfig::default(), 2500)
}

#[test]
fn starts_at_the_configured_rate_and_stays_with_room() {
    let mut c = controller();
    let mut f = Feed::new();
    assert!(f.run(&mut c, 20, 4000, true).is_empty());
    assert_eq!(c.target(), Target::kbps(2500));
    assert_eq!(c.stats().state, AdaptState::Steady);
}

#[test]
fn cuts_to_the_measured_link_rate() {
    let mut c = controller();
    let mut f = Feed::new();
    f.run(&mut c, 5, 4000, true);
    let changes = f.run(&mut c, 5, 1000, true);
    let lowest = changes.iter().map(|t| t.video_kbps).min().unwrap();
    // (1000 − 128) × 85 %, less the drain: at or below 741, above the floor.
    assert!((301..=741).contains(&lowest), "{changes:?}");
    let s = c.stats();
    assert!(s.cuts >= 1);
    assert_eq!(s.ceiling_kbps, Some(872));
    // And it settles under the link instead of oscillating.
    let later = f.run(&mut c, 60, 1000, true);
    assert!(c.target().video_kbps + 128 <= 1000, "{:?}", c.target());
    let downs = later
        .windows(2)
        .filter(|w| w[1].video_kbps < w[0].video_kbps)
        .count();
    assert!(downs <= 1, "{later:?}");
}

#[test]
fn holds_while_disconnected_and_resumes_from_the_last_target() {
    let mut c = controller();
    let mut f = Feed::new();
    f.run(&mut c, 5, 4000, true);
    f.run(&mut c, 10, 1500, true);
    let held = c.target();
    assert!(held.video_kbps < 2500);
    // Twenty seconds without a connection: no change at all, state holding.
    assert!(f.run(&mut c, 20, 0, false).is_empty());
    assert_eq!(c.stats().state, AdaptState::Holding);
    assert_eq!(c.target(), held);
    // Reconnected: the first tick changes nothing; it continues from the held target.
    f.queued = 5_000;
    let first = f.run(&mut c, 1, 4000, true);
    assert!(first.is_empty(), "{first:?}");
    assert_eq!(c.target(), held);
    // And climbs back with the room the link shows.
    f.run(&mut c, 30, 4000, true);
    assert_eq!(c.target().video_kbps, 2500);
}

#[test]
fn a_stall_holds_instead_of_cutting_on_a_zero_rate() {
    let mut c = controller();
    let mut f = Feed::new();
    f.run(&mut c, 5, 4000, true);
    // Connected, bytes waiting, nothing acknowledged.
    let changes = f.run(&mut c, 8, 0, true);
    assert!(changes.is_empty(), "{changes:?}");
    assert_eq!(c.stats().state, AdaptState::Holding);
    assert_eq!(c.target().video_kbps, 2500);
}

#[test]
fn disabled_never_changes_anything() {
    let mut c = DelayController::new(
        AdaptConfig {
            enabled: false,
            ..AdaptConfig::default()
        },
        2500,
    );
    let mut f = Feed::new();
    assert!(f.run(&mut c, 10, 500, true).is_empty());
}

#[test]
fn steps_down_at_the_floor_and_back_up() {
    let mut c = DelayController::new(
        AdaptConfig {
            min_kbps: 400,
            step_down: true,
            step_down_after_s: 3,
            ..AdaptConfig::default()
        },
        1500,
    );
    let mut f = Feed::new();
    f.run(&mut c, 5, 3000, true);
    // 450 kbit/s cannot carry 400 + 128: frame rate halved, and the floor with it.
    f.run(&mut c, 30, 450, true);
    let t = c.target();
    assert_eq!((t.fps_divisor, t.scale_divisor), (2, 1), "{t:?}");
    assert!(t.video_kbps + 128 <= 450, "{t:?}");
    f.run(&mut c, 40, 3000, true);
    assert_eq!(c.target(), Target::kbps(1500));
}

#[test]
fn state_labels() {
    let labels: Vec<&str> = [
        AdaptState::Steady,
        AdaptState::Cutting,
        AdaptState::Probing,
        AdaptState::Holding,
    ]
    .iter()
    .map(|s| s.as_str())
    .collect();
    assert_eq!(labels, ["steady", "cutting", "probing", "holding"]);
}

proptest! {
    /// Whatever the counters say (even nonsense: counters going backwards, time jumping),
    /// the target stays within [floor, configured], and nothing changes while
    /// disconnected.
    #[test]
    fn target_stays_in_bounds(
        ticks in proptest::collection::vec(
            (any::<bool>(), 0u64..2_000_000, 0u64..300_000, 0u64..5_000, 0u64..200_000, 1u64..400),
            1..300,
        )
    ) {
        let mut c = DelayController::new(AdaptConfig::default(), 2500);
        let mut now = Duration::ZERO;
        let mut delivered = 0u64;
        for (connected, step, kernel, ring_ms, backlog, dt) in ticks {
            now += Duration::from_millis(dt);
            delivered = delivered.wrapping_add(step) % 50_000_000;
            let before = c.target();
            let s = LinkStats {
                connected,
                ring_delay_ms: ring_ms,
                kernel_unsent_bytes: kernel,
                backlog_bytes: backlog,
                bytes_delivered_total: delivered,
                current_target_kbps: before.video_kbps,
                audio_kbps: 128,
                ..LinkStats::default()
            };
            let out = c.on_tick(now, &s);
            let t = c.target();
            prop_assert!((300..=2500).contains(&t.video_kbps), "{t:?}");
            if !connected {
                prop_assert_eq!(out, None);
                prop_assert_eq!(t, before);
            }
            if let Some(o) = out {
                prop_assert_eq!(o, t);
            }
        }
    }
}
