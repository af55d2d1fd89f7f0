//! Capture → encode against the real FFmpeg libraries: lavfi test sources paced in real time,
//! a looped media file made with the ffmpeg CLI, and the encoders driven directly with
//! synthetic frames where real time is not needed.
//!
//! The real-time tests run for about two seconds each; everything else is faster than real time.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ffmpeg::format::Pixel;
use ffmpeg_next as ffmpeg;
use polypush::capture::{Captured, SourceSpec, Track};
use polypush::encode::{
    spawn_pipeline, AudioEncoder, AudioSettings, PipelineConfig, VideoEncoder, VideoSettings,
};
use polypush::media::{EncodedPacket, EncodedPacketBuf, StreamParams};

/// NAL unit types of an Annex B buffer (3- and 4-byte start codes).
fn nal_types(data: &[u8]) -> Vec<u8> {
    let mut types = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            if let Some(&header) = data.get(i + 3) {
                types.push(header & 0x1f);
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    types
}

fn small_video(fps: u32, keyframe_interval_s: f64) -> VideoSettings {
    VideoSettings {
        width: 320,
        height: 240,
        fps,
        bitrate_kbps: 500,
        keyframe_interval_s,
        threads: 1,
        ..VideoSettings::default()
    }
}

type Collected = Arc<Mutex<Vec<(Track, EncodedPacketBuf)>>>;

fn collector() -> (
    Collected,
    impl FnMut(Track, &EncodedPacket<'_>) + Send + Clone + 'static,
) {
    let packets: Collected = Arc::default();
    let sink_packets = packets.clone();
    (packets, move |track, packet: &EncodedPacket<'_>| {
        sink_packets.lock().unwrap().push((track, packet.into()))
    })
}

/// Waits (bounded) until `n` packets of `track` came out of the encoder.
fn wait_packets(packets: &Collected, track: Track, n: usize) {
    let count = || {
        packets
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| *t == track)
            .count()
    };
    assert!(
        common::poll_until(Duration::from_secs(20), || count() >= n),
        "only {} {track:?} packets",
        count()
    );
}

fn split(packets: &Collected) -> (Vec<EncodedPacketBuf>, Vec<EncodedPacketBuf>) {
    let all = packets.lock().unwrap();
    let video = all
        .iter()
        .filter(|(t, _)| *t == Track::Video)
        .map(|(_, p)| p.clone())
        .collect();
    let audio = all
        .iter()
        .filter(|(t, _)| *t == Track::Audio)
        .map(|(_, p)| p.clone())
        .collect();
    (video, audio)
}

fn assert_strictly_increasing(name: &str, packets: &[EncodedPacketBuf]) {
    for w in packets.windows(2) {
        assert!(
            w[1].dts_ms > w[0].dts_ms,
            "{name}: dts {} then {}",
            w[0].dts_ms,
            w[1].dts_ms
        );
    }
}

/// Audio packets are 1024 samples apart: 21 or 22 ms, and 21.333 ms on average.
fn assert_aac_spacing(audio: &[EncodedPacketBuf], rate: f64) {
    for w in audio.windows(2) {
        let d = w[1].dts_ms - w[0].dts_ms;
        assert!((21..=22).contains(&d), "audio packets {d} ms apart");
    }
    let span = (audio.last().unwrap().dts_ms - audio[0].dts_ms) as f64;
    let expected = (audio.len() - 1) as f64 * 1024.0 * 1000.0 / rate;
    assert!(
        (span - expected).abs() <= 1.0,
        "audio span {span} ms, expected {expected}"
    );
}

