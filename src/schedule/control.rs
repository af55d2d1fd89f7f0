//! Lesson control: an [`Override`] on top of the schedule, and what broadcasts as a result
//! ([`Effective`]). Pure: the time is passed in; the service keeps the override on disk
//! ([`encode`], [`decode`]).
//!
//! - **Extend** by M minutes (1-[`MAX_EXTEND_MINUTES`]): whatever is on now (a window, an
//!   extension, a start-now) ends M minutes later. Refused when nothing is on (start now
//!   instead), and when the new end would be more than [`MAX_AHEAD`] (8 h) from now.
//! - **Start now**: broadcast from now until the next window opens (the window then carries
//!   on to its own end), or for [`MAX_AHEAD`] when no window opens within that; stop now ends
//!   it sooner. Inside a window that was stopped, it resumes the window. Refused when already
//!   on (extend instead).
//! - **Stop now**: no broadcast until the next window opens (when no window is ahead, until
//!   the one on now would have ended). Refused when nothing is on.
//!
//! One override at a time: a new one replaces the old. It ends at `until`; from then the
//! schedule alone decides (an override is never "active" after `until`). With no
//! `[[schedule]]` (always on) there is nothing to override and all three are refused.

use super::{Schedule, Window};
use std::time::{Duration, SystemTime};

/// An override reaches at most this far ahead (extend, start now): 8 hours.
pub const MAX_AHEAD: Duration = Duration::from_secs(8 * 3600);
/// The most one extend may add: 8 hours, in minutes.
pub const MAX_EXTEND_MINUTES: u32 = 480;

/// What an override does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverrideKind {
    /// On beyond the window's end.
    Extend,
    /// On outside the schedule.
    StartNow,
    /// Off until the next window.
    StopNow,
}

impl OverrideKind {
    /// A stable label: `extend`, `start_now`, `stop_now`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extend => "extend",
            Self::StartNow => "start_now",
            Self::StopNow => "stop_now",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [Self::Extend, Self::StartNow, Self::StopNow]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// An operator's override of the schedule, in force until `until`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    pub kind: OverrideKind,
    /// When it ends; from then the schedule alone decides.
    pub until: SystemTime,
    /// When it was set.
    pub set_at: SystemTime,
    /// Who set it: `cli`, `page`, `api` (a program with the bearer token).
    pub by: String,
}

impl Override {
    /// In force at `now`.
    pub fn active(&self, now: SystemTime) -> bool {
        now < self.until
    }
}

/// What an operator asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlAction {
    Extend { minutes: u32 },
    StartNow,
    StopNow,
}

impl ControlAction {
    /// `extend`, `start_now`, `stop_now`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Extend { .. } => "extend",
            Self::StartNow => "start_now",
            Self::StopNow => "stop_now",
        }
    }
}

/// Why the broadcast is on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// No `[[schedule]]`: always on.
    Unscheduled,
    /// A schedule window (its lead included).
    Schedule,
    /// On past the window's end: extend.
    Extended,
    /// On outside the schedule: start now.
    StartedNow,
    /// Off inside (or after) a window: stop now.
    StoppedNow,
    /// Off: outside every window.
    Idle,
}

impl Why {
    /// `unscheduled`, `schedule`, `extended`, `started_now`, `stopped_now`, `idle`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unscheduled => "unscheduled",
            Self::Schedule => "schedule",
            Self::Extended => "extended",
            Self::StartedNow => "started_now",
            Self::StoppedNow => "stopped_now",
            Self::Idle => "idle",
        }
    }
}

/// The schedule with the override applied, at one instant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    /// A broadcast should run.
    pub on: bool,
    pub why: Why,
    /// While on: when it ends (`None` without a schedule). Where an override ends inside a
    /// window, that window's end.
    pub end: Option<SystemTime>,
    /// The scheduled window open now (lead included), whatever the override says.
    pub window: Option<Window>,
    /// The override in force, if any (one past its `until` is not).
    pub control: Option<Override>,
}

/// Why an override was refused; every message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    #[error("no [[schedule]] is configured: the broadcast runs all the time, so there is nothing to {0}; add [[schedule]] windows, or stop the service (systemctl stop polypush)")]
    NoSchedule(&'static str),
    #[error("{}", nothing_open(*stopped, *next))]
    NothingOpen {
        /// Off because of a stop now (not merely outside the windows).
        stopped: bool,
        next: Option<SystemTime>,
    },
    #[error("already broadcasting{}: extend it instead to make it longer", until_text(*end))]
    AlreadyOn { end: Option<SystemTime> },
    #[error("nothing is broadcasting{}", next_text(*next))]
    AlreadyOff { next: Option<SystemTime> },
    #[error("{0} minutes: extend by 1 to {MAX_EXTEND_MINUTES} minutes")]
    Minutes(u32),
    #[error("extending by {minutes} minutes would end at {}, more than 8 h from now: extend by at most {most} minutes", local(*end))]
    TooFar {
        minutes: u32,
        end: SystemTime,
        most: u64,
    },
}

fn nothing_open(stopped: bool, next: Option<SystemTime>) -> String {
    if stopped {
        format!(
            "the broadcast was stopped with stop now{}: use start now to broadcast again, then extend",
            next_text(next)
        )
    } else {
        format!(
            "no window is open now{}: use start now (`polypush start-now`, POST /start) to broadcast outside the schedule",
            next_text(next)
        )
    }
}

fn next_text(next: Option<SystemTime>) -> String {
    next.map(|t| format!("; the next window opens {}", local(t)))
        .unwrap_or_default()
}

fn until_text(end: Option<SystemTime>) -> String {
    end.map(|t| format!(" until {}", local(t)))
        .unwrap_or_default()
}

