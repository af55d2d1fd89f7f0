//! Device loss ("a USB camera is pulled") against the real FFmpeg libraries, without hardware.
//!
//! A lavfi test source is wrapped in the fault seam (`SourceSpec::Faulty`): it behaves like a
//! live device whose next read fails with `EIO` one second into the broadcast and whose reopen
//! attempts fail with `ENODEV` for two seconds. Everything after the faked read and open is
//! the code that handles a real camera: the loss, the backoff, the reopen, the still picture
//! or the silence the encoder fills in, and the hand-over back to real frames.
//!
//! Each broadcast runs for about six seconds in real time (one second, the outage rounded up
//! to the reopen schedule, then a second and a half of recovered media).

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polypush::capture::{reopen_delay, SourceSpec, Track, TrackState};
use polypush::encode::{
    spawn_pipeline, AudioSettings, PipelineConfig, PipelineStats, VideoSettings,
};
use polypush::media::{EncodedPacket, EncodedPacketBuf};

const FPS: u32 = 25;
const GOP: usize = 25; // keyframe_interval_s = 1
const FAIL_AFTER: Duration = Duration::from_secs(1);
const DOWN_FOR: Duration = Duration::from_secs(2);
/// Media after the device is back.
const AFTER: Duration = Duration::from_millis(1500);

fn video_pattern() -> SourceSpec {
    SourceSpec::TestPatternVideo {
        width: 320,
        height: 240,
        fps: FPS,
        sync: false,
    }
}

fn audio_tone() -> SourceSpec {
    SourceSpec::TestPatternAudio {
        sample_rate: 48_000,
        channels: 2,
        frequency_hz: 440,
        sync: false,
        clock_ppm: 0,
    }
}

fn unplugged(inner: SourceSpec) -> SourceSpec {
    SourceSpec::Faulty {
        inner: Box::new(inner),
        fail_after: FAIL_AFTER,
        down_for: DOWN_FOR,
    }
}

/// When the reopen schedule first tries after the device is back, counted from the loss, and
/// how many attempts that takes.
fn expected_outage() -> (Duration, u64) {
    let mut waited = Duration::ZERO;
    let mut attempts = 0;
    loop {
        waited += reopen_delay(attempts);
        attempts += 1;
        if waited >= DOWN_FOR {
            return (waited, u64::from(attempts));
        }
    }
}

struct Broadcast {
    video: Vec<EncodedPacketBuf>,
    audio: Vec<EncodedPacketBuf>,
    stats: PipelineStats,
    /// Stats sampled every 50 ms while running.
    samples: Vec<PipelineStats>,
}

fn broadcast(video_source: SourceSpec, audio_source: SourceSpec, run_for: Duration) -> Broadcast {
    let config = PipelineConfig {
        video_source: Some(video_source),
        audio_source: Some(audio_source),
        video_encoder: VideoSettings {
            width: 320,
            height: 240,
            fps: FPS,
            bitrate_kbps: 500,
            keyframe_interval_s: 1.0,
            preset: "ultrafast".into(),
            threads: 1,
            ..VideoSettings::default()
        },
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let packets: Arc<Mutex<Vec<(Track, EncodedPacketBuf)>>> = Arc::default();
    let sink = {
        let packets = packets.clone();
        move |track, packet: &EncodedPacket<'_>| {
            packets.lock().unwrap().push((track, packet.into()))
        }
    };
    let handle = spawn_pipeline(config, Arc::new(AtomicBool::new(false)), |_| {}, sink)
        .expect("pipeline starts");
    let started = Instant::now();
    let mut samples = Vec::new();
    while started.elapsed() < run_for {
        assert!(
            !handle.is_finished(),
            "a lost device must not end the pipeline"
        );
        samples.push(handle.stats());
        std::thread::sleep(Duration::from_millis(50));
    }
    let stats = handle.stop_and_join().expect("pipeline ends cleanly");
    let all = packets.lock().unwrap();
    let of = |track| {
        all.iter()
            .filter(|(t, _)| *t == track)
            .map(|(_, p)| p.clone())
            .collect::<Vec<_>>()
    };
    Broadcast {
        video: of(Track::Video),
        audio: of(Track::Audio),
        stats,
        samples,
    }
}

fn run_time() -> Duration {
    FAIL_AFTER + expected_outage().0 + AFTER
}

