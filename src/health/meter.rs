//! Audio levels: 100 ms blocks of float samples ([`BlockMeter`], on the audio encode thread)
//! and the PPM-like ballistics of the meter ([`Ppm`], on the health thread).

/// Levels are floored here (dBFS): a digital zero reads −90, never −inf.
pub const FLOOR_DBFS: f64 = -90.0;
/// A sample at or above this magnitude is at full scale (s16's 32767/32768 is 0.99997; after
/// resampling an overload can also exceed 1.0).
pub const CLIP_LEVEL: f32 = 0.999;
/// Samples in a row at full scale that make a block clipped.
const CLIP_RUN: u32 = 3;
/// Channels metered (the encoder has 1 or 2).
pub const MAX_CHANNELS: usize = 2;
/// The meter holds a new peak this long (s) …
const PEAK_HOLD_S: f64 = 1.0;
/// … then falls this fast (dB/s): IEC 60268-10 type I, 20 dB in 1.7 s.
const FALL_DB_PER_S: f64 = 20.0 / 1.7;

/// `x` (linear, 1.0 = full scale) in dBFS, floored.
pub fn dbfs(x: f64) -> f64 {
    if x > 0.0 {
        (20.0 * x.log10()).max(FLOOR_DBFS)
    } else {
        FLOOR_DBFS
    }
}

/// One channel's numbers over one block.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ChannelBlock {
    /// The largest sample magnitude (linear).
    pub peak: f32,
    /// Root mean square (linear).
    pub rms: f32,
    /// `CLIP_RUN` samples in a row at full scale.
    pub clipped: bool,
}

/// 100 ms of captured sound, measured: what the encode thread hands to the health thread.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AudioBlock {
    pub channels: [ChannelBlock; MAX_CHANNELS],
    /// Channels in use (1 or 2).
    pub count: usize,
}

impl AudioBlock {
    pub fn channels(&self) -> &[ChannelBlock] {
        &self.channels[..self.count]
    }

    /// Any channel clipped.
    pub fn clipped(&self) -> bool {
        self.channels().iter().any(|c| c.clipped)
    }

    /// The loudest channel's RMS, dBFS.
    pub fn loudest_rms_dbfs(&self) -> f64 {
        self.channels()
            .iter()
            .map(|c| dbfs(f64::from(c.rms)))
            .fold(FLOOR_DBFS, f64::max)
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct Acc {
    peak: f32,
    sum_sq: f64,
    run: u32,
    clipped: bool,
}

/// Cuts planar float samples into blocks of `block` samples and measures each. About two
/// operations per sample; nothing is allocated after `new`.
#[derive(Debug, Clone)]
pub struct BlockMeter {
    block: usize,
    filled: usize,
    acc: [Acc; MAX_CHANNELS],
    count: usize,
    done: Vec<AudioBlock>,
}

impl BlockMeter {
    /// Blocks of 100 ms at `sample_rate`, for `channels` (at most [`MAX_CHANNELS`] are
    /// metered).
    pub fn new(sample_rate: u32, channels: usize) -> Self {
        Self {
            block: (sample_rate as usize / 10).max(1),
            filled: 0,
            acc: [Acc::default(); MAX_CHANNELS],
            count: channels.clamp(1, MAX_CHANNELS),
            done: Vec::with_capacity(8),
        }
    }

    /// Measures `planes[c][from..from + n]` (one slice per channel, the same length).
    pub fn feed(&mut self, planes: &[&[f32]]) {
        let n = planes.first().map_or(0, |p| p.len());
        let mut at = 0;
        while at < n {
            let take = (self.block - self.filled).min(n - at);
            for (acc, plane) in self.acc.iter_mut().zip(planes).take(self.count) {
                for &x in &plane[at..at + take] {
                    let a = x.abs();
                    acc.peak = acc.peak.max(a);
                    acc.sum_sq += f64::from(x * x);
                    if a >= CLIP_LEVEL {
                        acc.run += 1;
                        if acc.run >= CLIP_RUN {
                            acc.clipped = true;
                        }
                    } else {
                        acc.run = 0;
                    }
                }
            }
            self.filled += take;
            at += take;
            if self.filled == self.block {
                let mut out = AudioBlock {
                    count: self.count,
                    ..AudioBlock::default()
                };
                for (o, acc) in out.channels.iter_mut().zip(&mut self.acc) {
                    *o = ChannelBlock {
                        peak: acc.peak,
                        rms: (acc.sum_sq / self.block as f64).sqrt() as f32,
                        clipped: acc.clipped,
                    };
                    *acc = Acc::default();
                }
                self.filled = 0;
                // Bounded: a caller that never takes them keeps only the latest few.
                if self.done.len() >= 64 {
                    self.done.remove(0);
                }
                self.done.push(out);
            }
        }
    }

    /// The blocks completed since the last call.
    pub fn take(&mut self) -> std::vec::Drain<'_, AudioBlock> {
        self.done.drain(..)
    }
}

/// What a channel's meter shows.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelLevel {
    /// The meter's peak (ballistics applied), dBFS.
    pub peak_dbfs: f64,
    /// RMS of the last block, dBFS.
    pub rms_dbfs: f64,
}

