//! In-memory simulator state: applications, channels, fault switches, rate-limit counts, the
//! request log and the on_publish checks.
//!
//! Everything the simulator remembers lives in [`SimState`], behind one mutex owned by the
//! server. Nothing here touches the network or the clock: callers pass the time in, so the
//! handlers stay testable. Lines marked (inferred) are guesses from
//! /work/shared/polyv-api/README.md, not documented Polyv behaviour.

use std::collections::BTreeMap;
use std::net::IpAddr;

use md5::{Digest, Md5};
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::authkey::PublishCheck;
use crate::faults::Faults;
use crate::limit::Limiter;

/// First id handed out by the create endpoints (the id in Polyv's own example reply).
pub const FIRST_NEW_CHANNEL_ID: u64 = 1_830_948;
/// Oldest request-log entries are dropped past this many, so a long demo cannot grow forever.
pub const REQUEST_LOG_CAP: usize = 100_000;

/// The default auth_key signing key (`auth_key_private_key` in the config file changes it).
pub const DEFAULT_AUTH_KEY_PRIVATE_KEY: &str = "polyv-sim-private-key";

/// The live states Polyv reports in `live-status/list`.
pub const LIVE_STATUSES: [&str; 6] = ["unStart", "live", "end", "waiting", "playback", "banpush"];

/// An application allowed to call the signed v3/v4 APIs (keyed by appId in [`SimState`]).
#[derive(Clone)]
pub struct App {
    pub secret: String,
}

// Hand-written so a secret can never reach a log through `{:?}`.
impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("App { secret: <redacted> }")
    }
}

/// One live channel. Passwords stay in here; nothing that serialises a channel includes them.
#[derive(Clone)]
pub struct Channel {
    pub id: u64,
    pub password: String,
    pub name: String,
    /// `alone` or `ppt` (the `liveScene` of the login reply).
    pub scene: String,
    /// `in` or `out`. (inferred) default `out` when not given.
    pub channel_object: String,
    pub publisher: String,
    pub max_viewer: i64,
    pub live_status: String,
    pub viewers: u64,
    pub stream_key: String,
    pub assistant_password: String,
    pub created_by: Option<String>,
    pub video_width: Option<u32>,
    pub video_height: Option<u32>,
    pub start_time: Option<i64>,
}

// Hand-written so passwords can never reach a log through `{:?}`.
impl std::fmt::Debug for Channel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Channel({}, {:?})", self.id, self.public_json())
    }
}

impl Channel {
    /// A channel with the defaults the simulator uses for anything not given.
    pub fn new(id: u64, password: String, name: String) -> Self {
        Channel {
            id,
            password,
            name,
            scene: "alone".to_owned(),
            channel_object: "out".to_owned(),
            publisher: String::new(),
            max_viewer: 0,
            live_status: "unStart".to_owned(),
            viewers: 0,
            stream_key: stream_key_for(id),
            assistant_password: random_password(6, true),
            created_by: None,
            video_width: None,
            video_height: None,
            start_time: None,
        }
    }

    /// The public view for `GET /_sim/channels`: no passwords.
    pub fn public_json(&self) -> Value {
        json!({
            "channelId": self.id.to_string(),
            "name": self.name,
            "scene": self.scene,
            "channelObject": self.channel_object,
            "publisher": self.publisher,
            "maxViewer": self.max_viewer,
            "liveStatus": self.live_status,
            "viewers": self.viewers,
            "videoWidth": self.video_width,
            "videoHeight": self.video_height,
            "stream": self.stream_key,
            "createdBy": self.created_by,
        })
    }
}

/// The stream name of a channel: 27 characters shaped like Polyv's `16ad889b3d20180118174258966`
/// (10 hex digits, then 17 decimal digits). Deterministic per channel id. (inferred)
pub fn stream_key_for(id: u64) -> String {
    let digest = hex::encode(Md5::digest(format!("polyv-sim-stream-{id}").as_bytes()));
    format!("{}20180118{:09}", &digest[..10], id % 1_000_000_000)
}

/// A random password of `len` characters from lowercase letters and digits. With
/// `letter_and_digit`, it is guaranteed to contain at least one of each.
pub fn random_password(len: usize, letter_and_digit: bool) -> String {
    const CHARS: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::thread_rng();
    loop {
        let p: String = (0..len)
            .map(|_| CHARS[rng.gen_range(0..CHARS.len())] as char)
            .collect();
        let ok = !letter_and_digit
            || (p.bytes().any(|b| b.is_ascii_digit()) && p.bytes().any(|b| b.is_ascii_lowercase()));
        if ok {
            return p;
        }
    }
}

/// Parses a channel id the way the simulator stores it: ASCII digits, no sign, no leading zero.
pub fn parse_channel_id(raw: &str) -> Option<u64> {
    if raw.is_empty() || raw.len() > 19 || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if raw.len() > 1 && raw.starts_with('0') {
        return None;
    }
    raw.parse().ok()
}

/// One handled request (non-`/_sim`), without parameters: they carry secrets.
#[derive(Debug, Clone, Serialize)]
pub struct RequestRecord {
    pub seq: u64,
    pub method: String,
    /// The `Host` header's name: lower case, no port; `null` when absent.
    pub host: Option<String>,
    pub path: String,
    pub status: u16,
    /// When it was handled, on the simulator's clock (clock offset included), Unix ms.
    pub at_ms: i64,
    /// The client's IP; `null` when unknown (in-process tests).
    pub ip: Option<String>,
}

/// What the request log keeps of one request, besides its number.
#[derive(Debug, Clone, Copy)]
pub struct Seen<'a> {
    pub method: &'a str,
    pub host: Option<&'a str>,
    pub path: &'a str,
    pub ip: Option<IpAddr>,
}