/// Every video frame 40 ms after the previous one, keyframes every GOP.
fn assert_regular_video(video: &[EncodedPacketBuf]) {
    for w in video.windows(2) {
        let d = w[1].dts_ms - w[0].dts_ms;
        assert!(
            (39..=41).contains(&d),
            "video frames {d} ms apart at {} ms",
            w[0].dts_ms
        );
    }
    for (i, p) in video.iter().enumerate() {
        assert_eq!(p.keyframe, i % GOP == 0, "video packet {i} keyframe");
    }
}

/// Audio packets 1024 samples apart over the whole run (the flush's short last frame aside).
fn assert_continuous_audio(audio: &[EncodedPacketBuf]) {
    let audio = &audio[..audio.len() - 1];
    for w in audio.windows(2) {
        let d = w[1].dts_ms - w[0].dts_ms;
        assert!(
            (21..=22).contains(&d),
            "audio packets {d} ms apart at {} ms",
            w[0].dts_ms
        );
    }
    let span = (audio.last().unwrap().dts_ms - audio[0].dts_ms) as f64;
    let expected = (audio.len() - 1) as f64 * 1024.0 * 1000.0 / 48_000.0;
    assert!(
        (span - expected).abs() <= 1.0,
        "audio span {span} ms, {expected} ms of samples"
    );
}

