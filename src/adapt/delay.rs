//! The default controller: cut to the measured link rate when the queue delay passes a
//! threshold, remember the rate at which congestion appeared, raise multiplicatively far below
//! it and probe additively near it. The module docs of [`crate::adapt`] say why.

use super::measure::{Measure, Measurement};
use super::{AdaptConfig, AdaptState, AdaptStats, Controller, LinkStats, Target};
use std::time::Duration;
use steps::Steps;

mod steps;

/// Where the controller is. Each variant owns the timers that only mean something in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// At the configured rate; nothing to do until congestion.
    Steady,
    /// Congested. `last_cut` and `delay_at_cut` gate the next cut: at least `cut_interval`
    /// later (unless the measured rate asks for far less) and only if the delay grew
    /// meanwhile. `cut` says whether this episode has cut at all (the ceiling is noted at its
    /// first cut).
    Cutting {
        last_cut: Duration,
        delay_at_cut: u64,
        cut: bool,
    },
    /// Below the configured rate, raising while the queue stays clear.
    Raising(Raising),
    /// Disconnected or stalled since `since`.
    Holding { since: Duration },
}

/// The timers of [`Phase::Raising`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Raising {
    /// When the queue last became clear: raises need a full `raise_interval` of it.
    clear_since: Option<Duration>,
    /// The last raise (or the start of the phase): spaces raises.
    last_raise: Option<Duration>,
    /// Probes since the last cut: the first one waits longer when the ceiling is confirmed.
    probes: u32,
    /// A ceiling test under way: the target sits above the ceiling to see whether the link
    /// carries it.
    test: Option<CeilingTest>,
}

/// A ceiling test: since when, and the target to go back to if it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CeilingTest {
    since: Duration,
    from: u32,
}

impl Raising {
    fn starting(now: Duration, clear: bool) -> Self {
        Self {
            clear_since: clear.then_some(now),
            last_raise: Some(now),
            ..Self::default()
        }
    }
}

/// The rate at which congestion last appeared, and how often it has appeared near there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ceiling {
    kbps: u32,
    /// Congestion episodes that started within `near_pct` of this ceiling, in a row.
    confirmations: u32,
    /// The link showed room above it (burst evidence or a ceiling test): raises are free
    /// again, but congestion near it still counts as a confirmation.
    passed: bool,
    /// Passed on burst evidence alone: congestion near it again means bursts overstate
    /// this path's capacity.
    passed_on_burst: bool,
}

