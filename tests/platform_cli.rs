//! The real `polypush` binary against the real `polyv-sim` over loopback HTTP: every admin
//! command, its success and each documented error, exit codes and messages; the login
//! fallback; and Polyv's real host names over TLS (the `resolve` overrides pointing at a TLS
//! front for the simulator, a test CA trusted through `SSL_CERT_FILE`, for the API and for
//! RTMPS alike).

mod common;

use common::nginx::Nginx;
use common::*;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

fn error_line(r: &Run) -> String {
    r.stderr
        .lines()
        .rfind(|l| l.starts_with("polypush: error:"))
        .unwrap_or_else(|| panic!("no error line in stderr:\n{}", r.stderr))
        .to_string()
}

/// Edits a written config in place.
fn replace_in(cfg: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(cfg).unwrap().replace(from, to);
    std::fs::write(cfg, text).unwrap();
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
    replace_in(&cfg, PASSWORD, "wrong-pw");
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

fn paths(sim: &Sim) -> Vec<String> {
    sim.requests()
        .iter()
        .map(|r| r["path"].as_str().unwrap().to_string())
        .collect()
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
    // With app_id and app_secret the signed count of Polyv's current CLI answers.
    assert_eq!(paths(&sim), ["/live/v3/channel/chat/count-online-user"]);
    assert_eq!(polypush(&cfg, &["--json", "viewers"]).json()["viewers"], 7);
    // When it fails (here: api.polyv.net answers 404), the chat room's listUsers answers,
    // after one try.
    sim.faults(r#"{"not_found_hosts": ["api.polyv.net"]}"#);
    sim.reset_requests();
    assert_eq!(polypush(&cfg, &["--json", "viewers"]).json()["viewers"], 7);
    assert_eq!(
        paths(&sim),
        [
            "/live/v3/channel/chat/count-online-user",
            "/front/listUsers"
        ]
    );
}

#[test]
fn viewers_without_app_credentials_ask_only_the_chat_room() {
    let sim = Sim::start();
    sim.set_channel(CHANNEL, r#"{"viewers":3}"#);
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "[polyv]\nchannel_id = \"{CHANNEL}\"\n[polyv.endpoints]\nchat = \"{}\"\napi = \"http://127.0.0.1:9\"\n",
            sim.base
        ),
    )
    .unwrap();
    let r = polypush(&cfg, &["--json", "viewers"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["viewers"], 3);
    assert_eq!(paths(&sim), ["/front/listUsers"]);
}

/// A config whose login goes to `login` with `fallback` as login_fallback, the rest to `sim`.
fn fallback_config(dir: &Path, sim: &Sim, login: &str, fallback: &str) -> PathBuf {
    let cfg = dir.join("fallback.toml");
    let b = &sim.base;
    std::fs::write(
        &cfg,
        format!(
            "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\ntimeout_s = 5\n\
             [polyv.endpoints]\nlogin = \"{login}\"\nlogin_fallback = \"{fallback}\"\n\
             channel = \"{b}\"\nchat = \"{b}\"\napi = \"{b}\"\n"
        ),
    )
    .unwrap();
    cfg
}

#[test]
fn login_falls_back_when_the_default_host_answers_404() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let cfg = fallback_config(dir.path(), &sim, &format!("{}/gone", sim.base), &sim.base);
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        paths(&sim),
        [
            "/gone/api/v2/teacher_login.json",
            "/api/v2/teacher_login.json"
        ],
        "a 404 is not retried: straight to the fallback"
    );
    assert!(
        r.stderr.contains("the login fallback did")
            && r.stderr.contains(&format!(
                "answered_by={}/api/v2/teacher_login.json",
                sim.base
            )),
        "{}",
        r.stderr
    );
}

