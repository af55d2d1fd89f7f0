//! The alarms' state machines and what the health thread publishes ([`MediaReport`]).

use std::collections::VecDeque;
use std::fmt;

use super::meter::{dbfs, AudioBlock, ChannelLevel, Ppm};
use super::settings::HealthSettings;

/// The five alarms. Their names are fixed (metrics labels, JSON keys), never translated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Alarm {
    Silence,
    Clipping,
    Black,
    Frozen,
    LowFps,
}

impl Alarm {
    pub const ALL: [Alarm; 5] = [
        Alarm::Silence,
        Alarm::Clipping,
        Alarm::Black,
        Alarm::Frozen,
        Alarm::LowFps,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Alarm::Silence => "silence",
            Alarm::Clipping => "clipping",
            Alarm::Black => "black",
            Alarm::Frozen => "frozen",
            Alarm::LowFps => "low_fps",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn is_audio(self) -> bool {
        matches!(self, Alarm::Silence | Alarm::Clipping)
    }
}

impl fmt::Display for Alarm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One alarm as reported.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AlarmStatus {
    pub active: bool,
    /// Active for this long (s), when active.
    pub for_s: Option<f64>,
    /// Times raised since the pipeline started.
    pub raised: u64,
}

/// A track as the health checks see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TrackHealth {
    #[default]
    Live,
    /// The device is away and being reopened: its alarms are paused.
    Reconnecting,
    /// No such track.
    Off,
}

impl TrackHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            TrackHealth::Live => "live",
            TrackHealth::Reconnecting => "reconnecting",
            TrackHealth::Off => "off",
        }
    }
}

/// An alarm raised or cleared, with the measured value and the threshold, for the log.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub alarm: Alarm,
    pub raised: bool,
    /// What the alarm measured, in the unit of [`Change::unit`].
    pub value: f64,
    pub threshold: f64,
    /// Cleared because the track's device is reconnecting.
    pub paused: bool,
}

impl Change {
    fn unit(&self) -> (&'static str, &'static str) {
        match self.alarm {
            Alarm::Silence => ("loudest channel RMS", " dBFS"),
            Alarm::Clipping => ("clipped blocks", " %"),
            Alarm::Black => ("mean luma", ""),
            Alarm::Frozen => ("picture change", " levels"),
            Alarm::LowFps => ("captured", " fps"),
        }
    }
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, unit) = self.unit();
        if self.alarm == Alarm::Clipping && !self.raised && !self.paused {
            return write!(
                f,
                "clipping cleared: no clipped block for {:.1} s, hold {:.0} s",
                self.value, self.threshold
            );
        }
        if self.paused {
            return write!(
                f,
                "{} cleared: the device is reconnecting (alarms paused)",
                self.alarm
            );
        }
        write!(
            f,
            "{} {}: {what} {:.2}{unit}, threshold {:.2}{unit}",
            self.alarm,
            if self.raised { "raised" } else { "cleared" },
            self.value,
            self.threshold
        )
    }
}

/// Raised after a condition held for a while, cleared by a separate (hysteresis) condition.
#[derive(Debug, Clone, Copy, Default)]
struct Hold {
    active_since: Option<f64>,
    bad_since: Option<f64>,
    raised: u64,
}

impl Hold {
    /// `bad` (since `since`) for `hold_s` raises (0: at once); `good` clears. `Some(true)`:
    /// raised now, `Some(false)`: cleared now.
    fn update(&mut self, now: f64, bad: bool, since: f64, good: bool, hold_s: f64) -> Option<bool> {
        if self.active_since.is_some() {
            if good {
                self.active_since = None;
                self.bad_since = None;
                return Some(false);
            }
            return None;
        }
        if !bad || hold_s < 0.0 {
            self.bad_since = None;
            return None;
        }
        let start = *self.bad_since.get_or_insert(since);
        if now - start >= hold_s {
            self.active_since = Some(now);
            self.raised += 1;
            return Some(true);
        }
        None
    }

