//! `[polyv.endpoints]`: where each Polyv call goes, and how Polyv's host names resolve.
//!
//! Every key is a base URL and the client appends the API's own path, so a single base (the
//! simulator's) can serve every call ([`Endpoints::all`]). The defaults are the hosts Polyv's
//! newest official clients use; each constant names its source. The full URLs are built here
//! and nowhere else, so what `polypush selftest` shows is what the client sends.
//!
//! teacher_login has a fallback host: the default login host (PolyvLiveAPI 0.9.0) falls back
//! to the host of PolyvLiveAPI ≤ 0.8.1 when it cannot be reached or answers HTTP 404. Every
//! login tries the default first (no memory of an earlier fallback: a login happens once per
//! broadcast session, so the cost is one failed request then).
//!
//! `resolve` pins Polyv host names to addresses (reqwest's `ClientBuilder::resolve`): for
//! networks whose DNS is broken or filtered, and for tests that reach the simulator under
//! Polyv's real names (TLS then checks the certificate against the real name).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// teacher_login: PolyvLiveAPI 0.9.0 (2021), `frameworks/PLVLiveSDK.framework/PLVLiveSDK`
/// (PLVNetworking.o: `https://api.polyv.net/live/api/v2/teacher_login.json`).
pub const DEFAULT_LOGIN: &str = "https://api.polyv.net/live";
/// teacher_login's fallback: PolyvLiveAPI ≤ 0.8.1 (2017-2020),
/// `frameworks/PLVLiveAPI.framework/PLVLiveAPI` at 7dd11dd
/// (`https://live.polyv.net/api/v2/teacher_login.json`); also the host of Polyv's document 01.
pub const DEFAULT_LOGIN_FALLBACK: &str = "https://live.polyv.net";
/// Channel rename (scheme 2, `APPCHANNELSET`): PolyvLiveAPI 0.9.0,
/// `frameworks/PLVLiveSDK.framework/PLVLiveSDK` (`https://api.polyv.net/live/v1/channels/%@/update`).
pub const DEFAULT_CHANNEL: &str = "https://api.polyv.net/live";
/// The chat room's unsigned `listUsers`: every PolyvLiveAPI since 0.1.3 (2018) through 0.9.0,
/// `frameworks/PLVLiveSDK.framework/PLVLiveSDK` (`https://apichat.polyv.net/front/listUsers`).
pub const DEFAULT_CHAT: &str = "https://apichat.polyv.net";
/// notify_stream2 (PolyvLiveAPI 0.8.1 and 0.9.0: `https://api.polyv.net/live/client/notify_stream2.json`),
/// the signed viewer count (polyv-live-cli `packages/sdk/src/services/channel.service.ts`:
/// `GET /live/v3/channel/chat/count-online-user`) and every signed v3/v4 API (polyv-live-cli
/// `packages/sdk/src/client.ts` `baseUrl`; polyv-java-sdk `LiveURL.java` `BASE_URI`).
pub const DEFAULT_API: &str = "https://api.polyv.net";

/// The values packaging/polypush.toml wrote out before polypush followed Polyv's newest
/// clients (Polyv's document 01 names them; no Polyv client uses `api.live.polyv.net` or
/// `api.chat.polyv.net`): login, channel, chat.
const LEGACY_LOGIN: &str = "https://live.polyv.net";
const LEGACY_CHANNEL: &str = "https://api.live.polyv.net";
const LEGACY_CHAT: &str = "https://api.chat.polyv.net";

pub(super) const LOGIN_PATH: &str = "/api/v2/teacher_login.json";
const NOTIFY_PATH: &str = "/live/client/notify_stream2.json";
const LIST_USERS_PATH: &str = "/front/listUsers";
pub(super) const ONLINE_COUNT_PATH: &str = "/live/v3/channel/chat/count-online-user";

