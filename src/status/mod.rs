//! Watching the daemon: the shared [`StatusHub`], and the HTTP status server over it
//! (`/metrics`, `/healthz`, `/status`, `POST /reconnect`).

pub mod hub;

pub use hub::{BroadcastSnapshot, DaemonState, Progress, ScheduleStatus, Snapshot, StatusHub};
