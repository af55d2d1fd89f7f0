//! The signed platform APIs (scheme 3): v3 create-cpic-channel, basic/update, get-push-url,
//! chat/count-online-user, and v4 mr/create, live-status/list.
//!
//! [`authenticate`] runs the common checks in Polyv's order (appId present, app known,
//! timestamp, signature); each endpoint then validates its own parameters. JSON bodies are
//! validated by hand so that a wrong type gives `json format error` instead of a panic.
//! Lines marked (inferred) are guesses from /work/shared/polyv-api/README.md.

use polypush::platform::sign::{api_sign, SignMethod};
use serde_json::{json, Map, Value};

use crate::authkey;
use crate::push::MAX_NAME_CHARS;
use crate::reply::{
    v3_err, v3_ok, v4_err, v4_ok, Flavor, Reply, APP_ID_REQUIRED, APP_NOT_FOUND, E_APPID_REQUIRED,
    E_APP_NOT_FOUND, E_SIGNATURE, E_TIMESTAMP, E_VALIDATION, INVALID_SIGNATURE, INVALID_TIMESTAMP,
    JSON_FORMAT, PARAM_VALIDATE,
};
use crate::state::{random_password, SimState};
use crate::util::{fresh_timestamp, is_13_digit, Params};

/// Longest `basicSetting.channelPasswd`, in characters.
const MAX_CHANNEL_PASSWD_CHARS: usize = 16;
/// Longest MR channel name, in characters.
const MAX_MR_NAME_CHARS: usize = 100;
/// The `userId` Polyv's MR example returns; the simulator has a single account.
const SIM_USER_ID: &str = "1b448be323";

/// Why the common scheme-3 checks failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthError {
    AppIdRequired,
    AppNotFound,
    BadTimestamp,
    BadSignature,
}

impl AuthError {
    pub fn reply(self, flavor: Flavor) -> Reply {
        let (http, code, msg) = match self {
            AuthError::AppIdRequired => (400, E_APPID_REQUIRED, APP_ID_REQUIRED),
            AuthError::AppNotFound => (400, E_APP_NOT_FOUND, APP_NOT_FOUND),
            AuthError::BadTimestamp => (400, E_TIMESTAMP, INVALID_TIMESTAMP),
            AuthError::BadSignature => (403, E_SIGNATURE, INVALID_SIGNATURE),
        };
        flavor.error(http, code, msg)
    }
}

/// Scheme-3 checks over the URL + form parameters. On success returns the appId.
pub fn authenticate<'p>(st: &SimState, p: &'p Params, now_ms: i64) -> Result<&'p str, AuthError> {
    let app_id = p.get("appId").ok_or(AuthError::AppIdRequired)?;
    let app = st.apps.get(app_id).ok_or(AuthError::AppNotFound)?;
    fresh_timestamp(p.get("timestamp"), now_ms).ok_or(AuthError::BadTimestamp)?;
    let sign = p.get("sign").ok_or(AuthError::BadSignature)?;
    let method = match p.get("signatureMethod") {
        Some(m) if m.eq_ignore_ascii_case("SHA256") => SignMethod::Sha256,
        _ => SignMethod::Md5,
    };
    if sign != api_sign(&app.secret, &p.deduped(), method) {
        return Err(AuthError::BadSignature);
    }
    Ok(app_id)
}