    /// Clears without a measurement (paused); whether it was active.
    fn reset(&mut self) -> bool {
        self.bad_since = None;
        self.active_since.take().is_some()
    }

    fn status(&self, now: f64) -> AlarmStatus {
        AlarmStatus {
            active: self.active_since.is_some(),
            for_s: self
                .active_since
                .map(|t| ((now - t).max(0.0) * 10.0).round() / 10.0),
            raised: self.raised,
        }
    }
}

/// A configured hold time in seconds; 0 (off) as a negative hold that never raises.
fn hold(s: u32) -> f64 {
    if s == 0 {
        -1.0
    } else {
        f64::from(s)
    }
}

/// Everything the health thread publishes: levels, the alarms, the video numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct MediaReport {
    /// `[health] enabled`: when false nothing is measured and no alarm is raised.
    pub enabled: bool,
    /// In [`Alarm::ALL`] order.
    pub alarms: [AlarmStatus; 5],
    pub audio_state: TrackHealth,
    /// One per channel, the meter's latest values (empty without audio).
    pub channels: Vec<ChannelLevel>,
    /// When the last audio block was measured (for `/meter`'s `age_ms`).
    pub audio_at: Option<std::time::Instant>,
    pub video_state: TrackHealth,
    pub luma_mean: Option<f64>,
    pub frame_change: Option<f64>,
    pub capture_fps: Option<f64>,
    pub configured_fps: u32,
}

impl MediaReport {
    /// A report for a pipeline without analysis.
    pub fn disabled(has_audio: bool, has_video: bool, configured_fps: u32) -> Self {
        let off = |has| {
            if has {
                TrackHealth::Live
            } else {
                TrackHealth::Off
            }
        };
        Self {
            enabled: false,
            alarms: [AlarmStatus::default(); 5],
            audio_state: off(has_audio),
            channels: Vec::new(),
            audio_at: None,
            video_state: off(has_video),
            luma_mean: None,
            frame_change: None,
            capture_fps: None,
            configured_fps,
        }
    }

    pub fn alarm(&self, a: Alarm) -> AlarmStatus {
        self.alarms[a.index()]
    }

    /// The active alarms, in [`Alarm::ALL`] order.
    pub fn active(&self) -> Vec<Alarm> {
        Alarm::ALL
            .into_iter()
            .filter(|a| self.alarm(*a).active)
            .collect()
    }
}

/// The last two luma samples' numbers.
#[derive(Debug, Clone, Default)]
struct Picture {
    last: Option<(f64, Vec<u8>)>,
    mean: Option<f64>,
    change: Option<f64>,
}

/// The analysis of one pipeline. Feed it blocks, pictures and the frame counter with the time
/// (seconds), read [`HealthCore::report`], take the [`Change`]s to log.
#[derive(Debug, Clone)]
pub struct HealthCore {
    s: HealthSettings,
    configured_fps: u32,
    has_audio: bool,
    has_video: bool,
    audio_state: TrackHealth,
    video_state: TrackHealth,
    ppm: Vec<Ppm>,
    levels: Vec<ChannelLevel>,
    holds: [Hold; 5],
    /// (time, clipped) of the blocks in the clipping window.
    clip_window: VecDeque<(f64, bool)>,
    last_clip: Option<f64>,
    picture: Picture,
    /// (time, captured frames) of the last frame-rate reading.
    fps_base: Option<(f64, u64)>,
    fps: Option<f64>,
    changes: Vec<Change>,
}

impl HealthCore {
    pub fn new(s: HealthSettings, has_audio: bool, has_video: bool, configured_fps: u32) -> Self {
        let off = |has| {
            if has {
                TrackHealth::Live
            } else {
                TrackHealth::Off
            }
        };
        Self {
            s,
            configured_fps,
            has_audio,
            has_video,
            audio_state: off(has_audio),
            video_state: off(has_video),
            ppm: Vec::new(),
            levels: Vec::new(),
            holds: [Hold::default(); 5],
            clip_window: VecDeque::new(),
            last_clip: None,
            picture: Picture::default(),
            fps_base: None,
            fps: None,
            changes: Vec::new(),
        }
    }

