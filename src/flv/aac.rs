//! AAC for FLV: the AudioSpecificConfig (the "sequence header") and raw AAC frame tag bodies.
//!
//! Every FLV AAC tag starts with `0xAF`: sound format 10 (AAC) << 4, rate 3 (44 kHz), size 1
//! (16-bit), type 1 (stereo). The FLV spec says that for AAC these three flags are fixed at
//! those values whatever the stream is; the real rate and channel count come from the
//! AudioSpecificConfig, so a 48 kHz mono stream is still tagged `0xAF`.

use bytes::{BufMut, Bytes, BytesMut};

use super::FlvError;

/// Byte 0 of every FLV AAC audio tag, see the module docs.
const FLV_AAC: u8 = 0xaf;
/// AACPacketType 0: the body is an AudioSpecificConfig.
const AAC_SEQUENCE_HEADER: u8 = 0;
/// AACPacketType 1: the body is one raw AAC frame.
const AAC_RAW: u8 = 1;
/// MPEG-4 audio object type 2: AAC LC, what libavcodec's `aac` and libfdk encode by default.
const AOT_AAC_LC: u8 = 2;

/// MPEG-4 sampling frequency table (ISO/IEC 14496-3 table 1.18); the index is the code.
const SAMPLING_FREQUENCIES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// The 2-byte AudioSpecificConfig of an AAC-LC stream: object type (5 bits),
/// sampling frequency index (4 bits), channel configuration (4 bits), then frameLengthFlag,
/// dependsOnCoreCoder and extensionFlag, all 0 (1024-sample frames, no extensions).
///
/// Only rates in the standard table are accepted: the escape code (index 15 plus a 24-bit
/// rate) is legal but many RTMP ingests and players reject it, so an odd capture rate must be
/// resampled instead. Channel configurations 1–6 map to 1–6 channels and 7 to 8 (7.1).
pub fn aac_specific_config(sample_rate: u32, channels: u16) -> Result<[u8; 2], FlvError> {
    let freq_index = SAMPLING_FREQUENCIES
        .iter()
        .position(|&r| r == sample_rate)
        .ok_or(FlvError::UnsupportedSampleRate { rate: sample_rate })? as u8;
    let channel_config: u8 = match channels {
        1..=6 => channels as u8,
        8 => 7,
        _ => return Err(FlvError::UnsupportedChannels { channels }),
    };
    Ok([
        (AOT_AAC_LC << 3) | (freq_index >> 1),
        ((freq_index & 1) << 7) | (channel_config << 3),
    ])
}

/// The FLV audio tag body of the AAC sequence header: `0xAF 0x00` + AudioSpecificConfig.
pub fn audio_sequence_header_body(asc: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(2 + asc.len());
    out.put_slice(&[FLV_AAC, AAC_SEQUENCE_HEADER]);
    out.put_slice(asc);
    out.freeze()
}

/// Length of the ADTS header at the start of `frame`, if there is one. The check is the
/// 12-bit sync word `0xFFF` plus layer `00`; a raw AAC frame cannot start that way because it
/// would begin with the ID_END syntax element (`111`) and be empty.
fn adts_header_len(frame: &[u8]) -> Option<usize> {
    if frame.len() >= 7 && frame[0] == 0xff && frame[1] & 0xf6 == 0xf0 {
        // protection_absent = 0 means a 16-bit CRC follows the 7 header bytes.
        let len = if frame[1] & 1 == 1 { 7 } else { 9 };
        (frame.len() >= len).then_some(len)
    } else {
        None
    }
}

/// Turns AAC frames into FLV audio tag bodies, reusing one buffer like
/// [`super::VideoPacketizer`] (no allocation in steady state once earlier bodies are dropped).
#[derive(Debug, Default)]
pub struct AudioPacketizer {
    buf: BytesMut,
}

impl AudioPacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// `0xAF 0x01` + the raw AAC frame. An ADTS header is stripped when present, because FLV
    /// carries the configuration in the sequence header and players would read the ADTS bytes
    /// as audio. One call takes one frame (what libavcodec produces); a buffer of several ADTS
    /// frames is not split.
    pub fn packetize(&mut self, raw_aac: &[u8]) -> Bytes {
        let frame = match adts_header_len(raw_aac) {
            Some(len) => &raw_aac[len..],
            None => raw_aac,
        };
        self.buf.reserve(2 + frame.len());
        self.buf.put_slice(&[FLV_AAC, AAC_RAW]);
        self.buf.put_slice(frame);
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn asc_for_common_rates() {
        assert_eq!(aac_specific_config(48000, 2).unwrap(), [0x11, 0x90]);
        assert_eq!(aac_specific_config(44100, 2).unwrap(), [0x12, 0x10]);
        assert_eq!(aac_specific_config(48000, 1).unwrap(), [0x11, 0x88]);
        assert_eq!(aac_specific_config(96000, 2).unwrap(), [0x10, 0x10]);
        assert_eq!(aac_specific_config(7350, 8).unwrap(), [0x16, 0x38]);
    }

    #[test]
    fn asc_rejects_rates_and_channel_counts_outside_the_tables() {
        assert!(matches!(
            aac_specific_config(47999, 2),
            Err(FlvError::UnsupportedSampleRate { rate: 47999 })
        ));
        for channels in [0, 7, 9] {
            assert!(matches!(
                aac_specific_config(48000, channels),
                Err(FlvError::UnsupportedChannels { .. })
            ));
        }
    }

    #[test]
    fn audio_sequence_header_body_bytes() {
        assert_eq!(
            &audio_sequence_header_body(&[0x11, 0x90])[..],
            &[0xaf, 0x00, 0x11, 0x90]
        );
    }

    #[test]
    fn packetize_raw_frame() {
        let mut p = AudioPacketizer::new();
        assert_eq!(
            &p.packetize(&[0x21, 0x10, 0x04])[..],
            &[0xaf, 0x01, 0x21, 0x10, 0x04]
        );
    }

    #[test]
    fn packetize_strips_adts_header_with_and_without_crc() {
        let mut p = AudioPacketizer::new();
        // MPEG-4, layer 0, protection_absent = 1: 7-byte header.
        let adts = [0xff, 0xf1, 0x50, 0x80, 0x01, 0x3f, 0xfc, 0x21, 0x10];
        assert_eq!(&p.packetize(&adts)[..], &[0xaf, 0x01, 0x21, 0x10]);
        // protection_absent = 0: 7-byte header + 2-byte CRC.
        let adts_crc = [
            0xff, 0xf0, 0x50, 0x80, 0x01, 0x7f, 0xfc, 0xab, 0xcd, 0x21, 0x10,
        ];
        assert_eq!(&p.packetize(&adts_crc)[..], &[0xaf, 0x01, 0x21, 0x10]);
    }

    #[test]
    fn packetize_reuses_the_buffer_once_the_previous_body_is_dropped() {
        let mut p = AudioPacketizer::new();
        let frame = [0x21u8; 300];
        let first = p.packetize(&frame);
        let ptr = first.as_ptr();
        drop(first);
        assert_eq!(p.packetize(&frame).as_ptr(), ptr);
    }
}
