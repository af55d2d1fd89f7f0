//! The pure FLV muxer: everything that turns encoder output into FLV tag bodies, plus a
//! writer for FLV files.
//!
//! This module owns the byte layouts of FLV (Adobe FLV spec v10.1, annex E), of the
//! AVCDecoderConfigurationRecord (ISO/IEC 14496-15 §5.3.3.1), of the AAC AudioSpecificConfig
//! (ISO/IEC 14496-3 §1.6.2.1) and of AMF0 `onMetaData`. It does no I/O and reads no clock:
//! bytes in, `Bytes` out, so every layout is pinned by byte-exact unit tests and the RTMP
//! session, the ring and a recorder can share the produced buffers without copying.
//!
//! A tag *body* is what follows the 11-byte FLV tag header in a file and what an RTMP
//! audio/video/data message carries; [`crate::media::MediaPacket::body`] holds one.
//!
//! # Layout
//! - `avc`: Annex B parsing, the avcC record, AVC video tag bodies ([`VideoPacketizer`]).
//! - `aac`: AudioSpecificConfig, AAC audio tag bodies ([`AudioPacketizer`]).
//! - `amf`: the AMF0 `onMetaData` script body ([`script_metadata_body`]).
//! - `file`: FLV file header and tag framing ([`FlvFileWriter`]), used by recorders and tests.
//! - `mux`: the muxer the encode threads call: stream parameters → [`headers`], a borrowed
//!   encoded packet → [`MediaPacket`](crate::media::MediaPacket) ([`VideoMuxer`],
//!   [`AudioMuxer`]).

mod aac;
mod amf;
mod avc;
mod file;
mod mux;

pub use aac::{aac_specific_config, audio_sequence_header_body, AudioPacketizer};
pub use amf::script_metadata_body;
pub use avc::{
    avc_decoder_config, is_keyframe_annexb, nal_unit_type, split_annexb, sps_pps_from_annexb,
    video_sequence_header_body, AnnexBNals, VideoPacketizer,
};
pub use file::{file_header, tag_header, FlvFileWriter};
pub use mux::{headers, stream_info, AudioMuxer, SequenceHeader, VideoMuxer};

use crate::media::PacketKind;

/// FLV tag type of audio tags.
pub const TAG_AUDIO: u8 = 8;
/// FLV tag type of video tags.
pub const TAG_VIDEO: u8 = 9;
/// FLV tag type of script data tags (`onMetaData`).
pub const TAG_SCRIPT: u8 = 18;

/// The FLV tag type (and RTMP message type: they share numbers) that carries a packet of
/// `kind`, so the sender and a recorder never disagree about it.
pub fn tag_type(kind: PacketKind) -> u8 {
    match kind {
        PacketKind::Metadata => TAG_SCRIPT,
        PacketKind::VideoHeader | PacketKind::Video { .. } => TAG_VIDEO,
        PacketKind::AudioHeader | PacketKind::Audio => TAG_AUDIO,
    }
}

/// Everything that can be wrong with input to the packetizer. Most variants mean the encoder
/// was configured in a way FLV cannot carry; the messages say which setting to change.
#[derive(Debug, thiserror::Error)]
pub enum FlvError {
    #[error(
        "H.264 extradata has no SPS (NAL type 7): open the encoder with global headers \
         (AV_CODEC_FLAG_GLOBAL_HEADER) or take SPS/PPS from the first IDR with sps_pps_from_annexb"
    )]
    NoSps,
    #[error(
        "H.264 extradata has an SPS but no PPS (NAL type 8): the extradata is truncated; \
         an avcC record needs both"
    )]
    NoPps,
    #[error(
        "H.264 SPS is {len} bytes, shorter than the 4 bytes (NAL header, profile, \
         constraint flags, level) an avcC record copies from it"
    )]
    SpsTooShort { len: usize },
    #[error(
        "H.264 parameter set is {len} bytes; an avcC record stores its length in 16 bits \
         (at most 65535)"
    )]
    ParameterSetTooLong { len: usize },
    #[error("H.264 extradata has {count} {kind} NALs; an avcC record holds at most {max}")]
    TooManyParameterSets {
        kind: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "avcC record is {len} bytes, shorter than its 7-byte minimum: the encoder extradata \
         is truncated"
    )]
    TruncatedAvcc { len: usize },
    #[error(
        "AAC sample rate {rate} Hz is not in the MPEG-4 sampling frequency table \
         (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, \
         7350); resample to 48000 or 44100 Hz"
    )]
    UnsupportedSampleRate { rate: u32 },
    #[error(
        "AAC with {channels} channels has no MPEG-4 channel configuration; use 1 to 6 or 8 \
         channels (2 for RTMP ingest)"
    )]
    UnsupportedChannels { channels: u16 },
    #[error("FLV tag body is {len} bytes; an FLV tag holds at most 16777215 (24-bit size)")]
    TagTooLarge { len: usize },
    #[error("writing FLV output failed: {0}")]
    Io(#[from] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_type_per_kind() {
        assert_eq!(tag_type(PacketKind::Metadata), 18);
        assert_eq!(tag_type(PacketKind::VideoHeader), 9);
        assert_eq!(tag_type(PacketKind::Video { keyframe: true }), 9);
        assert_eq!(tag_type(PacketKind::Video { keyframe: false }), 9);
        assert_eq!(tag_type(PacketKind::AudioHeader), 8);
        assert_eq!(tag_type(PacketKind::Audio), 8);
    }

    #[test]
    fn error_messages_say_what_is_wrong() {
        let msg = FlvError::UnsupportedSampleRate { rate: 47000 }.to_string();
        assert!(msg.contains("47000") && msg.contains("resample"), "{msg}");
        let msg = FlvError::NoSps.to_string();
        assert!(msg.contains("SPS"), "{msg}");
    }
}
