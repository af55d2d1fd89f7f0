//! The H.264 encoder: libx264 (default) or `h264_v4l2m2m` (the Raspberry Pi's hardware encoder).
//!
//! libx264 is opened for live streaming: `tune=zerolatency` (no lookahead, no frame delay),
//! no B-frames, a fixed GOP of `keyframe_interval_s × fps` frames with scene-cut detection off
//! (`sc_threshold=0`) so keyframes are regular (players and ingest servers join on them), and
//! CBR-like rate control: `bit_rate = rc_max_rate = target` and a VBV buffer of
//! `target × vbv_seconds`. The VBV must be configured at open: x264 can re-target an enabled VBV
//! with `x264_encoder_reconfig`, but cannot enable it later. FFmpeg 5.1's libx264 wrapper
//! (`reconfig_encoder`, run before every frame) compares `bit_rate`, `rc_max_rate` and
//! `rc_buffer_size` of the live context with what x264 was given and reconfigures when they
//! differ, so [`VideoEncoder::set_bitrate`] only writes those three fields.
//!
//! Everything else the adaptation controller asks for is a reopen ([`VideoEncoder::reopen`]):
//! a bitrate change on an encoder that cannot make it while running (`h264_v4l2m2m`; every
//! encoder but libx264, or libx264 with [`VideoSettings::reopen_on_rate_change`]), and a
//! divided frame rate or size ([`super::Target`]). Between two frames the old encoder is flushed
//! and closed (a hardware encoder may not run two sessions), and a new one opened at
//! `fps / fps_divisor` (GOP recomputed, so keyframes stay `keyframe_interval_s` apart) and
//! `width, height / scale_divisor` (rounded down to even). Its first frame is an IDR; the frames
//! keep their capture timestamps, so the stream goes on without a gap; its first packet carries
//! the new parameters ([`EncodedPacket::reopened`]). With the same size and profile libx264's
//! SPS/PPS come out byte for byte the same, so only a size change needs a new sequence header.
//! A reopen takes 2–8 ms for libx264 at 720p on an x86 box. Should the encoder refuse the new
//! settings it is opened again at the old ones ([`Reopened::Refused`]); should that fail too,
//! the pipeline stops with the error and the broadcast ends with it.
//!
//! With `AV_CODEC_FLAG_GLOBAL_HEADER`, libx264's extradata is the SPS and PPS in Annex B (not
//! an avcC record) and IDR packets do not repeat them. `h264_v4l2m2m` may leave extradata empty
//! and put SPS/PPS in front of the first IDR instead: [`VideoEncoder::parameter_sets_inline`]
//! tells the caller to take them from the first keyframe packet.
//!
//! Decoded camera frames often carry `pict_type = I` (every MJPEG frame is an intra picture);
//! libx264 honours a frame's picture type and would make every frame an IDR. The picture type
//! is therefore reset before every frame and set to `I` only for a requested keyframe.
//!
//! While a camera is reconnecting the encoder repeats a still picture
//! ([`VideoEncoder::encode_still`]): the last picture it encoded with the luma lowered to a
//! third and the colour halved, so viewers see that the camera is gone rather than a frozen
//! picture (a dark frame when there is no last picture). It goes through the same encoder, so
//! the GOP and the rate control carry on, and a repeated picture costs a few bytes a frame. The
//! last picture is in the conversion frame when it was converted; a frame that needed no
//! conversion ([`VideoEncoder::encoded_as_is`]) is not copied: the encode loop keeps a reference
//! to it (a camera's frame may be a device buffer, which it gives back when the capture side
//! asks) and hands it to [`VideoEncoder::remember_picture`] once, when the camera is lost.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ffmpeg::format::Pixel;
use ffmpeg::packet::Mut as _;
use ffmpeg_next as ffmpeg;

use super::settings::VideoSettings;
use super::target::{normalized, Target};
use super::EncodeError;
use crate::capture::{init_ffmpeg, VideoFrame};
use crate::media::{EncodedPacket, VideoParams};

mod open;
mod picture;
#[cfg(test)]
mod tests;

use open::{open_context, vbv_bits, Opened};
pub(super) use picture::Scaler;
use picture::{conversion_frame, darken, fill_black};

/// H.264 encoders polypush knows about, in order of preference. Only some are usable (see
/// [`VideoEncoder::open`]); the list is what error messages check for.
pub const KNOWN_H264_ENCODERS: &[&str] = &[
    "libx264",
    "h264_v4l2m2m",
    "h264_omx",
    "h264_vaapi",
    "h264_qsv",
    "h264_nvenc",
    "libopenh264",
];

