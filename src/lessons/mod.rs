//! Lesson reports: which lessons made it to air, and why the others did not.
//!
//! One record per schedule window or manual broadcast (one outside any window, or with no
//! schedule): the planned window against the time on air (publishing), the share of the window
//! on air, each gap (not publishing while the lesson should be on air) with its start, end and
//! cause ([`Cause`]: uplink, ingest, platform, device, starting, failed, off), reconnects,
//! drops, the media alarms raised, and the safety-recording segments that cover each gap.
//!
//! - [`recorder`]: pure: observations with the time passed in, a [`Lesson`] out when one ends.
//! - [`store`]: the JSON-lines log under the state directory (`lessons.jsonl`), rotated.
//! - `report`: `polypush lessons` (table or JSON lines, `--since`).
//! - `settings`: `[service]` (`state_dir`, `lessons_max_bytes`).
//!
//! The service's hook (`service/lessons.rs`) is a task that watches the status hub (every
//! change, and every second), feeds the recorder on the service's wall clock, appends each
//! lesson that ends, lists the recordings over its gaps, and shows the last one and the one
//! under way in the hub (`/status` `lessons`, the metric `polypush_last_lesson_on_air_ratio`);
//! it closes the lesson open at a clean stop.

pub mod recorder;
mod report;
pub mod store;

mod settings;

pub use recorder::{Cause, Counters, Drops, Gap, Lesson, Observation, Planned, Recorder, Segment};
pub use report::{parse_since, render};
pub use settings::ServiceSettings;
pub use store::LessonLog;

use std::time::SystemTime;

/// The box's time zone (TZ, else /etc/localtime; UTC when neither says).
pub fn local_zone() -> jiff::tz::TimeZone {
    jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC)
}

/// [`parse_since`] in the box's time zone (for the command line).
pub fn parse_since_local(s: &str) -> Result<SystemTime, String> {
    parse_since(s, &local_zone())
}

/// What the hub shows of the lesson log.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LessonsStatus {
    /// Lessons in the log (all its files).
    pub count: u64,
    /// The last lesson that ended.
    pub last: Option<Lesson>,
    /// The lesson under way, as it stands (its window up to now).
    pub current: Option<Lesson>,
}

/// RFC 3339 (UTC, milliseconds) for the lesson records.
pub(crate) mod ts {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn format(t: SystemTime) -> String {
        let ms = match t.duration_since(SystemTime::UNIX_EPOCH) {
            Ok(d) => d.as_millis() as i64,
            Err(e) => -(e.duration().as_millis() as i64),
        };
        jiff::Timestamp::from_millisecond(ms)
            .map(|t| t.to_string())
            .unwrap_or_default()
    }

    pub(crate) fn parse(s: &str) -> Result<SystemTime, String> {
        s.parse::<jiff::Timestamp>()
            .map(SystemTime::from)
            .map_err(|e| format!("{s:?}: {e}"))
    }

    pub(crate) fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(serde::de::Error::custom)
    }
}

/// [`ts`] for an optional time (`null`).
pub(crate) mod ts_opt {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::SystemTime;

    pub(crate) fn serialize<S: Serializer>(
        t: &Option<SystemTime>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&super::ts::format(*t)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<SystemTime>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| super::ts::parse(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests;
