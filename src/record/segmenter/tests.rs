//! Unit tests of the recording segmenter.

use super::*;
use proptest::prelude::*;

const META: &[u8] = b"meta";
const AVCC: &[u8] = &[0x17, 0x00, 0, 0, 0, 1];
const ASC: &[u8] = &[0xaf, 0x00, 0x11, 0x90];

fn header(kind: PacketKind, body: &'static [u8]) -> MediaPacket {
    MediaPacket::new(kind, 0, Bytes::from_static(body))
}

/// A video packet whose body names its DTS, so tests can tell frames apart.
fn video(dts: u64, keyframe: bool) -> MediaPacket {
    let body = format!("{}v{dts}", if keyframe { 'K' } else { 'P' });
    MediaPacket::new(PacketKind::Video { keyframe }, dts, Bytes::from(body))
}

fn audio(dts: u64) -> MediaPacket {
    MediaPacket::new(PacketKind::Audio, dts, Bytes::from(format!("a{dts}")))
}

fn segmenter(segment_ms: u64) -> Segmenter {
    Segmenter::new(SegmenterConfig {
        segment_ms,
        sync_ms: 1_000_000,
    })
}

/// What the steps would put on disk: one `Vec` of (type, ts, body) per segment.
#[derive(Debug, Default)]
struct Files {
    closed: Vec<Vec<(u8, u32, String)>>,
    open: Option<Vec<(u8, u32, String)>>,
    syncs: usize,
}

impl Files {
    fn apply(&mut self, steps: &mut Vec<Step>) {
        for step in steps.drain(..) {
            match step {
                Step::Open { .. } => {
                    assert!(self.open.is_none(), "Open while a segment is open");
                    self.open = Some(Vec::new());
                }
                Step::Close => self
                    .closed
                    .push(self.open.take().expect("Close, nothing open")),
                Step::Tag {
                    tag_type,
                    ts_ms,
                    body,
                    ..
                } => self.open.as_mut().expect("Tag, nothing open").push((
                    tag_type,
                    ts_ms,
                    String::from_utf8_lossy(&body).into_owned(),
                )),
                Step::Sync => self.syncs += 1,
            }
        }
    }

    fn all(&self) -> Vec<&Vec<(u8, u32, String)>> {
        self.closed.iter().chain(&self.open).collect()
    }
}

fn run(s: &mut Segmenter, pkts: impl IntoIterator<Item = MediaPacket>) -> Files {
    let mut files = Files::default();
    let mut steps = Vec::new();
    for p in pkts {
        s.push(p, &mut steps);
        files.apply(&mut steps);
    }
    s.finish(&mut steps);
    files.apply(&mut steps);
    files
}

fn headers() -> Vec<MediaPacket> {
    vec![
        header(PacketKind::Metadata, META),
        header(PacketKind::VideoHeader, AVCC),
        header(PacketKind::AudioHeader, ASC),
    ]
}

/// 25 fps video with a keyframe every `gop` frames and 1024-sample 48 kHz audio
/// (21.333 ms), `secs` long, pushed in DTS order.
fn stream(secs: u64, gop: u64) -> Vec<MediaPacket> {
    let mut out = headers();
    let (mut v, mut a) = (0u64, 0u64);
    loop {
        let vdts = v * 40;
        let adts = a * 1024 * 1000 / 48_000;
        let (v_left, a_left) = (vdts < secs * 1000, adts < secs * 1000);
        if !v_left && !a_left {
            return out;
        }
        if v_left && (!a_left || vdts <= adts) {
            out.push(video(vdts, v % gop == 0));
            v += 1;
        } else {
            out.push(audio(adts));
            a += 1;
        }
    }
}

fn first_media(seg: &[(u8, u32, String)]) -> &(u8, u32, String) {
    &seg[3]
}

