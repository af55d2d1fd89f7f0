//! The recorder end to end on a real directory, with synthetic packets (no FFmpeg): the
//! segmenter's rules as files on disk, the queue under a hung writer, quota, crash recovery
//! and write errors.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::*;
use crate::flv::FlvFileWriter;
use crate::media::PacketKind;

const META: &[u8] = b"\x02\x00\x0aonMetaData";
const AVCC: &[u8] = &[0x17, 0x00, 0, 0, 0, 1, 0x64, 0, 0x1f];
const ASC: &[u8] = &[0xaf, 0x00, 0x11, 0x90];

fn config(dir: &Path, segment_s: u64) -> RecordConfig {
    RecordConfig {
        dir: dir.to_path_buf(),
        segment_s,
        max_total_bytes: u64::MAX,
        min_free_bytes: 0,
        ..RecordConfig::default()
    }
}

/// 25 fps video (keyframe every `gop` frames) and 48 kHz AAC frames for `secs` seconds from
/// `start_ms`, in DTS order, after the three headers. Bodies are FLV-shaped and name the DTS.
fn stream(start_ms: u64, secs: u64, gop: u64) -> Vec<MediaPacket> {
    let mut out = vec![
        MediaPacket::new(PacketKind::Metadata, 0, Bytes::from_static(META)),
        MediaPacket::new(PacketKind::VideoHeader, 0, Bytes::from_static(AVCC)),
        MediaPacket::new(PacketKind::AudioHeader, 0, Bytes::from_static(ASC)),
    ];
    let end = start_ms + secs * 1000;
    let (mut v, mut a) = (0u64, 0u64);
    loop {
        let vdts = start_ms + v * 40;
        let adts = start_ms + a * 1024 * 1000 / 48_000;
        let (v_left, a_left) = (vdts < end, adts < end);
        if !v_left && !a_left {
            return out;
        }
        if v_left && (!a_left || vdts <= adts) {
            let keyframe = v % gop == 0;
            let mut body = vec![if keyframe { 0x17 } else { 0x27 }, 1, 0, 0, 0];
            body.extend_from_slice(&vdts.to_be_bytes());
            out.push(MediaPacket::new(
                PacketKind::Video { keyframe },
                vdts,
                body.into(),
            ));
            v += 1;
        } else {
            let mut body = vec![0xaf, 1];
            body.extend_from_slice(&adts.to_be_bytes());
            out.push(MediaPacket::new(PacketKind::Audio, adts, body.into()));
            a += 1;
        }
    }
}

fn media_count(pkts: &[MediaPacket]) -> u64 {
    pkts.iter().filter(|p| !p.kind.is_header()).count() as u64
}

#[derive(Debug)]
struct Tag {
    kind: u8,
    ts: u32,
    body: Vec<u8>,
}

impl Tag {
    fn is_media(&self) -> bool {
        self.body.len() > 1 && self.body[1] == 1
    }
    fn is_keyframe(&self) -> bool {
        self.kind == 9 && self.body[0] == 0x17 && self.is_media()
    }
    /// The DTS a synthetic media body carries.
    fn dts(&self) -> u64 {
        let at = if self.kind == 9 { 5 } else { 2 };
        u64::from_be_bytes(self.body[at..at + 8].try_into().unwrap())
    }
}

/// An independent FLV reader: header, every tag and PreviousTagSize checked, nothing left.
fn read_tags(path: &Path) -> Vec<Tag> {
    let data = fs::read(path).unwrap();
    assert_eq!(
        &data[..9],
        b"FLV\x01\x05\x00\x00\x00\x09",
        "{}",
        path.display()
    );
    assert_eq!(&data[9..13], &[0, 0, 0, 0]);
    let mut pos = 13;
    let mut tags = Vec::new();
    while pos < data.len() {
        let size = u32::from_be_bytes([0, data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let ts = u32::from_be_bytes([data[pos + 7], data[pos + 4], data[pos + 5], data[pos + 6]]);
        let end = pos + 11 + size;
        let prev = u32::from_be_bytes(data[end..end + 4].try_into().unwrap()) as usize;
        assert_eq!(prev, size + 11);
        tags.push(Tag {
            kind: data[pos],
            ts,
            body: data[pos + 11..end].to_vec(),
        });
        pos = end + 4;
    }
    tags
}

/// Our complete segments in `dir`, by name.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(name::parse_name)
                .is_some_and(|(_, k)| k == name::FileKind::Segment)
        })
        .collect();
    v.sort();
    v
}