    fn apply(&mut self, alarm: Alarm, r: Option<bool>, value: f64, threshold: f64) {
        if let Some(raised) = r {
            self.changes.push(Change {
                alarm,
                raised,
                value,
                threshold,
                paused: false,
            });
        }
    }

    /// A 100 ms block of captured sound ending at `now`.
    pub fn on_audio_block(&mut self, now: f64, b: &AudioBlock) {
        if self.audio_state != TrackHealth::Live {
            return;
        }
        let chans = b.channels();
        if self.ppm.len() != chans.len() {
            self.ppm = vec![Ppm::default(); chans.len()];
            self.levels = vec![ChannelLevel::default(); chans.len()];
        }
        for ((c, ppm), level) in chans.iter().zip(&mut self.ppm).zip(&mut self.levels) {
            *level = ChannelLevel {
                peak_dbfs: ppm.update(now, dbfs(f64::from(c.peak))),
                rms_dbfs: dbfs(f64::from(c.rms)),
            };
        }

        // Silence: every channel below the threshold; cleared 5 dB above it.
        let loudest = b.loudest_rms_dbfs();
        let thr = self.s.silence_dbfs;
        let block_start = now - 0.1;
        let r = self.holds[Alarm::Silence.index()].update(
            now,
            loudest < thr,
            block_start,
            loudest >= thr + 5.0,
            hold(self.s.silence_s),
        );
        self.apply(Alarm::Silence, r, loudest, thr);

        // Clipping: the share of clipped blocks over the window.
        let window = f64::from(self.s.clipping_window_s);
        if window <= 0.0 {
            return;
        }
        let clipped = b.clipped();
        self.clip_window.push_back((now, clipped));
        while self
            .clip_window
            .front()
            .is_some_and(|(t, _)| *t <= now - window)
        {
            self.clip_window.pop_front();
        }
        if clipped {
            self.last_clip = Some(now);
        }
        let count = self.clip_window.iter().filter(|(_, c)| *c).count() as f64;
        // Of the blocks the whole window holds (a window not yet full counts as full).
        let share = 100.0 * count / (window * 10.0);
        let quiet_for = self.last_clip.map_or(f64::INFINITY, |t| now - t);
        let hold_s = f64::from(self.s.clipping_hold_s);
        let r = self.holds[Alarm::Clipping.index()].update(
            now,
            // Raised on a clipped block, so a cleared alarm stays cleared until a new one.
            clipped && share > self.s.clipping_share_pct,
            now,
            quiet_for >= hold_s,
            0.0,
        );
        match r {
            // Cleared: how long without a clipped block, against the hold.
            Some(false) => self.apply(Alarm::Clipping, r, quiet_for, hold_s),
            _ => self.apply(Alarm::Clipping, r, share, self.s.clipping_share_pct),
        }
    }

    /// A `GRAY8` luma plane (full range) sampled at `now`, about once a second.
    pub fn on_picture(&mut self, now: f64, luma: &[u8]) {
        if self.video_state != TrackHealth::Live || luma.is_empty() {
            return;
        }
        let n = luma.len() as f64;
        let mean = luma.iter().map(|&y| u64::from(y)).sum::<u64>() as f64 / n;
        let prev = self.picture.last.take();
        let change = prev.as_ref().and_then(|(t, p)| {
            (p.len() == luma.len()).then(|| {
                let sad: u64 = p
                    .iter()
                    .zip(luma)
                    .map(|(a, b)| u64::from(a.abs_diff(*b)))
                    .sum();
                (*t, sad as f64 / n)
            })
        });
        // Keep the buffer: the next sample is compared with it.
        let mut buf = prev.map(|(_, b)| b).unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(luma);
        self.picture.last = Some((now, buf));
        self.picture.mean = Some(mean);
        self.picture.change = change.map(|(_, c)| c);

        let black_thr = f64::from(self.s.black_luma);
        let black = mean < black_thr;
        let r = self.holds[Alarm::Black.index()].update(
            now,
            black,
            now,
            mean >= black_thr + 5.0,
            hold(self.s.black_s),
        );
        self.apply(Alarm::Black, r, mean, black_thr);

        if let Some((prev_t, change)) = change {
            let thr = self.s.frozen_change;
            // Unchanged since the previous sample was taken; a black picture is black only.
            let frozen = change <= thr && !black;
            let r = self.holds[Alarm::Frozen.index()].update(
                now,
                frozen,
                prev_t,
                change > (2.0 * thr).max(0.02) || black,
                hold(self.s.frozen_s),
            );
            self.apply(Alarm::Frozen, r, change, thr);
        }
    }

