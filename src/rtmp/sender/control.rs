//! What the rest of the daemon hands the sender and gets back: where addresses come from
//! ([`AddressSource`], [`AddressError`]), the settings ([`SenderOptions`]), the state and
//! counters it reports ([`SenderState`], [`SenderStats`]), the handle that watches and steers
//! it ([`SenderControl`]) and the calls it makes ([`SenderHooks`]).

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::exit::ExitCode;
use crate::rtmp::backoff::BackoffConfig;
use crate::rtmp::transport::ConnectOptions;
use crate::rtmp::url::RtmpUrl;

/// The longest `stall_timeout` accepted: a dead link must not hide for longer.
pub const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The cause an [`AddressError`] carries: the source's own error (a `PlatformError` from the
/// Polyv login, say), kept whole for `/status`, the journal and the exit code.
pub type AddressCause = Arc<dyn StdError + Send + Sync>;

/// What the sender must do about an address source's failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// The platform refused in a way only an operator can fix (password, appId, signature,
    /// clock): retried slowly (`credentials_retry`), one ERROR per change.
    OperatorMustAct,
    /// The platform answered and asked to come back later (already logged in, the channel
    /// still live, rate limited, a refusal not recognised): retried with backoff, at most
    /// [`PLATFORM_RETRY_CAP`] apart, and not before `retry_after` when it says how long.
    TryLater,
    /// The platform could not be reached or failed (network, 5xx, an unreadable answer):
    /// retried with backoff, at most [`PLATFORM_RETRY_CAP`] apart.
    Unavailable,
    /// The configuration cannot work, and retrying will not change that: the sender stops.
    BadConfig,
}

impl AddressClass {
    /// A stable label for metrics and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OperatorMustAct => "operator_must_act",
            Self::TryLater => "try_later",
            Self::Unavailable => "unavailable",
            Self::BadConfig => "bad_config",
        }
    }
}

/// The longest wait between two tries of a platform that says "try later" or cannot be
/// reached, whatever the RTMP reconnect cap is: a refusal that clears is noticed within a
/// minute, and a box's few logins a minute are nowhere near Polyv's rate limit (1500 requests
/// per 10 s per IP).
pub const PLATFORM_RETRY_CAP: Duration = Duration::from_secs(60);

/// Why an [`AddressSource`] has no address: the class says what the sender does, `reason` is
/// a label from the source's small fixed set (for metrics and `/status`), and the message is
/// the cause's own, which says what to do.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{cause}")]
pub struct AddressError {
    pub class: AddressClass,
    /// e.g. `password`, `already_logged_in`, `rate_limited`, `unreachable`.
    pub reason: &'static str,
    /// Not before this long (a platform that said when to come back).
    pub retry_after: Option<Duration>,
    pub cause: AddressCause,
}

impl AddressError {
    pub fn new(
        class: AddressClass,
        reason: &'static str,
        cause: impl StdError + Send + Sync + 'static,
    ) -> Self {
        Self {
            class,
            reason,
            retry_after: None,
            cause: Arc::new(cause),
        }
    }

    /// The exit code of a run that ended on this, by class (a caller that knows the cause's
    /// type may know better).
    pub fn exit_code(&self) -> ExitCode {
        match self.class {
            AddressClass::OperatorMustAct | AddressClass::TryLater => ExitCode::Refused,
            AddressClass::Unavailable => ExitCode::Unavailable,
            AddressClass::BadConfig => ExitCode::Config,
        }
    }

    /// The source's own error.
    pub fn cause(&self) -> &(dyn StdError + Send + Sync + 'static) {
        self.cause.as_ref()
    }

    /// What `/status` and the metrics show of it.
    pub fn refusal(&self) -> Refusal {
        Refusal {
            class: self.class,
            reason: self.reason,
            message: self.cause.to_string(),
        }
    }
}

/// The platform's refusal the sender is waiting out, as the hub shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub class: AddressClass,
    pub reason: &'static str,
    /// The platform's own message, with what to do.
    pub message: String,
}

/// The future [`AddressSource::address`] returns.
pub type AddressFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RtmpUrl, AddressError>> + Send + 'a>>;

