//! SIGHUP: what changed between two configs, and what each change means for a running
//! service. The new config is a new value; nothing loaded earlier is changed.

use serde::Serialize;

use crate::config::Config;

/// Which parts of the config differ: what a reload must do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConfigChanges {
    pub schedule: bool,
    pub media: bool,
    pub adapt: bool,
    pub status: bool,
    pub log: bool,
    /// `[polyv]`, `[target]` or `[record]`: the broadcast restarts.
    pub session: bool,
}

impl ConfigChanges {
    pub fn any(&self) -> bool {
        *self != Self::default()
    }
}

fn same<T: Serialize>(a: &T, b: &T) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// Compares two configs section by section (secrets by value, not by their redacted form).
pub fn diff(old: &Config, new: &Config) -> ConfigChanges {
    let secret = |s: &Option<crate::secret::Secret>| s.as_ref().map(|s| s.expose().to_string());
    let polyv_same = same(&old.polyv, &new.polyv)
        && secret(&old.polyv.password) == secret(&new.polyv.password)
        && secret(&old.polyv.app_secret) == secret(&new.polyv.app_secret);
    ConfigChanges {
        schedule: !same(&old.schedule, &new.schedule),
        media: !same(&old.video, &new.video) || !same(&old.audio, &new.audio),
        adapt: !same(&old.adapt, &new.adapt),
        status: !same(&old.status, &new.status),
        log: !same(&old.log, &new.log),
        session: !polyv_same || !same(&old.target, &new.target) || !same(&old.record, &new.record),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diff_names_what_changed() {
        let a = Config::default();
        let mut b = a.clone();
        assert!(!diff(&a, &b).any());
        b.video.bitrate_kbps += 100;
        b.adapt.min_kbps += 10;
        let ch = diff(&a, &b);
        assert!(
            ch.media && ch.adapt && !ch.session && !ch.schedule,
            "{ch:?}"
        );
        let mut c = a.clone();
        c.polyv.password = Some(crate::secret::Secret::new("other"));
        assert!(diff(&a, &c).session, "a new password is a session change");
        let mut d = a.clone();
        d.schedule.push(crate::schedule::ScheduleEntry::default());
        let ch = diff(&a, &d);
        assert!(ch.schedule && !ch.media && !ch.session, "{ch:?}");
    }
}