impl Default for ChannelLevel {
    fn default() -> Self {
        Self {
            peak_dbfs: FLOOR_DBFS,
            rms_dbfs: FLOOR_DBFS,
        }
    }
}

/// A peak programme meter's needle for one channel: instant attack, a new peak held
/// [`PEAK_HOLD_S`], then a fall of [`FALL_DB_PER_S`]. Pure: `now` in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ppm {
    shown: f64,
    held_until: f64,
    last: f64,
}

impl Default for Ppm {
    fn default() -> Self {
        Self {
            shown: FLOOR_DBFS,
            held_until: f64::NEG_INFINITY,
            last: f64::NEG_INFINITY,
        }
    }
}

impl Ppm {
    /// A block whose sample peak is `peak_dbfs` ends at `now`; returns what the meter shows.
    pub fn update(&mut self, now: f64, peak_dbfs: f64) -> f64 {
        if peak_dbfs >= self.shown {
            self.shown = peak_dbfs;
            self.held_until = now + PEAK_HOLD_S;
        } else if now > self.held_until {
            let from = self.last.max(self.held_until);
            self.shown = (self.shown - FALL_DB_PER_S * (now - from)).max(peak_dbfs);
        }
        self.last = now;
        self.shown = self.shown.max(FLOOR_DBFS);
        self.shown
    }

    pub fn shown(&self) -> f64 {
        self.shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sine(n: usize, amp: f32) -> Vec<f32> {
        (0..n)
            .map(|i| amp * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 48_000.0).sin())
            .collect()
    }

    #[test]
    fn blocks_of_100_ms_measure_peak_rms_and_clipping() {
        let mut m = BlockMeter::new(48_000, 2);
        let left = sine(7200, 0.5);
        let right = vec![0.0f32; 7200];
        m.feed(&[&left, &right]);
        let blocks: Vec<AudioBlock> = m.take().collect();
        assert_eq!(blocks.len(), 1, "4800 of 7200 samples make one block");
        let b = blocks[0];
        assert!((dbfs(f64::from(b.channels[0].peak)) - -6.02).abs() < 0.05);
        // A sine's RMS is its peak / sqrt(2): −9.03 dBFS.
        assert!((dbfs(f64::from(b.channels[0].rms)) - -9.03).abs() < 0.05);
        assert_eq!(dbfs(f64::from(b.channels[1].rms)), FLOOR_DBFS);
        assert!(!b.clipped());
        // The rest of the block, then a clipped one: a run of three full-scale samples.
        let mut clip = vec![0.1f32; 2400 + 4800];
        clip[3000..3003].fill(1.0);
        m.feed(&[&clip, &clip]);
        let blocks: Vec<AudioBlock> = m.take().collect();
        assert_eq!(blocks.len(), 2);
        assert!(!blocks[0].clipped() && blocks[1].clipped());
        // Two full-scale samples in a row are not clipping.
        let mut near = vec![0.1f32; 4800];
        near[10..12].fill(-1.0);
        m.feed(&[&near, &near]);
        assert!(!m.take().next().unwrap().clipped());
    }

    #[test]
    fn the_ppm_attacks_at_once_holds_a_second_then_falls_11_8_db_per_s() {
        let mut p = Ppm::default();
        assert_eq!(p.update(0.0, -10.0), -10.0);
        assert_eq!(p.update(0.5, -40.0), -10.0, "held");
        assert_eq!(p.update(1.0, -40.0), -10.0, "held to 1 s");
        let at_2 = p.update(2.0, -40.0);
        assert!((at_2 - (-10.0 - FALL_DB_PER_S)).abs() < 1e-9, "{at_2}");
        // 20 dB below the peak 1.7 s after the hold ends.
        let at = p.update(2.7, -60.0);
        assert!((at - -30.0).abs() < 1e-9, "{at}");
        assert_eq!(p.update(2.8, -5.0), -5.0, "instant attack");
        // Never below the floor, never below the current peak.
        assert_eq!(p.update(60.0, -95.0), FLOOR_DBFS);
        assert_eq!(p.update(61.0, -20.0), -20.0);
    }
}
