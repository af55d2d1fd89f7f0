//! Small decoded audio frames gathered into larger ones before they are offered to the encoder.
//!
//! FFmpeg's alsa input reads one ALSA *period* per packet and asks for the smallest period the
//! device allows. For a USB microphone that is tens of frames (a millisecond or less); for some
//! plugins it is a single frame, so the capture thread would hand the encoder 48000 one-sample
//! frames a second, each a queue slot, a channel message and a `swr_convert` call: the encoder
//! falls behind, the queue drops frames, and the sound has gaps. [`AudioBatcher`] copies frames
//! shorter than [`SMALL_MS`] into one frame of at least [`BATCH_MS`] of samples (960 at 48 kHz)
//! before it is stamped and offered, keeping the first sample's timestamp; the small frames'
//! shells go back to the queue's spares. 20 ms batches are about the size of the frames files
//! and test patterns deliver (1024 samples), so the encoder's queue holds as much time as it
//! does for them (32 frames, 0.64 s) before it drops anything.
//!
//! A batch is handed on when it reaches [`BATCH_MS`], when it has waited [`MAX_AGE`] of wall
//! time since its first sample arrived (a device delivering slowly is not held back; checked as
//! each frame arrives and while the device has nothing to read), when the format changes
//! (sample format, rate or channel layout: the samples cannot share a frame), and at the end of
//! the input. Frames of [`SMALL_MS`] or more pass through untouched and uncopied, the common
//! case for files, test patterns and most devices.
//!
//! Samples are copied with `av_samples_copy`, which handles packed (one plane, channels
//! interleaved) and planar (a plane per channel) formats alike.

use std::time::{Duration, Instant};

use ffmpeg::frame::Audio;
use ffmpeg_next as ffmpeg;

use crate::capture::queue::FrameSender;

/// A frame with at least this much audio is handed on as it is; smaller ones are gathered.
pub(super) const SMALL_MS: u32 = 10;
/// Gathered frames are handed on once they hold this much audio.
pub(super) const BATCH_MS: u32 = 20;
/// A batch waits at most this long (wall time) for more samples.
pub(super) const MAX_AGE: Duration = Duration::from_millis(40);

/// Where the batcher gets empty frames for its batches and returns the small frames' shells:
/// the frame queue's spares ([`FrameSender`]), or anything in tests.
pub(super) trait Shells {
    /// An empty frame (no buffers) to allocate a batch in.
    fn shell(&mut self) -> Audio;
    /// A frame whose samples were copied into a batch.
    fn give_back(&mut self, frame: Audio);
}

impl Shells for FrameSender<Audio> {
    fn shell(&mut self) -> Audio {
        self.empty_frame(Audio::empty)
    }

    fn give_back(&mut self, frame: Audio) {
        self.discard_shell(frame);
    }
}

/// What makes two frames' samples joinable: format, rate, channel count and layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    format: i32,
    rate: i32,
    channels: i32,
    /// The layout's mask (native order; 0 when the layout has no mask) and its order.
    mask: u64,
    order: u32,
}

impl Shape {
    fn of(frame: &Audio) -> Self {
        // SAFETY: reading plain fields of a decoded frame; the union member `mask` is read
        // only for the native order, where it is the active one.
        unsafe {
            let f = &*frame.as_ptr();
            let layout = &f.ch_layout;
            let native = layout.order == ffmpeg::ffi::AVChannelOrder::AV_CHANNEL_ORDER_NATIVE;
            let channels = if layout.nb_channels > 0 {
                layout.nb_channels
            } else {
                #[allow(deprecated)]
                f.channels
            };
            Shape {
                format: f.format,
                rate: f.sample_rate,
                channels,
                mask: if native { layout.u.mask } else { 0 },
                order: layout.order as u32,
            }
        }
    }

    /// Samples in `ms` at this rate (0 when the rate is unknown: no batching).
    fn samples_in(&self, ms: u32) -> usize {
        usize::try_from(self.rate).unwrap_or(0) * ms as usize / 1000
    }
}

/// The batch being gathered.
struct Pending {
    frame: Audio,
    shape: Shape,
    /// Samples the frame has room for (its buffers' size).
    capacity: usize,
    /// Samples copied in so far (the frame's `nb_samples` is set when it is handed on).
    filled: usize,
    /// When its first samples arrived.
    since: Instant,
    /// The decoder stream (index into the source's streams) its samples came from.
    stream: usize,
}

