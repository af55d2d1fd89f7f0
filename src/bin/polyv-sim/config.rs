//! The simulator's configuration: the optional TOML file, the command-line additions and the
//! defaults, merged into a [`SimConfig`] that seeds the [`SimState`].
//!
//! Secrets and passwords never appear in an error message from here: TOML errors are reported
//! with their position and a redacted message. Lines marked (inferred) are choices of this
//! simulator, not Polyv behaviour.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::faults::{
    DEFAULT_AUTH_KEY_TTL_S, DEFAULT_RATE_LIMIT_BLOCK_S, DEFAULT_RATE_LIMIT_PER_10S,
    MAX_AUTH_KEY_TTL_S, MAX_RATE_LIMIT_BLOCK_S,
};
use crate::state::{parse_channel_id, Channel, SimState, DEFAULT_AUTH_KEY_PRIVATE_KEY};

pub const DEFAULT_APP_ID: &str = "simappid01";
pub const DEFAULT_APP_SECRET: &str = "simsecret0123456789abcdefghijklm";
pub const DEFAULT_CHANNEL_ID: &str = "153884";
pub const DEFAULT_CHANNEL_PASSWORD: &str = "461666";
pub const DEFAULT_CHANNEL_NAME: &str = "polypush demo";
pub const DEFAULT_RTMP_BASE: &str = "rtmp://127.0.0.1:1935/live/";
pub const DEFAULT_MAX_CHANNELS: u32 = 50;

/// The TOML file, e.g.
///
/// ```toml
/// rtmp_base = "rtmp://127.0.0.1:1935/live/"
/// max_channels = 50
/// auth_key_ttl_s = 1800          # 0: push addresses carry no auth_key
/// auth_key_private_key = "..."   # signs auth_keys
/// rate_limit_per_10s = 1500      # 0: no counting
/// rate_limit_block_s = 300
/// [[app]]
/// id = "simappid01"
/// secret = "..."
/// [[channel]]
/// id = "153884"
/// password = "461666"
/// name = "polypush demo"
/// ```
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub rtmp_base: Option<String>,
    pub max_channels: Option<u32>,
    pub auth_key_ttl_s: Option<u64>,
    pub auth_key_private_key: Option<Redacted>,
    pub rate_limit_per_10s: Option<u32>,
    pub rate_limit_block_s: Option<u64>,
    #[serde(default)]
    pub app: Vec<AppEntry>,
    #[serde(default)]
    pub channel: Vec<ChannelEntry>,
}

/// A string that `{:?}` never prints.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Redacted(pub String);

impl std::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppEntry {
    pub id: String,
    pub secret: String,
}

// Hand-written so a secret can never reach a log through `{:?}`.
impl std::fmt::Debug for AppEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppEntry")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .finish()
    }
}

#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelEntry {
    pub id: String,
    pub password: String,
    pub name: Option<String>,
    pub app_id: Option<String>,
}

impl std::fmt::Debug for ChannelEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChannelEntry")
            .field("id", &self.id)
            .field("password", &"<redacted>")
            .field("name", &self.name)
            .field("app_id", &self.app_id)
            .finish()
    }
}

/// Reads and parses the TOML file. Errors give `file:line:column: message`, with any value
/// quoted by the TOML parser removed (it could be a secret).
pub fn load_file(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse_file(&text).map_err(|msg| anyhow::anyhow!("{}:{msg}", path.display()))
}

/// Parses TOML text; the error is `line:column: message` (redacted).
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((1, 1));
        format!("{line}:{col}: {}", redact(e.message()))
    })
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// serde quotes offending values in backticks for `invalid type`/`invalid value`; drop them.
fn redact(msg: &str) -> String {
    if !(msg.starts_with("invalid type") || msg.starts_with("invalid value")) {
        return msg.to_owned();
    }
    let mut out = String::with_capacity(msg.len());
    let mut inside = false;
    for c in msg.chars() {
        if c == '`' {
            if !inside {
                out.push_str("`<redacted>`");
            }
            inside = !inside;
        } else if !inside {
            out.push(c);
        }
    }
    out
}

/// Splits `LEFT:RIGHT` at the first colon; both sides must be non-empty. The error never
/// repeats the value (it may hold a secret).
pub fn split_pair(raw: &str, flag: &str, what: &str) -> anyhow::Result<(String, String)> {
    match raw.split_once(':') {
        Some((a, b)) if !a.is_empty() && !b.is_empty() => Ok((a.to_owned(), b.to_owned())),
        _ => bail!("{flag} expects {what} (two non-empty parts separated by ':')"),
    }
}

