//! The RTMP publisher: pushes the pipeline's [`MediaPacket`](crate::media::MediaPacket)s to an
//! ingest (Polyv's, or nginx-rtmp in tests) over `rml_rtmp` on a tokio byte stream.
//!
//! # Layout
//! - `url`: `rtmp://host[:port]/app/stream?query` → app, stream key, tcUrl; masks the key.
//! - `session`: the sans-IO session over `rml_rtmp`'s handshake and client session: bytes in,
//!   bytes and events out, a state enum (handshaking → connecting → publishing → closed).
//! - `transport`: the byte stream ([`Transport`]: TCP, or an in-memory pipe in tests) and the
//!   seam that opens one ([`Connector`], [`TcpConnector`] with the socket options).
//! - `publisher`: one connection driven through the session: [`connect`], [`Publisher`] with
//!   a cancel-safe `send`/`service`/`queue`, `close`, [`pump`], and [`probe`] (no publish).
//! - `sender`: the long-running sender, [`run_sender`]: ring → publisher, reconnecting with
//!   backoff, stall detection, fresh addresses after rejections, continuity of headers,
//!   keyframes and timestamps across sessions, clean drain on shutdown; [`SenderControl`] to
//!   watch and steer it.
//! - `backoff`, `continuity`, `stall`: the sender's pure parts (the retry schedule, header
//!   dedup and restamping, dead-link detection), `now` in.
//! - `error`: [`RtmpError`], whose messages say what to do, and its [`Recovery`] class.

mod backoff;
mod continuity;
mod error;
mod publisher;
mod sender;
mod session;
mod stall;
mod transport;
mod url;

pub use backoff::{Backoff, BackoffConfig, FailureKind, Retry};
pub use error::{Phase, Recovery, RtmpError};
pub use publisher::{connect, probe, pump, ProbeReport, Publisher};
#[cfg(unix)]
pub use sender::reconnect_on_sigusr1;
pub use sender::{
    run_sender, AddressCause, AddressClass, AddressError, AddressFuture, AddressSource, Refusal,
    SenderControl, SenderHooks, SenderOptions, SenderParts, SenderPhase, SenderState, SenderStats,
    MAX_STALL_TIMEOUT, PLATFORM_RETRY_CAP,
};
pub use session::{Event, Session, SessionConfig, SessionStats, Status};
pub use transport::{
    ConnectFuture, ConnectOptions, Connection, Connector, TcpConnector, Transport,
};
pub use url::RtmpUrl;
