//! polypush: a headless RTMP push daemon for the Polyv live platform.
//!
//! # Layout
//! - [`config`]: the TOML configuration: serde structs (`deny_unknown_fields`), defaults,
//!   loading with file/line/column errors, `validate()`, secrets as redacting newtypes.
//! - [`platform`]: the Polyv API: the three signing schemes (pure), typed requests and
//!   replies, one error enum that says what to do, and a retrying `reqwest` client.
//!
//! The simulator binary (`polyv-sim`, `src/bin/polyv-sim/`) serves the Polyv endpoints on
//! loopback so everything here is tested against a faithful stand-in for Polyv.

pub mod config;
pub mod platform;