/// Frames ready to be offered, oldest first (at most two: a batch cut short and the frame that
/// cut it).
pub(super) type Ready = [Option<(usize, Audio)>; 2];

/// Gathers small audio frames; see the module docs.
#[derive(Default)]
pub(super) struct AudioBatcher {
    pending: Option<Pending>,
}

impl AudioBatcher {
    /// Takes a decoded frame of stream `stream`, arriving at `now`; returns what is ready to be
    /// stamped and offered, in order, each with its stream.
    pub(super) fn push(
        &mut self,
        stream: usize,
        frame: Audio,
        now: Instant,
        shells: &mut impl Shells,
    ) -> Ready {
        let shape = Shape::of(&frame);
        let small = shape.samples_in(SMALL_MS);
        let batch = shape.samples_in(BATCH_MS);
        let n = frame.samples();
        let mut first = None;
        if let Some(p) = &self.pending {
            if p.shape != shape || p.stream != stream || p.filled + n > p.capacity {
                first = self.take();
            }
        }
        if n >= small || n == 0 {
            // Normal-sized (or unbatchable): as it is, after what was gathered before it.
            return match first {
                Some(f) => [Some(f), Some((stream, frame))],
                None => match self.take() {
                    Some(p) => [Some(p), Some((stream, frame))],
                    None => [Some((stream, frame)), None],
                },
            };
        }
        if self.pending.is_none() {
            // Room for a batch short of its size plus one more small frame.
            match Pending::start(&frame, shape, batch + small, stream, now, shells) {
                Some(p) => self.pending = Some(p),
                // No memory for a batch: hand the frame on as it is.
                None => return [first, Some((stream, frame))],
            }
        }
        let p = self.pending.as_mut().expect("started above");
        p.append(&frame);
        shells.give_back(frame);
        if p.filled >= batch || now.duration_since(p.since) >= MAX_AGE {
            let done = self.take();
            return [first, done];
        }
        [first, None]
    }

    /// The batch, if it has waited [`MAX_AGE`] by `now` (call while the device has nothing to
    /// read, so a device that pauses does not hold samples back).
    pub(super) fn take_stale(&mut self, now: Instant) -> Option<(usize, Audio)> {
        match &self.pending {
            Some(p) if now.duration_since(p.since) >= MAX_AGE => self.take(),
            _ => None,
        }
    }

    /// The batch gathered so far, whatever its size (the end of the input).
    pub(super) fn take(&mut self) -> Option<(usize, Audio)> {
        let mut p = self.pending.take()?;
        p.frame.set_samples(p.filled);
        Some((p.stream, p.frame))
    }

    /// Forgets the batch (the device is closed; its samples would be stale after a reopen).
    pub(super) fn clear(&mut self) {
        self.pending = None;
    }
}

impl Pending {
    /// A batch with room for `capacity` samples shaped like `first`, with its timestamps
    /// (pts, best-effort timestamp and the other properties `av_frame_copy_props` copies).
    /// `None` if the buffers cannot be allocated.
    fn start(
        first: &Audio,
        shape: Shape,
        capacity: usize,
        stream: usize,
        now: Instant,
        shells: &mut impl Shells,
    ) -> Option<Pending> {
        let mut frame = shells.shell();
        // SAFETY: `frame` is an empty frame we own; `first` is a decoded frame. The layout is
        // copied both as `ch_layout` and as the deprecated fields FFmpeg 5.1 still reads (and
        // ffmpeg-next reports); av_frame_get_buffer allocates for format × layout × nb_samples.
        let ok = unsafe {
            let dst = frame.as_mut_ptr();
            let src = first.as_ptr();
            (*dst).format = (*src).format;
            (*dst).sample_rate = (*src).sample_rate;
            #[allow(deprecated)]
            {
                (*dst).channel_layout = (*src).channel_layout;
                (*dst).channels = shape.channels;
            }
            ffmpeg::ffi::av_channel_layout_copy(&mut (*dst).ch_layout, &(*src).ch_layout) >= 0
                && ffmpeg::ffi::av_frame_copy_props(dst, src) >= 0
                && {
                    (*dst).nb_samples = i32::try_from(capacity).unwrap_or(i32::MAX);
                    ffmpeg::ffi::av_frame_get_buffer(dst, 0) >= 0
                }
        };
        if !ok {
            shells.give_back(frame);
            return None;
        }
        Some(Pending {
            frame,
            shape,
            capacity,
            filled: 0,
            since: now,
            stream,
        })
    }

