//! The safety recorder fed with real encoded packets: a short H.264 + AAC FLV made with the
//! ffmpeg CLI is split into the `MediaPacket`s the encode threads would push, recorded in 2 s
//! segments, and every segment is checked with ffprobe and ffmpeg: playable on its own,
//! starting with a keyframe at 0, and no video frame lost across the cuts.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use bytes::Bytes;
use common::nginx::{decode_errors, ffprobe_json};
use common::{flv_tags, FlvTag};
use polypush::flv::script_metadata_body;
use polypush::media::{AudioInfo, MediaPacket, PacketKind, StreamInfo};
use polypush::record::{RecordConfig, RecordStats, Recorder};

/// Encodes `secs` seconds of test pattern and tone the way the brief describes: 25 fps,
/// a keyframe every second, no B-frames, 48 kHz AAC.
fn encode_input(dir: &Path, secs: u32) -> PathBuf {
    let path = dir.join("in.flv");
    let status = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=sample_rate=48000"])
        .args(["-t", &secs.to_string()])
        .args([
            "-c:v", "libx264", "-g", "25", "-bf", "0", "-c:a", "aac", "-f", "flv",
        ])
        .arg(&path)
        .stdin(Stdio::null())
        .status()
        .expect("the ffmpeg CLI is installed");
    assert!(status.success(), "ffmpeg could not encode the input");
    path
}

/// An FLV tag as the packet our encode threads would have pushed, or `None` for what they
/// never push (the AVC end-of-sequence tag). onMetaData is ours, not ffmpeg's: ffmpeg's
/// carries the input's duration, which would then be claimed by every segment.
fn packet(tag: &FlvTag) -> Option<MediaPacket> {
    let b = &tag.body;
    let kind = match (tag.kind, b.get(1)) {
        (18, _) => {
            let info = StreamInfo {
                width: 320,
                height: 240,
                fps: 25.0,
                video_bitrate_kbps: 500,
                audio: Some(AudioInfo {
                    sample_rate: 48_000,
                    channels: 1,
                    bitrate_kbps: 128,
                }),
                encoder: "polypush test (libx264)".into(),
            };
            return Some(MediaPacket::new(
                PacketKind::Metadata,
                0,
                script_metadata_body(&info),
            ));
        }
        (9, Some(0)) => PacketKind::VideoHeader,
        (9, Some(1)) => PacketKind::Video {
            keyframe: b[0] >> 4 == 1,
        },
        (8, Some(0)) => PacketKind::AudioHeader,
        (8, Some(1)) => PacketKind::Audio,
        _ => return None,
    };
    Some(MediaPacket::new(
        kind,
        u64::from(tag.ts_ms),
        Bytes::from(b.clone()),
    ))
}

fn config(dir: &Path) -> RecordConfig {
    RecordConfig {
        dir: dir.to_path_buf(),
        segment_s: 2,
        max_total_bytes: u64::MAX,
        min_free_bytes: 0,
        ..RecordConfig::default()
    }
}

/// Our complete segments, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("polypush-") && name.ends_with(".flv")
        })
        .collect();
    v.sort();
    v
}

/// Records `pkts` and checks every segment; returns the stats and the segments.
fn record_and_check(pkts: &[MediaPacket], out: &Path) -> (RecordStats, Vec<PathBuf>) {
    let rec = Recorder::start(config(out)).unwrap();
    for p in pkts {
        rec.push(p);
    }
    let stats = rec.stop().unwrap();
    let segs = segments(out);
    for seg in &segs {
        check_segment(seg);
    }
    (stats, segs)
}

fn check_segment(seg: &Path) {
    let probe = ffprobe_json(seg);
    let streams = probe["streams"].as_array().expect("streams");
    let codecs: Vec<&str> = streams
        .iter()
        .map(|s| s["codec_name"].as_str().unwrap_or(""))
        .collect();
    assert!(
        codecs.contains(&"h264") && codecs.contains(&"aac"),
        "{}: {codecs:?}",
        seg.display()
    );
    let video = streams.iter().find(|s| s["codec_name"] == "h264").unwrap();
    assert_eq!(
        (&video["width"], &video["height"]),
        (&320.into(), &240.into())
    );
    let errors = decode_errors(seg);
    assert!(
        errors.is_empty(),
        "{}: ffmpeg -v error printed: {errors}",
        seg.display()
    );

    let tags = flv_tags(seg);
    // FLV header, then onMetaData and both sequence headers at 0, then a keyframe at 0.
    assert_eq!(tags[0].kind, 18);
    assert!(tags[1].kind == 9 && tags[1].body[1] == 0 && tags[1].ts_ms == 0);
    assert!(tags[2].kind == 8 && tags[2].body[1] == 0 && tags[2].ts_ms == 0);
    let first_video = tags.iter().find(|t| t.kind == 9 && t.is_media()).unwrap();
    assert!(first_video.is_video_keyframe(), "{}", seg.display());
    assert_eq!(first_video.ts_ms, 0, "{}", seg.display());
    let first_audio = tags.iter().find(|t| t.kind == 8 && t.is_media()).unwrap();
    assert!(
        first_audio.ts_ms <= 25,
        "{}: audio starts at {} ms",
        seg.display(),
        first_audio.ts_ms
    );
    for kind in [8u8, 9] {
        let ts: Vec<u32> = tags
            .iter()
            .filter(|t| t.kind == kind && t.is_media())
            .map(|t| t.ts_ms)
            .collect();
        assert!(ts.windows(2).all(|w| w[0] < w[1]), "{}", seg.display());
    }
}

