//! The simulator checks requests as Polyv documents: raw HTTP requests with a wrong signature,
//! a stale timestamp or a wrong password get the documented status and message.

mod common;

use common::*;
use polypush::platform::sign::{self, SignMethod};
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
