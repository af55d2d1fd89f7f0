//! The tokio side of publishing: one connection to the ingest, driven through the sans-IO
//! [`Session`] until the ingest says `NetStream.Publish.Start`, then media out.
//!
//! The publisher runs over any [`Transport`] (TCP in production, an in-memory pipe in tests).
//! All I/O is poll-based with outbound bytes kept in a queue owned by the [`Publisher`]: a
//! read or write is attempted only inside a poll, nothing is held across an await point, so
//! every await is cancel-safe, and a send that waits for socket space keeps reading what the
//! ingest sends meanwhile (acks, pings, `onStatus` errors), so a full window on either side
//! never deadlocks the other.
//!
//! The loop that takes packets from the ring belongs to the caller: either call
//! [`Publisher::send`] per packet and [`Publisher::service`] while idle (both cancel-safe, so
//! they fit in a `select!`), or hand a packet source to [`pump`]. A long-running sender
//! ([`super::sender`]) instead uses [`Publisher::queue`], which never waits, and watches
//! [`Publisher::backlog_bytes`], [`Publisher::written_bytes`] and [`Publisher::delivered_bytes`]
//! to keep media in the ring while the socket is full and to notice a dead link. [`connect`]
//! starts from nothing each time; reconnecting is the caller's.

use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::time::{timeout, Instant};

use super::error::{Phase, RtmpError};
use super::session::{Event, Session, SessionStats};
use super::transport::{ConnectOptions, Connection, Connector, TcpConnector, Transport};
use super::url::RtmpUrl;
use crate::media::MediaPacket;

/// How many queued buffers go into one `writev`.
const MAX_IOVECS: usize = 16;
const READ_BUFFER: usize = 16 * 1024;

/// A publishing RTMP connection; made by [`connect`] or [`Publisher::start`].
pub struct Publisher {
    io: Box<dyn Transport>,
    /// The ingest's address, for messages.
    addr: String,
    session: Session,
    /// Bytes for the ingest, in order; the front one is written from `out_offset`.
    out: VecDeque<Vec<u8>>,
    out_offset: usize,
    /// Bytes in `out` not yet written.
    out_bytes: usize,
    /// Bytes went into the transport since its last flush (a TLS layer buffers records).
    unflushed: bool,
    /// Bytes the transport accepted from us on this connection.
    written: u64,
    read_buf: Box<[u8]>,
    send_timeout: Duration,
    close_timeout: Duration,
}

/// Connects to `url` over TCP and returns once the ingest has accepted publishing.
pub async fn connect(url: &RtmpUrl, opts: &ConnectOptions) -> Result<Publisher, RtmpError> {
    let conn = TcpConnector.connect(url, opts).await?;
    Publisher::start(conn, url, opts).await
}

/// What [`probe`] measured: the ingest answered the handshake and accepted `connect`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeReport {
    /// The ingest's socket address, e.g. `127.0.0.1:1935`.
    pub peer: String,
    /// From the start until the TCP connection was open.
    pub tcp: Duration,
    /// From the start until the RTMP handshake was complete.
    pub handshake: Duration,
    /// From the start until the ingest accepted `connect` (`NetConnection.Connect.Success`).
    pub connected: Duration,
}

/// Checks an ingest without going live: opens the connection, completes the RTMP handshake
/// and `connect` to the application of `url`, waits for `NetConnection.Connect.Success`, then
/// hangs up. No `createStream` or `publish` is ever written, so nothing is published and an
/// ingest that records what is published records nothing. For preflight checks
/// (`polypush selftest`).
///
/// `opts.connect_timeout` bounds resolving and the TCP connect, `opts.setup_timeout` the
/// handshake and `connect`. Errors are those of [`connect`] (`Refused`, `Timeout`,
/// `Closed` in the handshake or connect phase, `ConnectRejected`, …).
pub async fn probe(url: &RtmpUrl, opts: &ConnectOptions) -> Result<ProbeReport, RtmpError> {
    let start = Instant::now();
    let Connection { mut io, peer: addr } = TcpConnector.connect(url, opts).await?;
    let tcp = start.elapsed();
    let mut session = Session::new(url, &opts.session)?;
    let mut buf = vec![0u8; READ_BUFFER];
    let io_error = |session: &Session, source: io::Error| {
        if is_hang_up(&source) {
            RtmpError::Closed {
                addr: addr.clone(),
                phase: session.phase(),
            }
        } else {
            RtmpError::Io {
                addr: addr.clone(),
                phase: session.phase(),
                source,
            }
        }
    };
    let exchange = async {
        let mut handshake = None;
        loop {
            // Only what the handshake and `connect` need: the loop returns as soon as the
            // connect is accepted, before the `createStream` the session queues then is written.
            while let Some(bytes) = session.poll_transmit() {
                if let Err(e) = io.write_all(&bytes).await {
                    return Err(io_error(&session, e));
                }
            }
            let n = match io.read(&mut buf).await {
                Ok(0) => {
                    return Err(RtmpError::Closed {
                        addr: addr.clone(),
                        phase: session.phase(),
                    })
                }
                Ok(n) => n,
                Err(e) => return Err(io_error(&session, e)),
            };
            for event in session.handle_input(&buf[..n])? {
                match event {
                    Event::HandshakeCompleted => handshake = Some(start.elapsed()),
                    Event::Connected => {
                        let connected = start.elapsed();
                        return Ok(ProbeReport {
                            peer: addr.clone(),
                            tcp,
                            handshake: handshake.unwrap_or(connected),
                            connected,
                        });
                    }
                    other => tracing::debug!(ingest = %addr, event = ?other, "rtmp probe"),
                }
            }
        }
    };
    let result = match timeout(opts.setup_timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(RtmpError::Timeout {
            addr: addr.clone(),
            phase: session.phase(),
            after: opts.setup_timeout,
        }),
    };
    // Hang up without a word more; what the session queued after `connect` is dropped.
    let _ = io.shutdown().await;
    if result.is_ok() {
        tracing::debug!(ingest = %addr, url = %url, "probe: connect accepted, closed without publishing");
    }
    result
}

