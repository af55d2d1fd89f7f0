//! Where a broadcast's push address comes from when it is Polyv's: `teacher_login`, cached
//! until the ingest refuses it (the address may change, so a refused publish logs in again),
//! and every [`PlatformError`] classed for the sender by what must happen next.

use std::sync::{Arc, Mutex, PoisonError};

use crate::platform::PolyvSettings;
use crate::platform::{PlatformError, PolyvClient};
use crate::rtmp::{AddressError, AddressFuture, AddressSource, RtmpError, RtmpUrl};

/// Polyv gave an address polypush cannot parse.
#[derive(Debug, thiserror::Error)]
#[error("Polyv returned a push address polypush cannot use: {0}")]
pub(super) struct UnusableAddress(#[source] RtmpError);

/// What the sender must do about a platform error.
pub fn classify(e: PlatformError) -> AddressError {
    match e {
        // An operator must act: password, appId, signature, this box's clock.
        PlatformError::CredentialsRejected { .. }
        | PlatformError::AppRejected { .. }
        | PlatformError::SignatureRejected { .. }
        | PlatformError::StaleTimestamp { .. } => AddressError::OperatorMustAct(Arc::new(e)),
        // Polyv blocks the address for about 5 minutes: waiting less only extends the block.
        PlatformError::RateLimited { .. } => AddressError::TryLater {
            cause: Arc::new(e),
            retry_after: Some(std::time::Duration::from_secs(300)),
        },
        PlatformError::Validation { .. } => AddressError::BadConfig(Arc::new(e)),
        PlatformError::Server { .. }
        | PlatformError::Transport { .. }
        | PlatformError::Undecodable { .. } => AddressError::Unavailable(Arc::new(e)),
    }
}

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
        let url = RtmpUrl::parse(&addr.reveal()).map_err(|e| AddressError::TryLater {
            cause: Arc::new(UnusableAddress(e)),
            retry_after: None,
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
