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

use super::settings::{VideoSettings, PROFILES, X264_PRESETS};
use super::target::{normalized, Target, MAX_DIVISOR};
use super::{extradata_of, open_codec, EncodeError};
use crate::capture::{init_ffmpeg, VideoFrame};
use crate::media::{EncodedPacket, VideoParams};

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

/// Encoders known to change their bitrate while running; every other one is reopened.
const IN_PLACE_RATE_ENCODERS: &[&str] = &["libx264"];

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

impl VideoSettings {
    /// Frames per GOP.
    pub fn gop_frames(&self) -> u32 {
        self.gop_frames_at(1)
    }

    /// Frames per GOP at the frame rate divided by `fps_divisor`: the keyframe interval in
    /// seconds stays.
    pub fn gop_frames_at(&self, fps_divisor: u8) -> u32 {
        let fps = f64::from(self.fps) / f64::from(fps_divisor.max(1));
        ((self.keyframe_interval_s * fps).round() as u32).max(1)
    }

    /// The output size at `scale_divisor`: width and height divided, rounded down to even
    /// (4:2:0), at least 16.
    pub fn frame_size(&self, scale_divisor: u8) -> (u32, u32) {
        let d = u32::from(scale_divisor.clamp(1, MAX_DIVISOR));
        let side = |v: u32| ((v / d) & !1).max(16).min(v);
        (side(self.width), side(self.height))
    }

    /// Whether this encoder changes its bitrate while running (libx264: FFmpeg's wrapper
    /// re-targets x264 before the next frame) rather than by a reopen
    /// ([`VideoEncoder::reopen`]). Only encoders known to do so; not with
    /// [`reopen_on_rate_change`](Self::reopen_on_rate_change).
    pub fn changes_rate_in_place(&self) -> bool {
        !self.reopen_on_rate_change && IN_PLACE_RATE_ENCODERS.contains(&self.encoder.as_str())
    }

    fn is_x264(&self) -> bool {
        self.encoder == "libx264"
    }

    /// What the encoder itself can take (broader than what a box is configured with:
    /// [`VideoSettings::validate`] checks that).
    pub fn check_encodable(&self) -> Result<(), EncodeError> {
        let invalid = |what: String| Err(EncodeError::InvalidSettings { what });
        if self.width < 16 || self.height < 16 || self.width > 8192 || self.height > 8192 {
            return invalid(format!(
                "[video] size {}x{} is out of range (16..=8192)",
                self.width, self.height
            ));
        }
        if self.width % 2 != 0 || self.height % 2 != 0 {
            return invalid(format!(
                "[video] size {}x{} must have even width and height (4:2:0 video)",
                self.width, self.height
            ));
        }
        if self.fps == 0 || self.fps > 240 {
            return invalid(format!(
                "[video] fps {} is out of range (1..=240)",
                self.fps
            ));
        }
        if !(50..=100_000).contains(&self.bitrate_kbps) {
            return invalid(format!(
                "[video] bitrate_kbps {} is out of range (50..=100000)",
                self.bitrate_kbps
            ));
        }
        if !(self.keyframe_interval_s > 0.0 && self.keyframe_interval_s <= 60.0) {
            return invalid(format!(
                "[video] keyframe_interval_s {} is out of range (0..=60; 2 is usual for live)",
                self.keyframe_interval_s
            ));
        }
        if !(self.vbv_seconds > 0.0 && self.vbv_seconds <= 10.0) {
            return invalid(format!(
                "[video] vbv_seconds {} is out of range (0..=10; 1 is usual)",
                self.vbv_seconds
            ));
        }
        if self.is_x264() && !X264_PRESETS.contains(&self.preset.as_str()) {
            return invalid(format!(
                "[video] preset '{}' is not an x264 preset ({})",
                self.preset,
                X264_PRESETS.join(", ")
            ));
        }
        if !PROFILES.contains(&self.profile.as_str()) {
            return invalid(format!(
                "[video] profile '{}' is not one of {}",
                self.profile,
                PROFILES.join(", ")
            ));
        }
        Ok(())
    }
}

