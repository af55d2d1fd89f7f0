//! H.264 for FLV: Annex B parsing, the AVCDecoderConfigurationRecord (avcC) and AVC video tag
//! bodies.
//!
//! Encoders (libx264, h264_v4l2m2m) emit Annex B: NAL units separated by `00 00 01` or
//! `00 00 00 01` start codes. FLV and RTMP carry AVC as in MP4: the parameter sets once, in an
//! avcC record (the "sequence header"), and each access unit as NAL units prefixed with their
//! 4-byte big-endian length. This file does that rewrite.

use bytes::{BufMut, Bytes, BytesMut};

use super::FlvError;

const NAL_IDR: u8 = 5;
const NAL_SPS: u8 = 7;
const NAL_PPS: u8 = 8;
const NAL_AUD: u8 = 9;

/// FLV video tag byte 0 for a keyframe: frame type 1 (key) << 4 | codec id 7 (AVC).
const FLV_AVC_KEYFRAME: u8 = 0x17;
/// FLV video tag byte 0 for an inter frame: frame type 2 (inter) << 4 | codec id 7 (AVC).
const FLV_AVC_INTER: u8 = 0x27;
/// AVCPacketType 0: the body is an AVCDecoderConfigurationRecord.
const AVC_SEQUENCE_HEADER: u8 = 0;
/// AVCPacketType 1: the body is length-prefixed NAL units.
const AVC_NALU: u8 = 1;

/// The nal_unit_type of a NAL unit (the low 5 bits of its first byte); 0 (unspecified) for an
/// empty slice.
pub fn nal_unit_type(nal: &[u8]) -> u8 {
    nal.first().map_or(0, |b| b & 0x1f)
}

/// Position of the next `00 00 01` in `d`. Looks at every third byte first: a start code has
/// its `01` at `i + 2`, and any byte there other than `00` or `01` rules out start codes at
/// `i`, `i + 1` and `i + 2`, so typical slice data is skipped three bytes at a time.
fn find_start_code(d: &[u8]) -> Option<usize> {
    let mut i = 0;
    while i + 2 < d.len() {
        match d[i + 2] {
            0 => i += 1,
            1 if d[i] == 0 && d[i + 1] == 0 => return Some(i),
            _ => i += 3,
        }
    }
    None
}

/// Iterator over the NAL units of an Annex B buffer, see [`split_annexb`].
#[derive(Debug, Clone)]
pub struct AnnexBNals<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for AnnexBNals<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        while !self.rest.is_empty() {
            let (nal, rest) = match find_start_code(self.rest) {
                Some(i) => (&self.rest[..i], &self.rest[i + 3..]),
                None => (self.rest, &[][..]),
            };
            self.rest = rest;
            // A NAL unit never ends in a zero byte (it ends in rbsp_stop_one_bit, and
            // cabac_zero_words are escaped to `00 00 03`), so trailing zeros are the
            // `zero_byte` of a 4-byte start code or trailing_zero_8bits: not part of the NAL.
            let end = nal.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            if end > 0 {
                return Some(&nal[..end]);
            }
        }
        None
    }
}

/// The NAL units (without start codes) of an Annex B buffer. Accepts 3- and 4-byte start
/// codes, mixed; bytes before the first start code are not a NAL unit and are skipped, and so
/// are empty NAL units. A buffer without any start code yields nothing.
pub fn split_annexb(data: &[u8]) -> AnnexBNals<'_> {
    let rest = match find_start_code(data) {
        Some(i) => &data[i + 3..],
        None => &[],
    };
    AnnexBNals { rest }
}

/// Whether an Annex B access unit contains an IDR slice (NAL type 5), i.e. decoding can start
/// here. Used when the encoder's own keyframe flag is not trusted (h264_v4l2m2m).
pub fn is_keyframe_annexb(data: &[u8]) -> bool {
    split_annexb(data).any(|nal| nal_unit_type(nal) == NAL_IDR)
}

