//! Ring tests: the drop policy case by case, accounting, the async side, and a property test
//! over random push/pop/reconnect sequences with tiny bounds.

use super::*;
use bytes::Bytes;
use proptest::prelude::*;

/// A body of `len` bytes whose first 8 bytes (when they fit) carry `id`, so popped packets can
/// be matched to pushes.
fn body(id: u64, len: usize) -> Bytes {
    let mut v = vec![0u8; len];
    let n = len.min(8);
    v[..n].copy_from_slice(&id.to_be_bytes()[8 - n..]);
    Bytes::from(v)
}

fn key(dts: u64, len: usize) -> MediaPacket {
    MediaPacket::new(PacketKind::Video { keyframe: true }, dts, body(dts, len))
}

fn inter(dts: u64, len: usize) -> MediaPacket {
    MediaPacket::new(PacketKind::Video { keyframe: false }, dts, body(dts, len))
}

fn audio(dts: u64, len: usize) -> MediaPacket {
    MediaPacket::new(PacketKind::Audio, dts, body(dts, len))
}

fn header(kind: PacketKind, id: u64) -> MediaPacket {
    MediaPacket::new(kind, 0, body(id, 8))
}

fn ring(max_bytes: usize, max_delay_ms: u64) -> Ring {
    Ring::new(RingConfig {
        max_bytes,
        max_delay_ms,
    })
}

/// `(kind, dts)` of everything queued, in pop order.
fn drain(ring: &Ring) -> Vec<(PacketKind, u64)> {
    std::iter::from_fn(|| ring.try_pop())
        .map(|p| (p.kind, p.dts_ms))
        .collect()
}

const K: PacketKind = PacketKind::Video { keyframe: true };
const P: PacketKind = PacketKind::Video { keyframe: false };
const A: PacketKind = PacketKind::Audio;

fn dropped(ring: &Ring, reason: DropReason) -> DropCount {
    ring.stats().dropped.get(reason)
}

fn assert_accounting(s: &RingStats) {
    let d = s.dropped.total();
    assert_eq!(
        s.pushed_packets,
        s.popped_packets + d.packets + s.queued_packets as u64,
        "{s:?}"
    );
    assert_eq!(
        s.pushed_bytes,
        s.popped_bytes + d.bytes + s.queued_bytes as u64,
        "{s:?}"
    );
}

impl State {
    /// The invariants the module docs promise, checked from the inside.
    fn check_invariants(&self) {
        let all = || self.headers.iter().chain(&self.video).chain(&self.audio);
        assert_eq!(
            self.queued_bytes,
            all().map(|e| e.pkt.body.len()).sum::<usize>()
        );
        for q in [&self.headers, &self.video, &self.audio] {
            assert!(q.iter().zip(q.iter().skip(1)).all(|(a, b)| a.seq < b.seq));
        }
        assert!(self.headers.iter().all(|e| e.pkt.kind.is_header()));
        assert!(self.video.iter().all(|e| e.pkt.kind.is_video()));
        assert!(self.audio.iter().all(|e| e.pkt.kind == PacketKind::Audio));
        let within =
            self.queued_bytes <= self.cfg.max_bytes && self.delay_ms(None) <= self.cfg.max_delay_ms;
        assert!(within || self.video.is_empty(), "over bounds with video");
        if self.video_gate != VideoGate::Open {
            assert!(self.video.is_empty(), "gate closed with video queued");
        }
        let within_hard_cap = self.queued_bytes <= self.cfg.hard_cap_bytes()
            && self.delay_ms(None) <= self.cfg.hard_cap_delay_ms();
        assert!(within_hard_cap || self.audio.is_empty(), "over hard cap");
    }
}

#[test]
fn bounded_by_bytes_drops_the_oldest_gop() {
    let r = ring(1000, 60_000);
    r.push(key(0, 300));
    r.push(inter(40, 300));
    r.push(inter(80, 300));
    assert_eq!(r.stats().queued_bytes, 900);
    // 1200 bytes would not fit: the whole first GOP goes, not just its oldest frame.
    r.push(key(120, 300));
    assert_eq!(
        dropped(&r, DropReason::QueueFull),
        DropCount {
            packets: 3,
            bytes: 900
        }
    );
    r.push(inter(160, 300));
    assert_eq!(drain(&r), vec![(K, 120), (P, 160)]);
    assert_accounting(&r.stats());
}