/// `[polyv.endpoints]`: one base URL per Polyv host, the login fallback, and DNS overrides.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    /// teacher_login: POST `{login}/api/v2/teacher_login.json`.
    pub login: String,
    /// Where teacher_login goes when `login` cannot be reached or answers 404. Unset: the
    /// older host [`DEFAULT_LOGIN_FALLBACK`] when `login` is the default, none when `login`
    /// is set to something else (a login must never go to a host nobody chose). Empty: none.
    pub login_fallback: Option<String>,
    /// Channel rename: POST `{channel}/v1/channels/{id}/update`.
    pub channel: String,
    /// The chat room's viewer list: GET `{chat}/front/listUsers?roomId=`.
    pub chat: String,
    /// notify_stream2, the signed viewer count and the signed v3/v4 APIs: `{api}/live/…`.
    pub api: String,
    /// Host name → `IP[:port]`, used instead of DNS for that host (port 0 or none: the URL's).
    pub resolve: BTreeMap<String, String>,
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            login: DEFAULT_LOGIN.into(),
            login_fallback: None,
            channel: DEFAULT_CHANNEL.into(),
            chat: DEFAULT_CHAT.into(),
            api: DEFAULT_API.into(),
            resolve: BTreeMap::new(),
        }
    }
}

/// Serialized with the *effective* login fallback (`""` for none), so `polypush check` shows
/// where a login really goes and a reload sees a change in it.
impl Serialize for Endpoints {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Effective<'a> {
            login: &'a str,
            login_fallback: &'a str,
            channel: &'a str,
            chat: &'a str,
            api: &'a str,
            resolve: &'a BTreeMap<String, String>,
        }
        Effective {
            login: &self.login,
            login_fallback: self.login_fallback().unwrap_or(""),
            channel: &self.channel,
            chat: &self.chat,
            api: &self.api,
            resolve: &self.resolve,
        }
        .serialize(s)
    }
}

/// A key whose value was an old default, replaced by the new one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyDefault {
    /// `polyv.endpoints.<key>`.
    pub key: String,
    pub old: &'static str,
    pub new: &'static str,
}

fn trim(base: &str) -> &str {
    base.trim().trim_end_matches('/')
}

impl Endpoints {
    /// Every endpoint at one base URL, no fallback: how the simulator is addressed.
    pub fn all(base: &str) -> Self {
        let base = trim(base).to_string();
        Self {
            login: base.clone(),
            login_fallback: Some(String::new()),
            channel: base.clone(),
            chat: base.clone(),
            api: base,
            resolve: BTreeMap::new(),
        }
    }

    /// The effective login fallback base URL, if any (never the same as `login`).
    pub fn login_fallback(&self) -> Option<&str> {
        let fallback = match &self.login_fallback {
            Some(f) => trim(f),
            None if trim(&self.login) == DEFAULT_LOGIN => DEFAULT_LOGIN_FALLBACK,
            None => "",
        };
        (!fallback.is_empty() && fallback != trim(&self.login)).then_some(fallback)
    }

    /// teacher_login at `base` (`login` or the fallback).
    pub fn login_url(base: &str) -> String {
        format!("{}{LOGIN_PATH}", trim(base))
    }

    pub fn rename_url(&self, channel_id: &str) -> String {
        format!("{}/v1/channels/{channel_id}/update", trim(&self.channel))
    }

    pub fn notify_url(&self) -> String {
        self.api_url(NOTIFY_PATH)
    }

    pub fn list_users_url(&self) -> String {
        format!("{}{LIST_USERS_PATH}", trim(&self.chat))
    }

    /// A signed v3/v4 API (or notify_stream2) at `path`.
    pub fn api_url(&self, path: &str) -> String {
        format!("{}{path}", trim(&self.api))
    }