#[test]
fn test_pattern_pipeline_has_regular_keyframes_and_synchronized_tracks() {
    let gop = 10; // 0.4 s at 25 fps: several GOPs in two seconds
    let config = PipelineConfig {
        video_source: Some(SourceSpec::TestPatternVideo {
            width: 320,
            height: 240,
            fps: 25,
            sync: false,
        }),
        audio_source: Some(SourceSpec::TestPatternAudio {
            sample_rate: 48_000,
            channels: 2,
            frequency_hz: 440,
            sync: false,
            clock_ppm: 0,
        }),
        video_encoder: small_video(25, 0.4),
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let (packets, sink) = collector();
    let ready: Arc<Mutex<Vec<StreamParams>>> = Arc::default();
    let ready_in = ready.clone();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_pipeline(
        config,
        stop,
        move |params| {
            // No packet may arrive before the parameters.
            ready_in.lock().unwrap().push(params.clone());
        },
        {
            let ready = ready.clone();
            let mut sink = sink;
            move |track, packet| {
                assert_eq!(ready.lock().unwrap().len(), 1, "packet before on_ready");
                sink(track, packet)
            }
        },
    )
    .expect("pipeline starts");
    // Two seconds of media (the source is paced in real time).
    wait_packets(&packets, Track::Video, 50);
    let stats = handle.stop_and_join().expect("pipeline ends cleanly");

    let params = ready.lock().unwrap()[0].clone();
    let video_params = params.video.expect("video params");
    let extradata = video_params.extradata.expect("libx264 has a global header");
    let types = nal_types(&extradata);
    assert!(
        types.contains(&7) && types.contains(&8),
        "SPS and PPS in extradata: {types:?}"
    );
    assert!(!video_params.parameter_sets_inline);
    assert_eq!(&params.audio.expect("audio params").asc[..], &[0x11, 0x90]);

    let (video, audio) = split(&packets);
    assert!(video.len() >= 40, "{} video packets in 2 s", video.len());
    assert!(audio.len() >= 80, "{} audio packets in 2 s", audio.len());

    // Keyframes exactly every GOP, not every frame.
    for (i, p) in video.iter().enumerate() {
        assert_eq!(
            p.keyframe,
            i % gop == 0,
            "video packet {i} keyframe={}",
            p.keyframe
        );
        assert_eq!(p.pts_ms, p.dts_ms);
    }
    assert!(
        nal_types(&video[0].data).contains(&5),
        "first packet is an IDR"
    );

    assert_strictly_increasing("video", &video);
    for w in video.windows(2) {
        let d = w[1].dts_ms - w[0].dts_ms;
        assert!((39..=41).contains(&d), "video frames {d} ms apart");
    }
    assert_strictly_increasing("audio", &audio);
    assert_aac_spacing(&audio, 48_000.0);

    let start_gap = (video[0].dts_ms - audio[0].dts_ms).abs();
    assert!(
        start_gap <= 100,
        "first video at {} ms, first audio at {} ms",
        video[0].dts_ms,
        audio[0].dts_ms
    );
    assert!(video[0].dts_ms >= 0 && audio[0].dts_ms >= 0);

    assert_eq!(stats.errors, 0);
    assert_eq!(stats.video.packets as usize, video.len());
    assert_eq!(stats.video.keyframes as usize, video.len().div_ceil(gop));
    assert_eq!(stats.audio.timeline_corrections, 0);
}

#[test]
fn looped_file_continues_with_monotonic_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("one-second.mp4");
    let status = std::process::Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=160x120:rate=25"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t",
            "1",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "25",
        ])
        .args(["-c:a", "aac", "-ac", "2"])
        .arg(&path)
        .status()
        .expect("the ffmpeg CLI is installed");
    assert!(status.success());

    let source = SourceSpec::File {
        path: path.clone(),
        looped: true,
    };
    let config = PipelineConfig {
        video_source: Some(source.clone()),
        audio_source: Some(source),
        video_encoder: VideoSettings {
            width: 160,
            height: 120,
            ..small_video(25, 1.0)
        },
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let (packets, sink) = collector();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = spawn_pipeline(config, stop.clone(), |_| {}, sink).expect("pipeline starts");
    // 2.3 s of media: the 1 s file looped twice.
    wait_packets(&packets, Track::Video, 58);
    // The caller's flag stops the pipeline as well.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let stats = handle.stop_and_join().expect("pipeline ends cleanly");

    let (video, audio) = split(&packets);
    assert_strictly_increasing("video", &video);
    assert_strictly_increasing("audio", &audio);
    let video_span = video.last().unwrap().dts_ms - video[0].dts_ms;
    assert!(
        video_span > 1500,
        "video ran {video_span} ms, past the 1 s file's end"
    );
    assert!(
        video.len() > 25 + 10,
        "{} video frames: the file looped",
        video.len()
    );
    // Across the loop point frames stay ~40 ms apart: no jump back, no long gap.
    for w in video.windows(2) {
        let d = w[1].dts_ms - w[0].dts_ms;
        assert!((1..=90).contains(&d), "video frames {d} ms apart");
    }
    let audio_span = audio.last().unwrap().dts_ms - audio[0].dts_ms;
    assert!(audio_span > 1500, "audio ran {audio_span} ms");
    assert!((video[0].dts_ms - audio[0].dts_ms).abs() <= 100);
    assert_eq!(stats.video.resyncs, 0);
    assert_eq!(stats.errors, 0);
}