#[test]
fn delay_outside_the_ring_shrinks_its_budget() {
    let r = ring(1 << 20, 1000);
    for dts in (0..=800).step_by(100) {
        r.push(if dts == 0 || dts == 400 {
            key(dts, 10)
        } else {
            inter(dts, 10)
        });
    }
    assert_eq!(r.stats().queued_delay_ms, 800);
    // The kernel holds 500 ms beyond the floor: the ring keeps 500 ms, the oldest GOP goes.
    r.set_outside_delay(500);
    assert_eq!(dropped(&r, DropReason::QueueDelay).packets, 4);
    assert_eq!(r.stats().queued_delay_ms, 400);
    // More than the bound outside: the ring still keeps a quarter of it (250 ms), so the
    // GOP at 400 (spanning 400 ms) goes too and video waits for the next keyframe.
    r.set_outside_delay(1500);
    assert_eq!(dropped(&r, DropReason::QueueDelay).packets, 9);
    r.push(inter(900, 10));
    assert_eq!(r.stats().queued_packets, 0);
    // The kernel drains: the full bound is back.
    r.set_outside_delay(0);
    for dts in (1200..=2000).step_by(100) {
        r.push(if dts == 1200 {
            key(dts, 10)
        } else {
            inter(dts, 10)
        });
    }
    assert_eq!(r.stats().queued_delay_ms, 800);
    assert_accounting(&r.stats());
}

#[test]
fn bounded_by_delay_drops_the_oldest_gop() {
    let r = ring(1 << 20, 100);
    r.push(key(0, 10));
    r.push(inter(40, 10));
    r.push(inter(80, 10));
    assert_eq!(r.stats().queued_delay_ms, 80);
    r.push(key(120, 10));
    assert_eq!(dropped(&r, DropReason::QueueDelay).packets, 3);
    assert_eq!(dropped(&r, DropReason::QueueFull).packets, 0);
    r.push(inter(160, 10));
    assert_eq!(r.stats().queued_delay_ms, 40);
    assert_eq!(drain(&r), vec![(K, 120), (P, 160)]);
}

#[test]
fn drops_a_gop_tail_not_random_frames() {
    let r = ring(650, 60_000);
    r.push(key(0, 100));
    r.push(inter(1, 100));
    r.push(inter(2, 100));
    r.push(key(3, 100));
    r.push(inter(4, 100));
    r.push(inter(5, 100));
    // The sender took the first keyframe already.
    assert_eq!(r.try_pop().unwrap().dts_ms, 0);
    r.push(inter(6, 100));
    r.push(inter(7, 100));
    // 700 bytes would not fit: the rest of the first GOP (1, 2) goes, the second GOP stays
    // whole, and only as much as needed is dropped.
    assert_eq!(
        drain(&r),
        vec![(K, 3), (P, 4), (P, 5), (P, 6), (P, 7)],
        "dropped {:?}",
        r.stats().dropped
    );
    assert_eq!(dropped(&r, DropReason::QueueFull).packets, 2);
}

#[test]
fn cutting_the_newest_gop_drops_its_incoming_frames_until_a_keyframe() {
    let r = ring(500, 60_000);
    r.push(key(0, 200));
    r.push(inter(40, 200));
    // Audio is never dropped, so making room for it cuts the only (newest) GOP.
    r.push(audio(41, 200));
    r.push(audio(42, 200));
    assert_eq!(dropped(&r, DropReason::QueueFull).packets, 2);
    r.push(inter(80, 10));
    r.push(inter(120, 10));
    assert_eq!(
        dropped(&r, DropReason::GopTail),
        DropCount {
            packets: 2,
            bytes: 20
        }
    );
    r.push(key(160, 10));
    r.push(inter(200, 10));
    assert_eq!(drain(&r), vec![(A, 41), (A, 42), (K, 160), (P, 200)]);
    assert_accounting(&r.stats());
}