/// Video frames ffmpeg decodes from `path`.
fn decoded_video_frames(path: &Path) -> u64 {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-count_frames"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .expect("run ffprobe");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}

fn media_tags(path: &Path, kind: u8) -> Vec<FlvTag> {
    flv_tags(path)
        .into_iter()
        .filter(|t| t.kind == kind && t.is_media())
        .collect()
}

#[test]
fn real_packets_make_playable_segments_without_losing_a_frame() {
    let dir = tempfile::tempdir().unwrap();
    let input = encode_input(dir.path(), 6);
    let pkts: Vec<MediaPacket> = flv_tags(&input).iter().filter_map(packet).collect();
    let out = dir.path().join("recordings");
    let (stats, segs) = record_and_check(&pkts, &out);

    // Keyframes every second from 21 ms (ffmpeg shifts video by the AAC priming), 2 s
    // segments: cuts at 2.021 s and 4.021 s.
    assert_eq!(segs.len(), 3, "{segs:?}");
    assert_eq!(stats.segments_written, 3);
    assert_eq!(
        (stats.errors, stats.packets_dropped, stats.packets_lost),
        (0, 0, 0)
    );

    let input_video = media_tags(&input, 9);
    let output_video: Vec<FlvTag> = segs.iter().flat_map(|s| media_tags(s, 9)).collect();
    assert_eq!(output_video.len(), input_video.len(), "no video frame lost");
    assert!(input_video
        .iter()
        .zip(&output_video)
        .all(|(a, b)| a.body == b.body));
    let decoded: u64 = segs.iter().map(|s| decoded_video_frames(s)).sum();
    assert_eq!(decoded, decoded_video_frames(&input));

    // Only audio from before the first keyframe is not recorded (one AAC frame here).
    let input_audio = media_tags(&input, 8).len() as u64;
    let output_audio: u64 = segs.iter().map(|s| media_tags(s, 8).len() as u64).sum();
    assert_eq!(output_audio + stats.packets_skipped, input_audio);
    assert!(stats.packets_skipped <= 2, "{stats:?}");

    for seg in &segs {
        let duration: f64 = ffprobe_json(seg)["format"]["duration"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (1.9..=2.1).contains(&duration),
            "{}: {duration} s",
            seg.display()
        );
    }
}

#[test]
fn audio_pushed_out_of_step_with_video_still_lands_exactly() {
    // The encode threads push independently: here audio arrives 120 ms after the video of the
    // same time, as when the AAC encoder lags. Segments must come out as from ordered input.
    let dir = tempfile::tempdir().unwrap();
    let input = encode_input(dir.path(), 6);
    let mut keyed: Vec<(u64, MediaPacket)> = flv_tags(&input)
        .iter()
        .filter_map(packet)
        .enumerate()
        .map(|(i, p)| {
            let at = match p.kind {
                _ if p.kind.is_header() => i as u64, // headers first, as pushed at open
                PacketKind::Audio => 1000 + p.dts_ms + 120,
                _ => 1000 + p.dts_ms,
            };
            (at, p)
        })
        .collect();
    keyed.sort_by_key(|(at, _)| *at);
    let pkts: Vec<MediaPacket> = keyed.into_iter().map(|(_, p)| p).collect();
    let (stats, segs) = record_and_check(&pkts, &dir.path().join("recordings"));
    assert_eq!(segs.len(), 3);
    let output_video: usize = segs.iter().map(|s| media_tags(s, 9).len()).sum();
    assert_eq!(output_video, media_tags(&input, 9).len());
    let output_audio: u64 = segs.iter().map(|s| media_tags(s, 8).len() as u64).sum();
    assert_eq!(
        output_audio + stats.packets_skipped,
        media_tags(&input, 8).len() as u64
    );
    assert!(stats.packets_skipped <= 2, "{stats:?}");
}