    /// Copies `frame`'s samples after those gathered (the caller checked the room and shape).
    fn append(&mut self, frame: &Audio) {
        let n = frame.samples();
        debug_assert!(self.filled + n <= self.capacity);
        // SAFETY: both frames have this shape (format, channels); the batch has room for
        // `filled + n` samples in each plane; extended_data holds one pointer per plane.
        unsafe {
            let dst = self.frame.as_mut_ptr();
            ffmpeg::ffi::av_samples_copy(
                (*dst).extended_data,
                (*frame.as_ptr()).extended_data,
                self.filled as i32,
                0,
                n as i32,
                self.shape.channels,
                frame.format().into(),
            );
        }
        self.filled += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ffmpeg::format::sample::Type;
    use ffmpeg::format::Sample;
    use ffmpeg::ChannelLayout;

    /// Shells from nowhere; counts what comes back.
    #[derive(Default)]
    struct Pool {
        returned: usize,
    }

    impl Shells for Pool {
        fn shell(&mut self) -> Audio {
            Audio::empty()
        }
        fn give_back(&mut self, _frame: Audio) {
            self.returned += 1;
        }
    }

    /// Stamps a frame as a decoder does: pts and the best-effort timestamp (what
    /// `Frame::timestamp` reads).
    fn stamp(f: &mut Audio, pts: i64) {
        f.set_pts(Some(pts));
        // SAFETY: a plain field of a frame we own.
        unsafe { (*f.as_mut_ptr()).best_effort_timestamp = pts };
    }

    /// A packed s16 stereo frame at `rate` whose samples count up from `start` (left) and
    /// down from `-start` (right).
    fn s16(rate: u32, n: usize, start: i16, pts: i64) -> Audio {
        let mut f = Audio::new(Sample::I16(Type::Packed), n, ChannelLayout::STEREO);
        f.set_rate(rate);
        stamp(&mut f, pts);
        let s = f.plane_mut::<(i16, i16)>(0);
        for (i, v) in s.iter_mut().enumerate() {
            *v = (start + i as i16, -(start + i as i16));
        }
        f
    }

    /// A planar float stereo frame: left counts up from `start`, right is its negative.
    fn fltp(rate: u32, n: usize, start: f32, pts: i64) -> Audio {
        let mut f = Audio::new(Sample::F32(Type::Planar), n, ChannelLayout::STEREO);
        f.set_rate(rate);
        stamp(&mut f, pts);
        for (i, v) in f.plane_mut::<f32>(0).iter_mut().enumerate() {
            *v = start + i as f32;
        }
        for (i, v) in f.plane_mut::<f32>(1).iter_mut().enumerate() {
            *v = -(start + i as f32);
        }
        f
    }

    fn frames(r: Ready) -> Vec<Audio> {
        r.into_iter().flatten().map(|(_, f)| f).collect()
    }

    #[test]
    fn one_sample_s16_frames_become_20_ms_frames_with_the_first_pts() {
        let mut b = AudioBatcher::default();
        let mut pool = Pool::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        for i in 0..2000 {
            // One sample each, pts in µs (1/48000 s apart, rounded).
            let pts = 1_000_000 + i64::from(i) * 1_000_000 / 48_000;
            out.extend(frames(b.push(
                0,
                s16(48_000, 1, i as i16, pts),
                t0,
                &mut pool,
            )));
        }
        assert_eq!(pool.returned, 2000, "every small frame's shell goes back");
        // 2000 samples: two batches of 960, 80 pending.
        assert_eq!(out.len(), 2);
        let rest = b.take().unwrap().1;
        assert_eq!(rest.samples(), 80);
        assert!(b.take().is_none());
        let mut next = 0i16;
        for (k, f) in out.iter().chain([&rest]).enumerate() {
            assert_eq!(f.format(), Sample::I16(Type::Packed));
            assert_eq!(f.rate(), 48_000);
            assert_eq!(f.channels(), 2);
            assert_eq!(f.channel_layout(), ChannelLayout::STEREO);
            assert_eq!(
                f.pts(),
                Some(1_000_000 + (k as i64 * 960) * 1_000_000 / 48_000)
            );
            assert_eq!(f.timestamp(), f.pts(), "best-effort timestamp kept too");
            for &(l, r) in &f.plane::<(i16, i16)>(0)[..f.samples()] {
                assert_eq!((l, r), (next, -next));
                next += 1;
            }
        }
        assert_eq!(next, 2000, "every sample, once, in order");
    }

    #[test]
    fn planar_float_frames_keep_each_channel_in_its_plane() {
        let mut b = AudioBatcher::default();
        let mut pool = Pool::default();
        let t0 = Instant::now();
        let mut out = Vec::new();
        // 100-sample frames at 44.1 kHz (small: 441 is 10 ms): 882 samples is 20 ms, so nine
        // frames make a batch.
        for i in 0..9 {
            out.extend(frames(b.push(
                0,
                fltp(44_100, 100, (i * 100) as f32, 7 + i64::from(i)),
                t0,
                &mut pool,
            )));
        }
        assert_eq!(out.len(), 1);
        let f = &out[0];
        assert_eq!(f.samples(), 900);
        assert_eq!(f.format(), Sample::F32(Type::Planar));
        assert_eq!(f.pts(), Some(7));
        let left = &f.plane::<f32>(0)[..900];
        let right = &f.plane::<f32>(1)[..900];
        for i in 0..900 {
            assert_eq!(left[i], i as f32);
            assert_eq!(right[i], -(i as f32));
        }
    }

    #[test]
    fn normal_frames_pass_through_untouched() {
        let mut b = AudioBatcher::default();
        let mut pool = Pool::default();
        let f = s16(48_000, 1024, 0, 42);
        // SAFETY: only the address is compared.
        let ptr = unsafe { f.as_ptr() };
        let out = frames(b.push(0, f, Instant::now(), &mut pool));
        assert_eq!(out.len(), 1);
        // SAFETY: as above.
        assert_eq!(
            unsafe { out[0].as_ptr() },
            ptr,
            "the same frame, not a copy"
        );
        assert_eq!(pool.returned, 0);
        // 480 at 48 kHz is exactly 10 ms: also as it is.
        let out = frames(b.push(0, s16(48_000, 480, 0, 43), Instant::now(), &mut pool));
        assert_eq!(out[0].samples(), 480);
        assert_eq!(out[0].pts(), Some(43));
    }

    #[test]
    fn a_format_change_or_a_big_frame_hands_on_the_batch_first() {
        let mut b = AudioBatcher::default();
        let mut pool = Pool::default();
        let t0 = Instant::now();
        for i in 0..10 {
            assert!(
                frames(b.push(0, s16(48_000, 10, i * 10, i64::from(i)), t0, &mut pool)).is_empty()
            );
        }
        // Another rate: the 100 gathered samples first, then the new one starts a batch.
        let out = frames(b.push(0, s16(44_100, 10, 0, 100), t0, &mut pool));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].samples(), out[0].rate(), out[0].pts()),
            (100, 48_000, Some(0))
        );
        // Another sample format: the 44.1 kHz sample batch, then planar float is gathered.
        let out = frames(b.push(0, fltp(44_100, 10, 0.0, 200), t0, &mut pool));
        assert_eq!(out.len(), 1);
        assert_eq!(
            (out[0].samples(), out[0].rate(), out[0].pts()),
            (10, 44_100, Some(100))
        );
        // A normal frame after a small one: the batch, then the frame, in order.
        let out = frames(b.push(0, fltp(44_100, 1024, 0.0, 300), t0, &mut pool));
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].samples(), out[0].pts()), (10, Some(200)));
        assert_eq!((out[1].samples(), out[1].pts()), (1024, Some(300)));
        assert!(b.take().is_none());
    }

    #[test]
    fn a_batch_is_handed_on_after_max_age_of_wall_time() {
        let mut b = AudioBatcher::default();
        let mut pool = Pool::default();
        let t0 = Instant::now();
        assert!(frames(b.push(0, s16(48_000, 4, 0, 1), t0, &mut pool)).is_empty());
        assert!(b.take_stale(t0 + MAX_AGE / 2).is_none());
        // A frame arriving late hands the batch on with itself in it.
        let out = frames(b.push(0, s16(48_000, 4, 4, 2), t0 + MAX_AGE, &mut pool));
        assert_eq!(out.len(), 1);
        assert_eq!((out[0].samples(), out[0].pts()), (8, Some(1)));
        // Nothing arriving: the idle check hands it on.
        assert!(frames(b.push(0, s16(48_000, 4, 0, 3), t0, &mut pool)).is_empty());
        let (stream, f) = b.take_stale(t0 + MAX_AGE).unwrap();
        assert_eq!((stream, f.samples(), f.pts()), (0, 4, Some(3)));
        // Cleared on close: nothing left.
        assert!(frames(b.push(0, s16(48_000, 4, 0, 4), t0, &mut pool)).is_empty());
        b.clear();
        assert!(b.take().is_none());
    }
}
