//! Watching the daemon: the shared [`StatusHub`], and the HTTP status server over it
//! (`/metrics`, `/healthz`, `/status`, `POST /reconnect`).
//!
//! - [`hub`]: the state the supervisor and the schedule loop write and everything else reads,
//!   with daemon-wide monotonic counters ([`Totals`]).
//! - [`health`]: the `/healthz` rule, a pure function of a snapshot and "now".
//! - [`metrics`]: the `/metrics` registry (`prometheus-client`), built at scrape time.
//! - [`json`]: the `/status` document.
//! - [`server`]: the axum server, bearer-token check included.
//! - [`viewers`]: the listUsers poller that fills in the viewer count.

pub mod health;
pub mod hub;
pub mod json;
pub mod metrics;
pub mod server;
pub mod viewers;

pub use health::{health, Health};
pub use hub::{
    BroadcastSnapshot, DaemonState, Progress, ScheduleStatus, Snapshot, StatusHub, Totals,
};
pub use server::{serve, StatusError};
pub use viewers::spawn_viewer_poller;
