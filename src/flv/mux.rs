//! The muxer: what the encoders opened with becomes the stream's headers, and each encoded
//! packet, borrowed from the encoder while its sink runs, becomes a [`MediaPacket`] in one
//! pass (the tag body is written straight from FFmpeg's buffer; nothing is copied first).
//!
//! One [`VideoMuxer`] and one [`AudioMuxer`] live on their encode threads. The video muxer
//! owns the state of the AVC sequence header ([`SequenceHeader`]): sent, and with which body,
//! or awaited from the next keyframe when the encoder puts its SPS/PPS inline
//! (`h264_v4l2m2m`), so a reopened encoder gets a new sequence header exactly when its
//! parameter sets changed. Pure: no clock, no I/O, no logging; a problem comes back as
//! [`FlvError`] for the caller to report.

use std::sync::Arc;

use bytes::Bytes;

use super::{
    audio_sequence_header_body, avc_decoder_config, script_metadata_body,
    video_sequence_header_body, AudioPacketizer, FlvError, VideoPacketizer,
};
use crate::media::{
    AudioInfo, EncodedPacket, MediaPacket, PacketKind, StreamInfo, StreamParams, VideoParams,
};

/// onMetaData contents for what the encoders opened with.
pub fn stream_info(params: &StreamParams) -> StreamInfo {
    let (width, height, fps, kbps, enc) = params
        .video
        .as_ref()
        .map(|v| {
            (
                v.width,
                v.height,
                f64::from(v.fps),
                v.bitrate_kbps,
                v.encoder.as_str(),
            )
        })
        .unwrap_or((0, 0, 0.0, 0, "none"));
    StreamInfo {
        width,
        height,
        fps,
        video_bitrate_kbps: kbps,
        audio: params.audio.as_ref().map(|a| AudioInfo {
            sample_rate: a.sample_rate,
            channels: a.channels,
            bitrate_kbps: a.bitrate_kbps,
        }),
        encoder: format!("polypush {} ({enc})", env!("CARGO_PKG_VERSION")),
    }
}

/// The packets a stream starts with, stamped `dts_ms`: metadata and the sequence headers
/// known at open (the video one comes later, from the first keyframe, when the parameter sets
/// come inline).
pub fn headers(params: &StreamParams, dts_ms: u64) -> Result<Vec<MediaPacket>, FlvError> {
    let info = Arc::new(stream_info(params));
    let mut out = vec![MediaPacket {
        kind: PacketKind::Metadata,
        dts_ms,
        body: script_metadata_body(&info),
        info: Some(info),
    }];
    if let Some(extradata) = params.video.as_ref().and_then(|v| v.extradata.as_ref()) {
        let avcc = avc_decoder_config(extradata)?;
        out.push(MediaPacket::new(
            PacketKind::VideoHeader,
            dts_ms,
            video_sequence_header_body(&avcc),
        ));
    }
    if let Some(a) = &params.audio {
        out.push(MediaPacket::new(
            PacketKind::AudioHeader,
            dts_ms,
            audio_sequence_header_body(&a.asc),
        ));
    }
    Ok(out)
}

/// Where the video track's AVC sequence header stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SequenceHeader {
    /// Sent with this body: frames go out; a reopened encoder whose SPS/PPS differ sends a
    /// new one before its first frame.
    Sent(Bytes),
    /// The parameter sets come in front of a keyframe: nothing goes out before one that
    /// carries them (nothing decodes without them).
    FromNextKeyframe,
}

/// Video packets → FLV AVC tag bodies, on the video encode thread.
#[derive(Debug)]
pub struct VideoMuxer {
    packetizer: VideoPacketizer,
    /// Added to every timestamp: `[target] timestamp_offset_ms` plus where a restarted
    /// pipeline picks up the broadcast's timeline.
    offset_ms: u64,
    header: SequenceHeader,
}

impl VideoMuxer {
    /// For an encoder that opened with `params`; its header went out with [`headers`] unless
    /// the parameter sets come inline.
    pub fn new(params: &VideoParams, offset_ms: u64) -> Self {
        let header = match (&params.extradata, params.parameter_sets_inline) {
            (Some(extradata), false) => match avc_decoder_config(extradata) {
                Ok(avcc) => SequenceHeader::Sent(video_sequence_header_body(&avcc)),
                Err(_) => SequenceHeader::FromNextKeyframe,
            },
            _ => SequenceHeader::FromNextKeyframe,
        };
        Self {
            packetizer: VideoPacketizer::new(),
            offset_ms,
            header,
        }
    }

    pub fn header(&self) -> &SequenceHeader {
        &self.header
    }

