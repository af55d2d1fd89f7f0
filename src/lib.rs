//! polypush: a headless RTMP push daemon for the Polyv live platform.
//!
//! # Layout
//! The data flow, in order, then what watches and steers it (`docs/ARCHITECTURE.md` draws it):
//!
//! - [`capture`]: libavdevice inputs (v4l2, alsa, lavfi test pattern, looped files) on OS
//!   threads, stamped on one pipeline clock.
//! - [`encode`]: H.264 (libx264, h264_v4l2m2m) and AAC encoders, scaling and resampling, the
//!   capture → encode pipeline, the `[video]`/`[audio]` settings.
//! - [`media`]: the vocabulary between the stages: an [`media::EncodedPacket`] borrowed from
//!   the encoder, the stream parameters, the [`media::MediaPacket`] the muxer makes.
//! - [`flv`]: the pure FLV muxer (headers, a borrowed packet → a tag body in one pass) and FLV
//!   files.
//! - [`health`]: media health: audio levels and the silence, clipping, black, frozen and
//!   low-fps alarms (pure), and `[health]`.
//! - [`ring`]: the bounded packet ring with GOP-aware dropping and queue-delay accounting.
//! - [`record`]: the safety recording on its own thread.
//! - [`rtmp`]: the publisher: a sans-IO session over `rml_rtmp`, the transport and connect
//!   seam, and the reconnecting sender.
//! - [`adapt`]: the pure bitrate controller: link stats in, a target out.
//! - [`platform`]: the Polyv API: the signing schemes (pure), typed requests and replies, one
//!   error enum, a retrying `reqwest` client.
//! - [`broadcast`]: one broadcast, the stages above wired together, and its settings.
//! - [`service`]: the lifecycle: schedule windows, SIGHUP reloads, start and stop of
//!   broadcasts, the status server and systemd.
//! - [`lessons`]: lesson reports: one record per window or manual broadcast (on-air share,
//!   gaps and their causes), the JSON-lines log under the state directory, `polypush lessons`.
//! - [`schedule`]: broadcast windows in IANA time zones (pure), and `polypush schedule`.
//! - [`status`]: the shared snapshot ([`status::StatusHub`]), `/metrics`, `/healthz`,
//!   `/status`, the server, the viewer count, the TTY status line and the stats file.
//! - [`notify`]: sd_notify: READY, STATUS, the watchdog, STOPPING.
//! - [`logging`]: `tracing` to the journal or stderr, with a repeat limiter; `[log]`.
//! - [`config`]: the TOML file: composes every layer's settings, loads them with
//!   file:line:col errors, validates, resolves secrets.
//! - [`secret`]: secrets as newtypes that print `***` ([`secret::Secret`]).
//! - [`setting`]: the error a layer's settings check returns ([`setting::InvalidSetting`]).
//! - [`throttle`]: the one "at most once per interval" throttle for log lines.
//! - [`tls`]: the one TLS trust store (system CAs or `SSL_CERT_FILE`) for RTMPS and the Polyv
//!   API.
//! - [`exit`]: the process exit codes, one type for every command.
//! - [`selftest`]: `polypush selftest`, the preflight that never goes live.
//!
//! The simulator binary (`polyv-sim`, `src/bin/polyv-sim/`) serves the Polyv endpoints on
//! loopback so everything here is tested against a faithful stand-in for Polyv.

#![warn(unreachable_pub)]

pub mod adapt;
pub mod broadcast;
pub mod capture;
pub mod config;
pub mod encode;
pub mod exit;
pub mod flv;
pub mod health;
pub mod lessons;
pub mod logging;
pub mod media;
pub mod notify;
pub mod platform;
pub mod record;
pub mod ring;
pub mod rtmp;
pub mod schedule;
pub mod secret;
pub mod selftest;
pub mod service;
pub mod setting;
pub mod status;
pub mod throttle;
pub mod tls;
