//! FLV file framing: the 9-byte file header and the 11-byte tag headers with their
//! PreviousTagSize trailers.
//!
//! The network path never needs this (RTMP carries bodies); a local recorder and the tests do,
//! and `ffprobe` reading our own files is the cheapest end-to-end check of the tag bodies.

use std::io::Write;

use super::{tag_type, FlvError};
use crate::media::MediaPacket;

/// Largest tag body: the DataSize field is 24 bits.
const MAX_TAG_BODY: usize = 0xff_ffff;

/// The FLV file header (`FLV`, version 1, the audio/video presence flags, header size 9)
/// followed by PreviousTagSize0 (always 0).
pub fn file_header(has_audio: bool, has_video: bool) -> [u8; 13] {
    let flags = (u8::from(has_audio) << 2) | u8::from(has_video);
    [b'F', b'L', b'V', 1, flags, 0, 0, 0, 9, 0, 0, 0, 0]
}

/// The 11-byte FLV tag header: type, 24-bit body size, timestamp as its low 24 bits followed
/// by the extended byte holding bits 24–31, and stream id 0.
///
/// The timestamp is 32 bits and wraps after ~49.7 days; continuing across the wrap (or
/// starting a new file) is the caller's business, as in RTMP.
pub fn tag_header(tag_type: u8, timestamp_ms: u32, body_len: usize) -> Result<[u8; 11], FlvError> {
    if body_len > MAX_TAG_BODY {
        return Err(FlvError::TagTooLarge { len: body_len });
    }
    let size = (body_len as u32).to_be_bytes();
    let ts = timestamp_ms.to_be_bytes();
    Ok([
        tag_type, size[1], size[2], size[3], ts[1], ts[2], ts[3], ts[0], 0, 0, 0,
    ])
}

/// Writes an FLV file to any `Write` (a `Vec<u8>` in tests, a buffered file in a recorder).
/// It keeps no state beyond the output, so a recorder that rotates files simply starts a new
/// writer and calls [`FlvFileWriter::header`] again.
#[derive(Debug)]
pub struct FlvFileWriter<W> {
    out: W,
}

impl<W: Write> FlvFileWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    /// The file header and PreviousTagSize0; call once, first.
    pub fn header(&mut self, has_audio: bool, has_video: bool) -> Result<(), FlvError> {
        self.out.write_all(&file_header(has_audio, has_video))?;
        Ok(())
    }

    /// One tag: header, `body`, then PreviousTagSize (11 + body length). `tag_type` is 8
    /// (audio), 9 (video) or 18 (script), see [`super::tag_type`].
    pub fn tag(&mut self, tag_type: u8, timestamp_ms: u32, body: &[u8]) -> Result<(), FlvError> {
        let header = tag_header(tag_type, timestamp_ms, body.len())?;
        self.out.write_all(&header)?;
        self.out.write_all(body)?;
        self.out
            .write_all(&((11 + body.len()) as u32).to_be_bytes())?;
        Ok(())
    }

    /// One pipeline packet as a tag; its `dts_ms` is written modulo 2^32, as RTMP carries it.
    pub fn packet(&mut self, pkt: &MediaPacket) -> Result<(), FlvError> {
        self.tag(tag_type(pkt.kind), pkt.dts_ms as u32, &pkt.body)
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.out
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::PacketKind;
    use bytes::Bytes;

    #[test]
    fn file_header_flags() {
        assert_eq!(
            file_header(true, true),
            [0x46, 0x4c, 0x56, 0x01, 0x05, 0, 0, 0, 0x09, 0, 0, 0, 0]
        );
        assert_eq!(file_header(false, true)[4], 0x01);
        assert_eq!(file_header(true, false)[4], 0x04);
        assert_eq!(file_header(false, false)[4], 0x00);
    }

    #[test]
    fn writes_header_and_tags_byte_exact() {
        let mut w = FlvFileWriter::new(Vec::new());
        w.header(true, true).unwrap();
        w.tag(9, 40, &[0x27, 0x01, 0, 0, 0]).unwrap();
        w.tag(8, 0x0123_4567, &[0xaf, 0x01, 0x21]).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            b'F', b'L', b'V', 0x01, 0x05, 0x00, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x00,
            // video tag: type, size 5, ts 40, ext 0, stream id 0
            0x09, 0x00, 0x00, 0x05, 0x00, 0x00, 0x28, 0x00, 0x00, 0x00, 0x00,
            0x27, 0x01, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x00, 0x10, // PreviousTagSize 11 + 5
            // audio tag with a timestamp above 24 bits: low 24 bits, then the extended byte
            0x08, 0x00, 0x00, 0x03, 0x23, 0x45, 0x67, 0x01, 0x00, 0x00, 0x00,
            0xaf, 0x01, 0x21,
            0x00, 0x00, 0x00, 0x0e,
        ];
        assert_eq!(w.into_inner(), expected);
    }

    #[test]
    fn packet_uses_kind_and_wraps_dts() {
        let mut w = FlvFileWriter::new(Vec::new());
        let pkt = MediaPacket::new(
            PacketKind::Metadata,
            (1u64 << 32) + 7,
            Bytes::from_static(&[0x02]),
        );
        w.packet(&pkt).unwrap();
        assert_eq!(
            w.get_ref()[..11],
            [0x12, 0x00, 0x00, 0x01, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00]
        );
    }

    #[test]
    fn oversized_tag_is_an_error() {
        assert!(matches!(
            tag_header(9, 0, 0x100_0000),
            Err(FlvError::TagTooLarge { len: 0x100_0000 })
        ));
        assert!(tag_header(9, 0, 0xff_ffff).is_ok());
    }
}