/// A decoded camera picture: full-range 4:2:2 as MJPEG decodes to, moving, and marked as an
/// intra picture the way decoders mark every MJPEG frame.
fn camera_like_frame(i: usize, width: u32, height: u32) -> ffmpeg::frame::Video {
    let mut frame = ffmpeg::frame::Video::new(Pixel::YUVJ422P, width, height);
    for plane in 0..3 {
        let stride = frame.stride(plane);
        let data = frame.data_mut(plane);
        for (row, line) in data.chunks_mut(stride).enumerate() {
            for (col, px) in line.iter_mut().enumerate() {
                *px = ((col + row + i * 4) % 256) as u8;
            }
        }
    }
    frame.set_kind(ffmpeg::picture::Type::I);
    frame
}

#[test]
fn keyframes_follow_the_gop_despite_intra_input_and_on_request() {
    let settings = small_video(25, 0.4); // GOP of 10
    let mut encoder = VideoEncoder::open(&settings).unwrap();
    let mut out: Vec<EncodedPacketBuf> = Vec::new();
    for i in 0..40usize {
        if i == 25 {
            encoder.request_keyframe();
        }
        let mut frame = Captured {
            frame: camera_like_frame(i, 320, 240),
            pts_us: i as i64 * 40_000,
        };
        let before = out.len();
        encoder
            .encode(&mut frame, false, &mut |p| out.push(p.into()))
            .unwrap();
        // zerolatency: one packet per frame, immediately.
        assert_eq!(out.len(), before + 1, "frame {i} produced no packet yet");
    }
    encoder.flush(&mut |p| out.push(p.into())).unwrap();
    let keyframes: Vec<usize> = out
        .iter()
        .enumerate()
        .filter(|(_, p)| p.keyframe)
        .map(|(i, _)| i)
        .collect();
    // Regular GOPs; the requested IDR at 25 restarts the count (next at 35).
    assert_eq!(keyframes, vec![0, 10, 20, 25, 35]);
    for &i in &keyframes {
        assert!(nal_types(&out[i].data).contains(&5), "packet {i} is an IDR");
    }
    assert_eq!(out[25].dts_ms, 1000);
    assert_strictly_increasing("video", &out);
}

/// Deterministic noise: incompressible, so the encoder spends whatever it is allowed.
fn noise_frame(seed: &mut u64, width: u32, height: u32) -> ffmpeg::frame::Video {
    let mut frame = ffmpeg::frame::Video::new(Pixel::YUV420P, width, height);
    for plane in 0..3 {
        for b in frame.data_mut(plane).iter_mut() {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *b = *seed as u8;
        }
    }
    frame
}

#[test]
fn set_bitrate_changes_the_produced_rate() {
    let settings = VideoSettings {
        bitrate_kbps: 2000,
        preset: "ultrafast".into(),
        ..small_video(25, 2.0)
    };
    let mut encoder = VideoEncoder::open(&settings).unwrap();
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let mut sizes = Vec::new();
    for i in 0..250usize {
        if i == 125 {
            encoder.set_bitrate(500).unwrap();
        }
        let mut frame = Captured {
            frame: noise_frame(&mut seed, 320, 240),
            pts_us: i as i64 * 40_000,
        };
        encoder
            .encode(&mut frame, false, &mut |p| sizes.push(p.data.len()))
            .unwrap();
    }
    // Steady state of each half (the VBV buffer takes a moment to adapt).
    let high: usize = sizes[50..125].iter().sum();
    let low: usize = sizes[175..250].iter().sum();
    let high_kbps = high as f64 * 8.0 / 3.0 / 1000.0;
    let low_kbps = low as f64 * 8.0 / 3.0 / 1000.0;
    assert!(
        low_kbps < high_kbps * 0.5,
        "2000 kbit/s gave {high_kbps:.0}, 500 gave {low_kbps:.0}"
    );
    assert!(
        low_kbps < 750.0,
        "500 kbit/s target produced {low_kbps:.0} kbit/s"
    );
}

