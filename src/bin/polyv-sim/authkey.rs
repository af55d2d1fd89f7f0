//! Expiring push addresses: the `auth_key` the simulator puts on push URLs and the check
//! nginx-rtmp asks for through `on_publish`.
//!
//! Shape: CDN "type A" signing, as Polyv's addresses show it
//! (`?auth_key=1603437007-0-0-bdbbb7f070573d80424a69c99c52ed0a`):
//! `auth_key = EXPIRY-0-0-md5_hex("URI-EXPIRY-0-0-PRIVATEKEY")`, EXPIRY in Unix seconds = the
//! simulator's now + `auth_key_ttl_s` (Polyv: issue time + 1800 s), URI = the RTMP URL's path
//! (`/live/STREAM`). (inferred) The key stops working once the simulator's clock passes
//! EXPIRY, with no extra CDN grace, and an RTMP session already running is never cut.
//!
//! nginx-rtmp's `on_publish` posts a form: `app, flashver, swfurl, tcurl, pageurl, addr,
//! clientid, call=publish, name, type`, then the publish URL's query string appended as is,
//! so `rtmp://h/live/STREAM?auth_key=K` arrives as `name=STREAM` and a separate `auth_key=K`
//! (`tcurl` carries no query). Found by running nginx 1.2x with libnginx-mod-rtmp. Any 2xx
//! lets the publish go on; anything else makes nginx drop the publisher.

use md5::{Digest, Md5};
use serde::Serialize;
use serde_json::json;

use crate::reply::Reply;
use crate::state::SimState;
use crate::util::parse_urlencoded;

/// Oldest publish checks are dropped past this many.
pub const PUBLISH_CHECK_CAP: usize = 10_000;

/// One on_publish check, for `GET /_sim/publish-checks`. No auth_key (it is a signature).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PublishCheck {
    pub seq: u64,
    /// The simulator's clock (clock offset included), Unix ms.
    pub at_ms: i64,
    pub app: String,
    pub stream: String,
    /// The channel whose stream this is, if any.
    pub channel_id: Option<String>,
    /// nginx's `addr`: the publisher's IP.
    pub addr: String,
    pub accepted: bool,
    pub reason: String,
    /// The expiry the key claimed (Unix s), when it could be read.
    pub auth_key_expiry_s: Option<i64>,
}

/// The path of an RTMP URL (without its query): `rtmp://h:1935/live/KEY` -> `/live/KEY`.
pub fn uri_of(url: &str) -> &str {
    let url = url.split('?').next().unwrap_or(url);
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    after_scheme.find('/').map_or("/", |i| &after_scheme[i..])
}

fn md5_hex(text: &str) -> String {
    hex::encode(Md5::digest(text.as_bytes()))
}

/// `EXPIRY-0-0-HASH` for `uri`.
pub fn sign(uri: &str, expiry_s: i64, private_key: &str) -> String {
    format!(
        "{expiry_s}-0-0-{}",
        md5_hex(&format!("{uri}-{expiry_s}-0-0-{private_key}"))
    )
}

/// The `?auth_key=…` suffix for a push address of `stream_key`, or `None` when the TTL is 0.
pub fn suffix(st: &SimState, stream_key: &str, now_ms: i64) -> Option<String> {
    let ttl = st.faults.auth_key_ttl_s;
    if ttl == 0 {
        return None;
    }
    let expiry = now_ms
        .div_euclid(1000)
        .saturating_add(i64::try_from(ttl).unwrap_or(i64::MAX));
    let uri = uri_of(&format!("{}{stream_key}", st.rtmp_base)).to_owned();
    Some(format!(
        "?auth_key={}",
        sign(&uri, expiry, &st.auth_key_private_key)
    ))
}

