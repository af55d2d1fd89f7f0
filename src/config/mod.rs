//! The configuration: one TOML file, defaults first, then the file, then [`Config::validate`].
//!
//! Unknown keys and wrong types are errors that name the file, line and column (serde with
//! `deny_unknown_fields`); validation errors name the key and, where the key is in the file,
//! its line and column too. Secrets are read from root-only files or from systemd credentials
//! (`$CREDENTIALS_DIRECTORY`, `LoadCredential=`) and held as [`Secret`], which never prints.
//!
//! `packaging/polypush.toml` documents every key; keep it in step with these structs.

mod media;
mod token;

pub use media::{RecordConfig, TargetConfig};

use crate::adapt::AdaptConfig;
use crate::encode::{AudioSettings, VideoSettings};
use crate::health::HealthSettings;
use crate::logging::LogSettings;
use crate::platform::{PolyvSettings, CREDENTIAL_APP_SECRET, CREDENTIAL_PASSWORD};
use crate::schedule::ScheduleEntry;
use crate::secret::Secret;
use crate::status::StatusSettings;
pub use token::CREDENTIAL_STATUS_TOKEN;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where the service looks when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/polypush/polypush.toml";

/// Everything polypush is configured with.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The Polyv channel and the admin API credentials.
    pub polyv: PolyvSettings,
    /// Where to push and how much to queue.
    pub target: TargetConfig,
    /// Camera and H.264 encoder.
    pub video: VideoSettings,
    /// Microphone and AAC encoder.
    pub audio: AudioSettings,
    /// The local safety recording.
    pub record: RecordConfig,
    /// Bitrate adaptation to the uplink.
    pub adapt: AdaptConfig,
    /// The status HTTP server.
    pub status: StatusSettings,
    /// Media health: audio levels and the silence, clipping, black, frozen, low_fps alarms.
    pub health: HealthSettings,
    /// Logging.
    pub log: LogSettings,
    /// The state directory and the lesson log.
    pub service: crate::lessons::ServiceSettings,
    /// Broadcast windows; none means stream all the time.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub schedule: Vec<ScheduleEntry>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}; pass --config FILE or create it from packaging/polypush.toml")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}; fix it (every key is documented in packaging/polypush.toml)", located(path, *line, *col))]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        col: Option<usize>,
        message: String,
    },
    #[error("{}: {key}: {message}", located(path, *line, *col))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        col: Option<usize>,
        key: String,
        message: String,
    },
}

fn located(path: &Path, line: Option<usize>, col: Option<usize>) -> String {
    match (line, col) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}", path.display()),
        (Some(l), None) => format!("{}:{l}", path.display()),
        _ => path.display().to_string(),
    }
}

/// A loaded file with its source kept, so validation errors can point at the key's line.
struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn invalid(&self, key: &str, message: impl Into<String>) -> ConfigError {
        let (line, col) = match locate_key(self.text, key) {
            Some((l, c)) => (Some(l), Some(c)),
            None => (None, None),
        };
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            line,
            col,
            key: key.to_string(),
            message: message.into(),
        }
    }
}

/// Line and column (1-based) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// Finds `key` (a dotted path such as `polyv.endpoints.login`) in a TOML text: the key under
/// its `[table]` header, or written dotted. Good enough to point a user at the right line;
/// `None` when the key is not in the file (then the default was used).
fn locate_key(text: &str, dotted: &str) -> Option<(usize, usize)> {
    let (table, key) = dotted.rsplit_once('.').unwrap_or(("", dotted));
    let mut current = String::new();
    for (i, raw) in text.lines().enumerate() {
        let trimmed = raw.trim_start();
        let indent = raw.len() - trimmed.len();
        if let Some(rest) = trimmed.strip_prefix('[') {
            if let Some(end) = rest.find(']') {
                current = rest[..end]
                    .trim_matches(|c| c == '[' || c == ' ')
                    .to_string();
            }
            continue;
        }
        let Some((lhs, _)) = trimmed.split_once('=') else {
            continue;
        };
        let lhs = lhs.trim();
        let full = if current.is_empty() {
            lhs.to_string()
        } else {
            format!("{current}.{lhs}")
        };
        if full == dotted || (current == table && lhs == key) {
            return Some((i + 1, indent + 1));
        }
    }
    None
}

