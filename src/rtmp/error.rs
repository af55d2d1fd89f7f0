//! The one error type of the RTMP layer, shared by the sans-IO session and the tokio driver.
//!
//! Every message names the ingest (or the masked stream) and says what to do, because these
//! errors end up in the journal of an unattended box. Two classifications serve two readers:
//! [`RtmpError::recovery`] tells the reconnect loop ([`super::sender`]) what to do next (retry
//! the same address, ask for a fresh one, or stop), and [`RtmpError::is_transient`] tells the CLI
//! which exit code family an error that ended the run belongs to (network vs. rejected).

use std::io;
use std::time::Duration;

use thiserror::Error;

use super::sender::AddressError;
use crate::exit::ExitCode;

/// Where in the life of a connection something happened; part of the error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Phase {
    /// Resolving the host and opening the TCP connection.
    Tcp,
    /// The RTMP C0/C1/C2 handshake.
    Handshake,
    /// `connect` to the application (and waiting for `_result`).
    Connect,
    /// `createStream` + `publish` (and waiting for `NetStream.Publish.Start`).
    Publish,
    /// Publishing media.
    Streaming,
    /// `deleteStream` and closing.
    Closing,
}

impl Phase {
    fn describe(self) -> &'static str {
        match self {
            Phase::Tcp => "while opening the TCP connection",
            Phase::Handshake => "during the RTMP handshake",
            Phase::Connect => "while connecting to the RTMP application",
            Phase::Publish => "while requesting to publish",
            Phase::Streaming => "while publishing",
            Phase::Closing => "while closing the stream",
        }
    }

    /// What an operator can check when the peer hangs up in this phase.
    fn closed_hint(self) -> &'static str {
        match self {
            Phase::Tcp | Phase::Handshake => {
                "is that port an RTMP server (not RTMPS or HTTP), and is it overloaded?"
            }
            Phase::Connect => {
                "check the application part of the push address (nginx-rtmp drops unknown applications)"
            }
            Phase::Publish => "check the stream key; log in again for a fresh push address",
            Phase::Streaming => "the ingest restarted or dropped the stream; reconnecting may help",
            Phase::Closing => "the stream was already over",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.describe())
    }
}

#[derive(Debug, Error)]
pub enum RtmpError {
    /// The push address is not something we can publish to. `url` is already masked.
    #[error(
        "invalid push address {url}: {reason}; a valid one looks like \
         rtmp://host[:port]/app/stream-key (Polyv: rtmp://push2.videocc.net/recordfe/<stream>?auth_key=...)"
    )]
    BadUrl { url: String, reason: String },

    #[error("could not resolve ingest host {host}: {source}: check the push address and the DNS settings of this box")]
    Resolve {
        host: String,
        #[source]
        source: io::Error,
    },

    #[error(
        "ingest {addr} refused the connection: is the RTMP server running and the port right?"
    )]
    Refused { addr: String },

    #[error("ingest {addr} did not answer within {after:?} {phase}: check the network path to the ingest (firewall, proxy, uplink)")]
    Timeout {
        addr: String,
        phase: Phase,
        after: Duration,
    },

    #[error("ingest {addr} accepted no data for {after:?} while publishing: the uplink is too slow or the connection is dead")]
    Stalled { addr: String, after: Duration },

    #[error("ingest {addr} closed the connection {phase}: {hint}", hint = phase.closed_hint())]
    Closed { addr: String, phase: Phase },

    /// The ingest hung up in answer to `publish` without a status: nginx-rtmp's `deny publish`
    /// and many CDNs reject an unauthorised or expired key this way.
    #[error(
        "ingest {addr} closed the connection when asked to publish stream {stream}: it most likely \
         refused the stream key without saying why; check the key, or log in again for a fresh push address"
    )]
    PublishDropped { addr: String, stream: String },

    /// The TLS handshake of an `rtmps://` address failed (the certificate, most often).
    #[error("TLS with ingest {addr} failed: {reason}")]
    Tls { addr: String, reason: String },

    #[error("network error with ingest {addr} {phase}: {source}")]
    Io {
        addr: String,
        phase: Phase,
        #[source]
        source: io::Error,
    },

    /// The ingest answered with bytes that are not RTMP, or RTMP we cannot follow.
    #[error("the ingest sent invalid RTMP {phase} ({detail}): is the push address an RTMP (not RTMPS/HTTP) endpoint?")]
    Protocol { phase: Phase, detail: String },

    #[error(
        "ingest rejected connecting to application {app:?} ({code}: {description}): check the \
         application part of the push address, or log in again for a fresh push address"
    )]
    ConnectRejected {
        app: String,
        code: String,
        description: String,
    },

    /// `stream` is masked.
    #[error(
        "ingest rejected publishing stream {stream} ({code}: {description}): the stream key may be \
         in use or wrong; log in again for a fresh push address"
    )]
    PublishRejected {
        stream: String,
        code: String,
        description: String,
    },

    /// A call the session cannot honour in its current state: a bug in the caller.
    #[error("cannot {op} {phase}: this is a bug in polypush, please report it")]
    InvalidState { op: &'static str, phase: Phase },

    /// `rml_rtmp` could not serialize something we asked it to send.
    #[error(
        "could not encode an RTMP message ({detail}): this is a bug in polypush, please report it"
    )]
    Encode { detail: String },

    /// The push address source (Polyv login, or configuration) failed in a way retrying cannot
    /// fix; the cause's own message says what to do.
    #[error("cannot get a push address: {0}")]
    Address(#[source] AddressError),

    /// `backoff.max_attempts` consecutive attempts failed; `last` is the last failure.
    #[error("gave up after {attempts} failed attempts to publish (the configured maximum); the last one: {last}")]
    GaveUp {
        attempts: u32,
        #[source]
        last: Box<RtmpError>,
    },
}

