//! Opening the H.264 encoder for a [`Target`]: what [`VideoSettings`] the encoder can take
//! and what they come to at a target (GOP, frame size, in-place rate changes), the codec
//! context configured for live streaming (libx264's options, or a hardware encoder's
//! profile), and what comes out of it (the pixel format picked, the global header).

use bytes::Bytes;
use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;

use super::{available_h264_encoders, HW_FRAME_ENCODERS};
use crate::capture::init_ffmpeg;
use crate::encode::settings::{VideoSettings, PROFILES, X264_PRESETS};
use crate::encode::target::{normalized, Target, MAX_DIVISOR};
use crate::encode::{extradata_of, open_codec, EncodeError};

/// Encoders known to change their bitrate while running; every other one is reopened.
const IN_PLACE_RATE_ENCODERS: &[&str] = &["libx264"];

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
    /// ([`VideoEncoder::reopen`](super::VideoEncoder::reopen)). Only encoders known to do so;
    /// not with [`reopen_on_rate_change`](Self::reopen_on_rate_change).
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

/// An opened codec context and what came with it.
pub(super) struct Opened {
    pub(super) encoder: ffmpeg::encoder::video::Encoder,
    pub(super) pix_fmt: Pixel,
    pub(super) extradata: Option<Bytes>,
}

/// Opens the encoder named in `settings` for `target` (bitrate, frame rate and size divided
/// as it says).
pub(super) fn open_context(
    settings: &VideoSettings,
    target: Target,
) -> Result<Opened, EncodeError> {
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

/// The VBV buffer of `seconds` at `kbps`, in bits.
pub(super) fn vbv_bits(kbps: u32, seconds: f64) -> i32 {
    (f64::from(kbps) * 1000.0 * seconds)
        .round()
        .min(f64::from(i32::MAX)) as i32
}
