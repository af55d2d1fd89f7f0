//! The sender's decisions, without sockets or timers: what each outcome means for the
//! backoff, the next address request, the counters, the state and the logs. `now` is passed
//! in (tokio's clock, the one the sender's timers run on), so every rule here is tested with
//! an injected time and a seeded jitter.

use std::time::Duration;

use tokio::time::Instant;

use super::control::{AddressClass, AddressError, SenderState, SenderStats, PLATFORM_RETRY_CAP};
use crate::rtmp::backoff::{Backoff, BackoffConfig, FailureKind, Retry, WarnLimiter};
use crate::rtmp::error::{Recovery, RtmpError};

/// At the backoff cap, "still failing" is repeated at most this often.
const WARN_REPEAT: Duration = Duration::from_secs(600);

/// What to do after a failure.
#[derive(Debug)]
pub(super) enum Step {
    /// Show `state`, wait `delay`, try again.
    Wait { delay: Duration, state: SenderState },
    /// The sender returns this error.
    Stop(RtmpError),
}

pub(super) struct Core {
    pub(super) backoff: Backoff,
    credentials_retry: Duration,
    warn: WarnLimiter,
    /// The next address request asks for a fresh one.
    fresh: bool,
    /// The rejection message while the platform rejects the credentials.
    pub(super) credentials: Option<String>,
    /// The reason of the platform's refusal being waited out, so each change is logged once.
    refused: Option<&'static str>,
    /// When the last publishing session ended, for `last_recovery`.
    lost_at: Option<Instant>,
    pub(super) stats: SenderStats,
}

impl Core {
    pub(super) fn new(backoff: BackoffConfig, credentials_retry: Duration) -> Self {
        Self {
            backoff: Backoff::new(backoff),
            credentials_retry,
            warn: WarnLimiter::new(WARN_REPEAT),
            fresh: false,
            credentials: None,
            refused: None,
            lost_at: None,
            stats: SenderStats::default(),
        }
    }

    pub(super) fn connecting(&self) -> SenderState {
        SenderState::Connecting {
            attempt: self.backoff.failures() + 1,
        }
    }

    /// Whether the next address request is a fresh one (and counts it).
    pub(super) fn take_fresh(&mut self) -> bool {
        let fresh = std::mem::take(&mut self.fresh);
        if fresh {
            self.stats.fresh_addresses += 1;
        }
        fresh
    }

    pub(super) fn on_address(&mut self) {
        if let Some(reason) = self.refused.take() {
            tracing::info!(reason, "the platform gave a push address again");
        }
        if self.credentials.take().is_some() {
            tracing::info!("the platform accepted the channel credentials again");
        }
    }

    pub(super) fn on_address_error<R: rand::Rng + ?Sized>(
        &mut self,
        now: Instant,
        err: AddressError,
        rng: &mut R,
    ) -> Step {
        let refusal = err.refusal();
        match err.class {
            AddressClass::OperatorMustAct => {
                let message = refusal.message.clone();
                self.stats.credentials_rejections += 1;
                if self.credentials.as_deref() != Some(message.as_str()) {
                    tracing::error!(
                        class = refusal.class.as_str(),
                        reason = refusal.reason,
                        retry_in_s = self.credentials_retry.as_secs(),
                        "{message}; not publishing until the platform accepts them (retrying \
                         every {} s, or now on SIGUSR1)",
                        self.credentials_retry.as_secs()
                    );
                }
                self.credentials = Some(message.clone());
                self.fresh = true;
                Step::Wait {
                    delay: self.credentials_retry,
                    state: SenderState::CredentialsRejected {
                        message,
                        retry_in: self.credentials_retry,
                        refusal,
                    },
                }
            }
            AddressClass::TryLater | AddressClass::Unavailable => {
                self.stats.connect_failures += 1;
                self.stats.platform_refusals += 1;
                // Polyv may have moved the stream by the time it lets us in again.
                self.fresh = true;
                let Some(retry) = self.backoff.on_failure(now, FailureKind::Rejected, rng) else {
                    let attempts = self.backoff.failures();
                    tracing::error!(attempts, error = %err, "giving up");
                    return Step::Stop(RtmpError::GaveUp {
                        attempts,
                        last: Box::new(RtmpError::Address(err)),
                    });
                };
                let delay = platform_delay(&retry, err.retry_after);
                if self.refused != Some(refusal.reason) {
                    tracing::warn!(
                        class = refusal.class.as_str(),
                        reason = refusal.reason,
                        retry_ms = delay.as_millis() as u64,
                        "{}; retrying with backoff",
                        refusal.message
                    );
                    self.refused = Some(refusal.reason);
                } else {
                    tracing::debug!(
                        attempts = retry.failures,
                        retry_ms = delay.as_millis() as u64,
                        reason = refusal.reason,
                        "the platform still refuses; retrying"
                    );
                }
                Step::Wait {
                    delay,
                    state: SenderState::Waiting {
                        retry_in: delay,
                        reason: err.to_string(),
                        refusal: Some(refusal),
                    },
                }
            }
            AddressClass::BadConfig => Step::Stop(RtmpError::Address(err)),
        }
    }