/// Why a key is refused, or its expiry when it is good.
fn verify(
    uri: &str,
    key: &str,
    private_key: &str,
    now_ms: i64,
) -> (Option<i64>, Result<(), String>) {
    let parts: Vec<&str> = key.split('-').collect();
    let [expiry, rand, uid, hash] = parts[..] else {
        return (
            None,
            Err("auth_key malformed (want EXPIRY-RAND-UID-MD5)".into()),
        );
    };
    let Some(expiry_s) = (!expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit()))
        .then(|| expiry.parse::<i64>().ok())
        .flatten()
    else {
        return (
            None,
            Err("auth_key malformed (expiry is not a number)".into()),
        );
    };
    let want = md5_hex(&format!("{uri}-{expiry}-{rand}-{uid}-{private_key}"));
    if hash != want {
        return (
            Some(expiry_s),
            Err("auth_key signature mismatch (another key, stream or app)".to_owned()),
        );
    }
    if now_ms > expiry_s.saturating_mul(1000) {
        return (
            Some(expiry_s),
            Err(format!(
                "auth_key expired at {expiry_s} (simulator now {})",
                now_ms.div_euclid(1000)
            )),
        );
    }
    (Some(expiry_s), Ok(()))
}

/// `POST /_sim/on_publish` from nginx-rtmp: 200 when the stream is a channel's and its
/// auth_key is good on the simulator's clock (`now_ms`, offset included), else 403. A key is
/// required while `auth_key_ttl_s > 0`; one that is given is checked either way.
pub fn on_publish(st: &mut SimState, body: &[u8], now_ms: i64) -> Reply {
    let p = parse_urlencoded(body);
    let app = p.raw("app").unwrap_or("").to_owned();
    let stream = p.raw("name").unwrap_or("").to_owned();
    let channel = st
        .channels
        .values()
        .find(|c| !stream.is_empty() && c.stream_key == stream)
        .map(|c| c.id.to_string());
    let uri = format!("/{app}/{stream}");
    let (expiry, verdict) = match (p.raw("call"), &channel, p.get("auth_key")) {
        (Some(call), _, _) if call != "publish" => {
            (None, Err(format!("call {call:?} is not publish")))
        }
        _ if stream.is_empty() => (None, Err("no stream name".to_owned())),
        (_, None, _) => (None, Err("unknown stream (no channel has it)".to_owned())),
        (_, Some(_), Some(key)) => verify(&uri, key, &st.auth_key_private_key, now_ms),
        (_, Some(_), None) if st.faults.auth_key_ttl_s > 0 => {
            (None, Err("auth_key missing".to_owned()))
        }
        (_, Some(_), None) => (None, Ok(())),
    };
    let (accepted, reason) = match verdict {
        Ok(()) if expiry.is_some() => (true, "auth_key valid".to_owned()),
        Ok(()) => (
            true,
            "no auth_key required (auth_key_ttl_s is 0)".to_owned(),
        ),
        Err(r) => (false, r),
    };
    tracing::info!(
        channel = channel.as_deref().unwrap_or("-"),
        accepted,
        %reason,
        "on_publish check"
    );
    let seq = st.next_publish_seq;
    st.next_publish_seq += 1;
    if st.publish_checks.len() >= PUBLISH_CHECK_CAP {
        let excess = st.publish_checks.len() + 1 - PUBLISH_CHECK_CAP;
        st.publish_checks.drain(..excess);
    }
    st.publish_checks.push(PublishCheck {
        seq,
        at_ms: now_ms,
        app,
        stream,
        channel_id: channel,
        addr: p.raw("addr").unwrap_or("").to_owned(),
        accepted,
        reason: reason.clone(),
        auth_key_expiry_s: expiry,
    });
    Reply::json(
        if accepted { 200 } else { 403 },
        &json!({"accepted": accepted, "reason": reason}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Channel;

    const NOW: i64 = 1_603_435_207_694;

    fn sim() -> SimState {
        let mut s = SimState::new("rtmp://127.0.0.1:1935/live/".into(), 5);
        s.add_channel(Channel::new(153884, "461666".into(), "demo".into()));
        s
    }

    fn publish_form(key: &str, query: &str) -> String {
        format!("app=live&flashver=FMLE/3.0%20(compatible%3B%20Lavf59.27&swfurl=&tcurl=rtmp://127.0.0.1:1935/live&pageurl=&addr=127.0.0.1&clientid=1&call=publish&name={key}&type=live{query}")
    }

    #[test]
    fn uris() {
        assert_eq!(uri_of("rtmp://h:1935/live/KEY?auth_key=1"), "/live/KEY");
        assert_eq!(uri_of("rtmp://h"), "/");
        assert_eq!(uri_of("/x/y"), "/x/y");
    }

    #[test]
    fn type_a_shape() {
        // md5("/live/KEY-1603437007-0-0-pk")
        let k = sign("/live/KEY", 1_603_437_007, "pk");
        assert_eq!(
            k,
            format!("1603437007-0-0-{}", md5_hex("/live/KEY-1603437007-0-0-pk"))
        );
        assert_eq!(k.len(), "1603437007-0-0-".len() + 32);
    }

    #[test]
    fn issued_key_is_server_time_plus_ttl() {
        let s = sim();
        let key = s.channels[&153884].stream_key.clone();
        let sfx = suffix(&s, &key, NOW).unwrap();
        // Polyv's example: currentTimeMillis 1603435207694 -> auth_key 1603437007-…
        assert!(sfx.starts_with("?auth_key=1603437007-0-0-"), "{sfx}");
        let mut s = s;
        s.faults.auth_key_ttl_s = 0;
        assert_eq!(suffix(&s, &key, NOW), None);
    }

    #[test]
    fn on_publish_accepts_fresh_refuses_stale_and_forged() {
        let mut s = sim();
        let key = s.channels[&153884].stream_key.clone();
        let sfx = suffix(&s, &key, NOW).unwrap();
        let q = format!("&{}", &sfx[1..]);
        let form = |query: &str| publish_form(&key, query);
        let r = on_publish(&mut s, form(&q).as_bytes(), NOW);
        assert_eq!(r.status, 200, "{}", r.body);
        // Valid up to and including the expiry second.
        let r = on_publish(&mut s, form(&q).as_bytes(), 1_603_437_007_000);
        assert_eq!(r.status, 200, "{}", r.body);
        let r = on_publish(&mut s, form(&q).as_bytes(), 1_603_437_007_001);
        assert_eq!(r.status, 403);
        assert!(r.value()["reason"].as_str().unwrap().contains("expired"));
        let forged = q.replace("-0-0-", "-0-0-0");
        let r = on_publish(&mut s, form(&forged).as_bytes(), NOW);
        assert!(r.value()["reason"].as_str().unwrap().contains("mismatch"));
        let later = q.replace("1603437007", "1603437999");
        assert_eq!(on_publish(&mut s, form(&later).as_bytes(), NOW).status, 403);
        for bad in ["&auth_key=abc", "&auth_key=x-0-0-y", "&auth_key=1-0-0"] {
            let r = on_publish(&mut s, form(bad).as_bytes(), NOW);
            assert!(
                r.value()["reason"].as_str().unwrap().contains("malformed"),
                "{bad}"
            );
        }
        let r = on_publish(&mut s, form("").as_bytes(), NOW);
        assert_eq!(r.value()["reason"], "auth_key missing");
        // Another app signs another URI.
        let other = form(&q).replacen("app=live", "app=other", 1);
        assert_eq!(on_publish(&mut s, other.as_bytes(), NOW).status, 403);
        let unknown = form(&q).replace(&key, "nosuchstream");
        assert!(
            on_publish(&mut s, unknown.as_bytes(), NOW).value()["reason"]
                .as_str()
                .unwrap()
                .contains("unknown stream")
        );
        assert_eq!(on_publish(&mut s, b"", NOW).status, 403);
        let play = form(&q).replace("call=publish", "call=play");
        assert_eq!(on_publish(&mut s, play.as_bytes(), NOW).status, 403);

        // TTL 0: no key needed, a given key is still checked.
        s.faults.auth_key_ttl_s = 0;
        assert_eq!(on_publish(&mut s, form("").as_bytes(), NOW).status, 200);
        assert_eq!(
            on_publish(&mut s, form(&forged).as_bytes(), NOW).status,
            403
        );

        let log = &s.publish_checks;
        assert_eq!(log[0].seq, 1);
        assert!(log[0].accepted && log[0].channel_id.as_deref() == Some("153884"));
        assert_eq!(log[0].auth_key_expiry_s, Some(1_603_437_007));
        assert!(!log[2].accepted);
        let text = serde_json::to_string(log).unwrap();
        assert!(!text.contains(&sfx[10..]), "the log must not carry keys");
    }
}
