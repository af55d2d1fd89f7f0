//! The one error every layer's settings check returns: which key is wrong, and what to write
//! instead. Each layer owns its settings struct and checks it; [`crate::config`] composes them
//! and turns this into a `file:line:col: key: message` error pointing into the file.

/// A setting that cannot work, named by its dotted key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct InvalidSetting {
    /// The dotted key, such as `video.fps` or `schedule[1].start` (entries counted from 0).
    pub key: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl InvalidSetting {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }

    /// `value` must lie in `lo..=hi`.
    pub fn check_range(key: &str, value: u64, lo: u64, hi: u64) -> Result<(), Self> {
        if (lo..=hi).contains(&value) {
            Ok(())
        } else {
            Err(Self::new(
                key,
                format!("{value} is out of range: use {lo} to {hi}"),
            ))
        }
    }
}
