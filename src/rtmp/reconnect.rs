//! The long-running sender: takes packets from the [`Ring`] and keeps them flowing to the
//! ingest for as long as the broadcast lasts, across ingest restarts, dead links, rejected keys
//! and platform trouble. It owns the decisions *whether, when and where* to connect again; one
//! connection is still a [`Publisher`] from [`super::driver`].
//!
//! # What happens when
//! | what went wrong | class ([`RtmpError::recovery`]) | what the sender does |
//! |---|---|---|
//! | refused, reset, timeout, stall, garbage, a session bug | retry | same address again after a backoff (fast while the ingest restarts) |
//! | publish rejected or dropped, connect rejected | fresh address | ask the [`AddressSource`] for a *fresh* address (Polyv: log in again), back off, never fast |
//! | the source says the channel credentials are rejected | — | retry every `credentials_retry` (300 s); one ERROR per change, state [`SenderState::CredentialsRejected`] |
//! | the source cannot get an address right now | — | back off like a rejection |
//! | a bad push address, a fatal source error | fatal | [`run_sender`] returns the error; the CLI exits with a configuration/rejection code that systemd does not restart on |
//! | `max_attempts` consecutive failures (unlimited by default) | — | [`run_sender`] returns [`RtmpError::GaveUp`] (a network-class error) |
//!
//! The schedule is [`Backoff`] (full jitter, a fast-retry window, reset after a healthy
//! session); "reconnect now" ([`SenderControl::reconnect_now`], SIGUSR1 through
//! [`reconnect_on_sigusr1`]) resets it, closes the current session if there is one, and asks
//! for a fresh address at once: an operator uses it when the ingest moved.
//!
//! A dead link is found by [`Publisher`]'s connect and setup timeouts, TCP keepalive, and a stall
//! detector (`rtmp/stall.rs`): the bytes the peer's TCP acknowledged (and its RTMP acks) stop
//! moving for `stall_timeout` while bytes are waiting. The sender pops from the ring only while
//! the publisher's own queue is small, so media waits in the ring (bounded, GOP-aware drops)
//! rather than in our buffers, and the kernel's share is bounded by `SO_SNDBUF`.
//!
//! # What the ingest sees across a reconnect
//! Every session is a new RTMP connection and `publish`, and starts like a fresh stream:
//! metadata and sequence headers first ([`Ring::headers`]), then video from a keyframe (the
//! encoder is asked for one through [`SenderHooks::request_keyframe`] and
//! [`Ring::skip_to_keyframe`] drops the queued frames before it). Timestamps come from the
//! pipeline clock and are **not** reset per session: they continue where the media is, so the
//! ingest sees a forward jump equal to the media that was lost, never a jump back and never a
//! restart at 0. Audio is not dropped by the ring, so after a short outage it resumes where
//! the ring held it; only what was in flight on the dead connection (at most the socket
//! buffer) is lost. Video resumes at the first keyframe after the outage. Re-sent headers are
//! stamped at the last timestamp sent on their track (`rtmp/continuity.rs`), so timestamps are
//! monotonic per chunk stream, and the start-up headers are not sent twice on the first session.
//! Timestamps past 0xFFFFFF ms (4.66 h) go out as RTMP extended timestamps and wrap at 2^32 ms
//! (49.7 days), which `rml_rtmp`'s chunk serializer handles (see the session tests).
//!
//! # Shutdown
//! When the `shutdown` future resolves while publishing, the sender keeps popping until the
//! ring is closed and drained (the caller closes it after the encoders flushed) or
//! `drain_timeout` passes, then ends the stream cleanly (`deleteStream`, wait for the ingest to
//! hang up). When not connected it returns at once.
//!
//! # Logs
//! INFO on each state change (publishing, lost with the reason, publishing again after how
//! long); WARN for repeated failures at most once per backoff step (and at the cap at most every
//! 10 minutes); ERROR only for rejected credentials, once per change. Never per packet. The
//! stream key never appears: [`RtmpUrl`]'s `Display` masks it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};

use super::backoff::{Backoff, BackoffConfig, FailureKind, Retry, WarnLimiter};
use super::continuity::Continuity;
use super::driver::{connect, ConnectOptions, Publisher};
use super::error::{Recovery, RtmpError};
use super::stall::StallDetector;
use super::url::RtmpUrl;
use crate::media::MediaPacket;
use crate::ring::Ring;

/// The longest `stall_timeout` accepted: a dead link must not hide for longer.
pub const MAX_STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Pop from the ring only while fewer serialized bytes than this wait for socket space.
const MAX_BACKLOG: usize = 64 * 1024;
/// How long "reconnect now" waits for the current session to close cleanly.
const RECONNECT_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// At the backoff cap, "still failing" is repeated at most this often.
const WARN_REPEAT: Duration = Duration::from_secs(600);
/// An address source that has not answered in this long counts as a transient failure (its
/// own HTTP timeouts should fire long before).
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(60);