/// Encoders that need hardware frames uploaded by the caller.
const HW_FRAME_ENCODERS: &[&str] = &["h264_vaapi", "h264_qsv"];

/// The default [`VideoSettings::min_reopen_interval`]: a reopen costs an IDR (and, on a
/// hardware encoder, a few frames of latency), so a link that keeps moving does not get one
/// every controller tick.
pub const MIN_REOPEN_INTERVAL: Duration = Duration::from_secs(5);

/// The H.264 encoders of [`KNOWN_H264_ENCODERS`] present in the linked FFmpeg that polypush
/// can feed (software frames).
pub fn available_h264_encoders() -> Vec<String> {
    init_ffmpeg();
    KNOWN_H264_ENCODERS
        .iter()
        .filter(|name| !HW_FRAME_ENCODERS.contains(name))
        .filter(|name| ffmpeg::encoder::find_by_name(name).is_some())
        .map(|s| s.to_string())
        .collect()
}

fn closed(encoder: &str) -> EncodeError {
    EncodeError::EncoderClosed {
        encoder: encoder.to_string(),
    }
}

/// What [`VideoEncoder::reopen`] did.
#[derive(Debug)]
pub enum Reopened {
    /// The encoder runs at the new target.
    Applied,
    /// The encoder refused the new target and was opened again with the one it ran at (the
    /// stream goes on, from an IDR); the error says why.
    Refused(EncodeError),
}

/// An open H.264 encoder.
pub struct VideoEncoder {
    encoder: EncoderState,
    settings: VideoSettings,
    /// What the encoder runs at: bitrate and the frame-rate and size divisors.
    target: Target,
    /// Output size: the configured one divided by `target.scale_divisor`.
    width: u32,
    height: u32,
    pix_fmt: Pixel,
    scaler: Option<Scaler>,
    /// Conversion target, allocated once per output size.
    converted: ffmpeg::frame::Video,
    packet: ffmpeg::Packet,
    extradata: Option<Bytes>,
    keyframe_requested: bool,
    last_pts_ms: Option<i64>,
    /// Where the last picture encoded is, for the still.
    last: LastPicture,
    /// The picture repeated while the camera is away; allocated at the first loss (again
    /// after a reopen at another size).
    still: Option<ffmpeg::frame::Video>,
    /// A lowered VBV on its way in (see [`set_bitrate`](Self::set_bitrate)).
    vbv: VbvChange,
    /// A reopened encoder's parameters, for its first packet.
    announce: Option<Arc<VideoParams>>,
}

/// Where [`VideoEncoder`]'s codec is in its life.
enum EncoderState {
    /// Frames go in, packets come out.
    Open(ffmpeg::encoder::video::Encoder),
    /// Drained and closed ([`VideoEncoder::flush`]: at the end of the stream, or before a
    /// reopen). A frame sent now is refused as FFmpeg refuses one after the end of stream.
    Flushed,
    /// Closed for good: a reopen failed with the new target and with the previous one. Every
    /// frame is refused with [`EncodeError::EncoderClosed`].
    Broken,
}

/// Where the last picture encoded is: the still ([`VideoEncoder::prepare_still`]) is made of
/// it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LastPicture {
    /// Nowhere: nothing encoded yet, or it could not be scaled to a new size.
    None,
    /// In `converted`: it was converted on its way to the encoder.
    Converted,
    /// With the caller: the captured frame went to the encoder as it was (no conversion), and
    /// `converted` does not hold it ([`VideoEncoder::remember_picture`] copies it there).
    AsIs,
    /// In `converted`: the captured frame went to the encoder as it was and was copied there
    /// since by [`VideoEncoder::remember_picture`].
    Remembered,
}

impl LastPicture {
    /// Whether `converted` holds the last picture.
    fn in_converted(self) -> bool {
        matches!(self, Self::Converted | Self::Remembered)
    }

    /// Whether the last captured frame went to the encoder as it was.
    fn went_as_is(self) -> bool {
        matches!(self, Self::AsIs | Self::Remembered)
    }

    /// Once the last picture has been copied or converted into `converted`.
    fn copied(self) -> Self {
        if self.went_as_is() {
            Self::Remembered
        } else {
            Self::Converted
        }
    }

