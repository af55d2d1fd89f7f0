//! `[service]`: where the service keeps its state and how much of it.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::setting::InvalidSetting;

/// Smallest and largest `lessons_max_bytes`.
const MIN_LESSONS_BYTES: u64 = 4096;
const MAX_LESSONS_BYTES: u64 = 1 << 30;

/// `[service]`: the state directory and the lesson log's size.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceSettings {
    /// The service's state (the lesson log `lessons.jsonl`, the lesson-control override
    /// `control.json`); absolute; must exist (it is not created). Default: the first entry of
    /// `$STATE_DIRECTORY` (systemd sets it for `StateDirectory=polypush`, which creates
    /// `/var/lib/polypush`), else `/var/lib/polypush`.
    pub state_dir: PathBuf,
    /// `lessons.jsonl` is rotated when a new line would take it past this many bytes
    /// (4096..=1073741824); three rotated files are kept.
    pub lessons_max_bytes: u64,
}

/// The first entry of `$STATE_DIRECTORY` (systemd sets it for `StateDirectory=`), else
/// `/var/lib/polypush`.
fn default_state_dir() -> PathBuf {
    std::env::var_os("STATE_DIRECTORY")
        .and_then(|v| {
            v.to_str()
                .and_then(|s| s.split(':').next())
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from("/var/lib/polypush"))
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            state_dir: default_state_dir(),
            lessons_max_bytes: 1 << 20,
        }
    }
}

impl ServiceSettings {
    pub fn validate(&self) -> Result<(), InvalidSetting> {
        if !self.state_dir.is_absolute() {
            return Err(InvalidSetting::new(
                "service.state_dir",
                format!(
                    "{} is not an absolute path: use a directory such as /var/lib/polypush",
                    self.state_dir.display()
                ),
            ));
        }
        if !(MIN_LESSONS_BYTES..=MAX_LESSONS_BYTES).contains(&self.lessons_max_bytes) {
            return Err(InvalidSetting::new(
                "service.lessons_max_bytes",
                format!(
                    "{} is out of range: use {MIN_LESSONS_BYTES} to {MAX_LESSONS_BYTES} (1048576 is about 2000 lessons)",
                    self.lessons_max_bytes
                ),
            ));
        }
        Ok(())
    }
}
