//! Broadcast schedules: the `[[schedule]]` windows, as instants.
//!
//! The daemon asks two questions, with the time passed in (tests inject it; nothing here reads
//! the clock): [`Schedule::current`], the window that contains now, and
//! [`Schedule::upcoming`], the next windows that start after now. No entry at all
//! ([`Schedule::is_empty`]) means no schedule: stream all the time.
//!
//! # The rules
//! - **Weekly** entries (`days = ["mon", "wed"]`) repeat on the listed days: `mon`..`sun` or
//!   the full names, case-insensitive, and the shorthands `weekdays` (mon-fri), `weekend`
//!   (sat, sun) and `daily`. **One-off** entries (`date = "2026-09-01"`) happen once. An entry
//!   has one of the two, never both.
//! - `start` and `end` are wall-clock times (`HH:MM`, 24-hour clock; `HH:MM:SS` too) in the
//!   entry's `timezone` (an IANA name such as `Asia/Shanghai`), or in the box's own zone
//!   (`TZ`, else `/etc/localtime`; UTC when neither says) when the entry names none. The box's
//!   zone is read when the schedule is built (at start and on every reload).
//! - An `end` that is not after `start` on the clock is on the next day: `22:00`-`02:00` runs
//!   over midnight, `08:00`-`08:00` lasts a day. `24:00` is accepted for an end (midnight).
//!   The day listed (or the date) is the day the window *starts*.
//! - **Spring forward**: a start or end that falls in the hour the clock skips moves to the
//!   first valid instant after the gap, the moment of the change (in Europe/Berlin on
//!   2026-03-29, `02:30` is `03:00` CEST = 01:00 UTC). A window entirely inside the gap is
//!   empty and skipped that day.
//! - **Fall back**: a wall time that happens twice is the earlier instant (in Europe/Berlin
//!   on 2026-10-25, `02:30` is `02:30` CEST = 00:30 UTC), for starts and ends alike, so a
//!   window across the change lasts its wall-clock length plus the repeated hour.
//! - Windows on either side of a change keep their wall-clock times: `08:00` stays `08:00`
//!   local, its UTC instant moves by the change.
//! - **Merging**: windows that overlap or touch (one ends when the next starts), from any
//!   entries in any zones, are one window: from the earliest start to the latest end. Its
//!   title, rename and zone come from the entry whose window starts first (the earlier entry
//!   in the file on a tie). A run of windows that never breaks is followed at most
//!   [`MAX_CHAIN_DAYS`] days each way from the instant asked about.
//! - **Rename**: an entry's `rename` template is rendered for each window: `{title}`, `{date}`
//!   (YYYY-MM-DD), `{start}` and `{end}` (HH:MM) of the (merged) window, in the entry's zone;
//!   `{{` and `}}` are literal braces.
//! - **Start early**: an entry's `lead_s` (0-3600) opens its window that many seconds before
//!   `start`, so the stream is stable when the lesson begins ([`Window::opens`]; `start` stays
//!   the lesson's start). Windows merge on their opening instants.
//! - **Lesson control** (`control`): extend the window open now, start now, stop now. An
//!   [`Override`] on top of the schedule, with [`Effective`] the result: on or off, until
//!   when, and why. The service keeps it on disk so it survives a restart.
//!
//! Validation ([`Schedule::from_config`], also run when the config is loaded) names the key
//! (`schedule[N].start`, entries counted from 0) and says what to write.

pub mod control;
mod entry;
mod report;
mod rule;

pub use control::{ControlAction, ControlError, Effective, Override, OverrideKind, Why};
pub use report::{parse_instant, render};

use crate::setting::InvalidSetting;
pub use entry::ScheduleEntry;
use jiff::{SignedDuration, Timestamp};
use rule::Rule;
use std::time::{Duration, SystemTime};

/// How far (days) a run of touching windows is followed from the instant asked about.
pub const MAX_CHAIN_DAYS: i64 = 400;

/// One broadcast window as instants (merged over overlapping entries).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// When the broadcast starts: `start` less the entry's `lead_s` (`start` without one).
    pub opens: SystemTime,
    /// When the lesson starts, as written (of the entry whose window opens first).
    pub start: SystemTime,
    pub end: SystemTime,
    /// The title of the entry whose window starts first.
    pub title: Option<String>,
    /// The channel name to set when the window opens: that entry's template, rendered.
    pub rename: Option<String>,
    /// That entry's zone (IANA name; the box's zone's name when the entry named none).
    pub timezone: String,
}

impl Window {
    /// How long the window lasts (from `start`, the lead not counted).
    pub fn duration(&self) -> Duration {
        self.end.duration_since(self.start).unwrap_or_default()
    }

    /// How long before `start` the broadcast opens (`lead_s`).
    pub fn lead(&self) -> Duration {
        self.start.duration_since(self.opens).unwrap_or_default()
    }

    /// Whether `t` is inside: from `opens` (included) to `end` (excluded).
    pub fn contains(&self, t: SystemTime) -> bool {
        self.opens <= t && t < self.end
    }
}

/// The configured windows, parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct Schedule {
    rules: Vec<Rule>,
}

/// An occurrence or a merged run of them; `rule` is the one that opens first. `start` is
/// when the broadcast opens (the lead included), `planned` that rule's own start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stretch {
    start: Timestamp,
    end: Timestamp,
    rule: usize,
    planned: Timestamp,
}