/// The first SPS and the first PPS of an Annex B buffer, copied out. For encoders such as
/// h264_v4l2m2m that put the parameter sets inline in the first IDR instead of extradata: to
/// know whether an access unit carries them and to compare them with the ones announced.
/// [`avc_decoder_config`] accepts that whole access unit directly (it ignores NAL types other
/// than SPS and PPS).
pub fn sps_pps_from_annexb(data: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut sps = None;
    let mut pps = None;
    for nal in split_annexb(data) {
        match nal_unit_type(nal) {
            NAL_SPS if sps.is_none() => sps = Some(nal),
            NAL_PPS if pps.is_none() => pps = Some(nal),
            _ => {}
        }
        if sps.is_some() && pps.is_some() {
            break;
        }
    }
    Some((sps?.to_vec(), pps?.to_vec()))
}

/// Builds the AVCDecoderConfigurationRecord from encoder extradata.
///
/// `annexb_extradata` is what libx264 and friends put in `AVCodecContext::extradata` with
/// global headers: SPS and PPS NAL units in Annex B. Extradata that is already an avcC record
/// (first byte 1: configurationVersion; Annex B starts with 0) is returned unchanged, so
/// callers need not know which form an encoder produces.
///
/// All SPS and PPS units found are stored, in order. `lengthSizeMinusOne` is 3 because
/// [`VideoPacketizer`] writes 4-byte lengths. For the profiles where ISO/IEC 14496-15 requires
/// it (High 100, High 10 110, High 4:2:2 122, High 4:4:4 144) the chroma_format / bit depth
/// extension is appended, parsed from the SPS (as FFmpeg's muxers do); if that part of the SPS
/// cannot be parsed the extension is omitted, which decoders accept because they read the
/// values from the SPS itself.
pub fn avc_decoder_config(annexb_extradata: &[u8]) -> Result<Bytes, FlvError> {
    if annexb_extradata.first() == Some(&1) {
        if annexb_extradata.len() < 7 {
            return Err(FlvError::TruncatedAvcc {
                len: annexb_extradata.len(),
            });
        }
        return Ok(Bytes::copy_from_slice(annexb_extradata));
    }
    let nals = || split_annexb(annexb_extradata);
    let sps_count = nals().filter(|n| nal_unit_type(n) == NAL_SPS).count();
    let pps_count = nals().filter(|n| nal_unit_type(n) == NAL_PPS).count();
    let sps = nals()
        .find(|n| nal_unit_type(n) == NAL_SPS)
        .ok_or(FlvError::NoSps)?;
    if pps_count == 0 {
        return Err(FlvError::NoPps);
    }
    if sps.len() < 4 {
        return Err(FlvError::SpsTooShort { len: sps.len() });
    }
    if sps_count > 31 {
        return Err(FlvError::TooManyParameterSets {
            kind: "SPS",
            count: sps_count,
            max: 31,
        });
    }
    if pps_count > 255 {
        return Err(FlvError::TooManyParameterSets {
            kind: "PPS",
            count: pps_count,
            max: 255,
        });
    }
    if let Some(n) = nals()
        .filter(|n| matches!(nal_unit_type(n), NAL_SPS | NAL_PPS))
        .find(|n| n.len() > usize::from(u16::MAX))
    {
        return Err(FlvError::ParameterSetTooLong { len: n.len() });
    }

    let mut out = BytesMut::with_capacity(annexb_extradata.len() + 16);
    out.put_u8(1); // configurationVersion
    out.put_slice(&sps[1..4]); // AVCProfileIndication, profile_compatibility, AVCLevelIndication
    out.put_u8(0xfc | 3); // reserved '111111' + lengthSizeMinusOne = 3
    out.put_u8(0xe0 | sps_count as u8); // reserved '111' + numOfSequenceParameterSets
    for n in nals().filter(|n| nal_unit_type(n) == NAL_SPS) {
        out.put_u16(n.len() as u16);
        out.put_slice(n);
    }
    out.put_u8(pps_count as u8);
    for n in nals().filter(|n| nal_unit_type(n) == NAL_PPS) {
        out.put_u16(n.len() as u16);
        out.put_slice(n);
    }
    if matches!(sps[1], 100 | 110 | 122 | 144) {
        if let Some(ext) = parse_sps_chroma(sps) {
            out.put_u8(0xfc | ext.chroma_format_idc);
            out.put_u8(0xf8 | ext.bit_depth_luma_minus8);
            out.put_u8(0xf8 | ext.bit_depth_chroma_minus8);
            out.put_u8(0); // numOfSequenceParameterSetExt
        }
    }
    Ok(out.freeze())
}