fn record(cfg: RecordConfig, pkts: &[MediaPacket]) -> RecordStats {
    let rec = Recorder::start(cfg).unwrap();
    for p in pkts {
        rec.push(p);
    }
    rec.stop().unwrap()
}

fn assert_accounted(stats: &RecordStats, pushed_media: u64) {
    assert_eq!(
        stats.packets_written + stats.packets_dropped + stats.packets_lost + stats.packets_skipped,
        pushed_media,
        "{stats:?}"
    );
}

#[test]
fn segments_start_with_headers_and_a_keyframe_at_zero_and_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // Keyframes every 1.2 s, 2 s segments: cuts at 2.4, 4.8, 7.2 s. The pipeline clock does
    // not start at 0 here, so rebasing is visible in the first segment too.
    let pkts = stream(90_000, 8, 30);
    let stats = record(config(dir.path(), 2), &pkts);
    let files = segments(dir.path());
    assert_eq!(files.len(), 4, "{files:?}");
    assert_eq!(stats.segments_written, 4);
    assert_eq!(stats.packets_written, media_count(&pkts));
    assert_accounted(&stats, media_count(&pkts));
    assert_eq!(stats.current_segment, None);
    assert_eq!(
        stats.bytes_written,
        files
            .iter()
            .map(|f| fs::metadata(f).unwrap().len())
            .sum::<u64>()
    );

    let mut first_keyframes = Vec::new();
    for f in &files {
        let tags = read_tags(f);
        assert_eq!((tags[0].kind, tags[0].ts, &tags[0].body[..]), (18, 0, META));
        assert_eq!((tags[1].kind, tags[1].ts, &tags[1].body[..]), (9, 0, AVCC));
        assert_eq!((tags[2].kind, tags[2].ts, &tags[2].body[..]), (8, 0, ASC));
        assert!(tags[3].is_keyframe() && tags[3].ts == 0, "{}", f.display());
        let base = tags[3].dts();
        first_keyframes.push(base - 90_000);
        for t in &tags[3..] {
            assert!(t.is_media());
            assert_eq!(u64::from(t.ts), t.dts() - base, "rebased exactly");
        }
    }
    assert_eq!(first_keyframes, [0, 2400, 4800, 7200]);
    // Names: polypush-<UTC>-NNNN.flv with consecutive sequence numbers.
    let seqs: Vec<u32> = files
        .iter()
        .map(|f| {
            name::parse_name(f.file_name().unwrap().to_str().unwrap())
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(seqs, [0, 1, 2, 3]);
    assert!(!fs::read_dir(dir.path()).unwrap().any(|e| e
        .unwrap()
        .path()
        .to_string_lossy()
        .ends_with(".part")));
}

#[test]
fn a_full_queue_drops_and_counts_and_push_never_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RecordConfig {
        queue_bytes: 1000,
        queue_packets: 10,
        ..config(dir.path(), 60)
    };
    let rec = Recorder::start(cfg).unwrap();
    rec.pause_writer(true);
    let pkts = stream(0, 4, 25);
    // With the writer hung, every push must still return: if one blocked, this test would
    // hang here rather than fail.
    for p in &pkts {
        rec.push(p);
    }
    let s = rec.stats();
    assert_eq!(s.queued_packets, 3 + 10, "headers are not bounded: {s:?}");
    assert_eq!(s.packets_dropped, media_count(&pkts) - 10);
    assert_eq!(s.packets_written, 0);
    rec.pause_writer(false);
    let stats = rec.stop().unwrap();
    assert_accounted(&stats, media_count(&pkts));
    assert!(stats.packets_written > 0);
}