impl Schedule {
    /// Parses and checks the `[[schedule]]` entries.
    pub fn from_config(entries: &[ScheduleEntry]) -> Result<Self, InvalidSetting> {
        if entries.is_empty() {
            return Ok(Self::default());
        }
        let local = rule::local_zone();
        let rules = entries
            .iter()
            .enumerate()
            .map(|(i, e)| Rule::parse(i, e, &local))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self { rules })
    }

    /// No windows: stream all the time.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The window containing `now` (merged over overlaps), if any.
    pub fn current(&self, now: SystemTime) -> Option<Window> {
        if self.is_empty() {
            return None;
        }
        let t = Timestamp::try_from(now).ok()?;
        let (mut back, mut fwd) = (1, 1);
        loop {
            let (lo, hi) = (shift(t, -back), shift(t, fwd));
            let w = self
                .merged(lo, hi)
                .into_iter()
                .find(|w| w.start <= t && t < w.end)?;
            // The run may go on beyond what was looked at: look further.
            let more_back = w.start <= lo && back < MAX_CHAIN_DAYS && lo > Timestamp::MIN;
            let more_fwd = w.end >= hi && fwd < MAX_CHAIN_DAYS && hi < Timestamp::MAX;
            if !more_back && !more_fwd {
                return Some(self.window(&w));
            }
            if more_back {
                back = (back * 4).min(MAX_CHAIN_DAYS);
            }
            if more_fwd {
                fwd = (fwd * 4).min(MAX_CHAIN_DAYS);
            }
        }
    }

    /// The next `n` merged windows that start after `now` (not the current one).
    pub fn upcoming(&self, now: SystemTime, n: usize) -> Vec<Window> {
        if self.is_empty() || n == 0 {
            return Vec::new();
        }
        let Ok(t) = Timestamp::try_from(now) else {
            return Vec::new();
        };
        // Far enough for n weekly windows plus a run of touching ones, and past the last
        // one-off date.
        let mut limit = MAX_CHAIN_DAYS + 8 * n.min(100_000) as i64;
        for r in &self.rules {
            if let rule::When::Once(d) = r.when {
                if let Some((_, end)) = r.on(d) {
                    let days = end.duration_since(t).as_hours() / 24 + 2;
                    limit = limit.max(days);
                }
            }
        }
        let mut span = 8;
        loop {
            let hi = shift(t, span);
            let ahead: Vec<Stretch> = self
                .merged(t, hi)
                .into_iter()
                .filter(|w| w.start > t)
                .collect();
            // A window is known whole once it ends before the end of what was looked at.
            let whole = ahead.iter().take_while(|w| w.end < hi).count();
            if whole >= n || span >= limit || hi == Timestamp::MAX {
                return ahead.iter().take(n).map(|w| self.window(w)).collect();
            }
            span = (span * 4).min(limit);
        }
    }

    /// Every occurrence overlapping `lo..hi`, merged where they overlap or touch.
    fn merged(&self, lo: Timestamp, hi: Timestamp) -> Vec<Stretch> {
        let mut all: Vec<Stretch> = self
            .rules
            .iter()
            .enumerate()
            .flat_map(|(i, r)| {
                // An occurrence that starts after `hi` may open (its lead) before it.
                let reach = hi.checked_add(r.lead).unwrap_or(hi);
                r.occurrences(lo, reach)
                    .into_iter()
                    .map(move |(start, end)| Stretch {
                        start: start.checked_sub(r.lead).unwrap_or(start),
                        end,
                        rule: i,
                        planned: start,
                    })
                    .filter(move |s| s.start < hi)
            })
            .collect();
        all.sort_by_key(|s| (s.start, s.rule));
        let mut out: Vec<Stretch> = Vec::with_capacity(all.len());
        for s in all {
            match out.last_mut() {
                Some(last) if s.start <= last.end => last.end = last.end.max(s.end),
                _ => out.push(s),
            }
        }
        out
    }

    fn window(&self, s: &Stretch) -> Window {
        let r = &self.rules[s.rule];
        let rename = r.rename.as_ref().map(|tpl| {
            let start = r.tz.to_datetime(s.planned);
            let end = r.tz.to_datetime(s.end);
            tpl.render(
                r.title.as_deref(),
                &start.date().to_string(),
                &hhmm(start.time()),
                &hhmm(end.time()),
            )
        });
        Window {
            opens: SystemTime::from(s.start),
            start: SystemTime::from(s.planned),
            end: SystemTime::from(s.end),
            title: r.title.clone(),
            rename,
            timezone: r.tz_name.clone(),
        }
    }

    /// The zone of the entry whose window this is (for display), by its name.
    fn zone_of(&self, w: &Window) -> jiff::tz::TimeZone {
        self.rules
            .iter()
            .find(|r| r.tz_name == w.timezone)
            .map(|r| r.tz.clone())
            .unwrap_or(jiff::tz::TimeZone::UTC)
    }
}

fn hhmm(t: jiff::civil::Time) -> String {
    format!("{:02}:{:02}", t.hour(), t.minute())
}

/// `t` moved by whole days, saturating at the ends of the supported range.
fn shift(t: Timestamp, days: i64) -> Timestamp {
    t.checked_add(SignedDuration::from_hours(24 * days))
        .unwrap_or(if days < 0 {
            Timestamp::MIN
        } else {
            Timestamp::MAX
        })
}

#[cfg(test)]
mod tests;