#[test]
fn incoming_video_is_dropped_when_only_audio_is_left() {
    let r = ring(300, 60_000);
    r.push(audio(0, 250));
    // Nothing older to drop: the keyframe itself goes, and its GOP with it.
    r.push(key(1, 100));
    assert_eq!(dropped(&r, DropReason::QueueFull).packets, 1);
    r.push(inter(2, 10));
    assert_eq!(dropped(&r, DropReason::GopTail).packets, 1);
    r.try_pop();
    r.push(key(3, 100));
    assert_eq!(drain(&r), vec![(K, 3)]);
}

#[test]
fn a_frame_that_cannot_fit_at_all_is_dropped() {
    let r = ring(100, 60_000);
    r.push(key(0, 50));
    r.push(key(1, 500));
    assert_eq!(dropped(&r, DropReason::QueueFull).packets, 2);
    assert_eq!(r.stats().queued_packets, 0);
}

#[test]
fn headers_and_audio_are_never_dropped_within_the_hard_cap() {
    let r = ring(100, 100);
    r.push(header(PacketKind::Metadata, 1));
    r.push(header(PacketKind::VideoHeader, 2));
    r.push(header(PacketKind::AudioHeader, 3));
    for i in 0..8 {
        r.push(audio(i * 20, 40)); // 320 bytes, 140 ms: over 1x, under 4x
        r.push(inter(i * 20, 10));
    }
    let s = r.stats();
    assert_eq!(s.queued_packets, 11);
    assert_eq!(s.dropped.get(DropReason::AudioOverflow).packets, 0);
    assert_eq!(s.dropped.total().packets, 8);
    let kinds: Vec<PacketKind> = drain(&r).into_iter().map(|(k, _)| k).collect();
    assert_eq!(
        &kinds[..3],
        &[
            PacketKind::Metadata,
            PacketKind::VideoHeader,
            PacketKind::AudioHeader
        ]
    );
    assert!(kinds[3..].iter().all(|&k| k == A));
}

#[test]
fn audio_overflows_at_four_times_the_byte_bound() {
    let r = ring(100, 60_000);
    r.push(header(PacketKind::AudioHeader, 1));
    for i in 0..6 {
        r.push(audio(i, 100));
    }
    // 8 + 600 bytes > 400: the oldest audio goes until within, headers stay.
    let s = r.stats();
    assert_eq!(
        s.dropped.get(DropReason::AudioOverflow),
        DropCount {
            packets: 3,
            bytes: 300
        }
    );
    assert_eq!(s.queued_bytes, 308);
    assert_eq!(
        drain(&r),
        vec![(PacketKind::AudioHeader, 0), (A, 3), (A, 4), (A, 5)]
    );
}

#[test]
fn audio_overflows_at_four_times_the_delay_bound() {
    let r = ring(1 << 20, 100);
    for dts in (0..=500).step_by(20) {
        r.push(audio(dts, 10));
    }
    let s = r.stats();
    assert_eq!(s.queued_delay_ms, 400);
    assert_eq!(s.dropped.get(DropReason::AudioOverflow).packets, 5);
    assert_eq!(drain(&r).first(), Some(&(A, 100)));
}

#[test]
fn skip_to_keyframe_discards_video_up_to_the_next_queued_keyframe() {
    let r = ring(1 << 20, 60_000);
    r.push(key(0, 10));
    r.push(audio(1, 10));
    r.push(inter(2, 10));
    r.push(audio(3, 10));
    r.push(key(4, 10));
    r.push(inter(5, 10));
    assert_eq!(r.try_pop().unwrap().dts_ms, 0);
    r.skip_to_keyframe();
    assert_eq!(dropped(&r, DropReason::Reconnect).packets, 1);
    // A keyframe is queued, so later frames of its GOP are welcome.
    r.push(inter(6, 10));
    assert_eq!(drain(&r), vec![(A, 1), (A, 3), (K, 4), (P, 5), (P, 6)]);
}

#[test]
fn skip_to_keyframe_without_a_queued_keyframe_waits_for_the_next_one() {
    let r = ring(1 << 20, 60_000);
    r.push(key(0, 10));
    r.push(inter(1, 10));
    r.push(inter(2, 10));
    r.try_pop();
    r.skip_to_keyframe();
    r.push(inter(3, 10));
    r.push(audio(3, 10));
    assert_eq!(
        dropped(&r, DropReason::Reconnect),
        DropCount {
            packets: 3,
            bytes: 30
        }
    );
    r.push(key(4, 10));
    r.push(inter(5, 10));
    assert_eq!(drain(&r), vec![(A, 3), (K, 4), (P, 5)]);
    assert_accounting(&r.stats());
}

