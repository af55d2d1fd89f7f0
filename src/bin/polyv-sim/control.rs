//! The unauthenticated control API under `/_sim/`, for tests: fault switches, the request
//! log, channel state, and nginx-rtmp's `on_publish` hook with its log of checks. Served on
//! every host, never recorded in the request log and never subject to faults.
//!
//! | method, path | what |
//! |---|---|
//! | `GET /_sim/faults` | the fault switches and settings, with `rate_limit.blocked` |
//! | `POST /_sim/faults` | a partial update (see [`crate::faults::FaultsPatch`]) |
//! | `GET /_sim/requests`, `POST /_sim/reset-requests` | the request log |
//! | `GET /_sim/channels`, `POST /_sim/channels/{id}` | channel state (no passwords) |
//! | `POST /_sim/on_publish` | nginx-rtmp's `on_publish` (form); 200 or 403 |
//! | `GET /_sim/publish-checks`, `POST /_sim/reset-publish-checks` | the on_publish checks |
//!
//! Errors are `{"error": "..."}` with HTTP 400/404/405. Lines marked (inferred) are choices
//! of this simulator, not Polyv behaviour.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::authkey;
use crate::faults::FaultsPatch;
use crate::reply::Reply;
use crate::state::{SimState, LIVE_STATUSES};
use crate::util::shifted;

/// A partial update of one channel, as posted to `/_sim/channels/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ChannelPatch {
    viewers: Option<u64>,
    live_status: Option<String>,
    password: Option<String>,
}

fn error(status: u16, msg: &str) -> Reply {
    Reply::json(status, &json!({ "error": msg }))
}

