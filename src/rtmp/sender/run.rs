//! The tokio side of the sender: the loop that gets an address, connects through the
//! [`Connector`], publishes the ring and waits out failures as [`Core`] decides. Every timer
//! here is tokio's, the same clock the core is fed, so the whole loop runs on paused time in
//! tests (with an in-memory ingest behind the connector).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::SeedableRng;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout, timeout_at, Instant, MissedTickBehavior};

use super::control::{
    AddressClass, AddressError, AddressSource, SenderControl, SenderHooks, SenderOptions,
    SenderState, SenderStats,
};
use super::core::{Core, Step};
use crate::media::MediaPacket;
use crate::ring::Ring;
use crate::rtmp::continuity::Continuity;
use crate::rtmp::error::RtmpError;
use crate::rtmp::publisher::Publisher;
use crate::rtmp::stall::StallDetector;
use crate::rtmp::transport::{Connector, TcpConnector};
use crate::rtmp::url::RtmpUrl;

/// Pop from the ring only while fewer serialized bytes than this wait for socket space.
/// Small on purpose: media that waits should wait in the ring, where it is measured in media
/// time and dropped GOP-aware. With 64 KiB here and in `TCP_NOTSENT_LOWAT` the squeeze test
/// (2500 → 1000 kbit/s) saw up to 236 KB outside the ring, 1.9 s at the new rate.
const MAX_BACKLOG: usize = 16 * 1024;
/// How long "reconnect now" waits for the current session to close cleanly.
const RECONNECT_CLOSE_TIMEOUT: Duration = Duration::from_secs(1);
/// An address source that has not answered in this long counts as unavailable (its own HTTP
/// timeouts should fire long before).
const ADDRESS_TIMEOUT: Duration = Duration::from_secs(60);

/// Everything one sender works with.
pub struct SenderParts {
    /// Where the packets come from; closed by the caller once the encoders have flushed.
    pub ring: Ring,
    /// Where the push address comes from.
    pub source: Arc<dyn AddressSource>,
    /// How a connection is opened: [`TcpConnector`] unless a test puts an in-memory ingest
    /// there.
    pub connector: Arc<dyn Connector>,
    pub options: SenderOptions,
    /// The handle the caller keeps to watch and steer the sender.
    pub control: SenderControl,
    pub hooks: SenderHooks,
}

impl SenderParts {
    /// A sender of `ring` to `source` over TCP, with default options, control and hooks.
    pub fn new(ring: Ring, source: Arc<dyn AddressSource>) -> Self {
        Self {
            ring,
            source,
            connector: Arc::new(TcpConnector),
            options: SenderOptions::default(),
            control: SenderControl::new(),
            hooks: SenderHooks::default(),
        }
    }
}

/// Publishes the ring until `shutdown` resolves (see the module docs), reconnecting as needed.
/// Returns the final counters, or the error that made it stop: a fatal one, or the last one
/// once `max_attempts` is reached.
pub async fn run_sender(
    parts: SenderParts,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<SenderStats, RtmpError> {
    let SenderParts {
        ring,
        source,
        connector,
        options,
        control,
        hooks,
    } = parts;
    let opts = options.sanitized();
    let rng = match opts.jitter_seed {
        Some(seed) => StdRng::seed_from_u64(seed),
        None => StdRng::from_entropy(),
    };
    let mut sender = Sender {
        core: Core::new(opts.backoff.clone(), opts.credentials_retry),
        reconnect: control.shared.reconnect.subscribe(),
        ring,
        source,
        connector,
        opts,
        control,
        hooks,
        continuity: Continuity::default(),
        rng,
        closed_bytes: ByteCounts::default(),
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
struct ByteCounts {
    sent: u64,
    delivered: u64,
    acked: u64,
}

/// How a publishing session ended.
enum SessionEnd {
    /// Shutdown, or the ring closed: drained and closed cleanly (or as well as possible).
    Finished,
    /// "Reconnect now": asked at this time, and the session closed for it.
    ReconnectRequested(Instant),
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
    connector: Arc<dyn Connector>,
    opts: SenderOptions,
    control: SenderControl,
    hooks: SenderHooks,
    reconnect: watch::Receiver<u64>,
    core: Core,
    continuity: Continuity,
    rng: StdRng,
    closed_bytes: ByteCounts,
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
                    Err(AddressError::new(
                        AddressClass::Unavailable,
                        "timeout",
                        std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!("the push address source did not answer within {ADDRESS_TIMEOUT:?}"),
                        ),
                    ))
                }),
            };
            let url = match address {
                Ok(url) => {
                    self.core.on_address();
                    url
                }
                Err(e) => {
                    let step = self.core.on_address_error(Instant::now(), e, &mut self.rng);
                    self.follow(step, shutdown).await?;
                    continue;
                }
            };

            let (connector, opts) = (self.connector.clone(), self.opts.connect.clone());
            let connect = async {
                let conn = connector.connect(&url, &opts).await?;
                Publisher::start(conn, &url, &opts).await
            };
            let connected = tokio::select! {
                biased;
                _ = shutdown.wait(), if !shutdown.fired => return Ok(()),
                Ok(()) = self.reconnect.changed() => {
                    self.reconnect_requested(None);
                    continue;
                }
                r = connect => r,
            };
            let step = match connected {
                Err(e) => self.core.on_connect_error(Instant::now(), e, &mut self.rng),
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
                        let now = Instant::now();
                        let since = match self.control.state() {
                            SenderState::Publishing { since, .. } => Some(since),
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

    /// "Reconnect now"; `closed_at`: when it was asked, if a publishing session was closed
    /// for it (the recovery is measured from then).
    fn reconnect_requested(&mut self, closed_at: Option<Instant>) {
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
        let started = Instant::now();
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
                    let at = Instant::now();
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
                    if let Some(after) =
                        stall.observe(Instant::now(), progress(&publisher), pending)
                    {
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
        let s = session_bytes(publisher);
        self.closed_bytes.sent += s.sent;
        self.closed_bytes.delivered += s.delivered;
        self.closed_bytes.acked += s.acked;
    }

    /// The counters, with the live numbers of `current` if a session is up.
    fn snapshot(&self, current: Option<&Publisher>) -> SenderStats {
        let mut s = self.core.stats;
        s.headers_skipped = self.continuity.skipped();
        let live = current.map(session_bytes).unwrap_or_default();
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

fn session_bytes(publisher: &Publisher) -> ByteCounts {
    ByteCounts {
        sent: publisher.written_bytes(),
        delivered: publisher.delivered_bytes().unwrap_or(0),
        acked: publisher.stats().bytes_acked_by_peer,
    }
}

/// What moves only while the peer receives: TCP-acknowledged bytes where the kernel says
/// (else bytes the transport accepted), plus RTMP-acknowledged bytes.
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
mod tests;
