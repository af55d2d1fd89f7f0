//! `[polyv]`: which channel to broadcast on and how to reach the platform, as written in the
//! file. The platform layer owns this table; `config` composes it, reads the secret files
//! into it and checks it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Endpoints;
use crate::secret::Secret;
use crate::setting::InvalidSetting;

/// systemd credential names looked up in `$CREDENTIALS_DIRECTORY` when no secret is configured.
pub const CREDENTIAL_PASSWORD: &str = "polyv-password";
pub const CREDENTIAL_APP_SECRET: &str = "polyv-app-secret";

/// `[polyv]`: which channel to broadcast on and how to reach the platform.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolyvSettings {
    /// The channel number (频道号). Required.
    #[serde(deserialize_with = "string_or_int")]
    pub channel_id: String,
    /// The channel password, inline. Prefer `password_file` or a systemd credential.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
    /// A root-only file holding the channel password (relative paths are looked up in
    /// `$CREDENTIALS_DIRECTORY` when systemd provides one).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// The account's appId, for the admin commands (`polypush channel …`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_id: Option<String>,
    /// The account's appSecret, inline. Prefer `app_secret_file`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_secret: Option<Secret>,
    /// A root-only file holding the appSecret.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub app_secret_file: Option<PathBuf>,
    /// Timeout of one HTTP request to Polyv, in seconds (1..=120). Polyv's own clients use 15-30.
    pub timeout_s: u64,
    /// Where each Polyv call goes, the login fallback and DNS overrides.
    pub endpoints: Endpoints,
}

impl Default for PolyvSettings {
    fn default() -> Self {
        Self {
            channel_id: String::new(),
            password: None,
            password_file: None,
            app_id: None,
            app_secret: None,
            app_secret_file: None,
            timeout_s: 20,
            endpoints: Endpoints::default(),
        }
    }
}

fn string_or_int<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        I(i64),
    }
    match Either::deserialize(d) {
        Ok(Either::S(s)) => Ok(s),
        Ok(Either::I(i)) => Ok(i.to_string()),
        Err(_) => Err(serde::de::Error::custom(
            "expected the channel number as a string or an integer, such as \"153884\"",
        )),
    }
}

/// A configuration problem. Its `Display` is the one line the user sees.
impl PolyvSettings {
    /// Whether the file has a `[polyv]` that says anything (all defaults: no Polyv at all).
    pub fn is_configured(&self) -> bool {
        let d = Self::default();
        !self.channel_id.is_empty()
            || self.password.is_some()
            || self.password_file.is_some()
            || self.app_id.is_some()
            || self.app_secret.is_some()
            || self.app_secret_file.is_some()
            || self.timeout_s != d.timeout_s
            || self.endpoints != d.endpoints
    }

    /// The channel password, or an error that says where to put it.
    pub fn password(&self) -> Result<&Secret, InvalidSetting> {
        self.password.as_ref().ok_or_else(|| {
            InvalidSetting::new(
                "polyv.password",
                format!(
                    "missing: set password_file under [polyv] (a root-only file with the channel password) or provide the systemd credential {CREDENTIAL_PASSWORD}"
                ),
            )
        })
    }

    /// appId and appSecret for the admin APIs, or an error that says where to put them.
    pub fn app_credentials(&self) -> Result<(&str, &Secret), InvalidSetting> {
        match (&self.app_id, &self.app_secret) {
            (Some(id), Some(secret)) => Ok((id, secret)),
            _ => Err(InvalidSetting::new(
                "polyv.app_id",
                format!(
                    "admin commands need app_id and app_secret_file under [polyv] (from Polyv's API settings) or the systemd credential {CREDENTIAL_APP_SECRET}"
                ),
            )),
        }
    }
}