// ----------------------------------------------------------------------------------------------
// Address source

/// Why an [`AddressSource`] has no address. Messages are shown to the operator as they are.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The platform rejected the channel credentials: an operator must act. Retried slowly.
    #[error("{0}")]
    CredentialsRejected(String),
    /// The platform is unreachable or failing right now. Retried with backoff.
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (a configuration error): the sender stops.
    #[error("{0}")]
    Fatal(String),
}

/// The future [`AddressSource::address`] returns.
pub type AddressFuture<'a> =
    Pin<Box<dyn Future<Output = Result<RtmpUrl, AddressError>> + Send + 'a>>;

/// Where the push address comes from: a fixed URL, or a Polyv login (in the supervisor).
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

// ----------------------------------------------------------------------------------------------
// Options, state, stats, control, hooks

/// Settings of [`run_sender`].
#[derive(Debug, Clone)]
pub struct SenderOptions {
    /// One connection: timeouts, socket options, RTMP settings.
    pub connect: ConnectOptions,
    /// When to retry; see [`Backoff`].
    pub backoff: BackoffConfig,
    /// A connection whose peer receives nothing for this long while bytes wait is dropped and
    /// replaced. At most [`MAX_STALL_TIMEOUT`]. (For the sender this replaces
    /// `connect.send_timeout`, which only [`Publisher::send`] uses.)
    pub stall_timeout: Duration,
    /// How often to try again while the platform rejects the channel credentials.
    pub credentials_retry: Duration,
    /// After shutdown, how long to keep sending what is still queued before closing.
    pub drain_timeout: Duration,
}

