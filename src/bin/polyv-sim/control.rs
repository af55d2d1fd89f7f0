//! The unauthenticated control API under `/_sim/`, for tests: fault switches, the request
//! log and channel state. Never recorded in the request log and never subject to faults.
//!
//! Errors are `{"error": "..."}` with HTTP 400/404/405. Lines marked (inferred) are choices
//! of this simulator, not Polyv behaviour.

use serde::Deserialize;
use serde_json::{json, Value};

use crate::reply::Reply;
use crate::state::{FaultsPatch, SimState, LIVE_STATUSES};

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

/// Handles any `/_sim/...` path.
pub fn handle(st: &mut SimState, method: &str, path: &str, body: &[u8]) -> Reply {
    let rest = path.strip_prefix("/_sim").unwrap_or(path);
    match (method, rest) {
        ("GET", "/faults") => faults_reply(st),
        ("POST", "/faults") => match serde_json::from_slice::<FaultsPatch>(body) {
            Ok(patch) => {
                st.faults.apply(patch);
                faults_reply(st)
            }
            Err(e) => error(400, &format!("bad fault update: {e}")),
        },
        ("GET", "/requests") => Reply::json(200, &json!(st.requests)),
        ("POST", "/reset-requests") => {
            let cleared = st.requests.len();
            st.requests.clear();
            Reply::json(200, &json!({ "cleared": cleared }))
        }
        ("GET", "/channels") => {
            let list: Vec<Value> = st.channels.values().map(|c| c.public_json()).collect();
            Reply::json(200, &Value::Array(list))
        }
        ("POST", r) if r.starts_with("/channels/") => {
            patch_channel(st, &r["/channels/".len()..], body)
        }
        (_, "/faults" | "/requests" | "/reset-requests" | "/channels") => {
            error(405, "method not allowed")
        }
        (_, r) if r.starts_with("/channels/") => error(405, "method not allowed"),
        _ => error(404, "not found"),
    }
}

fn faults_reply(st: &SimState) -> Reply {
    Reply::json(200, &json!(st.faults))
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
        );
        assert_eq!(r.status, 200);
        let v = r.value();
        assert_eq!(
            (v["error500"].clone(), v["protected"].clone()),
            (json!(2), json!(true))
        );
        let v = handle(&mut s, "POST", "/_sim/faults", br#"{"clock_offset_ms":-5}"#).value();
        assert_eq!(
            (v["error500"].clone(), v["clock_offset_ms"].clone()),
            (json!(2), json!(-5))
        );
        assert_eq!(
            handle(&mut s, "POST", "/_sim/faults", br#"{"nope":1}"#).status,
            400
        );
        assert_eq!(
            handle(&mut s, "POST", "/_sim/faults", br#"{"error500":-1}"#).status,
            400
        );
        assert_eq!(handle(&mut s, "POST", "/_sim/faults", b"junk").status, 400);
        assert_eq!(handle(&mut s, "DELETE", "/_sim/faults", b"").status, 405);
        assert_eq!(handle(&mut s, "GET", "/_sim/what", b"").status, 404);
    }

    #[test]
    fn channel_patch_and_listing() {
        let mut s = sim();
        let r = handle(
            &mut s,
            "POST",
            "/_sim/channels/153884",
            br#"{"viewers":7,"liveStatus":"live","password":"new"}"#,
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
                br#"{"liveStatus":"x"}"#
            )
            .status,
            400
        );
        assert_eq!(
            handle(&mut s, "POST", "/_sim/channels/1", b"{}").status,
            404
        );
        let list = handle(&mut s, "GET", "/_sim/channels", b"");
        assert!(!list.body.contains("461666") && !list.body.contains("\"new\""));
        assert_eq!(list.value()[0]["viewers"], 7);
    }
}