/// What the reconnect loop does after an error; see [`RtmpError::recovery`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recovery {
    /// Try the same address again after a backoff: the network or the ingest had trouble.
    Retry,
    /// The ingest refused this address (key, application): ask the address source for a fresh
    /// one (Polyv: log in again), then retry after a backoff.
    FreshAddress,
    /// Retrying cannot help; the run ends with this error.
    Fatal,
}

impl RtmpError {
    /// True when retrying the same push address later may work (network trouble, an ingest
    /// restarting); false when it needs a different address, key or configuration.
    pub fn is_transient(&self) -> bool {
        match self {
            RtmpError::Resolve { .. }
            | RtmpError::Refused { .. }
            | RtmpError::Timeout { .. }
            | RtmpError::Stalled { .. }
            | RtmpError::Closed { .. }
            | RtmpError::Io { .. }
            | RtmpError::Protocol { .. }
            | RtmpError::Tls { .. }
            | RtmpError::GaveUp { .. } => true,
            RtmpError::BadUrl { .. }
            | RtmpError::Address(_)
            | RtmpError::PublishDropped { .. }
            | RtmpError::ConnectRejected { .. }
            | RtmpError::PublishRejected { .. }
            | RtmpError::InvalidState { .. }
            | RtmpError::Encode { .. } => false,
        }
    }

    /// The exit code of a run this error ended: a bad address is a configuration problem,
    /// network trouble unavailable, anything the ingest refused refused.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RtmpError::BadUrl { .. } => ExitCode::Config,
            RtmpError::Address(e) => e.exit_code(),
            e if e.is_transient() => ExitCode::Unavailable,
            _ => ExitCode::Refused,
        }
    }

    /// What a long-running sender does about this error. Unlike [`RtmpError::is_transient`],
    /// a bug that broke one session (`InvalidState`, `Encode`) is retried: a fresh session
    /// starts from a clean state, and an unattended box is better off streaming again than
    /// exiting. Rejections ask for a fresh address because Polyv may have moved the stream.
    pub fn recovery(&self) -> Recovery {
        match self {
            RtmpError::Resolve { .. }
            | RtmpError::Refused { .. }
            | RtmpError::Timeout { .. }
            | RtmpError::Stalled { .. }
            | RtmpError::Closed { .. }
            | RtmpError::Io { .. }
            | RtmpError::Protocol { .. }
            | RtmpError::Tls { .. }
            | RtmpError::InvalidState { .. }
            | RtmpError::Encode { .. } => Recovery::Retry,
            RtmpError::PublishDropped { .. }
            | RtmpError::ConnectRejected { .. }
            | RtmpError::PublishRejected { .. } => Recovery::FreshAddress,
            RtmpError::BadUrl { .. } | RtmpError::Address(_) | RtmpError::GaveUp { .. } => {
                Recovery::Fatal
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_to_do() {
        let e = RtmpError::Refused {
            addr: "127.0.0.1:1935".into(),
        };
        assert_eq!(
            e.to_string(),
            "ingest 127.0.0.1:1935 refused the connection: is the RTMP server running and the port right?"
        );
        assert!(e.is_transient());

        let e = RtmpError::PublishRejected {
            stream: "16ad***".into(),
            code: "NetStream.Publish.BadName".into(),
            description: "Already publishing".into(),
        };
        assert_eq!(
            e.to_string(),
            "ingest rejected publishing stream 16ad*** (NetStream.Publish.BadName: Already publishing): \
             the stream key may be in use or wrong; log in again for a fresh push address"
        );
        assert!(!e.is_transient());

        let e = RtmpError::Closed {
            addr: "h:1".into(),
            phase: Phase::Connect,
        };
        assert!(e.to_string().contains("application part"), "{e}");
    }

    #[test]
    fn recovery_classes() {
        let stalled = RtmpError::Stalled {
            addr: "h:1".into(),
            after: Duration::from_secs(10),
        };
        assert_eq!(stalled.recovery(), Recovery::Retry);
        let dropped = RtmpError::PublishDropped {
            addr: "h:1".into(),
            stream: "k***".into(),
        };
        assert_eq!(dropped.recovery(), Recovery::FreshAddress);
        let bug = RtmpError::Encode {
            detail: "too long".into(),
        };
        assert_eq!(bug.recovery(), Recovery::Retry);
        assert!(!bug.is_transient());
        let address = RtmpError::Address(AddressError::new(
            crate::rtmp::AddressClass::BadConfig,
            "config",
            std::io::Error::other("no password"),
        ));
        assert_eq!(address.recovery(), Recovery::Fatal);
        assert!(!address.is_transient());
        let gave_up = RtmpError::GaveUp {
            attempts: 3,
            last: Box::new(stalled),
        };
        assert_eq!(gave_up.recovery(), Recovery::Fatal);
        // Exit code family "network": the operator limited the attempts.
        assert!(gave_up.is_transient());
        assert!(
            gave_up.to_string().contains("accepted no data"),
            "{gave_up}"
        );
    }
}
