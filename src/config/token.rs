//! Reading the status server's bearer token (`[status] token_file`, or a systemd credential)
//! and checking `[status]` against it. (`[status]` itself is [`crate::status::StatusSettings`],
//! `[log]` is [`crate::logging::LogSettings`].)

use super::{ConfigError, Secret, Source};
use std::path::{Path, PathBuf};

/// The systemd credential read for the status token when `token_file` is not set
/// (`LoadCredential=status-token:/etc/polypush/status-token`).
pub const CREDENTIAL_STATUS_TOKEN: &str = "status-token";

impl super::Config {
    /// The bearer token the server requires: `token_file` read like the other secrets (a
    /// root-only file; a relative name is a systemd credential when `$CREDENTIALS_DIRECTORY`
    /// is set, else relative to the config file), or the systemd credential
    /// [`CREDENTIAL_STATUS_TOKEN`]. `None` when neither is there. `config_path` is the
    /// config file's path (relative names are resolved against it).
    pub fn status_token(&self, config_path: &Path) -> Result<Option<Secret>, ConfigError> {
        self.read_status_token(&Source {
            path: config_path,
            text: "",
        })
    }

    fn read_status_token(&self, src: &Source<'_>) -> Result<Option<Secret>, ConfigError> {
        let creds = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
        let token = super::resolve_secret(
            src,
            "status.token",
            None,
            self.status.token_file.as_deref(),
            creds.as_deref(),
            CREDENTIAL_STATUS_TOKEN,
        )?;
        if let Some(t) = &token {
            if t.expose()
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(src.invalid(
                    "status.token_file",
                    "the token must be one line without spaces: write only the token into the file (for example the output of `openssl rand -hex 32`)",
                ));
            }
        }
        Ok(token)
    }

    /// `[status]` checks: `listen` parses; a listener beyond loopback needs a token, and a
    /// configured token must be readable (it is read, checked and dropped here; the server
    /// reads it again with [`Config::status_token`](super::Config::status_token)).
    pub(super) fn validate_status(&self, src: &Source<'_>) -> Result<(), ConfigError> {
        let token = if self.status.enabled {
            self.read_status_token(src)?
        } else {
            None
        };
        self.status
            .validate(token.is_some())
            .map_err(|e| src.invalid(&e.key, e.message))
    }
}

#[cfg(test)]
mod tests {
    use super::super::Config;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn parse(text: &str) -> Result<Config, super::ConfigError> {
        let base = "[polyv]\nchannel_id = \"1\"\n";
        Config::from_toml(
            Path::new("/etc/polypush/polypush.toml"),
            &format!("{base}{text}"),
        )
    }

    #[test]
    fn listen_must_be_an_address() {
        let msg = parse("[status]\nlisten = \"localhost:9464\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            msg.contains(":4:1: status.listen: \"localhost:9464\""),
            "{msg}"
        );
        let c = parse("[status]\nlisten = \"[::1]:0\"\n").unwrap();
        assert_eq!(c.status.listen_addr().unwrap().port(), 0);
        assert_eq!(c.status_token(Path::new("/x")).unwrap(), None);
    }

    #[test]
    fn beyond_loopback_needs_a_token_file() {
        let msg = parse("[status]\nlisten = \"0.0.0.0:9464\"\n")
            .unwrap_err()
            .to_string();
        assert!(msg.contains("status.token_file: required because"), "{msg}");
        assert!(msg.contains("chmod 600"), "{msg}");
        // Disabled: nothing to protect.
        parse("[status]\nenabled = false\nlisten = \"0.0.0.0:9464\"\n").unwrap();

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "s3cr3t-token\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let text = format!("[status]\nlisten = \"0.0.0.0:9464\"\ntoken_file = {f:?}\n");
        let c = parse(&text).unwrap();
        let token = c
            .status_token(Path::new("/etc/polypush/polypush.toml"))
            .unwrap();
        assert_eq!(token.as_ref().map(|t| t.expose()), Some("s3cr3t-token"));
        assert!(!format!("{c:?} {c}").contains("s3cr3t"), "never printed");

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let msg = parse(&text).unwrap_err().to_string();
        assert!(
            msg.contains("status.token_file:") && msg.contains("chmod 600"),
            "{msg}"
        );

        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&f, "two words\n").unwrap();
        let msg = parse(&text).unwrap_err().to_string();
        assert!(msg.contains("one line without spaces"), "{msg}");
        assert!(!msg.contains("two words"), "{msg}");
    }
}
