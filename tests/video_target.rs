//! Applying the adaptation controller's target to a running video encoder, against the real
//! FFmpeg libraries with the lavfi test pattern paced in real time: a bitrate change on an
//! encoder that must be reopened for it (libx264 forced onto the path `h264_v4l2m2m` takes),
//! the reopen rate limit, and the frame-rate and size divisors.
//!
//! Each test runs for about five seconds in real time. What happens when is driven by the
//! pipeline's own counters (frames encoded, reopens done), not by the wall clock; the reopen
//! rate limit itself is pinned with an injected `now` in `encode::target`'s unit tests.

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ffmpeg_next as ffmpeg;
use polypush::capture::{SourceSpec, Track};
use polypush::encode::{
    spawn_pipeline, AudioSettings, PipelineConfig, PipelineHandle, PipelineStats, Target,
    VideoSettings,
};
use polypush::media::{EncodedPacket, EncodedPacketBuf, StreamParams, VideoParams};

const FPS: u32 = 25;
const FRAME_MS: i64 = 1000 / FPS as i64;

type Collected = Arc<Mutex<Vec<EncodedPacketBuf>>>;

fn start(
    width: u32,
    height: u32,
    video_encoder: VideoSettings,
) -> (PipelineHandle, Collected, StreamParams) {
    let config = PipelineConfig {
        video_source: Some(SourceSpec::TestPatternVideo {
            width,
            height,
            fps: FPS,
            sync: false,
        }),
        audio_source: None,
        video_encoder,
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let packets: Collected = Arc::default();
    let sink = {
        let packets = packets.clone();
        move |track, packet: &EncodedPacket<'_>| {
            if track == Track::Video {
                packets.lock().unwrap().push(packet.into())
            }
        }
    };
    let params: Arc<Mutex<Option<StreamParams>>> = Arc::default();
    let handle = {
        let params = params.clone();
        spawn_pipeline(
            config,
            Arc::new(AtomicBool::new(false)),
            move |p| *params.lock().unwrap() = Some(p.clone()),
            sink,
        )
        .expect("pipeline starts")
    };
    let params = params.lock().unwrap().take().expect("on_ready ran");
    (handle, packets, params)
}

/// Waits (bounded) until the pipeline's counters satisfy `cond`.
fn wait_for(handle: &PipelineHandle, what: &str, cond: impl Fn(&PipelineStats) -> bool) {
    assert!(
        common::poll_until(Duration::from_secs(20), || cond(&handle.stats())),
        "{what}: {:?}",
        handle.stats()
    );
}

/// Waits until `frames` more video frames were encoded (`frames` / 25 s of media).
fn wait_frames(handle: &PipelineHandle, frames: u64) {
    let from = handle.stats().video.frames_encoded;
    wait_for(handle, "frames", |s| {
        s.video.frames_encoded >= from + frames
    });
}

/// Encoded kbit/s over packets with `from_ms <= dts < to_ms`.
fn kbps(packets: &[EncodedPacketBuf], from_ms: i64, to_ms: i64) -> f64 {
    let bytes: usize = packets
        .iter()
        .filter(|p| (from_ms..to_ms).contains(&p.dts_ms))
        .map(|p| p.data.len())
        .sum();
    bytes as f64 * 8.0 / (to_ms - from_ms) as f64
}

/// Frames per second over packets with `from_ms <= dts < to_ms`.
fn fps(packets: &[EncodedPacketBuf], from_ms: i64, to_ms: i64) -> f64 {
    let n = packets
        .iter()
        .filter(|p| (from_ms..to_ms).contains(&p.dts_ms))
        .count();
    n as f64 * 1000.0 / (to_ms - from_ms) as f64
}

/// Indices of the packets that start a reopened encoder, with what it runs at.
fn reopens(packets: &[EncodedPacketBuf]) -> Vec<(usize, Arc<VideoParams>)> {
    packets
        .iter()
        .enumerate()
        .filter_map(|(i, p)| p.reopened.clone().map(|r| (i, r)))
        .collect()
}

