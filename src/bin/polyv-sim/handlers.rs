//! Request dispatch: which host and path is which endpoint, the fault switches, the rate
//! limit, the request log.
//!
//! [`handle`] is synchronous and takes the time as an argument, so the whole request path
//! (faults, counting, routing, checks, logging) is unit-testable without a socket. Latency is
//! the one fault applied by the server, before calling it. Lines marked (inferred) are
//! guesses from /work/shared/polyv-api/README.md.

use std::net::IpAddr;

use crate::api::{self, authenticate};
use crate::control;
use crate::faults::Faults;
use crate::hosts;
use crate::push;
use crate::reply::{
    host_not_found, with_string_code, Flavor, Reply, E_INTERNAL, E_NOT_FOUND, E_RATE_LIMIT,
    INTERNAL_ERROR, QPS_EXCEEDED,
};
use crate::state::{Seen, SimState};
use crate::util::{parse_urlencoded, shifted, Params};

/// One HTTP request, already read.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub content_type: Option<&'a str>,
    pub body: &'a [u8],
    /// The `Host` header as a name ([`hosts::host_name`]), if there was one.
    pub host: Option<&'a str>,
    /// The peer's IP; `None` only for in-process tests.
    pub client_ip: Option<IpAddr>,
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

    /// Whether the request is addressed to `host`: by its `Host` header, or (for clients that
    /// reach every host through one loopback address) by the host its path belongs to.
    fn is_for(&self, host: &str) -> bool {
        self.host == Some(host) || hosts::real_host(self.path) == Some(host)
    }

    fn seen(&self) -> Seen<'_> {
        Seen {
            method: self.method,
            host: self.host,
            path: self.path,
            ip: self.client_ip,
        }
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
        return control::handle(st, req.method, req.path, req.body, system_now_ms);
    }
    let now = shifted(system_now_ms, st.faults.clock_offset_ms);
    let mut reply = answer(st, req, now);
    if st.faults.string_codes {
        reply = with_string_code(reply);
    }
    st.record(req.seen(), reply.status, now);
    reply
}

/// In this order: a host switched off (`not_found_hosts`), Polyv's rate limit (requests to
/// api.polyv.net, per client IP; blocked ones are answered by the host whatever the path),
/// `--strict-hosts` (a path on a host that does not serve it), the fault switches, then the
/// endpoint. (inferred)
fn answer(st: &mut SimState, req: &Request<'_>, now: i64) -> Reply {
    let flavor = Flavor::for_path(req.path);
    if st.faults.not_found_hosts.iter().any(|h| req.is_for(h)) {
        return host_not_found();
    }
    if let Some(ip) = req.client_ip.filter(|_| req.is_for(hosts::API)) {
        let rl = &st.faults.rate_limit;
        if !st.limiter.admit(ip, now, rl.per_10s, rl.block_s) {
            return flavor.error(400, E_RATE_LIMIT, QPS_EXCEEDED);
        }
    }
    if st.strict_hosts && !hosts::served_on(req.host, req.path) {
        return host_not_found();
    }
    intercept(&mut st.faults, flavor).unwrap_or_else(|| route(st, req, now))
}

/// The fault switches that replace the real answer, in this order (inferred): a pending
/// `error500`, `error500_always`, `garbage`, `rate_limit.always`.
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
    if f.rate_limit.always {
        return Some(flavor.error(400, E_RATE_LIMIT, QPS_EXCEEDED));
    }
    None
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
    CountOnline,
}

impl Endpoint<'_> {
    fn allows(self, method: &str) -> bool {
        match self {
            Endpoint::ListUsers | Endpoint::PushUrl | Endpoint::LiveStatus => method == "GET",
            // polyv-live-cli tries POST first and falls back to GET.
            Endpoint::CountOnline => method == "GET" || method == "POST",
            _ => method == "POST",
        }
    }
}

/// Path-only routing (every host serves every path; `--strict-hosts` is checked before).
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
        "/live/v3/channel/chat/count-online-user" => Endpoint::CountOnline,
        p => Endpoint::Rename(hosts::rename_channel_id(p)?.1),
    })
}