/// Publishes what `next` yields until it yields `None`, handling inbound messages while it
/// waits; returns the number of packets sent. A pending `next()` future is kept across inbound
/// traffic and polled to completion, so it need not be cancel-safe. The caller closes the
/// publisher afterwards (or drops it after an error).
pub async fn pump<F, S>(publisher: &mut Publisher, mut next: F) -> Result<u64, RtmpError>
where
    F: FnMut() -> S,
    S: Future<Output = Option<MediaPacket>>,
{
    let mut sent = 0;
    loop {
        let fut = next();
        tokio::pin!(fut);
        let pkt = loop {
            tokio::select! {
                biased;
                pkt = &mut fut => break pkt,
                r = publisher.service() => r?,
            }
        };
        match pkt {
            Some(pkt) => {
                publisher.send(&pkt).await?;
                sent += 1;
            }
            None => return Ok(sent),
        }
    }
}

/// What one poll of the transport did.
enum Progress {
    /// Something was read or written.
    Moved,
    /// Nothing can move now; the context's waker is registered.
    Blocked,
}

impl Publisher {
    /// Runs the RTMP handshake, `connect` and `publish` over `conn` and returns once the
    /// ingest said `NetStream.Publish.Start`, within `opts.setup_timeout`.
    pub async fn start(
        conn: Connection,
        url: &RtmpUrl,
        opts: &ConnectOptions,
    ) -> Result<Publisher, RtmpError> {
        let mut publisher = Publisher {
            io: conn.io,
            addr: conn.peer,
            session: Session::new(url, &opts.session)?,
            out: VecDeque::new(),
            out_offset: 0,
            out_bytes: 0,
            unflushed: false,
            written: 0,
            read_buf: vec![0; READ_BUFFER].into_boxed_slice(),
            send_timeout: opts.send_timeout,
            close_timeout: opts.close_timeout,
        };
        match timeout(opts.setup_timeout, publisher.establish()).await {
            Ok(Ok(())) => {
                tracing::debug!(ingest = %publisher.addr, url = %url, "publishing");
                Ok(publisher)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RtmpError::Timeout {
                addr: publisher.addr.clone(),
                phase: publisher.session.phase(),
                after: opts.setup_timeout,
            }),
        }
    }

    /// Serializes `pkt` and writes it. Returns once the bytes are in the transport; waits
    /// (reading inbound messages meanwhile) while it is full, at most `send_timeout`.
    /// Cancel-safe in the sense that nothing is lost or reordered: a cancelled send's bytes go
    /// out on the next call.
    pub async fn send(&mut self, pkt: &MediaPacket) -> Result<(), RtmpError> {
        self.session.send(pkt)?;
        self.collect();
        // Fast path: the transport has room, so no timer is needed; peek for inbound messages.
        self.write_ready()?;
        self.read_ready()?;
        if self.out.is_empty() {
            return Ok(());
        }
        match timeout(self.send_timeout, self.flush()).await {
            Ok(r) => r,
            Err(_) => Err(RtmpError::Stalled {
                addr: self.addr.clone(),
                after: self.send_timeout,
            }),
        }
    }

