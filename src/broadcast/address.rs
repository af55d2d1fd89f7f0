//! Where a broadcast's push address comes from when it is Polyv's: `teacher_login`, cached
//! until the ingest refuses it (the address may change, so a refused publish logs in again),
//! and every [`PlatformError`] classed for the sender by what must happen next.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::platform::PolyvSettings;
use crate::platform::{PlatformError, PolyvClient};
use crate::rtmp::{AddressClass, AddressError, AddressFuture, AddressSource, RtmpError, RtmpUrl};

/// Polyv gave an address polypush cannot parse.
#[derive(Debug, thiserror::Error)]
#[error("Polyv returned a push address polypush cannot use: {0}")]
pub(super) struct UnusableAddress(#[source] RtmpError);

/// What the sender must do about a platform error, with the reason label `/metrics` shows
/// (a small fixed set: see [`REFUSAL_REASONS`]).
///
/// Only an operator can fix a password, an appId, a signature or this box's clock; everything
/// else — a channel still live, a rate limit, a server error, a refusal polypush does not
/// recognise — may clear on its own, so the broadcast waits and tries again. Nothing here stops
/// the broadcast: with nobody at the box, giving up loses the lesson.
pub fn classify(e: PlatformError) -> AddressError {
    use AddressClass::*;
    let (class, reason) = match &e {
        PlatformError::CredentialsRejected { .. } => (OperatorMustAct, "password"),
        PlatformError::AppRejected { .. } => (OperatorMustAct, "app_id"),
        PlatformError::SignatureRejected { .. } => (OperatorMustAct, "signature"),
        PlatformError::StaleTimestamp { .. } => (OperatorMustAct, "clock"),
        PlatformError::LoginRefused { reason, .. } => (TryLater, *reason),
        PlatformError::RateLimited { .. } => (TryLater, "rate_limited"),
        PlatformError::Validation { .. } => (TryLater, "refused"),
        PlatformError::Server { .. } => (Unavailable, "server_error"),
        PlatformError::Transport { .. } => (Unavailable, "unreachable"),
        PlatformError::Undecodable { .. } => (Unavailable, "unreadable"),
    };
    // A rate limit is waited out like any other "try later": Polyv allows 1500 requests per
    // 10 s per IP and then blocks for 5 minutes (`docs/live/limit.md` of polyv/polyv-java-sdk);
    // the sender asks at most every 60 s, a few requests across the block.
    AddressError::new(class, reason, e)
}

/// Every reason label [`classify`] gives, plus `bad_address` (an unusable push address):
/// the `reason` label of `polypush_platform_refusal`.
pub const REFUSAL_REASONS: &[&str] = &[
    "password",
    "app_id",
    "signature",
    "clock",
    "already_logged_in",
    "channel_live",
    "login_forbidden",
    "rate_limited",
    "refused",
    "server_error",
    "unreachable",
    "unreadable",
    "bad_address",
];

/// The push address from Polyv: the broadcast's [`AddressSource`] when it logs in.
pub struct PolyvAddress {
    client: PolyvClient,
    /// The last login's answer.
    cached: Mutex<Option<Login>>,
}

/// What one login gave.
#[derive(Clone)]
struct Login {
    url: RtmpUrl,
    stream: String,
    /// The channel's bitrate limit (`maxRate`), kbit/s.
    max_kbps: Option<u32>,
    /// Until when (Unix seconds) the address is reused: a little before its `auth_key`
    /// expires, if it has one.
    reuse_until: Option<u64>,
}

/// How long before its `auth_key` expires an address is no longer reused, at most: a publish
/// takes a moment, and this box's clock may be a little behind Polyv's. A short-lived key
/// keeps three quarters of its life, so an outage does not turn every retry into a login.
const AUTH_KEY_MARGIN_S: u64 = 60;

/// The last moment to reuse an address whose key expires at `expires`, got at `now`.
fn reuse_until(expires: u64, now: u64) -> u64 {
    let margin = AUTH_KEY_MARGIN_S.min(expires.saturating_sub(now) / 4);
    expires - margin
}

/// The expiry of a push address's `auth_key` (`auth_key=<unix seconds>-<rand>-<uid>-<md5>`, a
/// CDN "type A" signature), if it has one.
pub(super) fn auth_key_expiry(address: &str) -> Option<u64> {
    let (_, query) = address.split_once('?')?;
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("auth_key="))
        .and_then(|v| v.split('-').next())
        .and_then(|t| t.parse().ok())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PolyvAddress {
    pub fn new(cfg: &PolyvSettings) -> Result<Self, PlatformError> {
        Ok(Self {
            client: PolyvClient::from_config(cfg)?,
            cached: Mutex::new(None),
        })
    }

    pub(super) fn client(&self) -> &PolyvClient {
        &self.client
    }

    /// The stream name of the last login, for notify_stream2.
    pub(super) fn stream(&self) -> Option<String> {
        self.lock().as_ref().map(|l| l.stream.clone())
    }

    /// The channel's bitrate limit from the last login, kbit/s.
    pub(super) fn max_kbps(&self) -> Option<u32> {
        self.lock().as_ref().and_then(|l| l.max_kbps)
    }

    /// Logs in; returns the push address.
    async fn login(&self) -> Result<RtmpUrl, AddressError> {
        let reply = self.client.teacher_login().await.map_err(classify)?;
        let addr = reply.push_address();
        let revealed = addr.reveal();
        let url = RtmpUrl::parse(&revealed).map_err(|e| {
            AddressError::new(AddressClass::TryLater, "bad_address", UnusableAddress(e))
        })?;
        let expires = auth_key_expiry(&revealed);
        tracing::info!(
            push = %addr,
            auth_key_valid_s = expires.map(|t| t.saturating_sub(unix_now())),
            "logged in to Polyv"
        );
        *self.lock() = Some(Login {
            url: url.clone(),
            stream: reply.stream.clone(),
            max_kbps: reply.max_rate,
            reuse_until: expires.map(|t| reuse_until(t, unix_now())),
        });
        Ok(url)
    }

    /// The cached address, unless its `auth_key` has expired (or is about to).
    fn reusable(&self) -> Option<RtmpUrl> {
        let guard = self.lock();
        let login = guard.as_ref()?;
        match login.reuse_until {
            Some(t) if unix_now() >= t => {
                tracing::info!("the push address's auth_key has expired; logging in again");
                None
            }
            _ => Some(login.url.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Login>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AddressSource for PolyvAddress {
    fn address(&self, fresh: bool) -> AddressFuture<'_> {
        Box::pin(async move {
            if !fresh {
                if let Some(url) = self.reusable() {
                    return Ok(url);
                }
            }
            self.login().await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auth_key_expiry_is_read_from_the_address() {
        let a = "rtmp://push-d1.videocc.net/recordf/1b448be3231603435207373ea0f?auth_key=1603437007-0-0-bdbbb7f070573d80424a69c99c52ed0a";
        assert_eq!(auth_key_expiry(a), Some(1_603_437_007));
        assert_eq!(
            auth_key_expiry("rtmp://h/live/k?x=1&auth_key=12-0-0-ab"),
            Some(12)
        );
        assert_eq!(auth_key_expiry("rtmp://h/live/k"), None);
        assert_eq!(auth_key_expiry("rtmp://h/live/k?auth_key=garbage"), None);
    }

    #[test]
    fn an_address_is_reused_until_shortly_before_its_key_expires() {
        // Polyv's keys live 30 minutes: reused until a minute before.
        assert_eq!(reuse_until(1_000 + 1_800, 1_000), 2_740);
        // A 20 s key: until 5 s before.
        assert_eq!(reuse_until(1_020, 1_000), 1_015);
        // Expired already (this box's clock ahead): not reused.
        assert_eq!(reuse_until(900, 1_000), 900);
    }

    #[test]
    fn every_reason_is_in_the_fixed_set() {
        let errors = [
            PlatformError::CredentialsRejected {
                channel_id: "1".into(),
                message: "m".into(),
            },
            PlatformError::AppRejected {
                message: "m".into(),
            },
            PlatformError::SignatureRejected {
                api: "a",
                message: "m".into(),
            },
            PlatformError::StaleTimestamp {
                api: "a",
                skew: crate::platform::Skew(None),
            },
            PlatformError::LoginRefused {
                channel_id: "1".into(),
                message: "channel in live".into(),
                reason: "channel_live",
            },
            PlatformError::RateLimited {
                api: "a",
                message: "m".into(),
            },
            PlatformError::Validation {
                api: "a",
                message: "m".into(),
            },
            PlatformError::Server {
                api: "a",
                status: 500,
                message: "m".into(),
                attempts: 1,
            },
            PlatformError::Transport {
                api: "a",
                host: "h".into(),
                detail: "d".into(),
                attempts: 1,
            },
            PlatformError::Undecodable {
                api: "a",
                status: 200,
                first_bytes: "<html>".into(),
            },
        ];
        for e in errors {
            let shown = e.to_string();
            let a = classify(e);
            assert!(REFUSAL_REASONS.contains(&a.reason), "{}", a.reason);
            assert_ne!(
                a.class,
                AddressClass::BadConfig,
                "nothing Polyv says stops the broadcast"
            );
            assert_eq!(a.refusal().message, shown, "Polyv's own message is shown");
        }
    }
}