/// The SPS fields the avcC high-profile extension repeats.
#[derive(Debug, PartialEq, Eq)]
struct SpsChroma {
    chroma_format_idc: u8,
    bit_depth_luma_minus8: u8,
    bit_depth_chroma_minus8: u8,
}

/// Reads chroma_format_idc and the bit depths from an SPS NAL (H.264 §7.3.2.1.1). `None` when
/// the profile does not carry them, the SPS is truncated, or a value is out of range.
fn parse_sps_chroma(sps: &[u8]) -> Option<SpsChroma> {
    let profile_idc = *sps.get(1)?;
    if !matches!(
        profile_idc,
        100 | 110 | 122 | 244 | 44 | 83 | 86 | 118 | 128 | 138 | 139 | 134 | 135 | 144
    ) {
        return None;
    }
    // Skip the NAL header and profile/constraints/level: those bytes cannot contain an
    // emulation prevention byte (profile_idc and level_idc are never zero).
    let mut r = RbspReader::new(sps.get(4..)?);
    let _seq_parameter_set_id = r.ue()?;
    let chroma_format_idc = r.ue()?;
    if chroma_format_idc > 3 {
        return None;
    }
    if chroma_format_idc == 3 {
        let _separate_colour_plane_flag = r.bit()?;
    }
    let bit_depth_luma_minus8 = r.ue()?;
    let bit_depth_chroma_minus8 = r.ue()?;
    if bit_depth_luma_minus8 > 6 || bit_depth_chroma_minus8 > 6 {
        return None;
    }
    Some(SpsChroma {
        chroma_format_idc: chroma_format_idc as u8,
        bit_depth_luma_minus8: bit_depth_luma_minus8 as u8,
        bit_depth_chroma_minus8: bit_depth_chroma_minus8 as u8,
    })
}

/// MSB-first bit reader over NAL payload bytes that skips emulation prevention bytes
/// (`00 00 03` → `00 00`), enough for the Exp-Golomb fields at the start of an SPS.
struct RbspReader<'a> {
    data: &'a [u8],
    pos: usize,
    zeros: u8,
    cur: u8,
    bits_left: u8,
}

impl<'a> RbspReader<'a> {
    fn new(data: &'a [u8]) -> Self {
        Self {
            data,
            pos: 0,
            zeros: 0,
            cur: 0,
            bits_left: 0,
        }
    }

    fn bit(&mut self) -> Option<u32> {
        if self.bits_left == 0 {
            let mut b = *self.data.get(self.pos)?;
            self.pos += 1;
            if self.zeros >= 2 && b == 3 {
                b = *self.data.get(self.pos)?;
                self.pos += 1;
                self.zeros = 0;
            }
            self.zeros = if b == 0 { self.zeros + 1 } else { 0 };
            self.cur = b;
            self.bits_left = 8;
        }
        self.bits_left -= 1;
        Some(u32::from((self.cur >> self.bits_left) & 1))
    }

    /// Unsigned Exp-Golomb, ue(v). Codes longer than 31 bits are rejected as corrupt.
    fn ue(&mut self) -> Option<u32> {
        let mut leading_zeros = 0;
        while self.bit()? == 0 {
            leading_zeros += 1;
            if leading_zeros > 31 {
                return None;
            }
        }
        let mut value = 0u32;
        for _ in 0..leading_zeros {
            value = (value << 1) | self.bit()?;
        }
        Some((1u32 << leading_zeros) - 1 + value)
    }
}

/// The FLV video tag body of the AVC sequence header: keyframe + AVC, AVCPacketType 0,
/// composition time 0, then the avcC record. Sent before the first frame and after every
/// (re)connect.
pub fn video_sequence_header_body(avcc: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + avcc.len());
    out.put_slice(&[FLV_AVC_KEYFRAME, AVC_SEQUENCE_HEADER, 0, 0, 0]);
    out.put_slice(avcc);
    out.freeze()
}