    /// Replaces the old shipped defaults a config file may still spell out (a conffile kept
    /// across upgrades does) with the current ones; returns what it replaced, for a warning.
    pub fn upgrade_legacy_defaults(&mut self) -> Vec<LegacyDefault> {
        let mut replaced = Vec::new();
        for (key, value, old, new) in [
            ("login", &mut self.login, LEGACY_LOGIN, DEFAULT_LOGIN),
            (
                "channel",
                &mut self.channel,
                LEGACY_CHANNEL,
                DEFAULT_CHANNEL,
            ),
            ("chat", &mut self.chat, LEGACY_CHAT, DEFAULT_CHAT),
        ] {
            if trim(value) == old {
                *value = new.to_string();
                replaced.push(LegacyDefault {
                    key: format!("polyv.endpoints.{key}"),
                    old,
                    new,
                });
            }
        }
        replaced
    }

    /// Every base URL with its key, the fallback included when there is one.
    fn bases(&self) -> Vec<(&'static str, &str)> {
        let mut bases = vec![
            ("login", self.login.as_str()),
            ("channel", self.channel.as_str()),
            ("chat", self.chat.as_str()),
            ("api", self.api.as_str()),
        ];
        if let Some(f) = self.login_fallback() {
            bases.insert(1, ("login_fallback", f));
        }
        bases
    }

