//! The media: 10 s of 720p30 H.264 and AAC encoded once with the `ffmpeg` CLI, split into
//! access units and ADTS frames, interleaved by DTS, with the stream's sequence headers.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use polypush::flv::{
    aac_specific_config, audio_sequence_header_body, avc_decoder_config, is_keyframe_annexb,
    nal_unit_type, split_annexb, video_sequence_header_body,
};
use polypush::media::{AudioInfo, MediaPacket, PacketKind, StreamInfo, VideoParams};

// ---------------------------------------------------------------------------------------------
// Media

/// One encoded unit as the encoder hands it over: Annex B video or ADTS AAC.
pub(super) struct Unit {
    pub(super) video: bool,
    pub(super) keyframe: bool,
    /// DTS within one pass over the media, ms.
    pub(super) dts_ms: u64,
    pub(super) data: Bytes,
}

pub(super) struct Media {
    pub(super) units: Vec<Unit>,
    /// Added to the timestamps once per pass, so they keep increasing.
    pub(super) period_ms: u64,
    /// Metadata, AVC and AAC sequence headers.
    pub(super) headers: Vec<MediaPacket>,
    /// What the video encoder "opened with" (SPS/PPS from the first IDR), for the muxer.
    pub(super) video_params: VideoParams,
    pub(super) video_frames: usize,
    pub(super) audio_frames: usize,
    pub(super) bytes: usize,
}

const FPS: u64 = 30;
const SAMPLE_RATE: u32 = 48_000;
const AAC_FRAME: u64 = 1024;

fn ffmpeg_args(video: &Path, audio: &Path) -> Vec<String> {
    let s = |v: &str| v.to_string();
    vec![
        s("-hide_banner"),
        s("-loglevel"),
        s("error"),
        s("-nostdin"),
        s("-y"),
        s("-f"),
        s("lavfi"),
        s("-t"),
        s("10"),
        s("-i"),
        format!("testsrc2=size=1280x720:rate={FPS}"),
        s("-f"),
        s("lavfi"),
        s("-t"),
        s("10"),
        s("-i"),
        format!("sine=frequency=440:sample_rate={SAMPLE_RATE}"),
        s("-map"),
        s("0:v"),
        s("-c:v"),
        s("libx264"),
        s("-preset"),
        s("veryfast"),
        s("-tune"),
        s("zerolatency"),
        s("-b:v"),
        s("2500k"),
        s("-maxrate"),
        s("2500k"),
        s("-bufsize"),
        s("2500k"),
        s("-g"),
        s("60"),
        s("-keyint_min"),
        s("60"),
        s("-sc_threshold"),
        s("0"),
        s("-bf"),
        s("0"),
        s("-pix_fmt"),
        s("yuv420p"),
        s("-bsf:v"),
        s("h264_metadata=aud=insert"),
        s("-f"),
        s("h264"),
        video.display().to_string(),
        s("-map"),
        s("1:a"),
        s("-ac"),
        s("2"),
        s("-c:a"),
        s("aac"),
        s("-b:a"),
        s("128k"),
        s("-f"),
        s("adts"),
        audio.display().to_string(),
    ]
}

/// Encodes the media once; later runs reuse the files.
fn media_files() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hotpath-media-v1");
    let video = dir.join("video.h264");
    let audio = dir.join("audio.aac");
    let present = |p: &Path| p.metadata().is_ok_and(|m| m.len() > 0);
    if present(&video) && present(&audio) {
        return (video, audio);
    }
    std::fs::create_dir_all(&dir).expect("create the media directory");
    let (tmp_v, tmp_a) = (dir.join("video.h264.tmp"), dir.join("audio.aac.tmp"));
    eprintln!(
        "encoding 10 s of 720p30 H.264 + AAC with ffmpeg into {}",
        dir.display()
    );
    let status = Command::new("ffmpeg")
        .args(ffmpeg_args(&tmp_v, &tmp_a))
        .status()
        .expect("run ffmpeg (is the ffmpeg CLI installed?)");
    assert!(status.success(), "ffmpeg failed: {status}");
    std::fs::rename(&tmp_v, &video).expect("rename video");
    std::fs::rename(&tmp_a, &audio).expect("rename audio");
    (video, audio)
}

