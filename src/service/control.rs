//! Lesson control in the service: the override in force ([`crate::schedule::control`] decides
//! what it means), the requests that change it (from the status server and `polypush extend`,
//! `start-now`, `stop-now` through it, or a test's [`super::ServiceCommand::Control`]), and
//! its state file, so an override survives a restart.
//!
//! The state file is `control.json` in the state directory (`[service] state_dir`: by
//! default systemd's `$STATE_DIRECTORY`, `/var/lib/polypush` under the unit). It is written atomically (a
//! temporary file, fsync, rename) whenever the override changes and removed when it ends or
//! is cleared. At start a file that cannot be read or parsed is logged and ignored, and one
//! whose `until` has passed is dropped: the schedule alone decides then.

use crate::schedule::control::{apply, decode, effective, encode};
use crate::schedule::{Effective, Override, Schedule};
use crate::status::{ControlRequest, ScheduleStatus};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The file's name in the state directory.
pub const STATE_FILE_NAME: &str = "control.json";

/// The override kept on disk.
#[derive(Debug, Clone)]
pub struct StateFile {
    path: PathBuf,
}

impl StateFile {
    /// `control.json` in `dir`.
    pub fn in_dir(dir: &Path) -> StateFile {
        StateFile {
            path: dir.join(STATE_FILE_NAME),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The override in force at `now`, if the file holds one. A missing file is `None`
    /// quietly; an unreadable or corrupt one is `None` with a warning; a passed one is `None`
    /// (and the file removed).
    pub fn load(&self, now: SystemTime) -> Option<Override> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot read the lesson-control state; following the schedule");
                return None;
            }
        };
        match decode(&text) {
            Ok(o) if o.active(now) => {
                tracing::info!(
                    kind = o.kind.as_str(),
                    until = %httpdate::fmt_http_date(o.until),
                    by = %o.by,
                    "lesson control: override restored"
                );
                Some(o)
            }
            Ok(o) => {
                tracing::info!(
                    kind = o.kind.as_str(),
                    "lesson control: the saved override has ended; dropped"
                );
                let _ = std::fs::remove_file(&self.path);
                None
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "lesson-control state is corrupt; ignored (following the schedule)");
                None
            }
        }
    }

    /// Writes `ov` (temporary file, fsync, rename), or removes the file for `None`.
    pub fn save(&self, ov: Option<&Override>) -> std::io::Result<()> {
        let Some(o) = ov else {
            return match std::fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = self.path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(encode(o).as_bytes())?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)
    }
}

/// The override the loop keeps, and its file.
#[derive(Debug, Default)]
pub(super) struct Control {
    current: Option<Override>,
    file: Option<StateFile>,
}

impl Control {
    /// The saved override from `dir` (none without a directory: nothing is kept).
    pub(super) fn load(dir: Option<&Path>, now: SystemTime) -> Control {
        let file = dir.map(StateFile::in_dir);
        Control {
            current: file.as_ref().and_then(|f| f.load(now)),
            file,
        }
    }

    /// What broadcasts at `now`; an override that has ended is forgotten (and its file
    /// removed).
    pub(super) fn effective(&mut self, schedule: &Schedule, now: SystemTime) -> Effective {
        if self.current.as_ref().is_some_and(|o| !o.active(now)) {
            if let Some(o) = self.current.take() {
                tracing::info!(
                    kind = o.kind.as_str(),
                    "lesson control: the override has ended; following the schedule"
                );
            }
            self.save();
        }
        effective(schedule, self.current.as_ref(), now)
    }

    /// Applies `req` at `now`, keeps and saves the result, and answers it.
    pub(super) fn handle(&mut self, schedule: &Schedule, req: ControlRequest, now: SystemTime) {
        let before = self.effective(schedule, now);
        let result = apply(schedule, before.control.as_ref(), req.action, now, &req.by);
        let reply = match result {
            Ok(ov) => {
                self.current = ov;
                self.save();
                let eff = self.effective(schedule, now);
                tracing::info!(
                    action = req.action.as_str(),
                    by = %req.by,
                    on = eff.on,
                    reason = eff.why.as_str(),
                    "lesson control: {}",
                    crate::status::describe(&eff)
                );
                Ok(eff)
            }
            Err(e) => {
                tracing::warn!(action = req.action.as_str(), by = %req.by, "lesson control refused: {e}");
                Err(e)
            }
        };
        req.answer(reply);
    }

    fn save(&self) {
        let Some(f) = &self.file else { return };
        if let Err(e) = f.save(self.current.as_ref()) {
            tracing::warn!(path = %f.path().display(), error = %e, "cannot save the lesson-control state: it will not survive a restart (check the state directory is writable)");
        }
    }
}

impl super::Daemon {
    /// What broadcasts now (the schedule and the override), also told to the hub.
    pub(super) fn look(&mut self) -> Effective {
        let now = self.service.clock.now();
        let eff = self.control.effective(&self.schedule, now);
        self.hub
            .set_schedule(schedule_status(&self.schedule, &eff, now));
        eff
    }

    pub(super) fn handle_control(&mut self, req: ControlRequest) {
        let now = self.service.clock.now();
        self.control.handle(&self.schedule, req, now);
    }
}

/// The schedule's view of `now` for the hub, with the override applied.
fn schedule_status(schedule: &Schedule, eff: &Effective, now: SystemTime) -> ScheduleStatus {
    let next = schedule.upcoming(now, 1).into_iter().next();
    ScheduleStatus {
        configured: !schedule.is_empty(),
        in_window: eff.on,
        window_start: eff.window.as_ref().filter(|_| eff.on).map(|w| w.start),
        window_end: eff.end.filter(|_| eff.on),
        next_start: next.as_ref().map(|w| w.start),
        next_end: next.as_ref().map(|w| w.end),
        title: (eff.window.as_ref().or(next.as_ref())).and_then(|w| w.title.clone()),
        why: Some(eff.why),
        control: eff.control.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::OverrideKind;

    fn at(s: &str) -> SystemTime {
        SystemTime::from(s.parse::<jiff::Timestamp>().unwrap())
    }

    #[test]
    fn the_state_file_round_trips_and_drops_what_has_passed() {
        let dir = tempfile::tempdir().unwrap();
        let f = StateFile::in_dir(dir.path());
        assert_eq!(f.load(at("2030-03-04T08:00:00Z")), None, "no file: nothing");
        let o = Override {
            kind: OverrideKind::Extend,
            until: at("2030-03-04T09:30:00Z"),
            set_at: at("2030-03-04T08:50:00Z"),
            by: "page".into(),
        };
        f.save(Some(&o)).unwrap();
        assert!(!dir.path().join("control.json.tmp").exists());
        assert_eq!(f.load(at("2030-03-04T09:00:00Z")), Some(o.clone()));
        // Past its end: dropped and the file removed.
        assert_eq!(f.load(at("2030-03-04T09:30:00Z")), None);
        assert!(!f.path().exists());
        // Corrupt: ignored.
        std::fs::write(f.path(), "{\"version\":1,\"kind\":\"pause\"}").unwrap();
        assert_eq!(f.load(at("2030-03-04T09:00:00Z")), None);
        std::fs::write(f.path(), "not json").unwrap();
        assert_eq!(f.load(at("2030-03-04T09:00:00Z")), None);
        // Cleared.
        f.save(Some(&o)).unwrap();
        f.save(None).unwrap();
        assert!(!f.path().exists());
        f.save(None).unwrap();
    }
}
