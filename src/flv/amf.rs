//! The `onMetaData` script tag body in AMF0.
//!
//! Players and ingests (nginx-rtmp, Polyv's CDN) read width, height, frame rate and codec ids
//! from it before the first frame. Only the few AMF0 types metadata needs are written, by hand:
//! a general AMF library would be a dependency for five markers.

use bytes::{BufMut, Bytes, BytesMut};

use crate::media::StreamInfo;

const AMF0_NUMBER: u8 = 0x00;
const AMF0_BOOLEAN: u8 = 0x01;
const AMF0_STRING: u8 = 0x02;
const AMF0_ECMA_ARRAY: u8 = 0x08;
const AMF0_OBJECT_END: u8 = 0x09;
const AMF0_LONG_STRING: u8 = 0x0c;

/// FLV video codec id 7: AVC.
const VIDEO_CODEC_AVC: f64 = 7.0;
/// FLV sound format 10: AAC.
const AUDIO_CODEC_AAC: f64 = 10.0;

/// The FLV script tag body `"onMetaData", ECMA array {…}` describing `info`.
///
/// Keys, in this order: width, height, framerate, videodatarate (kbit/s), videocodecid (7),
/// then, only when the stream has audio, audiodatarate (kbit/s), audiosamplerate,
/// audiosamplesize (16), stereo, audiocodecid (10), and finally encoder, duration and filesize.
/// duration and filesize are 0 because a live stream has neither; they are present because
/// some tools expect the keys FFmpeg writes. For RTMP the sender prepends `@setDataFrame`;
/// that belongs to the RTMP layer, not to the tag body.
pub fn script_metadata_body(info: &StreamInfo) -> Bytes {
    let mut out = BytesMut::with_capacity(320 + info.encoder.len());
    write_string(&mut out, "onMetaData");
    let count = if info.audio.is_some() { 13 } else { 8 };
    out.put_u8(AMF0_ECMA_ARRAY);
    out.put_u32(count);
    write_number_prop(&mut out, "width", f64::from(info.width));
    write_number_prop(&mut out, "height", f64::from(info.height));
    write_number_prop(&mut out, "framerate", info.fps);
    write_number_prop(
        &mut out,
        "videodatarate",
        f64::from(info.video_bitrate_kbps),
    );
    write_number_prop(&mut out, "videocodecid", VIDEO_CODEC_AVC);
    if let Some(audio) = &info.audio {
        write_number_prop(&mut out, "audiodatarate", f64::from(audio.bitrate_kbps));
        write_number_prop(&mut out, "audiosamplerate", f64::from(audio.sample_rate));
        // AAC is always decoded to (at least) 16 bits; FFmpeg writes 16 as well.
        write_number_prop(&mut out, "audiosamplesize", 16.0);
        write_key(&mut out, "stereo");
        out.put_u8(AMF0_BOOLEAN);
        out.put_u8(u8::from(audio.channels == 2));
        write_number_prop(&mut out, "audiocodecid", AUDIO_CODEC_AAC);
    }
    write_key(&mut out, "encoder");
    write_string(&mut out, &info.encoder);
    write_number_prop(&mut out, "duration", 0.0);
    write_number_prop(&mut out, "filesize", 0.0);
    // An empty key followed by the object-end marker closes the array.
    out.put_slice(&[0, 0, AMF0_OBJECT_END]);
    out.freeze()
}

/// An object/array key: UTF-8 with a 16-bit length and no type marker. Keys here are
/// constants, far below the 16-bit limit.
fn write_key(out: &mut BytesMut, key: &str) {
    out.put_u16(key.len() as u16);
    out.put_slice(key.as_bytes());
}

/// A string value: AMF0 string, or long string when it does not fit a 16-bit length (the
/// encoder string is built from configuration, so its length is not ours to assume).
fn write_string(out: &mut BytesMut, s: &str) {
    match u16::try_from(s.len()) {
        Ok(len) => {
            out.put_u8(AMF0_STRING);
            out.put_u16(len);
        }
        Err(_) => {
            out.put_u8(AMF0_LONG_STRING);
            out.put_u32(s.len() as u32);
        }
    }
    out.put_slice(s.as_bytes());
}