#[test]
fn headers_returns_the_latest_of_each_kind_in_order() {
    let r = ring(1 << 20, 60_000);
    assert!(r.headers().is_empty());
    r.push(header(PacketKind::AudioHeader, 1));
    r.push(header(PacketKind::Metadata, 2));
    r.push(header(PacketKind::VideoHeader, 3));
    r.push(header(PacketKind::Metadata, 4));
    let h = r.headers();
    let got: Vec<(PacketKind, Bytes)> = h.into_iter().map(|p| (p.kind, p.body)).collect();
    assert_eq!(
        got,
        vec![
            (PacketKind::Metadata, body(4, 8)),
            (PacketKind::VideoHeader, body(3, 8)),
            (PacketKind::AudioHeader, body(1, 8)),
        ]
    );
    // They are also queued in band, in push order, and survive popping.
    assert_eq!(r.stats().queued_packets, 4);
    assert_eq!(r.try_pop().unwrap().kind, PacketKind::AudioHeader);
    drain(&r);
    assert_eq!(r.headers().len(), 3);
}

#[test]
fn headers_keep_the_info_of_metadata() {
    let r = ring(1 << 20, 60_000);
    let mut meta = header(PacketKind::Metadata, 1);
    meta.info = Some(Arc::new(crate::media::StreamInfo {
        width: 640,
        height: 360,
        fps: 30.0,
        video_bitrate_kbps: 800,
        audio: None,
        encoder: "test".into(),
    }));
    r.push(meta);
    assert_eq!(r.headers()[0].info.as_ref().unwrap().width, 640);
}

#[test]
fn packets_leave_in_push_order_across_tracks() {
    let r = ring(1 << 20, 60_000);
    r.push(header(PacketKind::Metadata, 0));
    r.push(key(0, 10));
    r.push(audio(0, 10));
    r.push(audio(21, 10));
    r.push(header(PacketKind::VideoHeader, 0));
    r.push(inter(33, 10));
    r.push(audio(42, 10));
    assert_eq!(
        drain(&r),
        vec![
            (PacketKind::Metadata, 0),
            (K, 0),
            (A, 0),
            (A, 21),
            (PacketKind::VideoHeader, 0),
            (P, 33),
            (A, 42),
        ]
    );
}

#[test]
fn stats_accounting_adds_up() {
    let r = ring(1000, 200);
    r.push(header(PacketKind::VideoHeader, 0));
    for i in 0..50u64 {
        if i % 10 == 0 {
            r.push(key(i * 20, 150));
        } else {
            r.push(inter(i * 20, 60));
        }
        r.push(audio(i * 20, 20));
        if i % 3 == 0 {
            r.try_pop();
        }
        if i == 25 {
            r.skip_to_keyframe();
        }
        assert_accounting(&r.stats());
    }
    let s = r.stats();
    assert_eq!(s.pushed_packets, 101);
    assert!(s.dropped.total().packets > 0);
    drain(&r);
    let s = r.stats();
    assert_eq!(
        (s.queued_packets, s.queued_bytes, s.queued_delay_ms),
        (0, 0, 0)
    );
    assert_accounting(&s);
}

#[test]
fn queued_delay_spans_both_tracks_and_ignores_headers() {
    let r = ring(1 << 20, 60_000);
    r.push(header(PacketKind::Metadata, 0));
    r.push(audio(1000, 10));
    r.push(key(1010, 10));
    r.push(audio(1023, 10));
    r.push(inter(1043, 10));
    assert_eq!(r.stats().queued_delay_ms, 43);
    r.try_pop(); // metadata
    r.try_pop(); // audio 1000
    assert_eq!(r.stats().queued_delay_ms, 33);
}

#[test]
fn push_after_close_is_ignored_and_queued_packets_drain() {
    let r = ring(1 << 20, 60_000);
    r.push(audio(0, 10));
    r.close();
    assert!(r.is_closed());
    r.push(audio(1, 10));
    assert_eq!(r.stats().pushed_packets, 1);
    assert_eq!(drain(&r), vec![(A, 0)]);
}