#[test]
fn quota_deletes_the_oldest_segments_first_and_never_the_open_one() {
    let dir = tempfile::tempdir().unwrap();
    // Segments of an earlier run: seq 0..=4, 10 kB each. The clock was wrong for seq 3, so its
    // name sorts first; the sequence number still says it is newer than 0..=2.
    let old = [
        "polypush-20240301T080000Z-0000.flv",
        "polypush-20240301T081000Z-0001.flv",
        "polypush-20240301T082000Z-0002.flv",
        "polypush-19700101T000010Z-0003.flv",
        "polypush-20240301T084000Z-0004.flv",
    ];
    for n in old {
        fs::write(dir.path().join(n), vec![0u8; 10_000]).unwrap();
    }
    fs::write(dir.path().join("notes.txt"), vec![0u8; 100_000]).unwrap();
    let cfg = RecordConfig {
        max_total_bytes: 36_000,
        ..config(dir.path(), 1)
    };
    let pkts = stream(0, 2, 25);
    let stats = record(cfg, &pkts);

    let left: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    // At start 50 kB > 36 kB: 0 and 1 go. Each new segment is ~2 kB; after the run the total
    // is 30 kB + ~4 kB, so 2..=4 survive.
    for (i, n) in old.iter().enumerate() {
        assert_eq!(left.contains(&n.to_string()), i >= 2, "{n}: {left:?}");
    }
    assert!(
        left.contains(&"notes.txt".to_string()),
        "foreign files are never touched"
    );
    assert_eq!(stats.segments_deleted, 2);
    // New segments continue the sequence.
    let new: Vec<u32> = segments(dir.path())
        .iter()
        .filter_map(|p| name::parse_name(p.file_name()?.to_str()?))
        .map(|(seq, _)| seq)
        .filter(|&s| s >= 5)
        .collect();
    assert_eq!(new, [5, 6]);
    assert_eq!(stats.segments_written, 2);
}

#[test]
fn quota_on_a_small_budget_keeps_only_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let pkts = stream(0, 10, 25);
    let seg_bytes = {
        let probe = tempfile::tempdir().unwrap();
        record(config(probe.path(), 1), &stream(0, 1, 25));
        fs::metadata(&segments(probe.path())[0]).unwrap().len()
    };
    let cfg = RecordConfig {
        max_total_bytes: seg_bytes * 3 + seg_bytes / 2,
        ..config(dir.path(), 1)
    };
    let stats = record(cfg, &pkts);
    let left = segments(dir.path());
    let seqs: Vec<u32> = left
        .iter()
        .map(|p| {
            name::parse_name(p.file_name().unwrap().to_str().unwrap())
                .unwrap()
                .0
        })
        .collect();
    assert_eq!(seqs, [7, 8, 9]);
    assert_eq!(stats.segments_written, 10);
    assert_eq!(stats.segments_deleted, 7);
}

#[test]
fn part_files_left_by_a_crash_are_completed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = FlvFileWriter::new(Vec::new());
    w.header(true, true).unwrap();
    w.tag(18, 0, META).unwrap();
    w.tag(9, 0, AVCC).unwrap();
    w.tag(9, 0, &[0x17, 1, 0, 0, 0, 0xaa, 0xbb]).unwrap();
    let complete = w.get_ref().len();
    w.tag(9, 40, &[0x27, 1, 0, 0, 0, 0xcc, 0xdd, 0xee]).unwrap();
    let mut torn = w.into_inner();
    torn.truncate(torn.len() - 6); // the crash hit mid-tag
    let crashed = "polypush-20240301T080000Z-0041";
    fs::write(dir.path().join(format!("{crashed}.flv.part")), &torn).unwrap();
    // A crash right after opening: header only, nothing to keep.
    let empty = "polypush-20240301T081000Z-0042";
    fs::write(dir.path().join(format!("{empty}.flv.part")), &torn[..13]).unwrap();

    let pkts = stream(0, 1, 25);
    let stats = record(config(dir.path(), 60), &pkts);
    assert_eq!(stats.segments_recovered, 1);
    let recovered = dir.path().join(format!("{crashed}.flv"));
    assert_eq!(fs::read(&recovered).unwrap(), torn[..complete]);
    assert_eq!(read_tags(&recovered).len(), 3);
    let names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.ends_with(".part")), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with(empty)), "{names:?}");
    // The new segment continues after the highest sequence seen, including the removed part.
    assert!(names.iter().any(|n| n.ends_with("-0043.flv")), "{names:?}");
}