    /// Serializes `pkt` and writes as much as the transport takes now; never waits. What it
    /// does not take stays queued here ([`Publisher::backlog_bytes`]) and goes out from
    /// [`Publisher::service`]. A caller that pops from a ring should stop popping while the
    /// backlog is large, so media waits in the ring, where the drop policy is.
    pub fn queue(&mut self, pkt: &MediaPacket) -> Result<(), RtmpError> {
        self.session.send(pkt)?;
        self.collect();
        self.write_ready()
    }

    /// Serialized bytes waiting for transport space.
    pub fn backlog_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Bytes the transport accepted on this connection (handshake included).
    pub fn written_bytes(&self) -> u64 {
        self.written
    }

    /// Bytes the ingest's TCP stack acknowledged: [`Publisher::written_bytes`] minus what the
    /// kernel still holds ([`Publisher::unsent_bytes`]). `None` where that is unknown.
    /// This moves only while the peer really receives, so it is what stall detection watches.
    pub fn delivered_bytes(&self) -> Option<u64> {
        self.unsent_bytes()
            .map(|queued| self.written.saturating_sub(u64::from(queued)))
    }

    /// Waits until the transport moves (inbound bytes handled, queued bytes written) and
    /// returns. Call it while idle so pings and errors are seen; cancel-safe, for `select!`.
    pub async fn service(&mut self) -> Result<(), RtmpError> {
        self.collect();
        poll_fn(|cx| match self.poll_progress(cx) {
            Ok(Progress::Moved) => Poll::Ready(Ok(())),
            Ok(Progress::Blocked) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        })
        .await
    }