/// `POST /live/v3/channel/create-cpic-channel` (parameters in the query or a form).
pub fn create_cpic_channel(st: &mut SimState, app_id: &str, p: &Params) -> Reply {
    let Some(name) = p.get("name").filter(|n| !n.trim().is_empty()) else {
        return v3_err(400, "channel name is required.");
    };
    if name.chars().count() > MAX_NAME_CHARS {
        return v3_err(400, "channel name is over length.");
    }
    // (inferred) a missing scene is "not right" too.
    let scene = match p.get("scene") {
        Some(s @ ("alone" | "ppt")) => s,
        _ => return v3_err(400, "scene not right."),
    };
    let channel_object = match p.get("channelObject") {
        None => "out",
        Some(o @ ("in" | "out")) => o,
        Some(_) => return v3_err(400, "channelobject not right."),
    };
    let mut start_time = None;
    for key in ["startTime", "endTime"] {
        if let Some(v) = p.get(key) {
            if !is_13_digit(v) {
                return v3_err(400, PARAM_VALIDATE);
            }
            if key == "startTime" {
                start_time = v.parse().ok();
            }
        }
    }
    let passwd = random_password(6, true);
    let channel = match st.create_channel(passwd.clone(), name.to_owned()) {
        Ok(c) => c,
        Err(e) => return v3_err(400, &format!("cannot create more than {} channels.", e.0)),
    };
    channel.scene = scene.to_owned();
    channel.channel_object = channel_object.to_owned();
    channel.created_by = Some(app_id.to_owned());
    channel.start_time = start_time;
    let id = channel.id;
    let assistant_passwd = channel.assistant_password.clone();
    let auth_secret_key = p
        .get("authSecretKey")
        .map_or_else(|| random_password(10, false), str::to_owned);
    v3_ok(json!({
        "channelId": id,
        "passwd": passwd,
        "teacherLoginUrl": "https://live.polyv.net/teacher.html",
        "teacherClientUrl": format!("https://live.polyv.net/start-client.html?channelId={id}"),
        "watchUrl": format!("https://live.polyv.cn/watch/{id}"),
        "assistant": {
            "passwd": assistant_passwd,
            "loginUrl": "https://live.polyv.net/teacher.html",
            "account": format!("001{id}"),
        },
        "guest": {
            "webStartUrl": format!("https://live.polyv.net/web-start/guest?channelId=005{id}"),
            "passwd": random_password(6, false),
            "account": format!("005{id}"),
        },
        "authSecretKey": auth_secret_key,
    }))
}

/// A JSON field that has the wrong type: the caller answers `json format error`.
#[derive(Debug, PartialEq, Eq)]
struct WrongType;

/// An optional string field (`null` counts as absent).
fn opt_str<'v>(obj: &'v Map<String, Value>, key: &str) -> Result<Option<&'v str>, WrongType> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(WrongType),
    }
}

/// An optional integer field within `[min, max]`. Like Polyv's Java JSON binding, a string
/// of digits is accepted and an empty string is absent. (inferred)
fn opt_int(
    obj: &Map<String, Value>,
    key: &str,
    min: i64,
    max: i64,
) -> Result<Option<i64>, WrongType> {
    let v = match obj.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_i64().ok_or(WrongType)?,
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) => s.parse::<i64>().map_err(|_| WrongType)?,
        Some(_) => return Err(WrongType),
    };
    if (min..=max).contains(&v) {
        Ok(Some(v))
    } else {
        Err(WrongType)
    }
}

/// An optional `"Y"`/`"N"` switch.
fn opt_yn(obj: &Map<String, Value>, key: &str) -> Result<Option<bool>, WrongType> {
    match opt_str(obj, key)? {
        None => Ok(None),
        Some("Y") => Ok(Some(true)),
        Some("N") => Ok(Some(false)),
        Some(_) => Err(WrongType),
    }
}

/// What a valid basic/update body changes.
#[derive(Debug, Default, PartialEq)]
struct BasicUpdate {
    name: Option<String>,
    channel_passwd: Option<String>,
    publisher: Option<String>,
    start_time: Option<i64>,
    max_viewer: Option<i64>,
}

/// Type-checks and validates a basic/update body. `Err` carries the v3 message.
fn parse_basic_update(body: &[u8]) -> Result<BasicUpdate, &'static str> {
    let root: Value = serde_json::from_slice(body).map_err(|_| JSON_FORMAT)?;
    let root = root.as_object().ok_or(JSON_FORMAT)?;
    let i32r = (i64::from(i32::MIN), i64::from(i32::MAX));
    let mut up = BasicUpdate::default();
    match root.get("basicSetting") {
        None | Some(Value::Null) => {}
        Some(Value::Object(b)) => {
            let typed = (|| -> Result<(), WrongType> {
                up.name = opt_str(b, "name")?.map(str::to_owned);
                up.channel_passwd = opt_str(b, "channelPasswd")?.map(str::to_owned);
                up.publisher = opt_str(b, "publisher")?.map(str::to_owned);
                up.start_time = opt_int(b, "startTime", i64::MIN, i64::MAX)?;
                up.max_viewer = opt_int(b, "maxViewer", i32r.0, i32r.1)?;
                for key in ["pageView", "likes", "categoryId"] {
                    opt_int(b, key, i32r.0, i32r.1)?;
                }
                for key in ["coverImg", "splashImg", "desc"] {
                    opt_str(b, key)?;
                }
                for key in [
                    "splashEnabled",
                    "consultingMenuEnabled",
                    "maxViewerRestrict",
                ] {
                    opt_yn(b, key)?;
                }
                Ok(())
            })();
            typed.map_err(|_| JSON_FORMAT)?;
        }
        Some(_) => return Err(JSON_FORMAT),
    }
    match root.get("authSettings") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) if items.iter().all(Value::is_object) => {}
        Some(_) => return Err(JSON_FORMAT),
    }
    if let Some(pw) = &up.channel_passwd {
        // (inferred) an empty password is refused as well as an over-long one.
        if pw.is_empty() || pw.chars().count() > MAX_CHANNEL_PASSWD_CHARS {
            return Err(PARAM_VALIDATE);
        }
    }
    if let Some(name) = &up.name {
        // (inferred) the create endpoint's name rules apply here too.
        if name.trim().is_empty() {
            return Err(PARAM_VALIDATE);
        }
        if name.chars().count() > MAX_NAME_CHARS {
            return Err("channel name is over length.");
        }
    }
    if up.max_viewer.is_some_and(|m| m < 0) {
        return Err(PARAM_VALIDATE); // (inferred)
    }
    Ok(up)
}