/// Rewrites Annex B access units into FLV video tag bodies, reusing one buffer.
///
/// Each call writes the whole body into `buf` and hands it out with `split().freeze()`. When
/// the previous body has been dropped by the time of the next call (the sender consumed it),
/// `BytesMut::reserve` reclaims the same allocation, so steady state allocates nothing. While
/// earlier bodies are still queued, a new buffer is allocated: that is the price of sharing the
/// bytes with the ring instead of copying them.
#[derive(Debug, Default)]
pub struct VideoPacketizer {
    buf: BytesMut,
    /// NAL ranges of the current access unit, kept between calls so the scan does not
    /// allocate either.
    nals: Vec<(usize, usize)>,
}

impl VideoPacketizer {
    pub fn new() -> Self {
        Self::default()
    }

    /// One FLV AVC NALU tag body: `0x17`/`0x27`, AVCPacketType 1, the 24-bit signed
    /// composition time offset (`pts - dts` in ms, clamped to the 24-bit range), then every
    /// NAL unit of `annexb` as a 4-byte big-endian length plus the NAL.
    ///
    /// Access unit delimiters are dropped (FLV frames need no delimiting and some players
    /// reject them). With `strip_parameter_sets`, in-band SPS/PPS are dropped too, because the
    /// sequence header already carries them; keep them (`false`) when the encoder may change
    /// them mid-stream without a new sequence header. SEI and everything else is kept.
    pub fn packetize(
        &mut self,
        annexb: &[u8],
        keyframe: bool,
        cts_ms: i32,
        strip_parameter_sets: bool,
    ) -> Bytes {
        self.nals.clear();
        let base = annexb.as_ptr() as usize;
        let mut payload = 0;
        for nal in split_annexb(annexb) {
            let keep = match nal_unit_type(nal) {
                NAL_AUD => false,
                NAL_SPS | NAL_PPS => !strip_parameter_sets,
                _ => true,
            };
            if keep {
                let start = nal.as_ptr() as usize - base;
                self.nals.push((start, start + nal.len()));
                payload += 4 + nal.len();
            }
        }

        self.buf.reserve(5 + payload);
        self.buf.put_u8(if keyframe {
            FLV_AVC_KEYFRAME
        } else {
            FLV_AVC_INTER
        });
        self.buf.put_u8(AVC_NALU);
        let cts = cts_ms.clamp(-0x80_0000, 0x7f_ffff);
        self.buf.put_slice(&cts.to_be_bytes()[1..]);
        for &(start, end) in &self.nals {
            self.buf.put_u32((end - start) as u32);
            self.buf.put_slice(&annexb[start..end]);
        }
        self.buf.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libx264 High profile 1280x720 extradata, as `AVCodecContext::extradata` holds it.
    const X264_SPS: &[u8] = &[
        0x67, 0x64, 0x00, 0x1f, 0xac, 0xd9, 0x40, 0x50, 0x05, 0xbb, 0x01, 0x10, 0x00, 0x00, 0x03,
        0x00, 0x10, 0x00, 0x00, 0x03, 0x03, 0xc0, 0xf1, 0x83, 0x19, 0x60,
    ];
    const X264_PPS: &[u8] = &[0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0];

    fn x264_extradata() -> Vec<u8> {
        [&[0, 0, 0, 1][..], X264_SPS, &[0, 0, 0, 1], X264_PPS].concat()
    }

    /// The avcC record FFmpeg's FLV muxer writes for the extradata above.
    fn x264_avcc() -> Vec<u8> {
        let mut v = vec![0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x1a];
        v.extend_from_slice(X264_SPS);
        v.extend_from_slice(&[0x01, 0x00, 0x06]);
        v.extend_from_slice(X264_PPS);
        // High profile extension: chroma 4:2:0, 8-bit luma and chroma, no SPS extensions.
        v.extend_from_slice(&[0xfd, 0xf8, 0xf8, 0x00]);
        v
    }

    #[test]
    fn split_annexb_handles_3_and_4_byte_start_codes() {
        let data = [
            0, 0, 0, 1, 0x09, 0xf0, // AUD after a 4-byte code
            0, 0, 1, 0x06, 0x05, 0x01, // SEI after a 3-byte code
            0, 0, 0, 1, 0x65, 0x88, 0x00, 0x10, // IDR containing a zero byte
        ];
        let nals: Vec<&[u8]> = split_annexb(&data).collect();
        assert_eq!(
            nals,
            vec![
                &[0x09, 0xf0][..],
                &[0x06, 0x05, 0x01],
                &[0x65, 0x88, 0x00, 0x10]
            ]
        );
    }

    #[test]
    fn split_annexb_gives_trailing_zeros_to_the_next_start_code() {
        // trailing_zero_8bits after the SPS, a 4-byte code before the PPS, and trailing
        // zeros at the very end.
        let data = [0, 0, 1, 0x67, 0x42, 0, 0, 0, 0, 0, 1, 0x68, 0xce, 0, 0];
        let nals: Vec<&[u8]> = split_annexb(&data).collect();
        assert_eq!(nals, vec![&[0x67, 0x42][..], &[0x68, 0xce]]);
    }

    /// Emulation prevention as an encoder applies it, plus the rbsp stop bit, so the result is
    /// a valid NAL unit: no `00 00 0x` (x ≤ 3) inside and a non-zero last byte.
    fn escape(raw: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(raw.len() + 8);
        let mut zeros = 0;
        for &b in raw.iter().chain(&[0x80]) {
            if zeros >= 2 && b <= 3 {
                out.push(3);
                zeros = 0;
            }
            out.push(b);
            zeros = if b == 0 { zeros + 1 } else { 0 };
        }
        out
    }

    proptest::proptest! {
        #[test]
        fn split_annexb_returns_every_nal_whatever_the_start_codes(
            nals in proptest::collection::vec(
                (1u8..0x80, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)),
                0..8,
            ),
            long_codes in proptest::collection::vec(proptest::prelude::any::<bool>(), 8),
            trailing_zeros in 0usize..3,
        ) {
            let nals: Vec<Vec<u8>> = nals
                .iter()
                .map(|(header, rest)| escape(&[&[*header][..], rest].concat()))
                .collect();
            let mut stream = Vec::new();
            for (nal, &long) in nals.iter().zip(&long_codes) {
                stream.extend_from_slice(if long { &[0, 0, 0, 1][..] } else { &[0, 0, 1] });
                stream.extend_from_slice(nal);
            }
            stream.resize(stream.len() + trailing_zeros, 0);
            let got: Vec<&[u8]> = split_annexb(&stream).collect();
            let want: Vec<&[u8]> = nals.iter().map(Vec::as_slice).collect();
            proptest::prop_assert_eq!(got, want);
        }
    }

