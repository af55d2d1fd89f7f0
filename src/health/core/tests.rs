//! Exact timing of the alarms with injected time: holds, hysteresis, windows, pauses.

use super::*;
use crate::health::meter::{ChannelBlock, MAX_CHANNELS};

fn settings() -> HealthSettings {
    HealthSettings {
        silence_s: 3,
        black_s: 2,
        frozen_s: 3,
        low_fps_s: 2,
        clipping_hold_s: 2,
        ..HealthSettings::default()
    }
}

fn block(rms: f32, peak: f32, clipped: bool) -> AudioBlock {
    AudioBlock {
        channels: [ChannelBlock { peak, rms, clipped }; MAX_CHANNELS],
        count: 2,
    }
}

/// Feeds 100 ms blocks from `from` (exclusive) to `to` (inclusive); the times of changes.
fn blocks(h: &mut HealthCore, from: f64, to: f64, b: AudioBlock) -> Vec<(f64, Change)> {
    let mut out = Vec::new();
    let mut i = 1;
    loop {
        let t = from + f64::from(i) * 0.1;
        if t > to + 1e-9 {
            return out;
        }
        h.on_audio_block(t, &b);
        out.extend(h.take_changes().into_iter().map(|c| (t, c)));
        i += 1;
    }
}

fn plane(v: u8) -> Vec<u8> {
    vec![v; 160 * 90]
}

#[test]
fn silence_is_raised_after_its_hold_and_cleared_5_db_above_at_once() {
    let mut h = HealthCore::new(settings(), true, false, 25);
    let tone = block(0.1, 0.14, false); // −20 dBFS RMS
    let quiet = block(0.0001, 0.0002, false); // −80 dBFS
    assert!(blocks(&mut h, 0.0, 5.0, tone).is_empty());
    // Silent from 5.0: the first silent block ends at 5.1 and began at 5.0.
    let ch = blocks(&mut h, 5.0, 10.0, quiet);
    assert_eq!(ch.len(), 1, "{ch:?}");
    let (t, c) = &ch[0];
    assert!((t - 8.0).abs() < 1e-6, "raised at {t}");
    assert!(c.raised && c.alarm == Alarm::Silence);
    assert_eq!(c.threshold, -50.0);
    assert!(
        c.to_string()
            .starts_with("silence raised: loudest channel RMS -80.00 dBFS"),
        "{c}"
    );
    let r = h.report(10.0);
    assert_eq!(r.active(), vec![Alarm::Silence]);
    assert_eq!(r.alarm(Alarm::Silence).for_s, Some(2.0));
    // −48 dBFS is above the threshold but inside the hysteresis: still silent.
    let murmur = block(0.004, 0.006, false);
    assert!(blocks(&mut h, 10.0, 12.0, murmur).is_empty());
    // −40 dBFS: cleared at the first block.
    let ch = blocks(&mut h, 12.0, 13.0, tone);
    assert_eq!(ch.len(), 1);
    assert!(!ch[0].1.raised && (ch[0].0 - 12.1).abs() < 1e-6);
    assert_eq!(h.report(13.0).alarm(Alarm::Silence).raised, 1);
    // A loud block in the middle restarts the hold.
    blocks(&mut h, 13.0, 15.0, quiet);
    blocks(&mut h, 15.0, 15.1, tone);
    let ch = blocks(&mut h, 15.1, 20.0, quiet);
    assert!((ch[0].0 - 18.1).abs() < 1e-6, "{ch:?}");
}

#[test]
fn clipping_needs_more_than_the_share_and_clears_after_the_hold() {
    let mut h = HealthCore::new(settings(), true, false, 25);
    let clean = block(0.1, 0.5, false);
    let over = block(0.5, 1.0, true);
    blocks(&mut h, 0.0, 2.0, clean);
    // One clipped block in 10 s is 1 %: not more than 1 %.
    assert!(blocks(&mut h, 2.0, 2.1, over).is_empty());
    assert!(blocks(&mut h, 2.1, 5.0, clean).is_empty());
    // A second one within the window: 2 % > 1 %.
    let ch = blocks(&mut h, 5.0, 5.1, over);
    assert!(ch[0].1.raised && ch[0].1.alarm == Alarm::Clipping, "{ch:?}");
    // Cleared 2 s (clipping_hold_s) after the last clipped block.
    let ch = blocks(&mut h, 5.1, 9.0, clean);
    assert_eq!(ch.len(), 1);
    assert!(!ch[0].1.raised && (ch[0].0 - 7.1).abs() < 1e-6, "{ch:?}");
    assert_eq!(
        ch[0].1.to_string(),
        "clipping cleared: no clipped block for 2.0 s, hold 2 s"
    );
    // The window forgets: 10 s later one clipped block is 1 % again.
    blocks(&mut h, 9.0, 16.0, clean);
    assert!(blocks(&mut h, 16.0, 16.1, over).is_empty());
}

