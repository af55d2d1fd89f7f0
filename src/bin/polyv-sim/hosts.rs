//! Polyv's hosts: which real host serves each path, and the `Host` header read as a name.
//!
//! The table follows Polyv's own clients (the research notes, §0 and §7): the newest iOS SDK
//! logs in, notifies and renames on api.polyv.net under `/live/…`, the signed v3/v4 APIs live
//! there too, the older login stays on live.polyv.net, and the chat room's `listUsers` is on
//! apichat.polyv.net. `api.live.polyv.net` and `api.chat.polyv.net` (document 01's hosts) are
//! used by no Polyv client, so with `--strict-hosts` nothing is served on them.

/// The signed APIs, the new login, notify and rename.
pub const API: &str = "api.polyv.net";
/// The older login host.
pub const LIVE: &str = "live.polyv.net";
/// The chat room's viewer list.
pub const CHAT: &str = "apichat.polyv.net";
/// Document 01's rename host: accepted path-only, never under `--strict-hosts`.
pub const OLD_API: &str = "api.live.polyv.net";

/// The host name of a `Host` header value (or URI authority): lower case, without the port
/// and a trailing dot; `[v6]` keeps its brackets. `None` for an empty value.
pub fn host_name(raw: &str) -> Option<String> {
    let raw = raw.trim();
    let name = if raw.starts_with('[') {
        match raw.find(']') {
            Some(i) => &raw[..=i],
            None => raw,
        }
    } else {
        raw.rsplit_once(':').map_or(raw, |(h, _)| h)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    (!name.is_empty()).then_some(name)
}

/// The rename path's channel id: `/live/v1/channels/{id}/update` (api.polyv.net) or
/// `/v1/channels/{id}/update` (document 01's api.live.polyv.net), with the host it belongs to.
pub fn rename_channel_id(path: &str) -> Option<(&'static str, &str)> {
    let (host, rest) = match path.strip_prefix("/live/v1/channels/") {
        Some(rest) => (API, rest),
        None => (OLD_API, path.strip_prefix("/v1/channels/")?),
    };
    let id = rest.strip_suffix("/update")?;
    (!id.is_empty() && !id.contains('/')).then_some((host, id))
}

/// The real host that serves `path`, if the path is one of Polyv's.
pub fn real_host(path: &str) -> Option<&'static str> {
    match path {
        "/api/v2/teacher_login.json" => Some(LIVE),
        "/front/listUsers" => Some(CHAT),
        "/live/api/v2/teacher_login.json" | "/live/client/notify_stream2.json" => Some(API),
        p if p.starts_with("/live/v3/") || p.starts_with("/live/v4/") => Some(API),
        p => rename_channel_id(p).map(|(host, _)| host),
    }
}

/// Under `--strict-hosts`: whether `host` (a [`host_name`]) serves `path`.
pub fn served_on(host: Option<&str>, path: &str) -> bool {
    match (host, real_host(path)) {
        (Some(h), Some(real)) => h == real && real != OLD_API,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(host_name("API.polyv.net:8443").as_deref(), Some(API));
        assert_eq!(host_name("live.polyv.net.").as_deref(), Some(LIVE));
        assert_eq!(host_name("127.0.0.1:80").as_deref(), Some("127.0.0.1"));
        assert_eq!(host_name("[::1]:443").as_deref(), Some("[::1]"));
        assert_eq!(host_name(""), None);
        assert_eq!(host_name(":80"), None);
    }

    #[test]
    fn each_path_on_its_real_host_only() {
        for (host, path) in [
            (API, "/live/api/v2/teacher_login.json"),
            (API, "/live/client/notify_stream2.json"),
            (API, "/live/v1/channels/153884/update"),
            (API, "/live/v3/channel/stream/get-push-url"),
            (API, "/live/v3/channel/chat/count-online-user"),
            (API, "/live/v4/channel/live-status/list"),
            (LIVE, "/api/v2/teacher_login.json"),
            (CHAT, "/front/listUsers"),
        ] {
            assert!(served_on(Some(host), path), "{host}{path}");
            for other in [API, LIVE, CHAT, OLD_API, "api.chat.polyv.net"] {
                if other != host {
                    assert!(!served_on(Some(other), path), "{other}{path}");
                }
            }
            assert!(!served_on(None, path));
        }
        assert_eq!(real_host("/v1/channels/1/update"), Some(OLD_API));
        assert!(!served_on(Some(OLD_API), "/v1/channels/1/update"));
        assert!(!served_on(Some(API), "/live/api/v2/teacher_login.json/x"));
        assert_eq!(real_host("/nowhere"), None);
        assert_eq!(rename_channel_id("/v1/channels//update"), None);
        assert_eq!(rename_channel_id("/v1/channels/1/2/update"), None);
        assert_eq!(
            rename_channel_id("/live/v1/channels/1/update"),
            Some((API, "1"))
        );
    }
}
