//! The RTMP publisher: pushes the pipeline's [`MediaPacket`](crate::media::MediaPacket)s to an
//! ingest (Polyv's, or nginx-rtmp in tests) over `rml_rtmp` on a tokio `TcpStream`.
//!
//! # Layout
//! - [`url`]: `rtmp://host[:port]/app/stream?query` → app, stream key, tcUrl; masks the key.
//! - [`session`]: the sans-IO session over `rml_rtmp`'s handshake and client session: bytes in,
//!   bytes and events out, a state enum (handshaking → connecting → publishing → closed).
//! - [`driver`]: the tokio side of one connection: socket options, timeouts, [`connect`],
//!   [`Publisher`] with a cancel-safe `send`/`service`/`queue`, `close`, and [`pump`].
//! - [`reconnect`]: the long-running sender, [`run_sender`]: ring → publisher, reconnecting
//!   with backoff, stall detection, fresh addresses after rejections, continuity of headers,
//!   keyframes and timestamps across sessions, clean drain on shutdown; [`SenderControl`] to
//!   watch and steer it.
//! - [`backoff`], `continuity`, `stall`: the sender's pure
//!   parts (the retry schedule, header dedup and restamping, dead-link detection), `now` in.
//! - [`error`]: [`RtmpError`], whose messages say what to do, and its [`Recovery`] class.

pub mod backoff;
mod continuity;
pub mod driver;
pub mod error;
pub mod reconnect;
pub mod session;
mod stall;
pub mod url;

pub use backoff::{Backoff, BackoffConfig, FailureKind, Retry};
pub use driver::{connect, pump, ConnectOptions, Publisher};
pub use error::{Phase, Recovery, RtmpError};
#[cfg(unix)]
pub use reconnect::reconnect_on_sigusr1;
pub use reconnect::{
    run_sender, AddressError, AddressFuture, AddressSource, SenderControl, SenderHooks,
    SenderOptions, SenderState, SenderStats, MAX_STALL_TIMEOUT,
};
pub use session::{Event, Session, SessionConfig, SessionStats, Status};
pub use url::RtmpUrl;
