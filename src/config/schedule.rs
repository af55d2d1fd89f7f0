//! `[[schedule]]`: broadcast windows. (Owned by the schedule work; see `crate::schedule`.)

use serde::{Deserialize, Serialize};

/// One `[[schedule]]` window, weekly (`days`) or one-off (`date`).
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleEntry {
    /// Weekdays for a weekly window: "mon".."sun".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// A one-off window's date, "YYYY-MM-DD".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Start time, "HH:MM".
    pub start: String,
    /// End time, "HH:MM".
    pub end: String,
    /// IANA time zone; the box's own when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Title for the rename template's `{title}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Rename the channel when the window opens, from a template such as "{title} {date}".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
}