    #[test]
    fn split_annexb_skips_leading_garbage_and_empty_nals() {
        let data = [0xaa, 0xbb, 0, 0, 1, 0, 0, 1, 0x41, 0x9a];
        let nals: Vec<&[u8]> = split_annexb(&data).collect();
        assert_eq!(nals, vec![&[0x41, 0x9a][..]]);
        assert_eq!(split_annexb(&[0x41, 0x9a, 0x00]).count(), 0);
        assert_eq!(split_annexb(&[]).count(), 0);
        assert_eq!(split_annexb(&[0, 0, 1]).count(), 0);
    }

    #[test]
    fn avcc_from_x264_extradata_is_byte_exact() {
        let avcc = avc_decoder_config(&x264_extradata()).unwrap();
        assert_eq!(&avcc[..], &x264_avcc()[..]);
    }

    #[test]
    fn avcc_from_mixed_start_codes() {
        let data = [&[0, 0, 1][..], X264_SPS, &[0, 0, 0, 1], X264_PPS, &[0]].concat();
        let avcc = avc_decoder_config(&data).unwrap();
        assert_eq!(&avcc[..], &x264_avcc()[..]);
    }

    #[test]
    fn avcc_baseline_has_no_high_profile_extension() {
        let sps = [0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84];
        let pps = [0x68, 0xce, 0x3c, 0x80];
        let data = [&[0, 0, 0, 1][..], &sps, &[0, 0, 0, 1], &pps].concat();
        let avcc = avc_decoder_config(&data).unwrap();
        let expected = [
            &[0x01, 0x42, 0xc0, 0x1e, 0xff, 0xe1, 0x00, 0x0a][..],
            &sps,
            &[0x01, 0x00, 0x04],
            &pps,
        ]
        .concat();
        assert_eq!(&avcc[..], &expected[..]);
    }