#[test]
fn login_fallback_answers_count_and_both_down_names_both_hosts() {
    let sim = Sim::start();
    let dir = tempfile::tempdir().unwrap();
    let down = format!("http://127.0.0.1:{}", closed_port());
    // The fallback's refusal is the answer: a wrong password, exit 3, never retried.
    let cfg = fallback_config(dir.path(), &sim, &down, &sim.base);
    replace_in(&cfg, PASSWORD, "wrong-pw");
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        error_line(&r).contains("rejected the credentials of channel 153884"),
        "{}",
        r.stderr
    );
    assert_eq!(paths(&sim), ["/api/v2/teacher_login.json"]);

    // Neither answers: the default host's error, naming the fallback too.
    let down2 = format!("http://localhost:{}", closed_port());
    let cfg = fallback_config(dir.path(), &sim, &down, &down2);
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let line = error_line(&r);
    assert!(
        line.contains("cannot reach Polyv at 127.0.0.1 (and the fallback localhost)"),
        "{line}"
    );
}

/// A loopback port nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
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
    replace_in(&cfg, APP_SECRET, "not-the-secret");
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
    replace_in(&cfg, APP_ID, "nosuchapp");
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
    replace_in(&cfg, PASSWORD, "newpw123");
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
    replace_in(&cfg, "timeout_s = 5", "timeout_s = 1");
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
    let port = closed_port();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &format!("http://127.0.0.1:{port}"), "");
    let r = polypush(&cfg, &["login"]);
    assert_eq!(r.code, 4);
    let line = error_line(&r);
    assert!(
        line.contains("cannot reach Polyv at 127.0.0.1") && line.contains("check the network"),
        "{line}"
    );
    // A login host of one's own has no automatic fallback (to Polyv's real host).
    assert!(!r.stderr.contains("live.polyv.net"), "{}", r.stderr);
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

// ---------------------------------------------------------------------------------------------
// Polyv's real host names over TLS

/// A throwaway CA and a server certificate for Polyv's hosts and `localhost`, made with the
/// openssl command-line tool the way an admin makes one for a lab.
struct TestCa {
    dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("leaf.cnf"),
            "subjectAltName=DNS:api.polyv.net,DNS:live.polyv.net,DNS:apichat.polyv.net,DNS:localhost\n\
             basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        let steps: [Vec<&str>; 3] = [
            [
                &["req", "-x509"][..],
                &ec,
                &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2"],
                &["-subj", "/CN=polypush test CA"],
                &["-addext", "basicConstraints=critical,CA:TRUE"],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
            [
                &["req"][..],
                &ec,
                &[
                    "-keyout",
                    "leaf.key",
                    "-out",
                    "leaf.csr",
                    "-subj",
                    "/CN=api.polyv.net",
                ],
            ]
            .concat(),
            vec![
                "x509",
                "-req",
                "-in",
                "leaf.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "leaf.pem",
                "-days",
                "2",
                "-extfile",
                "leaf.cnf",
            ],
        ];
        for args in steps {
            let out = Command::new("openssl")
                .args(&args)
                .current_dir(d)
                .stdin(Stdio::null())
                .output()
                .expect("run openssl (install the openssl package)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        TestCa { dir }
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }
}

/// A TLS front on loopback with the test certificate, piping the plaintext to `target` (the
/// simulator's HTTP port, nginx's RTMP port). Its runtime, and so every connection, ends when
/// it is dropped.
struct TlsFront {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

impl TlsFront {
    fn start(ca: &TestCa, target: SocketAddr) -> TlsFront {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let d = ca.dir.path();
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(d.join("leaf.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(d.join("leaf.key")).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        rt.spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    // A client that rejects the certificate ends here, as it should.
                    let Ok(mut tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let Ok(mut plain) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    let _ = tokio::io::copy_bidirectional(&mut tls, &mut plain).await;
                });
            }
        });
        TlsFront { addr, _rt: rt }
    }
}

/// Where the simulator's TLS listener is.
struct SimTls {
    addr: SocketAddr,
}