impl Config {
    /// Loads `path`: defaults, then the file, then secrets from their files, then `validate()`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml(path, &text)
    }

    /// Parses and validates a config text; `path` is only used in messages and to resolve
    /// relative secret files.
    pub fn from_toml(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let (line, col) = match e.span() {
                Some(span) => {
                    let (l, c) = line_col(text, span.start);
                    (Some(l), Some(c))
                }
                None => (None, None),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                col,
                message: e.message().trim().to_string(),
            }
        })?;
        let src = Source { path, text };
        cfg.upgrade_legacy_defaults(&src);
        cfg.resolve_secrets(&src)?;
        cfg.validate_in(&src)?;
        // Secrets are `Secret`s: their Debug prints ***, so the whole config can be logged.
        tracing::debug!(file = %path.display(), config = ?cfg, "configuration loaded");
        Ok(cfg)
    }

    /// Checks values that serde cannot: required keys, ranges, URLs. Every message says what
    /// to change.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        self.validate_in(&Source { path, text: "" })
    }

    fn validate_in(&self, src: &Source<'_>) -> Result<(), ConfigError> {
        let p = &self.polyv;
        // No [polyv] at all is fine: a box that pushes to a fixed address (`[target] url` or
        // `run --url`) never talks to Polyv. A [polyv] that is there must name the channel.
        if p.is_configured() && p.channel_id.trim().is_empty() {
            return Err(src.invalid(
                "polyv.channel_id",
                "missing: set channel_id under [polyv] to your Polyv channel number (频道号), such as channel_id = \"153884\"",
            ));
        }
        if !p.channel_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(src.invalid(
                "polyv.channel_id",
                format!(
                    "{:?} is not a channel number: use the digits only, such as \"153884\"",
                    p.channel_id
                ),
            ));
        }
        if !(1..=120).contains(&p.timeout_s) {
            return Err(src.invalid(
                "polyv.timeout_s",
                format!(
                    "{} is out of range: use 1 to 120 seconds (20 is a good default)",
                    p.timeout_s
                ),
            ));
        }
        p.endpoints
            .validate()
            .map_err(|e| src.invalid(&e.key, e.message))?;
        self.validate_media(src)?;
        if let Err(e) = self.adapt.validate_with_video(self.video.bitrate_kbps) {
            return Err(src.invalid(&e.key, e.message.clone()));
        }
        if let Err(e) = self.health.validate() {
            return Err(src.invalid(&e.key, e.message.clone()));
        }
        if let Err(e) = self.service.validate() {
            return Err(src.invalid(&e.key, e.message.clone()));
        }
        crate::schedule::Schedule::from_config(&self.schedule)
            .map_err(|e| src.invalid(&e.key, e.message))?;
        if let Some(app_id) = &p.app_id {
            if app_id.trim().is_empty() || app_id.chars().any(char::is_whitespace) {
                return Err(src.invalid(
                    "polyv.app_id",
                    "must be the appId from Polyv's API settings, without spaces",
                ));
            }
        }
        self.validate_status(src)?;
        Ok(())
    }

    /// Old shipped defaults a kept config file still spells out (packaging/polypush.toml is a
    /// conffile, and every box edits it) give way to the current ones, with a warning that
    /// says which line to delete.
    fn upgrade_legacy_defaults(&mut self, src: &Source<'_>) {
        for up in self.polyv.endpoints.upgrade_legacy_defaults() {
            let at = match locate_key(src.text, &up.key) {
                Some((line, col)) => format!("{}:{line}:{col}", src.path.display()),
                None => src.path.display().to_string(),
            };
            tracing::warn!(
                file = %at,
                key = %up.key,
                old = up.old,
                new = up.new,
                "an old default of polypush, replaced by the host of Polyv's newest clients: delete the line to keep following the defaults"
            );
        }
    }

    /// Reads `password_file` / `app_secret_file` (or systemd credentials) into the secrets.
    fn resolve_secrets(&mut self, src: &Source<'_>) -> Result<(), ConfigError> {
        let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let p = &mut self.polyv;
        p.password = resolve_secret(
            src,
            "polyv.password",
            p.password.take(),
            p.password_file.as_deref(),
            creds.as_deref(),
            CREDENTIAL_PASSWORD,
        )?;
        p.app_secret = resolve_secret(
            src,
            "polyv.app_secret",
            p.app_secret.take(),
            p.app_secret_file.as_deref(),
            creds.as_deref(),
            CREDENTIAL_APP_SECRET,
        )?;
        Ok(())
    }
}