    pub(super) fn on_connect_error<R: rand::Rng + ?Sized>(
        &mut self,
        now: Instant,
        err: RtmpError,
        rng: &mut R,
    ) -> Step {
        self.stats.connect_failures += 1;
        match err.recovery() {
            Recovery::Fatal => Step::Stop(err),
            Recovery::FreshAddress => {
                self.stats.publish_rejections += 1;
                self.fresh = true;
                self.fail(now, FailureKind::Rejected, err, rng)
            }
            Recovery::Retry => self.fail(now, FailureKind::Unreachable, err, rng),
        }
    }

    /// A session reached `Publish.Start`; returns how long the recovery took, if this ends one.
    pub(super) fn on_publishing(&mut self, now: Instant) -> Option<Duration> {
        self.backoff.on_connected(now);
        self.warn.reset();
        self.stats.sessions += 1;
        if self.stats.sessions > 1 {
            self.stats.reconnects += 1;
        }
        let recovery = self
            .lost_at
            .take()
            .map(|t| now.saturating_duration_since(t));
        if recovery.is_some() {
            self.stats.last_recovery = recovery;
        }
        recovery
    }

    /// A publishing session failed.
    pub(super) fn on_lost<R: rand::Rng + ?Sized>(
        &mut self,
        now: Instant,
        err: RtmpError,
        rng: &mut R,
    ) -> Step {
        self.stats.connections_lost += 1;
        if matches!(err, RtmpError::Stalled { .. }) {
            self.stats.stalls += 1;
        }
        self.lost_at = Some(now);
        self.backoff.on_disconnected(now);
        match err.recovery() {
            Recovery::Fatal => Step::Stop(err),
            Recovery::FreshAddress => {
                self.stats.publish_rejections += 1;
                self.fresh = true;
                self.fail(now, FailureKind::Rejected, err, rng)
            }
            Recovery::Retry => self.fail(now, FailureKind::Unreachable, err, rng),
        }
    }

    /// "Reconnect now": start over with a fresh address. `closed_at` is set when a
    /// publishing session was closed for it.
    pub(super) fn on_reconnect_requested(&mut self, closed_at: Option<Instant>) {
        if let Some(at) = closed_at {
            self.backoff.on_disconnected(at);
            self.lost_at = Some(at);
        }
        self.backoff.reset();
        self.warn.reset();
        self.fresh = true;
    }

    fn fail<R: rand::Rng + ?Sized>(
        &mut self,
        now: Instant,
        kind: FailureKind,
        err: RtmpError,
        rng: &mut R,
    ) -> Step {
        let Some(Retry {
            delay,
            ceiling,
            failures,
        }) = self.backoff.on_failure(now, kind, rng)
        else {
            tracing::error!(attempts = self.backoff.failures(), error = %err, "giving up");
            return Step::Stop(RtmpError::GaveUp {
                attempts: self.backoff.failures(),
                last: Box::new(err),
            });
        };
        let retry_ms = delay.as_millis() as u64;
        if failures == 1 {
            tracing::info!(retry_ms, error = %err, "cannot publish; retrying");
        } else if self.warn.should_warn(ceiling, now) {
            tracing::warn!(
                attempts = failures,
                retry_ms,
                backoff_ceiling_ms = ceiling.as_millis() as u64,
                error = %err,
                "still cannot publish; retrying with backoff"
            );
        } else {
            tracing::debug!(attempts = failures, retry_ms, error = %err, "cannot publish; retrying");
        }
        Step::Wait {
            delay,
            state: SenderState::Waiting {
                retry_in: delay,
                reason: err.to_string(),
                refusal: None,
            },
        }
    }
}

/// How long to wait for the platform: at least half the backoff's ceiling ("equal jitter", so
/// a fleet spreads out yet no box asks faster than the backoff allows), at most
/// [`PLATFORM_RETRY_CAP`], and never sooner than the platform asked for.
fn platform_delay(retry: &Retry, retry_after: Option<Duration>) -> Duration {
    retry
        .delay
        .max(retry.ceiling / 2)
        .min(PLATFORM_RETRY_CAP)
        .max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests;
