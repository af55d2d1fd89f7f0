//! Types shared along the pipeline: what the encode threads put into the ring and what the
//! RTMP driver and the safety recorder take out.
//!
//! A [`MediaPacket`] body is the FLV tag *body* (what an RTMP audio/video message carries and
//! what follows the 11-byte tag header in an FLV file), held as `Bytes` so the ring, the RTMP
//! session and a recorder share one buffer without copying.

use bytes::Bytes;
use std::sync::Arc;

/// What a packet is, as far as queueing and dropping are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PacketKind {
    /// onMetaData (body: the AMF0 script data of an FLV script tag). Never dropped.
    Metadata,
    /// AVC sequence header (AVCDecoderConfigurationRecord). Never dropped.
    VideoHeader,
    /// AAC sequence header (AudioSpecificConfig). Never dropped.
    AudioHeader,
    /// One H.264 access unit; `keyframe` is an IDR. Dropped GOP-aware when the ring is full.
    Video { keyframe: bool },
    /// One AAC frame. Never dropped.
    Audio,
}

impl PacketKind {
    pub fn is_header(self) -> bool {
        matches!(self, Self::Metadata | Self::VideoHeader | Self::AudioHeader)
    }
    pub fn is_video(self) -> bool {
        matches!(self, Self::Video { .. })
    }
    pub fn is_keyframe(self) -> bool {
        matches!(self, Self::Video { keyframe: true })
    }
}

/// One encoded unit on its way to the network.
#[derive(Debug, Clone)]
pub struct MediaPacket {
    pub kind: PacketKind,
    /// Decode timestamp in milliseconds on the pipeline clock (0 = pipeline start). Monotonic
    /// per track. RTMP/FLV carry it modulo 2^32.
    pub dts_ms: u64,
    /// The FLV tag body.
    pub body: Bytes,
    /// Set on `Metadata` packets: what the stream is, for RTMP `@setDataFrame`.
    pub info: Option<Arc<StreamInfo>>,
}

impl MediaPacket {
    pub fn new(kind: PacketKind, dts_ms: u64, body: Bytes) -> Self {
        Self {
            kind,
            dts_ms,
            body,
            info: None,
        }
    }
}

/// A description of the stream for onMetaData and notify_stream2.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamInfo {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub video_bitrate_kbps: u32,
    /// `None` when the stream has no audio.
    pub audio: Option<AudioInfo>,
    /// e.g. `polypush 0.1.0 (libx264)`.
    pub encoder: String,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AudioInfo {
    pub sample_rate: u32,
    pub channels: u16,
    pub bitrate_kbps: u32,
}
