//! The byte stream under an RTMP session, and the seam where it is made.
//!
//! A [`Publisher`](super::Publisher) talks to any [`Transport`]: a tuned `TcpStream` in
//! production (TLS over it for `rtmps://`), an in-memory `tokio::io::DuplexStream` in tests. The
//! sender gets its connections from a [`Connector`]; [`TcpConnector`] is the real one (resolve,
//! connect within `connect_timeout`, socket options for live upload, and for `rtmps://` a TLS
//! handshake that checks the ingest's certificate against the program's one trust store,
//! [`crate::tls`]: the system's CA store, or the file `SSL_CERT_FILE` names, as OpenSSL-based
//! tools do), and a test puts an in-memory ingest
//! (rml_rtmp's `ServerSession` at the far end of a duplex pipe) where TCP would be, so the
//! whole reconnect logic runs on tokio's paused clock without a socket.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{lookup_host, TcpSocket, TcpStream};
use tokio::time::{timeout_at, Instant};

use super::error::{Phase, RtmpError};
use super::session::SessionConfig;
use super::url::RtmpUrl;

/// Connection settings. The defaults suit a box on a consumer uplink pushing 1–4 Mbit/s.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Name resolution plus TCP connect.
    pub connect_timeout: Duration,
    /// Handshake, `connect` and `publish`, until the ingest says `NetStream.Publish.Start`.
    pub setup_timeout: Duration,
    /// How long one [`Publisher::send`](super::Publisher::send) may wait for socket space
    /// before the connection counts as stalled.
    pub send_timeout: Duration,
    /// `deleteStream`, flush and waiting for the ingest to hang up, in
    /// [`Publisher::close`](super::Publisher::close).
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
    /// takes effect. 16 KiB is 50 ms at 2.5 Mbit/s: enough to keep a fast link busy between
    /// wake-ups. `None` leaves it unset.
    pub notsent_lowat: Option<u32>,
    /// TCP congestion control for the push connection (`TCP_CONGESTION`), e.g. `bbr`; `None`
    /// (the default) keeps the system's. Best effort: an unprivileged process may use only
    /// the algorithms in `net.ipv4.tcp_allowed_congestion_control`; if the kernel refuses,
    /// the system's default is used and that is logged once.
    pub congestion: Option<String>,
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
            notsent_lowat: Some(16 * 1024),
            congestion: None,
            keepalive: Some(Duration::from_secs(15)),
            session: SessionConfig::default(),
        }
    }
}

/// A byte stream an RTMP session can run over.
pub trait Transport: AsyncRead + AsyncWrite + Send + Unpin {
    /// Bytes the kernel still holds that the peer has not acknowledged (Linux `SIOCOUTQ`):
    /// what stall detection and the queue-delay estimate read. `None` where there is no kernel
    /// socket to ask (an in-memory pipe), and the publisher falls back to bytes written.
    fn unsent_bytes(&self) -> Option<u32> {
        None
    }
}