/// `POST /live/v3/channel/basic/update?appId&timestamp&channelId&sign` with a JSON body.
pub fn basic_update(st: &mut SimState, p: &Params, body: &[u8]) -> Reply {
    let Some(channel_id) = p.get("channelId").filter(|id| st.channel(id).is_some()) else {
        return v3_err(400, PARAM_VALIDATE);
    };
    let up = match parse_basic_update(body) {
        Ok(up) => up,
        Err(msg) => return v3_err(400, msg),
    };
    let Some(ch) = st.channel_mut(channel_id) else {
        return v3_err(400, PARAM_VALIDATE);
    };
    if let Some(v) = up.name {
        ch.name = v;
    }
    if let Some(v) = up.channel_passwd {
        ch.password = v;
    }
    if let Some(v) = up.publisher {
        ch.publisher = v;
    }
    if let Some(v) = up.max_viewer {
        ch.max_viewer = v;
    }
    if let Some(v) = up.start_time {
        ch.start_time = Some(v);
    }
    v3_ok(json!(""))
}

/// Polyv's MR password rule: 6-16 characters with at least one letter and one digit.
fn mr_password_ok(p: &str) -> bool {
    (6..=16).contains(&p.chars().count())
        && p.chars().any(|c| c.is_ascii_alphabetic())
        && p.chars().any(|c| c.is_ascii_digit())
}

/// What a valid mr/create body asks for.
#[derive(Debug, PartialEq)]
struct MrCreate {
    name: String,
    start_time: Option<i64>,
    channel_passwd: Option<String>,
    assistant_passwd: Option<String>,
}

/// Type-checks and validates an mr/create body. `Err` carries the v4 `error.desc`.
fn parse_mr_create(body: &[u8]) -> Result<MrCreate, &'static str> {
    let root: Value = serde_json::from_slice(body).map_err(|_| JSON_FORMAT)?;
    let obj = root.as_object().ok_or(JSON_FORMAT)?;
    let typed = (|| -> Result<_, WrongType> {
        let name = opt_str(obj, "name")?;
        let start_time = opt_int(obj, "startTime", 0, i64::MAX)?;
        opt_int(obj, "categoryId", i64::from(i32::MIN), i64::from(i32::MAX))?;
        let channel_passwd = opt_str(obj, "channelPasswd")?;
        let assistant_passwd = opt_str(obj, "assistantPasswd")?;
        opt_str(obj, "splashImg")?;
        opt_str(obj, "subAccount")?;
        Ok((name, start_time, channel_passwd, assistant_passwd))
    })();
    let (name, start_time, channel_passwd, assistant_passwd) = typed.map_err(|_| JSON_FORMAT)?;
    let name = name
        .filter(|n| !n.trim().is_empty())
        .ok_or("name is required")?;
    if name.chars().count() > MAX_MR_NAME_CHARS {
        return Err("name must be at most 100 characters");
    }
    // (inferred) an empty password counts as not given, so the system generates one.
    let channel_passwd = channel_passwd.filter(|s| !s.is_empty());
    let assistant_passwd = assistant_passwd.filter(|s| !s.is_empty());
    if channel_passwd.is_some_and(|p| !mr_password_ok(p)) {
        return Err("channelPasswd must be 6-16 characters with letters and digits");
    }
    if assistant_passwd.is_some_and(|p| !mr_password_ok(p)) {
        return Err("assistantPasswd must be 6-16 characters with letters and digits");
    }
    Ok(MrCreate {
        name: name.to_owned(),
        start_time,
        channel_passwd: channel_passwd.map(str::to_owned),
        assistant_passwd: assistant_passwd.map(str::to_owned),
    })
}

