//! `[status]` and `[log]`: how the daemon is watched.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// `[status]`: the HTTP status server (`/metrics`, `/healthz`, `/status`, `POST /reconnect`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusConfig {
    /// Serve at all.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: String,
    /// A file holding a bearer token the server requires (all endpoints); required when
    /// `listen` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
            token_file: None,
        }
    }
}

/// `[log]`: what the daemon logs.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// error, warn, info, debug or trace (or an `EnvFilter` directive); `RUST_LOG` and
    /// `--log-level` override it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
        }
    }
}