/// A swscale context converting one input definition to the encoder's format and size.
///
/// We drive `sws_scale` directly rather than through ffmpeg-next's wrapper so that the
/// deprecated full-range "J" formats MJPEG decodes to (`yuvj422p`, `yuvj420p`) can be handed to
/// swscale as their plain equivalents plus an explicit full-range flag: the conversion to the
/// encoder's limited range is the same, without swscale's "deprecated pixel format" warning.
struct Scaler {
    ctx: *mut ffmpeg::ffi::SwsContext,
    /// Input format, width, height and whether it is full range.
    from: (Pixel, u32, u32, bool),
    /// Output format, width and height.
    to: (Pixel, u32, u32),
}

// SAFETY: an SwsContext is plain heap state without thread-local ties; moving it between
// threads is fine as long as it is not used concurrently, which `&mut self` guarantees.
unsafe impl Send for Scaler {}

impl Scaler {
    fn new(from: (Pixel, u32, u32, bool), to: (Pixel, u32, u32)) -> Result<Self, ffmpeg::Error> {
        let (src_fmt, full_range) = match from.0 {
            Pixel::YUVJ420P => (Pixel::YUV420P, true),
            Pixel::YUVJ422P => (Pixel::YUV422P, true),
            Pixel::YUVJ444P => (Pixel::YUV444P, true),
            Pixel::YUVJ440P => (Pixel::YUV440P, true),
            other => (other, from.3),
        };
        // SAFETY: sws_getContext returns an owned context or null; the coefficient tables are
        // static.
        unsafe {
            let ctx = ffmpeg::ffi::sws_getContext(
                from.1 as i32,
                from.2 as i32,
                src_fmt.into(),
                to.1 as i32,
                to.2 as i32,
                to.0.into(),
                ffmpeg::ffi::SWS_BILINEAR,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                std::ptr::null(),
            );
            if ctx.is_null() {
                return Err(ffmpeg::Error::InvalidData);
            }
            if full_range {
                let coefficients = ffmpeg::ffi::sws_getCoefficients(ffmpeg::ffi::SWS_CS_DEFAULT);
                ffmpeg::ffi::sws_setColorspaceDetails(
                    ctx,
                    coefficients,
                    1,
                    coefficients,
                    0,
                    0,
                    1 << 16,
                    1 << 16,
                );
            }
            Ok(Self { ctx, from, to })
        }
    }

    fn run(
        &mut self,
        src: &ffmpeg::frame::Video,
        dst: &mut ffmpeg::frame::Video,
    ) -> Result<(), ffmpeg::Error> {
        // SAFETY: `src` matches the definition the context was made for (checked by the
        // caller through `from`), `dst` is a writable frame of the output definition.
        let ret = unsafe {
            let s = &*src.as_ptr();
            let d = &mut *dst.as_mut_ptr();
            ffmpeg::ffi::sws_scale(
                self.ctx,
                s.data.as_ptr() as *const *const u8,
                s.linesize.as_ptr(),
                0,
                self.from.2 as i32,
                d.data.as_ptr(),
                d.linesize.as_ptr(),
            )
        };
        if ret < 0 {
            Err(ffmpeg::Error::from(ret))
        } else {
            Ok(())
        }
    }
}

impl Drop for Scaler {
    fn drop(&mut self) {
        // SAFETY: the context is owned and freed once.
        unsafe { ffmpeg::ffi::sws_freeContext(self.ctx) };
    }
}

/// An opened codec context and what came with it.
struct Opened {
    encoder: ffmpeg::encoder::video::Encoder,
    pix_fmt: Pixel,
    extradata: Option<Bytes>,
}