/// 10 ms of a 440 Hz tone, s16 interleaved, like an ALSA period.
fn tone_frame(index: usize, rate: u32, samples: usize) -> ffmpeg::frame::Audio {
    let layout = ffmpeg::ChannelLayout::STEREO;
    let mut frame = ffmpeg::frame::Audio::new(
        ffmpeg::format::Sample::I16(ffmpeg::format::sample::Type::Packed),
        samples,
        layout,
    );
    frame.set_rate(rate);
    let data = frame.plane_mut::<(i16, i16)>(0);
    for (n, s) in data.iter_mut().enumerate() {
        let t = (index * samples + n) as f64 / f64::from(rate);
        let v = ((t * 440.0 * std::f64::consts::TAU).sin() * 8000.0) as i16;
        *s = (v, v);
    }
    frame
}

#[test]
fn audio_starts_at_the_first_sample_and_fills_gaps_with_silence() {
    let mut encoder = AudioEncoder::open(&AudioSettings::default()).unwrap();
    let mut out: Vec<EncodedPacketBuf> = Vec::new();
    let start_us = 1_000_000;
    // 1 s of 10 ms periods, then 100 ms lost (an overrun), then 1 s more.
    for k in (0..100).chain(110..210) {
        let frame = Captured {
            frame: tone_frame(k, 48_000, 480),
            pts_us: start_us + k as i64 * 10_000,
        };
        encoder.encode(&frame, &mut |p| out.push(p.into())).unwrap();
    }
    encoder.flush(&mut |p| out.push(p.into())).unwrap();
    // Priming is absorbed: the first packet carries the first sample's time.
    assert_eq!(out[0].dts_ms, 1000);
    assert_strictly_increasing("audio", &out);
    assert_aac_spacing(&out[..out.len() - 1], 48_000.0);
    assert_eq!(encoder.corrections(), 1, "the gap was filled once");
    // 2.1 s of timeline in 1024-sample packets (plus the short last one).
    let expected = (2.1 * 48_000.0 / 1024.0) as usize;
    assert!(
        (expected..=expected + 3).contains(&out.len()),
        "{} packets",
        out.len()
    );
}

#[test]
fn a_missing_encoder_names_what_is_available() {
    let settings = VideoSettings {
        encoder: "h264_nosuch".into(),
        ..small_video(25, 2.0)
    };
    let msg = VideoEncoder::open(&settings)
        .err()
        .expect("no such encoder")
        .to_string();
    assert!(
        msg.contains("h264_nosuch") && msg.contains("libx264"),
        "{msg}"
    );
}

#[test]
fn a_missing_camera_is_a_clear_error() {
    let config = PipelineConfig {
        video_source: Some(SourceSpec::V4l2 {
            device: "/dev/video99".into(),
            input_format: Some("mjpeg".into()),
            width: 640,
            height: 480,
            fps: 30,
        }),
        audio_source: None,
        video_encoder: small_video(30, 2.0),
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let (packets, sink) = collector();
    let msg = spawn_pipeline(
        config,
        Arc::new(AtomicBool::new(false)),
        |_| panic!("not ready"),
        sink,
    )
    .err()
    .expect("no such camera")
    .to_string();
    assert!(msg.contains("/dev/video99 does not exist"), "{msg}");
    assert!(msg.contains("set [video] device"), "{msg}");
    assert!(packets.lock().unwrap().is_empty());
}

#[test]
fn a_missing_microphone_is_a_clear_error() {
    let config = PipelineConfig {
        video_source: None,
        audio_source: Some(SourceSpec::Alsa {
            device: "hw:97,0".into(),
            sample_rate: 48_000,
            channels: 2,
        }),
        video_encoder: VideoSettings::default(),
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let (_, sink) = collector();
    let msg = spawn_pipeline(config, Arc::new(AtomicBool::new(false)), |_| {}, sink)
        .err()
        .expect("no such microphone")
        .to_string();
    assert!(
        msg.contains("hw:97,0") && msg.contains("[audio] device"),
        "{msg}"
    );
}
