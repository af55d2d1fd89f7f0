//! The push-client endpoints of document 01 and the SDK: `teacher_login` (scheme 1),
//! `notify_stream2`, channel rename (scheme 2) and the chat room's `listUsers`.
//!
//! Each handler checks in the order the brief fixes (missing fields, timestamp, signature,
//! then the channel) and returns a [`Reply`]. Lines marked (inferred) are guesses from
//! /work/shared/polyv-api/README.md, not documented Polyv behaviour.

use polypush::platform::sign::{login_passwd, login_sign, notify_sign, rename_sign};
use serde_json::{json, Value};

use crate::authkey;
use crate::reply::{
    login_refused, push_err, rename_err, Reply, INVALID_SIGNATURE, INVALID_TIMESTAMP,
    PARAM_VALIDATE,
};
use crate::state::SimState;
use crate::util::{fresh_timestamp, Params};

/// Longest channel name Polyv accepts, in characters.
pub const MAX_NAME_CHARS: usize = 60;
/// Most fake users `listUsers` lists (the count is still the full number). (inferred)
pub const MAX_LISTED_USERS: u64 = 1000;
/// The `maxRate` (kbps) every login reply carries: Polyv's documented default.
const MAX_RATE_KBPS: u32 = 1000;

/// `POST /api/v2/teacher_login.json` (and `/live/api/v2/...`). A refusal (wrong password or
/// the `login_refusal` fault) is `{code:"500",status:"fail",message,msg}`; with an auth_key
/// (`auth_key_ttl_s > 0`) the address is the protected form, `bakUrl + stream + suffix`, the
/// suffix carrying `?auth_key=`, as Polyv's SDK builds it.
pub fn teacher_login(st: &mut SimState, p: &Params, now_ms: i64) -> Reply {
    let (Some(number), Some(account), Some(passwd), Some(_), Some(sign)) = (
        p.get("number"),
        p.get("account"),
        p.get("passwd"),
        p.get("timestamp"),
        p.get("sign"),
    ) else {
        return push_err(400, 400, PARAM_VALIDATE);
    };
    let Some(ts) = fresh_timestamp(p.get("timestamp"), now_ms) else {
        return push_err(400, 400, INVALID_TIMESTAMP);
    };
    if sign != login_sign(number, passwd, ts) {
        return push_err(403, 403, INVALID_SIGNATURE);
    }
    // (inferred) `account` must name the same channel as `number`.
    let channel = match st.channel(number) {
        Some(c) if account == number && passwd == login_passwd(&c.password) => c.clone(),
        _ => return login_refused("channel id or password error"),
    };
    if let Some(refusal) = st.faults.login_refusal.as_mut().filter(|r| r.count > 0) {
        refusal.count -= 1;
        return login_refused(&refusal.message);
    }
    let auth_key = authkey::suffix(st, &channel.stream_key, now_ms);
    let protected = st.faults.protected || auth_key.is_some();
    let bak_url = if protected {
        st.rtmp_base.clone()
    } else {
        String::new()
    };
    let suffix = auth_key.unwrap_or_default();
    Reply::json(
        200,
        &json!({
            "status": "ok",
            "channelId": channel.id.to_string(),
            "url": st.rtmp_base,
            "stream": channel.stream_key,
            "bakUrl": bak_url,
            "suffix": suffix,
            "isUrlProtected": protected,
            "isNgbEnabled": false,
            "ngbUrl": "",
            "maxRate": MAX_RATE_KBPS,
            "isOnlyAudio": "N",
            "liveScene": channel.scene,
        }),
    )
}