/// The merged configuration.
#[derive(Debug)]
pub struct SimConfig {
    pub apps: Vec<AppEntry>,
    pub channels: Vec<ChannelEntry>,
    pub rtmp_base: String,
    pub max_channels: u32,
    pub auth_key_ttl_s: u64,
    pub auth_key_private_key: Redacted,
    pub rate_limit_per_10s: u32,
    pub rate_limit_block_s: u64,
}

/// Command-line values that add to (or override) the file.
#[derive(Default)]
pub struct CliOverrides {
    pub apps: Vec<String>,
    pub channels: Vec<String>,
    pub rtmp_base: Option<String>,
    pub max_channels: Option<u32>,
    pub auth_key_ttl_s: Option<u64>,
    pub rate_limit_per_10s: Option<u32>,
    pub rate_limit_block_s: Option<u64>,
}

impl SimConfig {
    /// File first, then command-line entries (a later entry with the same id replaces an
    /// earlier one, (inferred)), then the defaults for whatever is still empty.
    pub fn build(file: FileConfig, cli: CliOverrides) -> anyhow::Result<Self> {
        let mut apps = file.app;
        for raw in &cli.apps {
            let (id, secret) = split_pair(raw, "--app", "APPID:SECRET")?;
            apps.push(AppEntry { id, secret });
        }
        let mut channels = file.channel;
        for raw in &cli.channels {
            let (id, password) = split_pair(raw, "--channel", "ID:PASSWORD")?;
            channels.push(ChannelEntry {
                id,
                password,
                name: None,
                app_id: None,
            });
        }
        if apps.is_empty() {
            apps.push(AppEntry {
                id: DEFAULT_APP_ID.to_owned(),
                secret: DEFAULT_APP_SECRET.to_owned(),
            });
        }
        if channels.is_empty() {
            channels.push(ChannelEntry {
                id: DEFAULT_CHANNEL_ID.to_owned(),
                password: DEFAULT_CHANNEL_PASSWORD.to_owned(),
                name: Some(DEFAULT_CHANNEL_NAME.to_owned()),
                app_id: None,
            });
        }
        for a in &apps {
            if a.id.trim().is_empty() || a.secret.is_empty() {
                bail!("an app needs a non-empty id and secret");
            }
        }
        for c in &channels {
            if parse_channel_id(&c.id).is_none() {
                bail!(
                    "channel id {:?} must be digits without a leading zero",
                    c.id
                );
            }
            if c.password.is_empty() {
                bail!("channel {} needs a non-empty password", c.id);
            }
            if let Some(app) = &c.app_id {
                if !apps.iter().any(|a| &a.id == app) {
                    bail!("channel {}: app_id {app:?} is not a configured app", c.id);
                }
            }
        }
        let rtmp_base = cli
            .rtmp_base
            .or(file.rtmp_base)
            .unwrap_or_else(|| DEFAULT_RTMP_BASE.to_owned());
        if rtmp_base.is_empty() {
            bail!("rtmp_base must not be empty");
        }
        let auth_key_ttl_s = cli
            .auth_key_ttl_s
            .or(file.auth_key_ttl_s)
            .unwrap_or(DEFAULT_AUTH_KEY_TTL_S);
        if auth_key_ttl_s > MAX_AUTH_KEY_TTL_S {
            bail!("auth_key_ttl_s must be at most {MAX_AUTH_KEY_TTL_S} (ten years)");
        }
        let rate_limit_block_s = cli
            .rate_limit_block_s
            .or(file.rate_limit_block_s)
            .unwrap_or(DEFAULT_RATE_LIMIT_BLOCK_S);
        if rate_limit_block_s > MAX_RATE_LIMIT_BLOCK_S {
            bail!("rate_limit_block_s must be at most {MAX_RATE_LIMIT_BLOCK_S} (one day)");
        }
        let auth_key_private_key = file
            .auth_key_private_key
            .unwrap_or_else(|| Redacted(DEFAULT_AUTH_KEY_PRIVATE_KEY.to_owned()));
        if auth_key_private_key.0.is_empty() {
            bail!("auth_key_private_key must not be empty");
        }
        Ok(SimConfig {
            apps,
            channels,
            rtmp_base,
            max_channels: cli
                .max_channels
                .or(file.max_channels)
                .unwrap_or(DEFAULT_MAX_CHANNELS),
            auth_key_ttl_s,
            auth_key_private_key,
            rate_limit_per_10s: cli
                .rate_limit_per_10s
                .or(file.rate_limit_per_10s)
                .unwrap_or(DEFAULT_RATE_LIMIT_PER_10S),
            rate_limit_block_s,
        })
    }

