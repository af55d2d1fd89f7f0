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
    /// The service's state (the lesson log `lessons.jsonl`); absolute; must exist (it is not
    /// created). systemd's `StateDirectory=polypush` creates `/var/lib/polypush`.
    pub state_dir: PathBuf,
    /// `lessons.jsonl` is rotated when a new line would take it past this many bytes
    /// (4096..=1073741824); three rotated files are kept.
    pub lessons_max_bytes: u64,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/polypush"),
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
