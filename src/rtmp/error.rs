//! The one error type of the RTMP layer, shared by the sans-IO session and the tokio driver.
//!
//! Every message names the ingest (or the masked stream) and says what to do, because these
//! errors end up in the journal of an unattended box. [`RtmpError::is_transient`] is the split
//! the reconnect loop needs: transient errors are retried with backoff on the same push address;
//! the others need a different address (log in again) or a fixed configuration.

use std::io;
use std::time::Duration;

use thiserror::Error;

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
            | RtmpError::Protocol { .. } => true,
            RtmpError::BadUrl { .. }
            | RtmpError::PublishDropped { .. }
            | RtmpError::ConnectRejected { .. }
            | RtmpError::PublishRejected { .. }
            | RtmpError::InvalidState { .. }
            | RtmpError::Encode { .. } => false,
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
}