fn resolve_secret(
    src: &Source<'_>,
    key: &str,
    inline: Option<Secret>,
    file: Option<&Path>,
    creds: Option<&Path>,
    credential: &str,
) -> Result<Option<Secret>, ConfigError> {
    let file_key = format!("{key}_file");
    if inline.is_some() && file.is_some() {
        return Err(src.invalid(
            key,
            format!("set either {key} or {file_key}, not both: remove one"),
        ));
    }
    if let Some(s) = inline {
        if s.is_empty() {
            return Err(src.invalid(key, "is empty: set the secret or remove the key"));
        }
        return Ok(Some(s));
    }
    // A relative file name is a systemd credential when systemd gave us a directory.
    let (path, from_systemd) = match (file, creds) {
        (Some(f), Some(dir)) if f.is_relative() => (dir.join(f), true),
        (Some(f), _) if f.is_relative() => {
            let base = src.path.parent().unwrap_or(Path::new("."));
            (base.join(f), false)
        }
        (Some(f), _) => (f.to_path_buf(), false),
        (None, Some(dir)) if dir.join(credential).is_file() => (dir.join(credential), true),
        (None, _) => return Ok(None),
    };
    if !from_systemd {
        check_secret_permissions(src, &file_key, &path)?;
    }
    let text = std::fs::read_to_string(&path).map_err(|e| {
        src.invalid(
            &file_key,
            format!(
                "cannot read {}: {e}; make it readable by the polypush user only (chown polypush; chmod 600)",
                path.display()
            ),
        )
    })?;
    let value = text.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(src.invalid(
            &file_key,
            format!("{} is empty: write the secret into it", path.display()),
        ));
    }
    Ok(Some(Secret::new(value)))
}