    /// Once `converted` has lost it (it could not be scaled to a new size).
    fn lost(self) -> Self {
        if self.went_as_is() {
            Self::AsIs
        } else {
            Self::None
        }
    }
}

/// A lowered VBV (maximum rate and buffer) on its way to libx264: the frame that carries the
/// lowered average goes in first, the VBV before the frame after it (see
/// [`VideoEncoder::set_bitrate`]). A raise writes both at once and leaves nothing here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum VbvChange {
    /// Nothing waits: the context has what x264 is to run at.
    None,
    /// The average was lowered for the next frame; this VBV follows once that frame is in.
    AfterNextFrame(u32),
    /// The frame with the lowered average is in; this VBV goes in before the next frame.
    BeforeNextFrame(u32),
    /// Lowered again before the previous decrease's VBV went in (decreases on consecutive
    /// frames): `before` goes in before the next frame, `after` once that frame is in.
    BeforeAndAfterNextFrame { before: u32, after: u32 },
}

impl VbvChange {
    /// The average is lowered to `kbps` for the next frame: its VBV follows after that frame;
    /// one already due before the next frame stays due.
    fn lowered(self, kbps: u32) -> Self {
        match self {
            Self::None | Self::AfterNextFrame(_) => Self::AfterNextFrame(kbps),
            Self::BeforeNextFrame(before) | Self::BeforeAndAfterNextFrame { before, .. } => {
                Self::BeforeAndAfterNextFrame {
                    before,
                    after: kbps,
                }
            }
        }
    }

    /// Before a frame: takes the VBV to write now.
    fn take_before_frame(&mut self) -> Option<u32> {
        match *self {
            Self::BeforeNextFrame(kbps) => {
                *self = Self::None;
                Some(kbps)
            }
            Self::BeforeAndAfterNextFrame { before, after } => {
                *self = Self::AfterNextFrame(after);
                Some(before)
            }
            Self::None | Self::AfterNextFrame(_) => None,
        }
    }

    /// A frame went in: a VBV waiting for it is due before the next one.
    fn frame_sent(self) -> Self {
        match self {
            Self::AfterNextFrame(kbps) | Self::BeforeAndAfterNextFrame { after: kbps, .. } => {
                Self::BeforeNextFrame(kbps)
            }
            Self::None | Self::BeforeNextFrame(_) => Self::None,
        }
    }
}

impl VideoEncoder {
    /// Opens the encoder named in `settings`. A name that is missing from this FFmpeg build is
    /// an error listing the H.264 encoders that are present.
    pub fn open(settings: &VideoSettings) -> Result<Self, EncodeError> {
        let target = Target::kbps(settings.bitrate_kbps);
        let opened = open_context(settings, target)?;
        tracing::info!(
            encoder = settings.encoder,
            width = settings.width,
            height = settings.height,
            fps = settings.fps,
            bitrate_kbps = settings.bitrate_kbps,
            gop = settings.gop_frames(),
            pix_fmt = ?opened.pix_fmt,
            global_header = opened.extradata.is_some(),
            rate_change = if settings.changes_rate_in_place() { "in place" } else { "reopen" },
            "video encoder open"
        );
        Ok(Self {
            encoder: EncoderState::Open(opened.encoder),
            settings: settings.clone(),
            target,
            width: settings.width,
            height: settings.height,
            pix_fmt: opened.pix_fmt,
            scaler: None,
            converted: conversion_frame(opened.pix_fmt, settings.width, settings.height),
            packet: ffmpeg::Packet::empty(),
            extradata: opened.extradata,
            keyframe_requested: false,
            last_pts_ms: None,
            last: LastPicture::None,
            still: None,
            vbv: VbvChange::None,
            announce: None,
        })
    }

    /// SPS and PPS in Annex B, when the encoder puts them in a global header (libx264).
    pub fn extradata(&self) -> Option<&Bytes> {
        self.extradata.as_ref()
    }

    /// True when there is no global header: SPS/PPS come inline in front of the first IDR
    /// (typically `h264_v4l2m2m`), and the caller builds the sequence header from that packet.
    pub fn parameter_sets_inline(&self) -> bool {
        self.extradata.is_none()
    }

    /// The settings the encoder was first opened with (the target divides them).
    pub fn settings(&self) -> &VideoSettings {
        &self.settings
    }

    /// What the encoder runs at.
    pub fn target(&self) -> Target {
        self.target
    }