/// Handles any `/_sim/...` path. `system_now_ms` is the real clock (the offset is added here).
pub fn handle(
    st: &mut SimState,
    method: &str,
    path: &str,
    body: &[u8],
    system_now_ms: i64,
) -> Reply {
    let now = shifted(system_now_ms, st.faults.clock_offset_ms);
    let rest = path.strip_prefix("/_sim").unwrap_or(path);
    match (method, rest) {
        ("GET", "/faults") => faults_reply(st, now),
        ("POST", "/faults") => match serde_json::from_slice::<FaultsPatch>(body) {
            Ok(patch) => match st.faults.apply(patch) {
                Ok(effects) => {
                    if effects.clear_rate_limit {
                        st.limiter.clear();
                    }
                    // The clock offset may just have changed.
                    let now = shifted(system_now_ms, st.faults.clock_offset_ms);
                    faults_reply(st, now)
                }
                Err(e) => error(400, &format!("bad fault update: {e}")),
            },
            Err(e) => error(400, &format!("bad fault update: {e}")),
        },
        ("GET", "/requests") => Reply::json(200, &json!(st.requests)),
        ("POST", "/reset-requests") => {
            let cleared = st.requests.len();
            st.requests.clear();
            Reply::json(200, &json!({ "cleared": cleared }))
        }
        ("POST", "/on_publish") => authkey::on_publish(st, body, now),
        ("GET", "/publish-checks") => Reply::json(200, &json!(st.publish_checks)),
        ("POST", "/reset-publish-checks") => {
            let cleared = st.publish_checks.len();
            st.publish_checks.clear();
            Reply::json(200, &json!({ "cleared": cleared }))
        }
        ("GET", "/channels") => {
            let list: Vec<Value> = st.channels.values().map(|c| c.public_json()).collect();
            Reply::json(200, &Value::Array(list))
        }
        ("POST", r) if r.starts_with("/channels/") => {
            patch_channel(st, &r["/channels/".len()..], body)
        }
        (
            _,
            "/faults"
            | "/requests"
            | "/reset-requests"
            | "/channels"
            | "/on_publish"
            | "/publish-checks"
            | "/reset-publish-checks",
        ) => error(405, "method not allowed"),
        (_, r) if r.starts_with("/channels/") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

/// The faults, with the IPs the rate limit blocks right now under `rate_limit.blocked`.
fn faults_reply(st: &SimState, now: i64) -> Reply {
    let mut v = json!(st.faults);
    v["rate_limit"]["blocked"] = json!(st.limiter.blocked(now, st.faults.rate_limit.block_s));
    Reply::json(200, &v)
}

fn patch_channel(st: &mut SimState, raw_id: &str, body: &[u8]) -> Reply {
    let patch: ChannelPatch = match serde_json::from_slice(body) {
        Ok(p) => p,
        Err(e) => return error(400, &format!("bad channel update: {e}")),
    };
    if let Some(s) = &patch.live_status {
        if !LIVE_STATUSES.contains(&s.as_str()) {
            return error(
                400,
                "liveStatus must be one of unStart, live, end, waiting, playback, banpush",
            );
        }
    }
    if patch.password.as_deref() == Some("") {
        return error(400, "password must not be empty");
    }
    let Some(ch) = st.channel_mut(raw_id) else {
        return error(404, "channel not found");
    };
    if let Some(v) = patch.viewers {
        ch.viewers = v;
    }
    if let Some(v) = patch.live_status {
        ch.live_status = v;
    }
    if let Some(v) = patch.password {
        ch.password = v;
    }
    Reply::json(200, &ch.public_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Channel;

    fn sim() -> SimState {
        let mut s = SimState::new(String::new(), 5);
        s.add_channel(Channel::new(153884, "461666".into(), "demo".into()));
        s
    }

    #[test]
    fn faults_merge() {
        let mut s = sim();
        let r = handle(
            &mut s,
            "POST",
            "/_sim/faults",
            br#"{"error500":2,"protected":true}"#,
            0,
        );
        assert_eq!(r.status, 200);
        let v = r.value();
        assert_eq!(
            (v["error500"].clone(), v["protected"].clone()),
            (json!(2), json!(true))
        );
        let v = handle(
            &mut s,
            "POST",
            "/_sim/faults",
            br#"{"clock_offset_ms":-5}"#,
            0,
        )
        .value();
        assert_eq!(
            (v["error500"].clone(), v["clock_offset_ms"].clone()),
            (json!(2), json!(-5))
        );
        assert_eq!(
            handle(&mut s, "POST", "/_sim/faults", br#"{"nope":1}"#, 0).status,
            400
        );
        assert_eq!(
            handle(&mut s, "POST", "/_sim/faults", br#"{"error500":-1}"#, 0).status,
            400
        );
        assert_eq!(
            handle(&mut s, "POST", "/_sim/faults", b"junk", 0).status,
            400
        );
        assert_eq!(handle(&mut s, "DELETE", "/_sim/faults", b"", 0).status, 405);
        assert_eq!(handle(&mut s, "GET", "/_sim/what", b"", 0).status, 404);
    }

    #[test]
    fn channel_patch_and_listing() {
        let mut s = sim();
        let r = handle(
            &mut s,
            "POST",
            "/_sim/channels/153884",
            br#"{"viewers":7,"liveStatus":"live","password":"new"}"#,
            0,
        );
        assert_eq!(r.status, 200);
        let c = &s.channels[&153884];
        assert_eq!(
            (c.viewers, c.live_status.as_str(), c.password.as_str()),
            (7, "live", "new")
        );
        assert_eq!(
            handle(
                &mut s,
                "POST",
                "/_sim/channels/153884",
                br#"{"liveStatus":"x"}"#,
                0
            )
            .status,
            400
        );
        assert_eq!(
            handle(&mut s, "POST", "/_sim/channels/1", b"{}", 0).status,
            404
        );
        let list = handle(&mut s, "GET", "/_sim/channels", b"", 0);
        assert!(!list.body.contains("461666") && !list.body.contains("\"new\""));
        assert_eq!(list.value()[0]["viewers"], 7);
    }

    #[test]
    fn new_faults_and_publish_checks() {
        let mut s = sim();
        let v = handle(
            &mut s,
            "POST",
            "/_sim/faults",
            br#"{"login_refusal":{"message":"channel already login","count":2},"string_codes":true,"auth_key_ttl_s":2,"not_found_hosts":["api.polyv.net"],"rate_limit":{"per_10s":5,"block_s":4}}"#,
            0,
        )
        .value();
        assert_eq!(
            v["login_refusal"],
            json!({"message":"channel already login","count":2})
        );
        assert_eq!(
            v["rate_limit"],
            json!({"always":false,"per_10s":5,"block_s":4,"blocked":[]})
        );
        assert_eq!(
            (v["auth_key_ttl_s"].clone(), v["string_codes"].clone()),
            (json!(2), json!(true))
        );
        assert_eq!(v["not_found_hosts"], json!(["api.polyv.net"]));
        // A bad field leaves everything as it was and names the field.
        let r = handle(
            &mut s,
            "POST",
            "/_sim/faults",
            br#"{"garbage":true,"login_refusal":{"count":1}}"#,
            0,
        );
        assert_eq!(r.status, 400);
        assert!(r.value()["error"]
            .as_str()
            .unwrap()
            .contains("login_refusal.message"));
        assert!(!s.faults.garbage);

        let ip = "127.0.0.1".parse().unwrap();
        for _ in 0..6 {
            s.limiter.admit(ip, 1_000, 5, 4);
        }
        let v = handle(&mut s, "GET", "/_sim/faults", b"", 1_000).value();
        assert_eq!(
            v["rate_limit"]["blocked"],
            json!([{"ip":"127.0.0.1","since_ms":1000,"until_ms":5000}])
        );
        let v = handle(
            &mut s,
            "POST",
            "/_sim/faults",
            br#"{"rate_limit":{"clear":true}}"#,
            1_000,
        )
        .value();
        assert_eq!(v["rate_limit"]["blocked"], json!([]));

        let r = handle(&mut s, "POST", "/_sim/on_publish", b"app=live&name=x", 0);
        assert_eq!(r.status, 403);
        assert_eq!(
            handle(&mut s, "GET", "/_sim/on_publish", b"", 0).status,
            405
        );
        let v = handle(&mut s, "GET", "/_sim/publish-checks", b"", 0).value();
        assert_eq!(v[0]["accepted"], false);
        assert_eq!(v[0]["stream"], "x");
        let v = handle(&mut s, "POST", "/_sim/reset-publish-checks", b"", 0).value();
        assert_eq!(v["cleared"], 1);
    }
}
