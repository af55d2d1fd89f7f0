//! The RTMP publisher: pushes the pipeline's [`MediaPacket`](crate::media::MediaPacket)s to an
//! ingest (Polyv's, or nginx-rtmp in tests) over `rml_rtmp` on a tokio `TcpStream`.
//!
//! # Layout
//! - [`url`]: `rtmp://host[:port]/app/stream?query` → app, stream key, tcUrl; masks the key.
//! - [`session`]: the sans-IO session over `rml_rtmp`'s handshake and client session: bytes in,
//!   bytes and events out, a state enum (handshaking → connecting → publishing → closed).
//! - [`driver`]: the tokio side: socket options, timeouts, [`connect`], [`Publisher`] with a
//!   cancel-safe `send`/`service`, `close`, and the [`pump`] helper.
//! - [`error`]: [`RtmpError`], whose messages say what to do and which knows what is transient.
//!
//! Reconnecting with backoff sits on top of this (a later change): a [`Publisher`] is one
//! connection, and [`RtmpError::is_transient`] tells a retry loop whether the same push address
//! is worth another try.

pub mod driver;
pub mod error;
pub mod session;
pub mod url;

pub use driver::{connect, pump, ConnectOptions, Publisher};
pub use error::{Phase, RtmpError};
pub use session::{Event, Session, SessionConfig, SessionStats, Status};
pub use url::RtmpUrl;