    /// The captured-frame counter read at `now` (about once a second).
    pub fn on_frame_count(&mut self, now: f64, captured: u64) {
        if self.video_state != TrackHealth::Live || self.configured_fps == 0 {
            self.fps_base = None;
            return;
        }
        let Some((t0, c0)) = self.fps_base else {
            self.fps_base = Some((now, captured));
            return;
        };
        if now - t0 < 0.9 {
            return;
        }
        let fps = captured.saturating_sub(c0) as f64 / (now - t0);
        self.fps_base = Some((now, captured));
        self.fps = Some(fps);
        let configured = f64::from(self.configured_fps);
        let thr = configured * f64::from(self.s.low_fps_pct) / 100.0;
        let clear = configured * f64::from((self.s.low_fps_pct + 10).min(100)) / 100.0;
        let r = self.holds[Alarm::LowFps.index()].update(
            now,
            fps < thr,
            t0,
            fps >= clear,
            hold(self.s.low_fps_s),
        );
        self.apply(Alarm::LowFps, r, fps, thr);
    }

    /// Whether each track's device is reconnecting now. Entering it clears and pauses that
    /// track's alarms (and forgets its last sample); leaving it starts afresh.
    pub fn set_reconnecting(&mut self, audio: bool, video: bool) {
        let want = |has: bool, r: bool| match (has, r) {
            (false, _) => TrackHealth::Off,
            (true, true) => TrackHealth::Reconnecting,
            (true, false) => TrackHealth::Live,
        };
        let (a, v) = (want(self.has_audio, audio), want(self.has_video, video));
        if a != self.audio_state {
            self.audio_state = a;
            self.pause(true);
        }
        if v != self.video_state {
            self.video_state = v;
            self.pause(false);
        }
    }

    fn pause(&mut self, audio: bool) {
        for alarm in Alarm::ALL.into_iter().filter(|a| a.is_audio() == audio) {
            if self.holds[alarm.index()].reset() {
                self.changes.push(Change {
                    alarm,
                    raised: false,
                    value: 0.0,
                    threshold: 0.0,
                    paused: true,
                });
            }
        }
        if audio {
            self.ppm.iter_mut().for_each(|p| *p = Ppm::default());
            self.levels
                .iter_mut()
                .for_each(|l| *l = ChannelLevel::default());
            self.clip_window.clear();
            self.last_clip = None;
        } else {
            self.picture = Picture::default();
            self.fps_base = None;
            self.fps = None;
        }
    }

    /// The alarms raised or cleared since the last call, in order.
    pub fn take_changes(&mut self) -> Vec<Change> {
        std::mem::take(&mut self.changes)
    }

    /// Everything as of `now`.
    pub fn report(&self, now: f64) -> MediaReport {
        let mut alarms = [AlarmStatus::default(); 5];
        for (slot, hold) in alarms.iter_mut().zip(&self.holds) {
            *slot = hold.status(now);
        }
        MediaReport {
            enabled: true,
            alarms,
            audio_state: self.audio_state,
            channels: self.levels.clone(),
            audio_at: None,
            video_state: self.video_state,
            luma_mean: self.picture.mean,
            frame_change: self.picture.change,
            capture_fps: self.fps,
            configured_fps: self.configured_fps,
        }
    }
}

#[cfg(test)]
mod tests;