    /// Hands `out` the packets `pkt` makes: a new sequence header when one is due, then the
    /// frame (nothing before the first header). An `Err` says why a header could not be made;
    /// the state still moved on (the muxer waits for a keyframe that has the parameter sets).
    pub fn mux(
        &mut self,
        pkt: &EncodedPacket<'_>,
        out: &mut impl FnMut(MediaPacket),
    ) -> Result<(), FlvError> {
        let dts = pkt.dts_ms.max(0) as u64 + self.offset_ms;
        let mut result = Ok(());
        if let Some(params) = &pkt.reopened {
            // A reopened encoder (an IDR at a new bitrate, frame rate or size): FLV players
            // and nginx-rtmp take a new sequence header mid-stream.
            let annexb = params.extradata.as_deref().unwrap_or(pkt.data);
            match avc_decoder_config(annexb) {
                Ok(avcc) => self.send_header(video_sequence_header_body(&avcc), dts, out),
                Err(e) => {
                    self.header = SequenceHeader::FromNextKeyframe;
                    result = Err(e);
                }
            }
        }
        if self.header == SequenceHeader::FromNextKeyframe {
            if !pkt.keyframe {
                return result;
            }
            let avcc = avc_decoder_config(pkt.data)?;
            self.send_header(video_sequence_header_body(&avcc), dts, out);
        }
        let cts = (pkt.pts_ms - pkt.dts_ms).clamp(i32::MIN as i64, i32::MAX as i64) as i32;
        let body = self.packetizer.packetize(pkt.data, pkt.keyframe, cts, true);
        out(MediaPacket::new(
            PacketKind::Video {
                keyframe: pkt.keyframe,
            },
            dts,
            body,
        ));
        result
    }

    fn send_header(&mut self, body: Bytes, dts: u64, out: &mut impl FnMut(MediaPacket)) {
        if self.header != SequenceHeader::Sent(body.clone()) {
            out(MediaPacket::new(PacketKind::VideoHeader, dts, body.clone()));
            self.header = SequenceHeader::Sent(body);
        }
    }
}

/// AAC packets → FLV audio tag bodies, on the audio encode thread.
#[derive(Debug, Default)]
pub struct AudioMuxer {
    packetizer: AudioPacketizer,
    offset_ms: u64,
}

impl AudioMuxer {
    pub fn new(offset_ms: u64) -> Self {
        Self {
            packetizer: AudioPacketizer::new(),
            offset_ms,
        }
    }