/// "2030-03-04 09:00:00 CST", in the box's zone.
pub(super) fn local(t: SystemTime) -> String {
    let tz = super::rule::local_zone().0;
    jiff::Timestamp::try_from(t)
        .map(|ts| ts.to_zoned(tz).strftime("%Y-%m-%d %H:%M:%S %Z").to_string())
        .unwrap_or_else(|_| "?".into())
}

/// What broadcasts at `now`: the schedule, with `ov` applied if it is in force.
pub fn effective(schedule: &Schedule, ov: Option<&Override>, now: SystemTime) -> Effective {
    if schedule.is_empty() {
        return Effective {
            on: true,
            why: Why::Unscheduled,
            end: None,
            window: None,
            control: None,
        };
    }
    let window = schedule.current(now);
    let control = ov.filter(|o| o.active(now)).cloned();
    let (on, why, end) = match &control {
        Some(o) if o.kind == OverrideKind::StopNow => (false, Why::StoppedNow, None),
        Some(o) => match &window {
            Some(w) if w.end >= o.until => (true, Why::Schedule, Some(w.end)),
            _ => {
                // A window open when the override ends carries on: one stretch on air.
                let end = schedule.current(o.until).map_or(o.until, |w| w.end);
                let why = match o.kind {
                    OverrideKind::StartNow => Why::StartedNow,
                    _ => Why::Extended,
                };
                (true, why, Some(end))
            }
        },
        None => match &window {
            Some(w) => (true, Why::Schedule, Some(w.end)),
            None => (false, Why::Idle, None),
        },
    };
    Effective {
        on,
        why,
        end,
        window,
        control,
    }
}

/// The override `action` sets at `now`, over `current` (replaced). `Ok(None)`: back to the
/// schedule alone (start now inside a window that was stopped).
pub fn apply(
    schedule: &Schedule,
    current: Option<&Override>,
    action: ControlAction,
    now: SystemTime,
    by: &str,
) -> Result<Option<Override>, ControlError> {
    if schedule.is_empty() {
        return Err(ControlError::NoSchedule(match action {
            ControlAction::Extend { .. } => "extend",
            ControlAction::StartNow => "start",
            ControlAction::StopNow => "stop",
        }));
    }
    let eff = effective(schedule, current, now);
    let next_opens = || schedule.upcoming(now, 1).first().map(|w| w.opens);
    let make = |kind, until| {
        Some(Override {
            kind,
            until,
            set_at: now,
            by: by.to_string(),
        })
    };
    match action {
        ControlAction::Extend { minutes } => {
            if minutes == 0 || minutes > MAX_EXTEND_MINUTES {
                return Err(ControlError::Minutes(minutes));
            }
            let Some(end) = eff.end.filter(|_| eff.on) else {
                return Err(ControlError::NothingOpen {
                    stopped: eff.why == Why::StoppedNow,
                    next: eff.control.as_ref().map(|o| o.until).or_else(next_opens),
                });
            };
            let new_end = end + Duration::from_secs(u64::from(minutes) * 60);
            let limit = now + MAX_AHEAD;
            if new_end > limit {
                return Err(ControlError::TooFar {
                    minutes,
                    end: new_end,
                    most: limit.duration_since(end).unwrap_or_default().as_secs() / 60,
                });
            }
            // A manual broadcast made longer is still a manual broadcast.
            let kind = if eff.why == Why::StartedNow {
                OverrideKind::StartNow
            } else {
                OverrideKind::Extend
            };
            Ok(make(kind, new_end))
        }
        ControlAction::StartNow => {
            if eff.on {
                return Err(ControlError::AlreadyOn { end: eff.end });
            }
            if eff.window.is_some() {
                return Ok(None); // stopped inside a window: the window resumes
            }
            let limit = now + MAX_AHEAD;
            let until = next_opens().filter(|t| *t <= limit).unwrap_or(limit);
            Ok(make(OverrideKind::StartNow, until))
        }
        ControlAction::StopNow => {
            if !eff.on {
                return Err(ControlError::AlreadyOff {
                    next: eff.control.as_ref().map(|o| o.until).or_else(next_opens),
                });
            }
            // The windows that open after now: the one open now is not among them.
            let until = next_opens()
                .or(eff.end)
                .unwrap_or(now + MAX_AHEAD)
                .max(now + Duration::from_secs(1));
            Ok(make(OverrideKind::StopNow, until))
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    jiff::Timestamp::try_from(t)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// The state file's text (the service keeps it, so an override survives a restart):
/// `{"version":1,"kind":…,"until":…,"set_at":…,"by":…}`, RFC 3339 UTC.
pub fn encode(o: &Override) -> String {
    let v = serde_json::json!({
        "version": 1,
        "kind": o.kind.as_str(),
        "until": rfc3339(o.until),
        "set_at": rfc3339(o.set_at),
        "by": o.by,
    });
    let mut s = serde_json::to_string_pretty(&v).unwrap_or_default();
    s.push('\n');
    s
}

/// Reads what [`encode`] wrote; the reason when it cannot.
pub fn decode(text: &str) -> Result<Override, String> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    if v["version"] != 1 {
        return Err(format!("unknown version {}", v["version"]));
    }
    let time = |k: &str| {
        v[k].as_str()
            .and_then(|s| s.parse::<jiff::Timestamp>().ok())
            .map(SystemTime::from)
            .ok_or_else(|| format!("{k} is not an RFC 3339 instant"))
    };
    let kind = v["kind"]
        .as_str()
        .and_then(OverrideKind::parse)
        .ok_or("kind is not extend, start_now or stop_now")?;
    Ok(Override {
        kind,
        until: time("until")?,
        set_at: time("set_at")?,
        by: v["by"].as_str().unwrap_or("").to_string(),
    })
}

#[cfg(test)]
mod tests;