    /// The host names the endpoints use, lower case, each once.
    fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self
            .bases()
            .iter()
            .filter_map(|(_, url)| reqwest::Url::parse(url).ok())
            .filter_map(|u| u.host_str().map(str::to_ascii_lowercase))
            .collect();
        hosts.sort();
        hosts.dedup();
        hosts
    }

    /// Checks the URLs and the DNS overrides; every message says what to write instead.
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        for (key, url) in self.bases() {
            let ok = reqwest::Url::parse(url)
                .map(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.host().is_some()
                        && u.query().is_none()
                        && u.fragment().is_none()
                })
                .unwrap_or(false);
            if !ok {
                let example = match key {
                    "login" => format!("\"{DEFAULT_LOGIN}\""),
                    "login_fallback" => {
                        format!("\"{DEFAULT_LOGIN_FALLBACK}\", or \"\" for no fallback")
                    }
                    "channel" => format!("\"{DEFAULT_CHANNEL}\""),
                    "chat" => format!("\"{DEFAULT_CHAT}\""),
                    _ => format!("\"{DEFAULT_API}\""),
                };
                return Err(InvalidSetting::new(
                    format!("polyv.endpoints.{key}"),
                    format!(
                        "{url:?} is not an http(s) base URL: use something like {example} (no query)"
                    ),
                ));
            }
        }
        self.dns_overrides().map(|_| ())
    }

    /// `resolve` as reqwest wants it, checked: each host one of the endpoints' hosts, each
    /// address an IP with an optional port.
    pub fn dns_overrides(&self) -> Result<Vec<(String, SocketAddr)>, InvalidSetting> {
        let key = "polyv.endpoints.resolve";
        let hosts = self.hosts();
        self.resolve
            .iter()
            .map(|(host, addr)| {
                let name = host.trim().to_ascii_lowercase();
                let is_name = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
                if !is_name {
                    return Err(InvalidSetting::new(
                        key,
                        format!(
                            "{host:?} is not a host name: write the bare name, such as \"api.polyv.net\" = \"203.0.113.7:443\""
                        ),
                    ));
                }
                if !hosts.contains(&name) {
                    return Err(InvalidSetting::new(
                        key,
                        format!(
                            "{host:?} is not the host of any endpoint ({}): correct the name or remove the entry",
                            hosts.join(", ")
                        ),
                    ));
                }
                let addr = addr.trim();
                let parsed = addr
                    .parse::<SocketAddr>()
                    .or_else(|_| addr.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
                    .map_err(|_| {
                        InvalidSetting::new(
                            key,
                            format!(
                                "{addr:?} (for {host:?}) is not an IP address with an optional port: write such as \"203.0.113.7:443\", \"203.0.113.7\" (the URL's port) or \"[2001:db8::7]:443\""
                            ),
                        )
                    })?;
                Ok((name, parsed))
            })
            .collect()
    }

    /// The full URL of every call, in the order a broadcast makes them, for `polypush
    /// selftest`: (name, URL). `signed_viewers` (appId and appSecret configured): the viewer
    /// count goes to the signed API (`viewers`, signed query added) before `viewers_fallback`.
    /// `api` is the base of the signed v3/v4 APIs.
    pub fn effective(&self, channel_id: &str, signed_viewers: bool) -> Vec<(&'static str, String)> {
        let mut urls = vec![("login", Self::login_url(&self.login))];
        if let Some(f) = self.login_fallback() {
            urls.push(("login_fallback", Self::login_url(f)));
        }
        urls.push(("notify_stream2", self.notify_url()));
        if signed_viewers {
            urls.push((
                "viewers",
                format!("{}?channelId={channel_id}", self.api_url(ONLINE_COUNT_PATH)),
            ));
            urls.push((
                "viewers_fallback",
                format!("{}?roomId={channel_id}", self.list_users_url()),
            ));
        } else {
            urls.push((
                "viewers",
                format!("{}?roomId={channel_id}", self.list_users_url()),
            ));
        }
        urls.push(("rename", self.rename_url(channel_id)));
        urls.push(("api", trim(&self.api).to_string()));
        urls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_polyvs_newest_clients() {
        let e = Endpoints::default();
        assert_eq!(
            Endpoints::login_url(&e.login),
            "https://api.polyv.net/live/api/v2/teacher_login.json"
        );
        assert_eq!(
            e.login_fallback().map(Endpoints::login_url).as_deref(),
            Some("https://live.polyv.net/api/v2/teacher_login.json")
        );
        assert_eq!(
            e.rename_url("153884"),
            "https://api.polyv.net/live/v1/channels/153884/update"
        );
        assert_eq!(
            e.notify_url(),
            "https://api.polyv.net/live/client/notify_stream2.json"
        );
        assert_eq!(
            e.api_url(ONLINE_COUNT_PATH),
            "https://api.polyv.net/live/v3/channel/chat/count-online-user"
        );
        assert_eq!(
            e.list_users_url(),
            "https://apichat.polyv.net/front/listUsers"
        );
        e.validate().unwrap();
    }

    #[test]
    fn the_fallback_follows_only_the_default_login() {
        let mut e = Endpoints {
            login: "https://api.polyv.net/live/".into(),
            ..Endpoints::default()
        };
        assert_eq!(e.login_fallback(), Some(DEFAULT_LOGIN_FALLBACK));
        // A login host of one's own: no automatic fallback to a host nobody chose.
        e.login = "http://127.0.0.1:8080".into();
        assert_eq!(e.login_fallback(), None);
        e.login_fallback = Some("https://live.polyv.net/".into());
        assert_eq!(e.login_fallback(), Some("https://live.polyv.net"));
        // Empty: none, even with the default login.
        let mut e = Endpoints {
            login_fallback: Some(String::new()),
            ..Endpoints::default()
        };
        assert_eq!(e.login_fallback(), None);
        // Never the login itself.
        e.login_fallback = Some(DEFAULT_LOGIN.into());
        assert_eq!(e.login_fallback(), None);
        assert_eq!(Endpoints::all("http://127.0.0.1:1/").login_fallback(), None);
        assert_eq!(
            Endpoints::all("http://127.0.0.1:1/").api,
            "http://127.0.0.1:1"
        );
    }

    #[test]
    fn serialized_with_the_effective_fallback() {
        let v = serde_json::to_value(Endpoints::default()).unwrap();
        assert_eq!(v["login_fallback"], DEFAULT_LOGIN_FALLBACK);
        let v = serde_json::to_value(Endpoints::all("http://x")).unwrap();
        assert_eq!(v["login_fallback"], "");
        assert!(v["resolve"].is_object());
    }

    #[test]
    fn old_shipped_defaults_are_upgraded() {
        let mut e = Endpoints {
            login: "https://live.polyv.net".into(),
            channel: "https://api.live.polyv.net/".into(),
            chat: "https://api.chat.polyv.net".into(),
            api: "https://api.polyv.net".into(),
            ..Endpoints::default()
        };
        let up = e.upgrade_legacy_defaults();
        assert_eq!(
            up.iter().map(|u| u.key.as_str()).collect::<Vec<_>>(),
            [
                "polyv.endpoints.login",
                "polyv.endpoints.channel",
                "polyv.endpoints.chat"
            ]
        );
        assert_eq!(e, Endpoints::default());
        // Anything else is the operator's choice and stays.
        let mut e = Endpoints::all("http://127.0.0.1:9");
        assert!(e.upgrade_legacy_defaults().is_empty());
        assert_eq!(e, Endpoints::all("http://127.0.0.1:9"));
    }

    #[test]
    fn bad_urls_are_named() {
        let e = Endpoints {
            login_fallback: Some("live.polyv.net".into()),
            ..Endpoints::default()
        };
        let err = e.validate().unwrap_err();
        assert_eq!(err.key, "polyv.endpoints.login_fallback");
        assert!(err.message.contains("or \"\" for no fallback"), "{err}");
        let e = Endpoints {
            chat: "https://apichat.polyv.net/?x=1".into(),
            ..Endpoints::default()
        };
        assert_eq!(e.validate().unwrap_err().key, "polyv.endpoints.chat");
    }

    #[test]
    fn dns_overrides_are_checked() {
        let with = |host: &str, addr: &str| Endpoints {
            resolve: BTreeMap::from([(host.to_string(), addr.to_string())]),
            ..Endpoints::default()
        };
        assert_eq!(
            with("API.polyv.net", "127.0.0.1:8443")
                .dns_overrides()
                .unwrap(),
            vec![(
                "api.polyv.net".to_string(),
                "127.0.0.1:8443".parse().unwrap()
            )]
        );
        assert_eq!(
            with("live.polyv.net", "203.0.113.7")
                .dns_overrides()
                .unwrap()[0]
                .1,
            "203.0.113.7:0".parse::<SocketAddr>().unwrap()
        );
        assert_eq!(
            with("apichat.polyv.net", "[2001:db8::7]:443")
                .dns_overrides()
                .unwrap()[0]
                .1
                .port(),
            443
        );
        for (host, addr, says) in [
            ("api.polyv.net", "localhost:8443", "not an IP address"),
            ("api.polyv.net", "127.0.0.1:99999", "not an IP address"),
            ("https://api.polyv.net", "127.0.0.1", "not a host name"),
            ("api.polyv.net:443", "127.0.0.1", "not a host name"),
            ("api.polyv.nte", "127.0.0.1", "not the host of any endpoint"),
        ] {
            let e = with(host, addr);
            let err = e.validate().unwrap_err();
            assert_eq!(err.key, "polyv.endpoints.resolve");
            assert!(err.message.contains(says), "{host} {addr}: {err}");
        }
        // The fallback's host is an endpoint's host only while there is a fallback.
        let mut e = with("live.polyv.net", "127.0.0.1");
        e.login_fallback = Some(String::new());
        assert!(e.validate().is_err());
    }

    #[test]
    fn effective_urls_for_the_selftest() {
        let e = Endpoints::default();
        let names: Vec<&str> = e.effective("1", true).iter().map(|(n, _)| *n).collect();
        assert_eq!(
            names,
            [
                "login",
                "login_fallback",
                "notify_stream2",
                "viewers",
                "viewers_fallback",
                "rename",
                "api"
            ]
        );
        let urls = Endpoints::all("http://s").effective("1", false);
        assert_eq!(
            urls[0],
            ("login", "http://s/api/v2/teacher_login.json".into())
        );
        assert_eq!(
            urls[2],
            ("viewers", "http://s/front/listUsers?roomId=1".into())
        );
    }
}