    /// The current target bitrate.
    pub fn bitrate_kbps(&self) -> u32 {
        self.target.video_kbps
    }

    /// The output size.
    pub fn frame_size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The nominal frame rate as a fraction (`fps / fps_divisor`).
    pub fn frame_rate(&self) -> (u32, u32) {
        (self.settings.fps, u32::from(self.target.fps_divisor))
    }

    /// What the packetizer needs to know about the encoder as it runs now.
    pub fn params(&self) -> VideoParams {
        let (num, den) = self.frame_rate();
        VideoParams {
            encoder: self.settings.encoder.clone(),
            width: self.width,
            height: self.height,
            fps: ((num + den / 2) / den.max(1)).max(1),
            bitrate_kbps: self.target.video_kbps,
            extradata: self.extradata.clone(),
            parameter_sets_inline: self.extradata.is_none(),
        }
    }

    /// The pixel format frames are converted to.
    pub fn pixel_format(&self) -> Pixel {
        self.pix_fmt
    }

    /// Makes the next encoded frame an IDR (for a new RTMP session, a new viewer).
    pub fn request_keyframe(&mut self) {
        self.keyframe_requested = true;
    }

    /// Changes the target bitrate (and the VBV maximum and buffer with it) from the next frame
    /// on, in place. Only for encoders that can
    /// ([`VideoSettings::changes_rate_in_place`]); the others return
    /// [`EncodeError::BitrateChangeUnsupported`] and change it by [`reopen`](Self::reopen).
    ///
    /// libx264's wrapper re-targets the VBV before the bitrate within one frame. Lowering both
    /// at once would momentarily give x264 a maximum below the average ("max bitrate less than
    /// average bitrate, assuming CBR" in the log at every step), so a decrease lowers the
    /// average with the next frame and the VBV with the one after; an increase does both at once.
    pub fn set_bitrate(&mut self, kbps: u32) -> Result<(), EncodeError> {
        if !self.settings.changes_rate_in_place() {
            return Err(EncodeError::BitrateChangeUnsupported {
                encoder: self.settings.encoder.clone(),
            });
        }
        let kbps = kbps.clamp(super::target::MIN_KBPS, super::target::MAX_KBPS);
        if kbps == self.target.video_kbps {
            return Ok(());
        }
        if kbps < self.target.video_kbps {
            self.write_rate_control(Some(kbps), None);
            self.vbv = self.vbv.lowered(kbps);
        } else {
            self.write_rate_control(Some(kbps), Some(kbps));
            self.vbv = VbvChange::None;
        }
        tracing::debug!(
            from_kbps = self.target.video_kbps,
            to_kbps = kbps,
            "video bitrate changed"
        );
        self.target.video_kbps = kbps;
        Ok(())
    }

    fn write_rate_control(&mut self, average_kbps: Option<u32>, vbv_kbps: Option<u32>) {
        let EncoderState::Open(encoder) = &mut self.encoder else {
            return;
        };
        // SAFETY: libx264 reads these fields of the live context before each frame
        // (`reconfig_encoder`); they are plain integers and this thread owns the context.
        unsafe {
            let raw = encoder.as_mut_ptr();
            if let Some(kbps) = average_kbps {
                (*raw).bit_rate = i64::from(kbps) * 1000;
            }
            if let Some(kbps) = vbv_kbps {
                (*raw).rc_max_rate = i64::from(kbps) * 1000;
                (*raw).rc_buffer_size = vbv_bits(kbps, self.settings.vbv_seconds);
            }
        }
    }

