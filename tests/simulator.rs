//! The simulator checks requests as Polyv documents: raw HTTP requests with a wrong signature,
//! a stale timestamp or a wrong password get the documented status and message.

mod common;

use common::*;
use polypush::platform::sign::{self, SignMethod};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn login_form(password: &str, ts: u64, sign_override: Option<&str>) -> String {
    let passwd = sign::login_passwd(password);
    let s = sign::login_sign(CHANNEL, &passwd, ts);
    format!(
        "number={CHANNEL}&account={CHANNEL}&passwd={passwd}&timestamp={ts}&sign={}",
        sign_override.unwrap_or(&s)
    )
}

const FORM: &str = "application/x-www-form-urlencoded";

#[test]
fn teacher_login_checks_sign_timestamp_and_password() {
    let sim = Sim::start();
    let ts = now_ms();
    let (s, b) = sim.http(
        "POST",
        "/api/v2/teacher_login.json",
        FORM,
        &login_form(PASSWORD, ts, None),
    );
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert!(v["url"].as_str().unwrap().starts_with("rtmp://"));
    assert!(!v["stream"].as_str().unwrap().is_empty());

    let (s, b) = sim.http(
        "POST",
        "/api/v2/teacher_login.json",
        FORM,
        &login_form(PASSWORD, ts, Some("00000000000000000000000000000000")),
    );
    assert_eq!(s, 403);
    assert!(b.contains("invalid signature."), "{b}");

    let stale = ts - 181_000;
    let (s, b) = sim.http(
        "POST",
        "/api/v2/teacher_login.json",
        FORM,
        &login_form(PASSWORD, stale, None),
    );
    assert_eq!(s, 400);
    assert!(b.contains("invalid timestamp."), "{b}");

    let (_, b) = sim.http(
        "POST",
        "/api/v2/teacher_login.json",
        FORM,
        &login_form("wrong", ts, None),
    );
    assert!(b.contains("channel id or password error"), "{b}");
}

fn signed_query(secret: &str, extra: &[(&str, &str)], ts: u64) -> String {
    let ts = ts.to_string();
    let mut params: Vec<(&str, &str)> = vec![("appId", APP_ID), ("timestamp", &ts)];
    params.extend_from_slice(extra);
    let sign = sign::api_sign(secret, &params, SignMethod::Md5);
    let mut q: Vec<String> = params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    q.push(format!("sign={sign}"));
    q.join("&")
}

#[test]
fn v3_envelope_errors_are_documented_shapes() {
    let sim = Sim::start();
    let ts = now_ms();
    let path = |q: String| format!("/live/v3/channel/stream/get-push-url?{q}");

    let (s, b) = sim.http(
        "GET",
        &path(signed_query(APP_SECRET, &[("channelId", CHANNEL)], ts)),
        "",
        "",
    );
    assert_eq!(s, 200, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["code"], 200);
    assert_eq!(v["status"], "success");

    let (s, b) = sim.http(
        "GET",
        &path(signed_query("wrong", &[("channelId", CHANNEL)], ts)),
        "",
        "",
    );
    assert_eq!(s, 403);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        v,
        serde_json::json!({"code":403,"status":"error","message":"invalid signature.","data":""})
    );

    let (s, b) = sim.http(
        "GET",
        &path(signed_query(
            APP_SECRET,
            &[("channelId", CHANNEL)],
            ts - 200_000,
        )),
        "",
        "",
    );
    assert_eq!(s, 400);
    assert!(b.contains("\"invalid timestamp.\""), "{b}");

    let (s, b) = sim.http(
        "GET",
        &format!("/live/v3/channel/stream/get-push-url?timestamp={ts}"),
        "",
        "",
    );
    assert_eq!(s, 400);
    assert!(b.contains("appId is required."), "{b}");

    // Scheme 3 with SHA-256.
    let tss = ts.to_string();
    let params = [
        ("appId", APP_ID),
        ("channelId", CHANNEL),
        ("signatureMethod", "SHA256"),
        ("timestamp", tss.as_str()),
    ];
    let sig = sign::api_sign(APP_SECRET, &params, SignMethod::Sha256);
    let (s, b) = sim.http(
        "GET",
        &path(format!(
            "appId={APP_ID}&channelId={CHANNEL}&signatureMethod=SHA256&timestamp={ts}&sign={sig}"
        )),
        "",
        "",
    );
    assert_eq!(s, 200, "{b}");
}