/// Where the push address comes from: a fixed URL, or a Polyv login (in the broadcast).
pub trait AddressSource: Send + Sync + 'static {
    /// Called before every connection attempt. `fresh`: the previous address was refused (or
    /// the operator asked to reconnect), so get a new one (log in again); otherwise a cached
    /// address is fine, and the call should be cheap.
    fn address(&self, fresh: bool) -> AddressFuture<'_>;
}

/// A fixed push address: always itself.
impl AddressSource for RtmpUrl {
    fn address(&self, _fresh: bool) -> AddressFuture<'_> {
        Box::pin(std::future::ready(Ok(self.clone())))
    }
}

/// Settings of the sender.
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// One connection: timeouts, socket options, RTMP settings.
    pub connect: ConnectOptions,
    /// When to retry; see [`Backoff`](crate::rtmp::Backoff).
    pub backoff: BackoffConfig,
    /// A connection whose peer receives nothing for this long while bytes wait is dropped and
    /// replaced. At most [`MAX_STALL_TIMEOUT`]. (For the sender this replaces
    /// `connect.send_timeout`, which only [`Publisher::send`](crate::rtmp::Publisher::send)
    /// uses.)
    pub stall_timeout: Duration,
    /// How often to try again while the platform rejects the channel credentials.
    pub credentials_retry: Duration,
    /// After shutdown, how long to keep sending what is still queued before closing.
    pub drain_timeout: Duration,
    /// Seeds the backoff's jitter; `None` (the default) seeds it from the OS. Tests fix it so
    /// a schedule replays exactly.
    pub jitter_seed: Option<u64>,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            connect: ConnectOptions::default(),
            backoff: BackoffConfig::default(),
            stall_timeout: MAX_STALL_TIMEOUT,
            credentials_retry: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(5),
            jitter_seed: None,
        }
    }
}

impl SenderOptions {
    /// Checks the ranges; the message says which setting to change. The sender clamps
    /// instead of failing, so a caller that skipped this still gets sane behaviour.
    pub fn validate(&self) -> Result<(), String> {
        if self.stall_timeout.is_zero() || self.stall_timeout > MAX_STALL_TIMEOUT {
            return Err(format!(
                "the stall timeout must be between 1 ms and {MAX_STALL_TIMEOUT:?}, not {:?}: \
                 a dead link must not hide media for longer",
                self.stall_timeout
            ));
        }
        if self.credentials_retry < Duration::from_secs(1) {
            return Err("the credentials retry interval must be at least 1 s".into());
        }
        if self.backoff.max_attempts == Some(0) {
            return Err("max_attempts must be at least 1 (or unset for unlimited)".into());
        }
        Ok(())
    }

    pub(super) fn sanitized(mut self) -> Self {
        if self.stall_timeout.is_zero() || self.stall_timeout > MAX_STALL_TIMEOUT {
            self.stall_timeout = MAX_STALL_TIMEOUT;
        }
        self.credentials_retry = self.credentials_retry.max(Duration::from_secs(1));
        self
    }
}

/// What the sender is doing; for the status endpoint, the status line and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderState {
    /// The sender has not started yet.
    Starting,
    /// Getting an address and connecting; `attempt` counts from 1 in the current outage.
    Connecting { attempt: u32 },
    /// Publishing to `peer` since `since`.
    Publishing { peer: String, since: Instant },
    /// The last attempt failed (or the session was lost) because of `reason`; the next
    /// attempt is `retry_in` after entering this state. `refusal`: the platform refused (try
    /// later) or could not be reached, rather than the ingest or the network.
    Waiting {
        retry_in: Duration,
        reason: String,
        refusal: Option<Refusal>,
    },
    /// The platform refused in a way an operator must fix (the channel credentials, appId,
    /// signature, clock); retried every `retry_in`.
    CredentialsRejected {
        message: String,
        retry_in: Duration,
        refusal: Refusal,
    },
    /// The sender returned.
    Stopped,
}

