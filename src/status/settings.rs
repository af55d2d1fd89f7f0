//! `[status]`: the status server's own settings, as written in the file. `config` composes
//! them, checks them ([`StatusSettings::validate`]) and reads the bearer token (a secret
//! file, read the way every secret is).

use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::encode::snapshot::{DEFAULT_SNAPSHOT_WIDTH, MAX_SNAPSHOT_WIDTH, MIN_SNAPSHOT_WIDTH};
use crate::setting::InvalidSetting;

/// `[status]`: the HTTP status server (the page at `/`, `/metrics`, `/healthz`, `/status`,
/// `/snapshot.jpg`, `POST /reconnect`).
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
    /// Width of `/snapshot.jpg` in pixels, even, 160..=1920 (never wider than the picture);
    /// the height keeps the aspect ratio.
    pub snapshot_width: u32,
}

impl Default for StatusSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:9464".into(),
            token_file: None,
            snapshot_width: DEFAULT_SNAPSHOT_WIDTH,
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
    /// configured and readable); `snapshot_width` is even and in range.
    pub fn validate(&self, has_token: bool) -> Result<(), InvalidSetting> {
        let addr = self.listen_addr()?;
        let w = self.snapshot_width;
        if !(MIN_SNAPSHOT_WIDTH..=MAX_SNAPSHOT_WIDTH).contains(&w) || w % 2 != 0 {
            return Err(InvalidSetting::new(
                "status.snapshot_width",
                format!(
                    "{w} is not allowed: use an even number of pixels from {MIN_SNAPSHOT_WIDTH} to {MAX_SNAPSHOT_WIDTH} (default {DEFAULT_SNAPSHOT_WIDTH}); the height follows the picture's aspect ratio"
                ),
            ));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_width_is_even_and_in_range() {
        let with = |w| StatusSettings {
            snapshot_width: w,
            ..StatusSettings::default()
        };
        assert_eq!(StatusSettings::default().snapshot_width, 640);
        for ok in [160, 640, 1280, 1920] {
            assert!(with(ok).validate(false).is_ok(), "{ok}");
        }
        for bad in [0, 158, 641, 1922, 4000] {
            let e = with(bad).validate(false).unwrap_err().to_string();
            assert!(e.contains("status.snapshot_width"), "{e}");
            assert!(e.contains("even number of pixels from 160 to 1920"), "{e}");
        }
    }
}
