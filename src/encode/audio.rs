//! The AAC-LC encoder (FFmpeg's native `aac`), with resampling and 1024-sample framing.
//!
//! Input frames of any format, layout, rate and length are converted by swresample straight
//! into a per-channel `f32` FIFO of our own (FFmpeg's `AVAudioFifo` is not wrapped by
//! ffmpeg-next, and converting into our buffer avoids an intermediate frame); full frames of
//! exactly `frame_size` (1024) samples are copied into one reused encoder frame.
//!
//! Timeline: the encoder counts samples from 0, anchored at the first input frame's pipeline
//! time, so AAC timestamps are perfectly regular (1024 samples apart). A sound card's crystal
//! drifts against the system clock (a USB microphone by 100–300 ppm: up to a second an hour),
//! so each input frame's capture time is compared with where the counted timeline puts it, and
//! the difference is followed smoothly by resampling ([`super::drift`]: the card's rate is
//! measured against the pipeline clock and libswresample's compensation stretches or squeezes
//! each frame by a sample or so). Only a step is corrected at once (samples lost, a device
//! reopened: more than 40 ms off the smoothed offset for three frames in a row, or more than
//! [`RESYNC_THRESHOLD_US`](super::timeline::RESYNC_THRESHOLD_US) at once; see
//! [`follow`](super::timeline::follow)): a gap is filled with silence, an excess is
//! removed by skipping the input frame. Audio therefore stays on the capture clock, which
//! video shares, for any run length, without clicks.
//!
//! Priming: the encoder delays its output by `initial_padding` (1024) samples, so the first
//! packet has pts −1024. FLV cannot signal priming, so players play the priming frame like any
//! other. We shift the whole audio timeline by the padding: the first packet is stamped with the
//! pipeline time of the first input sample and every later packet keeps its exact 1024-sample
//! spacing from it. Nothing is clamped or dropped, timestamps never go negative, and audio
//! starts with video; the cost is that the sound a player hears is 21.3 ms late, well inside
//! lip-sync tolerance.
//!
//! While a microphone is reconnecting, [`AudioEncoder::fill_silence`] continues the counted
//! timeline with silence up to the capture clock, in whole 1024-sample frames; when the
//! microphone is back its frames are checked against the timeline like any other. Silence is
//! pushed and encoded one frame at a time, so a long gap never grows the FIFO.

use bytes::Bytes;
use ffmpeg::format::{sample::Type as SampleType, Sample};
use ffmpeg::packet::Mut as _;
use ffmpeg::ChannelLayout;
use ffmpeg_next as ffmpeg;

use super::drift::DriftControl;
use super::settings::AudioSettings;
use super::timeline::{follow, Adjust, AudioTimeline};
use super::{extradata_of, open_codec, EncodeError};
use crate::capture::{init_ffmpeg, AudioFrame};
use crate::health::{AudioBlock, BlockMeter};
use crate::media::EncodedPacket;