    pub fn mux(&mut self, pkt: &EncodedPacket<'_>) -> MediaPacket {
        let dts = pkt.dts_ms.max(0) as u64 + self.offset_ms;
        MediaPacket::new(PacketKind::Audio, dts, self.packetizer.packetize(pkt.data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::sps_pps_from_annexb;

    /// A real SPS/PPS pair (libx264, 320x240 High) and one with another size.
    fn extradata(width_mbs: u8) -> Bytes {
        // Minimal, well-formed enough for avcC: NAL header, profile 100, constraints,
        // level 30, then a byte that differs per size.
        let sps = [0x67, 100, 0, 30, 0xac, width_mbs, 0x40];
        let pps = [0x68, 0xeb, 0xe3, 0xcb];
        let mut b = vec![0, 0, 0, 1];
        b.extend_from_slice(&sps);
        b.extend_from_slice(&[0, 0, 0, 1]);
        b.extend_from_slice(&pps);
        Bytes::from(b)
    }

    fn params(extradata: Option<Bytes>, inline: bool) -> VideoParams {
        VideoParams {
            encoder: "libx264".into(),
            width: 320,
            height: 240,
            fps: 25,
            bitrate_kbps: 500,
            extradata,
            parameter_sets_inline: inline,
        }
    }

    fn frame<'a>(data: &'a [u8], dts: i64, key: bool) -> EncodedPacket<'a> {
        EncodedPacket {
            data,
            pts_ms: dts,
            dts_ms: dts,
            keyframe: key,
            reopened: None,
        }
    }

    fn kinds(out: &[MediaPacket]) -> Vec<(PacketKind, u64)> {
        out.iter().map(|p| (p.kind, p.dts_ms)).collect()
    }

    const IDR: &[u8] = &[0, 0, 0, 1, 0x65, 0x88, 0x84, 0x21];
    const P: &[u8] = &[0, 0, 0, 1, 0x41, 0x9a, 0x02];
    const KEY: PacketKind = PacketKind::Video { keyframe: true };
    const DELTA: PacketKind = PacketKind::Video { keyframe: false };

    #[test]
    fn headers_carry_metadata_and_both_sequence_headers_at_the_offset() {
        let stream = StreamParams {
            video: Some(params(Some(extradata(20)), false)),
            audio: Some(crate::media::AudioParams {
                sample_rate: 48_000,
                channels: 2,
                bitrate_kbps: 128,
                asc: Bytes::from_static(&[0x11, 0x90]),
            }),
        };
        let h = headers(&stream, 500).unwrap();
        assert_eq!(
            kinds(&h),
            [
                (PacketKind::Metadata, 500),
                (PacketKind::VideoHeader, 500),
                (PacketKind::AudioHeader, 500)
            ]
        );
        assert_eq!(h[0].info.as_ref().unwrap().width, 320);
        assert_eq!(&h[2].body[..], &[0xaf, 0x00, 0x11, 0x90]);
    }

    #[test]
    fn frames_go_out_offset_and_a_reopen_sends_a_header_only_when_the_sps_changed() {
        let opened = params(Some(extradata(20)), false);
        let mut mux = VideoMuxer::new(&opened, 1000);
        let mut out = Vec::new();
        mux.mux(&frame(IDR, 0, true), &mut |p| out.push(p)).unwrap();
        mux.mux(&frame(P, 40, false), &mut |p| out.push(p)).unwrap();
        assert_eq!(kinds(&out), [(KEY, 1000), (DELTA, 1040)]);
        // The tag body: keyframe flag, NALU packet, cts 0, then length-prefixed NALs.
        assert_eq!(&out[0].body[..5], &[0x17, 1, 0, 0, 0]);
        assert_eq!(&out[0].body[5..9], &4u32.to_be_bytes());

        // Reopened at another bitrate: the same parameter sets, no header.
        out.clear();
        let mut idr = frame(IDR, 80, true);
        idr.reopened = Some(Arc::new(VideoParams {
            bitrate_kbps: 300,
            ..opened.clone()
        }));
        mux.mux(&idr, &mut |p| out.push(p)).unwrap();
        assert_eq!(kinds(&out), [(KEY, 1080)]);

        // At another size: a new header first.
        out.clear();
        let half = params(Some(extradata(10)), false);
        let mut idr = frame(IDR, 120, true);
        idr.reopened = Some(Arc::new(half.clone()));
        mux.mux(&idr, &mut |p| out.push(p)).unwrap();
        assert_eq!(kinds(&out), [(PacketKind::VideoHeader, 1120), (KEY, 1120)]);
        let avcc = avc_decoder_config(half.extradata.as_ref().unwrap()).unwrap();
        assert_eq!(out[0].body, video_sequence_header_body(&avcc));

        // Reopened again at that size: nothing new.
        out.clear();
        let mut idr = frame(IDR, 160, true);
        idr.reopened = Some(Arc::new(half));
        mux.mux(&idr, &mut |p| out.push(p)).unwrap();
        assert_eq!(kinds(&out), [(KEY, 1160)]);
    }

    #[test]
    fn inline_parameter_sets_hold_everything_until_a_keyframe_carries_them() {
        let mut mux = VideoMuxer::new(&params(None, true), 0);
        assert_eq!(mux.header(), &SequenceHeader::FromNextKeyframe);
        let mut out = Vec::new();
        mux.mux(&frame(P, 0, false), &mut |p| out.push(p)).unwrap();
        assert!(out.is_empty(), "nothing decodes before the sequence header");
        // A keyframe without SPS/PPS: an error, still nothing out.
        assert!(mux
            .mux(&frame(IDR, 40, true), &mut |p| out.push(p))
            .is_err());
        assert!(out.is_empty());
        // One with them in front: header, then the frame without the parameter sets.
        let inline: Vec<u8> = [&extradata(20)[..], IDR].concat();
        mux.mux(&frame(&inline, 80, true), &mut |p| out.push(p))
            .unwrap();
        assert_eq!(kinds(&out), [(PacketKind::VideoHeader, 80), (KEY, 80)]);
        let (sps, _) = sps_pps_from_annexb(&inline).unwrap();
        assert!(!out[1].body.windows(sps.len()).any(|w| w == &sps[..]));
        assert!(matches!(mux.header(), SequenceHeader::Sent(_)));
    }

    #[test]
    fn audio_frames_are_tagged_and_offset() {
        let mut mux = AudioMuxer::new(7);
        let p = mux.mux(&frame(&[0x21, 0x10], 21, true));
        assert_eq!((p.kind, p.dts_ms), (PacketKind::Audio, 28));
        assert_eq!(&p.body[..], &[0xaf, 0x01, 0x21, 0x10]);
    }
}