#[test]
fn segments_are_cut_only_at_keyframes_once_long_enough() {
    // Keyframes every 1.2 s; 2 s segments are cut at 2.4 s, 4.8 s, 7.2 s.
    let files = run(&mut segmenter(2000), stream(8, 30));
    let starts: Vec<&str> = files
        .all()
        .iter()
        .map(|s| first_media(s).2.as_str())
        .collect();
    assert_eq!(starts, ["Kv0", "Kv2400", "Kv4800", "Kv7200"]);
    let (last, full) = files.closed.split_last().unwrap();
    assert_eq!(last.iter().filter(|t| t.2.starts_with('K')).count(), 1);
    for seg in full {
        assert_eq!(first_media(seg).1, 0, "keyframe at timestamp 0");
        let keys = seg.iter().filter(|t| t.2.starts_with('K')).count();
        assert_eq!(keys, 2, "two GOPs of 1.2 s per segment");
    }
}

#[test]
fn every_segment_starts_with_the_current_headers() {
    let files = run(&mut segmenter(1000), stream(5, 25));
    assert!(files.all().len() >= 4);
    for seg in files.all() {
        assert_eq!(seg[0], (18, 0, "meta".into()));
        assert_eq!(seg[1], (9, 0, String::from_utf8_lossy(AVCC).into_owned()));
        assert_eq!(seg[2], (8, 0, String::from_utf8_lossy(ASC).into_owned()));
        assert!(seg[3].2.starts_with('K'));
        let headers = seg
            .iter()
            .filter(|t| !t.2.starts_with(['K', 'P', 'a']))
            .count();
        assert_eq!(headers, 3, "headers only at the start");
    }
}

#[test]
fn timestamps_are_rebased_to_the_segment_keyframe() {
    let files = run(&mut segmenter(2000), stream(6, 25));
    for seg in files.all() {
        let base: u64 = first_media(seg).2[2..].parse().unwrap();
        for (_, ts, body) in &seg[3..] {
            let dts: u64 = body
                .trim_start_matches(['K', 'P', 'v', 'a'])
                .parse()
                .unwrap();
            assert_eq!(u64::from(*ts), dts - base, "{body}");
        }
    }
}

#[test]
fn audio_goes_to_the_segment_its_dts_belongs_to_whatever_the_arrival_order() {
    // Audio pushed 300 ms early (x264 latency) and 150 ms late (AAC latency).
    for shift in [-300i64, 150] {
        let mut pkts = stream(6, 25);
        let key = |p: &MediaPacket| match p.kind {
            PacketKind::Audio => p.dts_ms as i64 + shift,
            _ => p.dts_ms as i64,
        };
        pkts[3..].sort_by_key(key); // stable: headers stay first
        let files = run(&mut segmenter(2000), pkts);
        let all = files.all();
        for (i, seg) in all.iter().enumerate() {
            let base: u64 = first_media(seg).2[2..].parse().unwrap();
            let next = all
                .get(i + 1)
                .map_or(u64::MAX, |n| first_media(n).2[2..].parse().unwrap());
            for (_, _, body) in seg.iter().filter(|t| t.2.starts_with('a')) {
                let dts: u64 = body[1..].parse().unwrap();
                assert!(
                    (base..next).contains(&dts),
                    "shift {shift}: {body} in [{base}, {next})"
                );
            }
        }
        let audio = all
            .iter()
            .flat_map(|s| s.iter())
            .filter(|t| t.2.starts_with('a'));
        assert_eq!(
            audio.count(),
            282,
            "shift {shift}: every audio frame written once"
        );
    }
}

#[test]
fn nothing_is_written_before_the_first_keyframe() {
    let mut s = segmenter(2000);
    let mut pkts = headers();
    pkts.extend([
        audio(0),
        video(0, false),
        audio(21),
        video(40, true),
        audio(43),
    ]);
    let files = run(&mut s, pkts);
    let seg = &files.all()[0];
    assert_eq!(&seg[3..], [(9, 0, "Kv40".into()), (8, 3, "a43".into())]);
    assert_eq!(
        s.discards(),
        Discards {
            skipped: 3,
            lost: 0
        }
    );
}