/// Opens the encoder named in `settings` for `target` (bitrate, frame rate and size divided
/// as it says).
fn open_context(settings: &VideoSettings, target: Target) -> Result<Opened, EncodeError> {
    init_ffmpeg();
    let name = settings.encoder.as_str();
    let codec =
        ffmpeg::encoder::find_by_name(name).ok_or_else(|| EncodeError::EncoderNotFound {
            name: name.to_string(),
            available: available_h264_encoders(),
        })?;
    if HW_FRAME_ENCODERS.contains(&name) {
        return Err(EncodeError::UnsupportedEncoder {
            name: name.to_string(),
        });
    }
    if codec.id() != ffmpeg::codec::Id::H264 {
        return Err(EncodeError::InvalidSettings {
            what: format!(
                "[video] encoder '{name}' is not an H.264 encoder (RTMP carries H.264); use one of {}",
                available_h264_encoders().join(", ")
            ),
        });
    }
    settings.check_encodable()?;
    let pix_fmt = codec
        .video()
        .ok()
        .and_then(|v| v.formats().map(|f| f.collect::<Vec<_>>()))
        .map(|formats| {
            [Pixel::YUV420P, Pixel::NV12]
                .into_iter()
                .find(|p| formats.contains(p))
                .or_else(|| formats.first().copied())
                .unwrap_or(Pixel::YUV420P)
        })
        .unwrap_or(Pixel::YUV420P);

    let ctx = ffmpeg::codec::context::Context::new_with_codec(codec);
    let mut enc = ctx.encoder().video().map_err(|source| EncodeError::Open {
        encoder: name.to_string(),
        source,
        hint: "this is a bug in polypush",
    })?;
    let target = normalized(target);
    let (width, height) = settings.frame_size(target.scale_divisor);
    let bps = u64::from(target.video_kbps) * 1000;
    let gop = settings.gop_frames_at(target.fps_divisor);
    enc.set_width(width);
    enc.set_height(height);
    enc.set_format(pix_fmt);
    enc.set_time_base(ffmpeg::Rational(1, 1000));
    enc.set_frame_rate(Some(ffmpeg::Rational(
        settings.fps as i32,
        i32::from(target.fps_divisor),
    )));
    enc.set_gop(gop);
    enc.set_max_b_frames(0);
    enc.set_bit_rate(bps as usize);
    enc.set_max_bit_rate(bps as usize);
    // SAFETY: plain fields of a not-yet-open codec context that ffmpeg-next has no setter for.
    unsafe {
        let raw = enc.as_mut_ptr();
        (*raw).rc_buffer_size = vbv_bits(target.video_kbps, settings.vbv_seconds);
        (*raw).keyint_min = gop as i32;
        (*raw).flags |= ffmpeg::ffi::AV_CODEC_FLAG_GLOBAL_HEADER as i32;
        (*raw).thread_count = settings.threads as i32;
        if !settings.is_x264() {
            (*raw).profile = match settings.profile.as_str() {
                "baseline" => ffmpeg::ffi::FF_PROFILE_H264_CONSTRAINED_BASELINE,
                "main" => ffmpeg::ffi::FF_PROFILE_H264_MAIN,
                _ => ffmpeg::ffi::FF_PROFILE_H264_HIGH,
            };
        }
    }
    let options: Vec<(&str, String)> = if settings.is_x264() {
        vec![
            ("preset", settings.preset.clone()),
            ("tune", "zerolatency".into()),
            ("profile", settings.profile.clone()),
            ("sc_threshold", "0".into()),
            ("forced-idr", "1".into()),
        ]
    } else {
        Vec::new()
    };
    let hint = if settings.is_x264() {
        "check [video] width, height, fps, bitrate_kbps, preset and profile"
    } else {
        "is the hardware encoder present (/dev/video11 on a Raspberry Pi) and does it support this size and profile? Otherwise set [video] encoder = \"libx264\""
    };
    // SAFETY: `enc` wraps a context allocated for `codec` and not yet opened.
    open_codec(unsafe { enc.as_mut_ptr() }, &codec, &options, name, hint)?;
    let encoder = ffmpeg::encoder::video::Encoder(enc);
    // SAFETY: reading the open context's extradata.
    let extradata = extradata_of(unsafe { encoder.as_ptr() });
    Ok(Opened {
        encoder,
        pix_fmt,
        extradata,
    })
}