    /// Ends the stream: `deleteStream`, flush, half-close, then wait for the ingest to hang up,
    /// which tells us it has finished with the stream (nginx-rtmp closes its recording then).
    /// Bounded by `close_timeout`. Returns the final counters.
    pub async fn close(mut self) -> Result<SessionStats, RtmpError> {
        let after = self.close_timeout;
        match timeout(after, self.close_inner()).await {
            Ok(Ok(())) => {
                tracing::info!(ingest = %self.addr, stream = self.session.masked_stream(), "stream closed");
                Ok(self.session.stats())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(RtmpError::Timeout {
                addr: self.addr.clone(),
                phase: Phase::Closing,
                after,
            }),
        }
    }

    pub fn stats(&self) -> SessionStats {
        self.session.stats()
    }

    /// The ingest's address, e.g. `127.0.0.1:1935`.
    pub fn peer(&self) -> &str {
        &self.addr
    }

    /// Bytes in the kernel send queue that the ingest has not acknowledged yet (Linux
    /// `SIOCOUTQ`): sent-but-unacked plus not-yet-sent. `None` where unsupported. A number that
    /// stays near the send buffer size means the uplink is slower than the stream.
    pub fn unsent_bytes(&self) -> Option<u32> {
        self.io.unsent_bytes()
    }

    async fn establish(&mut self) -> Result<(), RtmpError> {
        while !self.session.is_publishing() {
            self.service().await?;
        }
        self.flush().await
    }

    /// Until everything queued is written and flushed (reading inbound meanwhile).
    async fn flush(&mut self) -> Result<(), RtmpError> {
        self.collect();
        poll_fn(|cx| loop {
            if self.out.is_empty() && !self.unflushed {
                return Poll::Ready(Ok(()));
            }
            match self.poll_progress(cx) {
                Ok(Progress::Moved) => {}
                Ok(Progress::Blocked) if self.out.is_empty() && !self.unflushed => {
                    return Poll::Ready(Ok(()))
                }
                Ok(Progress::Blocked) => return Poll::Pending,
                Err(e) => return Poll::Ready(Err(e)),
            }
        })
        .await
    }

    async fn close_inner(&mut self) -> Result<(), RtmpError> {
        self.session.stop()?;
        match self.flush().await {
            // The ingest hung up first: the stream is over either way.
            Err(RtmpError::Closed { .. }) => return Ok(()),
            other => other?,
        }
        if let Err(e) = self.io.shutdown().await {
            return Err(self.io_error(e));
        }
        loop {
            match self.io.read(&mut self.read_buf).await {
                Ok(0) => return Ok(()),
                // The session is closed: late statuses are counted and ignored.
                Ok(n) => {
                    self.session.handle_input(&self.read_buf[..n])?;
                }
                Err(e) if is_hang_up(&e) => return Ok(()),
                Err(e) => return Err(self.io_error(e)),
            }
        }
    }

    /// Moves the session's output into our queue (moving the buffers, not copying them).
    fn collect(&mut self) {
        while let Some(bytes) = self.session.poll_transmit() {
            self.out_bytes += bytes.len();
            self.out.push_back(bytes);
        }
    }

    /// One round on the transport with `cx`: read what is there, write what is queued, flush
    /// what a buffering layer holds. `Blocked` registers `cx` for whatever can still move.
    fn poll_progress(&mut self, cx: &mut Context<'_>) -> Result<Progress, RtmpError> {
        let mut moved = false;
        if let Poll::Ready(r) = self.poll_read_once(cx) {
            r?;
            moved = true;
        }
        if !self.out.is_empty() {
            let before = self.out_bytes;
            self.poll_write_queue(cx)?;
            moved |= self.out_bytes != before;
        }
        if self.out.is_empty() && self.unflushed {
            // A flush moves bytes a buffering layer (TLS) held; it is not progress of ours to
            // report (TCP's is a no-op, and waking the caller for it would cost a loop turn
            // per packet).
            if let Poll::Ready(r) = Pin::new(&mut self.io).poll_flush(cx) {
                r.map_err(|e| self.write_error(e))?;
                self.unflushed = false;
            }
        }
        Ok(if moved {
            Progress::Moved
        } else {
            Progress::Blocked
        })
    }

    /// Reads once if data is there and feeds it to the session; never waits.
    fn read_ready(&mut self) -> Result<(), RtmpError> {
        let mut cx = Context::from_waker(Waker::noop());
        match self.poll_read_once(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => Ok(()),
        }
    }

    fn poll_read_once(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), RtmpError>> {
        let mut buf = ReadBuf::new(&mut self.read_buf);
        let n = match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(())) => buf.filled().len(),
            Poll::Ready(Err(e)) if is_hang_up(&e) => return Poll::Ready(Err(self.hung_up())),
            Poll::Ready(Err(e)) => return Poll::Ready(Err(self.io_error(e))),
        };
        if n == 0 {
            return Poll::Ready(Err(self.hung_up()));
        }
        let events = match self.session.handle_input(&self.read_buf[..n]) {
            Ok(events) => events,
            Err(e) => return Poll::Ready(Err(e)),
        };
        for event in events {
            match event {
                Event::Status(s) => {
                    tracing::info!(ingest = %self.addr, level = %s.level, code = %s.code, description = %s.description, "ingest status")
                }
                other => tracing::debug!(ingest = %self.addr, event = ?other, "rtmp"),
            }
        }
        self.collect();
        Poll::Ready(Ok(()))
    }

    /// Writes as much of the queue as the transport takes without waiting.
    fn write_ready(&mut self) -> Result<(), RtmpError> {
        let mut cx = Context::from_waker(Waker::noop());
        self.poll_write_queue(&mut cx)
    }

    /// Writes queued bytes until the queue is empty or the transport is full (`cx` is then
    /// registered for space).
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> Result<(), RtmpError> {
        while !self.out.is_empty() {
            let result = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut n = 0;
                for (i, buf) in self.out.iter().take(MAX_IOVECS).enumerate() {
                    let start = if i == 0 { self.out_offset } else { 0 };
                    slices[i] = IoSlice::new(&buf[start..]);
                    n += 1;
                }
                Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..n])
            };
            match result {
                Poll::Ready(Ok(0)) => return Err(self.hung_up()),
                Poll::Ready(Ok(written)) => {
                    self.unflushed = true;
                    self.advance(written);
                }
                Poll::Pending => return Ok(()),
                Poll::Ready(Err(e)) => return Err(self.write_error(e)),
            }
        }
        Ok(())
    }

    fn advance(&mut self, mut written: usize) {
        self.written += written as u64;
        self.out_bytes -= written;
        while written > 0 {
            let Some(front) = self.out.front() else {
                return;
            };
            let left = front.len() - self.out_offset;
            if written >= left {
                written -= left;
                self.out.pop_front();
                self.out_offset = 0;
            } else {
                self.out_offset += written;
                written = 0;
            }
        }
    }

    fn write_error(&self, e: io::Error) -> RtmpError {
        if is_hang_up(&e) {
            self.hung_up()
        } else {
            self.io_error(e)
        }
    }

    /// The ingest closed or reset the connection. In answer to `publish` that is how
    /// nginx-rtmp (`deny publish`) and many CDNs refuse a key.
    fn hung_up(&self) -> RtmpError {
        match self.session.phase() {
            Phase::Publish => RtmpError::PublishDropped {
                addr: self.addr.clone(),
                stream: self.session.masked_stream().to_string(),
            },
            phase => RtmpError::Closed {
                addr: self.addr.clone(),
                phase,
            },
        }
    }

    fn io_error(&self, source: io::Error) -> RtmpError {
        RtmpError::Io {
            addr: self.addr.clone(),
            phase: self.session.phase(),
            source,
        }
    }
}

fn is_hang_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}
