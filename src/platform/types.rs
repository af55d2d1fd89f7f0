//! Typed requests and replies of the Polyv endpoints polypush uses.
//!
//! Field names follow Polyv's JSON (camelCase). Replies are lenient where Polyv is known to
//! vary (numbers as strings, booleans as `"Y"`/`1`); requests are exactly what Polyv documents.

use crate::secret::Secret;
use serde::{Deserialize, Deserializer, Serialize};
use std::fmt;

/// Accepts `true`, `"Y"`, `"true"`, `1`: Polyv is not consistent about booleans.
pub(crate) fn bool_ish<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Bool(b) => b,
        serde_json::Value::Number(n) => n.as_i64().unwrap_or(0) != 0,
        serde_json::Value::String(s) => matches!(s.as_str(), "Y" | "y" | "true" | "1"),
        _ => false,
    })
}

/// Accepts a number or a numeric string.
pub(crate) fn string_ish<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => s,
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    })
}

fn opt_u32_ish<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(match serde_json::Value::deserialize(d)? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|v| u32::try_from(v).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// The teacher_login reply (a flat object, no envelope).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginReply {
    pub url: String,
    pub stream: String,
    #[serde(default)]
    pub bak_url: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    #[serde(default, deserialize_with = "bool_ish")]
    pub is_url_protected: bool,
    /// Highest bitrate Polyv allows this channel, kbit/s.
    #[serde(default, deserialize_with = "opt_u32_ish")]
    pub max_rate: Option<u32>,
    #[serde(default, deserialize_with = "bool_ish")]
    pub is_only_audio: bool,
    #[serde(default)]
    pub live_scene: Option<String>,
    /// The teacher_login URL that answered: `login`, or `login_fallback` when the default
    /// could not be reached. Set by the client, not part of Polyv's reply.
    #[serde(skip)]
    pub answered_by: String,
}

impl LoginReply {
    /// The push address rules: `url + stream`, or `bakUrl + stream + suffix` when the URL is
    /// protected (the suffix carries the `?auth_key=`).
    pub fn push_address(&self) -> PushAddress {
        match (&self.bak_url, self.is_url_protected) {
            (Some(bak), true) if !bak.is_empty() => PushAddress {
                base: bak.clone(),
                stream: Secret::new(format!(
                    "{}{}",
                    self.stream,
                    self.suffix.as_deref().unwrap_or("")
                )),
            },
            _ => PushAddress {
                base: self.url.clone(),
                stream: Secret::new(self.stream.clone()),
            },
        }
    }
}

/// An RTMP push address: the base (`rtmp://host/app/`) and the stream key, which is a secret:
/// anybody holding it can broadcast on the channel.
#[derive(Clone, PartialEq, Eq)]
pub struct PushAddress {
    pub base: String,
    pub stream: Secret,
}

impl PushAddress {
    /// Splits a full RTMP URL (as get-push-url returns it) at the last `/` before the query.
    pub fn from_url(url: &str) -> Self {
        let path_end = url.find('?').unwrap_or(url.len());
        match url[..path_end].rfind('/') {
            Some(i) if i + 1 < url.len() => Self {
                base: url[..=i].to_string(),
                stream: Secret::new(&url[i + 1..]),
            },
            _ => Self {
                base: url.to_string(),
                stream: Secret::default(),
            },
        }
    }

    /// The full URL to publish to. Only for the RTMP connection and `--reveal`.
    pub fn reveal(&self) -> String {
        let mut s = self.base.clone();
        if !s.ends_with('/') && !self.stream.is_empty() {
            s.push('/');
        }
        s.push_str(self.stream.expose());
        s
    }

    /// The URL with the stream key masked: first four characters, then `***`.
    pub fn masked(&self) -> String {
        let key = self.stream.expose();
        let shown: String = key.chars().take(4).collect();
        let sep = if self.base.ends_with('/') { "" } else { "/" };
        format!("{}{sep}{shown}***", self.base)
    }
}

impl fmt::Debug for PushAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for PushAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Viewers online: the chat room's `listUsers` reply, or the signed `count-online-user` count
/// (then `userlist` is empty).
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Viewers {
    pub count: u64,
    #[serde(default)]
    pub userlist: Vec<serde_json::Value>,
}

/// Live scene of a new channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Scene {
    /// 普通直播: a plain live broadcast.
    Alone,
    /// 三分屏: slides plus video.
    Ppt,
}

impl Scene {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alone => "alone",
            Self::Ppt => "ppt",
        }
    }
}

/// Who may watch a new channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ChannelObject {
    /// Internal.
    In,
    /// Public.
    Out,
}

impl ChannelObject {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::In => "in",
            Self::Out => "out",
        }
    }
}

/// create-cpic-channel request.
#[derive(Debug, Clone)]
pub struct CreateChannel {
    pub name: String,
    pub scene: Scene,
    pub channel_object: Option<ChannelObject>,
    pub start_time_ms: Option<u64>,
    pub end_time_ms: Option<u64>,
}

