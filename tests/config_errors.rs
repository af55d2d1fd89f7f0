//! Bad configuration gives one clear line with line and column, and exit code 2.

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;

fn check(text: &str) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("polypush.toml");
    std::fs::write(&cfg, text).unwrap();
    (polypush(&cfg, &["check"]), dir)
}

fn one_error_line(r: &Run) -> String {
    assert_eq!(r.code, 2, "stdout: {} stderr: {}", r.stdout, r.stderr);
    let lines: Vec<&str> = r
        .stderr
        .lines()
        .filter(|l| l.starts_with("polypush: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
    lines[0].to_string()
}

#[test]
fn unknown_key() {
    let (r, _d) = check("[polyv]\nchannel_id = \"1\"\npassword = \"p\"\nchanel = 2\n");
    let l = one_error_line(&r);
    assert!(
        l.contains("polypush.toml:4:1: unknown field `chanel`"),
        "{l}"
    );
    assert!(l.contains("packaging/polypush.toml"), "{l}");
}

#[test]
fn wrong_type() {
    let (r, _d) = check("[polyv]\nchannel_id = \"1\"\npassword = \"p\"\ntimeout_s = \"soon\"\n");
    let l = one_error_line(&r);
    assert!(l.contains("polypush.toml:4:13: invalid type"), "{l}");
}

#[test]
fn snapshot_width_out_of_range_or_odd() {
    for w in ["100", "641", "4096"] {
        let (r, _d) = check(&format!(
            "[polyv]\nchannel_id = \"1\"\npassword = \"p\"\n[status]\nsnapshot_width = {w}\n"
        ));
        let l = one_error_line(&r);
        assert!(
            l.contains(&format!(
                "polypush.toml:5:1: status.snapshot_width: {w} is not allowed: use an even number of pixels from 160 to 1920"
            )),
            "{l}"
        );
    }
}

#[test]
fn missing_channel_id() {
    let (r, _d) = check("[polyv]\npassword = \"p\"\n");
    let l = one_error_line(&r);
    assert!(
        l.contains("polyv.channel_id: missing: set channel_id under [polyv]"),
        "{l}"
    );
}

#[test]
fn unreadable_password_file() {
    let (r, _d) = check("[polyv]\nchannel_id = \"1\"\npassword_file = \"/nonexistent/pw\"\n");
    let l = one_error_line(&r);
    assert!(
        l.contains("polypush.toml:3:1: polyv.password_file: cannot read /nonexistent/pw"),
        "{l}"
    );
}

#[test]
fn world_readable_secret_file() {
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "461666\n").unwrap();
    std::fs::set_permissions(&pw, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (r, _d) = check(&format!(
        "[polyv]\nchannel_id = \"1\"\napp_id = \"a\"\napp_secret_file = {pw:?}\n"
    ));
    let l = one_error_line(&r);
    assert!(
        l.contains("polypush.toml:4:1: polyv.app_secret_file:"),
        "{l}"
    );
    assert!(
        l.contains("readable by every user") && l.contains("chmod 600"),
        "{l}"
    );
    assert!(!r.stderr.contains("461666"));
}

#[test]
fn missing_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let r = polypush(&dir.path().join("nope.toml"), &["check"]);
    let l = one_error_line(&r);
    assert!(
        l.contains("cannot read the config file") && l.contains("--config"),
        "{l}"
    );
}

#[test]
fn systemd_credentials_directory_supplies_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("creds");
    std::fs::create_dir(&creds).unwrap();
    std::fs::write(creds.join("polyv-password"), "461666").unwrap();
    std::fs::write(creds.join("secret2"), "s3cr3t").unwrap();
    let cfg = dir.path().join("polypush.toml");
    std::fs::write(
        &cfg,
        "[polyv]\nchannel_id = \"1\"\napp_id = \"a\"\napp_secret_file = \"secret2\"\n",
    )
    .unwrap();
    let r = polypush_env(
        &cfg,
        &["--json", "check"],
        &[("CREDENTIALS_DIRECTORY", creds.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["config"]["polyv"]["password"], "***");
    assert_eq!(v["config"]["polyv"]["app_secret"], "***");
    assert!(!r.stdout.contains("461666") && !r.stdout.contains("s3cr3t"));
}
