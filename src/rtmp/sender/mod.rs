//! The long-running sender: takes packets from the [`Ring`](crate::ring::Ring) and keeps them
//! flowing to the ingest for as long as the broadcast lasts, across ingest restarts, dead
//! links, rejected keys and platform trouble. It owns the decisions *whether, when and where*
//! to connect again; one connection is a [`Publisher`](super::Publisher).
//!
//! # Layout
//! - `control`: what goes in and out ([`AddressSource`], [`SenderOptions`], [`SenderState`],
//!   [`SenderStats`], [`SenderControl`], [`SenderHooks`]).
//! - `core`: the decisions, sans-IO, `now` in (tokio's clock).
//! - `run`: the tokio loop, [`run_sender`], over a [`Connector`](super::Connector) seam.
//!
//! # What happens when
//! | what went wrong | class ([`RtmpError::recovery`](super::RtmpError::recovery)) | what the sender does |
//! |---|---|---|
//! | refused, reset, timeout, stall, garbage, a session bug | retry | same address again after a backoff (fast while the ingest restarts) |
//! | publish rejected or dropped, connect rejected | fresh address | ask the [`AddressSource`] for a *fresh* address (Polyv: log in again), back off, never fast |
//! | the source says an operator must act ([`AddressClass::OperatorMustAct`]) | — | retry every `credentials_retry` (300 s); one ERROR per change, state [`SenderState::CredentialsRejected`] |
//! | the source says try later, or cannot reach the platform | — | log in again, with backoff: first retry within 0.5 s, never fast, at most [`PLATFORM_RETRY_CAP`] (60 s) apart, not before the platform's `retry_after`; the refusal in the state |
//! | a bad push address, [`AddressClass::BadConfig`] | fatal | [`run_sender`] returns the error; the CLI exits with a configuration code that systemd does not restart on |
//! | `max_attempts` consecutive failures (unlimited by default) | — | [`run_sender`] returns `RtmpError::GaveUp` (a network-class error) |
//!
//! The schedule is [`Backoff`](super::Backoff) (full jitter, a fast-retry window, reset after a
//! healthy session); "reconnect now" ([`SenderControl::reconnect_now`], SIGUSR1 through
//! [`reconnect_on_sigusr1`]) resets it, closes the current session if there is one, and asks
//! for a fresh address at once: an operator uses it when the ingest moved.
//!
//! A dead link is found by the publisher's connect and setup timeouts, TCP keepalive, and a
//! stall detector (`rtmp/stall.rs`): the bytes the peer's TCP acknowledged (and its RTMP acks)
//! stop moving for `stall_timeout` while bytes are waiting. The sender pops from the ring only
//! while the publisher's own queue is small, so media waits in the ring (bounded, GOP-aware
//! drops) rather than in our buffers, and the kernel's share is bounded by `SO_SNDBUF`.
//!
//! # What the ingest sees across a reconnect
//! Every session is a new RTMP connection and `publish`, and starts like a fresh stream:
//! metadata and sequence headers first (`Ring::headers`), then video from a keyframe (the
//! encoder is asked for one through [`SenderHooks::request_keyframe`] and
//! `Ring::skip_to_keyframe` drops the queued frames before it). Timestamps come from the
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
//! 10 minutes); ERROR only when an operator must act, once per change. Never per packet. The
//! stream key never appears: [`RtmpUrl`](super::RtmpUrl)'s `Display` masks it.

mod control;
mod core;
mod run;

#[cfg(unix)]
pub use control::reconnect_on_sigusr1;
pub use control::{
    AddressCause, AddressClass, AddressError, AddressFuture, AddressSource, Refusal, SenderControl,
    SenderHooks, SenderOptions, SenderPhase, SenderState, SenderStats, MAX_STALL_TIMEOUT,
    PLATFORM_RETRY_CAP,
};
pub use run::{run_sender, SenderParts};