#[test]
fn create_channel_validates_scene_and_object() {
    let sim = Sim::start();
    let ts = now_ms();
    for (extra, msg) in [
        (
            vec![("name", "a"), ("scene", "theatre")],
            "scene not right.",
        ),
        (
            vec![("name", "a"), ("scene", "alone"), ("channelObject", "x")],
            "channelobject not right.",
        ),
        (vec![("scene", "alone")], "channel name is required."),
    ] {
        let body = signed_query(APP_SECRET, &extra, ts);
        let (s, b) = sim.http("POST", "/live/v3/channel/create-cpic-channel", FORM, &body);
        assert_eq!(s, 400, "{b}");
        assert!(b.contains(msg), "{msg}: {b}");
    }
}

#[test]
fn basic_update_rejects_bad_json_and_v4_shape() {
    let sim = Sim::start();
    let ts = now_ms();
    let q = signed_query(APP_SECRET, &[("channelId", CHANNEL)], ts);
    let (s, b) = sim.http(
        "POST",
        &format!("/live/v3/channel/basic/update?{q}"),
        "application/json",
        "{\"basicSetting\":{\"maxViewer\":\"many\"}}",
    );
    assert_eq!(s, 400);
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["message"], "json format error");
    assert_eq!(v["data"], 400);

    let q = signed_query(APP_SECRET, &[], ts);
    let (s, b) = sim.http(
        "POST",
        &format!("/live/v4/channel/mr/create?{q}"),
        "application/json",
        "{\"name\":\"m\",\"channelPasswd\":\"abc\"}",
    );
    assert_eq!(s, 400, "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).unwrap();
    assert_eq!(v["success"], false);
    assert!(v["requestId"].is_string());
    assert!(
        v["error"]["desc"]
            .as_str()
            .unwrap()
            .contains("channelPasswd"),
        "{v}"
    );
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn faults(sim: &Sim) -> serde_json::Value {
    let (s, b) = sim.http("GET", "/_sim/faults", "", "");
    assert_eq!(s, 200, "{b}");
    json(&b)
}

#[test]
fn login_refusals_come_for_the_next_n_logins_then_stop() {
    let sim = Sim::start();
    let login = || {
        sim.http(
            "POST",
            "/live/api/v2/teacher_login.json",
            FORM,
            &login_form(PASSWORD, now_ms(), None),
        )
    };
    sim.faults(r#"{"login_refusal":{"message":"channel in live","count":2}}"#);
    for left in [1, 0] {
        let (s, b) = login();
        assert_eq!(s, 200, "{b}");
        assert_eq!(
            json(&b),
            serde_json::json!({"code":"500","status":"fail","message":"channel in live","msg":"channel in live"})
        );
        assert_eq!(faults(&sim)["login_refusal"]["count"], left);
    }
    let (_, b) = login();
    assert_eq!(json(&b)["status"], "ok", "{b}");

    // Any message, so a client's handling of refusals it does not know can be tested.
    sim.faults(r#"{"login_refusal":{"message":"something new","count":1}}"#);
    let (_, b) = login();
    assert_eq!(json(&b)["msg"], "something new");
    // A wrong password is a refusal of the same shape.
    let (_, b) = sim.http(
        "POST",
        "/api/v2/teacher_login.json",
        FORM,
        &login_form("wrong", now_ms(), None),
    );
    assert_eq!(
        (json(&b)["code"].clone(), json(&b)["status"].clone()),
        (serde_json::json!("500"), serde_json::json!("fail"))
    );

    // A bad update is refused whole, with the field named.
    let (s, b) = sim.http(
        "POST",
        "/_sim/faults",
        "application/json",
        r#"{"login_refusal":{"message":"","count":1}}"#,
    );
    assert_eq!(s, 400);
    assert!(b.contains("login_refusal.message"), "{b}");
}

#[test]
fn string_codes_fault_renders_every_envelope_code_as_a_string() {
    let sim = Sim::start();
    sim.faults(r#"{"string_codes":true}"#);
    let q = signed_query(APP_SECRET, &[("channelId", CHANNEL)], now_ms());
    let (s, b) = sim.http(
        "GET",
        &format!("/live/v3/channel/stream/get-push-url?{q}"),
        "",
        "",
    );
    assert_eq!(s, 200);
    assert_eq!(json(&b)["code"], "200", "{b}");
    let q = signed_query("wrong", &[("channelId", CHANNEL)], now_ms());
    let (s, b) = sim.http(
        "GET",
        &format!("/live/v3/channel/stream/get-push-url?{q}"),
        "",
        "",
    );
    assert_eq!(s, 403);
    assert_eq!(
        json(&b),
        serde_json::json!({"code":"403","status":"error","message":"invalid signature.","data":""})
    );
}

#[test]
fn rate_limit_blocks_an_ip_then_lets_it_go_on_the_simulators_clock() {
    // The limit from the command line, the block length at run time.
    let sim = Sim::start_with(&["--rate-limit-per-10s", "5"]);
    sim.faults(r#"{"rate_limit":{"block_s":300}}"#);
    // Unsigned: every answer is `appId is required.` unless the limit answers first.
    let api = || sim.http("GET", "/live/v3/channel/stream/get-push-url", "", "");
    for _ in 0..5 {
        let (s, b) = api();
        assert_eq!(s, 400);
        assert!(b.contains("appId is required."), "{b}");
    }
    let (s, b) = api();
    assert_eq!(s, 400);
    assert_eq!(
        json(&b),
        serde_json::json!({"code":400,"status":"error","message":"qps exceeds number of calls","data":""})
    );
    // Only api.polyv.net counts: the chat host still answers.
    let (s, _) = sim.http("GET", "/front/listUsers?roomId=153884", "", "");
    assert_eq!(s, 200);
    let blocked = faults(&sim)["rate_limit"]["blocked"].clone();
    assert_eq!(blocked[0]["ip"], "127.0.0.1", "{blocked}");
    let until = blocked[0]["until_ms"].as_i64().unwrap();
    assert_eq!(until - blocked[0]["since_ms"].as_i64().unwrap(), 300_000);

    // Still blocked 290 s on, free 300 s on (the clock moves, nobody waits).
    sim.faults(r#"{"clock_offset_ms":290000}"#);
    assert!(api().1.contains("qps exceeds"));
    sim.faults(r#"{"clock_offset_ms":300001}"#);
    assert!(api().1.contains("appId is required."));
    let log = sim.requests();
    assert!(log.iter().all(|r| r["ip"] == "127.0.0.1"), "{log:?}");
}

/// Publishes one second of test video to `url` with ffmpeg; whether ffmpeg succeeded.
fn ffmpeg_publish(url: &str, dir: &std::path::Path) -> bool {
    let log = std::fs::File::create(dir.join("ffmpeg.log")).unwrap();
    let child = std::process::Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-f", "lavfi", "-i"])
        .arg("testsrc=size=160x120:rate=10")
        .args(["-t", "1", "-c:v", "libx264", "-preset", "ultrafast"])
        .args(["-pix_fmt", "yuv420p", "-g", "10", "-f", "flv", url])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("run ffmpeg");
    wait_bounded(child, std::time::Duration::from_secs(30)).is_some_and(|s| s.success())
}

fn publish_checks(sim: &Sim) -> Vec<serde_json::Value> {
    let (_, b) = sim.http("GET", "/_sim/publish-checks", "", "");
    json(&b).as_array().unwrap().clone()
}

#[test]
fn nginx_on_publish_refuses_an_expired_auth_key_and_takes_a_fresh_one() {
    use common::nginx::{Nginx, NginxOptions};
    let sim = Sim::start();
    let nginx = Nginx::start_with_on_publish(
        NginxOptions::default(),
        &format!("{}/_sim/on_publish", sim.base),
    );
    let dir = tempfile::tempdir().unwrap();
    // A login on the simulator's clock (`offset_ms` ahead of ours): the nginx address.
    let login = |offset_ms: u64| {
        let (s, b) = sim.http(
            "POST",
            "/live/api/v2/teacher_login.json",
            FORM,
            &login_form(PASSWORD, now_ms() + offset_ms, None),
        );
        assert_eq!(s, 200, "{b}");
        let v = json(&b);
        assert_eq!(v["isUrlProtected"], true, "{v}");
        let stream = v["stream"].as_str().unwrap().to_owned();
        let suffix = v["suffix"].as_str().unwrap().to_owned();
        let expiry: u64 = suffix
            .strip_prefix("?auth_key=")
            .and_then(|k| k.split('-').next())
            .and_then(|e| e.parse().ok())
            .unwrap_or_else(|| panic!("no auth_key in {suffix}"));
        // Polyv's TTL: the simulator's now + 1800 s.
        let sim_now_s = (now_ms() + offset_ms) / 1000;
        assert!(
            expiry.abs_diff(sim_now_s + 1800) <= 2,
            "{expiry} vs {sim_now_s}"
        );
        let url = nginx.url(&format!("{stream}{suffix}"));
        (stream, url)
    };

    let (stream, fresh) = login(0);
    assert!(
        ffmpeg_publish(&fresh, dir.path()),
        "a fresh address was refused: {:?}\n{}",
        publish_checks(&sim),
        std::fs::read_to_string(dir.path().join("ffmpeg.log")).unwrap_or_default()
    );
    let checks = publish_checks(&sim);
    assert_eq!(checks.len(), 1, "{checks:?}");
    assert_eq!(
        (checks[0]["accepted"].clone(), checks[0]["stream"].clone()),
        (serde_json::json!(true), serde_json::json!(stream))
    );
    assert_eq!(checks[0]["channel_id"], CHANNEL);

    // Half an hour later on the simulator's clock the same address is refused.
    sim.faults(r#"{"clock_offset_ms":1801000}"#);
    assert!(
        !ffmpeg_publish(&fresh, dir.path()),
        "a stale address was let in"
    );
    let checks = publish_checks(&sim);
    assert_eq!(checks.len(), 2, "{checks:?}");
    assert_eq!(checks[1]["accepted"], false);
    assert!(
        checks[1]["reason"].as_str().unwrap().contains("expired"),
        "{checks:?}"
    );

    // A new login gives an address that works again.
    let (_, renewed) = login(1_801_000);
    assert_ne!(renewed, fresh);
    assert!(
        ffmpeg_publish(&renewed, dir.path()),
        "a renewed address was refused: {:?}",
        publish_checks(&sim)
    );
    assert_eq!(publish_checks(&sim)[2]["accepted"], true);
    // What nginx recorded of the last session is a playable video.
    let rec = nginx.recording(&stream);
    let ok = poll_until(std::time::Duration::from_secs(10), || {
        std::process::Command::new("ffprobe")
            .args(["-v", "error", "-show_streams", "-of", "json"])
            .arg(&rec)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
            .is_some_and(|v| v["streams"][0]["codec_name"] == "h264")
    });
    assert!(ok, "no playable recording at {}", rec.display());
}

/// A test CA and a leaf for Polyv's three hosts, made with the openssl CLI: (ca, cert, key).
fn test_certs(dir: &std::path::Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    let mut ca = vec![
        "req",
        "-x509",
        "-days",
        "2",
        "-subj",
        "/CN=polyv-sim test CA",
    ];
    ca.extend(ec);
    ca.extend(["-keyout", "ca.key", "-out", "ca.pem"]);
    ca.extend(["-addext", "basicConstraints=critical,CA:TRUE"]);
    ca.extend(["-addext", "keyUsage=critical,keyCertSign,cRLSign"]);
    run(&ca);
    let mut csr = vec!["req", "-subj", "/CN=api.polyv.net"];
    csr.extend(ec);
    csr.extend(["-keyout", "leaf.key", "-out", "leaf.csr"]);
    run(&csr);
    std::fs::write(
        dir.join("leaf.ext"),
        "subjectAltName=DNS:api.polyv.net,DNS:live.polyv.net,DNS:apichat.polyv.net\n\
         basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-days",
        "2",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-extfile",
        "leaf.ext",
        "-out",
        "leaf.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("leaf.pem"),
        dir.join("leaf.key"),
    )
}

/// One HTTPS request with curl to `https://HOST:PORT/PATH`, HOST resolved to loopback and
/// trusted through the test CA only: (status, body).
fn curl(
    port: u16,
    ca: &std::path::Path,
    host: &str,
    method: &str,
    path: &str,
    extra: &[&str],
) -> (u16, String) {
    let out = std::process::Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-X",
            method,
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
        ])
        .arg("--resolve")
        .arg(format!("{host}:{port}:127.0.0.1"))
        .arg("--cacert")
        .arg(ca)
        .args(extra)
        .arg(format!("https://{host}:{port}{path}"))
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "curl {host}{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().expect("curl status"), body.to_owned())
}

#[test]
fn tls_and_strict_hosts_serve_each_path_on_its_real_host() {
    let dir = tempfile::tempdir().unwrap();
    let (ca, cert, key) = test_certs(dir.path());
    let plain = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let sim = Sim::start_with(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--strict-hosts",
        "--plain-listen",
        &plain.to_string(),
    ]);
    let port: u16 = sim
        .base
        .strip_prefix("https://127.0.0.1:")
        .unwrap_or_else(|| panic!("not an https address: {}", sim.base))
        .parse()
        .unwrap();
    let plain = plain.to_string();
    let form = ["-H", "Content-Type: application/x-www-form-urlencoded"];
    let login = |host: &str, path: &str| {
        let body = login_form(PASSWORD, now_ms(), None);
        let mut extra = form.to_vec();
        extra.extend(["--data-binary", body.as_str()]);
        curl(port, &ca, host, "POST", path, &extra)
    };
    let new_login = "/live/api/v2/teacher_login.json";
    let old_login = "/api/v2/teacher_login.json";

    let (s, b) = login("api.polyv.net", new_login);
    assert_eq!(
        (s, json(&b)["status"].clone()),
        (200, serde_json::json!("ok")),
        "{b}"
    );
    let (s, b) = login("live.polyv.net", old_login);
    assert_eq!(
        (s, json(&b)["status"].clone()),
        (200, serde_json::json!("ok")),
        "{b}"
    );
    assert_eq!(login("live.polyv.net", new_login).0, 404);
    assert_eq!(login("api.polyv.net", old_login).0, 404);
    assert_eq!(login("apichat.polyv.net", new_login).0, 404);

    // Viewers: the chat room's list on apichat, the signed count on api.
    let (s, b) = http(
        &plain,
        "POST",
        "/_sim/channels/153884",
        "application/json",
        r#"{"viewers":7}"#,
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = curl(
        port,
        &ca,
        "apichat.polyv.net",
        "GET",
        "/front/listUsers?roomId=153884",
        &[],
    );
    assert_eq!(
        (s, json(&b)["count"].clone()),
        (200, serde_json::json!(7)),
        "{b}"
    );
    assert_eq!(
        curl(
            port,
            &ca,
            "api.polyv.net",
            "GET",
            "/front/listUsers?roomId=153884",
            &[]
        )
        .0,
        404
    );
    let count = format!(
        "/live/v3/channel/chat/count-online-user?{}",
        signed_query(APP_SECRET, &[("channelId", CHANNEL)], now_ms())
    );
    for method in ["GET", "POST"] {
        let (s, b) = curl(port, &ca, "api.polyv.net", method, &count, &[]);
        assert_eq!(s, 200, "{method} {b}");
        assert_eq!(
            json(&b),
            serde_json::json!({"code":200,"status":"success","message":"","data":7})
        );
    }
    assert_eq!(curl(port, &ca, "live.polyv.net", "GET", &count, &[]).0, 404);

    // The documents' old hosts serve nothing.
    for host in ["api.live.polyv.net", "api.chat.polyv.net"] {
        let header = format!("Host: {host}");
        for path in [
            "/v1/channels/153884/update",
            "/front/listUsers?roomId=1",
            old_login,
        ] {
            let (s, _) = curl(port, &ca, "api.polyv.net", "GET", path, &["-H", &header]);
            assert_eq!(s, 404, "{host}{path}");
        }
    }

    // One host down: the older login host still answers.
    let (s, b) = http(
        &plain,
        "POST",
        "/_sim/faults",
        "application/json",
        r#"{"not_found_hosts":["api.polyv.net"]}"#,
    );
    assert_eq!(s, 200, "{b}");
    let (s, b) = login("api.polyv.net", new_login);
    assert_eq!(s, 404);
    assert!(b.contains("404 Not Found"), "{b}");
    assert_eq!(login("live.polyv.net", old_login).0, 200);

    // The request log names each request's host, with a millisecond time.
    let (_, b) = http(&plain, "GET", "/_sim/requests", "", "");
    let log = json(&b);
    let log = log.as_array().unwrap();
    assert_eq!(log[0]["host"], "api.polyv.net");
    assert_eq!(log[0]["path"], new_login);
    assert_eq!(log[1]["host"], "live.polyv.net");
    let last = log.last().unwrap();
    assert_eq!(
        (last["host"].clone(), last["status"].clone()),
        (serde_json::json!("live.polyv.net"), serde_json::json!(200))
    );
    assert!(last["at_ms"].as_i64().unwrap() >= log[0]["at_ms"].as_i64().unwrap());
    // Plain HTTP on the TLS port gets nowhere.
    let mut s = std::net::TcpStream::connect(sim.base.trim_start_matches("https://")).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    use std::io::{Read, Write};
    let _ = s.write_all(b"GET /_sim/faults HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    assert!(!String::from_utf8_lossy(&buf).contains("HTTP/1.1 200"));
}