/// The largest step between consecutive DTS, asserting they strictly increase.
fn max_step(packets: &[EncodedPacketBuf]) -> i64 {
    packets
        .windows(2)
        .map(|w| {
            assert!(
                w[1].dts_ms > w[0].dts_ms,
                "dts {} then {}",
                w[0].dts_ms,
                w[1].dts_ms
            );
            w[1].dts_ms - w[0].dts_ms
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn a_reopened_encoder_changes_its_rate_without_a_gap_and_a_second_change_waits() {
    // libx264 on the reopen path: what h264_v4l2m2m does for every bitrate change.
    let settings = VideoSettings {
        width: 640,
        height: 360,
        fps: FPS,
        bitrate_kbps: 1200,
        preset: "ultrafast".into(),
        keyframe_interval_s: 1.0,
        threads: 2,
        reopen_on_rate_change: true,
        min_reopen_interval: Duration::from_millis(1500),
        ..VideoSettings::default()
    };
    let (handle, packets, params) = start(640, 360, settings);
    let control = handle.control();
    // Two seconds of media: past the interval since the first open, so applied at once.
    wait_frames(&handle, 50);
    control.set_video_bitrate(400);
    // Applied at once: the encoder runs at it (its reopen count and its target are two
    // counters; wait for the target).
    assert!(
        common::poll_until(Duration::from_secs(20), || {
            control.video_target().video_kbps == 400
        }),
        "the first change is applied at once: {:?}",
        control.video_target()
    );
    // Right after it, within the interval: deferred; the latest of the two wins.
    control.set_video_bitrate(600);
    control.set_video_bitrate(250);
    let waiting = control.video_target().video_kbps;
    wait_for(&handle, "the second reopen", |s| {
        s.video.encoder_reopens == 2
    });
    wait_frames(&handle, 60);
    let applied = control.video_target();
    let stats = handle.stop_and_join().expect("pipeline ends cleanly");
    let packets = packets.lock().unwrap().clone();

    assert_eq!(waiting, 400, "the second change waits for the interval");
    assert_eq!(applied, Target::kbps(250));
    assert_eq!(stats.video.encoder_reopens, 2);
    let reopened = reopens(&packets);
    let rates: Vec<u32> = reopened.iter().map(|(_, p)| p.bitrate_kbps).collect();
    assert_eq!(
        rates,
        [400, 250],
        "600 was superseded before it was applied"
    );
    for (i, p) in &reopened {
        assert!(packets[*i].keyframe, "packet {i} after a reopen is an IDR");
        assert_eq!((p.width, p.height), (640, 360));
        // Same size and profile: the same SPS/PPS, no new sequence header needed.
        assert_eq!(p.extradata, params.video.as_ref().unwrap().extradata);
    }
    let step = max_step(&packets);
    assert!(step <= 2 * FRAME_MS, "a {step} ms gap in the video");
    let (r1, r2) = (packets[reopened[0].0].dts_ms, packets[reopened[1].0].dts_ms);
    let gaps: Vec<i64> = reopened
        .iter()
        .map(|(i, _)| packets[*i].dts_ms - packets[*i - 1].dts_ms)
        .collect();
    assert!(
        r2 - r1 >= 1400,
        "reopens {r1} and {r2} ms: closer than the interval"
    );

    let first = packets[0].dts_ms;
    let before = kbps(&packets, first + 500, r1);
    let middle = kbps(&packets, r1 + 300, r2);
    let after = kbps(&packets, r2 + 300, packets.last().unwrap().dts_ms);
    eprintln!(
        "kbit/s: {before:.0} at 1200, {middle:.0} at 400, {after:.0} at 250; \
         reopens at {r1} and {r2} ms, dts steps there {gaps:?} ms, largest step {step} ms"
    );
    // Within 30 % of the target (the windows are short and hold an IDR or two).
    let near = |got: f64, target: f64| (got - target).abs() <= 0.3 * target;
    assert!(near(before, 1200.0), "1200 kbit/s gave {before:.0}");
    assert!(near(middle, 400.0), "400 kbit/s gave {middle:.0}");
    assert!(near(after, 250.0), "250 kbit/s gave {after:.0}");
}

/// Decodes the packets with FFmpeg's H.264 decoder and returns each picture's size. libx264's
/// SPS/PPS are in the global header, so they are put in front of every IDR, from the latest
/// parameters announced.
fn decoded_sizes(packets: &[EncodedPacketBuf], extradata: &[u8]) -> Vec<(u32, u32)> {
    let codec = ffmpeg::decoder::find(ffmpeg::codec::Id::H264).expect("h264 decoder");
    let mut decoder = ffmpeg::codec::context::Context::new_with_codec(codec)
        .decoder()
        .video()
        .expect("decoder opens");
    let mut headers = extradata.to_vec();
    let mut sizes = Vec::new();
    let mut frame = ffmpeg::frame::Video::empty();
    for p in packets {
        if let Some(e) = p.reopened.as_ref().and_then(|r| r.extradata.as_ref()) {
            headers = e.to_vec();
        }
        let mut data = Vec::new();
        if p.keyframe {
            data.extend_from_slice(&headers);
        }
        data.extend_from_slice(&p.data);
        decoder
            .send_packet(&ffmpeg::Packet::copy(&data))
            .expect("decodes");
        while decoder.receive_frame(&mut frame).is_ok() {
            sizes.push((frame.width(), frame.height()));
        }
    }
    decoder.send_eof().unwrap();
    while decoder.receive_frame(&mut frame).is_ok() {
        sizes.push((frame.width(), frame.height()));
    }
    sizes
}

#[test]
fn halving_the_size_and_the_frame_rate_reopens_at_a_new_size_and_drops_every_other_frame() {
    let settings = VideoSettings {
        width: 320,
        height: 240,
        fps: FPS,
        bitrate_kbps: 400,
        preset: "ultrafast".into(),
        keyframe_interval_s: 1.0,
        threads: 1,
        min_reopen_interval: Duration::from_millis(1000),
        ..VideoSettings::default()
    };
    let (handle, packets, params) = start(320, 240, settings);
    let control = handle.control();
    wait_frames(&handle, 30);
    control.set_video_target(Target {
        video_kbps: 300,
        fps_divisor: 1,
        scale_divisor: 2,
    });
    wait_for(&handle, "the first reopen", |s| {
        s.video.encoder_reopens == 1
    });
    wait_frames(&handle, 37);
    control.set_video_target(Target {
        video_kbps: 300,
        fps_divisor: 2,
        scale_divisor: 2,
    });
    wait_for(&handle, "the second reopen", |s| {
        s.video.encoder_reopens == 2
    });
    wait_frames(&handle, 30);
    let stats = handle.stop_and_join().expect("pipeline ends cleanly");
    let packets = packets.lock().unwrap().clone();

    let reopened = reopens(&packets);
    assert_eq!(reopened.len(), 2, "{reopened:?}");
    assert_eq!(stats.video.encoder_reopens, 2);
    let opened = params.video.unwrap();
    let (i1, p1) = &reopened[0];
    let (i2, p2) = &reopened[1];
    assert!(packets[*i1].keyframe && packets[*i2].keyframe);
    assert_eq!((p1.width, p1.height), (160, 120));
    assert_eq!((p2.width, p2.height, p2.fps), (160, 120, 13));
    // A new size is new parameter sets: the packetizer sends a sequence header.
    assert_ne!(p1.extradata, opened.extradata);

    // What a player decodes: the configured size up to the first reopen, half after it.
    let sizes = decoded_sizes(&packets, opened.extradata.as_ref().unwrap());
    assert_eq!(sizes.len(), packets.len(), "every packet decodes");
    assert!(sizes[..*i1].iter().all(|&s| s == (320, 240)));
    assert!(sizes[*i1..].iter().all(|&s| s == (160, 120)));

    // The frame rate: 25 until the second reopen, 12.5 after; timestamps stay real.
    let (r1, r2) = (packets[*i1].dts_ms, packets[*i2].dts_ms);
    let end = packets.last().unwrap().dts_ms;
    let full = fps(&packets, packets[0].dts_ms, r2);
    let half = fps(&packets, r2, end);
    assert!((23.5..26.5).contains(&full), "{full:.1} fps before");
    assert!((11.5..13.5).contains(&half), "{half:.1} fps after");
    assert!(stats.video.frames_decimated >= 25, "{stats:?}");
    assert!(max_step(&packets[..*i2]) <= 2 * FRAME_MS);
    assert!(max_step(&packets[*i2..]) <= 4 * FRAME_MS);
    // Keyframes stay a second apart at the lower frame rate (13 frames, 1.04 s).
    let keys: Vec<i64> = packets[*i2..]
        .iter()
        .filter(|p| p.keyframe)
        .map(|p| p.dts_ms)
        .collect();
    assert!(keys.len() >= 2, "{keys:?}");
    assert!(
        keys.windows(2)
            .all(|w| (960..=1120).contains(&(w[1] - w[0]))),
        "{keys:?}"
    );
    let rate = kbps(&packets, r2 + 300, end);
    assert!((210.0..=390.0).contains(&rate), "300 kbit/s gave {rate:.0}");
    eprintln!(
        "reopens at {r1} and {r2} ms; {full:.1} then {half:.1} fps; {rate:.0} kbit/s at 300 \
         after both; {} frames left out",
        stats.video.frames_decimated
    );
}