    #[test]
    fn avcc_high_profile_with_truncated_sps_omits_extension() {
        // High profile SPS that ends before chroma_format_idc.
        let sps = [0x67, 0x64, 0x00, 0x1f];
        let pps = [0x68, 0xeb];
        let data = [&[0, 0, 1][..], &sps, &[0, 0, 1], &pps].concat();
        let avcc = avc_decoder_config(&data).unwrap();
        let expected = [
            &[0x01, 0x64, 0x00, 0x1f, 0xff, 0xe1, 0x00, 0x04][..],
            &sps,
            &[0x01, 0x00, 0x02],
            &pps,
        ]
        .concat();
        assert_eq!(&avcc[..], &expected[..]);
    }

    #[test]
    fn sps_chroma_fields_and_emulation_prevention() {
        // High 4:4:4 Predictive (244) is not in the avcC list but its SPS carries chroma.
        // sps_id ue=0 '1', chroma_format_idc ue=3 '00100', separate_colour_plane '0',
        // bit_depth_luma ue=2 '011', bit_depth_chroma ue=2 '011' → 1001 0000 1101 1xxx.
        let sps = [0x67, 0xf4, 0x00, 0x1f, 0x90, 0xd8];
        assert_eq!(
            parse_sps_chroma(&sps),
            Some(SpsChroma {
                chroma_format_idc: 3,
                bit_depth_luma_minus8: 2,
                bit_depth_chroma_minus8: 2,
            })
        );
        // `00 00 03 01`: the 03 is an emulation prevention byte, so the reader sees
        // `00 00 01`: 23 zero bits before the first one bit (22 if 03 were read as data).
        let mut r = RbspReader::new(&[0x00, 0x00, 0x03, 0x01, 0x80]);
        let mut zeros = 0;
        while r.bit() == Some(0) {
            zeros += 1;
        }
        assert_eq!(zeros, 23);
    }

    #[test]
    fn avcc_input_is_returned_unchanged() {
        let avcc = x264_avcc();
        assert_eq!(&avc_decoder_config(&avcc).unwrap()[..], &avcc[..]);
        assert!(matches!(
            avc_decoder_config(&[1, 0x64, 0]),
            Err(FlvError::TruncatedAvcc { len: 3 })
        ));
    }

    #[test]
    fn avcc_errors_name_the_missing_parameter_set() {
        let only_pps = [&[0, 0, 0, 1][..], X264_PPS].concat();
        assert!(matches!(
            avc_decoder_config(&only_pps),
            Err(FlvError::NoSps)
        ));
        let only_sps = [&[0, 0, 0, 1][..], X264_SPS].concat();
        assert!(matches!(
            avc_decoder_config(&only_sps),
            Err(FlvError::NoPps)
        ));
        assert!(matches!(avc_decoder_config(&[]), Err(FlvError::NoSps)));
        let short = [&[0, 0, 1][..], &[0x67, 0x64], &[0, 0, 1], X264_PPS].concat();
        assert!(matches!(
            avc_decoder_config(&short),
            Err(FlvError::SpsTooShort { len: 2 })
        ));
    }

    #[test]
    fn sps_pps_from_inline_idr() {
        let au = [
            &[0, 0, 0, 1, 0x09, 0x10][..],
            &[0, 0, 0, 1],
            X264_SPS,
            &[0, 0, 0, 1],
            X264_PPS,
            &[0, 0, 1, 0x65, 0x88, 0x84],
        ]
        .concat();
        let (sps, pps) = sps_pps_from_annexb(&au).unwrap();
        assert_eq!(sps, X264_SPS);
        assert_eq!(pps, X264_PPS);
        assert_eq!(sps_pps_from_annexb(&[0, 0, 1, 0x65, 0x88]), None);
    }

    #[test]
    fn keyframe_detection() {
        assert!(is_keyframe_annexb(&[
            0, 0, 0, 1, 0x09, 0x10, 0, 0, 1, 0x65, 0x88
        ]));
        assert!(!is_keyframe_annexb(&[
            0, 0, 0, 1, 0x09, 0x30, 0, 0, 1, 0x41, 0x9a
        ]));
        assert!(!is_keyframe_annexb(&[]));
    }