fn route(st: &mut SimState, req: &Request<'_>, now: i64) -> Reply {
    let flavor = Flavor::for_path(req.path);
    let Some(ep) = endpoint(req.path) else {
        return flavor.error(404, E_NOT_FOUND, "not found");
    };
    if !ep.allows(req.method) {
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
                Endpoint::CountOnline => api::count_online_user(st, &p),
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
            host: None,
            client_ip: None,
        }
    }

    const IP: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn signed_query(extra: &str) -> String {
        let q = format!("appId=simappid01&timestamp={NOW}{extra}");
        let sign = api_sign(
            SECRET,
            &parse_urlencoded(q.as_bytes()).deduped(),
            SignMethod::Md5,
        );
        format!("{q}&sign={sign}")
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
        s.faults.rate_limit.always = true;
        let r = login(&mut s);
        assert_eq!(
            (r.status, r.value()["message"].clone()),
            (400, json!(QPS_EXCEEDED))
        );
        s.faults.rate_limit.always = false;
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

    #[test]
    fn strict_hosts_serve_each_path_on_its_host_only() {
        let mut s = sim();
        s.strict_hosts = true;
        let body = login_body(NOW);
        let login = |s: &mut SimState, host: Option<&str>, path: &str| {
            handle(
                s,
                &Request {
                    host,
                    ..req("POST", path, "", body.as_bytes())
                },
                NOW,
            )
        };
        let new_login = "/live/api/v2/teacher_login.json";
        let old_login = "/api/v2/teacher_login.json";
        assert_eq!(
            login(&mut s, Some(hosts::API), new_login).value()["status"],
            "ok"
        );
        assert_eq!(
            login(&mut s, Some(hosts::LIVE), old_login).value()["status"],
            "ok"
        );
        for (host, path) in [
            (Some(hosts::LIVE), new_login),
            (Some(hosts::API), old_login),
            (Some(hosts::OLD_API), old_login),
            (Some("api.chat.polyv.net"), old_login),
            (Some("127.0.0.1"), new_login),
            (None, new_login),
        ] {
            let r = login(&mut s, host, path);
            assert_eq!(
                (r.status, r.content_type),
                (404, crate::reply::HTML),
                "{host:?}{path}"
            );
        }
        let r = handle(
            &mut s,
            &Request {
                host: Some(hosts::CHAT),
                ..req("GET", "/front/listUsers", "roomId=153884", b"")
            },
            NOW,
        );
        assert_eq!(r.value()["count"], 0);
        // Control requests work on any host.
        let r = handle(&mut s, &req("GET", "/_sim/faults", "", b""), NOW);
        assert_eq!(r.status, 200);
        let hosts_seen: Vec<Option<String>> = s.requests.iter().map(|r| r.host.clone()).collect();
        assert_eq!(hosts_seen[0].as_deref(), Some(hosts::API));
        assert_eq!(hosts_seen[1].as_deref(), Some(hosts::LIVE));
    }

    #[test]
    fn a_host_switched_off_answers_404_to_everything() {
        let mut s = sim();
        s.faults.not_found_hosts = vec![hosts::API.to_owned()];
        let body = login_body(NOW);
        // Path-only: the path's real host counts as much as the Host header.
        let r = handle(
            &mut s,
            &req(
                "POST",
                "/live/api/v2/teacher_login.json",
                "",
                body.as_bytes(),
            ),
            NOW,
        );
        assert_eq!(r.status, 404);
        let r = handle(
            &mut s,
            &req("POST", "/api/v2/teacher_login.json", "", body.as_bytes()),
            NOW,
        );
        assert_eq!(r.value()["status"], "ok");
        let r = handle(
            &mut s,
            &Request {
                host: Some(hosts::API),
                ..req("GET", "/front/listUsers", "", b"")
            },
            NOW,
        );
        assert_eq!(r.status, 404);
    }

    #[test]
    fn rate_limit_counts_api_requests_per_ip() {
        let mut s = sim();
        s.faults.rate_limit.per_10s = 3;
        s.faults.rate_limit.block_s = 300;
        let q = signed_query("&channelId=153884");
        let get = |s: &mut SimState, ip: Option<IpAddr>, path: &str, at: i64| {
            handle(
                s,
                &Request {
                    client_ip: ip,
                    ..req("GET", path, &q, b"")
                },
                at,
            )
        };
        let push_url = "/live/v3/channel/stream/get-push-url";
        for _ in 0..3 {
            assert_eq!(get(&mut s, Some(IP), push_url, NOW).status, 200);
        }
        // Another host's path is not counted.
        assert_eq!(get(&mut s, Some(IP), "/front/listUsers", NOW).status, 200);
        let r = get(&mut s, Some(IP), push_url, NOW);
        assert_eq!(
            (r.status, r.value()["message"].clone()),
            (400, json!(QPS_EXCEEDED))
        );
        let r = get(&mut s, Some(IP), "/live/v4/channel/live-status/list", NOW);
        assert_eq!(r.value()["error"]["desc"], QPS_EXCEEDED);
        assert_eq!(get(&mut s, Some(IP), "/front/listUsers", NOW).status, 200);
        // Another client, and in-process requests without an IP, are not blocked.
        let other = Some(IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(get(&mut s, other, push_url, NOW).status, 200);
        assert_eq!(get(&mut s, None, push_url, NOW).status, 200);
        // The block ends 300 s later on the simulator's clock (the timestamp goes stale).
        assert_eq!(
            get(&mut s, Some(IP), push_url, NOW + 299_999).value()["message"],
            QPS_EXCEEDED
        );
        let r = get(&mut s, Some(IP), push_url, NOW + 300_000);
        assert_eq!(r.value()["message"], crate::reply::INVALID_TIMESTAMP);
        assert_eq!(s.requests.last().unwrap().ip.as_deref(), Some("127.0.0.1"));
    }

    #[test]
    fn count_online_user_get_or_post_and_string_codes() {
        let mut s = sim();
        s.channels.get_mut(&153884).unwrap().viewers = 5;
        let q = signed_query("&channelId=153884");
        let path = "/live/v3/channel/chat/count-online-user";
        for method in ["GET", "POST"] {
            let r = handle(&mut s, &req(method, path, &q, b""), NOW);
            assert_eq!(r.value()["data"], 5, "{method} {}", r.body);
        }
        assert_eq!(handle(&mut s, &req("PUT", path, &q, b""), NOW).status, 405);
        let r = handle(&mut s, &req("GET", path, "channelId=153884", b""), NOW);
        assert_eq!(r.value()["message"], "appId is required.");
        s.faults.string_codes = true;
        let r = handle(&mut s, &req("GET", path, &q, b""), NOW);
        assert_eq!(
            (r.value()["code"].clone(), r.value()["data"].clone()),
            (json!("200"), json!(5))
        );
        let r = handle(&mut s, &req("GET", path, "", b""), NOW);
        assert_eq!(r.value()["code"], "400");
        // Control replies are left alone.
        let r = handle(&mut s, &req("GET", "/_sim/faults", "", b""), NOW);
        assert_eq!(r.value()["string_codes"], true);
    }
}