/// `POST /live/client/notify_stream2.json`: success is the text `1`.
pub fn notify_stream2(st: &mut SimState, p: &Params, now_ms: i64) -> Reply {
    let (Some(number), Some(stream), Some(_), Some(sign)) = (
        p.get("number"),
        p.get("stream"),
        p.get("timestamp"),
        p.get("sign"),
    ) else {
        return push_err(400, 400, PARAM_VALIDATE);
    };
    // (inferred) width and height are optional but must be numbers when given.
    let dim = |key: &str| -> Result<Option<u32>, ()> {
        match p.get(key) {
            None => Ok(None),
            Some(v) => v.parse::<u32>().map(Some).map_err(|_| ()),
        }
    };
    let (Ok(width), Ok(height)) = (dim("videowidth"), dim("videoheight")) else {
        return push_err(400, 400, PARAM_VALIDATE);
    };
    let Some(ts) = fresh_timestamp(p.get("timestamp"), now_ms) else {
        return push_err(400, 400, INVALID_TIMESTAMP);
    };
    if sign != notify_sign(number, ts) {
        return push_err(403, 403, INVALID_SIGNATURE);
    }
    let Some(channel) = st.channel_mut(number) else {
        return push_err(200, 400, "channel not found");
    };
    // (inferred) the stream must be this channel's stream name.
    if channel.stream_key != stream {
        return push_err(200, 400, "stream not match");
    }
    channel.video_width = width;
    channel.video_height = height;
    channel.live_status = "live".to_owned();
    Reply::text(200, "1")
}

/// `POST /v1/channels/{channelId}/update` (and `/live/v1/...`): rename, scheme 2.
pub fn rename(st: &mut SimState, raw_id: &str, p: &Params, now_ms: i64) -> Reply {
    let Some(name) = p.get("name") else {
        return rename_err(400, "name is required");
    };
    if fresh_timestamp(p.get("ptime"), now_ms).is_none() {
        return rename_err(400, INVALID_TIMESTAMP);
    }
    if p.get("sign") != Some(rename_sign(raw_id, name).as_str()) {
        return rename_err(403, INVALID_SIGNATURE);
    }
    let Some(channel) = st.channel_mut(raw_id) else {
        return rename_err(400, "channel not found");
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return rename_err(400, "channel name is over length.");
    }
    channel.name = name.to_owned();
    Reply::json(
        200,
        &json!({"status": "success", "result": "update channel successfully"}),
    )
}