#[test]
fn drop_log_reports_at_once_then_less_and_less_often_while_drops_go_on() {
    let mut log = DropLog::default();
    let t0 = Instant::now();
    let mut at = Vec::new();
    for ms in (0..600_000u64).step_by(100) {
        log.pending.add(DropReason::QueueDelay, 10);
        let t = t0 + Duration::from_millis(ms);
        if log.take_report(|| t).is_some() {
            at.push(ms / 1000);
        }
    }
    // 0, then 1, 2, 4, … 32 s apart, then every 60 s: 15 lines in 10 minutes, not 600.
    assert_eq!(
        at,
        [0, 1, 3, 7, 15, 31, 63, 123, 183, 243, 303, 363, 423, 483, 543]
    );
    // A quiet spell, and the next drop is reported at once.
    let later = t0 + Duration::from_secs(1200);
    log.pending.add(DropReason::QueueDelay, 10);
    assert!(log.take_report(|| later).is_some());
    log.pending.add(DropReason::QueueDelay, 10);
    assert!(log.take_report(|| later + Duration::from_secs(1)).is_some());
}

#[test]
fn drop_log_reports_at_most_once_a_second() {
    let mut log = DropLog::default();
    let t0 = Instant::now();
    assert_eq!(log.take_report(|| unreachable!("no drops, no clock")), None);
    log.pending.add(DropReason::QueueFull, 10);
    assert_eq!(log.take_report(|| t0).unwrap().total().packets, 1);
    log.pending.add(DropReason::QueueFull, 10);
    log.pending.add(DropReason::GopTail, 5);
    assert_eq!(log.take_report(|| t0 + Duration::from_millis(999)), None);
    let report = log.take_report(|| t0 + Duration::from_secs(1)).unwrap();
    assert_eq!(
        report.total(),
        DropCount {
            packets: 2,
            bytes: 15
        }
    );
    assert!(log.pending.is_empty());
}

#[tokio::test]
async fn pop_waits_for_a_push() {
    let r = ring(1 << 20, 60_000);
    let sender = tokio::spawn({
        let r = r.clone();
        async move { r.pop().await.map(|p| p.dts_ms) }
    });
    tokio::task::yield_now().await;
    assert!(!sender.is_finished());
    // Encoders push from plain threads.
    std::thread::spawn({
        let r = r.clone();
        move || r.push(audio(7, 10))
    })
    .join()
    .unwrap();
    assert_eq!(sender.await.unwrap(), Some(7));
}

#[tokio::test]
async fn pop_returns_none_once_closed_and_drained() {
    let r = ring(1 << 20, 60_000);
    r.push(audio(1, 10));
    let waiter = tokio::spawn({
        let r = r.clone();
        async move {
            let mut got = Vec::new();
            while let Some(p) = r.pop().await {
                got.push(p.dts_ms);
            }
            got
        }
    });
    tokio::task::yield_now().await;
    r.push(audio(2, 10));
    r.close();
    assert_eq!(waiter.await.unwrap(), vec![1, 2]);
    assert_eq!(r.pop().await.map(|p| p.dts_ms), None);
}

#[test]
fn steady_state_push_and_pop_do_not_grow_the_fifos() {
    let r = ring(8 << 20, 3000);
    let caps = |r: &Ring| {
        let s = r.lock();
        (s.video.capacity(), s.audio.capacity(), s.headers.capacity())
    };
    let before = caps(&r);
    for i in 0..10_000u64 {
        r.push(audio(i * 21, 300));
        r.push(if i % 60 == 0 {
            key(i * 21, 9000)
        } else {
            inter(i * 21, 3000)
        });
        if i >= 90 {
            r.try_pop();
            r.try_pop();
        }
    }
    assert_eq!(caps(&r), before);
}

/// One step of the property test.
#[derive(Debug, Clone)]
enum Op {
    Push {
        kind: PacketKind,
        len: usize,
        advance_ms: u64,
    },
    Pop,
    Skip,
}

fn op() -> impl Strategy<Value = Op> {
    let kind = prop_oneof![
        1 => Just(PacketKind::Metadata),
        1 => Just(PacketKind::VideoHeader),
        1 => Just(PacketKind::AudioHeader),
        4 => Just(K),
        20 => Just(P),
        16 => Just(A),
    ];
    prop_oneof![
        10 => (kind, 8usize..200, 0u64..30).prop_map(|(kind, len, advance_ms)| {
            // Headers stay small, as real ones are.
            let len = if kind.is_header() { len.min(40) } else { len };
            Op::Push { kind, len, advance_ms }
        }),
        4 => Just(Op::Pop),
        1 => Just(Op::Skip),
    ]
}

