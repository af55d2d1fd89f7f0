//! Unit tests of the video encode thread's still schedule.

use super::*;

#[test]
fn stills_continue_the_frame_grid_half_a_frame_late() {
    let mut s = StillSchedule::new(1_000_000, 25);
    // The next slot is 1.04 s, encoded from 1.06 s on.
    assert_eq!(s.due(1_050_000), None);
    assert_eq!(s.wait(1_050_000), Duration::from_millis(10));
    assert_eq!(s.due(1_060_000), Some(1_040_000));
    assert_eq!(s.due(1_060_000), None);
    // Woken late: every overdue slot, in order.
    let mut slots = Vec::new();
    while let Some(t) = s.due(1_200_000) {
        slots.push(t);
    }
    assert_eq!(slots, [1_080_000, 1_120_000, 1_160_000]);
    // 1.2 s is next, at 1.22 s.
    assert_eq!(s.wait(1_200_000), Duration::from_millis(20));
    assert_eq!(s.wait(1_300_000), Duration::ZERO);
}

#[test]
fn stills_at_30_fps_do_not_drift() {
    let mut s = StillSchedule::new(0, 30);
    let mut last = 0;
    for k in 1..=3000i64 {
        let t = s.due(k * 1_000_000 / 30 + 20_000).unwrap();
        assert_eq!(t, k * 1_000_000 / 30);
        assert!((33_333..=33_334).contains(&(t - last)));
        last = t;
    }
    assert_eq!(last, 100_000_000, "100 s later, exactly");
}

#[test]
fn stills_skip_ahead_when_far_behind() {
    let mut s = StillSchedule::new(0, 25);
    // Noticed 10 s late: no burst of 250 frames, the grid resumes near now.
    let t = s.due(10_000_000).unwrap();
    assert_eq!(t, 10_000_000);
    assert_eq!(s.due(10_000_000), None);
    assert_eq!(s.due(10_060_000), Some(10_040_000));
    // A moderate delay is caught up (no gap).
    let mut s = StillSchedule::new(0, 25);
    let n = std::iter::from_fn(|| s.due(2_000_000)).count();
    assert_eq!(n, 49);
}
