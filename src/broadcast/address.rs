//! Where a broadcast's push address comes from when it is Polyv's: `teacher_login`, cached
//! until the ingest refuses it (the address may change, so a refused publish logs in again),
//! and every [`PlatformError`] classed for the sender by what must happen next.

use std::sync::{Mutex, PoisonError};

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
    /// The last login's address and stream name.
    cached: Mutex<Option<(RtmpUrl, String)>>,
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
        self.lock().as_ref().map(|(_, s)| s.clone())
    }

    /// Logs in; returns the address and the channel's bitrate limit, if Polyv set one.
    pub(super) async fn login(&self) -> Result<(RtmpUrl, Option<u32>), AddressError> {
        let reply = self.client.teacher_login().await.map_err(classify)?;
        let addr = reply.push_address();
        let url = RtmpUrl::parse(&addr.reveal()).map_err(|e| {
            AddressError::new(AddressClass::TryLater, "bad_address", UnusableAddress(e))
        })?;
        tracing::info!(push = %addr, "logged in to Polyv");
        *self.lock() = Some((url.clone(), reply.stream.clone()));
        Ok((url, reply.max_rate))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(RtmpUrl, String)>> {
        self.cached.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl AddressSource for PolyvAddress {
    fn address(&self, fresh: bool) -> AddressFuture<'_> {
        Box::pin(async move {
            if !fresh {
                if let Some((url, _)) = self.lock().as_ref() {
                    return Ok(url.clone());
                }
            }
            self.login().await.map(|(url, _)| url)
        })
    }
}