/// What the test knows about a pushed packet.
#[derive(Debug, Clone, Copy)]
struct Pushed {
    kind: PacketKind,
    len: usize,
    /// For video: the GOP (counting keyframes pushed so far) and the index in it.
    gop: u64,
    index: u64,
}

fn id_of(p: &MediaPacket) -> u64 {
    u64::from_be_bytes(p.body[..8].try_into().unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn never_drops_headers_or_audio_and_drops_only_gop_tails(
        max_bytes in 100usize..800,
        max_delay_ms in 20u64..300,
        ops in prop::collection::vec(op(), 1..300),
    ) {
        let r = ring(max_bytes, max_delay_ms);
        let mut pushed: Vec<Pushed> = Vec::new();
        let mut popped: Vec<MediaPacket> = Vec::new();
        let (mut now, mut gop, mut index) = (0u64, 0u64, 0u64);
        let mut queued_header_bytes = 0usize;
        let pop = |r: &Ring, popped: &mut Vec<MediaPacket>, qhb: &mut usize| {
            let p = r.try_pop();
            if let Some(p) = p {
                if p.kind.is_header() {
                    *qhb -= p.body.len();
                }
                popped.push(p);
            }
        };
        for op in &ops {
            match *op {
                Op::Push { kind, len, advance_ms } => {
                    now += advance_ms;
                    if kind.is_keyframe() {
                        gop += 1;
                        index = 0;
                    }
                    let id = pushed.len() as u64;
                    pushed.push(Pushed { kind, len, gop, index });
                    if kind.is_video() {
                        index += 1;
                    }
                    if kind.is_header() {
                        queued_header_bytes += len;
                    }
                    r.push(MediaPacket::new(kind, now, body(id, len)));
                }
                Op::Pop => pop(&r, &mut popped, &mut queued_header_bytes),
                Op::Skip => r.skip_to_keyframe(),
            }
            r.lock().check_invariants();
            let s = r.stats();
            assert_accounting(&s);
            prop_assert!(
                s.queued_bytes <= 4 * max_bytes + queued_header_bytes,
                "queued {} bytes, cap {}", s.queued_bytes, 4 * max_bytes
            );
        }
        while r.stats().queued_packets > 0 {
            pop(&r, &mut popped, &mut queued_header_bytes);
        }

        let ids: Vec<u64> = popped.iter().map(id_of).collect();
        prop_assert!(ids.windows(2).all(|w| w[0] < w[1]), "popped out of push order");
        for (p, &id) in popped.iter().zip(&ids) {
            prop_assert_eq!(p.kind, pushed[id as usize].kind);
            prop_assert_eq!(p.body.len(), pushed[id as usize].len);
        }

        // Headers: every one, in order.
        let headers_in: Vec<u64> = (0..pushed.len() as u64)
            .filter(|&i| pushed[i as usize].kind.is_header())
            .collect();
        let headers_out: Vec<u64> =
            ids.iter().copied().filter(|&i| pushed[i as usize].kind.is_header()).collect();
        prop_assert_eq!(headers_in, headers_out);

        // Audio: in order (checked above), and missing only what the hard cap counted.
        let audio_in = pushed.iter().filter(|p| p.kind == A).count() as u64;
        let audio_out = ids.iter().filter(|&&i| pushed[i as usize].kind == A).count() as u64;
        let s = r.stats();
        prop_assert_eq!(audio_in - audio_out, s.dropped.get(DropReason::AudioOverflow).packets);

        // Video: what leaves of each GOP is a prefix of it.
        let mut next_index: std::collections::HashMap<u64, u64> = Default::default();
        for &i in &ids {
            let p = pushed[i as usize];
            if p.kind.is_video() {
                let expected = next_index.entry(p.gop).or_insert(0);
                prop_assert_eq!(p.index, *expected, "GOP {} lost a frame in the middle", p.gop);
                *expected += 1;
            }
        }
        assert_accounting(&s);
    }
}
