//! Unit tests of the selftest: the report, the recording probe, the encoder pattern.

use std::fs;

use super::media::{encode_frames, ENCODE_FRAMES};
use super::record::probe_write;
use super::*;
use crate::encode::{AudioSettings, VideoSettings};

fn report(checks: Vec<Check>) -> Report {
    Report {
        config_path: PathBuf::from("/etc/polypush/polypush.toml"),
        checks,
        polyv: None,
    }
}

#[test]
fn the_first_failure_decides_the_exit_code() {
    let r = report(vec![
        Check::pass("config", "valid"),
        Check::fail("video", ExitCode::Media, "missing", "polypush devices"),
        Check::not_needed("audio", "none"),
        Check::fail("login", ExitCode::Refused, "password", "fix it"),
        Check::needs("ingest", "login"),
    ]);
    assert!(!r.ok());
    assert_eq!(r.exit_code(), ExitCode::Media);
    let text = r.render();
    assert!(text.contains("✓ config"), "{text}");
    assert!(text.contains("✗ video"), "{text}");
    assert!(text.contains("– audio"), "{text}");
    assert!(text.contains("– ingest  skipped: needs login"), "{text}");
    assert!(text.contains("→ fix: polypush devices"), "{text}");
    assert!(text.contains("exit code 5"), "{text}");
    let j = r.to_json();
    assert_eq!(j["ok"], false);
    assert_eq!(j["checks"][4]["skipped"], true);
    assert_eq!(j["checks"][4]["ok"], false);
    assert_eq!(j["checks"][0]["fix"], Value::Null);
}

#[test]
fn not_needed_checks_pass() {
    let r = report(vec![
        Check::pass("config", "valid"),
        Check::not_needed("record", "off"),
    ]);
    assert!(r.ok());
    assert_eq!(r.exit_code(), ExitCode::Ok);
    assert!(r
        .render()
        .contains("all checks passed (1 passed, 1 not needed)"));
}

#[test]
fn probe_file_is_written_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    probe_write(dir.path()).unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    assert!(crate::record::free_bytes(dir.path()).unwrap() > 0);
}

#[test]
fn the_pattern_encodes() {
    let e = encode_frames(
        VideoSettings {
            width: 320,
            height: 240,
            fps: 25,
            bitrate_kbps: 500,
            threads: 1,
            ..VideoSettings::default()
        },
        Some(AudioSettings::default()),
    )
    .unwrap();
    assert!(e.packets >= u64::from(ENCODE_FRAMES), "{}", e.packets);
    assert!(e.first_is_keyframe && e.audio_opened);
}
