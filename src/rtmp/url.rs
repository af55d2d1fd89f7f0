//! Push addresses: `rtmp://host[:port]/app[/inst]/stream[?query]` (and `rtmps://`, RTMP over
//! TLS) split into what the RTMP `connect` and `publish` commands need.
//!
//! The split follows what ffmpeg/OBS and the ingests expect: the application is everything between
//! the host and the *last* path segment, and the query (Polyv keys carry `?auth_key=...`) stays
//! with the stream name because the ingest checks it when it sees `publish`. The stream name is a
//! secret (whoever has it can push to the channel), so `Display`/`Debug` mask it; [`RtmpUrl::reveal`]
//! is the one deliberate way to get the whole address back.

use std::fmt;

use super::error::RtmpError;

/// The RTMP default port, used when the address has none.
pub(super) const DEFAULT_PORT: u16 = 1935;
/// The RTMPS default port (what OBS, ffmpeg and the CDNs use).
pub(super) const DEFAULT_TLS_PORT: u16 = 443;

/// A parsed `rtmp://` or `rtmps://` push address.
#[derive(Clone, PartialEq, Eq)]
pub struct RtmpUrl {
    /// `rtmps://`: the connection is TLS.
    tls: bool,
    host: String,
    port: u16,
    app: String,
    stream: String,
    tc_url: String,
}

impl RtmpUrl {
    /// Parses `rtmp://host[:port]/app[/inst]/stream[?query]`. Surrounding whitespace (a common
    /// copy-and-paste artefact) is ignored; anything else that is not such an address is an error
    /// that shows what a valid one looks like.
    pub fn parse(input: &str) -> Result<RtmpUrl, RtmpError> {
        let input = input.trim();
        let bad = |reason: &str| RtmpError::BadUrl {
            url: mask_url(input),
            reason: reason.to_string(),
        };

        let Some((scheme, rest)) = input.split_once("://") else {
            return Err(bad("it does not start with rtmp:// or rtmps://"));
        };
        let tls = if scheme.eq_ignore_ascii_case("rtmps") {
            true
        } else if scheme.eq_ignore_ascii_case("rtmp") {
            false
        } else {
            return Err(bad(&format!("the scheme {scheme:?} is not rtmp or rtmps")));
        };
        let default_port = if tls { DEFAULT_TLS_PORT } else { DEFAULT_PORT };
        if input.chars().any(char::is_whitespace) {
            return Err(bad("it contains whitespace"));
        }

        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (host, port) = split_host_port(authority, default_port).map_err(&bad)?;

        // The query may itself contain '/', so split it off before looking for the last segment.
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path, None),
        };
        let Some((app, name)) = path.rsplit_once('/') else {
            return Err(bad(if path.is_empty() {
                "the application and stream key are missing"
            } else {
                "the stream key is missing (only one path segment)"
            }));
        };
        if app.is_empty() || app.split('/').any(str::is_empty) {
            return Err(bad("the application path is empty or has an empty segment"));
        }
        if name.is_empty() {
            return Err(bad("the stream key is missing (the address ends with '/')"));
        }

        let stream = match query {
            Some(q) => format!("{name}?{q}"),
            None => name.to_string(),
        };
        let host_in_url = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        let scheme = if tls { "rtmps" } else { "rtmp" };
        let tc_url = if port == default_port {
            format!("{scheme}://{host_in_url}/{app}")
        } else {
            format!("{scheme}://{host_in_url}:{port}/{app}")
        };
        Ok(RtmpUrl {
            tls,
            host: host.to_string(),
            port,
            app: app.to_string(),
            stream,
            tc_url,
        })
    }

    /// `rtmps://`: RTMP over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Host name or IP address (IPv6 without brackets), as given.
    pub fn host(&self) -> &str {
        &self.host
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The application for `connect`, e.g. `live` or `live/inst`.
    pub fn app(&self) -> &str {
        &self.app
    }

    /// The full stream name for `publish`, query included. A secret: do not log it.
    pub fn stream_key(&self) -> &str {
        &self.stream
    }

    /// The stream name masked for logs and error messages (`16ad***`).
    pub fn masked_stream(&self) -> String {
        mask(&self.stream)
    }

    /// `rtmp://host[:port]/app`, sent as `tcUrl` in `connect`; some ingests route on it.
    pub fn tc_url(&self) -> &str {
        &self.tc_url
    }

    /// The whole address including the stream key, e.g. to hand to ffmpeg. A secret.
    pub fn reveal(&self) -> String {
        format!("{}/{}", self.tc_url, self.stream)
    }
}

impl fmt::Display for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.tc_url, mask(&self.stream))
    }
}

impl fmt::Debug for RtmpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RtmpUrl({self})")
    }
}