#[test]
fn a_changed_header_is_written_in_place_and_starts_a_new_segment_at_the_next_keyframe() {
    let mut s = segmenter(60_000);
    let mut pkts = headers();
    pkts.extend([video(0, true), audio(10), video(40, false)]);
    pkts.push(header(PacketKind::AudioHeader, &[0xaf, 0x00, 0x11, 0x88]));
    pkts.extend([audio(50), video(80, false), video(120, true), audio(130)]);
    let files = run(&mut s, pkts);
    let all = files.all();
    assert_eq!(all.len(), 2);
    let first: Vec<_> = all[0][3..].iter().map(|t| (t.0, t.1)).collect();
    // The new ASC sits where it changed in the audio track (after a10, at the newest
    // timestamp), and the audio after it stays in the first segment.
    assert_eq!(first, [(9, 0), (8, 10), (8, 10), (9, 40), (8, 50), (9, 80)]);
    assert_eq!(
        all[1][2].2,
        String::from_utf8_lossy(&[0xaf, 0x00, 0x11, 0x88])
    );
    assert_eq!(all[1][3].2, "Kv120");
}

#[test]
fn after_a_video_header_change_only_the_next_keyframe_is_decodable() {
    let mut s = segmenter(60_000);
    let mut pkts = headers();
    pkts.extend([video(0, true), video(40, false)]);
    pkts.push(header(PacketKind::VideoHeader, &[0x17, 0x00, 0, 0, 0, 2]));
    pkts.extend([video(80, false), video(120, true), video(160, false)]);
    // Video only from here on would wait for audio; push audio along.
    pkts.extend([audio(0), audio(200)]);
    let files = run(&mut s, pkts);
    let all = files.all();
    assert_eq!(all.len(), 2);
    assert!(!all[0].iter().any(|t| t.2 == "Pv80"));
    assert_eq!(all[1][3].2, "Kv120");
    assert_eq!(s.discards().skipped, 1);
}

#[test]
fn a_repeated_identical_header_changes_nothing() {
    let mut s = segmenter(60_000);
    let mut pkts = stream(2, 25);
    pkts.insert(20, header(PacketKind::VideoHeader, AVCC));
    pkts.insert(40, header(PacketKind::Metadata, META));
    let files = run(&mut s, pkts);
    assert_eq!(files.all().len(), 1);
    assert_eq!(files.all()[0].len(), 3 + 50 + 94);
}

#[test]
fn video_only_streams_do_not_wait_for_audio() {
    let mut s = segmenter(1000);
    let mut steps = Vec::new();
    s.push(header(PacketKind::VideoHeader, AVCC), &mut steps);
    s.push(video(0, true), &mut steps);
    assert!(matches!(
        steps[0],
        Step::Open {
            has_audio: false,
            has_video: true
        }
    ));
    assert_eq!(s.pending(), 0);
}

#[test]
fn a_stalled_track_delays_the_other_by_at_most_the_interleave_window_and_loses_nothing() {
    let mut s = segmenter(60_000);
    let mut steps = Vec::new();
    for h in headers() {
        s.push(h, &mut steps);
    }
    s.push(audio(0), &mut steps);
    for i in 0..100 {
        s.push(video(i * 40, i == 0), &mut steps);
    }
    // Audio stopped at 0: video beyond 2 s of span has been written anyway.
    assert!(
        s.pending() <= (MAX_INTERLEAVE_MS / 40 + 1) as usize,
        "{}",
        s.pending()
    );
    // When audio resumes it is still written, in its segment and its track's order.
    steps.clear();
    s.push(audio(100), &mut steps);
    assert!(steps
        .iter()
        .any(|st| matches!(st, Step::Tag { body, ts_ms: 100, .. } if body == "a100")));
    assert_eq!(s.discards(), Discards::default());
}

#[test]
fn late_audio_from_before_the_segment_start_is_skipped() {
    let mut s = segmenter(60_000);
    let mut pkts = vec![header(PacketKind::VideoHeader, AVCC)];
    pkts.extend([video(1000, true)]);
    // Audio appears later, with older timestamps.
    pkts.extend([
        header(PacketKind::AudioHeader, ASC),
        audio(900),
        audio(1021),
    ]);
    let files = run(&mut s, pkts);
    let tags: Vec<_> = files.all()[0].iter().map(|t| t.2.clone()).collect();
    assert!(!tags.contains(&"a900".to_string()));
    assert!(tags.contains(&"a1021".to_string()));
    assert_eq!(s.discards().skipped, 1);
}

