//! The tokio side of publishing: a TCP connection to the ingest tuned for live upload, driven
//! through the sans-IO [`Session`] until the ingest says `NetStream.Publish.Start`, then media out.
//!
//! All socket work uses readiness plus `try_read`/`try_write`, with outbound bytes kept in a
//! queue owned by the [`Publisher`]. That makes every await point cancel-safe, and lets a send
//! that waits for socket space keep reading what the ingest sends meanwhile (acks, pings,
//! `onStatus` errors), so a full window on either side never deadlocks the other.
//!
//! The loop that takes packets from the ring belongs to the caller: either call
//! [`Publisher::send`] per packet and [`Publisher::service`] while idle (both cancel-safe, so
//! they fit in a `select!`), or hand a packet source to [`pump`]. A long-running sender
//! ([`super::reconnect`]) instead uses [`Publisher::queue`], which never waits, and watches
//! [`Publisher::backlog_bytes`], [`Publisher::written_bytes`] and [`Publisher::delivered_bytes`]
//! to keep media in the ring while the socket is full and to notice a dead link. [`connect`]
//! starts from nothing each time; reconnecting is the caller's.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::AsyncWriteExt;
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio::time::{timeout, timeout_at, Instant};

use super::error::{Phase, RtmpError};
use super::session::{Event, Session, SessionConfig, SessionStats};
use super::url::RtmpUrl;
use crate::media::MediaPacket;

/// How many queued buffers go into one `writev`.
const MAX_IOVECS: usize = 16;
const READ_BUFFER: usize = 16 * 1024;

/// Connection settings. The defaults suit a box on a consumer uplink pushing 1–4 Mbit/s.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Name resolution plus TCP connect.
    pub connect_timeout: Duration,
    /// Handshake, `connect` and `publish`, until the ingest says `NetStream.Publish.Start`.
    pub setup_timeout: Duration,
    /// How long one [`Publisher::send`] may wait for socket space before the connection counts
    /// as stalled.
    pub send_timeout: Duration,
    /// `deleteStream`, flush and waiting for the ingest to hang up, in [`Publisher::close`].
    pub close_timeout: Duration,
    /// `SO_SNDBUF` in bytes (Linux doubles it for bookkeeping). Bounded so that a slow uplink
    /// shows up as back-pressure on the ring within a second or two instead of minutes of
    /// latency hidden in the kernel. `None` keeps the system's auto-tuning.
    pub send_buffer: Option<u32>,
    /// `TCP_NOTSENT_LOWAT` in bytes: the kernel takes more only while less than this is
    /// waiting to be *sent* (bytes in flight do not count). Media beyond it stays in the ring,
    /// where it is measured in media time and can be dropped GOP-aware; in the kernel it could
    /// not be. Without it, a link that falls from 2500 to 1000 kbit/s gets the whole send
    /// buffer (256 KiB: 2 s at 1 Mbit/s) of full-rate media committed before the first cut
    /// takes effect. 64 KiB is 200 ms at 2.5 Mbit/s: enough to keep a fast link busy between
    /// wake-ups. `None` leaves it unset.
    pub notsent_lowat: Option<u32>,
    /// Idle time before TCP keepalive probes start (then every third of it, 3 probes); finds
    /// a dead ingest while no media flows. `None` disables keepalive.
    pub keepalive: Option<Duration>,
    pub session: SessionConfig,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            setup_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            close_timeout: Duration::from_secs(3),
            send_buffer: Some(256 * 1024),
            notsent_lowat: Some(64 * 1024),
            keepalive: Some(Duration::from_secs(15)),
            session: SessionConfig::default(),
        }
    }
}

/// A publishing RTMP connection; made by [`connect`].
pub struct Publisher {
    stream: TcpStream,
    /// The ingest's socket address, for messages.
    addr: String,
    session: Session,
    /// Bytes for the ingest, in order; the front one is written from `out_offset`.
    out: VecDeque<Vec<u8>>,
    out_offset: usize,
    /// Bytes in `out` not yet written.
    out_bytes: usize,
    /// Bytes the kernel accepted from us on this connection.
    written: u64,
    read_buf: Box<[u8]>,
    send_timeout: Duration,
    close_timeout: Duration,
}

