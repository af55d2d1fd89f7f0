//! The vocabulary of the data flow, shared by the stages and owned by none of them: what an
//! encoder produces ([`EncodedPacket`], borrowed from FFmpeg's packet, and the
//! [`StreamParams`] it opened with), and what the FLV muxer makes of it ([`MediaPacket`]),
//! which the ring, the safety recorder and the RTMP session pass on.
//!
//! A [`MediaPacket`] body is the FLV tag *body* (what an RTMP audio/video message carries and
//! what follows the 11-byte tag header in an FLV file), held as `Bytes` so the ring, the RTMP
//! session and a recorder share one buffer without copying.

use bytes::Bytes;
use std::sync::Arc;

/// One encoded unit, borrowed from the encoder's own packet for as long as the sink runs: the
/// muxer turns it into a tag body in one pass, so its payload is never copied out first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPacket<'a> {
    /// Video: one access unit in Annex B (start codes of 3 or 4 bytes; libx264 with a global
    /// header puts no SPS/PPS in it, `h264_v4l2m2m` repeats them before IDRs).
    /// Audio: one raw AAC frame (no ADTS header).
    pub data: &'a [u8],
    /// Presentation time, milliseconds on the pipeline clock.
    pub pts_ms: i64,
    /// Decode time, milliseconds on the pipeline clock (equal to `pts_ms`: no B-frames, and
    /// AAC has no reordering). Strictly increasing per track.
    pub dts_ms: i64,
    /// Video: an IDR picture. Audio: always true (every AAC frame decodes on its own).
    pub keyframe: bool,
    /// Video: set on the first packet of a reopened encoder (an IDR), with what it runs at
    /// now: a new bitrate, frame rate or size. When its SPS/PPS differ from those sent before
    /// (`extradata`, or in front of this IDR when they come inline), the muxer sends a new
    /// sequence header before this packet. `None` otherwise, and always for audio.
    pub reopened: Option<Arc<VideoParams>>,
}

/// An [`EncodedPacket`] that owns its payload: for tests and tools that keep packets after
/// the sink returned (the pipeline itself never makes one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedPacketBuf {
    pub data: Bytes,
    pub pts_ms: i64,
    pub dts_ms: i64,
    pub keyframe: bool,
    pub reopened: Option<Arc<VideoParams>>,
}

impl From<&EncodedPacket<'_>> for EncodedPacketBuf {
    fn from(p: &EncodedPacket<'_>) -> Self {
        Self {
            data: Bytes::copy_from_slice(p.data),
            pts_ms: p.pts_ms,
            dts_ms: p.dts_ms,
            keyframe: p.keyframe,
            reopened: p.reopened.clone(),
        }
    }
}

impl EncodedPacketBuf {
    pub fn as_packet(&self) -> EncodedPacket<'_> {
        EncodedPacket {
            data: &self.data,
            pts_ms: self.pts_ms,
            dts_ms: self.dts_ms,
            keyframe: self.keyframe,
            reopened: self.reopened.clone(),
        }
    }
}

/// What the encoders opened with: what the muxer needs before the first packet.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamParams {
    pub video: Option<VideoParams>,
    pub audio: Option<AudioParams>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VideoParams {
    /// e.g. `libx264`.
    pub encoder: String,
    pub width: u32,
    pub height: u32,
    /// Nominal frames per second (rounded when the frame rate is divided).
    pub fps: u32,
    pub bitrate_kbps: u32,
    /// SPS and PPS in Annex B (libx264's global header); `None` when they come inline.
    pub extradata: Option<Bytes>,
    /// SPS/PPS are in front of the first IDR instead of `extradata`: build the AVC sequence
    /// header from the first keyframe packet.
    pub parameter_sets_inline: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AudioParams {
    pub sample_rate: u32,
    pub channels: u16,
    pub bitrate_kbps: u32,
    /// AudioSpecificConfig for the AAC sequence header.
    pub asc: Bytes,
}

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

/// One FLV tag body on its way to the network and the safety recording.
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
