//! Request dispatch: which path is which endpoint, the fault switches, the request log.
//!
//! [`handle`] is synchronous and takes the time as an argument, so the whole request path
//! (faults, routing, checks, logging) is unit-testable without a socket. Latency is the one
//! fault applied by the server, before calling it. Lines marked (inferred) are guesses from
//! /work/shared/polyv-api/README.md.

use crate::api::{self, authenticate};
use crate::control;
use crate::push;
use crate::reply::{
    Flavor, Reply, E_INTERNAL, E_NOT_FOUND, E_RATE_LIMIT, INTERNAL_ERROR, QPS_EXCEEDED,
};
use crate::state::{Faults, SimState};
use crate::util::{parse_urlencoded, shifted, Params};

/// One HTTP request, already read.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// Whether the body is `application/x-www-form-urlencoded` (any parameters after `;`).
    fn is_form(&self) -> bool {
        self.content_type.is_some_and(|ct| {
            ct.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
    }

    /// URL query parameters followed by form parameters (a JSON body never takes part).
    fn params(&self) -> Params {
        let mut p = parse_urlencoded(self.query.as_bytes());
        if self.is_form() {
            p.extend_from(parse_urlencoded(self.body));
        }
        p
    }
}

/// Whether a path belongs to the control API.
pub fn is_control(path: &str) -> bool {
    path == "/_sim" || path.starts_with("/_sim/")
}

/// Handles one request. `system_now_ms` is the real clock; the fault clock offset is added
/// here. Non-control requests are recorded in the request log with their status.
pub fn handle(st: &mut SimState, req: &Request<'_>, system_now_ms: i64) -> Reply {
    if is_control(req.path) {
        return control::handle(st, req.method, req.path, req.body);
    }
    let now = shifted(system_now_ms, st.faults.clock_offset_ms);
    let flavor = Flavor::for_path(req.path);
    let reply = intercept(&mut st.faults, flavor).unwrap_or_else(|| route(st, req, now));
    st.record(req.method, req.path, reply.status, now);
    reply
}

/// The fault switches that replace the real answer, in this order (inferred): a pending
/// `error500`, `error500_always`, `garbage`, `rate_limit`.
fn intercept(f: &mut Faults, flavor: Flavor) -> Option<Reply> {
    if f.error500 > 0 {
        f.error500 -= 1;
        return Some(flavor.error(500, E_INTERNAL, INTERNAL_ERROR));
    }
    if f.error500_always {
        return Some(flavor.error(500, E_INTERNAL, INTERNAL_ERROR));
    }
    if f.garbage {
        return Some(Reply::garbage());
    }
    if f.rate_limit {
        return Some(flavor.error(400, E_RATE_LIMIT, QPS_EXCEEDED));
    }
    None
}

/// The channel id of a rename path, `/v1/channels/{id}/update` or `/live/v1/...`.
fn rename_channel_id(path: &str) -> Option<&str> {
    let rest = path
        .strip_prefix("/v1/channels/")
        .or_else(|| path.strip_prefix("/live/v1/channels/"))?;
    let id = rest.strip_suffix("/update")?;
    (!id.is_empty() && !id.contains('/')).then_some(id)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint<'a> {
    Login,
    Notify,
    Rename(&'a str),
    ListUsers,
    CreateCpic,
    BasicUpdate,
    MrCreate,
    PushUrl,
    LiveStatus,
}

impl Endpoint<'_> {
    fn method(self) -> &'static str {
        match self {
            Endpoint::ListUsers | Endpoint::PushUrl | Endpoint::LiveStatus => "GET",
            _ => "POST",
        }
    }
}