/// Splits an Annex B stream into access units at access unit delimiters (NAL type 9).
fn split_access_units(stream: &Bytes) -> Vec<Bytes> {
    let base = stream.as_ptr() as usize;
    let mut starts: Vec<usize> = split_annexb(stream)
        .filter(|nal| nal_unit_type(nal) == 9)
        .map(|nal| {
            let at = nal.as_ptr() as usize - base - 3; // the `00 00 01` before it
            if at > 0 && stream[at - 1] == 0 {
                at - 1
            } else {
                at
            }
        })
        .collect();
    starts.push(stream.len());
    starts
        .windows(2)
        .map(|w| stream.slice(w[0]..w[1]))
        .collect()
}

/// Splits an ADTS stream into frames (header included).
fn split_adts(stream: &Bytes) -> Vec<Bytes> {
    let mut frames = Vec::new();
    let mut at = 0;
    while at + 7 <= stream.len() {
        let h = &stream[at..];
        assert!(
            h[0] == 0xff && h[1] & 0xf0 == 0xf0,
            "lost ADTS sync at {at}"
        );
        let len = (usize::from(h[3] & 3) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        assert!(
            len >= 7 && at + len <= stream.len(),
            "bad ADTS length at {at}"
        );
        frames.push(stream.slice(at..at + len));
        at += len;
    }
    frames
}

pub(super) fn load_media() -> Media {
    let (video_path, audio_path) = media_files();
    let video = Bytes::from(std::fs::read(&video_path).expect("read video"));
    let audio = Bytes::from(std::fs::read(&audio_path).expect("read audio"));
    let aus = split_access_units(&video);
    let frames = split_adts(&audio);
    assert!(
        is_keyframe_annexb(&aus[0]),
        "the first access unit is an IDR"
    );

    let avcc = avc_decoder_config(&aus[0]).expect("SPS/PPS in the first IDR");
    let asc = aac_specific_config(SAMPLE_RATE, 2).expect("AAC config");
    let mut metadata = MediaPacket::new(PacketKind::Metadata, 0, Bytes::new());
    metadata.info = Some(Arc::new(StreamInfo {
        width: 1280,
        height: 720,
        fps: FPS as f64,
        video_bitrate_kbps: 2500,
        audio: Some(AudioInfo {
            sample_rate: SAMPLE_RATE,
            channels: 2,
            bitrate_kbps: 128,
        }),
        encoder: "polypush hotpath bench".into(),
    }));
    let headers = vec![
        metadata,
        MediaPacket::new(
            PacketKind::VideoHeader,
            0,
            video_sequence_header_body(&avcc),
        ),
        MediaPacket::new(PacketKind::AudioHeader, 0, audio_sequence_header_body(&asc)),
    ];

    let mut units: Vec<Unit> = aus
        .iter()
        .enumerate()
        .map(|(i, au)| Unit {
            video: true,
            keyframe: is_keyframe_annexb(au),
            dts_ms: i as u64 * 1000 / FPS,
            data: au.clone(),
        })
        .chain(frames.iter().enumerate().map(|(i, f)| Unit {
            video: false,
            keyframe: false,
            dts_ms: i as u64 * AAC_FRAME * 1000 / u64::from(SAMPLE_RATE),
            data: f.clone(),
        }))
        .collect();
    // Stable: on equal DTS video stays first, as the encoders' interleaving does not matter.
    units.sort_by_key(|u| u.dts_ms);
    let last = units.last().map_or(0, |u| u.dts_ms);
    let video_params = VideoParams {
        encoder: "libx264".into(),
        width: 1280,
        height: 720,
        fps: FPS as u32,
        bitrate_kbps: 2500,
        extradata: Some(aus[0].clone()),
        parameter_sets_inline: false,
    };
    Media {
        video_params,
        period_ms: last + 1000 / FPS + 1,
        video_frames: aus.len(),
        audio_frames: frames.len(),
        bytes: video.len() + audio.len(),
        headers,
        units,
    }
}