#[test]
fn black_and_frozen_on_luma_planes() {
    let mut h = HealthCore::new(settings(), false, true, 25);
    // Moving picture: samples differ by ~3 levels.
    for t in 0..5 {
        h.on_picture(f64::from(t), &plane(100 + 3 * (t % 2) as u8));
        assert!(h.take_changes().is_empty());
    }
    assert_eq!(h.report(4.0).frame_change, Some(3.0));
    // Exactly the same picture from t=5 on: unchanged since the sample at 4.
    let mut raised = None;
    for t in 5..12 {
        h.on_picture(f64::from(t), &plane(100));
        if let Some(c) = h.take_changes().pop() {
            raised = Some((t, c));
        }
    }
    let (t, c) = raised.expect("frozen");
    assert_eq!(
        (t, c.alarm, c.raised),
        (7, Alarm::Frozen, true),
        "4 → 7 is 3 s"
    );
    // Sensor noise at the threshold keeps it frozen; twice the threshold clears it.
    let mut noisy = plane(100);
    noisy[..200].fill(101); // 200 / 14400 = 0.014 levels: still frozen
    h.on_picture(12.0, &noisy);
    assert!(h.take_changes().is_empty());
    noisy[..1000].fill(101); // ~0.055 levels against the last sample
    h.on_picture(13.0, &noisy);
    let c = h.take_changes().pop().expect("cleared");
    assert!(!c.raised && c.alarm == Alarm::Frozen, "{c:?}");

    // Black: mean below 20 for 2 s; a black picture is not frozen too.
    for t in 14..20 {
        h.on_picture(f64::from(t), &plane(2));
    }
    let ch = h.take_changes();
    assert_eq!(ch.len(), 1, "{ch:?}");
    assert_eq!((ch[0].alarm, ch[0].raised), (Alarm::Black, true));
    assert_eq!(h.report(19.0).active(), vec![Alarm::Black]);
    // 22 is above the threshold but inside the hysteresis; 25 clears.
    h.on_picture(20.0, &plane(22));
    assert!(h.take_changes().is_empty());
    h.on_picture(21.0, &plane(25));
    assert!(!h.take_changes()[0].raised);
}

#[test]
fn low_fps_from_counter_deltas() {
    let mut h = HealthCore::new(settings(), false, true, 25);
    let mut count = 0;
    for t in 0..=3 {
        count += 25;
        h.on_frame_count(f64::from(t), count);
    }
    assert_eq!(h.report(3.0).capture_fps, Some(25.0));
    // 12 fps (48 %) from t=3: raised 2 s later.
    let mut changes = Vec::new();
    for t in 4..=8 {
        count += 12;
        h.on_frame_count(f64::from(t), count);
        changes.extend(h.take_changes().into_iter().map(|c| (t, c)));
    }
    assert_eq!(changes.len(), 1);
    assert_eq!((changes[0].0, changes[0].1.raised), (5, true));
    // 16 fps (64 %) is above 60 % but below 70 %: still low. 18 fps clears.
    count += 16;
    h.on_frame_count(9.0, count);
    assert!(h.take_changes().is_empty());
    count += 18;
    h.on_frame_count(10.0, count);
    assert!(!h.take_changes()[0].raised);
}

#[test]
fn a_reconnecting_device_pauses_its_alarms_only() {
    let mut h = HealthCore::new(settings(), true, true, 25);
    let quiet = block(0.0, 0.0, false);
    blocks(&mut h, 0.0, 4.0, quiet);
    for t in 0..=3 {
        h.on_picture(f64::from(t), &plane(1));
    }
    let _ = h.take_changes();
    assert_eq!(h.report(4.0).active(), vec![Alarm::Silence, Alarm::Black]);
    h.set_reconnecting(false, true);
    let ch = h.take_changes();
    assert_eq!(ch.len(), 1);
    assert!(ch[0].paused && ch[0].alarm == Alarm::Black);
    assert!(ch[0].to_string().contains("reconnecting"), "{}", ch[0]);
    // Stills and nothing else while away: no alarm, however long.
    for t in 4..30 {
        h.on_picture(f64::from(t), &plane(1));
        h.on_frame_count(f64::from(t), 0);
    }
    assert!(h.take_changes().is_empty());
    let r = h.report(30.0);
    assert_eq!(r.video_state, TrackHealth::Reconnecting);
    assert_eq!(r.active(), vec![Alarm::Silence]);
    assert_eq!(r.capture_fps, None);
    // Back: measured afresh.
    h.set_reconnecting(false, false);
    h.on_picture(31.0, &plane(1));
    assert!(h.take_changes().is_empty());
    h.on_picture(33.0, &plane(1));
    assert_eq!(h.take_changes()[0].alarm, Alarm::Black);
}

#[test]
fn a_zero_hold_turns_an_alarm_off() {
    let s = HealthSettings {
        silence_s: 0,
        clipping_window_s: 0,
        ..settings()
    };
    let mut h = HealthCore::new(s, true, false, 25);
    assert!(blocks(&mut h, 0.0, 100.0, block(0.0, 1.0, true)).is_empty());
    assert_eq!(
        h.report(100.0).channels.len(),
        2,
        "levels are still measured"
    );
}
