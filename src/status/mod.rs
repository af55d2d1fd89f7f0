//! Watching the daemon: the shared [`StatusHub`], and the HTTP status server over it
//! (the page at `/`, `/metrics`, `/healthz`, `/status`, `/snapshot.jpg`, `POST /reconnect`,
//! `POST /extend`, `/start`, `/stop`).
//!
//! - `hub`: the state the broadcast and the service loop write and everything else reads,
//!   with daemon-wide monotonic counters ([`Totals`]).
//! - [`health`]: the `/healthz` rule, a pure function of a snapshot and "now".
//! - [`metrics`]: the `/metrics` registry (`prometheus-client`), built at scrape time.
//! - `json`: the `/status` document.
//! - `control`: lesson control over HTTP (`POST /extend`, `/start`, `/stop`): a
//!   [`ControlRequest`] to the service loop through the hub.
//! - `server`: the axum server, with the bearer token or the login cookie when a token is set.
//! - `page`: the status page at `/` and the login form: `web/` embedded, Simplified Chinese or
//!   English negotiated from `Accept-Language`, ETags.
//! - `snapshot`: `/snapshot.jpg`'s cache and fetch: the running pipeline's picture (reached
//!   through the hub, [`PictureSource`]), JPEG-encoded off the runtime, at most once a second.
//! - `viewers`: the listUsers poller that fills in the viewer count.
//! - `settings`: `[status]` ([`StatusSettings`]).
//! - [`line`]: the live status line on a terminal; `stats_file`: `--stats-file`, one JSON
//!   line per second; both from the broadcast's snapshot, with `rate`'s [`RateMeter`].

mod control;
mod health;
mod hub;
pub(crate) mod json;
mod line;
pub mod metrics;
mod page;
mod rate;
mod server;
mod settings;
mod snapshot;
mod stats_file;
mod viewers;

pub use control::{describe, ControlReply, ControlRequest};
pub use health::{health, Health};
pub use hub::{
    BroadcastSnapshot, DaemonState, MediaWait, PictureSource, Progress, ScheduleStatus, Snapshot,
    StatusHub, Totals,
};
pub use line::StatusLine;
pub use rate::RateMeter;
pub use server::{serve, StatusError};
pub use settings::{is_loopback, StatusSettings};
pub use stats_file::{StatsFile, StatsFileError};
pub use viewers::spawn_viewer_poller;