    /// Closes the encoder and opens it again for `target`: a new bitrate on an encoder that
    /// cannot change it while running, or a new frame rate or size. Call between frames.
    ///
    /// What the old encoder still holds is flushed into `on_packet` first (nothing from
    /// libx264 with `zerolatency`; a hardware encoder's queue), and it is closed before the
    /// new one opens (a hardware encoder may not run two sessions). The next frame is an IDR
    /// and its packet carries the new [`VideoParams`] ([`EncodedPacket::reopened`]), so the
    /// packetizer can send a new sequence header first when the SPS/PPS changed. Timestamps go
    /// on from the frames' capture times: no gap, nothing backwards. The GOP restarts at the
    /// IDR and keeps its length in seconds at a divided frame rate. A smaller size is scaled to
    /// by the same conversion as any input; the last picture is kept (scaled) for the still.
    ///
    /// If the encoder refuses the new target it is opened again at the one it ran at and
    /// [`Reopened::Refused`] says why; if that fails too, the error is returned and the
    /// encoder stays closed (every later call fails with [`EncodeError::EncoderClosed`]).
    pub fn reopen(
        &mut self,
        target: Target,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<Reopened, EncodeError> {
        let target = normalized(target);
        let started = Instant::now();
        let previous = self.target;
        self.flush(on_packet)?;
        // Closed (the flush dropped it) until a new one opens.
        self.encoder = EncoderState::Broken;
        let (opened, applied, refused) = match open_context(&self.settings, target) {
            Ok(opened) => (opened, target, None),
            Err(e) => (open_context(&self.settings, previous)?, previous, Some(e)),
        };
        let old_extradata = self.extradata.clone();
        self.install(opened, applied);
        tracing::info!(
            encoder = self.settings.encoder,
            from_kbps = previous.video_kbps,
            to_kbps = applied.video_kbps,
            fps_divisor = applied.fps_divisor,
            width = self.width,
            height = self.height,
            new_parameter_sets = self.extradata.is_none() || self.extradata != old_extradata,
            took_ms = started.elapsed().as_secs_f64() * 1000.0,
            "video encoder reopened"
        );
        Ok(match refused {
            None => Reopened::Applied,
            Some(e) => Reopened::Refused(e),
        })
    }

    /// Takes a freshly opened encoder running at `target` in place of the closed one.
    fn install(&mut self, opened: Opened, target: Target) {
        let (width, height) = self.settings.frame_size(target.scale_divisor);
        if (opened.pix_fmt, width, height) != (self.pix_fmt, self.width, self.height) {
            let mut converted = conversion_frame(opened.pix_fmt, width, height);
            if self.last.in_converted() {
                // The last picture, at the new size, for a still.
                let from = (self.pix_fmt, self.width, self.height, false);
                let scaled = Scaler::new(from, (opened.pix_fmt, width, height))
                    .and_then(|mut s| s.run(&self.converted, &mut converted));
                if scaled.is_err() {
                    self.last = self.last.lost();
                }
            }
            self.converted = converted;
            self.scaler = None;
            self.still = None;
            (self.pix_fmt, self.width, self.height) = (opened.pix_fmt, width, height);
        }
        self.encoder = EncoderState::Open(opened.encoder);
        self.extradata = opened.extradata;
        self.target = target;
        self.keyframe_requested = true;
        self.vbv = VbvChange::None;
        self.announce = Some(Arc::new(self.params()));
    }

    /// Whether the last captured frame was encoded as it was, without conversion: the still
    /// can then only be made of it through [`remember_picture`](Self::remember_picture).
    pub fn encoded_as_is(&self) -> bool {
        self.last.went_as_is()
    }

    /// Copies `picture`, the last frame encoded as is, for [`prepare_still`](Self::prepare_still)
    /// (once, when the camera is lost or the frame must be given back, instead of every frame).
    /// A picture of another format or size (the encoder was reopened at another size since)
    /// is converted.
    pub fn remember_picture(&mut self, picture: &ffmpeg::frame::Video) -> Result<(), EncodeError> {
        let full_range = picture.color_range() == ffmpeg::color::Range::JPEG;
        let from = (
            picture.format(),
            picture.width(),
            picture.height(),
            full_range,
        );
        if full_range || (from.0, from.1, from.2) != (self.pix_fmt, self.width, self.height) {
            self.convert(picture)?;
            self.last = self.last.copied();
            return Ok(());
        }
        // SAFETY: both frames have the encoder's format and size (checked above);
        // make_writable copies only if the encoder still references the buffer.
        let ret = unsafe {
            let ret = ffmpeg::ffi::av_frame_make_writable(self.converted.as_mut_ptr());
            if ret < 0 {
                ret
            } else {
                ffmpeg::ffi::av_frame_copy(self.converted.as_mut_ptr(), picture.as_ptr())
            }
        };
        if ret < 0 {
            return Err(self.convert_error(from, ffmpeg::Error::from(ret)));
        }
        self.last = self.last.copied();
        Ok(())
    }

    /// Encodes one frame (converted first if its format or size differs from the encoder's)
    /// and passes every packet that comes out to `on_packet`.
    ///
    /// The frame's `pts_us` becomes the packet's milliseconds; a frame whose millisecond does
    /// not advance past the previous one is moved 1 ms later (the encoder requires strictly
    /// increasing timestamps).
    pub fn encode(
        &mut self,
        frame: &mut VideoFrame,
        force_keyframe: bool,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        self.submit(
            Picture::Captured(&mut frame.frame),
            frame.pts_us,
            force_keyframe,
            on_packet,
        )
    }

    /// Makes the still picture [`encode_still`](Self::encode_still) repeats from the last
    /// picture encoded (darkened), or a dark frame if there is none. Call when the camera is
    /// lost; the buffer is reused from one loss to the next.
    pub fn prepare_still(&mut self) -> Result<(), EncodeError> {
        let (pix_fmt, width, height) = (self.pix_fmt, self.width, self.height);
        let still = self
            .still
            .get_or_insert_with(|| conversion_frame(pix_fmt, width, height));
        let encode_error = |source| EncodeError::Encode {
            encoder: self.settings.encoder.clone(),
            source,
        };
        // SAFETY: both frames are ours and of the encoder's format and size; make_writable
        // copies the still's buffer only if the encoder still references it.
        unsafe {
            let ret = ffmpeg::ffi::av_frame_make_writable(still.as_mut_ptr());
            if ret < 0 {
                return Err(encode_error(ffmpeg::Error::from(ret)));
            }
            if self.last.in_converted() {
                let ret = ffmpeg::ffi::av_frame_copy(still.as_mut_ptr(), self.converted.as_ptr());
                if ret < 0 {
                    return Err(encode_error(ffmpeg::Error::from(ret)));
                }
            } else {
                fill_black(still, pix_fmt).map_err(encode_error)?;
            }
        }
        darken(still, pix_fmt);
        Ok(())
    }

    /// The still picture (darkened, limited range, the encoder's format and size), once
    /// [`prepare_still`](Self::prepare_still) has made it: for a snapshot while the camera is
    /// away.
    pub fn still_picture(&self) -> Option<&ffmpeg::frame::Video> {
        self.still.as_ref()
    }

    /// Encodes the still picture at `pts_us` (pipeline clock) while the camera is away; the
    /// GOP and the bitrate behave as for any frame. Prepares the still if needed (also after
    /// a reopen at another size).
    pub fn encode_still(
        &mut self,
        pts_us: i64,
        force_keyframe: bool,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        if self.still.is_none() {
            self.prepare_still()?;
        }
        self.submit(Picture::Still, pts_us, force_keyframe, on_packet)
    }

    /// Converts `src` into the conversion frame (format, size and range of the encoder).
    fn convert(&mut self, src: &ffmpeg::frame::Video) -> Result<(), EncodeError> {
        let full_range = src.color_range() == ffmpeg::color::Range::JPEG;
        let from = (src.format(), src.width(), src.height(), full_range);
        let to = (self.pix_fmt, self.width, self.height);
        if self.scaler.as_ref().map(|s| (s.from, s.to)) != Some((from, to)) {
            let scaler =
                Scaler::new(from, to).map_err(|source| self.convert_error(from, source))?;
            tracing::debug!(from = ?from, to = ?to, "video conversion set up");
            self.scaler = Some(scaler);
        }
        // SAFETY: the conversion frame is ours; make_writable copies its buffer only if the
        // encoder still holds a reference to it.
        let ret = unsafe { ffmpeg::ffi::av_frame_make_writable(self.converted.as_mut_ptr()) };
        if ret < 0 {
            return Err(self.convert_error(from, ffmpeg::Error::from(ret)));
        }
        let result = match self.scaler.as_mut() {
            Some(scaler) => scaler.run(src, &mut self.converted),
            None => Err(ffmpeg::Error::Bug),
        };
        result.map_err(|source| self.convert_error(from, source))
    }

    fn submit(
        &mut self,
        picture: Picture<'_>,
        pts_us: i64,
        force_keyframe: bool,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        if matches!(self.encoder, EncoderState::Broken) {
            return Err(closed(&self.settings.encoder));
        }
        let mut pts_ms = pts_us.div_euclid(1000);
        if let Some(last) = self.last_pts_ms {
            if pts_ms <= last {
                pts_ms = last + 1;
            }
        }
        let keyframe = force_keyframe || self.keyframe_requested;

        if let Some(kbps) = self.vbv.take_before_frame() {
            self.write_rate_control(None, Some(kbps));
        }

        let target: &mut ffmpeg::frame::Video = match picture {
            Picture::Still => match self.still.as_mut() {
                Some(still) => still,
                // `encode_still` prepares it.
                None => {
                    return Err(EncodeError::Encode {
                        encoder: self.settings.encoder.clone(),
                        source: ffmpeg::Error::Bug,
                    })
                }
            },
            Picture::Captured(src) => {
                let full_range = src.color_range() == ffmpeg::color::Range::JPEG;
                let needs_conversion = src.format() != self.pix_fmt
                    || src.width() != self.width
                    || src.height() != self.height
                    || full_range;
                if needs_conversion {
                    self.convert(src)?;
                    self.last = LastPicture::Converted;
                    &mut self.converted
                } else {
                    self.last = LastPicture::AsIs;
                    src
                }
            }
        };
        target.set_pts(Some(pts_ms));
        target.set_kind(if keyframe {
            ffmpeg::picture::Type::I
        } else {
            ffmpeg::picture::Type::None
        });
        // SAFETY: a plain field of a frame we own.
        unsafe { (*target.as_mut_ptr()).key_frame = i32::from(keyframe) };
        let sent = match &mut self.encoder {
            EncoderState::Open(encoder) => encoder.send_frame(target),
            // What FFmpeg answers a frame sent after the end of stream.
            EncoderState::Flushed => Err(ffmpeg::Error::Eof),
            EncoderState::Broken => return Err(closed(&self.settings.encoder)),
        };
        sent.map_err(|source| EncodeError::Encode {
            encoder: self.settings.encoder.clone(),
            source,
        })?;
        self.last_pts_ms = Some(pts_ms);
        self.keyframe_requested = false;
        // A lowered VBV goes in with the frame after the lowered bitrate (see `set_bitrate`).
        self.vbv = self.vbv.frame_sent();
        self.drain(on_packet)
    }

    /// Drains the encoder at the end of the stream (or before a reopen); the encoder cannot
    /// be used afterwards.
    pub fn flush(
        &mut self,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        let EncoderState::Open(encoder) = &mut self.encoder else {
            // Flushed already, or closed.
            return Ok(());
        };
        let result = match encoder.send_eof() {
            Ok(()) => self.drain(on_packet),
            Err(source) => Err(EncodeError::Encode {
                encoder: self.settings.encoder.clone(),
                source,
            }),
        };
        self.encoder = EncoderState::Flushed;
        result
    }

    fn drain(&mut self, on_packet: &mut dyn FnMut(&EncodedPacket<'_>)) -> Result<(), EncodeError> {
        let encoder = match &mut self.encoder {
            EncoderState::Open(encoder) => encoder,
            // Nothing comes out after the end of stream.
            EncoderState::Flushed => return Ok(()),
            EncoderState::Broken => return Err(closed(&self.settings.encoder)),
        };
        loop {
            match encoder.receive_packet(&mut self.packet) {
                Ok(()) => {
                    let pts_ms = self.packet.pts().or(self.packet.dts()).unwrap_or(0);
                    let dts_ms = self.packet.dts().unwrap_or(pts_ms);
                    // The sink reads the payload where FFmpeg wrote it (the muxer makes the
                    // tag body from it in one pass), then the packet is reused.
                    on_packet(&EncodedPacket {
                        data: self.packet.data().unwrap_or_default(),
                        pts_ms,
                        dts_ms,
                        keyframe: self.packet.is_key(),
                        reopened: self.announce.take(),
                    });
                    // SAFETY: the packet is ours and nothing borrows its payload any more.
                    unsafe { ffmpeg::ffi::av_packet_unref(self.packet.as_mut_ptr()) };
                }
                Err(ffmpeg::Error::Other { errno }) if errno == libc::EAGAIN => return Ok(()),
                Err(ffmpeg::Error::Eof) => return Ok(()),
                Err(source) => {
                    return Err(EncodeError::Encode {
                        encoder: self.settings.encoder.clone(),
                        source,
                    })
                }
            }
        }
    }

    fn convert_error(&self, from: (Pixel, u32, u32, bool), source: ffmpeg::Error) -> EncodeError {
        EncodeError::Convert {
            from: format!("{:?} {}x{}", from.0, from.1, from.2),
            to: format!("{:?} {}x{}", self.pix_fmt, self.width, self.height),
            source,
        }
    }
}

/// What [`VideoEncoder::submit`] encodes.
enum Picture<'a> {
    Captured(&'a mut ffmpeg::frame::Video),
    Still,
}
