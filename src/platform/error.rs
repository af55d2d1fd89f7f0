//! One error enum for everything that can go wrong talking to Polyv. Each variant's message
//! is the one line a user sees, and says what to do.

use std::fmt;

use crate::exit::ExitCode;

/// What the platform answered, or why it could not answer.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    /// teacher_login said the channel id or password is wrong.
    #[error("Polyv rejected the credentials of channel {channel_id} ({message}): check channel_id and the channel password (password_file) under [polyv]")]
    CredentialsRejected { channel_id: String, message: String },
    /// The appId is unknown to Polyv.
    #[error("Polyv does not know this appId ({message}): check app_id under [polyv] against the API settings of your Polyv account")]
    AppRejected { message: String },
    /// The request signature did not verify: the appSecret (or signing) is wrong.
    #[error("Polyv rejected the signature of {api} ({message}): check that app_secret / app_secret_file under [polyv] belongs to the configured app_id")]
    SignatureRejected { api: &'static str, message: String },
    /// The 13-digit timestamp was outside Polyv's 3-minute window: almost always this box's clock.
    #[error("Polyv rejected the timestamp of {api}: {skew}; Polyv accepts 3 minutes, so fix this box's clock (enable NTP: `timedatectl set-ntp true`)")]
    StaleTimestamp { api: &'static str, skew: Skew },
    /// A login refusal that is not about the password: the channel is still logged in or
    /// live elsewhere (often this box before a restart; Polyv's advice is to try again
    /// later), or the channel's login switch is off.
    #[error(
        "Polyv refused the login to channel {channel_id} ({message}): {}",
        login_refusal_advice(reason)
    )]
    LoginRefused {
        channel_id: String,
        message: String,
        /// `already_logged_in`, `channel_live` or `login_forbidden`.
        reason: &'static str,
    },
    /// Polyv's own validation message (name too long, wrong scene, bad JSON, …).
    #[error("Polyv refused {api}: {message}: correct the request and run it again")]
    Validation { api: &'static str, message: String },
    /// `qps exceeds number of calls`: Polyv blocks the caller for 5 minutes.
    #[error("Polyv rate-limited {api} ({message}): this address is blocked for about 5 minutes; wait at least 5 minutes before trying again")]
    RateLimited { api: &'static str, message: String },
    /// 5xx (or a plain 429) after the retries ran out.
    #[error("Polyv had a server error on {api} (HTTP {status}: {message}) after {attempts} attempt(s): try again later; if it persists, check Polyv's status")]
    Server {
        api: &'static str,
        status: u16,
        message: String,
        attempts: u32,
    },
    /// No HTTP answer at all: DNS, connect, TLS, timeout.
    #[error("cannot reach Polyv at {host} for {api}: {detail} (after {attempts} attempt(s)): check the network, DNS and [polyv.endpoints]")]
    Transport {
        api: &'static str,
        host: String,
        detail: String,
        attempts: u32,
    },
    /// An answer we cannot read: often a proxy or captive portal.
    #[error("Polyv's reply to {api} could not be understood (HTTP {status}, starts with {first_bytes:?}): a proxy or captive portal may be in the way; check [polyv.endpoints]")]
    Undecodable {
        api: &'static str,
        status: u16,
        first_bytes: String,
    },
}

/// What to do about a [`PlatformError::LoginRefused`], by its reason.
pub(crate) fn login_refusal_advice(reason: &str) -> &'static str {
    match reason {
        "login_forbidden" => "the channel's login switch (频道登录开关) is off: turn it on in Polyv's console; polypush tries again on its own",
        "channel_live" => "the channel is live from another encoder (or this box's previous session): stop the other encoder, or wait; polypush tries again on its own",
        _ => "the channel is still logged in elsewhere (often this box before a restart, or another encoder): Polyv asks to try again later, and polypush does so on its own; if another encoder is pushing this channel, stop it",
    }
}

/// How far this box's clock is from Polyv's, when Polyv's `Date` header told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skew(pub Option<i64>);

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(ms) => {
                let dir = if ms >= 0 { "ahead of" } else { "behind" };
                write!(
                    f,
                    "this box's clock is {:.0} s {dir} Polyv's",
                    (ms.unsigned_abs() as f64) / 1000.0
                )
            }
            None => f.write_str("Polyv did not send its time, so the clock skew is unknown"),
        }
    }
}

impl PlatformError {
    /// Unavailable when Polyv could not be reached or did not answer properly; refused when
    /// it answered and said no (credentials, clock, request).
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Self::Server { .. } | Self::Transport { .. } | Self::Undecodable { .. } => {
                ExitCode::Unavailable
            }
            _ => ExitCode::Refused,
        }
    }

    /// Credentials and signatures are never retried: the answer will not change, and
    /// hammering Polyv with a wrong password only gets the address blocked.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Server { .. } | Self::Transport { .. })
    }

    /// Polyv's own message, where it sent one (for `--json` output).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::CredentialsRejected { .. } => "credentials_rejected",
            Self::AppRejected { .. } => "app_rejected",
            Self::SignatureRejected { .. } => "signature_rejected",
            Self::StaleTimestamp { .. } => "stale_timestamp",
            Self::LoginRefused { .. } => "login_refused",
            Self::Validation { .. } => "validation",
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server_error",
            Self::Transport { .. } => "transport",
            Self::Undecodable { .. } => "undecodable",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_refusals_say_what_to_do() {
        let e = |reason| PlatformError::LoginRefused {
            channel_id: "153884".into(),
            message: "channel forbid login".into(),
            reason,
        };
        let m = e("login_forbidden").to_string();
        assert!(m.starts_with("Polyv refused the login to channel 153884 (channel forbid login): the channel's login switch"), "{m}");
        assert!(e("already_logged_in")
            .to_string()
            .contains("try again later"));
        assert!(e("channel_live")
            .to_string()
            .contains("stop the other encoder"));
        assert_eq!(e("channel_live").exit_code(), ExitCode::Refused);
        assert!(!e("channel_live").is_retryable());
    }

    #[test]
    fn skew_is_shown_with_direction() {
        let e = PlatformError::StaleTimestamp {
            api: "teacher_login",
            skew: Skew(Some(-245_400)),
        };
        let m = e.to_string();
        assert!(m.contains("245 s behind Polyv's"), "{m}");
        assert!(m.contains("timedatectl set-ntp true"), "{m}");
        assert_eq!(e.exit_code(), ExitCode::Refused);
        assert!(!e.is_retryable());
    }
}