/// [`SenderState`] without its data: what metrics labels, the hub and health rules compare.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum SenderPhase {
    #[default]
    Starting,
    Connecting,
    Publishing,
    Waiting,
    CredentialsRejected,
    Stopped,
}

impl SenderPhase {
    /// A short name for metrics labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Connecting => "connecting",
            Self::Publishing => "publishing",
            Self::Waiting => "waiting",
            Self::CredentialsRejected => "credentials_rejected",
            Self::Stopped => "stopped",
        }
    }

    pub const ALL: [SenderPhase; 6] = [
        Self::Starting,
        Self::Connecting,
        Self::Publishing,
        Self::Waiting,
        Self::CredentialsRejected,
        Self::Stopped,
    ];
}

impl SenderState {
    pub fn is_publishing(&self) -> bool {
        matches!(self, SenderState::Publishing { .. })
    }

    /// The platform refusal the sender is waiting out, if that is what it is doing.
    pub fn refusal(&self) -> Option<&Refusal> {
        match self {
            SenderState::Waiting { refusal, .. } => refusal.as_ref(),
            SenderState::CredentialsRejected { refusal, .. } => Some(refusal),
            _ => None,
        }
    }

    pub fn phase(&self) -> SenderPhase {
        match self {
            SenderState::Starting => SenderPhase::Starting,
            SenderState::Connecting { .. } => SenderPhase::Connecting,
            SenderState::Publishing { .. } => SenderPhase::Publishing,
            SenderState::Waiting { .. } => SenderPhase::Waiting,
            SenderState::CredentialsRejected { .. } => SenderPhase::CredentialsRejected,
            SenderState::Stopped => SenderPhase::Stopped,
        }
    }

    /// A short name for metrics labels.
    pub fn name(&self) -> &'static str {
        self.phase().as_str()
    }
}

impl fmt::Display for SenderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderState::Starting => f.write_str("starting"),
            SenderState::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            SenderState::Publishing { peer, .. } => write!(f, "publishing to {peer}"),
            SenderState::Waiting {
                retry_in, reason, ..
            } => {
                write!(f, "retrying in {:.1} s: {reason}", retry_in.as_secs_f64())
            }
            SenderState::CredentialsRejected {
                message, retry_in, ..
            } => write!(
                f,
                "credentials rejected, retrying in {} s: {message}",
                retry_in.as_secs()
            ),
            SenderState::Stopped => f.write_str("stopped"),
        }
    }
}

/// Counters of one sender, as a plain snapshot. Byte counters cover all sessions, the current
/// one included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SenderStats {
    /// Sessions that reached `NetStream.Publish.Start`.
    pub sessions: u64,
    /// Sessions after the first.
    pub reconnects: u64,
    /// Attempts that failed before publishing (address, connect, handshake, publish).
    pub connect_failures: u64,
    /// Publishing sessions that ended by an error (not by shutdown or "reconnect now").
    pub connections_lost: u64,
    /// Publishes or connects the ingest rejected (or dropped).
    pub publish_rejections: u64,
    /// Fresh addresses asked for (after a rejection or "reconnect now").
    pub fresh_addresses: u64,
    /// Times the address source said the channel credentials were rejected.
    pub credentials_rejections: u64,
    /// Times the address source said to try later or could not reach the platform.
    pub platform_refusals: u64,
    /// Connections dropped by the stall detector.
    pub stalls: u64,
    /// Bytes the transport accepted from us.
    pub bytes_sent: u64,
    /// Bytes the ingest's TCP acknowledged (Linux; otherwise 0).
    pub bytes_delivered: u64,
    /// Bytes the ingest acknowledged with RTMP Acknowledgement messages.
    pub bytes_acked: u64,
    /// Packets from the ring that went out, re-sent headers included.
    pub packets_sent: u64,
    /// Header packets popped from the ring and skipped as already sent on their session.
    pub headers_skipped: u64,
    /// From the loss of the last lost session to `Publish.Start` of the next one.
    pub last_recovery: Option<Duration>,
    /// Bytes the transport accepted on the current session.
    pub session_bytes_sent: u64,
    /// Bytes in the kernel send queue of the current connection, not yet acknowledged by the
    /// ingest (`SIOCOUTQ`): with `backlog_bytes`, the input for a queue-delay estimate.
    pub socket_unsent_bytes: u64,
    /// Serialized bytes waiting for socket space in our own queue.
    pub backlog_bytes: u64,
}