/// Connects to `url` and returns once the ingest has accepted publishing.
pub async fn connect(url: &RtmpUrl, opts: &ConnectOptions) -> Result<Publisher, RtmpError> {
    let (stream, peer) = open_tcp(url, opts).await?;
    let mut publisher = Publisher {
        stream,
        addr: peer.to_string(),
        session: Session::new(url, &opts.session)?,
        out: VecDeque::new(),
        out_offset: 0,
        out_bytes: 0,
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

/// Checks an ingest without going live: opens the TCP connection, completes the RTMP handshake
/// and `connect` to the application of `url`, waits for `NetConnection.Connect.Success`, then
/// hangs up. No `createStream` or `publish` is ever written, so nothing is published and an
/// ingest that records what is published records nothing. For preflight checks
/// (`polypush selftest`).
///
/// `opts.connect_timeout` bounds resolving and the TCP connect, `opts.setup_timeout` the
/// handshake and `connect`. Errors are those of [`connect`] (`Refused`, `Timeout`,
/// `Closed` in the handshake or connect phase, `ConnectRejected`, …).
pub async fn probe(url: &RtmpUrl, opts: &ConnectOptions) -> Result<ProbeReport, RtmpError> {
    use tokio::io::AsyncReadExt;

    let start = Instant::now();
    let (mut stream, peer) = open_tcp(url, opts).await?;
    let addr = peer.to_string();
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
                if let Err(e) = stream.write_all(&bytes).await {
                    return Err(io_error(&session, e));
                }
            }
            let n = match stream.read(&mut buf).await {
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
    let _ = stream.shutdown().await;
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

impl Publisher {
    /// Serializes `pkt` and writes it. Returns once the bytes are in the kernel's send buffer;
    /// waits (reading inbound messages meanwhile) while the buffer is full, at most
    /// `send_timeout`. Cancel-safe in the sense that nothing is lost or reordered: a cancelled
    /// send's bytes go out on the next call.
    pub async fn send(&mut self, pkt: &MediaPacket) -> Result<(), RtmpError> {
        self.session.send(pkt)?;
        self.collect();
        // Fast path: the socket has room, so no timer is needed; peek for inbound messages.
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

    /// Serializes `pkt` and writes as much as the socket takes now; never waits. What the
    /// socket does not take stays queued here ([`Publisher::backlog_bytes`]) and goes out from
    /// [`Publisher::service`]. A caller that pops from a ring should stop popping while the
    /// backlog is large, so media waits in the ring, where the drop policy is.
    pub fn queue(&mut self, pkt: &MediaPacket) -> Result<(), RtmpError> {
        self.session.send(pkt)?;
        self.collect();
        self.write_ready()
    }

    /// Serialized bytes waiting for socket space (not yet in the kernel).
    pub fn backlog_bytes(&self) -> usize {
        self.out_bytes
    }

    /// Bytes the kernel accepted on this connection (handshake included).
    pub fn written_bytes(&self) -> u64 {
        self.written
    }

    /// Bytes the ingest's TCP stack acknowledged: [`Publisher::written_bytes`] minus what the
    /// kernel still holds ([`Publisher::unsent_bytes`]). `None` where `SIOCOUTQ` is missing.
    /// This moves only while the peer really receives, so it is what stall detection watches.
    pub fn delivered_bytes(&self) -> Option<u64> {
        self.unsent_bytes()
            .map(|queued| self.written.saturating_sub(u64::from(queued)))
    }

    /// Waits for the socket and handles one batch of inbound bytes (and writes queued answers).
    /// Call it while idle so pings and errors are seen; cancel-safe, for use in `select!`.
    pub async fn service(&mut self) -> Result<(), RtmpError> {
        self.collect();
        let want_write = !self.out.is_empty();
        tokio::select! {
            biased;
            r = self.stream.readable() => {
                r.map_err(|e| self.io_error(e))?;
                self.read_ready()
            }
            r = self.stream.writable(), if want_write => {
                r.map_err(|e| self.io_error(e))?;
                self.write_ready()
            }
        }
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

    /// The ingest's socket address, e.g. `127.0.0.1:1935`.
    pub fn peer(&self) -> &str {
        &self.addr
    }

    /// Bytes in the kernel send queue that the ingest has not acknowledged yet (Linux
    /// `SIOCOUTQ`): sent-but-unacked plus not-yet-sent. `None` where unsupported. A number that
    /// stays near the send buffer size means the uplink is slower than the stream.
    pub fn unsent_bytes(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let mut queued: libc::c_int = 0;
            // SAFETY: the fd is our open TCP socket; SIOCOUTQ (same value as TIOCOUTQ) stores
            // one int through the pointer, which points at a live c_int.
            let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
            if rc == 0 {
                u32::try_from(queued).ok()
            } else {
                None
            }
        }
        #[cfg(not(target_os = "linux"))]
        {
            None
        }
    }

    async fn establish(&mut self) -> Result<(), RtmpError> {
        while !self.session.is_publishing() {
            self.service().await?;
        }
        self.flush().await
    }

    async fn flush(&mut self) -> Result<(), RtmpError> {
        self.collect();
        while !self.out.is_empty() {
            self.service().await?;
        }
        Ok(())
    }

    async fn close_inner(&mut self) -> Result<(), RtmpError> {
        self.session.stop()?;
        match self.flush().await {
            // The ingest hung up first: the stream is over either way.
            Err(RtmpError::Closed { .. }) => return Ok(()),
            other => other?,
        }
        self.stream.shutdown().await.map_err(|e| self.io_error(e))?;
        loop {
            self.stream.readable().await.map_err(|e| self.io_error(e))?;
            match self.stream.try_read(&mut self.read_buf) {
                Ok(0) => return Ok(()),
                // The session is closed: late statuses are counted and ignored.
                Ok(n) => {
                    self.session.handle_input(&self.read_buf[..n])?;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
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

    /// Reads once if data is there and feeds it to the session.
    fn read_ready(&mut self) -> Result<(), RtmpError> {
        match self.stream.try_read(&mut self.read_buf) {
            Ok(0) => Err(self.hung_up()),
            Ok(n) => {
                for event in self.session.handle_input(&self.read_buf[..n])? {
                    match event {
                        Event::Status(s) => {
                            tracing::info!(ingest = %self.addr, level = %s.level, code = %s.code, description = %s.description, "ingest status")
                        }
                        other => tracing::debug!(ingest = %self.addr, event = ?other, "rtmp"),
                    }
                }
                self.collect();
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) if is_hang_up(&e) => Err(self.hung_up()),
            Err(e) => Err(self.io_error(e)),
        }
    }

    /// Writes as much of the queue as the socket takes without blocking.
    fn write_ready(&mut self) -> Result<(), RtmpError> {
        while !self.out.is_empty() {
            let result = {
                let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
                let mut n = 0;
                for (i, buf) in self.out.iter().take(MAX_IOVECS).enumerate() {
                    let start = if i == 0 { self.out_offset } else { 0 };
                    slices[i] = IoSlice::new(&buf[start..]);
                    n += 1;
                }
                self.stream.try_write_vectored(&slices[..n])
            };
            match result {
                Ok(0) => return Err(self.hung_up()),
                Ok(written) => self.advance(written),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if is_hang_up(&e) => return Err(self.hung_up()),
                Err(e) => return Err(self.io_error(e)),
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

/// Resolves and connects, trying each address in turn within one `connect_timeout`.
async fn open_tcp(
    url: &RtmpUrl,
    opts: &ConnectOptions,
) -> Result<(TcpStream, SocketAddr), RtmpError> {
    let target = if url.host().contains(':') {
        format!("[{}]:{}", url.host(), url.port())
    } else {
        format!("{}:{}", url.host(), url.port())
    };
    let timed_out = |addr: String| RtmpError::Timeout {
        addr,
        phase: Phase::Tcp,
        after: opts.connect_timeout,
    };
    let deadline = Instant::now() + opts.connect_timeout;
    let addrs: Vec<SocketAddr> =
        match timeout_at(deadline, lookup_host((url.host(), url.port()))).await {
            Err(_) => return Err(timed_out(target)),
            Ok(Err(source)) => {
                return Err(RtmpError::Resolve {
                    host: url.host().to_string(),
                    source,
                })
            }
            Ok(Ok(addrs)) => addrs.collect(),
        };
    let mut last = None;
    for addr in addrs {
        match timeout_at(deadline, connect_one(addr, opts)).await {
            Ok(Ok(stream)) => return Ok((stream, addr)),
            Ok(Err(e)) => {
                tracing::debug!(%addr, error = %e, "connect failed");
                last = Some(e);
            }
            Err(_) => {
                last = Some(timed_out(addr.to_string()));
                break;
            }
        }
    }
    Err(last.unwrap_or_else(|| RtmpError::Resolve {
        host: url.host().to_string(),
        source: io::Error::new(io::ErrorKind::NotFound, "no addresses"),
    }))
}

fn set_notsent_lowat(socket: &TcpSocket, bytes: u32) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the fd is our open TCP socket; the option value is a c_int that lives for the
    // duration of the call, and its size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

async fn connect_one(addr: SocketAddr, opts: &ConnectOptions) -> Result<TcpStream, RtmpError> {
    let fail = |source: io::Error| {
        if source.kind() == io::ErrorKind::ConnectionRefused {
            RtmpError::Refused {
                addr: addr.to_string(),
            }
        } else {
            RtmpError::Io {
                addr: addr.to_string(),
                phase: Phase::Tcp,
                source,
            }
        }
    };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(fail)?;
    // Small control messages (acks, pongs, commands) must not wait for Nagle.
    socket.set_nodelay(true).map_err(fail)?;
    if let Some(size) = opts.send_buffer {
        socket.set_send_buffer_size(size).map_err(fail)?;
    }
    if let Some(lowat) = opts.notsent_lowat {
        // Best effort: kernels before 3.12 lack it; the send buffer still bounds the queue.
        if let Err(e) = set_notsent_lowat(&socket, lowat) {
            tracing::debug!(error = %e, "TCP_NOTSENT_LOWAT not supported; the send buffer bounds the queue alone");
        }
    }
    if let Some(idle) = opts.keepalive {
        let keepalive = TcpKeepalive::new()
            .with_time(idle)
            .with_interval((idle / 3).max(Duration::from_secs(1)))
            .with_retries(3);
        SockRef::from(&socket)
            .set_tcp_keepalive(&keepalive)
            .map_err(fail)?;
    }
    socket.connect(addr).await.map_err(fail)
}