fn endpoint(path: &str) -> Option<Endpoint<'_>> {
    Some(match path {
        "/api/v2/teacher_login.json" | "/live/api/v2/teacher_login.json" => Endpoint::Login,
        "/live/client/notify_stream2.json" => Endpoint::Notify,
        "/front/listUsers" => Endpoint::ListUsers,
        "/live/v3/channel/create-cpic-channel" => Endpoint::CreateCpic,
        "/live/v3/channel/basic/update" => Endpoint::BasicUpdate,
        "/live/v4/channel/mr/create" => Endpoint::MrCreate,
        "/live/v3/channel/stream/get-push-url" => Endpoint::PushUrl,
        "/live/v4/channel/live-status/list" => Endpoint::LiveStatus,
        p => Endpoint::Rename(rename_channel_id(p)?),
    })
}

fn route(st: &mut SimState, req: &Request<'_>, now: i64) -> Reply {
    let flavor = Flavor::for_path(req.path);
    let Some(ep) = endpoint(req.path) else {
        return flavor.error(404, E_NOT_FOUND, "not found");
    };
    if req.method != ep.method() {
        return flavor.error(405, E_NOT_FOUND, "method not allowed"); // (inferred)
    }
    let p = req.params();
    match ep {
        Endpoint::Login => push::teacher_login(st, &p, now),
        Endpoint::Notify => push::notify_stream2(st, &p, now),
        Endpoint::Rename(id) => push::rename(st, id, &p, now),
        Endpoint::ListUsers => push::list_users(st, &p),
        _ => {
            let app_id = match authenticate(st, &p, now) {
                Ok(a) => a.to_owned(),
                Err(e) => return e.reply(flavor),
            };
            match ep {
                Endpoint::CreateCpic => api::create_cpic_channel(st, &app_id, &p),
                Endpoint::BasicUpdate => api::basic_update(st, &p, req.body),
                Endpoint::MrCreate => api::mr_create(st, &app_id, req.body),
                Endpoint::PushUrl => api::get_push_url(st, &p, now),
                _ => api::live_status_list(st, &p),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reply::JSON;
    use crate::state::Channel;
    use polypush::platform::sign::{api_sign, login_passwd, login_sign, SignMethod};
    use serde_json::json;

    const NOW: i64 = 1_700_000_000_000;
    const SECRET: &str = "simsecret0123456789abcdefghijklm";

    fn sim() -> SimState {
        let mut s = SimState::new("rtmp://127.0.0.1:1935/live/".into(), 50);
        s.add_app("simappid01".into(), SECRET.into());
        s.add_channel(Channel::new(153884, "461666".into(), "demo".into()));
        s
    }

    fn req<'a>(method: &'a str, path: &'a str, query: &'a str, body: &'a [u8]) -> Request<'a> {
        Request {
            method,
            path,
            query,
            content_type: Some("application/x-www-form-urlencoded; charset=UTF-8"),
            body,
        }
    }

    fn login_body(ts: i64) -> String {
        let pw = login_passwd("461666");
        let sign = login_sign("153884", &pw, ts as u64);
        format!("number=153884&account=153884&passwd={pw}&timestamp={ts}&sign={sign}")
    }

    #[test]
    fn routes_and_aliases() {
        let mut s = sim();
        let body = login_body(NOW);
        for path in [
            "/api/v2/teacher_login.json",
            "/live/api/v2/teacher_login.json",
        ] {
            let r = handle(&mut s, &req("POST", path, "", body.as_bytes()), NOW);
            assert_eq!(r.value()["status"], "ok", "{path}");
        }
        let r = handle(
            &mut s,
            &req("GET", "/api/v2/teacher_login.json", "", b""),
            NOW,
        );
        assert_eq!(r.status, 405);
        let r = handle(&mut s, &req("GET", "/nowhere", "", b""), NOW);
        assert_eq!(
            (r.status, r.value()),
            (
                404,
                json!({"code":404,"status":"error","message":"not found","data":""})
            )
        );
        assert_eq!(r.content_type, JSON);
        assert_eq!(
            rename_channel_id("/v1/channels/153884/update"),
            Some("153884")
        );
        assert_eq!(rename_channel_id("/live/v1/channels/1/update"), Some("1"));
        assert_eq!(rename_channel_id("/v1/channels//update"), None);
        assert_eq!(rename_channel_id("/v1/channels/1/2/update"), None);
        assert_eq!(s.requests.len(), 4);
        assert_eq!(s.requests[3].status, 404);
        assert_eq!(s.requests[0].seq, 1);
    }

    #[test]
    fn json_body_is_not_signed_and_form_only_when_form() {
        let mut s = sim();
        let q = format!("appId=simappid01&timestamp={NOW}&channelId=153884");
        let p = parse_urlencoded(q.as_bytes());
        let sign = api_sign(SECRET, &p.deduped(), SignMethod::Md5);
        let q = format!("{q}&sign={sign}");
        let body = br#"{"basicSetting":{"channelPasswd":"abc"}}"#;
        let r = handle(
            &mut s,
            &Request {
                content_type: Some("application/json"),
                ..req("POST", "/live/v3/channel/basic/update", &q, body)
            },
            NOW,
        );
        assert_eq!(r.value()["code"], 200, "{}", r.body);
        assert_eq!(s.channels[&153884].password, "abc");
        // The same request with a form body: the form takes part in the signature.
        let r = handle(
            &mut s,
            &req("POST", "/live/v3/channel/basic/update", &q, b"x=1"),
            NOW,
        );
        assert_eq!(r.status, 403);
        // Form parameters alone can carry the whole signed request.
        let form = format!("name=n&scene=alone&appId=simappid01&timestamp={NOW}");
        let sign = api_sign(
            SECRET,
            &parse_urlencoded(form.as_bytes()).deduped(),
            SignMethod::Md5,
        );
        let form = format!("{form}&sign={sign}");
        let r = handle(
            &mut s,
            &req(
                "POST",
                "/live/v3/channel/create-cpic-channel",
                "",
                form.as_bytes(),
            ),
            NOW,
        );
        assert_eq!(r.value()["code"], 200, "{}", r.body);
    }

    #[test]
    fn v4_auth_errors_use_v4_envelope() {
        let mut s = sim();
        let r = handle(
            &mut s,
            &req(
                "GET",
                "/live/v4/channel/live-status/list",
                "channelIds=1",
                b"",
            ),
            NOW,
        );
        let v = r.value();
        assert_eq!((r.status, v["error"]["code"].clone()), (400, json!(20004)));
        assert_eq!(v["error"]["desc"], "appId is required.");
    }

    #[test]
    fn faults_in_order_and_clock_offset() {
        let mut s = sim();
        let body = login_body(NOW);
        let login = |s: &mut SimState| {
            handle(
                s,
                &req("POST", "/api/v2/teacher_login.json", "", body.as_bytes()),
                NOW,
            )
        };
        s.faults.error500 = 1;
        s.faults.garbage = true;
        let r = login(&mut s);
        assert_eq!(
            (r.status, r.value()["message"].clone()),
            (500, json!(INTERNAL_ERROR))
        );
        assert_eq!(s.faults.error500, 0);
        let r = login(&mut s);
        assert_eq!((r.status, r.content_type), (200, crate::reply::HTML));
        s.faults.garbage = false;
        s.faults.rate_limit = true;
        let r = login(&mut s);
        assert_eq!(
            (r.status, r.value()["message"].clone()),
            (400, json!(QPS_EXCEEDED))
        );
        s.faults.rate_limit = false;
        // A simulator clock 4 minutes ahead makes a correct client's timestamp stale.
        s.faults.clock_offset_ms = 240_000;
        let r = login(&mut s);
        assert_eq!(r.value()["msg"], "invalid timestamp.");
        assert_eq!(s.requests.last().unwrap().at_ms, NOW + 240_000);
        // Control requests are neither faulted nor logged.
        s.faults.error500_always = true;
        let n = s.requests.len();
        let r = handle(&mut s, &req("GET", "/_sim/faults", "", b""), NOW);
        assert_eq!(r.status, 200);
        assert_eq!(s.requests.len(), n);
    }
}