/// Runs polypush with `SSL_CERT_FILE` set to `ca` (and no `SSL_CERT_DIR`, so the test CA is
/// all it trusts), or with the environment's own store when `ca` is `None`.
fn polypush_trusting(cfg: &Path, args: &[&str], ca: Option<&Path>) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_polypush"));
    cmd.arg("--config")
        .arg(cfg)
        .args(args)
        .env("RUST_LOG", "debug")
        .env_remove("CREDENTIALS_DIRECTORY")
        .stdin(Stdio::null());
    if let Some(ca) = ca {
        cmd.env("SSL_CERT_FILE", ca).env_remove("SSL_CERT_DIR");
    }
    let out = cmd.output().expect("run polypush");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The defaults exactly as shipped (`https://api.polyv.net/live`, `https://live.polyv.net`,
/// `https://apichat.polyv.net`, …), reached through `resolve` at a TLS front of the simulator
/// whose certificate only the test CA vouches for; the push address is `rtmps://localhost`,
/// a TLS front of nginx-rtmp. With `SSL_CERT_FILE=ca.pem`, every call and the RTMPS ingest
/// check succeed; without it neither trusts the test CA. Then the default login host goes
/// down and the older host answers.
#[test]
fn polyvs_real_host_names_over_tls_trusting_ssl_cert_file() {
    let ca = TestCa::new();
    let nginx = Nginx::start();
    let rtmps = TlsFront::start(&ca, nginx.addr());
    // The simulator itself on TLS, routing by Host: a default host or path that is not
    // Polyv's real one gets a 404.
    let plain = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let d = ca.dir.path();
    let sim = Sim::start_with(&[
        "--rtmp-base",
        &format!("rtmps://localhost:{}/live/", rtmps.addr.port()),
        "--tls-cert",
        d.join("leaf.pem").to_str().unwrap(),
        "--tls-key",
        d.join("leaf.key").to_str().unwrap(),
        "--strict-hosts",
        "--plain-listen",
        &plain,
    ]);
    let https = SimTls {
        addr: sim.base.trim_start_matches("https://").parse().unwrap(),
    };
    let dir = tempfile::tempdir().unwrap();
    let config = |api_host_at: &str| {
        let cfg = dir.path().join("tls.toml");
        let at = https.addr;
        std::fs::write(
            &cfg,
            format!(
                "[polyv]\nchannel_id = \"{CHANNEL}\"\npassword = \"{PASSWORD}\"\napp_id = \"{APP_ID}\"\n\
                 app_secret = \"{APP_SECRET}\"\ntimeout_s = 5\n\
                 [polyv.endpoints]\nresolve = {{ \"api.polyv.net\" = \"{api_host_at}\", \
                 \"live.polyv.net\" = \"{at}\", \"apichat.polyv.net\" = \"{at}\" }}\n\
                 [video]\nsource = \"test\"\nwidth = 320\nheight = 240\nfps = 25\nbitrate_kbps = 300\n\
                 preset = \"ultrafast\"\n[audio]\nsource = \"test\"\n"
            ),
        )
        .unwrap();
        cfg
    };
    let cfg = config(&https.addr.to_string());
    let ca_pem = ca.ca();
    let trusted = Some(ca_pem.as_path());

    // The selftest: login, the RTMPS ingest and the clock, all through the test CA.
    let r = polypush_trusting(&cfg, &["--json", "selftest"], trusted);
    let v = r.json();
    assert_eq!(r.code, 0, "{v:#}\n{}", r.stderr);
    let login = check_of(&v, "login")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        login.contains("rtmps://localhost:")
            && login.contains("answered by https://api.polyv.net/live/api/v2/teacher_login.json"),
        "{login}"
    );
    assert!(!login.contains("fallback"), "{login}");
    assert_eq!(check_of(&v, "ingest")["ok"], true, "{v:#}");
    let e = &v["polyv"]["endpoints"];
    assert_eq!(
        e["login"],
        "https://api.polyv.net/live/api/v2/teacher_login.json"
    );
    assert_eq!(
        e["login_fallback"],
        "https://live.polyv.net/api/v2/teacher_login.json"
    );
    assert_eq!(
        e["rename"],
        "https://api.polyv.net/live/v1/channels/153884/update"
    );
    assert_eq!(
        e["notify_stream2"],
        "https://api.polyv.net/live/client/notify_stream2.json"
    );
    assert_eq!(
        e["viewers"],
        "https://api.polyv.net/live/v3/channel/chat/count-online-user?channelId=153884"
    );
    assert_eq!(e["api"], "https://api.polyv.net");
    assert_eq!(
        e["viewers_fallback"],
        "https://apichat.polyv.net/front/listUsers?roomId=153884"
    );
    assert_eq!(
        v["polyv"]["resolve"]["apichat.polyv.net"],
        https.addr.to_string()
    );
    assert_eq!(
        v["polyv"]["login_answered_by"],
        "https://api.polyv.net/live/api/v2/teacher_login.json"
    );
    let text = polypush_trusting(&cfg, &["selftest"], trusted);
    assert_eq!(text.code, 0, "{}\n{}", text.stdout, text.stderr);
    assert!(
        text.stdout.contains("  Polyv endpoints:")
            && text
                .stdout
                .contains(&format!("api.polyv.net → {}", https.addr))
            && text
                .stdout
                .contains("login answered by https://api.polyv.net/live/api/v2/teacher_login.json"),
        "{}",
        text.stdout
    );
    assert_eq!(nginx.publish_count(CHANNEL), 0);

    // Every other call on its real host: a Chinese name round-trips through rename.
    sim.reset_requests();
    sim.set_channel(CHANNEL, r#"{"viewers":4}"#);
    let r = polypush_trusting(&cfg, &["channel", "rename", "高一(3)班 物理"], trusted);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(sim.channel(CHANNEL)["name"], "高一(3)班 物理");
    let r = polypush_trusting(&cfg, &["--json", "viewers"], trusted);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.json()["viewers"], 4);
    let r = polypush_trusting(&cfg, &["--json", "channel", "status"], trusted);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        paths(&sim),
        [
            "/live/v1/channels/153884/update",
            "/live/v3/channel/chat/count-online-user",
            "/live/v4/channel/live-status/list"
        ]
    );

    // Without the test CA: neither the API nor RTMPS trusts the certificate.
    sim.reset_requests();
    let r = polypush_trusting(&cfg, &["login"], None);
    assert_eq!(r.code, 4, "{}", r.stderr);
    let line = error_line(&r);
    assert!(
        line.contains("cannot reach Polyv at api.polyv.net (and the fallback live.polyv.net)")
            && line.contains("certificate"),
        "{line}"
    );
    assert!(sim.requests().is_empty());
    let rtmps_url = format!("rtmps://localhost:{}/live/probe", rtmps.addr.port());
    let r = polypush_trusting(&cfg, &["--json", "selftest", "--url", &rtmps_url], None);
    let v = r.json();
    assert_eq!(check_of(&v, "ingest")["ok"], false, "{v:#}");
    assert!(
        check_of(&v, "ingest")["detail"]
            .as_str()
            .unwrap()
            .contains("certificate"),
        "{v:#}"
    );

    // The default login host is down: the older host answers, and the selftest says so.
    let cfg = config(&format!("127.0.0.1:{}", closed_port()));
    let r = polypush_trusting(&cfg, &["--json", "selftest"], trusted);
    let v = r.json();
    assert_eq!(r.code, 0, "{v:#}\n{}", r.stderr);
    assert_eq!(
        v["polyv"]["login_answered_by"],
        "https://live.polyv.net/api/v2/teacher_login.json"
    );
    assert!(
        check_of(&v, "login")["detail"]
            .as_str()
            .unwrap()
            .contains("(the login fallback: the default login host did not answer)"),
        "{v:#}"
    );
    assert!(
        r.stderr
            .contains("the default login host did not answer; the login fallback did"),
        "{}",
        r.stderr
    );
}

fn check_of(v: &serde_json::Value, name: &str) -> serde_json::Value {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
        .clone()
}