fn write_number_prop(out: &mut BytesMut, key: &str, value: f64) {
    write_key(out, key);
    out.put_u8(AMF0_NUMBER);
    out.put_f64(value);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::AudioInfo;

    /// Independent AMF0 writers for the expected bytes, kept apart from the code under test.
    fn key(v: &mut Vec<u8>, k: &str) {
        v.extend_from_slice(&(k.len() as u16).to_be_bytes());
        v.extend_from_slice(k.as_bytes());
    }
    fn num(v: &mut Vec<u8>, k: &str, x: f64) {
        key(v, k);
        v.push(0x00);
        v.extend_from_slice(&x.to_bits().to_be_bytes());
    }
    fn string(v: &mut Vec<u8>, s: &str) {
        v.push(0x02);
        key(v, s);
    }

    fn info(audio: Option<AudioInfo>) -> StreamInfo {
        StreamInfo {
            width: 1280,
            height: 720,
            fps: 29.97,
            video_bitrate_kbps: 2500,
            audio,
            encoder: "polypush 0.1.0 (libx264)".to_string(),
        }
    }

    #[test]
    fn metadata_with_audio_matches_hand_built_amf0() {
        let body = script_metadata_body(&info(Some(AudioInfo {
            sample_rate: 48000,
            channels: 2,
            bitrate_kbps: 128,
        })));
        let mut e = Vec::new();
        string(&mut e, "onMetaData");
        e.push(0x08);
        e.extend_from_slice(&13u32.to_be_bytes());
        num(&mut e, "width", 1280.0);
        num(&mut e, "height", 720.0);
        num(&mut e, "framerate", 29.97);
        num(&mut e, "videodatarate", 2500.0);
        num(&mut e, "videocodecid", 7.0);
        num(&mut e, "audiodatarate", 128.0);
        num(&mut e, "audiosamplerate", 48000.0);
        num(&mut e, "audiosamplesize", 16.0);
        key(&mut e, "stereo");
        e.extend_from_slice(&[0x01, 0x01]);
        num(&mut e, "audiocodecid", 10.0);
        key(&mut e, "encoder");
        string(&mut e, "polypush 0.1.0 (libx264)");
        num(&mut e, "duration", 0.0);
        num(&mut e, "filesize", 0.0);
        e.extend_from_slice(&[0x00, 0x00, 0x09]);
        assert_eq!(&body[..], &e[..]);
    }

    #[test]
    fn metadata_mono_is_not_stereo() {
        let body = script_metadata_body(&info(Some(AudioInfo {
            sample_rate: 44100,
            channels: 1,
            bitrate_kbps: 64,
        })));
        let stereo = body
            .windows(8)
            .position(|w| w == b"\x00\x06stereo")
            .unwrap();
        assert_eq!(&body[stereo + 8..stereo + 10], &[0x01, 0x00]);
    }

    #[test]
    fn metadata_without_audio_literal_bytes() {
        let body = script_metadata_body(&StreamInfo {
            width: 320,
            height: 240,
            fps: 25.0,
            video_bitrate_kbps: 500,
            audio: None,
            encoder: "x".to_string(),
        });
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x02, 0x00, 0x0a, b'o', b'n', b'M', b'e', b't', b'a', b'D', b'a', b't', b'a',
            0x08, 0x00, 0x00, 0x00, 0x08,
            0x00, 0x05, b'w', b'i', b'd', b't', b'h',
            0x00, 0x40, 0x74, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 320.0
            0x00, 0x06, b'h', b'e', b'i', b'g', b'h', b't',
            0x00, 0x40, 0x6e, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 240.0
            0x00, 0x09, b'f', b'r', b'a', b'm', b'e', b'r', b'a', b't', b'e',
            0x00, 0x40, 0x39, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 25.0
            0x00, 0x0d, b'v', b'i', b'd', b'e', b'o', b'd', b'a', b't', b'a', b'r', b'a', b't',
            b'e',
            0x00, 0x40, 0x7f, 0x40, 0x00, 0x00, 0x00, 0x00, 0x00, // 500.0
            0x00, 0x0c, b'v', b'i', b'd', b'e', b'o', b'c', b'o', b'd', b'e', b'c', b'i', b'd',
            0x00, 0x40, 0x1c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 7.0
            0x00, 0x07, b'e', b'n', b'c', b'o', b'd', b'e', b'r',
            0x02, 0x00, 0x01, b'x',
            0x00, 0x08, b'd', b'u', b'r', b'a', b't', b'i', b'o', b'n',
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0.0
            0x00, 0x08, b'f', b'i', b'l', b'e', b's', b'i', b'z', b'e',
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, // 0.0
            0x00, 0x00, 0x09,
        ];
        assert_eq!(&body[..], expected);
    }

    #[test]
    fn long_encoder_string_uses_long_string_marker() {
        let mut i = info(None);
        i.encoder = "e".repeat(70_000);
        let body = script_metadata_body(&i);
        let at = body
            .windows(9)
            .position(|w| w == b"\x00\x07encoder")
            .unwrap()
            + 9;
        assert_eq!(&body[at..at + 5], &[0x0c, 0x00, 0x01, 0x11, 0x70]);
        assert!(body.ends_with(&[0x00, 0x00, 0x09]));
    }
}
