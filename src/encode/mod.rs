//! Encode: raw frames from [`crate::capture`] to H.264 (libx264, or the Pi's `h264_v4l2m2m`)
//! and AAC-LC (FFmpeg's native `aac`), plus the pipeline that wires capture threads to encode
//! threads and hands every packet to a sink.
//!
//! This module owns pixel-format conversion (swscale, only when the encoder needs it), audio
//! resampling and 1024-sample framing (swresample into a FIFO of our own), encoder
//! configuration (regular keyframes, VBV set at open so the bitrate can change live), keyframe
//! requests, applying the adaptation controller's [`Target`] while running, and the mapping of
//! encoder timestamps back to the pipeline clock in milliseconds. It knows nothing of FLV or
//! RTMP: its output is [`EncodedPacket`](crate::media::EncodedPacket) (Annex B H.264 access units, raw AAC frames, borrowed
//! from the encoder's packet while the sink runs) and [`StreamParams`](crate::media::StreamParams) (what the muxer needs for
//! sequence headers), both from [`crate::media`].
//!
//! A target ([`PipelineControl::set_video_target`]) is applied by the video encode thread
//! before the next frame (`target`): a bitrate alone is changed in place where the encoder
//! can (libx264); otherwise (`h264_v4l2m2m` and any encoder not known to, a frame-rate or size
//! divisor) the encoder is reopened ([`VideoEncoder::reopen`]) at that frame, at most once per
//! [`VideoSettings::min_reopen_interval`] (5 s; the latest target wins). A reopened
//! encoder starts with an IDR on the same timeline (no gap, nothing backwards), and its first
//! packet carries the new [`VideoParams`](crate::media::VideoParams)
//! ([`EncodedPacket::reopened`](crate::media::EncodedPacket::reopened)) so the muxer sends
//! a new sequence header when the SPS/PPS changed. A divided frame rate leaves out captured
//! frames on the frame grid (timestamps stay the capture times, the GOP stays as long in
//! seconds); a divided size is scaled to by the same conversion as any input.
//!
//! [`snapshot`] takes a picture for `/snapshot.jpg` on request
//! ([`PipelineControl::request_picture`]): the video encode thread scales its next captured
//! frame (or the still) into an owned full-range frame; [`snapshot::encode_jpeg`] makes the
//! JPEG with libavcodec's `mjpeg`.
//!
//! When a live camera or microphone is lost, the encode threads keep its track going (a
//! darkened still picture, or silence) on the pipeline clock until it is back; see
//! `pipeline`.
//!
//! The encoders reuse one `AVPacket` and their conversion frames. A packet is handed to the
//! sink as a borrow of that `AVPacket`'s payload, where the FLV muxer writes the tag body from
//! it in one pass; nothing here copies or allocates per packet.

mod audio;
mod drift;
mod pipeline;
mod settings;
pub mod snapshot;
mod target;
mod timeline;
mod video;

use bytes::Bytes;
use ffmpeg_next as ffmpeg;

pub use crate::capture::{Track, TrackState};
pub use audio::{AudioEncoder, AudioSync};
pub use pipeline::{
    spawn_pipeline, AudioSyncStats, PipelineConfig, PipelineControl, PipelineError, PipelineHandle,
    PipelineStats, TrackStats,
};
pub use settings::{
    AudioSettings, AudioSource, TestPattern, VideoSettings, VideoSource, TEST_CLOCK_PPM_MAX,
};
pub use target::Target;
pub use video::{
    available_h264_encoders, Reopened, VideoEncoder, KNOWN_H264_ENCODERS, MIN_REOPEN_INTERVAL,
};

/// An encoding problem. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("H.264 encoder '{name}' is not available in this FFmpeg build; available: {}; set [video] encoder to one of them (libx264 is in Debian's libavcodec59)", list_or_none(.available))]
    EncoderNotFound {
        name: String,
        available: Vec<String>,
    },
    #[error("encoder '{name}' needs hardware frames, which polypush does not upload; set [video] encoder to libx264 or h264_v4l2m2m")]
    UnsupportedEncoder { name: String },
    #[error("{what}; fix the setting in the config file")]
    InvalidSettings { what: String },
    #[error("{encoder} refused to open: {source}; {hint}")]
    Open {
        encoder: String,
        source: ffmpeg::Error,
        hint: &'static str,
    },
    #[error("{encoder} did not accept the option '{key}' (FFmpeg would silently ignore it): this FFmpeg build is older than polypush expects; report it with `ffmpeg -version`")]
    UnknownOption { encoder: String, key: String },
    #[error("cannot convert {from} to {to} for the encoder: {source}")]
    Convert {
        from: String,
        to: String,
        source: ffmpeg::Error,
    },
    #[error("{encoder} failed while encoding: {source}; the pipeline stops and is restarted")]
    Encode {
        encoder: String,
        source: ffmpeg::Error,
    },
    #[error("{encoder} cannot change its bitrate while running; it is reopened at the new bitrate instead (VideoEncoder::reopen)")]
    BitrateChangeUnsupported { encoder: String },
    #[error("{encoder} is closed: reopening it failed with the new settings and with the previous ones; the pipeline stops and is restarted")]
    EncoderClosed { encoder: String },
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}

/// Copies the codec context's extradata, `None` when empty.
pub(crate) fn extradata_of(ctx: *const ffmpeg::ffi::AVCodecContext) -> Option<Bytes> {
    // SAFETY: `ctx` is an open codec context; extradata is either null or `extradata_size`
    // readable bytes owned by it.
    unsafe {
        let data = (*ctx).extradata;
        let size = (*ctx).extradata_size;
        if data.is_null() || size <= 0 {
            None
        } else {
            Some(Bytes::copy_from_slice(std::slice::from_raw_parts(
                data,
                size as usize,
            )))
        }
    }
}

/// Opens a codec context with an option dictionary and fails on any option left unconsumed.
pub(crate) fn open_codec(
    ctx: *mut ffmpeg::ffi::AVCodecContext,
    codec: &ffmpeg::Codec,
    options: &[(&str, String)],
    encoder_name: &str,
    hint: &'static str,
) -> Result<(), EncodeError> {
    let mut dict = ffmpeg::Dictionary::new();
    for (k, v) in options {
        dict.set(k, v);
    }
    // SAFETY: `ctx` was allocated for `codec` and is not open yet; the dictionary is handed to
    // FFmpeg and its leftover re-owned.
    unsafe {
        let mut raw = dict.disown();
        let ret = ffmpeg::ffi::avcodec_open2(ctx, codec.as_ptr(), &mut raw);
        let leftover = ffmpeg::Dictionary::own(raw);
        if ret < 0 {
            return Err(EncodeError::Open {
                encoder: encoder_name.to_string(),
                source: ffmpeg::Error::from(ret),
                hint,
            });
        }
        if let Some((key, _)) = leftover.iter().next() {
            return Err(EncodeError::UnknownOption {
                encoder: encoder_name.to_string(),
                key: key.to_string(),
            });
        }
    }
    Ok(())
}