/// A conversion target frame: the encoder's format and size, limited range.
fn conversion_frame(pix_fmt: Pixel, width: u32, height: u32) -> ffmpeg::frame::Video {
    let mut f = ffmpeg::frame::Video::new(pix_fmt, width, height);
    f.set_color_range(ffmpeg::color::Range::MPEG);
    f
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
    /// `None` only once a reopen failed with the new target and with the previous one.
    encoder: Option<ffmpeg::encoder::video::Encoder>,
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
    /// `converted` holds the last picture encoded.
    has_last: bool,
    /// The last captured picture went to the encoder as it was (no conversion).
    as_is: bool,
    /// The picture repeated while the camera is away; allocated at the first loss.
    still: Option<ffmpeg::frame::Video>,
    /// A lowered VBV waiting for the frame that carries the lowered bitrate to go in first.
    vbv_after_next_frame: Option<u32>,
    /// A lowered VBV to apply before the next frame.
    vbv_pending: Option<u32>,
    flushed: bool,
    /// A reopened encoder's parameters, for its first packet.
    announce: Option<Arc<VideoParams>>,
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
            encoder: Some(opened.encoder),
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
            has_last: false,
            as_is: false,
            still: None,
            vbv_after_next_frame: None,
            vbv_pending: None,
            flushed: false,
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
            self.vbv_after_next_frame = Some(kbps);
        } else {
            self.write_rate_control(Some(kbps), Some(kbps));
            self.vbv_after_next_frame = None;
            self.vbv_pending = None;
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
        let Some(encoder) = self.encoder.as_mut() else {
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
        self.encoder = None;
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
            if self.has_last {
                // The last picture, at the new size, for a still.
                let from = (self.pix_fmt, self.width, self.height, false);
                let scaled = Scaler::new(from, (opened.pix_fmt, width, height))
                    .and_then(|mut s| s.run(&self.converted, &mut converted));
                self.has_last = scaled.is_ok();
            }
            self.converted = converted;
            self.scaler = None;
            self.still = None;
            (self.pix_fmt, self.width, self.height) = (opened.pix_fmt, width, height);
        }
        self.encoder = Some(opened.encoder);
        self.extradata = opened.extradata;
        self.target = target;
        self.flushed = false;
        self.keyframe_requested = true;
        self.vbv_after_next_frame = None;
        self.vbv_pending = None;
        self.announce = Some(Arc::new(self.params()));
    }

    /// Whether the last captured frame was encoded as it was, without conversion: the still
    /// can then only be made of it through [`remember_picture`](Self::remember_picture).
    pub fn encoded_as_is(&self) -> bool {
        self.as_is
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
            self.has_last = true;
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
        self.has_last = true;
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
            if self.has_last {
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
        if self.encoder.is_none() {
            return Err(closed(&self.settings.encoder));
        }
        let mut pts_ms = pts_us.div_euclid(1000);
        if let Some(last) = self.last_pts_ms {
            if pts_ms <= last {
                pts_ms = last + 1;
            }
        }
        let keyframe = force_keyframe || self.keyframe_requested;

        if let Some(kbps) = self.vbv_pending.take() {
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
                    self.has_last = true;
                    self.as_is = false;
                    &mut self.converted
                } else {
                    self.has_last = false;
                    self.as_is = true;
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
        let sent = match self.encoder.as_mut() {
            Some(encoder) => encoder.send_frame(target),
            None => return Err(closed(&self.settings.encoder)),
        };
        sent.map_err(|source| EncodeError::Encode {
            encoder: self.settings.encoder.clone(),
            source,
        })?;
        self.last_pts_ms = Some(pts_ms);
        self.keyframe_requested = false;
        // A lowered VBV goes in with the frame after the lowered bitrate (see `set_bitrate`).
        self.vbv_pending = self.vbv_after_next_frame.take();
        self.drain(on_packet)
    }

    /// Drains the encoder at the end of the stream (or before a reopen); the encoder cannot
    /// be used afterwards.
    pub fn flush(
        &mut self,
        on_packet: &mut dyn FnMut(&EncodedPacket<'_>),
    ) -> Result<(), EncodeError> {
        if self.flushed {
            return Ok(());
        }
        let Some(encoder) = self.encoder.as_mut() else {
            return Ok(());
        };
        self.flushed = true;
        encoder.send_eof().map_err(|source| EncodeError::Encode {
            encoder: self.settings.encoder.clone(),
            source,
        })?;
        self.drain(on_packet)
    }

    fn drain(&mut self, on_packet: &mut dyn FnMut(&EncodedPacket<'_>)) -> Result<(), EncodeError> {
        let Some(encoder) = self.encoder.as_mut() else {
            return Err(closed(&self.settings.encoder));
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

/// Luma of the "camera away" still: a third of the way from black (limited range).
fn dim_luma(y: u8) -> u8 {
    16 + y.saturating_sub(16) / 3
}

/// Chroma of the still: halfway to grey.
fn dim_chroma(c: u8) -> u8 {
    (128 + (i16::from(c) - 128) / 2) as u8
}

/// Darkens an 8-bit limited-range picture in place (the encoder formats polypush picks); other
/// formats are left as they are (the still is then the last picture, repeated).
fn darken(frame: &mut ffmpeg::frame::Video, format: Pixel) {
    let chroma_planes = match format {
        Pixel::YUV420P => 1..3,
        Pixel::NV12 => 1..2,
        _ => return,
    };
    for y in frame.data_mut(0) {
        *y = dim_luma(*y);
    }
    for plane in chroma_planes {
        for c in frame.data_mut(plane) {
            *c = dim_chroma(*c);
        }
    }
}

/// Fills a picture with black (limited range).
///
/// # Safety
/// `frame` must be writable and allocated for `format` and its size.
unsafe fn fill_black(frame: &mut ffmpeg::frame::Video, format: Pixel) -> Result<(), ffmpeg::Error> {
    let raw = frame.as_mut_ptr();
    let mut linesizes = [0isize; 4];
    for (l, &s) in linesizes.iter_mut().zip((*raw).linesize.iter()) {
        *l = s as isize;
    }
    let ret = ffmpeg::ffi::av_image_fill_black(
        (*raw).data.as_mut_ptr(),
        linesizes.as_ptr(),
        format.into(),
        ffmpeg::ffi::AVColorRange::AVCOL_RANGE_MPEG,
        (*raw).width,
        (*raw).height,
    );
    if ret < 0 {
        Err(ffmpeg::Error::from(ret))
    } else {
        Ok(())
    }
}

fn vbv_bits(kbps: u32, seconds: f64) -> i32 {
    (f64::from(kbps) * 1000.0 * seconds)
        .round()
        .min(f64::from(i32::MAX)) as i32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::EncodedPacketBuf;

    #[test]
    fn gop_is_interval_times_fps() {
        let s = VideoSettings {
            fps: 25,
            keyframe_interval_s: 2.0,
            ..Default::default()
        };
        assert_eq!(s.gop_frames(), 50);
        let s = VideoSettings {
            fps: 30,
            keyframe_interval_s: 0.1,
            ..Default::default()
        };
        assert_eq!(s.gop_frames(), 3);
    }

    #[test]
    fn settings_errors_name_the_key() {
        let s = VideoSettings {
            preset: "warp".into(),
            ..Default::default()
        };
        let msg = s.check_encodable().unwrap_err().to_string();
        assert!(
            msg.contains("[video] preset") && msg.contains("veryfast"),
            "{msg}"
        );
        let s = VideoSettings {
            width: 641,
            ..Default::default()
        };
        assert!(s
            .check_encodable()
            .unwrap_err()
            .to_string()
            .contains("even"));
    }

    #[test]
    fn the_still_is_darker_and_greyer() {
        assert_eq!(dim_luma(235), 89);
        assert_eq!(dim_luma(16), 16);
        assert_eq!(dim_luma(0), 16, "below black stays black");
        assert_eq!(dim_chroma(128), 128);
        assert_eq!(dim_chroma(240), 184);
        assert_eq!(dim_chroma(16), 72);
    }

    #[test]
    fn stills_repeat_the_last_picture_darkened_and_keep_the_gop() {
        let settings = VideoSettings {
            width: 64,
            height: 48,
            fps: 25,
            keyframe_interval_s: 0.4, // GOP of 10
            bitrate_kbps: 200,
            threads: 1,
            ..Default::default()
        };
        let mut encoder = VideoEncoder::open(&settings).unwrap();
        let mut out: Vec<EncodedPacketBuf> = Vec::new();
        // A still before any picture is a dark frame.
        encoder
            .encode_still(0, false, &mut |p| out.push(p.into()))
            .unwrap();
        let mut frame = crate::capture::Captured {
            frame: ffmpeg::frame::Video::new(Pixel::YUV420P, 64, 48),
            pts_us: 40_000,
        };
        for b in frame.frame.data_mut(0) {
            *b = 200;
        }
        for plane in 1..3 {
            for b in frame.frame.data_mut(plane) {
                *b = 128;
            }
        }
        encoder
            .encode(&mut frame, false, &mut |p| out.push(p.into()))
            .unwrap();
        // Encoded as is: the loop keeps the frame and hands it over when the camera is lost.
        assert!(encoder.encoded_as_is());
        encoder.remember_picture(&frame.frame).unwrap();
        encoder.prepare_still().unwrap();
        let still = encoder.still.as_ref().unwrap();
        assert_eq!(still.data(0)[0], dim_luma(200));
        assert_eq!(still.data(1)[0], 128);
        for i in 2..25 {
            encoder
                .encode_still(i * 40_000, false, &mut |p| out.push(p.into()))
                .unwrap();
        }
        let keyframes: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, p)| p.keyframe)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(keyframes, [0, 10, 20]);
        let dts: Vec<i64> = out.iter().map(|p| p.dts_ms).collect();
        assert!(dts.windows(2).all(|w| w[1] - w[0] == 40), "{dts:?}");
        // Repeated pictures cost next to nothing.
        assert!(out[5..9].iter().all(|p| p.data.len() < 100));
    }

    #[test]
    fn divided_sizes_are_even_and_at_least_16() {
        let s = |width, height| VideoSettings {
            width,
            height,
            ..Default::default()
        };
        assert_eq!(s(1280, 720).frame_size(2), (640, 360));
        assert_eq!(s(854, 480).frame_size(2), (426, 240));
        assert_eq!(s(20, 16).frame_size(2), (16, 16));
        assert_eq!(s(1280, 720).frame_size(0), (1280, 720), "0 is 1");
        assert_eq!(s(1280, 720).frame_size(200), (320, 180), "clamped to 4");
        let s = VideoSettings {
            fps: 25,
            keyframe_interval_s: 2.0,
            ..Default::default()
        };
        assert_eq!((s.gop_frames_at(1), s.gop_frames_at(2)), (50, 25));
    }

    fn gradient(i: i64, width: u32, height: u32) -> ffmpeg::frame::Video {
        let mut frame = ffmpeg::frame::Video::new(Pixel::YUV420P, width, height);
        for plane in 0..3 {
            let stride = frame.stride(plane);
            for (row, line) in frame.data_mut(plane).chunks_mut(stride).enumerate() {
                for (col, px) in line.iter_mut().enumerate() {
                    *px = ((col + row) as i64 + i * 3) as u8;
                }
            }
        }
        frame
    }

    #[test]
    fn a_reopen_goes_on_from_an_idr_with_continuous_timestamps() {
        let settings = VideoSettings {
            width: 320,
            height: 240,
            fps: 25,
            keyframe_interval_s: 1.0, // GOP of 25
            bitrate_kbps: 400,
            threads: 1,
            reopen_on_rate_change: true,
            ..Default::default()
        };
        let mut encoder = VideoEncoder::open(&settings).unwrap();
        assert!(matches!(
            encoder.set_bitrate(300),
            Err(EncodeError::BitrateChangeUnsupported { .. })
        ));
        let first_extradata = encoder.extradata().cloned().unwrap();
        let mut out: Vec<EncodedPacketBuf> = Vec::new();
        let frame_at = |encoder: &mut VideoEncoder, i: i64, out: &mut Vec<EncodedPacketBuf>| {
            let mut frame = crate::capture::Captured {
                frame: gradient(i, 320, 240),
                pts_us: i * 40_000,
            };
            encoder
                .encode(&mut frame, false, &mut |p| out.push(p.into()))
                .unwrap();
        };
        for i in 0..10 {
            frame_at(&mut encoder, i, &mut out);
        }
        // Bitrate alone: the same parameter sets, an IDR, the same grid.
        let r = encoder
            .reopen(Target::kbps(300), &mut |p| out.push(p.into()))
            .unwrap();
        assert!(matches!(r, Reopened::Applied));
        for i in 10..20 {
            frame_at(&mut encoder, i, &mut out);
        }
        let announced = out[10].reopened.clone().expect("announced");
        assert_eq!(
            (announced.width, announced.height, announced.bitrate_kbps),
            (320, 240, 300)
        );
        assert_eq!(announced.extradata.as_ref(), Some(&first_extradata));
        // Half size and half frame rate: new parameter sets; the GOP stays a second.
        encoder
            .reopen(
                Target {
                    video_kbps: 200,
                    fps_divisor: 2,
                    scale_divisor: 2,
                },
                &mut |p| out.push(p.into()),
            )
            .unwrap();
        assert_eq!(encoder.frame_size(), (160, 120));
        assert_eq!(encoder.frame_rate(), (25, 2));
        for i in 10..40 {
            frame_at(&mut encoder, i * 2, &mut out);
        }
        let announced = out[20].reopened.clone().expect("announced");
        assert_eq!((announced.width, announced.height), (160, 120));
        assert_ne!(announced.extradata.as_ref(), Some(&first_extradata));
        assert_eq!(out.iter().filter(|p| p.reopened.is_some()).count(), 2);

        let keyframes: Vec<usize> = out
            .iter()
            .enumerate()
            .filter(|(_, p)| p.keyframe)
            .map(|(i, _)| i)
            .collect();
        // 13 frames (round(12.5)) per GOP after the second reopen.
        assert_eq!(keyframes, [0, 10, 20, 33, 46]);
        let dts: Vec<i64> = out.iter().map(|p| p.dts_ms).collect();
        assert!(dts[..20].windows(2).all(|w| w[1] - w[0] == 40), "{dts:?}");
        assert!(dts[20..].windows(2).all(|w| w[1] - w[0] == 80), "{dts:?}");
        assert_eq!(dts[20] - dts[19], 40, "no gap at the reopen");

        // The last picture survives at the new size for the still.
        encoder.prepare_still().unwrap();
        let still = encoder.still.as_ref().unwrap();
        assert_eq!((still.width(), still.height()), (160, 120));
        assert_ne!(still.data(0)[0], 16, "not a black frame");
        // And a camera frame kept from before the size change is converted.
        encoder.remember_picture(&gradient(0, 320, 240)).unwrap();
        encoder
            .encode_still(40 * 80_000, false, &mut |p| out.push(p.into()))
            .unwrap();
        encoder.flush(&mut |p| out.push(p.into())).unwrap();
        assert!(out.last().unwrap().dts_ms > dts[dts.len() - 1]);
    }

    #[test]
    fn libx264_is_linked_here() {
        assert!(available_h264_encoders().contains(&"libx264".to_string()));
    }
}