    #[test]
    fn video_sequence_header_body_bytes() {
        let body = video_sequence_header_body(&[0x01, 0x64, 0x00, 0x1f]);
        assert_eq!(&body[..], &[0x17, 0x00, 0, 0, 0, 0x01, 0x64, 0x00, 0x1f]);
    }

    #[test]
    fn packetize_keyframe_strips_aud_and_parameter_sets_keeps_sei() {
        let au = [
            &[0, 0, 0, 1, 0x09, 0x10][..],         // AUD
            &[0, 0, 0, 1, 0x67, 0x64, 0x00, 0x1f], // SPS
            &[0, 0, 0, 1, 0x68, 0xeb],             // PPS
            &[0, 0, 1, 0x06, 0x05, 0x02, 0x80],    // SEI
            &[0, 0, 1, 0x65, 0x88, 0x84, 0x00, 0x21],
        ]
        .concat();
        let mut p = VideoPacketizer::new();
        let body = p.packetize(&au, true, 0, true);
        assert_eq!(
            &body[..],
            &[
                0x17, 0x01, 0x00, 0x00, 0x00, // key, NALU, cts 0
                0x00, 0x00, 0x00, 0x04, 0x06, 0x05, 0x02, 0x80, // SEI
                0x00, 0x00, 0x00, 0x05, 0x65, 0x88, 0x84, 0x00, 0x21, // IDR
            ]
        );
        // Without stripping, the parameter sets stay (AUD still goes).
        let body = p.packetize(&au, true, 0, false);
        assert_eq!(
            &body[5..19],
            &[0, 0, 0, 4, 0x67, 0x64, 0x00, 0x1f, 0, 0, 0, 2, 0x68, 0xeb]
        );
        assert_eq!(body.len(), 5 + 8 + 6 + 8 + 9);
    }

    #[test]
    fn packetize_inter_frame_with_positive_and_negative_cts() {
        let au = [0, 0, 1, 0x41, 0x9a, 0x02];
        let mut p = VideoPacketizer::new();
        assert_eq!(
            &p.packetize(&au, false, 80, true)[..],
            &[0x27, 0x01, 0x00, 0x00, 0x50, 0, 0, 0, 3, 0x41, 0x9a, 0x02]
        );
        assert_eq!(
            &p.packetize(&au, false, -40, true)[..5],
            &[0x27, 0x01, 0xff, 0xff, 0xd8]
        );
        assert_eq!(
            &p.packetize(&au, false, 0x0012_3456, true)[..5],
            &[0x27, 0x01, 0x12, 0x34, 0x56]
        );
        // Out of the 24-bit range: clamped, never wrapped into the wrong sign.
        assert_eq!(
            &p.packetize(&au, false, i32::MAX, true)[..5],
            &[0x27, 0x01, 0x7f, 0xff, 0xff]
        );
        assert_eq!(
            &p.packetize(&au, false, i32::MIN, true)[..5],
            &[0x27, 0x01, 0x80, 0x00, 0x00]
        );
    }

    #[test]
    fn packetize_reuses_the_buffer_once_the_previous_body_is_dropped() {
        let au = [&[0, 0, 0, 1, 0x65][..], &[0x5a; 1000]].concat();
        let mut p = VideoPacketizer::new();
        let first = p.packetize(&au, true, 0, true);
        let first_ptr = first.as_ptr();
        assert_eq!(first.len(), 5 + 4 + 1001);
        drop(first);
        let second = p.packetize(&au, true, 0, true);
        assert_eq!(second.as_ptr(), first_ptr, "the buffer was reallocated");
        assert_eq!(second.len(), 5 + 4 + 1001);
        drop(second);
        // A smaller frame fits into the same allocation as well.
        let small = p.packetize(&[0, 0, 1, 0x41, 0x01], false, 0, true);
        assert_eq!(small.as_ptr(), first_ptr);
        // While a body is still held, the next one must not overwrite it.
        let third = p.packetize(&au, true, 0, true);
        assert_eq!(&small[..], &[0x27, 1, 0, 0, 0, 0, 0, 0, 2, 0x41, 0x01]);
        assert_ne!(third.as_ptr(), small.as_ptr());
    }
}