/// Account and password of an assistant or guest of a new channel.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleLogin {
    #[serde(default, deserialize_with = "string_ish")]
    pub account: String,
    #[serde(default)]
    pub passwd: Secret,
    #[serde(default, alias = "webStartUrl")]
    pub login_url: Option<String>,
}

/// create-cpic-channel reply data.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedChannel {
    #[serde(deserialize_with = "string_ish")]
    pub channel_id: String,
    pub passwd: Secret,
    #[serde(default)]
    pub teacher_login_url: Option<String>,
    #[serde(default)]
    pub teacher_client_url: Option<String>,
    #[serde(default)]
    pub watch_url: Option<String>,
    #[serde(default)]
    pub assistant: Option<RoleLogin>,
    #[serde(default)]
    pub guest: Option<RoleLogin>,
    #[serde(default)]
    pub auth_secret_key: Secret,
}

/// `basicSetting` of the basic/update request. Only set fields are sent.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BasicSetting {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_opt_secret"
    )]
    pub channel_passwd: Option<Secret>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publisher: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_viewer_restrict: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_viewer: Option<u32>,
}

impl BasicSetting {
    pub fn is_empty(&self) -> bool {
        self.name.is_none()
            && self.channel_passwd.is_none()
            && self.publisher.is_none()
            && self.max_viewer.is_none()
    }
}

/// The request body needs the real password; `Secret`'s own `Serialize` masks it.
fn expose_opt_secret<S: serde::Serializer>(v: &Option<Secret>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(secret) => s.serialize_str(secret.expose()),
        None => s.serialize_none(),
    }
}

/// basic/update request: `basicSetting` plus optional `authSettings` (passed through as JSON).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UpdateSettings {
    pub basic_setting: BasicSetting,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_settings: Option<serde_json::Value>,
}

/// v4 mr/create request body.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateMrChannel {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<u64>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_opt_secret"
    )]
    pub channel_passwd: Option<Secret>,
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "expose_opt_secret"
    )]
    pub assistant_passwd: Option<Secret>,
}

/// v4 mr/create reply data.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MrChannel {
    #[serde(deserialize_with = "string_ish")]
    pub channel_id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub user_id: Option<String>,
    #[serde(default)]
    pub channel_passwd: Secret,
    #[serde(default, deserialize_with = "string_ish")]
    pub assistant_account: String,
    #[serde(default)]
    pub assistant_passwd: Secret,
}

/// One entry of the v4 live-status list.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct LiveStatus {
    #[serde(deserialize_with = "string_ish")]
    pub channel_id: String,
    /// `unStart`, `live`, `end`, `waiting`, `playback` or `banpush`.
    pub live_status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(json: &str) -> LoginReply {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn plain_push_address_is_url_plus_stream() {
        let r = login(
            r#"{"url":"rtmp://push2.videocc.net/recordfe/","stream":"16ad889b3d20180118174258966"}"#,
        );
        let a = r.push_address();
        assert_eq!(
            a.reveal(),
            "rtmp://push2.videocc.net/recordfe/16ad889b3d20180118174258966"
        );
        assert_eq!(a.masked(), "rtmp://push2.videocc.net/recordfe/16ad***");
        assert!(!format!("{a:?} {a}").contains("889b3d"));
    }

    #[test]
    fn protected_push_address_uses_bak_url_and_suffix() {
        let r = login(
            r#"{"url":"rtmp://a/x/","stream":"abc","bakUrl":"rtmp://b/y/","suffix":"?auth_key=k-1","isUrlProtected":"Y","maxRate":"1500"}"#,
        );
        assert_eq!(r.push_address().reveal(), "rtmp://b/y/abc?auth_key=k-1");
        assert_eq!(r.max_rate, Some(1500));
        // Not protected: bakUrl is ignored.
        let r = login(
            r#"{"url":"rtmp://a/x/","stream":"abc","bakUrl":"rtmp://b/y/","suffix":"?q","isUrlProtected":false}"#,
        );
        assert_eq!(r.push_address().reveal(), "rtmp://a/x/abc");
    }

    #[test]
    fn full_url_splits_before_query() {
        let a = PushAddress::from_url("rtmp://h:1935/app/key?auth_key=1/2");
        assert_eq!(a.base, "rtmp://h:1935/app/");
        assert_eq!(a.stream.expose(), "key?auth_key=1/2");
    }

    #[test]
    fn update_body_carries_password_but_debug_does_not() {
        let u = UpdateSettings {
            basic_setting: BasicSetting {
                channel_passwd: Some(Secret::new("10086")),
                max_viewer: Some(20),
                max_viewer_restrict: Some("Y"),
                ..Default::default()
            },
            auth_settings: None,
        };
        assert_eq!(
            serde_json::to_string(&u).unwrap(),
            r#"{"basicSetting":{"channelPasswd":"10086","maxViewerRestrict":"Y","maxViewer":20}}"#
        );
        assert!(!format!("{u:?}").contains("10086"));
    }
}