#[test]
fn a_write_error_keeps_what_was_written_and_recording_resumes_after_the_retry_delay() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(config(dir.path(), 60)).unwrap();
    // The 100th media packet (~2.1 s in) hits a full disk.
    rec.inner.shared.fail_write_at.store(100, Ordering::Relaxed);
    let pkts = stream(0, 12, 25);
    for p in &pkts {
        rec.push(p);
    }
    let stats = rec.stop().unwrap();
    assert_eq!(stats.errors, 1);
    assert_accounted(&stats, media_count(&pkts));
    assert!(stats.packets_lost > 5_000 / 40, "{stats:?}");

    let files = segments(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let before = read_tags(&files[0]);
    let written_before = before.iter().filter(|t| t.is_media()).count();
    assert_eq!(written_before, 100, "everything before the failure is kept");
    let after = read_tags(&files[1]);
    assert!(after[3].is_keyframe() && after[3].ts == 0);
    let resumed = after[3].dts();
    let failed_at = before.last().unwrap().dts();
    assert!(
        resumed >= failed_at + segmenter::RETRY_AFTER_MS
            && resumed <= failed_at + segmenter::RETRY_AFTER_MS + 1100,
        "failed at {failed_at}, resumed at {resumed}"
    );
    assert_eq!(stats.segments_written, 2);
}

#[test]
fn without_the_free_space_reserve_nothing_is_recorded_and_old_segments_go() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("polypush-20240301T080000Z-0000.flv");
    fs::write(&old, b"old").unwrap();
    let cfg = RecordConfig {
        min_free_bytes: u64::MAX,
        ..config(dir.path(), 1)
    };
    let pkts = stream(0, 12, 25);
    let stats = record(cfg, &pkts);
    assert!(!old.exists());
    assert_eq!(stats.segments_deleted, 1);
    assert_eq!(stats.packets_written, 0);
    assert!(segments(dir.path()).is_empty());
    // The first keyframe and then one retry every RETRY_AFTER_MS of media.
    assert_eq!(stats.errors, 3, "{stats:?}");
    assert_accounted(&stats, media_count(&pkts));
}

#[test]
fn an_unusable_directory_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    fs::write(&file, b"").unwrap();
    let err = Recorder::start(config(&file.join("recordings"), 60)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(&*file.join("recordings").to_string_lossy()),
        "{msg}"
    );
    assert!(msg.contains("StateDirectory="), "{msg}");

    let err = Recorder::start(config(dir.path(), 0)).unwrap_err();
    assert!(matches!(err, RecordError::InvalidConfig(_)), "{err}");
}

#[test]
fn a_missing_directory_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let rec_dir = dir.path().join("state/recordings");
    let pkts = stream(0, 2, 25);
    let stats = record(config(&rec_dir, 60), &pkts);
    assert_eq!(stats.segments_written, 1);
    assert_eq!(segments(&rec_dir).len(), 1);
}

#[test]
fn dropping_every_handle_finishes_the_recording() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(config(dir.path(), 60)).unwrap();
    let clone = rec.clone();
    for p in stream(0, 2, 25) {
        clone.push(&p);
    }
    let thread = rec.inner.thread.lock().unwrap().take().unwrap();
    drop(rec);
    drop(clone);
    thread.join().unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
}

#[test]
fn stats_show_the_open_segment() {
    let dir = tempfile::tempdir().unwrap();
    let rec = Recorder::start(config(dir.path(), 60)).unwrap();
    for p in stream(0, 3, 25) {
        rec.push(&p);
    }
    // Wait for the writer by stopping a clone's view: poll the stats until it catches up.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let current = loop {
        let s = rec.stats();
        if let Some(c) = s.current_segment.filter(|c| c.duration_ms >= 2_900) {
            break c;
        }
        assert!(std::time::Instant::now() < deadline, "{s:?}");
        std::thread::yield_now();
    };
    assert_eq!(current.seq, 0);
    assert!(current.bytes > 13);
    rec.stop().unwrap();
}