    /// The initial state.
    pub fn into_state(self) -> SimState {
        let mut st = SimState::new(self.rtmp_base, self.max_channels);
        st.faults.auth_key_ttl_s = self.auth_key_ttl_s;
        st.faults.rate_limit.per_10s = self.rate_limit_per_10s;
        st.faults.rate_limit.block_s = self.rate_limit_block_s;
        st.auth_key_private_key = self.auth_key_private_key.0;
        for a in self.apps {
            st.add_app(a.id, a.secret);
        }
        for c in self.channels {
            let Some(id) = parse_channel_id(&c.id) else {
                continue; // rejected by build()
            };
            let name = c.name.unwrap_or_else(|| format!("channel {id}"));
            let mut ch = Channel::new(id, c.password, name);
            ch.created_by = c.app_id;
            st.add_channel(ch);
        }
        st
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = SimConfig::build(FileConfig::default(), CliOverrides::default()).unwrap();
        assert_eq!(c.apps.len(), 1);
        assert_eq!(c.apps[0].id, DEFAULT_APP_ID);
        assert_eq!(c.channels[0].id, "153884");
        assert_eq!(c.rtmp_base, DEFAULT_RTMP_BASE);
        assert_eq!(c.max_channels, 50);
        assert_eq!(
            (c.auth_key_ttl_s, c.rate_limit_per_10s, c.rate_limit_block_s),
            (1800, 1500, 300)
        );
        let st = c.into_state();
        assert_eq!(st.channels[&153884].name, DEFAULT_CHANNEL_NAME);
    }

    #[test]
    fn file_plus_cli() {
        let f = parse_file(
            r#"
rtmp_base = "rtmp://a/b/"
max_channels = 7
auth_key_ttl_s = 60
auth_key_private_key = "pk"
rate_limit_per_10s = 9
rate_limit_block_s = 4
[[app]]
id = "x"
secret = "s"
[[channel]]
id = "5"
password = "p"
name = "five"
app_id = "x"
"#,
        )
        .unwrap();
        let c = SimConfig::build(
            f,
            CliOverrides {
                apps: vec!["y:t:u".into()],
                channels: vec!["6:q".into()],
                rtmp_base: Some("rtmp://c/".into()),
                rate_limit_per_10s: Some(5),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(c.apps.len(), 2);
        assert_eq!(c.apps[1].secret, "t:u");
        assert_eq!(c.channels.len(), 2);
        assert_eq!(c.rtmp_base, "rtmp://c/");
        assert_eq!(c.max_channels, 7);
        assert_eq!(
            (c.auth_key_ttl_s, c.rate_limit_per_10s, c.rate_limit_block_s),
            (60, 5, 4)
        );
        assert!(!format!("{c:?}").contains("\"pk\""));
        let st = c.into_state();
        assert_eq!(st.auth_key_private_key, "pk");
        assert_eq!(
            (st.faults.auth_key_ttl_s, st.faults.rate_limit.per_10s),
            (60, 5)
        );
    }

    #[test]
    fn errors_do_not_leak_values() {
        let e = parse_file("[[app]]\nid = \"x\"\nsecret = 12345\n").unwrap_err();
        assert!(e.starts_with("3:"), "{e}");
        assert!(!e.contains("12345"), "{e}");
        let e = parse_file("bogus = 1\n").unwrap_err();
        assert!(e.contains("bogus"), "{e}");
        let e = split_pair("topsecret", "--app", "APPID:SECRET").unwrap_err();
        assert!(!e.to_string().contains("topsecret"));
        let bad = CliOverrides {
            channels: vec!["01:p".into()],
            ..Default::default()
        };
        assert!(SimConfig::build(FileConfig::default(), bad).is_err());
        let bad = CliOverrides {
            auth_key_ttl_s: Some(MAX_AUTH_KEY_TTL_S + 1),
            ..Default::default()
        };
        let e = SimConfig::build(FileConfig::default(), bad).unwrap_err();
        assert!(e.to_string().contains("auth_key_ttl_s"), "{e}");
        let e = parse_file("auth_key_private_key = 5\n").unwrap_err();
        assert!(e.starts_with("1:") && !e.contains('5'), "{e}");
    }

    #[test]
    fn debug_redacts() {
        let a = AppEntry {
            id: "a".into(),
            secret: "hush".into(),
        };
        assert!(!format!("{a:?}").contains("hush"));
    }
}
