//! `[[schedule]]` as written in the file: one entry per window rule. The schedule layer owns
//! this shape and reads it ([`super::Schedule::from_config`]); `config` composes it into the
//! file's serde tree.

use serde::{Deserialize, Serialize};

/// One `[[schedule]]` window: weekly (`days`) or one-off (`date`), from `start` to `end`
/// wall-clock time in `timezone` (the box's own zone when absent). An `end` that is not after
/// `start` is on the next day.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleEntry {
    /// Weekdays of a weekly window: "mon".."sun" (or "monday".."sunday"), case-insensitive,
    /// and the shorthands "weekdays" (mon-fri), "weekend" (sat, sun) and "daily".
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<String>,
    /// A one-off window's date, "YYYY-MM-DD" (the day `start` is on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Start time, "HH:MM" (24-hour clock; "HH:MM:SS" is accepted too).
    pub start: String,
    /// End time, "HH:MM"; not after `start` (or "24:00") means the next day.
    pub end: String,
    /// IANA time zone such as "Asia/Shanghai"; the box's own (TZ, /etc/localtime) when absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What the window is, for logs, `polypush schedule` and the rename template's `{title}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Rename the channel when the window opens, from a template such as "{title} {date}":
    /// `{title}`, `{date}` (YYYY-MM-DD), `{start}` and `{end}` (HH:MM), in the window's zone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rename: Option<String>,
    /// Start the broadcast this many seconds before `start` (0-3600, default 0), so the
    /// stream is up and stable when the lesson begins. The window still ends at `end`.
    #[serde(skip_serializing_if = "is_zero")]
    pub lead_s: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}