#[cfg(unix)]
fn check_secret_permissions(src: &Source<'_>, key: &str, path: &Path) -> Result<(), ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let Ok(meta) = std::fs::metadata(path) else {
        return Ok(()); // the read that follows reports the real problem
    };
    let mode = meta.permissions().mode();
    if mode & 0o004 != 0 {
        return Err(src.invalid(
            key,
            format!(
                "{} is readable by every user (mode {:03o}): run `chmod 600 {}`",
                path.display(),
                mode & 0o777,
                path.display()
            ),
        ));
    }
    if mode & 0o040 != 0 {
        tracing::warn!(
            file = %path.display(),
            mode = format_args!("{:03o}", mode & 0o777),
            "secret file is group-readable; chmod 600 unless the group is meant to read it"
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_secret_permissions(_: &Source<'_>, _: &str, _: &Path) -> Result<(), ConfigError> {
    Ok(())
}

impl fmt::Display for Config {
    /// The effective configuration as TOML, secrets shown as `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match toml::to_string_pretty(self) {
            Ok(s) => f.write_str(&s),
            Err(_) => Err(fmt::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::Endpoints;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("/etc/polypush/polypush.toml"), text)
    }

    #[test]
    fn defaults_then_file() {
        let c = parse("[polyv]\nchannel_id = 153884\npassword = \"461666\"\n").unwrap();
        assert_eq!(c.polyv.channel_id, "153884");
        assert_eq!(c.polyv.timeout_s, 20);
        assert_eq!(c.polyv.endpoints, Endpoints::default());
        assert_eq!(c.polyv.password().unwrap().expose(), "461666");
    }

    #[test]
    fn unknown_key_names_line_and_column() {
        let e = parse("[polyv]\nchannel_id = \"1\"\n  chanel = 3\n").unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.starts_with("/etc/polypush/polypush.toml:3:3: unknown field `chanel`"),
            "{msg}"
        );
    }

    #[test]
    fn wrong_type_names_line_and_column() {
        let e = parse("[polyv]\nchannel_id = \"1\"\ntimeout_s = \"ten\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("polypush.toml:3:13"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
    }

    #[test]
    fn missing_channel_id_says_what_to_set() {
        let msg = parse("[polyv]\npassword = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("polyv.channel_id: missing"), "{msg}");
    }

    #[test]
    fn validation_points_at_the_key_line() {
        let msg = parse("[polyv]\nchannel_id = \"1\"\ntimeout_s = 999\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.starts_with(
                "/etc/polypush/polypush.toml:3:1: polyv.timeout_s: 999 is out of range"
            ),
            "{msg}"
        );
        let msg = parse("[polyv]\nchannel_id = \"1\"\n[polyv.endpoints]\nlogin = \"ftp://x\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains(":4:1: polyv.endpoints.login"), "{msg}");
    }

    #[test]
    fn media_and_resilience_ranges_are_checked() {
        let base = "[polyv]\nchannel_id = \"1\"\n";
        for (extra, key) in [
            ("[target]\nstall_timeout_s = 30\n", "target.stall_timeout_s"),
            ("[target]\ncongestion = \"bbr; rm\"\n", "target.congestion"),
            (
                "[target]\ncredentials_retry_s = 5\n",
                "target.credentials_retry_s",
            ),
            ("[video]\nwidth = 641\n", "video.width"),
            ("[audio]\nsample_rate = 22050\n", "audio.sample_rate"),
            ("[record]\nenabled = true\ndir = \"rec\"\n", "record.dir"),
        ] {
            let msg = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(msg.contains(key), "{extra}: {msg}");
        }
    }

    #[test]
    fn both_inline_and_file_is_an_error() {
        let msg = parse("[polyv]\nchannel_id = \"1\"\npassword = \"a\"\npassword_file = \"/x\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("not both"), "{msg}");
    }

    #[test]
    fn secret_files_checked_and_read() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "461666\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!("[polyv]\nchannel_id = \"1\"\npassword_file = {:?}\n", f);
        let c = parse(&text).unwrap();
        assert_eq!(c.polyv.password().unwrap().expose(), "461666");
        assert!(!c.to_string().contains("461666"));

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains(":3:1: polyv.password_file:"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");

        let missing = format!(
            "[polyv]\nchannel_id = \"1\"\npassword_file = {:?}\n",
            dir.path().join("nope")
        );
        let msg = parse(&missing).unwrap_err().to_string();
        assert!(msg.contains("cannot read"), "{msg}");
    }

    /// packaging/polypush.toml is the config reference: it must parse, and document every key.
    #[test]
    fn packaging_example_is_valid_and_complete() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/polypush.toml"
        ));
        let text = std::fs::read_to_string(path).unwrap();
        let usable = text.replace(
            "password_file = \"/etc/polypush/password\"",
            "password = \"x\"",
        );
        Config::from_toml(path, &usable).unwrap();

        let mut full = Config::default();
        full.polyv.password = Some(Secret::new("x"));
        full.polyv.password_file = Some("x".into());
        full.polyv.app_id = Some("x".into());
        full.polyv.app_secret = Some(Secret::new("x"));
        full.polyv.app_secret_file = Some("x".into());
        full.target.url = "x".into();
        full.video.input_format = "x".into();
        full.video.file = Some("x".into());
        full.schedule = vec![ScheduleEntry {
            days: vec!["x".into()],
            date: Some("x".into()),
            start: "x".into(),
            end: "x".into(),
            timezone: Some("x".into()),
            title: Some("x".into()),
            rename: Some("x".into()),
            lead_s: 1,
        }];
        let value = toml::Value::try_from(&full).unwrap();
        let mut missing = Vec::new();
        walk(&value, "", &mut |key| {
            let leaf = key.rsplit('.').next().unwrap();
            let documented = text.lines().any(|l| {
                let l = l.trim_start_matches(['#', ' ']);
                l.starts_with(&format!("{leaf} ="))
                    || l.starts_with(&format!("[{key}]"))
                    || l.starts_with(&format!("[[{key}]]"))
            });
            if !documented {
                missing.push(key.to_string());
            }
        });
        assert!(
            missing.is_empty(),
            "undocumented keys in packaging/polypush.toml: {missing:?}"
        );
    }

    fn walk(v: &toml::Value, prefix: &str, f: &mut impl FnMut(&str)) {
        if let toml::Value::Table(t) = v {
            for (k, v) in t {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                f(&key);
                walk(v, &key, f);
            }
        }
        // An array of tables ([[schedule]]): its entries' keys, under the array's name.
        if let toml::Value::Array(a) = v {
            for v in a {
                walk(v, prefix, f);
            }
        }
    }

    /// A kept conffile from before: the old hosts load as the new defaults.
    #[test]
    fn old_endpoint_defaults_load_as_the_new_ones() {
        let c = parse(
            "[polyv]\nchannel_id = \"1\"\n[polyv.endpoints]\nlogin = \"https://live.polyv.net\"\nchannel = \"https://api.live.polyv.net\"\nchat = \"https://api.chat.polyv.net\"\napi = \"https://api.polyv.net\"\n",
        )
        .unwrap();
        assert_eq!(c.polyv.endpoints, Endpoints::default());
        assert_eq!(
            c.polyv.endpoints.login_fallback(),
            Some("https://live.polyv.net")
        );
    }

    #[test]
    fn the_packaged_endpoint_examples_are_valid() {
        let text = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/packaging/polypush.toml"
        ))
        .unwrap();
        let examples: String = text
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| {
                [
                    "login =",
                    "login_fallback =",
                    "channel =",
                    "chat =",
                    "api =",
                    "resolve =",
                ]
                .iter()
                .any(|k| l.starts_with(k))
                    && toml::from_str::<toml::Table>(l).is_ok()
            })
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(examples.lines().count(), 6, "{examples}");
        let c = parse(&format!(
            "[polyv]\nchannel_id = \"1\"\n[polyv.endpoints]\n{examples}"
        ))
        .unwrap();
        assert_eq!(c.polyv.endpoints.resolve.len(), 2);
        let defaults = Endpoints {
            resolve: c.polyv.endpoints.resolve.clone(),
            login_fallback: c.polyv.endpoints.login_fallback.clone(),
            ..Endpoints::default()
        };
        assert_eq!(c.polyv.endpoints, defaults, "the examples are the defaults");
    }

    #[test]
    fn a_bad_dns_override_points_at_its_line() {
        let msg = parse(
            "[polyv]\nchannel_id = \"1\"\n[polyv.endpoints]\nresolve = { \"api.polyv.net\" = \"api.example\" }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            msg.contains(":4:1: polyv.endpoints.resolve: \"api.example\" (for \"api.polyv.net\") is not an IP address"),
            "{msg}"
        );
    }

    #[test]
    fn locate_handles_dotted_and_tables() {
        let t = "[polyv]\nchannel_id = 1\n[polyv.endpoints]\n  api = \"x\"\n";
        assert_eq!(locate_key(t, "polyv.endpoints.api"), Some((4, 3)));
        assert_eq!(locate_key(t, "polyv.channel_id"), Some((2, 1)));
        assert_eq!(
            locate_key("polyv.timeout_s = 3\n", "polyv.timeout_s"),
            Some((1, 1))
        );
        assert_eq!(locate_key(t, "polyv.app_id"), None);
    }
}