impl Default for SenderOptions {
    fn default() -> Self {
        Self {
            connect: ConnectOptions::default(),
            backoff: BackoffConfig::default(),
            stall_timeout: MAX_STALL_TIMEOUT,
            credentials_retry: Duration::from_secs(300),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl SenderOptions {
    /// Checks the ranges; the message says which setting to change. [`run_sender`] clamps
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

    fn sanitized(mut self) -> Self {
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
    /// [`run_sender`] has not started yet.
    Starting,
    /// Getting an address and connecting; `attempt` counts from 1 in the current outage.
    Connecting { attempt: u32 },
    /// Publishing to `peer` (a socket address) since `since`.
    Publishing {
        peer: String,
        since: std::time::Instant,
    },
    /// The last attempt failed (or the session was lost) because of `reason`; the next
    /// attempt is `retry_in` after entering this state.
    Waiting { retry_in: Duration, reason: String },
    /// The platform rejected the channel credentials; retried every `retry_in`.
    CredentialsRejected { message: String, retry_in: Duration },
    /// [`run_sender`] returned.
    Stopped,
}

impl SenderState {
    pub fn is_publishing(&self) -> bool {
        matches!(self, SenderState::Publishing { .. })
    }

    /// A short name for metrics labels.
    pub fn name(&self) -> &'static str {
        match self {
            SenderState::Starting => "starting",
            SenderState::Connecting { .. } => "connecting",
            SenderState::Publishing { .. } => "publishing",
            SenderState::Waiting { .. } => "waiting",
            SenderState::CredentialsRejected { .. } => "credentials_rejected",
            SenderState::Stopped => "stopped",
        }
    }
}

impl fmt::Display for SenderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SenderState::Starting => f.write_str("starting"),
            SenderState::Connecting { attempt } => write!(f, "connecting (attempt {attempt})"),
            SenderState::Publishing { peer, .. } => write!(f, "publishing to {peer}"),
            SenderState::Waiting { retry_in, reason } => {
                write!(f, "retrying in {:.1} s: {reason}", retry_in.as_secs_f64())
            }
            SenderState::CredentialsRejected { message, retry_in } => write!(
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
    /// Connections dropped by the stall detector.
    pub stalls: u64,
    /// Bytes the kernel accepted from us.
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
    /// Bytes the kernel accepted on the current session.
    pub session_bytes_sent: u64,
    /// Bytes in the kernel send queue of the current connection, not yet acknowledged by the
    /// ingest (`SIOCOUTQ`): with `backlog_bytes`, the input for a queue-delay estimate.
    pub socket_unsent_bytes: u64,
    /// Serialized bytes waiting for socket space in our own queue.
    pub backlog_bytes: u64,
}

/// The handle through which the rest of the daemon watches and steers a sender. Cheap to
/// clone; create it before [`run_sender`] and keep a clone.
#[derive(Clone)]
pub struct SenderControl {
    shared: Arc<ControlShared>,
}

struct ControlShared {
    state: watch::Sender<SenderState>,
    /// Incremented by every "reconnect now"; the sender watches for changes.
    reconnect: watch::Sender<u64>,
    stats: Mutex<SenderStats>,
    /// The reason of the last failure and when it was reported.
    last_error: Mutex<Option<(std::time::Instant, String)>>,
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
    /// closed first. Requests while [`run_sender`] is not running are ignored.
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
    pub fn last_error(&self) -> Option<(std::time::Instant, String)> {
        self.shared
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_state(&self, state: SenderState) {
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
                .unwrap_or_else(PoisonError::into_inner) =
                Some((std::time::Instant::now(), reason.clone()));
        }
        self.shared.state.send_replace(state);
    }

    fn set_stats(&self, stats: SenderStats) {
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
    /// A session reached `NetStream.Publish.Start` on this address (the supervisor tells Polyv
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

// ----------------------------------------------------------------------------------------------
// The decisions (sans-IO)

/// What to do after a failure.
#[derive(Debug)]
enum Step {
    /// Show `state`, wait `delay`, try again.
    Wait { delay: Duration, state: SenderState },
    /// Return this error from [`run_sender`].
    Stop(RtmpError),
}

/// The sender's decisions, without sockets or timers: what each outcome means for the
/// backoff, the next address request, the counters, the state and the logs. `now` is passed in.
struct Core {
    backoff: Backoff,
    credentials_retry: Duration,
    warn: WarnLimiter,
    /// The next address request asks for a fresh one.
    fresh: bool,
    /// The rejection message while the platform rejects the credentials.
    credentials: Option<String>,
    /// When the last publishing session ended, for `last_recovery`.
    lost_at: Option<std::time::Instant>,
    stats: SenderStats,
}

impl Core {
    fn new(backoff: BackoffConfig, credentials_retry: Duration) -> Self {
        Self {
            backoff: Backoff::new(backoff),
            credentials_retry,
            warn: WarnLimiter::new(WARN_REPEAT),
            fresh: false,
            credentials: None,
            lost_at: None,
            stats: SenderStats::default(),
        }
    }

    fn connecting(&self) -> SenderState {
        SenderState::Connecting {
            attempt: self.backoff.failures() + 1,
        }
    }

    /// Whether the next address request is a fresh one (and counts it).
    fn take_fresh(&mut self) -> bool {
        let fresh = std::mem::take(&mut self.fresh);
        if fresh {
            self.stats.fresh_addresses += 1;
        }
        fresh
    }

    fn on_address(&mut self) {
        if self.credentials.take().is_some() {
            tracing::info!("the platform accepted the channel credentials again");
        }
    }

    fn on_address_error<R: rand::Rng + ?Sized>(
        &mut self,
        now: std::time::Instant,
        err: AddressError,
        rng: &mut R,
    ) -> Step {
        match err {
            AddressError::CredentialsRejected(message) => {
                self.stats.credentials_rejections += 1;
                if self.credentials.as_deref() != Some(message.as_str()) {
                    tracing::error!(
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
                    },
                }
            }
            AddressError::Transient(message) => {
                self.stats.connect_failures += 1;
                self.fail(
                    now,
                    FailureKind::Rejected,
                    RtmpError::Address { message },
                    rng,
                )
            }
            AddressError::Fatal(message) => Step::Stop(RtmpError::Address { message }),
        }
    }

    fn on_connect_error<R: rand::Rng + ?Sized>(
        &mut self,
        now: std::time::Instant,
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
    fn on_publishing(&mut self, now: std::time::Instant) -> Option<Duration> {
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
    fn on_lost<R: rand::Rng + ?Sized>(
        &mut self,
        now: std::time::Instant,
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

    /// "Reconnect now": start over with a fresh address. `closed_at` is set when a publishing
    /// session was closed for it.
    fn on_reconnect_requested(&mut self, closed_at: Option<std::time::Instant>) {
        self.backoff
            .on_disconnected(closed_at.unwrap_or_else(std::time::Instant::now));
        self.backoff.reset();
        self.warn.reset();
        self.fresh = true;
        if closed_at.is_some() {
            self.lost_at = closed_at;
        }
    }

    fn fail<R: rand::Rng + ?Sized>(
        &mut self,
        now: std::time::Instant,
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
            },
        }
    }
}

// ----------------------------------------------------------------------------------------------
// The driver

/// Publishes `ring` until `shutdown` resolves (see the module docs), reconnecting as needed.
/// Returns the final counters, or the error that made it stop: a fatal one, or the last one
/// once `max_attempts` is reached.
pub async fn run_sender(
    ring: Ring,
    source: Arc<dyn AddressSource>,
    opts: SenderOptions,
    control: SenderControl,
    hooks: SenderHooks,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<SenderStats, RtmpError> {
    let opts = opts.sanitized();
    let mut sender = Sender {
        core: Core::new(opts.backoff.clone(), opts.credentials_retry),
        reconnect: control.shared.reconnect.subscribe(),
        ring,
        source,
        opts,
        control,
        hooks,
        continuity: Continuity::default(),
        rng: StdRng::from_entropy(),
        closed_bytes: Bytes3::default(),
    };
    let mut shutdown = Shutdown {
        fut: Box::pin(shutdown),
        fired: false,
    };
    let result = sender.run(&mut shutdown).await;
    let stats = sender.snapshot(None);
    sender.control.set_stats(stats);
    sender.control.set_state(SenderState::Stopped);
    result.map(|()| stats)
}

/// The caller's shutdown future, polled until it fires and never after.
struct Shutdown<'a> {
    fut: Pin<Box<dyn Future<Output = ()> + Send + 'a>>,
    fired: bool,
}

impl Shutdown<'_> {
    /// Use only under `if !shutdown.fired`.
    async fn wait(&mut self) {
        (&mut self.fut).await;
        self.fired = true;
    }
}

/// Byte counters of the sessions that ended.
#[derive(Debug, Default, Clone, Copy)]
struct Bytes3 {
    sent: u64,
    delivered: u64,
    acked: u64,
}

/// How a publishing session ended.
enum SessionEnd {
    /// Shutdown, or the ring closed: drained and closed cleanly (or as well as possible).
    Finished,
    /// "Reconnect now": closed at this time.
    ReconnectRequested(std::time::Instant),
    /// An error; the connection is gone.
    Lost(RtmpError),
}

/// What woke the publishing loop.
enum Wake {
    Shutdown,
    DrainTimeout,
    Reconnect,
    Tick,
    Serviced(Result<(), RtmpError>),
    Popped(Option<MediaPacket>),
}

struct Sender {
    ring: Ring,
    source: Arc<dyn AddressSource>,
    opts: SenderOptions,
    control: SenderControl,
    hooks: SenderHooks,
    reconnect: watch::Receiver<u64>,
    core: Core,
    continuity: Continuity,
    rng: StdRng,
    closed_bytes: Bytes3,
}

impl Sender {
    async fn run(&mut self, shutdown: &mut Shutdown<'_>) -> Result<(), RtmpError> {
        loop {
            // Closed and empty: the caller is done and nothing is left to send.
            if shutdown.fired || (self.ring.is_closed() && self.ring.stats().queued_packets == 0) {
                return Ok(());
            }
            self.set_state(self.core.connecting());
            let fresh = self.core.take_fresh();
            let source = self.source.clone();
            let address = tokio::select! {
                biased;
                _ = shutdown.wait(), if !shutdown.fired => return Ok(()),
                Ok(()) = self.reconnect.changed() => {
                    self.reconnect_requested(None);
                    continue;
                }
                a = timeout(ADDRESS_TIMEOUT, source.address(fresh)) => a.unwrap_or_else(|_| {
                    Err(AddressError::Transient(format!(
                        "the push address source did not answer within {ADDRESS_TIMEOUT:?}"
                    )))
                }),
            };
            let url = match address {
                Ok(url) => {
                    self.core.on_address();
                    url
                }
                Err(e) => {
                    let step =
                        self.core
                            .on_address_error(std::time::Instant::now(), e, &mut self.rng);
                    self.follow(step, shutdown).await?;
                    continue;
                }
            };

            let connected = tokio::select! {
                biased;
                _ = shutdown.wait(), if !shutdown.fired => return Ok(()),
                Ok(()) = self.reconnect.changed() => {
                    self.reconnect_requested(None);
                    continue;
                }
                r = connect(&url, &self.opts.connect) => r,
            };
            let step = match connected {
                Err(e) => self
                    .core
                    .on_connect_error(std::time::Instant::now(), e, &mut self.rng),
                Ok(publisher) => match self.publish(publisher, &url, shutdown).await {
                    SessionEnd::Finished => return Ok(()),
                    SessionEnd::ReconnectRequested(at) => {
                        self.reconnect_requested(Some(at));
                        continue;
                    }
                    SessionEnd::Lost(e) if shutdown.fired => {
                        tracing::warn!(error = %e, "the connection failed while draining; queued media is lost");
                        return Ok(());
                    }
                    SessionEnd::Lost(e) => {
                        let now = std::time::Instant::now();
                        let since = match &*self.control.shared.state.borrow() {
                            SenderState::Publishing { since, .. } => Some(*since),
                            _ => None,
                        };
                        tracing::info!(
                            url = %url,
                            error = %e,
                            session_s = since.map(|s| now.saturating_duration_since(s).as_secs()),
                            "connection to the ingest lost; reconnecting"
                        );
                        self.core.on_lost(now, e, &mut self.rng)
                    }
                },
            };
            self.follow(step, shutdown).await?;
        }
    }

    fn reconnect_requested(&mut self, closed_at: Option<std::time::Instant>) {
        tracing::info!("reconnecting now with a fresh address, as requested");
        self.core.on_reconnect_requested(closed_at);
    }

    /// Carries out a [`Step`]: `Err` stops the sender; `Ok` means try again now.
    async fn follow(&mut self, step: Step, shutdown: &mut Shutdown<'_>) -> Result<(), RtmpError> {
        let (delay, state) = match step {
            Step::Stop(e) => return Err(e),
            Step::Wait { delay, state } => (delay, state),
        };
        self.set_state(state);
        let until = Instant::now() + delay;
        tokio::select! {
            biased;
            _ = shutdown.wait(), if !shutdown.fired => {}
            Ok(()) = self.reconnect.changed() => self.reconnect_requested(None),
            _ = sleep_until(until) => {}
        }
        Ok(())
    }

    /// One publishing session, from `Publish.Start` to its end.
    async fn publish(
        &mut self,
        mut publisher: Publisher,
        url: &RtmpUrl,
        shutdown: &mut Shutdown<'_>,
    ) -> SessionEnd {
        let started = std::time::Instant::now();
        match self.core.on_publishing(started) {
            Some(after) => tracing::info!(
                url = %url,
                ingest = %publisher.peer(),
                recovery_ms = after.as_millis() as u64,
                "publishing again after {} ms",
                after.as_millis()
            ),
            None => tracing::info!(url = %url, ingest = %publisher.peer(), "publishing"),
        }
        // A new session starts like a new stream: headers, then a keyframe.
        (self.hooks.request_keyframe)();
        self.ring.skip_to_keyframe();
        for header in self.continuity.start_session(self.ring.headers()) {
            if let Err(e) = publisher.queue(&header) {
                return self.end(publisher, SessionEnd::Lost(e));
            }
            self.core.stats.packets_sent += 1;
        }
        (self.hooks.on_publishing)(url);
        self.set_state(SenderState::Publishing {
            peer: publisher.peer().to_string(),
            since: started,
        });

        let mut stall = StallDetector::new(self.opts.stall_timeout, progress(&publisher), started);
        let mut tick = tokio::time::interval(tick_period(self.opts.stall_timeout));
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut drain_until: Option<Instant> = None;
        loop {
            let room = publisher.backlog_bytes() < MAX_BACKLOG;
            let wake = tokio::select! {
                biased;
                _ = shutdown.wait(), if !shutdown.fired => Wake::Shutdown,
                _ = sleep_until_opt(drain_until) => Wake::DrainTimeout,
                Ok(()) = self.reconnect.changed() => Wake::Reconnect,
                _ = tick.tick() => Wake::Tick,
                r = publisher.service() => Wake::Serviced(r),
                p = self.ring.pop(), if room => Wake::Popped(p),
            };
            match wake {
                Wake::Shutdown => {
                    tracing::debug!(
                        drain_timeout_ms = self.opts.drain_timeout.as_millis() as u64,
                        "shutting down: sending what is still queued"
                    );
                    drain_until = Some(Instant::now() + self.opts.drain_timeout);
                }
                Wake::DrainTimeout => {
                    let queued_packets = self.ring.stats().queued_packets;
                    if self.ring.is_closed() {
                        tracing::warn!(
                            queued_packets,
                            "the ingest did not take the last queued media within the drain \
                             timeout; closing anyway"
                        );
                    } else {
                        tracing::warn!(
                            queued_packets,
                            "the ring was not closed within the drain timeout (the encoders \
                             did not finish flushing); closing anyway"
                        );
                    }
                    return self.finish(publisher, Instant::now()).await;
                }
                Wake::Reconnect => {
                    let at = std::time::Instant::now();
                    if let Err(e) = timeout(RECONNECT_CLOSE_TIMEOUT, self.close(publisher))
                        .await
                        .unwrap_or(Ok(()))
                    {
                        tracing::debug!(error = %e, "closing for a reconnect failed");
                    }
                    return SessionEnd::ReconnectRequested(at);
                }
                Wake::Tick => {
                    let pending = publisher.backlog_bytes() > 0
                        || publisher.unsent_bytes().is_some_and(|n| n > 0);
                    let now = std::time::Instant::now();
                    if let Some(after) = stall.observe(now, progress(&publisher), pending) {
                        let e = RtmpError::Stalled {
                            addr: publisher.peer().to_string(),
                            after,
                        };
                        return self.end(publisher, SessionEnd::Lost(e));
                    }
                    let stats = self.snapshot(Some(&publisher));
                    self.control.set_stats(stats);
                }
                Wake::Serviced(Ok(())) => {}
                Wake::Serviced(Err(e)) => return self.end(publisher, SessionEnd::Lost(e)),
                Wake::Popped(Some(pkt)) => {
                    if self.continuity.admit(&pkt) {
                        if let Err(e) = publisher.queue(&pkt) {
                            return self.end(publisher, SessionEnd::Lost(e));
                        }
                        self.core.stats.packets_sent += 1;
                    }
                }
                Wake::Popped(None) => {
                    // Closed and drained: the caller is done.
                    let deadline =
                        drain_until.unwrap_or_else(|| Instant::now() + self.opts.drain_timeout);
                    return self.finish(publisher, deadline).await;
                }
            }
        }
    }

    /// Sends the rest of our queue (until `deadline`), then ends the stream cleanly.
    async fn finish(&mut self, mut publisher: Publisher, deadline: Instant) -> SessionEnd {
        let flushed = timeout_at(deadline, async {
            while publisher.backlog_bytes() > 0 {
                publisher.service().await?;
            }
            Ok::<(), RtmpError>(())
        })
        .await;
        if let Ok(Err(e)) = flushed {
            return self.end(publisher, SessionEnd::Lost(e));
        }
        if let Err(e) = self.close(publisher).await {
            tracing::warn!(error = %e, "the stream did not close cleanly");
        }
        SessionEnd::Finished
    }

    /// `deleteStream` and wait for the ingest to hang up (bounded by `close_timeout`).
    async fn close(&mut self, publisher: Publisher) -> Result<(), RtmpError> {
        self.account(&publisher);
        publisher.close().await.map(|_| ())
    }

    /// Records the ended session's counters and passes `end` on.
    fn end(&mut self, publisher: Publisher, end: SessionEnd) -> SessionEnd {
        self.account(&publisher);
        end
    }

    fn account(&mut self, publisher: &Publisher) {
        let s = self.session_bytes(publisher);
        self.closed_bytes.sent += s.sent;
        self.closed_bytes.delivered += s.delivered;
        self.closed_bytes.acked += s.acked;
    }

    fn session_bytes(&self, publisher: &Publisher) -> Bytes3 {
        Bytes3 {
            sent: publisher.written_bytes(),
            delivered: publisher.delivered_bytes().unwrap_or(0),
            acked: publisher.stats().bytes_acked_by_peer,
        }
    }

    /// The counters, with the live numbers of `current` if a session is up.
    fn snapshot(&self, current: Option<&Publisher>) -> SenderStats {
        let mut s = self.core.stats;
        s.headers_skipped = self.continuity.skipped();
        let live = current.map(|p| self.session_bytes(p)).unwrap_or_default();
        s.bytes_sent = self.closed_bytes.sent + live.sent;
        s.bytes_delivered = self.closed_bytes.delivered + live.delivered;
        s.bytes_acked = self.closed_bytes.acked + live.acked;
        s.session_bytes_sent = live.sent;
        s.socket_unsent_bytes = current
            .and_then(Publisher::unsent_bytes)
            .map_or(0, u64::from);
        s.backlog_bytes = current.map_or(0, |p| p.backlog_bytes() as u64);
        s
    }

    fn set_state(&self, state: SenderState) {
        self.control.set_stats(self.snapshot(None));
        self.control.set_state(state);
    }
}

/// What moves only while the peer receives: TCP-acknowledged bytes where the kernel says
/// (else bytes the kernel accepted), plus RTMP-acknowledged bytes.
fn progress(publisher: &Publisher) -> u64 {
    publisher
        .delivered_bytes()
        .unwrap_or_else(|| publisher.written_bytes())
        + publisher.stats().bytes_acked_by_peer
}

/// How often the publishing loop checks for a stall and refreshes the stats. The bitrate
/// controller reads those stats every 100 ms and takes counters that did not move for
/// `adapt.stall_ms` (300 ms) as a stalled link, so they must be fresher than that whatever
/// the stall timeout: a tenth of it, at most 50 ms (a 500 ms refresh made a healthy link
/// look stalled every other tick). Two ioctls per tick; nothing measurable.
fn tick_period(stall_timeout: Duration) -> Duration {
    (stall_timeout / 10).min(Duration::from_millis(50))
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant as StdInstant;

    const MS: Duration = Duration::from_millis(1);

    fn core() -> Core {
        Core::new(BackoffConfig::default(), Duration::from_secs(300))
    }

    fn rng() -> StdRng {
        StdRng::seed_from_u64(1)
    }

    fn refused() -> RtmpError {
        RtmpError::Refused {
            addr: "127.0.0.1:1935".into(),
        }
    }

    fn rejected() -> RtmpError {
        RtmpError::PublishRejected {
            stream: "abc***".into(),
            code: "NetStream.Publish.BadName".into(),
            description: "Already publishing".into(),
        }
    }

    fn wait(step: Step) -> (Duration, SenderState) {
        match step {
            Step::Wait { delay, state } => (delay, state),
            Step::Stop(e) => panic!("unexpected stop: {e}"),
        }
    }

    #[test]
    fn transient_failures_retry_the_same_address_and_count_attempts() {
        let mut c = core();
        let mut rng = rng();
        let t0 = StdInstant::now();
        assert_eq!(c.connecting(), SenderState::Connecting { attempt: 1 });
        let (delay, state) = wait(c.on_connect_error(t0, refused(), &mut rng));
        assert!(delay <= 500 * MS);
        match state {
            SenderState::Waiting { retry_in, reason } => {
                assert_eq!(retry_in, delay);
                assert!(reason.contains("refused"), "{reason}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!c.take_fresh());
        assert_eq!(c.connecting(), SenderState::Connecting { attempt: 2 });
        assert_eq!(c.stats.connect_failures, 1);
    }

    #[test]
    fn a_rejection_asks_for_a_fresh_address_once() {
        let mut c = core();
        let mut rng = rng();
        let t0 = StdInstant::now();
        wait(c.on_connect_error(t0, rejected(), &mut rng));
        assert!(c.take_fresh());
        assert!(!c.take_fresh(), "only the next request is fresh");
        assert_eq!(c.stats.publish_rejections, 1);
        assert_eq!(c.stats.fresh_addresses, 1);
        // Rejections are never retried fast: the second ceiling is already 1 s, the third 2 s.
        wait(c.on_connect_error(t0, rejected(), &mut rng));
        let (delay, _) = wait(c.on_connect_error(t0 + 100 * MS, rejected(), &mut rng));
        assert!(delay <= 2000 * MS);
        assert_eq!(c.backoff.failures(), 3);
    }

    #[test]
    fn fatal_errors_stop() {
        let mut c = core();
        let bad = RtmpError::BadUrl {
            url: "x".into(),
            reason: "y".into(),
        };
        assert!(matches!(
            c.on_connect_error(StdInstant::now(), bad, &mut rng()),
            Step::Stop(RtmpError::BadUrl { .. })
        ));
        assert!(matches!(
            c.on_address_error(
                StdInstant::now(),
                AddressError::Fatal("no password configured".into()),
                &mut rng()
            ),
            Step::Stop(RtmpError::Address { .. })
        ));
    }

    #[test]
    fn max_attempts_stops_with_the_last_error() {
        let mut c = Core::new(
            BackoffConfig {
                max_attempts: Some(2),
                ..BackoffConfig::default()
            },
            Duration::from_secs(300),
        );
        let t0 = StdInstant::now();
        wait(c.on_connect_error(t0, refused(), &mut rng()));
        match c.on_connect_error(t0, refused(), &mut rng()) {
            Step::Stop(RtmpError::GaveUp { attempts: 2, last }) => {
                assert!(matches!(*last, RtmpError::Refused { .. }))
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn credentials_rejected_retries_slowly_with_a_visible_state() {
        let mut c = core();
        let t0 = StdInstant::now();
        let msg = "Polyv rejected the credentials of channel 1";
        for i in 0..3 {
            let (delay, state) = wait(c.on_address_error(
                t0 + i * 300 * 1000 * MS,
                AddressError::CredentialsRejected(msg.into()),
                &mut rng(),
            ));
            assert_eq!(delay, Duration::from_secs(300));
            assert_eq!(
                state,
                SenderState::CredentialsRejected {
                    message: msg.into(),
                    retry_in: Duration::from_secs(300)
                }
            );
            // A fresh login next time, and the backoff is not involved.
            assert!(c.take_fresh());
        }
        assert_eq!(c.stats.credentials_rejections, 3);
        assert_eq!(c.backoff.failures(), 0);
        assert!(c.credentials.is_some());
        c.on_address();
        assert!(c.credentials.is_none());
    }

    #[test]
    fn platform_trouble_backs_off_without_the_fast_window() {
        let mut c = core();
        let t0 = StdInstant::now();
        let mut ceilings = Vec::new();
        for i in 0..4 {
            let (delay, _) = wait(c.on_address_error(
                t0 + i * 10 * MS,
                AddressError::Transient("Polyv is down".into()),
                &mut rng(),
            ));
            ceilings.push(delay);
        }
        assert!(ceilings[3] <= 4000 * MS);
        assert_eq!(c.backoff.failures(), 4);
    }

    #[test]
    fn recovery_is_measured_from_the_loss_and_a_long_session_resets_the_backoff() {
        let mut c = core();
        let mut rng = rng();
        let t0 = StdInstant::now();
        assert_eq!(c.on_publishing(t0), None);
        assert_eq!(c.stats.sessions, 1);

        let lost = t0 + Duration::from_secs(60);
        let stalled = RtmpError::Stalled {
            addr: "h:1".into(),
            after: Duration::from_secs(10),
        };
        let (delay, _) = wait(c.on_lost(lost, stalled, &mut rng));
        assert!(
            delay <= 500 * MS,
            "the first retry after a long session is quick"
        );
        assert_eq!(c.stats.stalls, 1);
        assert_eq!(c.stats.connections_lost, 1);
        wait(c.on_connect_error(lost + 400 * MS, refused(), &mut rng));

        let back = lost + 1300 * MS;
        assert_eq!(c.on_publishing(back), Some(1300 * MS));
        assert_eq!(c.stats.last_recovery, Some(1300 * MS));
        assert_eq!((c.stats.sessions, c.stats.reconnects), (2, 1));

        // Lost again after 2 s: a flapping ingest; the growth continues.
        let (_, _) = wait(c.on_lost(back + 2000 * MS, refused(), &mut rng));
        assert_eq!(c.backoff.failures(), 3);
    }

    #[test]
    fn reconnect_now_resets_and_asks_for_a_fresh_address() {
        let mut c = core();
        let mut rng = rng();
        let t0 = StdInstant::now();
        for i in 0..6 {
            wait(c.on_connect_error(t0 + i * MS, rejected(), &mut rng));
        }
        c.take_fresh();
        c.on_reconnect_requested(None);
        assert!(c.take_fresh());
        assert_eq!(c.backoff.failures(), 0);
        assert_eq!(c.connecting(), SenderState::Connecting { attempt: 1 });

        // While publishing: the recovery is measured from the close.
        c.on_publishing(t0);
        c.on_reconnect_requested(Some(t0 + Duration::from_secs(5)));
        assert_eq!(
            c.on_publishing(t0 + Duration::from_secs(5) + 30 * MS),
            Some(30 * MS)
        );
    }

    #[test]
    fn states_read_well() {
        let s = SenderState::Waiting {
            retry_in: 700 * MS,
            reason: "ingest 127.0.0.1:1935 refused the connection".into(),
        };
        assert_eq!(
            s.to_string(),
            "retrying in 0.7 s: ingest 127.0.0.1:1935 refused the connection"
        );
        assert_eq!(s.name(), "waiting");
        assert!(!s.is_publishing());
    }

    #[test]
    fn options_are_validated_and_clamped() {
        assert!(SenderOptions::default().validate().is_ok());
        let too_long = SenderOptions {
            stall_timeout: Duration::from_secs(30),
            ..SenderOptions::default()
        };
        assert!(too_long.validate().unwrap_err().contains("stall timeout"));
        assert_eq!(too_long.sanitized().stall_timeout, MAX_STALL_TIMEOUT);
        assert_eq!(tick_period(Duration::from_secs(10)), 50 * MS);
        assert_eq!(tick_period(Duration::from_secs(2)), 50 * MS);
    }

    #[tokio::test]
    async fn control_reports_state_and_reconnect_requests() {
        let control = SenderControl::new();
        assert_eq!(control.state(), SenderState::Starting);
        let mut requests = control.shared.reconnect.subscribe();
        control.reconnect_now();
        requests.changed().await.unwrap();
        let mut states = control.subscribe();
        control.set_state(SenderState::Connecting { attempt: 1 });
        states.changed().await.unwrap();
        assert_eq!(*states.borrow(), SenderState::Connecting { attempt: 1 });
    }

    /// Without a connection, a shutdown returns at once, and a fixed URL is its own source.
    #[tokio::test]
    async fn shutdown_while_waiting_returns_at_once() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = RtmpUrl::parse(&format!("rtmp://127.0.0.1:{port}/live/key")).unwrap();
        let ring = Ring::new(crate::ring::RingConfig::default());
        let control = SenderControl::new();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(run_sender(
            ring,
            Arc::new(url),
            SenderOptions::default(),
            control.clone(),
            SenderHooks::default(),
            async move {
                let _ = rx.await;
            },
        ));
        let mut states = control.subscribe();
        tokio::time::timeout(
            Duration::from_secs(5),
            states.wait_for(|s| matches!(s, SenderState::Waiting { .. })),
        )
        .await
        .expect("refused, then waiting")
        .unwrap();
        let started = tokio::time::Instant::now();
        tx.send(()).unwrap();
        let stats = tokio::time::timeout(Duration::from_secs(1), task)
            .await
            .expect("returns at once")
            .unwrap()
            .unwrap();
        assert!(started.elapsed() < Duration::from_millis(200));
        assert!(stats.connect_failures >= 1);
        assert_eq!(stats.sessions, 0);
        let (_, reason) = control.last_error().expect("the refusal is kept");
        assert!(reason.contains("refused"), "{reason}");
        assert_eq!(control.state(), SenderState::Stopped);
    }
}
