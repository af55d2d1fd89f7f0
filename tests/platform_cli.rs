//! The real `polypush` binary against the real `polyv-sim` over loopback HTTP: every admin
//! command, its success and each documented error, exit codes and messages.

mod common;

use common::*;

fn error_line(r: &Run) -> String {
    r.stderr
        .lines()
        .rfind(|l| l.starts_with("polypush: error:"))
        .unwrap_or_else(|| panic!("no error line in stderr:\n{}", r.stderr))
        .to_string()
}

fn setup(extra: &str) -> (Sim, tempfile::TempDir, std::path::PathBuf) {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &sim.base, extra);
    (sim, dir, cfg)
}

#[test]
fn login_prints_masked_push_address() {
    let (sim, _d, cfg) = setup("");
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .contains("push address: rtmp://127.0.0.1:1935/live/"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("***"), "{}", r.stdout);

    let r = polypush(&cfg, &["--json", "login", "--reveal"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let url = v["push_url"].as_str().unwrap();
    assert!(
        url.starts_with("rtmp://127.0.0.1:1935/live/") && !url.contains("***"),
        "{url}"
    );
    assert_eq!(v["channel_id"], CHANNEL);
    assert_eq!(sim.requests().len(), 2);
}

#[test]
fn login_protected_address_uses_bak_url_and_suffix() {
    let (sim, _d, cfg) = setup("");
    sim.faults(r#"{"protected":true}"#);
    let v = polypush(&cfg, &["--json", "login", "--reveal"]).json();
    assert_eq!(v["url_protected"], true);
    assert!(
        v["push_url"].as_str().unwrap().contains("?auth_key="),
        "{v}"
    );
}

#[test]
fn login_wrong_password_is_rejected_with_exit_3() {
    let (_sim, dir, _) = setup("");
    let sim2 = Sim::start();
    let cfg = write_config(dir.path(), &sim2.base, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(PASSWORD, "wrong-pw");
    std::fs::write(&cfg, text).unwrap();
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let line = error_line(&r);
    assert!(
        line.contains("rejected the credentials of channel 153884"),
        "{line}"
    );
    assert!(line.contains("channel id or password error"), "{line}");
    assert!(line.contains("password_file"), "{line}");
    // Never retried.
    assert_eq!(sim2.requests().len(), 1);
}

#[test]
fn stale_timestamp_shows_clock_skew() {
    let (sim, _d, cfg) = setup("");
    // The simulator's clock runs 10 minutes ahead: this box looks 600 s behind.
    sim.faults(r#"{"clock_offset_ms":600000}"#);
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    let line = error_line(&r);
    assert!(
        line.contains("rejected the timestamp of teacher_login"),
        "{line}"
    );
    assert!(line.contains("s behind Polyv's"), "{line}");
    let secs: f64 = line
        .split("clock is ")
        .nth(1)
        .and_then(|s| s.split(" s ").next())
        .and_then(|s| s.parse().ok())
        .expect("skew in message");
    assert!((595.0..=605.0).contains(&secs), "{line}");
    assert!(line.contains("timedatectl set-ntp true"), "{line}");
    assert_eq!(sim.requests().len(), 1, "a stale timestamp is not retried");
}

#[test]
fn viewers_reads_the_chat_room() {
    let (sim, _d, cfg) = setup("");
    sim.set_channel(CHANNEL, r#"{"viewers":7}"#);
    let r = polypush(&cfg, &["viewers"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout.contains("7 viewer(s) online in channel 153884"),
        "{}",
        r.stdout
    );
    assert_eq!(polypush(&cfg, &["--json", "viewers"]).json()["viewers"], 7);
}

#[test]
fn channel_create_then_log_in_to_it() {
    let (sim, dir, cfg) = setup("");
    let r = polypush(
        &cfg,
        &[
            "--json",
            "channel",
            "create",
            "--name",
            "高一(3)班 物理",
            "--scene",
            "alone",
            "--object",
            "out",
            "--reveal",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    let id = v["channel_id"].as_str().unwrap().to_string();
    let pw = v["password"].as_str().unwrap().to_string();
    assert!(!pw.contains('*'), "{v}");
    assert_eq!(sim.channel(&id)["name"], "高一(3)班 物理");

    // The new channel's password works for teacher_login.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(CHANNEL, &id)
        .replace(PASSWORD, &pw);
    let cfg2 = dir.path().join("new.toml");
    std::fs::write(&cfg2, text).unwrap();
    assert_eq!(polypush(&cfg2, &["login"]).code, 0);

    // Masked by default.
    let r = polypush(
        &cfg,
        &["channel", "create", "--name", "x", "--scene", "ppt"],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("password:  ***"), "{}", r.stdout);
}

#[test]
fn channel_create_errors() {
    let (_sim, _d, cfg) = setup("");
    let long = "x".repeat(61);
    let r = polypush(
        &cfg,
        &["channel", "create", "--name", &long, "--scene", "alone"],
    );
    assert_eq!(r.code, 3);
    assert!(
        error_line(&r).contains("channel name is over length."),
        "{}",
        r.stderr
    );

    let r = polypush(
        &cfg,
        &["channel", "create", "--name", "", "--scene", "alone"],
    );
    assert_eq!(r.code, 3);
    assert!(
        error_line(&r).contains("channel name is required."),
        "{}",
        r.stderr
    );

    // A scene clap does not know is a usage error (exit 2), caught before any request.
    let r = polypush(
        &cfg,
        &["channel", "create", "--name", "a", "--scene", "theatre"],
    );
    assert_eq!(r.code, 2);
}

#[test]
fn wrong_app_secret_is_a_rejected_signature() {
    let (sim, dir, _) = setup("");
    let cfg = write_config(dir.path(), &sim.base, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(APP_SECRET, "not-the-secret");
    std::fs::write(&cfg, text).unwrap();
    let r = polypush(&cfg, &["channel", "push-url"]);
    assert_eq!(r.code, 3);
    let line = error_line(&r);
    assert!(
        line.contains("rejected the signature") && line.contains("invalid signature."),
        "{line}"
    );
    assert!(line.contains("app_secret"), "{line}");
    assert_eq!(
        sim.requests().len(),
        1,
        "a rejected signature is never retried"
    );
}

#[test]
fn unknown_app_id_is_reported() {
    let (sim, dir, _) = setup("");
    let cfg = write_config(dir.path(), &sim.base, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(APP_ID, "nosuchapp");
    std::fs::write(&cfg, text).unwrap();
    let r = polypush(&cfg, &["channel", "status"]);
    assert_eq!(r.code, 3);
    assert!(
        error_line(&r).contains("application not found."),
        "{}",
        r.stderr
    );
}

#[test]
fn admin_commands_without_app_credentials_are_config_errors() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!("[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\n[polyv.endpoints]\napi = \"{}\"\n", sim.base),
    )
    .unwrap();
    let r = polypush(&cfg, &["channel", "push-url"]);
    assert_eq!(r.code, 2);
    assert!(error_line(&r).contains("app_secret_file"), "{}", r.stderr);
    assert!(sim.requests().is_empty());
}

#[test]
fn channel_rename() {
    let (sim, _d, cfg) = setup("");
    let r = polypush(&cfg, &["channel", "rename", "小程序推流测试test"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sim.channel(CHANNEL)["name"], "小程序推流测试test");

    let r = polypush(&cfg, &["channel", "rename", &"名".repeat(61)]);
    assert_eq!(r.code, 3);
    assert!(
        error_line(&r).contains("channel name is over length."),
        "{}",
        r.stderr
    );
}

#[test]
fn channel_update_changes_password_and_validates() {
    let (sim, dir, cfg) = setup("");
    let r = polypush(
        &cfg,
        &[
            "channel",
            "update",
            "--name",
            "Physics",
            "--publisher",
            "Ms Li",
            "--max-viewers",
            "40",
            "--password",
            "newpw123",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let c = sim.channel(CHANNEL);
    assert_eq!(c["name"], "Physics");
    assert_eq!(c["publisher"], "Ms Li");
    assert_eq!(c["maxViewer"], 40);
    // The old password no longer logs in; the new one does.
    assert_eq!(polypush(&cfg, &["login"]).code, 3);
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace(PASSWORD, "newpw123");
    std::fs::write(&cfg, text).unwrap();
    assert_eq!(polypush(&cfg, &["login"]).code, 0);

    let r = polypush(
        &cfg,
        &["channel", "update", "--password", "12345678901234567"],
    );
    assert_eq!(r.code, 3);
    assert!(
        error_line(&r).contains("param validate error"),
        "{}",
        r.stderr
    );

    let r = polypush(
        &cfg,
        &["channel", "update", "--channel", "999", "--name", "x"],
    );
    assert_eq!(r.code, 3);

    let auth = dir.path().join("auth.json");
    std::fs::write(&auth, r#"[{"rank":1,"enabled":"Y","authType":"external","externalKey":"L0EjokKI4O","externalUri":"http://demo.polyv.net/v.php"}]"#).unwrap();
    let r = polypush(
        &cfg,
        &["channel", "update", "--auth-json", auth.to_str().unwrap()],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);

    std::fs::write(&auth, "{not json").unwrap();
    let r = polypush(
        &cfg,
        &["channel", "update", "--auth-json", auth.to_str().unwrap()],
    );
    assert_eq!(r.code, 2);
    assert!(error_line(&r).contains("not valid JSON"), "{}", r.stderr);

    let r = polypush(&cfg, &["channel", "update"]);
    assert_eq!(r.code, 2);
    assert!(error_line(&r).contains("nothing to update"), "{}", r.stderr);
}

#[test]
fn channel_create_mr() {
    let (sim, _d, cfg) = setup("");
    let r = polypush(
        &cfg,
        &[
            "--json",
            "channel",
            "create-mr",
            "--name",
            "MR直播测试频道",
            "--channel-password",
            "abc12345",
        ],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v = r.json();
    assert_eq!(v["name"], "MR直播测试频道");
    assert_eq!(v["channel_password"], "***");
    let id = v["channel_id"].as_str().unwrap().to_string();
    assert_eq!(sim.channel(&id)["name"], "MR直播测试频道");

    let r = polypush(
        &cfg,
        &[
            "channel",
            "create-mr",
            "--name",
            "x",
            "--channel-password",
            "short",
        ],
    );
    assert_eq!(r.code, 3);
    assert!(error_line(&r).contains("channelPasswd"), "{}", r.stderr);
}

#[test]
fn channel_push_url_and_status() {
    let (sim, _d, cfg) = setup("");
    let r = polypush(&cfg, &["--json", "channel", "push-url", "--reveal"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let url = r.json()["push_url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with("rtmp://127.0.0.1:1935/live/") && url.len() > 30,
        "{url}"
    );
    let masked = polypush(&cfg, &["channel", "push-url"]);
    assert!(
        masked.stdout.contains("***") && !masked.stdout.contains(&url),
        "{}",
        masked.stdout
    );

    sim.set_channel(CHANNEL, r#"{"liveStatus":"live"}"#);
    let r = polypush(&cfg, &["--json", "channel", "status", CHANNEL, "424242"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let list = r.json()["channels"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["liveStatus"], "live");
    let r = polypush(&cfg, &["channel", "status", "abc"]);
    assert_eq!(r.code, 2);
}

#[test]
fn server_errors_are_retried_then_reported() {
    let (sim, _d, cfg) = setup("");
    // One 500, then success: retried once.
    sim.faults(r#"{"error500":1}"#);
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sim.requests().len(), 2);

    // Always 500: three attempts, exit 4.
    sim.reset_requests();
    sim.faults(r#"{"error500_always":true}"#);
    let r = polypush(&cfg, &["channel", "status"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let line = error_line(&r);
    assert!(
        line.contains("server error") && line.contains("after 3 attempt(s)"),
        "{line}"
    );
    assert_eq!(sim.requests().len(), 3);
}

#[test]
fn rate_limit_is_not_retried() {
    let (sim, _d, cfg) = setup("");
    sim.faults(r#"{"rate_limit":true}"#);
    let r = polypush(&cfg, &["channel", "push-url"]);
    assert_eq!(r.code, 3);
    let line = error_line(&r);
    assert!(
        line.contains("qps exceeds") && line.contains("wait at least 5 minutes"),
        "{line}"
    );
    assert_eq!(sim.requests().len(), 1);
}

#[test]
fn garbage_reply_shows_first_bytes() {
    let (sim, _d, cfg) = setup("");
    sim.faults(r#"{"garbage":true}"#);
    let r = polypush(&cfg, &["viewers"]);
    assert_eq!(r.code, 4);
    let line = error_line(&r);
    assert!(
        line.contains("could not be understood") && line.contains("<html>"),
        "{line}"
    );
}

#[test]
fn slow_platform_times_out_as_network_error() {
    let (sim, dir, _) = setup("");
    let cfg = write_config(dir.path(), &sim.base, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("timeout_s = 5", "timeout_s = 1");
    std::fs::write(&cfg, text).unwrap();
    sim.faults(r#"{"latency_ms":3000}"#);
    let r = polypush(&cfg, &["viewers"]);
    assert_eq!(r.code, 4);
    let line = error_line(&r);
    assert!(
        line.contains("timed out") && line.contains("after 3 attempt(s)"),
        "{line}"
    );
}

#[test]
fn unreachable_platform_is_exit_4() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), "");
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 4);
    let line = error_line(&r);
    assert!(
        line.contains("cannot reach Polyv at 127.0.0.1") && line.contains("check the network"),
        "{line}"
    );
}

/// Every command at debug level: no channel password, its md5 or the appSecret anywhere.
#[test]
fn no_secret_in_any_output() {
    let (sim, dir, cfg) = setup("");
    let auth = dir.path().join("auth.json");
    std::fs::write(&auth, "[]").unwrap();
    let md5 = polypush::platform::sign::login_passwd(PASSWORD);
    let runs: Vec<Vec<&str>> = vec![
        vec!["check"],
        vec!["--json", "check"],
        vec!["login"],
        vec!["--json", "login"],
        vec!["viewers"],
        vec!["channel", "create", "--name", "n", "--scene", "alone"],
        vec!["channel", "rename", "n2"],
        vec![
            "channel",
            "update",
            "--name",
            "n3",
            "--auth-json",
            auth.to_str().unwrap(),
        ],
        vec!["channel", "create-mr", "--name", "m"],
        vec!["channel", "push-url"],
        vec!["channel", "status"],
    ];
    for args in &runs {
        let r = polypush(&cfg, args);
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("DEBUG"),
            "{args:?} ran without debug logs"
        );
        for secret in [PASSWORD, md5.as_str(), APP_SECRET] {
            assert!(
                !r.stdout.contains(secret) && !r.stderr.contains(secret),
                "{args:?} printed a secret"
            );
        }
    }
    // And the failing paths.
    sim.faults(r#"{"error500_always":true}"#);
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 4);
    for secret in [PASSWORD, md5.as_str(), APP_SECRET] {
        assert!(!r.stdout.contains(secret) && !r.stderr.contains(secret));
    }
}

#[test]
fn help_man_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("none.toml");
    let r = polypush(&cfg, &["--help"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains("channel") && r.stdout.contains("Exit codes"),
        "{}",
        r.stdout
    );
    let r = polypush(&cfg, &["man"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.contains(".TH polypush"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    let r = polypush(&cfg, &["completions", "bash"]);
    assert_eq!(r.code, 0);
    assert!(r.stdout.contains("_polypush"));
}