/// `GET /front/listUsers?roomId=`: no auth; `count` is the channel's viewer count.
pub fn list_users(st: &SimState, p: &Params) -> Reply {
    let viewers = p
        .get("roomId")
        .and_then(|id| st.channel(id))
        .map_or(0, |c| c.viewers);
    let users: Vec<Value> = (1..=viewers.min(MAX_LISTED_USERS))
        .map(|i| json!({"userId": format!("u{i}"), "nick": format!("viewer {i}")}))
        .collect();
    Reply::json(200, &json!({"count": viewers, "userlist": users}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::LoginRefusal;
    use crate::state::Channel;
    use crate::util::parse_urlencoded;

    const NOW: i64 = 1_516_327_146_366;

    fn sim() -> SimState {
        let mut s = SimState::new("rtmp://127.0.0.1:1935/live/".into(), 50);
        s.add_channel(Channel::new(153884, "461666".into(), "demo".into()));
        s
    }

    fn form(s: &str) -> Params {
        parse_urlencoded(s.as_bytes())
    }

    fn login_form(id: &str, pw: &str, ts: i64) -> String {
        let passwd = login_passwd(pw);
        let sign = login_sign(id, &passwd, ts as u64);
        format!("number={id}&account={id}&passwd={passwd}&timestamp={ts}&sign={sign}")
    }

    #[test]
    fn login_vector_and_success_shape() {
        // The document's own vector, without an auth_key: the plain address.
        let p = form("number=153884&account=153884&passwd=aeb0e56d32d841cbc52b0ed18721167e&timestamp=1516327146366&sign=32046e6a4bab8d95de9e5bc6fc4630e7");
        let mut s = sim();
        s.faults.auth_key_ttl_s = 0;
        let r = teacher_login(&mut s, &p, NOW);
        assert_eq!(r.status, 200);
        let v = r.value();
        assert_eq!(v["status"], "ok");
        assert_eq!(v["channelId"], "153884");
        assert_eq!(v["url"], "rtmp://127.0.0.1:1935/live/");
        assert_eq!(v["stream"].as_str().unwrap().len(), 27);
        assert_eq!(v["isUrlProtected"], false);
        assert_eq!(
            (v["bakUrl"].clone(), v["suffix"].clone()),
            (json!(""), json!(""))
        );
        assert_eq!(v["maxRate"], 1000);
        assert!(v.get("appSecret").is_none());
    }

    #[test]
    fn login_check_order() {
        let mut s = sim();
        // Missing field beats a stale timestamp.
        let r = teacher_login(&mut s, &form("number=153884&timestamp=1"), NOW);
        assert_eq!(
            (r.status, r.value()["msg"].clone()),
            (400, json!(PARAM_VALIDATE))
        );
        assert_eq!(r.value()["message"], PARAM_VALIDATE);
        // Stale timestamp beats a bad signature.
        let stale = login_form("153884", "461666", NOW - 180_001).replace("sign=", "sign=x");
        let r = teacher_login(&mut s, &form(&stale), NOW);
        assert_eq!((r.status, r.value()["code"].clone()), (400, json!(400)));
        assert_eq!(r.value()["msg"], INVALID_TIMESTAMP);
        // Bad signature beats an unknown channel.
        let bad = login_form("999", "461666", NOW).replace("sign=", "sign=0");
        let r = teacher_login(&mut s, &form(&bad), NOW);
        assert_eq!((r.status, r.value()["code"].clone()), (403, json!(403)));
        // Unknown channel / wrong password: a business refusal, HTTP 200.
        for f in [
            login_form("999", "461666", NOW),
            login_form("153884", "wrong", NOW),
        ] {
            let r = teacher_login(&mut s, &form(&f), NOW);
            assert_eq!(r.status, 200);
            assert_eq!(
                r.value(),
                json!({"code":"500","status":"fail","message":"channel id or password error","msg":"channel id or password error"})
            );
        }
    }

    #[test]
    fn login_refusals_for_the_next_n_valid_logins() {
        let mut s = sim();
        s.faults.login_refusal = Some(LoginRefusal {
            message: "channel in live".into(),
            count: 2,
        });
        let good = form(&login_form("153884", "461666", NOW));
        // A wrong password is answered as such and uses up no refusal.
        let r = teacher_login(&mut s, &form(&login_form("153884", "wrong", NOW)), NOW);
        assert_eq!(r.value()["msg"], "channel id or password error");
        for left in [1, 0] {
            let v = teacher_login(&mut s, &good, NOW).value();
            assert_eq!(
                v,
                json!({"code":"500","status":"fail","message":"channel in live","msg":"channel in live"})
            );
            assert_eq!(s.faults.login_refusal.as_ref().unwrap().count, left);
        }
        assert_eq!(teacher_login(&mut s, &good, NOW).value()["status"], "ok");
    }

    #[test]
    fn login_address_carries_an_expiring_auth_key() {
        let mut s = sim();
        let r = teacher_login(&mut s, &form(&login_form("153884", "461666", NOW)), NOW);
        let v = r.value();
        assert_eq!(v["isUrlProtected"], true);
        assert_eq!(v["bakUrl"], "rtmp://127.0.0.1:1935/live/");
        let suffix = v["suffix"].as_str().unwrap();
        let expiry = NOW / 1000 + 1800;
        assert!(
            suffix.starts_with(&format!("?auth_key={expiry}-0-0-")),
            "{suffix}"
        );
        // The old switch alone gives the protected form without a key.
        s.faults.auth_key_ttl_s = 0;
        s.faults.protected = true;
        let v = teacher_login(&mut s, &form(&login_form("153884", "461666", NOW)), NOW).value();
        assert_eq!(
            (v["isUrlProtected"].clone(), v["suffix"].clone()),
            (json!(true), json!(""))
        );
    }

    #[test]
    fn notify_records_video_size() {
        let mut s = sim();
        let key = s.channels[&153884].stream_key.clone();
        let sign = notify_sign("153884", NOW as u64);
        let f = format!("number=153884&stream={key}&timestamp={NOW}&sign={sign}&videowidth=1280&videoheight=720");
        let r = notify_stream2(&mut s, &form(&f), NOW);
        assert_eq!((r.status, r.body.as_str()), (200, "1"));
        let c = &s.channels[&153884];
        assert_eq!((c.video_width, c.video_height), (Some(1280), Some(720)));
        assert_eq!(c.live_status, "live");
        let r = notify_stream2(&mut s, &form(&f.replace("sign=", "sign=1")), NOW);
        assert_eq!(r.status, 403);
        let f = format!(
            "number=7&stream={key}&timestamp={NOW}&sign={}",
            notify_sign("7", NOW as u64)
        );
        let r = notify_stream2(&mut s, &form(&f), NOW);
        assert_eq!(
            (r.status, r.value()["msg"].clone()),
            (200, json!("channel not found"))
        );
    }

    #[test]
    fn rename_checks() {
        let mut s = sim();
        let name = "小程序推流测试test";
        let sign = rename_sign("153884", name);
        let ok = format!("name={name}&ptime={NOW}&sign={sign}");
        let r = rename(&mut s, "153884", &form(&ok), NOW);
        assert_eq!(r.value()["result"], "update channel successfully");
        assert_eq!(s.channels[&153884].name, name);

        let r = rename(&mut s, "153884", &form("ptime=1"), NOW);
        assert_eq!(
            (r.status, r.value()["result"].clone()),
            (400, json!("name is required"))
        );
        let r = rename(
            &mut s,
            "153884",
            &form(&format!("name=a&ptime=1&sign={sign}")),
            NOW,
        );
        assert_eq!(r.value()["result"], INVALID_TIMESTAMP);
        let r = rename(
            &mut s,
            "153884",
            &form(&format!("name=a&ptime={NOW}&sign={sign}")),
            NOW,
        );
        assert_eq!(
            (r.status, r.value()["result"].clone()),
            (403, json!(INVALID_SIGNATURE))
        );
        let other = format!("name=a&ptime={NOW}&sign={}", rename_sign("42", "a"));
        let r = rename(&mut s, "42", &form(&other), NOW);
        assert_eq!(r.value()["result"], "channel not found");
        let long = "长".repeat(61);
        let f = format!(
            "name={long}&ptime={NOW}&sign={}",
            rename_sign("153884", &long)
        );
        let r = rename(&mut s, "153884", &form(&f), NOW);
        assert_eq!(r.value()["result"], "channel name is over length.");
        let sixty = "长".repeat(60);
        let f = format!(
            "name={sixty}&ptime={NOW}&sign={}",
            rename_sign("153884", &sixty)
        );
        assert_eq!(rename(&mut s, "153884", &form(&f), NOW).status, 200);
    }

    #[test]
    fn list_users_counts() {
        let mut s = sim();
        assert_eq!(
            list_users(&s, &form("roomId=1")).value(),
            json!({"count":0,"userlist":[]})
        );
        s.channels.get_mut(&153884).unwrap().viewers = 2;
        let v = list_users(&s, &form("roomId=153884")).value();
        assert_eq!(v["count"], 2);
        assert_eq!(v["userlist"][1], json!({"userId":"u2","nick":"viewer 2"}));
        s.channels.get_mut(&153884).unwrap().viewers = u64::MAX;
        let v = list_users(&s, &form("roomId=153884")).value();
        assert_eq!(v["userlist"].as_array().unwrap().len(), 1000);
    }
}