/// Why a channel could not be created.
#[derive(Debug, PartialEq, Eq)]
pub struct TooManyChannels(pub u32);

/// Everything the simulator knows.
#[derive(Debug)]
pub struct SimState {
    pub apps: BTreeMap<String, App>,
    pub channels: BTreeMap<u64, Channel>,
    pub faults: Faults,
    pub requests: Vec<RequestRecord>,
    pub next_seq: u64,
    pub rtmp_base: String,
    pub max_channels: u32,
    /// `--strict-hosts`: each path is served only on its real host.
    pub strict_hosts: bool,
    /// Signs auth_keys (see [`crate::authkey`]); never logged.
    pub auth_key_private_key: String,
    pub limiter: Limiter,
    pub publish_checks: Vec<PublishCheck>,
    pub next_publish_seq: u64,
    next_channel_id: u64,
}

impl SimState {
    pub fn new(rtmp_base: String, max_channels: u32) -> Self {
        SimState {
            apps: BTreeMap::new(),
            channels: BTreeMap::new(),
            faults: Faults::default(),
            requests: Vec::new(),
            next_seq: 1,
            rtmp_base,
            max_channels,
            strict_hosts: false,
            auth_key_private_key: DEFAULT_AUTH_KEY_PRIVATE_KEY.to_owned(),
            limiter: Limiter::default(),
            publish_checks: Vec::new(),
            next_publish_seq: 1,
            next_channel_id: FIRST_NEW_CHANNEL_ID,
        }
    }

    pub fn add_app(&mut self, id: String, secret: String) {
        self.apps.insert(id, App { secret });
    }

    /// Inserts (or replaces) a channel given in the configuration.
    pub fn add_channel(&mut self, ch: Channel) {
        self.channels.insert(ch.id, ch);
    }

    pub fn channel(&self, raw_id: &str) -> Option<&Channel> {
        parse_channel_id(raw_id).and_then(|id| self.channels.get(&id))
    }

    pub fn channel_mut(&mut self, raw_id: &str) -> Option<&mut Channel> {
        parse_channel_id(raw_id).and_then(move |id| self.channels.get_mut(&id))
    }

    /// Creates a channel with the next free id, honouring `max_channels` (counted over all
    /// channels the simulator holds). (inferred: Polyv counts per account)
    pub fn create_channel(
        &mut self,
        password: String,
        name: String,
    ) -> Result<&mut Channel, TooManyChannels> {
        if self.channels.len() >= self.max_channels as usize {
            return Err(TooManyChannels(self.max_channels));
        }
        while self.channels.contains_key(&self.next_channel_id) {
            self.next_channel_id = self.next_channel_id.saturating_add(1);
        }
        let id = self.next_channel_id;
        self.next_channel_id = self.next_channel_id.saturating_add(1);
        Ok(self
            .channels
            .entry(id)
            .or_insert_with(|| Channel::new(id, password, name)))
    }

    /// Appends to the request log, dropping the oldest entries past [`REQUEST_LOG_CAP`].
    pub fn record(&mut self, seen: Seen<'_>, status: u16, at_ms: i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.requests.len() >= REQUEST_LOG_CAP {
            let excess = self.requests.len() + 1 - REQUEST_LOG_CAP;
            self.requests.drain(..excess);
        }
        self.requests.push(RequestRecord {
            seq,
            method: seen.method.to_owned(),
            host: seen.host.map(str::to_owned),
            path: seen.path.to_owned(),
            status,
            at_ms,
            ip: seen.ip.map(|ip| ip.to_string()),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_key_shape() {
        let k = stream_key_for(153884);
        assert_eq!(k.len(), 27);
        assert!(k[..10].bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(k[10..].bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(k, stream_key_for(153884));
        assert_ne!(k, stream_key_for(153885));
    }

    #[test]
    fn channel_ids() {
        assert_eq!(parse_channel_id("153884"), Some(153884));
        assert_eq!(parse_channel_id("0"), Some(0));
        assert_eq!(parse_channel_id("0153884"), None);
        assert_eq!(parse_channel_id("-1"), None);
        assert_eq!(parse_channel_id("1a"), None);
        assert_eq!(parse_channel_id(""), None);
        assert_eq!(parse_channel_id("99999999999999999999999"), None);
    }

    #[test]
    fn create_skips_taken_ids_and_respects_limit() {
        let mut s = SimState::new("rtmp://x/".into(), 2);
        s.add_channel(Channel::new(FIRST_NEW_CHANNEL_ID, "p".into(), "a".into()));
        let id = s.create_channel("q".into(), "b".into()).unwrap().id;
        assert_eq!(id, FIRST_NEW_CHANNEL_ID + 1);
        assert_eq!(
            s.create_channel("r".into(), "c".into()).unwrap_err(),
            TooManyChannels(2)
        );
    }

    #[test]
    fn passwords_have_letters_and_digits() {
        for _ in 0..50 {
            let p = random_password(6, true);
            assert_eq!(p.len(), 6);
            assert!(p.bytes().any(|b| b.is_ascii_digit()));
            assert!(p.bytes().any(|b| b.is_ascii_lowercase()));
        }
    }

    #[test]
    fn request_log_is_capped() {
        let mut s = SimState::new(String::new(), 1);
        for i in 0..(REQUEST_LOG_CAP + 3) {
            let seen = Seen {
                method: "GET",
                host: None,
                path: "/x",
                ip: None,
            };
            s.record(seen, 200, i as i64);
        }
        assert_eq!(s.requests.len(), REQUEST_LOG_CAP);
        assert_eq!(s.requests[0].seq, 4);
    }
}
