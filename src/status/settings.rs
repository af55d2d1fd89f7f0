//! `[status]`: the status server's own settings, as written in the file. `config` composes
//! them, checks them ([`StatusSettings::validate`]) and reads the bearer token (a secret
//! file, read the way every secret is).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// `[status]`: the HTTP status server (the page at `/`, `/metrics`, `/healthz`, `/status`,
/// `POST /reconnect`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StatusSettings {
    /// Serve at all.
    pub enabled: bool,
    /// Address and port to listen on.
    pub listen: String,
    /// A file holding the token the server requires on every route but `/login` (as a bearer
    /// token, or once typed into the login form, as the session cookie); required when
    /// `listen` is not a loopback address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
            token_file: None,
        }
    }
}

impl StatusSettings {
    /// `listen` as a socket address, or a message that says what to write.
    pub fn listen_addr(&self) -> Result<SocketAddr, InvalidSetting> {
        self.listen.trim().parse().map_err(|_| {
            InvalidSetting::new(
                "status.listen",
                format!(
                    "{:?} is not an IP address and port: use something like \"127.0.0.1:9464\" (or \"[::1]:9464\"; host names are not looked up)",
                    self.listen
                ),
            )
        })
    }

    /// `listen` parses; a listener beyond loopback needs a token (`has_token`: one is
    /// configured and readable).
    pub fn validate(&self, has_token: bool) -> Result<(), InvalidSetting> {
        let addr = self.listen_addr()?;
        if self.enabled && !has_token && !is_loopback(&addr) {
            return Err(InvalidSetting::new(
                "status.token_file",
                format!(
                    "required because status.listen ({addr}) is not a loopback address: write a random token into a root-only file (`openssl rand -hex 32 > /etc/polypush/status-token; chmod 600 /etc/polypush/status-token`) and set token_file = \"/etc/polypush/status-token\" under [status], or listen on 127.0.0.1"
                ),
            ));
        }
        Ok(())
    }
}

/// A loopback address (127.0.0.0/8, ::1, or ::ffff:127.x.y.z).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    addr.ip().to_canonical().is_loopback()
}