/// `POST /live/v4/channel/mr/create?appId&timestamp&sign` with a JSON body.
pub fn mr_create(st: &mut SimState, app_id: &str, body: &[u8]) -> Reply {
    let req = match parse_mr_create(body) {
        Ok(r) => r,
        Err(desc) => return v4_err(400, E_VALIDATION, desc),
    };
    let channel_passwd = req
        .channel_passwd
        .unwrap_or_else(|| random_password(6, true));
    let channel = match st.create_channel(channel_passwd.clone(), req.name.clone()) {
        Ok(c) => c,
        Err(e) => {
            return v4_err(
                400,
                E_VALIDATION,
                &format!("cannot create more than {} channels.", e.0),
            )
        }
    };
    if let Some(a) = req.assistant_passwd {
        channel.assistant_password = a;
    }
    channel.created_by = Some(app_id.to_owned());
    channel.start_time = req.start_time;
    let id = channel.id;
    v4_ok(json!({
        "channelId": id.to_string(),
        "name": req.name,
        "userId": SIM_USER_ID,
        "channelPasswd": channel_passwd,
        "assistantAccount": format!("001{id}"),
        "assistantPasswd": channel.assistant_password,
    }))
}

/// `GET /live/v3/channel/stream/get-push-url?appId&timestamp&channelId&sign`.
pub fn get_push_url(st: &SimState, p: &Params, now_ms: i64) -> Reply {
    let Some(ch) = p.get("channelId").and_then(|id| st.channel(id)) else {
        return v3_err(400, PARAM_VALIDATE);
    };
    let mut url = format!("{}{}", st.rtmp_base, ch.stream_key);
    if let Some(suffix) = authkey::suffix(st, &ch.stream_key, now_ms) {
        url.push_str(&suffix);
    }
    v3_ok(json!(url))
}

/// `GET` or `POST /live/v3/channel/chat/count-online-user?appId&timestamp&channelId&sign`:
/// `data` is the channel's viewer count, a number (how polyv-live-cli reads it). (inferred)
/// an unknown or missing channel is `param validate error`.
pub fn count_online_user(st: &SimState, p: &Params) -> Reply {
    match p.get("channelId").and_then(|id| st.channel(id)) {
        Some(ch) => v3_ok(json!(ch.viewers)),
        None => v3_err(400, PARAM_VALIDATE),
    }
}