impl std::str::FromStr for RtmpUrl {
    type Err = RtmpError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Shows at most the first 4 characters, and never more than half of the key, so short test keys
/// are not printed whole.
pub(crate) fn mask(secret: &str) -> String {
    let shown = (secret.chars().count() / 2).min(4);
    let mut out: String = secret.chars().take(shown).collect();
    out.push_str("***");
    out
}

/// Masks everything after the last '/' of something that failed to parse, so an error message
/// never carries a stream key.
fn mask_url(input: &str) -> String {
    let (head, query) = match input.split_once('?') {
        Some((h, _)) => (h, "?***"),
        None => (input, ""),
    };
    let after_scheme = head.split_once("://").map_or(head, |(_, rest)| rest);
    match head.rsplit_once('/') {
        Some((prefix, last)) if after_scheme.contains('/') && !last.is_empty() => {
            format!("{prefix}/{}{query}", mask(last))
        }
        _ => format!("{head}{query}"),
    }
}

fn split_host_port(authority: &str, default_port: u16) -> Result<(&str, u16), &'static str> {
    if authority.contains('@') {
        return Err("user:password@ in the address is not supported");
    }
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or("the IPv6 address is missing its closing ']'")?;
        match after {
            "" => (host, None),
            _ => (
                host,
                Some(
                    after
                        .strip_prefix(':')
                        .ok_or("unexpected text after the IPv6 address")?,
                ),
            ),
        }
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is missing");
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("the port is not a number from 1 to 65535"),
            Ok(n) => n,
        },
    };
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polyv_address_keeps_the_query_with_the_stream() {
        let u = RtmpUrl::parse(
            "rtmp://push2.videocc.net/recordfe/16ad889b3d20180118174258966?auth_key=abc-123",
        )
        .unwrap();
        assert_eq!(u.host(), "push2.videocc.net");
        assert_eq!(u.port(), 1935);
        assert_eq!(u.app(), "recordfe");
        assert_eq!(
            u.stream_key(),
            "16ad889b3d20180118174258966?auth_key=abc-123"
        );
        assert_eq!(u.tc_url(), "rtmp://push2.videocc.net/recordfe");
        assert_eq!(
            u.reveal(),
            "rtmp://push2.videocc.net/recordfe/16ad889b3d20180118174258966?auth_key=abc-123"
        );
    }

    #[test]
    fn display_and_debug_mask_the_stream_key() {
        let u = RtmpUrl::parse("rtmp://h/live/16ad889b3d?auth_key=abc-123").unwrap();
        let shown = format!("{u} {u:?}");
        assert!(shown.contains("rtmp://h/live/16ad***"), "{shown}");
        assert!(!shown.contains("889b"), "{shown}");
        assert!(!shown.contains("abc-123"), "{shown}");
        assert_eq!(mask("abc"), "a***");
        assert_eq!(mask(""), "***");
    }

    #[test]
    fn app_is_everything_before_the_last_segment() {
        let u = RtmpUrl::parse("rtmp://h:1936/live/inst/key").unwrap();
        assert_eq!(u.app(), "live/inst");
        assert_eq!(u.stream_key(), "key");
        assert_eq!(u.port(), 1936);
        assert_eq!(u.tc_url(), "rtmp://h:1936/live/inst");
    }

    #[test]
    fn query_with_slashes_stays_with_the_stream() {
        let u = RtmpUrl::parse("rtmp://h/live/key?sig=a/b/c").unwrap();
        assert_eq!(u.app(), "live");
        assert_eq!(u.stream_key(), "key?sig=a/b/c");
    }

    #[test]
    fn ipv6_hosts() {
        let u = RtmpUrl::parse("rtmp://[::1]:1935/live/key").unwrap();
        assert_eq!(u.host(), "::1");
        assert_eq!(u.port(), 1935);
        assert_eq!(u.tc_url(), "rtmp://[::1]/live");
        let u = RtmpUrl::parse("rtmp://[fe80::2]:19350/live/key").unwrap();
        assert_eq!(u.tc_url(), "rtmp://[fe80::2]:19350/live");
        assert!(RtmpUrl::parse("rtmp://[::1/live/key").is_err());
    }

    #[test]
    fn scheme_is_case_insensitive_and_whitespace_trimmed() {
        let u = RtmpUrl::parse("  RTMP://h/live/key\n").unwrap();
        assert_eq!(u.reveal(), "rtmp://h/live/key");
    }

    #[test]
    fn rejects_what_is_not_a_push_address() {
        for (input, needle) in [
            ("http://h/live/key", "not rtmp"),
            ("srt://h/live/key", "not rtmp or rtmps"),
            ("h/live/key", "rtmp://"),
            ("rtmp://h", "missing"),
            ("rtmp://h/", "missing"),
            ("rtmp://h/live", "stream key is missing"),
            ("rtmp://h/live/", "stream key is missing"),
            ("rtmp://h//key", "application"),
            ("rtmp://h:0/live/key", "port"),
            ("rtmp://h:99999/live/key", "port"),
            ("rtmp://h:x/live/key", "port"),
            ("rtmp://:1935/live/key", "host"),
            ("rtmp://u:p@h/live/key", "user"),
            ("rtmp://h/live/ke y", "whitespace"),
        ] {
            let err = RtmpUrl::parse(input).expect_err(input).to_string();
            assert!(err.contains(needle), "{input}: {err}");
            assert!(err.contains("rtmp://host[:port]/app/"), "{input}: {err}");
            assert!(!RtmpUrl::parse(input).unwrap_err().is_transient());
        }
    }

    #[test]
    fn rtmps_is_tls_on_port_443_unless_given() {
        let u = RtmpUrl::parse("rtmps://live.example.com/app/key").unwrap();
        assert!(u.is_tls());
        assert_eq!(u.port(), 443);
        assert_eq!(u.tc_url(), "rtmps://live.example.com/app");
        let u = RtmpUrl::parse("RTMPS://127.0.0.1:8443/live/key").unwrap();
        assert_eq!(
            (u.port(), u.tc_url()),
            (8443, "rtmps://127.0.0.1:8443/live")
        );
        assert!(!RtmpUrl::parse("rtmp://h/live/key").unwrap().is_tls());
    }

    #[test]
    fn errors_do_not_print_the_key() {
        let err = RtmpUrl::parse("rtmps://h:0/live/secretkey123?auth_key=zzz")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("secretkey123"), "{err}");
        assert!(!err.contains("zzz"), "{err}");
    }
}