#[test]
fn after_abandon_recording_resumes_at_a_keyframe_after_the_retry_delay() {
    let mut s = segmenter(60_000);
    let mut steps = Vec::new();
    for p in stream(1, 25).into_iter().take(10) {
        s.push(p, &mut steps);
    }
    let last = s.last_dts;
    s.abandon();
    steps.clear();
    let mut pkts = Vec::new();
    for i in 1..=200u64 {
        let dts = last + i * 40;
        pkts.push(audio(dts));
        pkts.push(video(dts, i % 25 == 0));
    }
    let mut files = Files::default();
    for p in pkts {
        s.push(p, &mut steps);
        files.apply(&mut steps);
    }
    let reopened = files.open.expect("recording resumed");
    let base: u64 = reopened[3].2[2..].parse().unwrap();
    assert!(base >= last + RETRY_AFTER_MS, "{base}");
    assert!(base < last + RETRY_AFTER_MS + 1000, "{base}");
    assert!(s.discards().lost > 200);
}

#[test]
fn sync_every_sync_interval_of_media() {
    let mut s = Segmenter::new(SegmenterConfig {
        segment_ms: 60_000,
        sync_ms: 1000,
    });
    let files = run(&mut s, stream(10, 25));
    assert!((9..=10).contains(&files.syncs), "{}", files.syncs);
}

#[test]
fn request_cut_cuts_at_the_next_keyframe() {
    let mut s = segmenter(60_000);
    let mut files = Files::default();
    let mut steps = Vec::new();
    for (i, p) in stream(4, 25).into_iter().enumerate() {
        if i == 50 {
            s.request_cut();
        }
        s.push(p, &mut steps);
        files.apply(&mut steps);
    }
    s.finish(&mut steps);
    files.apply(&mut steps);
    assert_eq!(files.closed.len(), 2);
    assert_eq!(files.closed[1][3].2, "Kv1000");
}

proptest! {
    /// Arbitrary arrival jitter between the tracks, GOP length and segment length: each
    /// segment starts with headers and a keyframe at 0, timestamps never go backwards within
    /// a track, and every video frame from the first keyframe on is written exactly once.
    #[test]
    fn segments_are_well_formed_and_lose_no_video(
        jitter in prop::collection::vec(-400i64..400, 200),
        gop in 5u64..60,
        segment_ms in 500u64..5000,
    ) {
        let mut pkts = stream(8, gop);
        let mut i = 0;
        let mut key = |p: &MediaPacket| {
            let j = if p.kind == PacketKind::Audio { i += 1; jitter[i % jitter.len()] } else { 0 };
            p.dts_ms as i64 + j
        };
        let mut keyed: Vec<(i64, MediaPacket)> = pkts.split_off(3).into_iter().map(|p| (key(&p), p)).collect();
        // Audio arrives jittered but in order: only cross-track order changes.
        let mut last = i64::MIN;
        for (k, p) in keyed.iter_mut() {
            if p.kind == PacketKind::Audio { *k = (*k).max(last); last = *k; }
        }
        keyed.sort_by_key(|(k, _)| *k);
        pkts.extend(keyed.into_iter().map(|(_, p)| p));
        let video_frames = pkts.iter().filter(|p| p.kind.is_video()).count();
        let files = run(&mut segmenter(segment_ms), pkts);
        let mut written_video = 0;
        for seg in files.all() {
            prop_assert_eq!(seg[0].0, 18);
            prop_assert_eq!(seg[1].0, 9);
            prop_assert_eq!(seg[2].0, 8);
            prop_assert!(seg[3].2.starts_with('K'));
            prop_assert_eq!(seg[3].1, 0);
            for track in [8u8, 9] {
                let ts: Vec<u32> = seg[3..].iter().filter(|t| t.0 == track).map(|t| t.1).collect();
                prop_assert!(ts.windows(2).all(|w| w[0] <= w[1]), "track {} not monotonic", track);
            }
            written_video += seg[3..].iter().filter(|t| t.0 == 9).count();
        }
        prop_assert_eq!(written_video, video_frames);
    }
}
