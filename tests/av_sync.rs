//! A/V sync end to end: the real capture thread, resampler and AAC encoder following a test
//! tone whose sample clock runs 5000 ppm fast (`[audio] test_clock_ppm`), in real time for
//! 40 s. Uncorrected, the counted timeline would be 200 ms off after 40 s and a frame would be
//! skipped; followed by resampling, the drift is measured, the offset stays within a few
//! milliseconds and nothing is inserted or skipped. (The 6-hour and ±300 ppm cases run on an
//! injected clock in `encode::drift`'s unit tests; `bench/av_sync.sh` measures recordings.)

mod common;

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use polypush::capture::{SourceSpec, Track};
use polypush::encode::{spawn_pipeline, AudioSettings, PipelineConfig};

#[test]
fn a_drifting_test_clock_is_followed_without_gross_corrections() {
    let config = PipelineConfig {
        video_source: None,
        audio_source: Some(SourceSpec::TestPatternAudio {
            sample_rate: 48_000,
            channels: 2,
            frequency_hz: 440,
            sync: true,
            clock_ppm: 5000,
        }),
        video_encoder: Default::default(),
        audio_encoder: AudioSettings::default(),
        health: Default::default(),
    };
    let dts: Arc<Mutex<Vec<i64>>> = Arc::default();
    let sink_dts = dts.clone();
    let handle = spawn_pipeline(
        config,
        Arc::new(AtomicBool::new(false)),
        |_| {},
        move |track, packet| {
            assert_eq!(track, Track::Audio);
            sink_dts.lock().unwrap().push(packet.dts_ms);
        },
    )
    .expect("pipeline starts");
    let start = Instant::now();
    let mut at_20s = None;
    let mut worst_after_20s = 0.0f64;
    while start.elapsed() < Duration::from_secs(40) {
        std::thread::sleep(Duration::from_millis(250));
        let sync = handle.stats().audio_sync;
        if start.elapsed() >= Duration::from_secs(20) {
            at_20s.get_or_insert(sync);
            if let Some(o) = sync.av_offset_s() {
                worst_after_20s = worst_after_20s.max(o.abs());
            }
        }
    }
    let stats = handle.stop_and_join().expect("pipeline ends cleanly");
    let sync = stats.audio_sync;
    let at_20s = at_20s.expect("ran 20 s");

    let drift = sync.drift_ppm().expect("drift measured");
    assert!((drift - 5000.0).abs() < 20.0, "measured {drift} ppm");
    assert_eq!(
        (
            sync.silence_inserted - at_20s.silence_inserted,
            sync.frames_skipped - at_20s.frames_skipped
        ),
        (0, 0),
        "gross corrections after 20 s: {sync:?}"
    );
    assert_eq!(
        (sync.silence_inserted, sync.frames_skipped),
        (0, 0),
        "{sync:?}"
    );
    assert!(
        worst_after_20s < 0.010,
        "offset up to {worst_after_20s} s after 20 s"
    );
    // The AAC timeline stays regular: the correction is inside the frames, not between them.
    let dts = dts.lock().unwrap();
    assert!(dts.len() > 1800, "{} packets in 40 s", dts.len());
    for w in dts.windows(2) {
        assert!((21..=22).contains(&(w[1] - w[0])), "{w:?}");
    }
}
