//! polypush: a headless RTMP push daemon for the Polyv live platform.
//!
//! # Layout
//! - [`config`]: the TOML configuration: serde structs (`deny_unknown_fields`), defaults,
//!   loading with file/line/column errors, `validate()`, secrets as redacting newtypes.
//! - [`platform`]: the Polyv API: the three signing schemes (pure), typed requests and
//!   replies, one error enum that says what to do, and a retrying `reqwest` client.
//! - [`media`]: the packet type that flows from the encoders through the ring to the sender.
//! - [`capture`]: libavdevice inputs (v4l2, alsa, lavfi test pattern, looped files) on OS threads.
//! - [`encode`]: H.264 (libx264, h264_v4l2m2m) and AAC encoders, scaling and resampling.
//! - [`flv`]: the pure FLV packetizer (metadata, sequence headers, NALU rewriting).
//! - [`ring`]: the bounded packet ring with GOP-aware dropping and queue-delay accounting.
//! - [`rtmp`]: the RTMP publisher: a sans-IO session over `rml_rtmp` and its tokio driver.
//!
//! The simulator binary (`polyv-sim`, `src/bin/polyv-sim/`) serves the Polyv endpoints on
//! loopback so everything here is tested against a faithful stand-in for Polyv.

pub mod adapt;
pub mod capture;
pub mod config;
pub mod daemon;
pub mod encode;
pub mod flv;
pub mod logging;
pub mod media;
pub mod notify;
pub mod platform;
pub mod record;
pub mod ring;
pub mod rtmp;
pub mod schedule;
pub mod selftest;
pub mod status;
pub mod supervisor;