impl AudioSettings {
    /// What the encoder itself can take (broader than [`AudioSettings::validate`]).
    pub fn check_encodable(&self) -> Result<(), EncodeError> {
        const RATES: &[u32] = &[8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000];
        let invalid = |what: String| Err(EncodeError::InvalidSettings { what });
        if !RATES.contains(&self.sample_rate) {
            return invalid(format!(
                "[audio] sample_rate {} is not an AAC rate for streaming ({})",
                self.sample_rate,
                RATES
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if !(1..=2).contains(&self.channels) {
            return invalid(format!(
                "[audio] channels {}: only 1 (mono) or 2 (stereo) are supported",
                self.channels
            ));
        }
        if !(16..=512).contains(&self.bitrate_kbps) {
            return invalid(format!(
                "[audio] bitrate_kbps {} is out of range (16..=512; 128 is usual)",
                self.bitrate_kbps
            ));
        }
        Ok(())
    }

    fn layout(&self) -> ChannelLayout {
        if self.channels == 1 {
            ChannelLayout::MONO
        } else {
            ChannelLayout::STEREO
        }
    }
}

/// Planar `f32` samples waiting to fill a 1024-sample frame. Buffers only grow, to the
/// largest burst seen, and are reused.
#[derive(Debug)]
pub(crate) struct SampleFifo {
    planes: Vec<Vec<f32>>,
}

impl SampleFifo {
    pub(crate) fn new(channels: usize) -> Self {
        Self {
            planes: (0..channels).map(|_| Vec::with_capacity(8192)).collect(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.planes.first().map_or(0, Vec::len)
    }

    pub(crate) fn push_silence(&mut self, n: usize) {
        for p in &mut self.planes {
            p.resize(p.len() + n, 0.0);
        }
    }

    /// Lets `write` fill up to `max` samples per plane through raw pointers; `write` returns
    /// how many it wrote (or a negative error, returned as is).
    pub(crate) fn append_with(
        &mut self,
        max: usize,
        write: impl FnOnce(&mut [*mut u8]) -> i32,
    ) -> i32 {
        let len = self.len();
        let mut ptrs = [std::ptr::null_mut::<u8>(); 8];
        for (c, p) in self.planes.iter_mut().enumerate() {
            p.resize(len + max, 0.0);
            ptrs[c] = p[len..].as_mut_ptr() as *mut u8;
        }
        let n = write(&mut ptrs[..self.planes.len()]);
        let written = usize::try_from(n).unwrap_or(0).min(max);
        for p in &mut self.planes {
            p.truncate(len + written);
        }
        n
    }

    /// The last `n` samples of each plane (what was just appended).
    pub(crate) fn tail(&self, n: usize) -> [&[f32]; crate::health::MAX_CHANNELS] {
        let mut out: [&[f32]; crate::health::MAX_CHANNELS] = [&[]; crate::health::MAX_CHANNELS];
        for (o, p) in out.iter_mut().zip(&self.planes) {
            *o = &p[p.len() - n.min(p.len())..];
        }
        out
    }

    /// Moves the first `n` samples of each plane into `out(channel, samples)`.
    pub(crate) fn pop(&mut self, n: usize, mut out: impl FnMut(usize, &[f32])) {
        for (c, p) in self.planes.iter_mut().enumerate() {
            out(c, &p[..n]);
            p.copy_within(n.., 0);
            p.truncate(p.len() - n);
        }
    }
}

/// The 2-byte AudioSpecificConfig of AAC-LC at a standard rate.
///
/// FFmpeg's encoder appends a 3-byte sync extension (`0x2b7`, SBR, "absent") that only states
/// there is no SBR. Players and ingest servers expect the plain 2 bytes for AAC-LC (some
/// mishandle longer configs), and the first 16 bits are a complete config when the object type
/// is LC and the rate has an index, so those are kept. Anything else is passed through.
fn core_asc(asc: Bytes) -> Bytes {
    let is_lc = asc.first().is_some_and(|b| b >> 3 == 2);
    let has_rate_index = asc.len() >= 2 && (((asc[0] & 0x07) << 1) | (asc[1] >> 7)) != 0x0f;
    if is_lc && has_rate_index && asc.len() > 2 {
        asc.slice(..2)
    } else {
        asc
    }
}

struct Resampler {
    ctx: ffmpeg::software::resampling::Context,
    from: (Sample, u64, u32),
    /// Follows the source's sample clock (see [`super::drift`]).
    drift: DriftControl,
}

/// How the audio timeline follows the capture clock, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct AudioSync {
    /// The source's measured rate error, ppm (positive: it delivers more samples per second
    /// than it claims); `None` until measured.
    pub drift_ppm: Option<f64>,
    /// How late audio is stamped against its capture time, seconds (low-passed; positive:
    /// audio behind video); `None` before the first frame.
    pub av_offset_s: Option<f64>,
    /// Gross corrections: times silence was inserted into the timeline (samples lost, a device
    /// reopened) and captured frames skipped (the timeline ahead).
    pub silence_inserted: u64,
    pub frames_skipped: u64,
}

/// An open AAC encoder.
pub struct AudioEncoder {
    encoder: ffmpeg::encoder::audio::Encoder,
    settings: AudioSettings,
    layout: ChannelLayout,
    frame_size: usize,
    initial_padding: i64,
    /// The encoder's input frame, allocated once.
    frame: ffmpeg::frame::Audio,
    packet: ffmpeg::Packet,
    resampler: Option<Resampler>,
    fifo: SampleFifo,
    timeline: AudioTimeline,
    /// Samples sent to the encoder (its input pts).
    samples_sent: i64,
    asc: Bytes,
    sync: AudioSync,
    flushed: bool,
    /// Media health's level meter over the captured sound, when on.
    levels: Option<BlockMeter>,
}

impl AudioEncoder {
    pub fn open(settings: &AudioSettings) -> Result<Self, EncodeError> {
        init_ffmpeg();
        settings.check_encodable()?;
        let codec =
            ffmpeg::encoder::find_by_name("aac").ok_or_else(|| EncodeError::EncoderNotFound {
                name: "aac".into(),
                available: Vec::new(),
            })?;
        let layout = settings.layout();
        let ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
        let mut enc = ctx.encoder().audio().map_err(|source| EncodeError::Open {
            encoder: "aac".into(),
            source,
            hint: "this is a bug in polypush",
        })?;
        enc.set_rate(settings.sample_rate as i32);
        enc.set_channel_layout(layout);
        enc.set_channels(i32::from(settings.channels));
        enc.set_format(Sample::F32(SampleType::Planar));
        enc.set_bit_rate(settings.bitrate_kbps as usize * 1000);
        enc.set_time_base(ffmpeg::Rational(1, settings.sample_rate as i32));
        // SAFETY: plain fields of a not-yet-open codec context.
        unsafe {
            let raw = enc.as_mut_ptr();
            (*raw).flags |= ffmpeg::ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32;
            (*raw).profile = ffmpeg::ffi::FF_PROFILE_AAC_LOW;
        }
        // SAFETY: a context allocated for `codec`, not yet opened.
        open_codec(
            unsafe { enc.as_mut_ptr() },
            &codec,
            &[],
            "aac",
            "check [audio] sample_rate, channels and bitrate_kbps",
        )?;
        let encoder = ffmpeg::encoder::audio::Encoder(enc);
        // SAFETY: reading fields of the open context.
        let (frame_size, initial_padding) = unsafe {
            let raw = encoder.as_ptr();
            (
                (*raw).frame_size.max(1) as usize,
                i64::from((*raw).initial_padding),
            )
        };
        let asc = extradata_of(unsafe { encoder.as_ptr() })
            .map(core_asc)
            .ok_or(EncodeError::Open {
                encoder: "aac".into(),
                source: ffmpeg::Error::Bug,
                hint: "the AAC encoder produced no AudioSpecificConfig; report this with `ffmpeg -version`",
            })?;
        let mut frame =
            ffmpeg::frame::Audio::new(Sample::F32(SampleType::Planar), frame_size, layout);
        frame.set_rate(settings.sample_rate);
        tracing::info!(
            sample_rate = settings.sample_rate,
            channels = settings.channels,
            bitrate_kbps = settings.bitrate_kbps,
            frame_size,
            initial_padding,
            "audio encoder open"
        );
        Ok(Self {
            encoder,
            settings: settings.clone(),
            layout,
            frame_size,
            initial_padding,
            frame,
            packet: ffmpeg::Packet::empty(),
            resampler: None,
            fifo: SampleFifo::new(usize::from(settings.channels)),
            timeline: AudioTimeline::new(settings.sample_rate),
            samples_sent: 0,
            asc,
            sync: AudioSync::default(),
            flushed: false,
            levels: None,
        })
    }

    /// The AudioSpecificConfig (2 bytes for AAC-LC: `11 90` at 48 kHz stereo).
    pub fn extradata(&self) -> &Bytes {
        &self.asc
    }

    pub fn settings(&self) -> &AudioSettings {
        &self.settings
    }

    /// Samples per AAC frame (1024).
    pub fn frame_size(&self) -> usize {
        self.frame_size
    }

    /// Times the timeline was corrected against the capture clock (silence inserted or a
    /// frame skipped).
    pub fn corrections(&self) -> u64 {
        self.sync.silence_inserted + self.sync.frames_skipped
    }

    /// The measured drift, the offset and the gross corrections so far.
    pub fn sync(&self) -> AudioSync {
        self.sync
    }

    /// Meters the captured sound from now on in 100 ms blocks ([`AudioEncoder::take_levels`]),
    /// right after resampling: only captured samples, never the silence filled in for gaps
    /// or a lost microphone.
    pub fn meter_levels(&mut self) {
        self.levels = Some(BlockMeter::new(
            self.settings.sample_rate,
            usize::from(self.settings.channels),
        ));
    }

    /// The level blocks completed since the last call (none unless metering).
    pub fn take_levels(&mut self, mut out: impl FnMut(AudioBlock)) {
        if let Some(m) = self.levels.as_mut() {
            m.take().for_each(&mut out);
        }
    }

    /// Takes one captured frame and passes every AAC packet that is complete to `on_packet`.
    pub fn encode(
        &mut self,
        frame: &AudioFrame,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        let input = &frame.frame;
        let layout = if input.channel_layout().is_empty() {
            ChannelLayout::default(i32::from(input.channels()))
        } else {
            input.channel_layout()
        };
        let from = (input.format(), layout.bits(), input.rate());
        if self.resampler.as_ref().map(|r| r.from) != Some(from) {
            let ctx = ffmpeg::software::resampling::Context::get(
                from.0,
                layout,
                from.2,
                Sample::F32(SampleType::Planar),
                self.layout,
                self.settings.sample_rate,
            )
            .map_err(|source| EncodeError::Convert {
                from: format!("{:?} {} ch {} Hz", from.0, input.channels(), from.2),
                to: format!(
                    "fltp {} ch {} Hz",
                    self.settings.channels, self.settings.sample_rate
                ),
                source,
            })?;
            let mut drift = DriftControl::new(from.2, self.settings.sample_rate);
            if let Some(old) = self.resampler.take() {
                drift.carry_estimate_from(&old.drift);
            }
            let mut resampler = Resampler { ctx, from, drift };
            // Compensation needs swresample's resampling path even between equal rates: switch
            // it on now (this re-initialises the context), not in the middle of the stream.
            // SAFETY: a context we own, with no data in it yet.
            let ret =
                unsafe { ffmpeg::ffi::swr_set_compensation(resampler.ctx.as_mut_ptr(), 0, 0) };
            if ret < 0 {
                return Err(EncodeError::Convert {
                    from: format!("{:?} {} Hz", from.0, from.2),
                    to: format!(
                        "fltp {} Hz (with drift compensation)",
                        self.settings.sample_rate
                    ),
                    source: ffmpeg::Error::from(ret),
                });
            }
            self.resampler = Some(resampler);
        }
        let resampler = self.resampler.as_mut().expect("resampler set up above");

        match follow(&mut self.timeline, &mut resampler.drift, frame.pts_us) {
            Adjust::Keep => {}
            Adjust::Pad(n) => {
                self.sync.silence_inserted += 1;
                tracing::info!(
                    ms = n as i64 * 1000 / i64::from(self.settings.sample_rate),
                    "audio gap: inserting silence"
                );
                self.push_silence(n, on_packet)?;
            }
            Adjust::Skip => {
                self.sync.frames_skipped += 1;
                tracing::info!("audio ahead of the capture clock: skipping a frame");
                return Ok(());
            }
        }

        let resampler = self.resampler.as_mut().expect("resampler set up above");
        let in_samples = input.samples() as i32;
        let diff = self.timeline.diff_us(frame.pts_us).unwrap_or(0);
        let delta = resampler
            .drift
            .on_frame(frame.pts_us, input.samples(), diff);
        self.sync.drift_ppm = resampler.drift.drift_ppm();
        self.sync.av_offset_s = resampler.drift.av_offset_us().map(|us| us / 1e6);
        let distance = (i64::from(in_samples) * i64::from(self.settings.sample_rate)
            / i64::from(from.2.max(1)))
        .max(1) as i32;
        // SAFETY: swr_get_out_samples bounds what swr_convert writes for `in_samples` more
        // input; the FIFO reserves that much per plane; the input pointers are the decoded
        // frame's (extended_data has one pointer per plane for `in_samples` samples). The
        // compensation spreads `delta` samples over this frame's output.
        let written = unsafe {
            let swr = resampler.ctx.as_mut_ptr();
            // A failure leaves the rate as it was: the offset then grows until the gross check
            // corrects it, as before compensation existed.
            let _ = ffmpeg::ffi::swr_set_compensation(swr, delta, distance);
            let max = ffmpeg::ffi::swr_get_out_samples(swr, in_samples).max(0) as usize;
            let in_ptrs = (*input.as_ptr()).extended_data as *mut *const u8;
            self.fifo.append_with(max, |out| {
                ffmpeg::ffi::swr_convert(swr, out.as_mut_ptr(), max as i32, in_ptrs, in_samples)
            })
        };
        if written < 0 {
            return Err(EncodeError::Convert {
                from: format!("{:?} {} Hz", from.0, from.2),
                to: format!("fltp {} Hz", self.settings.sample_rate),
                source: ffmpeg::Error::from(written),
            });
        }
        self.timeline.advance(written as usize);
        if let Some(m) = self.levels.as_mut() {
            let tail = self.fifo.tail(written as usize);
            m.feed(&tail[..usize::from(self.settings.channels).min(tail.len())]);
        }

        while self.fifo.len() >= self.frame_size {
            self.send_frame(self.frame_size, on_packet)?;
        }
        Ok(())
    }

    /// Continues the timeline with silence up to `until_us` on the pipeline clock, in whole
    /// frames (the rest waits for the next call), while the source is away. Returns the number
    /// of frames encoded.
    pub fn fill_silence(
        &mut self,
        until_us: i64,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<u64, EncodeError> {
        let missing = self.timeline.missing_until(until_us);
        let whole = (self.fifo.len() + missing) / self.frame_size * self.frame_size;
        let silence = whole.saturating_sub(self.fifo.len());
        if silence > 0 {
            // The source is away: when it is back its samples continue another line.
            if let Some(r) = self.resampler.as_mut() {
                r.drift.reset();
            }
        }
        self.push_silence(silence, on_packet)
    }

    /// Appends `n` samples of silence to the timeline, encoding every frame it completes as it
    /// goes (the FIFO stays under a frame whatever `n`). Returns the frames encoded.
    fn push_silence(
        &mut self,
        mut n: usize,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<u64, EncodeError> {
        let mut frames = 0;
        while n > 0 {
            let room = self.frame_size.saturating_sub(self.fifo.len()).max(1);
            let chunk = n.min(room);
            self.fifo.push_silence(chunk);
            self.timeline.advance(chunk);
            n -= chunk;
            while self.fifo.len() >= self.frame_size {
                self.send_frame(self.frame_size, on_packet)?;
                frames += 1;
            }
        }
        Ok(frames)
    }

    /// Encodes what is left (a short last frame) and drains the encoder; the encoder cannot be
    /// used afterwards.
    pub fn flush(
        &mut self,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        if self.flushed {
            return Ok(());
        }
        self.flushed = true;
        let rest = self.fifo.len();
        if rest > 0 {
            self.send_frame(rest, on_packet)?;
        }
        self.encoder
            .send_eof()
            .map_err(|source| self.encode_error(source))?;
        self.drain(on_packet)
    }

    fn send_frame(
        &mut self,
        n: usize,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        // SAFETY: the encoder frame is ours; make_writable copies its buffer only if the
        // encoder still references it.
        let ret = unsafe { ffmpeg::ffi::av_frame_make_writable(self.frame.as_mut_ptr()) };
        if ret < 0 {
            return Err(self.encode_error(ffmpeg::Error::from(ret)));
        }
        let frame = &mut self.frame;
        // A short last frame: the buffer stays allocated for `frame_size`.
        frame.set_samples(n);
        self.fifo.pop(n, |c, samples| {
            frame.plane_mut::<f32>(c)[..n].copy_from_slice(samples);
        });
        frame.set_pts(Some(self.samples_sent));
        self.samples_sent += n as i64;
        self.encoder
            .send_frame(&self.frame)
            .map_err(|source| self.encode_error(source))?;
        self.frame.set_samples(self.frame_size);
        self.drain(on_packet)
    }

    fn drain(&mut self, on_packet: &mut dyn FnMut(&EncodedPacket<'_>)) -> Result<(), EncodeError> {
        loop {
            match self.encoder.receive_packet(&mut self.packet) {
                Ok(()) => {
                    let pts = self.packet.pts().unwrap_or(0) + self.initial_padding;
                    let ms = self.timeline.ms_at(pts);
                    on_packet(&EncodedPacket {
                        data: self.packet.data().unwrap_or_default(),
                        pts_ms: ms,
                        dts_ms: ms,
                        keyframe: self.packet.is_key(),
                        reopened: None,
                    });
                    // SAFETY: the packet is ours and nothing borrows its payload any more.
                    unsafe { ffmpeg::ffi::av_packet_unref(self.packet.as_mut_ptr()) };
                }
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => return Err(self.encode_error(source)),
            }
        }
    }

    fn encode_error(&self, source: ffmpeg::Error) -> EncodeError {
        EncodeError::Encode {
            encoder: "aac".into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::EncodedPacketBuf;

    #[test]
    fn swresample_compensation_follows_a_fast_source() {
        let mut enc = AudioEncoder::open(&AudioSettings::default()).unwrap();
        let mut packets = 0;
        let rate = 48_000.0 * 1.005;
        let mut worst_us = 0i64;
        for k in 0..(60.0 * rate / 1024.0) as i64 {
            let mut frame = ffmpeg::frame::Audio::new(
                Sample::F32(SampleType::Packed),
                1024,
                ChannelLayout::STEREO,
            );
            frame.set_rate(48_000);
            frame.plane_mut::<f32>(0).fill(0.1);
            let pts_us = 1_000_000 + (k as f64 * 1024.0 / rate * 1e6) as i64;
            if k as f64 > 40.0 * rate / 1024.0 {
                let diff = enc.timeline.diff_us(pts_us).unwrap();
                worst_us = worst_us.max(diff.abs());
            }
            let captured = crate::capture::Captured { frame, pts_us };
            enc.encode(&captured, &mut |_| packets += 1).unwrap();
        }
        let sync = enc.sync();
        assert_eq!((sync.silence_inserted, sync.frames_skipped), (0, 0));
        assert!(worst_us < 3_000, "worst {worst_us} µs after 40 s");
        let ppm = sync.drift_ppm.unwrap();
        assert!((ppm - 5000.0).abs() < 5.0, "{ppm}");
        assert!(sync.av_offset_s.unwrap().abs() < 0.005, "{sync:?}");
        assert!(packets > 2700, "{packets}");
    }

    #[test]
    fn silence_fills_whole_frames_up_to_the_clock() {
        let mut enc = AudioEncoder::open(&AudioSettings::default()).unwrap();
        let mut out = Vec::new();
        // 500 samples of a real frame at 1 s, then the microphone is gone.
        let mut frame =
            ffmpeg::frame::Audio::new(Sample::F32(SampleType::Planar), 500, ChannelLayout::STEREO);
        frame.set_rate(48_000);
        for plane in 0..2 {
            frame.plane_mut::<f32>(plane).fill(0.0);
        }
        let captured = crate::capture::Captured {
            frame,
            pts_us: 1_000_000,
        };
        enc.encode(&captured, &mut |p| out.push(EncodedPacketBuf::from(p)))
            .unwrap();
        // 100 ms later: 4800 samples are due, 500 + 4300 of silence is 4 whole frames (4096).
        let filled = enc
            .fill_silence(1_100_000, &mut |p| out.push(EncodedPacketBuf::from(p)))
            .unwrap();
        assert_eq!(filled, 4);
        assert_eq!(enc.fifo.len(), 0);
        // Nothing more is due until another frame's worth of time has passed.
        assert_eq!(
            enc.fill_silence(1_100_000, &mut |p| out.push(EncodedPacketBuf::from(p)))
                .unwrap(),
            0
        );
        assert_eq!(
            enc.fill_silence(1_107_000, &mut |p| out.push(EncodedPacketBuf::from(p)))
                .unwrap(),
            1
        );
        // A long gap (a minute) is encoded frame by frame, never buffered whole.
        let filled = enc
            .fill_silence(61_107_000, &mut |p| out.push(EncodedPacketBuf::from(p)))
            .unwrap();
        assert_eq!(filled, 60 * 48_000 / 1024);
        assert!(enc.fifo.len() < 1024);
        enc.flush(&mut |p| out.push(EncodedPacketBuf::from(p)))
            .unwrap();
        let dts: Vec<i64> = out.iter().map(|p| p.dts_ms).collect();
        assert!(dts.windows(2).all(|w| (21..=22).contains(&(w[1] - w[0]))));
    }

    #[test]
    fn fifo_appends_and_pops_planes() {
        let mut f = SampleFifo::new(2);
        f.push_silence(3);
        let n = f.append_with(4, |ptrs| {
            for (c, p) in ptrs.iter().enumerate() {
                // SAFETY: each pointer has room for 4 f32.
                let s = unsafe { std::slice::from_raw_parts_mut(*p as *mut f32, 4) };
                s[..2].copy_from_slice(&[c as f32 + 1.0, c as f32 + 2.0]);
            }
            2
        });
        assert_eq!(n, 2);
        assert_eq!(f.len(), 5);
        let mut out = vec![Vec::new(); 2];
        f.pop(4, |c, s| out[c] = s.to_vec());
        assert_eq!(out[0], vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(out[1], vec![0.0, 0.0, 0.0, 2.0]);
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn core_asc_drops_the_sbr_absent_extension_only() {
        let ffmpeg_asc = Bytes::from_static(&[0x11, 0x90, 0x56, 0xe5, 0x00]);
        assert_eq!(&core_asc(ffmpeg_asc)[..], &[0x11, 0x90]);
        // HE-AAC (object type 5) is left alone.
        let he = Bytes::from_static(&[0x2b, 0x92, 0x08, 0x00]);
        assert_eq!(core_asc(he.clone()), he);
    }

    #[test]
    fn asc_for_48k_stereo_is_1190() {
        let enc = AudioEncoder::open(&AudioSettings::default()).unwrap();
        assert_eq!(&enc.extradata()[..], &[0x11, 0x90]);
        assert_eq!(enc.frame_size(), 1024);
    }
}