impl Transport for TcpStream {
    fn unsent_bytes(&self) -> Option<u32> {
        #[cfg(target_os = "linux")]
        {
            use std::os::fd::AsRawFd;
            let mut queued: libc::c_int = 0;
            // SAFETY: the fd is our open TCP socket; SIOCOUTQ (same value as TIOCOUTQ) stores
            // one int through the pointer, which points at a live c_int.
            let rc = unsafe { libc::ioctl(self.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
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
}

impl Transport for tokio::io::DuplexStream {}

/// RTMPS: the kernel's queue is the TCP socket's (what rustls still holds is not counted; it
/// flushes as the socket takes it).
impl Transport for tokio_rustls::client::TlsStream<TcpStream> {
    fn unsent_bytes(&self) -> Option<u32> {
        self.get_ref().0.unsent_bytes()
    }
}

/// An open byte stream to an ingest, before any RTMP.
pub struct Connection {
    pub(super) io: Box<dyn Transport>,
    /// The ingest's address for messages, e.g. `127.0.0.1:1935`.
    pub(super) peer: String,
}

impl Connection {
    pub fn new(io: impl Transport + 'static, peer: impl Into<String>) -> Self {
        Self {
            io: Box::new(io),
            peer: peer.into(),
        }
    }
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

/// The future [`Connector::connect`] returns.
pub type ConnectFuture<'a> =
    Pin<Box<dyn Future<Output = Result<Connection, RtmpError>> + Send + 'a>>;

/// Opens the byte stream for one connection attempt to `url`. Errors are the transport phase's
/// ([`RtmpError::Refused`], [`RtmpError::Resolve`], a [`Phase::Tcp`] timeout).
pub trait Connector: Send + Sync {
    fn connect<'a>(&'a self, url: &'a RtmpUrl, opts: &'a ConnectOptions) -> ConnectFuture<'a>;
}

/// The real connector: TCP with the socket options of [`ConnectOptions`], and TLS over it for
/// `rtmps://` (within the same `connect_timeout`).
#[derive(Debug, Clone, Copy, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect<'a>(&'a self, url: &'a RtmpUrl, opts: &'a ConnectOptions) -> ConnectFuture<'a> {
        Box::pin(async move {
            let deadline = Instant::now() + opts.connect_timeout;
            let (stream, peer) = open_tcp(url, opts).await?;
            if !url.is_tls() {
                return Ok(Connection::new(stream, peer.to_string()));
            }
            let addr = peer.to_string();
            let name =
                rustls::pki_types::ServerName::try_from(url.host().to_string()).map_err(|e| {
                    RtmpError::Tls {
                        addr: addr.clone(),
                        reason: format!(
                            "{:?} is not a name a certificate can be for: {e}",
                            url.host()
                        ),
                    }
                })?;
            // Read for every attempt (file I/O, so on the blocking pool): a CA the operator
            // installs after a failed handshake counts from the next attempt.
            let loaded = tokio::task::spawn_blocking(crate::tls::client_config);
            let tls = match timeout_at(deadline, loaded).await {
                Ok(Ok(Ok(config))) => config,
                Ok(Ok(Err(e))) => {
                    return Err(RtmpError::Tls {
                        addr,
                        reason: e.to_string(),
                    })
                }
                Ok(Err(e)) => {
                    return Err(RtmpError::Tls {
                        addr,
                        reason: format!("loading the CA certificates failed: {e}"),
                    })
                }
                Err(_) => return Err(timed_out(addr, opts)),
            };
            let handshake = tokio_rustls::TlsConnector::from(tls).connect(name, stream);
            match timeout_at(deadline, handshake).await {
                Ok(Ok(tls)) => Ok(Connection::new(tls, addr)),
                Ok(Err(e)) => Err(RtmpError::Tls {
                    addr,
                    reason: handshake_failure(&e, url),
                }),
                // Not a TCP timeout: the connection is open. A plain RTMP server reads the
                // ClientHello as the start of its 1537-byte C0+C1 and waits for the rest,
                // silently, so this is what `rtmps://` to an RTMP port looks like.
                Err(_) => Err(RtmpError::Tls {
                    addr,
                    reason: format!(
                        "no answer to the TLS handshake within {:?}: is port {} an RTMPS port \
                         (an RTMP server waits without a word), or is the path to it congested?",
                        opts.connect_timeout,
                        url.port()
                    ),
                }),
            }
        })
    }
}

fn timed_out(addr: String, opts: &ConnectOptions) -> RtmpError {
    RtmpError::Timeout {
        addr,
        phase: Phase::Tcp,
        after: opts.connect_timeout,
    }
}

/// The usual RTMPS failure with a private CA, and its two fixes.
const UNTRUSTED: &str = "the ingest's certificate is not signed by a CA this box trusts \
    (UnknownIssuer); if the ingest uses a private CA, install its PEM certificate as \
    /usr/local/share/ca-certificates/NAME.crt and run update-ca-certificates, or set \
    SSL_CERT_FILE to that PEM file in polypush's environment";

/// Says in an operator's words why a TLS handshake failed, and what to do for the common
/// cases; anything else is rustls's own text.
fn handshake_failure(e: &io::Error, url: &RtmpUrl) -> String {
    use rustls::{CertificateError, Error};
    let Some(err) = e.get_ref().and_then(|i| i.downcast_ref::<Error>()) else {
        // Not rustls: the socket (the ingest hung up during the handshake, say).
        return format!(
            "{e} during the TLS handshake: is port {} an RTMPS port?",
            url.port()
        );
    };
    match err {
        Error::InvalidCertificate(CertificateError::UnknownIssuer) => UNTRUSTED.to_string(),
        Error::InvalidCertificate(
            CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
        ) => format!(
            "the ingest's certificate is not for {:?} ({err}); use the host name the \
             certificate names in the push address",
            url.host()
        ),
        Error::InvalidCertificate(
            CertificateError::Expired
            | CertificateError::ExpiredContext { .. }
            | CertificateError::NotValidYet
            | CertificateError::NotValidYetContext { .. },
        ) => format!(
            "{err}: the ingest's certificate is out of date, or this box's clock is wrong \
             (check it with timedatectl)"
        ),
        Error::InvalidMessage(_) => format!(
            "{err}: the ingest did not answer in TLS; is port {} an RTMPS port (rtmp:// \
             addresses are not TLS)?",
            url.port()
        ),
        other => format!(
            "{other}; check the address's host name and that its certificate chains to a CA \
             this box trusts (the system store, or the PEM file SSL_CERT_FILE names)"
        ),
    }
}

/// Resolves and connects, trying each address in turn within one `connect_timeout`.
pub(super) async fn open_tcp(
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

/// Asks for congestion control `name`; on refusal keeps the system's and says so once per
/// process (every reconnect would repeat it).
fn set_congestion(socket: &TcpSocket, name: &str) {
    static REPORTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let sock = SockRef::from(socket);
    if let Err(e) = sock.set_tcp_congestion(name.as_bytes()) {
        if !REPORTED.swap(true, std::sync::atomic::Ordering::Relaxed) {
            let system = sock
                .tcp_congestion()
                .map(|v| {
                    String::from_utf8_lossy(&v)
                        .trim_end_matches('\0')
                        .to_owned()
                })
                .unwrap_or_else(|_| "unknown".to_owned());
            tracing::info!(
                wanted = name,
                using = %system,
                error = %e,
                "TCP congestion control {name} not available, using the system's {system}; \
                 to allow it: modprobe tcp_{name} and add {name} to \
                 net.ipv4.tcp_allowed_congestion_control, or set [target] congestion = \"\""
            );
        }
    }
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
    if let Some(name) = opts.congestion.as_deref() {
        set_congestion(&socket, name);
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

#[cfg(test)]
mod tests {
    use super::*;

    async fn congestion_of(wanted: Option<&str>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let opts = ConnectOptions {
            congestion: wanted.map(str::to_owned),
            ..ConnectOptions::default()
        };
        let stream = connect_one(listener.local_addr().unwrap(), &opts)
            .await
            .unwrap();
        let name = SockRef::from(&stream).tcp_congestion().unwrap();
        String::from_utf8_lossy(&name)
            .trim_end_matches('\0')
            .to_owned()
    }

    #[tokio::test]
    async fn the_push_socket_gets_the_congestion_control_asked_for() {
        // reno is built into every Linux kernel and always allowed.
        assert_eq!(congestion_of(Some("reno")).await, "reno");
        // A name the kernel does not have is not an error: the system's default stays.
        let system = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")
            .unwrap()
            .trim()
            .to_owned();
        assert_eq!(congestion_of(Some("nosuchcc")).await, system);
        assert_eq!(congestion_of(None).await, system);
    }

    fn failure(err: rustls::Error) -> String {
        let url = RtmpUrl::parse("rtmps://ingest.example.com:8443/live/key").unwrap();
        handshake_failure(&io::Error::new(io::ErrorKind::InvalidData, err), &url)
    }

    #[test]
    fn certificate_failures_say_what_to_do() {
        use rustls::CertificateError as C;
        let untrusted = failure(rustls::Error::InvalidCertificate(C::UnknownIssuer));
        assert!(untrusted.contains("update-ca-certificates"), "{untrusted}");
        assert!(untrusted.contains("SSL_CERT_FILE"), "{untrusted}");
        let name = failure(rustls::Error::InvalidCertificate(C::NotValidForName));
        assert!(name.contains("\"ingest.example.com\""), "{name}");
        assert!(name.contains("host name"), "{name}");
        let expired = failure(rustls::Error::InvalidCertificate(C::Expired));
        assert!(expired.contains("clock"), "{expired}");
        let not_tls = failure(rustls::Error::InvalidMessage(
            rustls::InvalidMessage::InvalidContentType,
        ));
        assert!(not_tls.contains("port 8443 an RTMPS port"), "{not_tls}");
        let eof = handshake_failure(
            &io::Error::new(io::ErrorKind::UnexpectedEof, "tls handshake eof"),
            &RtmpUrl::parse("rtmps://h/live/key").unwrap(),
        );
        assert!(eof.contains("port 443 an RTMPS port"), "{eof}");
    }
}