/// The longest run of consecutive packets with `small` true: (start index, length).
fn longest_run(
    packets: &[EncodedPacketBuf],
    small: impl Fn(&EncodedPacketBuf) -> bool,
) -> (usize, usize) {
    let (mut best, mut start) = ((0, 0), None);
    for (i, p) in packets.iter().enumerate() {
        match (small(p), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                if i - s > best.1 {
                    best = (s, i - s);
                }
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        if packets.len() - s > best.1 {
            best = (s, packets.len() - s);
        }
    }
    best
}

#[test]
fn a_lost_camera_is_filled_with_a_still_and_comes_back() {
    let (outage, attempts) = expected_outage();
    let run = broadcast(unplugged(video_pattern()), audio_tone(), run_time());
    let (v, a) = (run.stats.video, run.stats.audio);
    eprintln!("video {v:?}\naudio {a:?}");

    // The camera went once, was tried on the schedule, and is back.
    assert_eq!(v.device_losses, 1);
    assert_eq!(v.reopen_attempts, attempts);
    assert_eq!(v.state, TrackState::Live);
    let expected_fill = outage.as_secs_f64() * f64::from(FPS);
    assert!(
        (v.frames_filled as f64 - expected_fill).abs() <= 6.0,
        "{} stills for a {outage:?} outage",
        v.frames_filled
    );
    // The supervisor could see it.
    let during = run
        .samples
        .iter()
        .find(|s| s.video.state.is_reconnecting())
        .expect("the video track was seen reconnecting");
    assert_eq!(during.audio.state, TrackState::Live);
    assert!(
        v.frames_captured >= during.video.frames_captured + 25,
        "frames captured again after the camera came back: {} then {}",
        during.video.frames_captured,
        v.frames_captured
    );

    // No gap, no phase jump, the GOP untouched, across the loss and the return.
    assert_regular_video(&run.video);
    assert_eq!(v.packets as usize, run.video.len());
    assert_eq!(
        v.frames_encoded,
        v.frames_captured - v.frames_dropped + v.frames_filled
    );

    // The stills sit between real moving frames, and repeated pictures cost a few bytes each.
    // The fault strikes at the first read at 1 s on the pipeline clock (frames are paced), so
    // the last real frame is the first one stamped at 1 s or later.
    let last_real = run.video.iter().position(|p| p.dts_ms >= 1000).unwrap();
    let first_back = last_real + 1 + v.frames_filled as usize;
    let median_p = |packets: &[EncodedPacketBuf]| {
        let mut sizes: Vec<usize> = packets
            .iter()
            .filter(|p| !p.keyframe)
            .map(|p| p.data.len())
            .collect();
        sizes.sort_unstable();
        sizes[sizes.len() / 2]
    };
    let (before, stills, after) = (
        median_p(&run.video[..=last_real]),
        median_p(&run.video[last_real + 1..first_back]),
        median_p(&run.video[first_back..]),
    );
    eprintln!("median P-frame bytes: {before} before, {stills} stills, {after} after");
    assert!(
        stills * 10 < before,
        "stills {stills} B, moving pattern {before} B"
    );
    assert!(
        stills * 10 < after,
        "stills {stills} B, pattern after {after} B"
    );
    // The first frame after the stills is the moving pattern again (a big change).
    assert!(run.video[first_back].data.len() > 5 * stills);

    // Audio did not notice.
    assert_continuous_audio(&run.audio);
    assert_eq!(a.device_losses, 0);
    assert_eq!(a.frames_filled, 0);
    assert_eq!(a.timeline_corrections, 0);
    assert_eq!(run.stats.errors, 0);
}

#[test]
fn a_lost_microphone_is_filled_with_silence_and_comes_back() {
    let (outage, attempts) = expected_outage();
    let run = broadcast(video_pattern(), unplugged(audio_tone()), run_time());
    let (v, a) = (run.stats.video, run.stats.audio);
    eprintln!("video {v:?}\naudio {a:?}");

    assert_eq!(a.device_losses, 1);
    assert_eq!(a.reopen_attempts, attempts);
    assert_eq!(a.state, TrackState::Live);
    let expected_fill = outage.as_secs_f64() * 48_000.0 / 1024.0;
    assert!(
        (a.frames_filled as f64 - expected_fill).abs() <= 8.0,
        "{} silent frames for a {outage:?} outage",
        a.frames_filled
    );
    let during = run
        .samples
        .iter()
        .find(|s| s.audio.state.is_reconnecting())
        .expect("the audio track was seen reconnecting");
    assert_eq!(during.video.state, TrackState::Live);
    assert!(a.frames_captured >= during.audio.frames_captured + 40);

    // One sample timeline from start to end: silence where the microphone was away.
    assert_continuous_audio(&run.audio);
    // The tone is back where the silence ends: silence encodes to a few bytes a frame.
    let (start, len) = longest_run(&run.audio, |p| p.data.len() < 40);
    eprintln!(
        "silent run: {len} packets from #{start}; sizes around it: {:?}",
        run.audio[start.saturating_sub(2)..(start + len + 2).min(run.audio.len())]
            .iter()
            .map(|p| p.data.len())
            .collect::<Vec<_>>()
    );
    assert!(
        (len as f64 - a.frames_filled as f64).abs() <= 3.0,
        "{len} silent packets, {} filled",
        a.frames_filled
    );
    assert!(
        run.audio[start + len..]
            .iter()
            .filter(|p| p.data.len() > 100)
            .count()
            >= 40
    );
    // The returning tone may be re-aligned once against the clock; nothing else.
    assert!(a.timeline_corrections <= 1, "{}", a.timeline_corrections);

    // Video did not notice.
    assert_regular_video(&run.video);
    assert_eq!(v.device_losses, 0);
    assert_eq!(v.frames_filled, 0);
    assert_eq!(run.stats.errors, 0);
}

#[test]
fn stopping_while_the_camera_is_away_ends_cleanly() {
    let away = SourceSpec::Faulty {
        inner: Box::new(video_pattern()),
        fail_after: Duration::from_millis(300),
        down_for: Duration::from_secs(3600),
    };
    let run = broadcast(away, audio_tone(), Duration::from_millis(1500));
    let v = run.stats.video;
    assert!(v.state.is_reconnecting(), "{:?}", v.state);
    assert_eq!(v.device_losses, 1);
    // Stills up to the stop: the video track reaches as far as the audio track.
    assert_regular_video(&run.video);
    let (last_v, last_a) = (
        run.video.last().unwrap().dts_ms,
        run.audio.last().unwrap().dts_ms,
    );
    assert!(
        (last_v - last_a).abs() < 150,
        "video ends at {last_v} ms, audio at {last_a} ms"
    );
    assert!(v.frames_filled >= 20, "{}", v.frames_filled);
}

#[test]
fn a_device_that_never_delivered_is_a_start_up_error() {
    // Fails at the very first read: nothing ever worked, so this is no loss to wait out.
    let broken = SourceSpec::Faulty {
        inner: Box::new(video_pattern()),
        fail_after: Duration::ZERO,
        down_for: Duration::ZERO,
    };
    let config = PipelineConfig {
        video_source: Some(broken),
        audio_source: None,
        video_encoder: VideoSettings {
            width: 320,
            height: 240,
            fps: FPS,
            ..VideoSettings::default()
        },
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let handle = spawn_pipeline(config, Arc::new(AtomicBool::new(false)), |_| {}, |_, _| {})
        .expect("the source opens");
    assert!(
        common::poll_until(Duration::from_secs(10), || handle.is_finished()),
        "the pipeline halts"
    );
    let stats = handle.stats();
    assert_eq!(stats.video.device_losses, 0);
    let msg = handle.stop_and_join().expect_err("an error").to_string();
    assert!(
        msg.contains("reading from video test pattern failed"),
        "{msg}"
    );
}