/// The handle through which the rest of the daemon watches and steers a sender. Cheap to
/// clone; create it before the sender runs and keep a clone.
#[derive(Clone)]
pub struct SenderControl {
    pub(super) shared: Arc<ControlShared>,
}

pub(super) struct ControlShared {
    state: watch::Sender<SenderState>,
    /// Incremented by every "reconnect now"; the sender watches for changes.
    pub(super) reconnect: watch::Sender<u64>,
    stats: Mutex<SenderStats>,
    /// The reason of the last failure and when it was reported.
    last_error: Mutex<Option<(Instant, String)>>,
}

impl Default for SenderControl {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SenderControl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderControl")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

impl SenderControl {
    pub fn new() -> Self {
        Self {
            shared: Arc::new(ControlShared {
                state: watch::channel(SenderState::Starting).0,
                reconnect: watch::channel(0).0,
                stats: Mutex::new(SenderStats::default()),
                last_error: Mutex::new(None),
            }),
        }
    }

    /// Reset the backoff and reconnect at once with a fresh address; a publishing session is
    /// closed first. Requests while the sender is not running are ignored.
    pub fn reconnect_now(&self) {
        self.shared
            .reconnect
            .send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn state(&self) -> SenderState {
        self.shared.state.borrow().clone()
    }

    /// State changes, e.g. to wait for [`SenderState::Publishing`].
    pub fn subscribe(&self) -> watch::Receiver<SenderState> {
        self.shared.state.subscribe()
    }

    /// The latest counters; refreshed on every state change and a few times a second while
    /// publishing.
    pub fn stats(&self) -> SenderStats {
        *self.lock_stats()
    }

    /// The reason of the last failed attempt or lost session and when it happened, kept after
    /// the [`SenderState::Waiting`] that showed it is over (for a status page: "last error").
    pub fn last_error(&self) -> Option<(Instant, String)> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(super) fn set_state(&self, state: SenderState) {
        let reason = match &state {
            SenderState::Waiting { reason, .. } => Some(reason),
            SenderState::CredentialsRejected { message, .. } => Some(message),
            _ => None,
        };
        if let Some(reason) = reason {
            *self
                .shared
                .last_error
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), reason.clone()));
        }
        self.shared.state.send_replace(state);
    }

    pub(super) fn set_stats(&self, stats: SenderStats) {
        *self.lock_stats() = stats;
    }

    fn lock_stats(&self) -> std::sync::MutexGuard<'_, SenderStats> {
        self.shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// Calls into the rest of the daemon. Both run on the sender's task and must not block.
pub struct SenderHooks {
    /// Ask the video encoder for an IDR now: a new session starts at a keyframe.
    pub request_keyframe: Box<dyn Fn() + Send + Sync>,
    /// A session reached `NetStream.Publish.Start` on this address (the broadcast tells Polyv
    /// with notify_stream2 here, on a task of its own).
    pub on_publishing: Box<dyn Fn(&RtmpUrl) + Send + Sync>,
}

impl Default for SenderHooks {
    fn default() -> Self {
        Self {
            request_keyframe: Box::new(|| {}),
            on_publishing: Box::new(|_| {}),
        }
    }
}

impl fmt::Debug for SenderHooks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SenderHooks").finish_non_exhaustive()
    }
}

/// Calls [`SenderControl::reconnect_now`] on every SIGUSR1, on a task of its own (abort the
/// handle to stop). Fails only if the signal handler cannot be installed.
#[cfg(unix)]
pub fn reconnect_on_sigusr1(
    control: SenderControl,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut usr1 = signal(SignalKind::user_defined1())?;
    Ok(tokio::spawn(async move {
        while usr1.recv().await.is_some() {
            tracing::info!("SIGUSR1: reconnecting now with a fresh address");
            control.reconnect_now();
        }
    }))
}