/// One raise: where to, how long after the previous raise, and what kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Raise {
    to: u32,
    wait: Duration,
    /// An additive probe (near the ceiling, or without evidence of room).
    probe: bool,
    /// A ceiling test: this raise goes past the ceiling, to be judged after
    /// `ceiling_test_ms`.
    test: bool,
    /// Burst evidence shows room above the ceiling: this raise passes it.
    pass_ceiling: bool,
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct DelayController {
    cfg: AdaptConfig,
    max_kbps: u32,
    measure: Measure,
    target: Target,
    phase: Phase,
    ceiling: Option<Ceiling>,
    /// Congestion came back near a ceiling passed on burst evidence: on this path bursts
    /// leave faster than the link carries (a token-bucket shaper lets a keyframe out at line
    /// rate), so passing a ceiling takes a ceiling test until one passes.
    bursts_mislead: bool,
    /// Ceiling tests passed in a row since the last congestion: each doubles the next step.
    test_passes: u32,
    /// The highest link rate measured in this congestion episode (video kbit/s).
    episode_link: Option<u32>,
    /// The link has been measured above the ceiling since, at least this rate (video kbit/s).
    link_above: Option<(Duration, u32)>,
    last_congestion: Option<Duration>,
    steps: Steps,
    last: Measurement,
    cuts: u64,
    raises: u64,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

fn pct(v: u32, p: u32) -> u32 {
    (u64::from(v) * u64::from(p) / 100) as u32
}

impl DelayController {
    /// A controller for a stream configured at `max_kbps` of video, starting there.
    /// `cfg` should have passed [`AdaptConfig::validate`]; a floor above `max_kbps` is
    /// lowered to it.
    pub fn new(cfg: AdaptConfig, max_kbps: u32) -> Self {
        let max_kbps = max_kbps.max(1);
        let measure = Measure::new(&cfg);
        Self {
            cfg,
            max_kbps,
            measure,
            target: Target::kbps(max_kbps),
            phase: Phase::Steady,
            ceiling: None,
            bursts_mislead: false,
            test_passes: 0,
            episode_link: None,
            link_above: None,
            last_congestion: None,
            steps: Steps::default(),
            last: Measurement::default(),
            cuts: 0,
            raises: 0,
        }
    }

    /// Continues from `t` instead of the configured rate (a reload replaced the controller
    /// mid-broadcast): held until the next tick's measurements, then raising as usual.
    pub fn resume_at(&mut self, t: Target) {
        self.target = Target {
            video_kbps: self.clamp(t.video_kbps),
            ..t
        };
        if self.target.video_kbps < self.max_kbps {
            self.phase = Phase::Holding {
                since: Duration::ZERO,
            };
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &AdaptConfig {
        &self.cfg
    }

    /// The floor in force: `min_kbps`, divided by the step-downs in force.
    fn floor(&self) -> u32 {
        (self.cfg.min_kbps.min(self.max_kbps) >> self.steps.level()).max(1)
    }

    fn clamp(&self, kbps: u32) -> u32 {
        kbps.clamp(self.floor(), self.max_kbps)
    }

    /// The cut the measured rate asks for: `(rate − audio) × safety`, less what it takes to
    /// drain the queue above the clear threshold within `drain_ms`. `None` without a rate.
    fn rate_target(&self, stats: &LinkStats, m: &Measurement) -> Option<u32> {
        let bps = m.link_bps.or(m.delivery_bps)?;
        let video_bps = bps.saturating_sub(u64::from(stats.audio_kbps) * 1000);
        let excess_ms = m.queue_delay_ms.saturating_sub(self.cfg.clear_delay_ms);
        // The bits queued above the clear level, spread over the drain time; never more than
        // half of what the link carries, so a huge queue does not zero the target.
        let drain_bps = (u128::from(bps) * u128::from(excess_ms) / u128::from(self.cfg.drain_ms))
            .min(u128::from(bps / 2)) as u64;
        let want = (video_bps * u64::from(self.cfg.safety_pct) / 100).saturating_sub(drain_bps);
        Some(self.clamp((want / 1000).min(u64::from(u32::MAX)) as u32))
    }

    /// The video rate the measured link carries, kbit/s, if the link has been measured.
    fn link_video_kbps(stats: &LinkStats, m: &Measurement) -> Option<u32> {
        m.link_bps.map(|bps| {
            ((bps / 1000).min(u64::from(u32::MAX)) as u32).saturating_sub(stats.audio_kbps)
        })
    }

    /// A link measured well above the ceiling (while a queue drains after a brief dip, say)
    /// replaces it: the rate at which congestion appeared is no longer what the link carries.
    /// (Measured below it during congestion, it lowers it: see `on_congestion`.)
    ///
    /// Only a link measured above it for `rate_window_ms / 2` on end counts, and the lowest
    /// of those measurements is taken: after a loss, TCP's recovery acknowledges a burst of
    /// bytes at once, which over one short span looks like a link twice as fast.
    fn follow_link(&mut self, now: Duration, stats: &LinkStats, m: &Measurement) {
        let (Some(c), Some(link)) = (&mut self.ceiling, Self::link_video_kbps(stats, m)) else {
            self.link_above = None;
            return;
        };
        if link <= c.kbps.saturating_add(pct(c.kbps, self.cfg.near_pct)) {
            self.link_above = None;
            return;
        }
        let (since, lowest) = *self.link_above.get_or_insert((now, link));
        let lowest = lowest.min(link);
        self.link_above = Some((since, lowest));
        if now.saturating_sub(since) >= ms(self.cfg.rate_window_ms / 2) {
            tracing::debug!(
                ceiling_kbps = c.kbps,
                link_kbps = lowest,
                "link measured above the ceiling"
            );
            *c = Ceiling {
                kbps: lowest,
                confirmations: 0,
                passed: false,
                passed_on_burst: false,
            };
            self.link_above = None;
        }
    }

    /// Notes the rate at which an episode's congestion appeared.
    fn note_ceiling(&mut self, kbps: u32) {
        let near = |c: u32| {
            let band = pct(c, self.cfg.near_pct);
            kbps >= c.saturating_sub(band) && kbps <= c.saturating_add(band)
        };
        // Congestion again after bursts showed room above the ceiling: on a fluid link the
        // raises stop where the bursts stop showing room, below the link; congestion means
        // the bursts left faster than the link carries (or the link fell again, which a
        // ceiling test finds out as well).
        if let Some(c) = self.ceiling.filter(|c| c.passed_on_burst) {
            if !self.bursts_mislead {
                tracing::info!(
                    ceiling_kbps = c.kbps,
                    "bursts overstate this uplink (a token-bucket shaper?): passing the \
                     congestion point now takes a ceiling test"
                );
            }
            self.bursts_mislead = true;
        }
        self.ceiling = Some(match self.ceiling {
            Some(c) if near(c.kbps) => Ceiling {
                kbps,
                confirmations: c.confirmations.saturating_add(1),
                passed: false,
                passed_on_burst: false,
            },
            _ => Ceiling {
                kbps,
                confirmations: 0,
                passed: false,
                passed_on_burst: false,
            },
        });
    }

    fn set_kbps(&mut self, kbps: u32) {
        self.target.video_kbps = kbps;
    }

    fn on_congestion(&mut self, now: Duration, stats: &LinkStats, m: &Measurement) {
        self.last_congestion = Some(now);
        self.test_passes = 0;
        // While media waits the delivery rate is the link's: what congestion appeared at is at
        // most what the link carries. The highest measurement of the episode counts: TCP's
        // loss recovery makes the link look slower for a moment than it is.
        let link = Self::link_video_kbps(stats, m);
        if let Phase::Cutting { cut: true, .. } = self.phase {
            self.episode_link = self.episode_link.max(link);
            if let (Some(c), Some(link)) = (&mut self.ceiling, self.episode_link) {
                c.kbps = c.kbps.min(link.max(1));
            }
        } else {
            self.episode_link = link;
        }
        let delay = m.queue_delay_ms;
        let cur = self.target.video_kbps;
        let backoff = self.clamp(pct(cur, self.cfg.safety_pct));
        let want = self.rate_target(stats, m);
        // The measured rate asks for much less than the target: not estimate noise but a link
        // that just fell. Such a cut does not wait for `cut_interval`.
        let deep = want.is_some_and(|w| w < backoff);
        let (prev_cut, cut_before) = match self.phase {
            Phase::Cutting {
                last_cut,
                delay_at_cut,
                cut,
            } => {
                if !deep && now.saturating_sub(last_cut) < ms(self.cfg.cut_interval_ms) {
                    return;
                }
                (Some(delay_at_cut), cut)
            }
            _ => (None, false),
        };
        // Growing by more than noise and the encoder's lag after the last cut explain.
        let growing = prev_cut.is_some_and(|d| delay > d + (d / 4).max(50));
        let new = match want {
            // The first cut of an episode is at least the backoff: the rate estimate may still
            // remember the link before it fell.
            Some(w) if prev_cut.is_none() => w.min(backoff),
            // Later, only a clear difference is worth a change (hysteresis against noise).
            Some(w) if w < cur.saturating_sub(pct(cur, 3)) => w,
            // The estimate lags (or is missing) but the queue keeps growing: back off.
            _ if growing || prev_cut.is_none() => backoff,
            _ => cur,
        };
        if new < cur {
            if !cut_before {
                // The lower of the link rate (a short span: a shaper's bucket or a burst of
                // late acknowledgements can inflate it) and the window's delivery rate.
                let window = m.delivery_bps.map(|bps| {
                    ((bps / 1000).min(u64::from(u32::MAX)) as u32).saturating_sub(stats.audio_kbps)
                });
                let at = match (Self::link_video_kbps(stats, m), window) {
                    (Some(l), Some(w)) => l.min(w).clamp(1, cur),
                    (Some(l), None) => l.clamp(1, cur),
                    _ => cur,
                };
                self.note_ceiling(at);
                tracing::info!(
                    from_kbps = cur,
                    to_kbps = new,
                    queue_delay_ms = delay,
                    link_kbps = m.link_bps.map(|b| b / 1000),
                    "uplink congested: cutting the video bitrate"
                );
            } else {
                tracing::debug!(
                    from_kbps = cur,
                    to_kbps = new,
                    queue_delay_ms = delay,
                    "cut"
                );
            }
            self.set_kbps(new);
            self.cuts += 1;
            self.phase = Phase::Cutting {
                last_cut: now,
                delay_at_cut: delay,
                cut: true,
            };
        } else if prev_cut.is_none() {
            // Congested but the rate says the target fits: watch whether the queue grows.
            self.phase = Phase::Cutting {
                last_cut: now,
                delay_at_cut: delay,
                cut: false,
            };
        } else if let Phase::Cutting {
            last_cut,
            delay_at_cut,
            ..
        } = &mut self.phase
        {
            // Re-arm the growth check from here, so a slowly draining queue is not cut again.
            *last_cut = now;
            *delay_at_cut = delay;
        }
    }

    /// The next raise from `cur`, or `None` to stay (at the configured rate, or at a ceiling
    /// the link has shown no room above).
    fn next_raise(
        &self,
        cur: u32,
        m: &Measurement,
        stats: &LinkStats,
        r: &Raising,
    ) -> Option<Raise> {
        if cur >= self.max_kbps {
            return None;
        }
        let fast_wait = ms(self.cfg.raise_interval_ms);
        let probe_wait = ms(self.cfg.probe_interval_ms);
        let audio = u64::from(stats.audio_kbps);
        let exercised = self.exercised(cur, stats, m);
        // What the link has been seen to carry in a burst, as video: evidence of room above
        // the target. (Only while the target is exercised: otherwise bursts are small.)
        let peak = m.peak_bps.filter(|_| exercised).map_or(0, |bps| {
            ((bps / 1000).saturating_sub(audio)).min(u64::from(u32::MAX)) as u32
        });
        let fast_step = pct(cur, self.cfg.fast_raise_pct).max(1);
        // A multiplicative step when the link has carried at least that much: to the peak
        // less the safety margin, at least one step, at most a doubling.
        let fast = |limit: u32| {
            (peak >= cur.saturating_add(fast_step)).then(|| Raise {
                to: pct(peak, self.cfg.safety_pct)
                    .max(cur.saturating_add(fast_step))
                    .min(cur.saturating_mul(2))
                    .min(limit),
                wait: fast_wait,
                probe: false,
                test: false,
                pass_ceiling: false,
            })
        };
        let probe = |of: u32, limit: u32, wait: Duration| Raise {
            to: cur.saturating_add(self.probe_step(of)).min(limit),
            wait,
            probe: true,
            test: false,
            pass_ceiling: false,
        };
        let Some(c) = self.ceiling.filter(|c| !c.passed) else {
            if self.bursts_mislead {
                // Past the ceiling on a path whose bursts mislead: every raise is a ceiling
                // test, each step twice the last (slow start: 40 %, 80 %, at most a doubling),
                // so a lifted link is back within a few tests.
                let step = pct(cur, self.cfg.near_pct.saturating_mul(2))
                    .saturating_mul(1 << self.test_passes.min(8))
                    .max(1);
                return Some(Raise {
                    to: cur
                        .saturating_add(step)
                        .min(cur.saturating_mul(2))
                        .min(self.max_kbps),
                    wait: fast_wait,
                    probe: true,
                    test: true,
                    pass_ceiling: false,
                });
            }
            return Some(
                fast(self.max_kbps)
                    .unwrap_or_else(|| probe(self.max_kbps, self.max_kbps, probe_wait)),
            );
        };
        let band = pct(c.kbps, self.cfg.near_pct);
        let knee = c.kbps.saturating_sub(band);
        // Probes stop half the band short of the ceiling: at exactly the rate where the queue
        // appeared, every keyframe would make one.
        let top = c.kbps.saturating_sub(band / 2);
        // Near a ceiling that congestion keeps coming back to, the first probe after a cut
        // (and every ceiling test) waits longer each time.
        let first_wait = probe_wait
            .saturating_mul(1 << c.confirmations.min(16))
            .min(ms(self.cfg.probe_interval_max_ms));
        if cur < knee {
            // Far below a rate the link carried: close at least half the gap at once, further
            // if the evidence says so.
            let half = cur
                .saturating_add((knee - cur) / 2)
                .max(cur.saturating_add(self.probe_step(c.kbps)));
            let to = fast(knee).map_or(half, |f| f.to.max(half)).min(knee);
            if exercised {
                return Some(Raise {
                    to,
                    wait: fast_wait,
                    probe: false,
                    test: false,
                    pass_ceiling: false,
                });
            }
        }
        if cur >= knee && !self.bursts_mislead && peak >= c.kbps.saturating_add(band) {
            // The link carried clearly more than the old congestion point: it has improved.
            return Some(Raise {
                pass_ceiling: true,
                ..fast(self.max_kbps)
                    .unwrap_or_else(|| probe(self.max_kbps, self.max_kbps, fast_wait))
            });
        }
        if cur >= top && !self.bursts_mislead {
            // At the top of the band without evidence of more: stay. A link that is exactly
            // this full is left alone (no oscillation); the ceiling is forgotten after
            // `ceiling_forget_s` without congestion anyway.
            return None;
        }
        if cur >= knee && self.bursts_mislead {
            // In the band on a path whose bursts mislead: test the ceiling (additive probes
            // would only add a wait before the test). A
            // shaper's token bucket lets a keyframe out at line rate whatever the shaped
            // rate; a target held clearly above the ceiling for `ceiling_test_ms` empties the
            // bucket within a second or two, and then the queue shows, or it does not.
            return Some(Raise {
                to: c
                    .kbps
                    .saturating_add(band.saturating_mul(2))
                    .max(cur.saturating_add(1)),
                wait: first_wait,
                probe: true,
                test: true,
                pass_ceiling: false,
            });
        }
        Some(probe(
            c.kbps,
            top,
            if r.probes == 0 {
                first_wait
            } else {
                probe_wait
            },
        ))
    }

    fn probe_step(&self, of: u32) -> u32 {
        pct(of, self.cfg.probe_pct).max(1)
    }

    fn on_clear(&mut self, now: Duration, stats: &LinkStats, m: &Measurement) {
        let cur = self.target.video_kbps;
        let mut r = match self.phase {
            Phase::Raising(r) => r,
            Phase::Steady if cur >= self.max_kbps => return,
            // The queue drained after a cut (or the target starts below the configured rate).
            _ => Raising {
                last_raise: None,
                ..Raising::starting(now, true)
            },
        };
        let clear_since = *r.clear_since.get_or_insert(now);
        self.phase = Phase::Raising(r);
        if let Some(t) = r.test {
            if now.saturating_sub(t.since) < ms(self.cfg.ceiling_test_ms) {
                return;
            }
            r.test = None;
            // Clear since before the test began (the band in between resets `clear_since`),
            // and the raised target was exercised: the link carries it.
            if clear_since <= t.since && self.exercised(cur, stats, m) {
                if let Some(c) = &mut self.ceiling {
                    tracing::debug!(
                        ceiling_kbps = c.kbps,
                        tested_kbps = cur,
                        "ceiling test passed: the queue stayed clear above the old congestion point"
                    );
                    c.passed = true;
                }
                self.test_passes = self.test_passes.saturating_add(1);
                self.phase = Phase::Raising(r);
            } else {
                self.fail_test(now, t, "queue not clear throughout");
                return;
            }
        }
        if now.saturating_sub(clear_since) < ms(self.cfg.raise_interval_ms) {
            return;
        }
        if cur >= self.max_kbps {
            self.phase = Phase::Steady;
            return;
        }
        let Some(raise) = self.next_raise(cur, m, stats, &r) else {
            return;
        };
        if r.last_raise
            .is_some_and(|t| now.saturating_sub(t) < raise.wait)
        {
            return;
        }
        let next = self.clamp(raise.to);
        if next <= cur {
            return;
        }
        if raise.pass_ceiling {
            if let Some(c) = &mut self.ceiling {
                tracing::debug!(
                    ceiling_kbps = c.kbps,
                    "bursts show room above the old congestion point"
                );
                c.passed = true;
                c.passed_on_burst = true;
            }
        }
        self.set_kbps(next);
        self.raises += 1;
        tracing::debug!(
            from_kbps = cur,
            to_kbps = next,
            probe = raise.probe,
            ceiling_kbps = self.ceiling.map(|c| c.kbps),
            "raise"
        );
        if next >= self.max_kbps {
            tracing::info!(
                kbps = next,
                "uplink recovered: back at the configured video bitrate"
            );
            self.phase = Phase::Steady;
        } else {
            self.phase = Phase::Raising(Raising {
                clear_since: Some(clear_since),
                last_raise: Some(now),
                probes: r.probes + u32::from(raise.probe),
                test: raise.test.then_some(CeilingTest {
                    since: now,
                    from: cur,
                }),
            });
        }
    }

    /// The target is being exercised: the link delivered most of what it asks for. (A still
    /// scene that encodes small tests nothing.)
    fn exercised(&self, cur: u32, stats: &LinkStats, m: &Measurement) -> bool {
        let audio = u64::from(stats.audio_kbps);
        m.delivery_bps.is_some_and(|bps| {
            bps * 100 >= (u64::from(cur) + audio) * 1000 * u64::from(self.cfg.headroom_fill_pct)
        })
    }

    /// A ceiling test that did not keep the queue clear (without reaching the cut
    /// threshold): back to the rate before it, and the ceiling counts as confirmed, so the
    /// next test waits twice as long.
    fn fail_test(&mut self, now: Duration, t: CeilingTest, why: &'static str) {
        tracing::debug!(back_to_kbps = t.from, reason = why, "ceiling test failed");
        let tested = self.target.video_kbps;
        self.set_kbps(self.clamp(t.from));
        self.test_passes = 0;
        self.ceiling = Some(match self.ceiling {
            // Under a ceiling: it holds, once more.
            Some(c) if !c.passed => Ceiling {
                confirmations: c.confirmations.saturating_add(1),
                ..c
            },
            // Stepping past an old one: the link ends about where this test went.
            c => Ceiling {
                kbps: tested,
                confirmations: c.map_or(0, |c| c.confirmations.saturating_add(1)),
                passed: false,
                passed_on_burst: false,
            },
        });
        self.phase = Phase::Raising(Raising {
            clear_since: None,
            last_raise: Some(now),
            probes: 1,
            test: None,
        });
    }

    /// Frame-rate and resolution steps: down after congestion at the floor, up once well
    /// above it without congestion.
    fn step(&mut self, now: Duration, delay: u64) {
        if !self.cfg.step_down {
            return;
        }
        let floor = self.floor();
        let change = self
            .steps
            .update(&self.cfg, now, delay, self.target.video_kbps, floor);
        if let Some(level) = change.down {
            tracing::info!(
                level,
                "congested at the bitrate floor: stepping the picture down"
            );
        }
        if let Some(level) = change.up {
            tracing::info!(level, "uplink recovered: stepping the picture back up");
        }
        if change.changed() {
            // Level 1: frame rate halved; level 2: resolution halved as well.
            self.target.fps_divisor = self.steps.fps_divisor();
            self.target.scale_divisor = self.steps.scale_divisor();
            self.target.video_kbps = self.clamp(self.target.video_kbps);
        }
    }

    fn hold(&mut self, now: Duration, why: &'static str) {
        if !matches!(self.phase, Phase::Holding { .. }) {
            tracing::debug!(
                kbps = self.target.video_kbps,
                reason = why,
                "no usable uplink signal: holding the video bitrate"
            );
            self.phase = Phase::Holding { since: now };
        }
    }
}

impl Controller for DelayController {
    fn on_tick(&mut self, now: Duration, stats: &LinkStats) -> Option<Target> {
        if !self.cfg.enabled {
            return None;
        }
        let before = self.target;
        if !stats.connected {
            self.measure.reset();
            self.last = Measurement::default();
            self.hold(now, "disconnected");
            return None;
        }
        let m = self.measure.update(now, stats);
        self.last = m;
        if m.stalled {
            self.hold(now, "no delivery progress");
            return None;
        }
        if let Phase::Holding { since } = self.phase {
            tracing::debug!(
                held_ms = now.saturating_sub(since).as_millis() as u64,
                "signal back"
            );
            // Resume from the held target; no raise before a full clear interval.
            self.phase = if self.target.video_kbps >= self.max_kbps {
                Phase::Steady
            } else {
                Phase::Raising(Raising::starting(now, false))
            };
        }
        self.follow_link(now, stats, &m);
        let delay = m.queue_delay_ms;
        if !m.progressed {
            // Bytes wait and nothing was delivered this tick: perhaps a stall starting, perhaps
            // a late acknowledgement. Neither a cut nor a raise on that.
        } else if delay >= self.cfg.cut_delay_ms {
            self.on_congestion(now, stats, &m);
        } else if delay < self.cfg.clear_delay_ms {
            self.on_clear(now, stats, &m);
        } else if let Phase::Raising(r) = &mut self.phase {
            // The hysteresis band: no change, and the clear interval starts over. A ceiling
            // test that has run its time here failed.
            r.clear_since = None;
            if let Some(t) = r.test {
                if now.saturating_sub(t.since) >= ms(self.cfg.ceiling_test_ms) {
                    self.fail_test(now, t, "queue in the band at the end of the test");
                }
            }
        }
        if let (Some(_), Some(at)) = (self.ceiling, self.last_congestion) {
            if now.saturating_sub(at) >= Duration::from_secs(self.cfg.ceiling_forget_s) {
                tracing::debug!("ceiling forgotten after a long clean period");
                self.ceiling = None;
                self.bursts_mislead = false;
            }
        }
        self.step(now, delay);
        (self.target != before).then_some(self.target)
    }

    fn target(&self) -> Target {
        self.target
    }

    fn stats(&self) -> AdaptStats {
        let kbps = |bps: Option<u64>| bps.map(|b| (b / 1000).min(u64::from(u32::MAX)) as u32);
        AdaptStats {
            target_kbps: self.target.video_kbps,
            fps_divisor: self.target.fps_divisor,
            scale_divisor: self.target.scale_divisor,
            send_rate_kbps: kbps(self.last.delivery_bps),
            link_rate_kbps: kbps(self.last.link_bps),
            queue_delay_ms: self.last.queue_delay_ms,
            outside_delay_ms: if self.last.stalled {
                0
            } else {
                self.last
                    .socket_delay_ms
                    .saturating_sub(self.last.base_delay_ms)
            },
            ceiling_kbps: self.ceiling.map(|c| c.kbps),
            cuts: self.cuts,
            raises: self.raises,
            state: match self.phase {
                Phase::Steady => AdaptState::Steady,
                Phase::Cutting { .. } => AdaptState::Cutting,
                Phase::Raising(_) => AdaptState::Probing,
                Phase::Holding { .. } => AdaptState::Holding,
            },
        }
    }
}

#[cfg(test)]
mod tests;