/// `GET /live/v4/channel/live-status/list?appId&timestamp&channelIds&sign`.
pub fn live_status_list(st: &SimState, p: &Params) -> Reply {
    let Some(ids) = p.get("channelIds") else {
        return v4_err(400, E_VALIDATION, "channelIds is required");
    };
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for raw in ids.split(',').map(str::trim) {
        if let Some(ch) = st.channel(raw) {
            if !seen.contains(&ch.id) {
                seen.push(ch.id);
                out.push(json!({"channelId": ch.id.to_string(), "liveStatus": ch.live_status}));
            }
        }
    }
    v4_ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Channel;
    use crate::util::parse_urlencoded;

    const NOW: i64 = 1_660_270_926_732;
    const SECRET: &str = "fsq2k5weced1h8vui657xtdva66whf0g";

    fn sim() -> SimState {
        let mut s = SimState::new("rtmp://h/live/".into(), 3);
        s.add_app("g4rqgmmjuo".into(), SECRET.into());
        s.add_channel(Channel::new(153884, "461666".into(), "demo".into()));
        s
    }

    fn signed(extra: &str, method: SignMethod) -> Params {
        let mut p = parse_urlencoded(format!("appId=g4rqgmmjuo&timestamp={NOW}{extra}").as_bytes());
        let s = api_sign(SECRET, &p.deduped(), method);
        p.0.push(("sign".into(), s));
        p
    }

    #[test]
    fn document_vector_authenticates() {
        let p = parse_urlencoded(b"appId=g4rqgmmjuo&channelIds=2477096,2272655&endDay=2022-06-18&startDay=2022-05-20&timestamp=1660270926732&sign=0D2BDA2FD04D93A2B8832B91FD973C4D");
        assert_eq!(authenticate(&sim(), &p, NOW), Ok("g4rqgmmjuo"));
    }

    #[test]
    fn auth_check_order() {
        let s = sim();
        let a = |q: &str| authenticate(&s, &parse_urlencoded(q.as_bytes()), NOW).map(str::to_owned);
        assert_eq!(a("timestamp=1&sign=x"), Err(AuthError::AppIdRequired));
        assert_eq!(a("appId=&timestamp=1"), Err(AuthError::AppIdRequired));
        assert_eq!(a("appId=nope&timestamp=1"), Err(AuthError::AppNotFound));
        assert_eq!(
            a("appId=g4rqgmmjuo&timestamp=1&sign=x"),
            Err(AuthError::BadTimestamp)
        );
        assert_eq!(a("appId=g4rqgmmjuo&sign=x"), Err(AuthError::BadTimestamp));
        assert_eq!(
            a(&format!("appId=g4rqgmmjuo&timestamp={NOW}")),
            Err(AuthError::BadSignature)
        );
        // Lowercase hex is not Polyv's format.
        let mut p = signed("", SignMethod::Md5);
        let last = p.0.len() - 1;
        p.0[last].1 = p.0[last].1.to_ascii_lowercase();
        assert_eq!(authenticate(&s, &p, NOW), Err(AuthError::BadSignature));
        // SHA-256 variant.
        let p = signed("&signatureMethod=SHA256", SignMethod::Sha256);
        assert!(authenticate(&s, &p, NOW).is_ok());
        let p = signed("&signatureMethod=SHA256", SignMethod::Md5);
        assert_eq!(authenticate(&s, &p, NOW), Err(AuthError::BadSignature));
        assert_eq!(AuthError::BadSignature.reply(Flavor::V3).status, 403);
        let v4 = AuthError::AppNotFound.reply(Flavor::V4).value();
        assert_eq!(v4["error"]["code"], 20001);
    }

    fn create(s: &mut SimState, q: &str) -> Value {
        create_cpic_channel(s, "g4rqgmmjuo", &parse_urlencoded(q.as_bytes())).value()
    }

    #[test]
    fn create_validation_and_success() {
        let mut s = sim();
        assert_eq!(
            create(&mut s, "scene=alone")["message"],
            "channel name is required."
        );
        let long = "x".repeat(61);
        assert_eq!(
            create(&mut s, &format!("name={long}&scene=alone"))["message"],
            "channel name is over length."
        );
        assert_eq!(create(&mut s, "name=a")["message"], "scene not right.");
        assert_eq!(
            create(&mut s, "name=a&scene=x")["message"],
            "scene not right."
        );
        assert_eq!(
            create(&mut s, "name=a&scene=ppt&channelObject=up")["message"],
            "channelobject not right."
        );
        let v = create(&mut s, "name=a&scene=ppt&startTime=12");
        assert_eq!(
            (v["message"].clone(), v["data"].clone()),
            (json!(PARAM_VALIDATE), json!(400))
        );
        let v = create(
            &mut s,
            "name=a&scene=ppt&channelObject=in&startTime=1779254040000",
        );
        assert_eq!(v["code"], 200);
        assert_eq!(v["data"]["channelId"], 1830948);
        let pw = v["data"]["passwd"].as_str().unwrap();
        assert_eq!(s.channels[&1830948].password, pw);
        assert_eq!(v["data"]["assistant"]["account"], "0011830948");
        assert_eq!(v["data"]["guest"]["account"], "0051830948");
        assert_eq!(
            create(&mut s, "name=b&scene=alone")["data"]["channelId"],
            1830949
        );
        assert_eq!(
            create(&mut s, "name=c&scene=alone")["message"],
            "cannot create more than 3 channels."
        );
    }

    #[test]
    fn basic_update_bodies() {
        let mut s = sim();
        let p = parse_urlencoded(b"channelId=153884");
        let up = |s: &mut SimState, body: &str| basic_update(s, &p, body.as_bytes()).value();
        for bad in [
            "",
            "not json",
            "[]",
            r#"{"basicSetting":1}"#,
            r#"{"basicSetting":{"name":5}}"#,
            r#"{"basicSetting":{"maxViewer":1.5}}"#,
            r#"{"basicSetting":{"maxViewer":"many"}}"#,
            r#"{"basicSetting":{"maxViewer":99999999999}}"#,
            r#"{"basicSetting":{"startTime":true}}"#,
            r#"{"basicSetting":{"splashEnabled":"yes"}}"#,
            r#"{"authSettings":{}}"#,
            r#"{"authSettings":[1]}"#,
        ] {
            let v = up(&mut s, bad);
            assert_eq!(v["message"], JSON_FORMAT, "{bad}");
            assert_eq!(v["data"], 400);
        }
        let v = up(
            &mut s,
            r#"{"basicSetting":{"channelPasswd":"12345678901234567"}}"#,
        );
        assert_eq!(v["message"], PARAM_VALIDATE);
        let v = up(
            &mut s,
            r#"{"basicSetting":{"name":"测试","channelPasswd":"10086","publisher":"p","maxViewer":"20","startTime":1557888134000,"splashEnabled":"Y"},"authSettings":[{"rank":1}]}"#,
        );
        assert_eq!(
            v,
            json!({"code":200,"status":"success","message":"","data":""})
        );
        let c = &s.channels[&153884];
        assert_eq!(
            (c.name.as_str(), c.password.as_str(), c.max_viewer),
            ("测试", "10086", 20)
        );
        let unknown = parse_urlencoded(b"channelId=42");
        let v = basic_update(&mut s, &unknown, b"{}").value();
        assert_eq!(v["message"], PARAM_VALIDATE);
    }

    #[test]
    fn mr_create_bodies() {
        let mut s = sim();
        let mr = |s: &mut SimState, body: &str| mr_create(s, "g4rqgmmjuo", body.as_bytes()).value();
        assert_eq!(mr(&mut s, "{")["error"]["desc"], JSON_FORMAT);
        assert_eq!(mr(&mut s, r#"{"name":1}"#)["error"]["desc"], JSON_FORMAT);
        assert_eq!(
            mr(&mut s, r#"{"name":"a","startTime":"soon"}"#)["error"]["desc"],
            JSON_FORMAT
        );
        assert_eq!(mr(&mut s, "{}")["error"]["desc"], "name is required");
        let long = format!(r#"{{"name":"{}"}}"#, "x".repeat(101));
        assert_eq!(mr(&mut s, &long)["error"]["code"], E_VALIDATION);
        for pw in ["abc12", "abcdefgh", "12345678", "abcdefgh123456789"] {
            let body = format!(r#"{{"name":"a","channelPasswd":"{pw}"}}"#);
            assert_eq!(
                mr(&mut s, &body)["error"]["desc"],
                "channelPasswd must be 6-16 characters with letters and digits"
            );
        }
        let v = mr(
            &mut s,
            r#"{"name":"MR","startTime":"1779254040000","channelPasswd":"abc123"}"#,
        );
        assert_eq!(v["success"], true);
        assert_eq!(v["data"]["channelId"], "1830948");
        assert_eq!(v["data"]["channelPasswd"], "abc123");
        assert_eq!(v["data"]["assistantAccount"], "0011830948");
        assert!(mr_password_ok(
            v["data"]["assistantPasswd"].as_str().unwrap()
        ));
        assert_eq!(s.channels[&1830948].password, "abc123");
    }

    #[test]
    fn push_url_and_status() {
        let mut s = sim();
        s.faults.auth_key_ttl_s = 0;
        let v = get_push_url(&s, &parse_urlencoded(b"channelId=153884"), NOW).value();
        let url = v["data"].as_str().unwrap().to_owned();
        assert!(url.starts_with("rtmp://h/live/") && url.len() == "rtmp://h/live/".len() + 27);
        s.faults.auth_key_ttl_s = 60;
        let v = get_push_url(&s, &parse_urlencoded(b"channelId=153884"), NOW).value();
        let key = format!("?auth_key={}-0-0-", NOW / 1000 + 60);
        let data = v["data"].as_str().unwrap();
        assert!(data.starts_with(&format!("{url}{key}")), "{v}");
        let v = get_push_url(&s, &parse_urlencoded(b"channelId=1"), NOW).value();
        assert_eq!(v["message"], PARAM_VALIDATE);

        let v = live_status_list(&s, &parse_urlencoded(b"channelIds=153884,%201,153884")).value();
        assert_eq!(
            v["data"],
            json!([{"channelId":"153884","liveStatus":"unStart"}])
        );
        let v = live_status_list(&s, &Params::default()).value();
        assert_eq!(v["error"]["code"], E_VALIDATION);
    }

    #[test]
    fn online_count_is_a_number() {
        let mut s = sim();
        s.channels.get_mut(&153884).unwrap().viewers = 42;
        let v = count_online_user(&s, &parse_urlencoded(b"channelId=153884")).value();
        assert_eq!(
            v,
            json!({"code":200,"status":"success","message":"","data":42})
        );
        for q in ["channelId=1", ""] {
            let v = count_online_user(&s, &parse_urlencoded(q.as_bytes())).value();
            assert_eq!(v["message"], PARAM_VALIDATE, "{q}");
        }
    }
}
