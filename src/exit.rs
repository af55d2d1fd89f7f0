//! The process exit codes, one type for every command (`run`, `selftest`, the admin
//! commands): what an operator or a script sees when polypush stops.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | internal: a bug, please report it |
//! | 2 | usage or configuration: fix the command line or the config file (systemd does not restart on it) |
//! | 3 | refused: the platform or the ingest answered and said no (password, key, clock) |
//! | 4 | unavailable: the platform or the ingest could not be reached |
//! | 5 | a capture device or an encoder failed |

/// Why polypush exits; see the module docs for the numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitCode {
    Ok,
    Internal,
    Config,
    Refused,
    Unavailable,
    Media,
}

impl ExitCode {
    /// The number the process exits with.
    pub fn code(self) -> u8 {
        match self {
            Self::Ok => 0,
            Self::Internal => 1,
            Self::Config => 2,
            Self::Refused => 3,
            Self::Unavailable => 4,
            Self::Media => 5,
        }
    }
}

impl std::fmt::Display for ExitCode {
    /// The number, as a shell shows it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_the_documented_ones() {
        let all = [
            ExitCode::Ok,
            ExitCode::Internal,
            ExitCode::Config,
            ExitCode::Refused,
            ExitCode::Unavailable,
            ExitCode::Media,
        ];
        assert_eq!(all.map(ExitCode::code), [0, 1, 2, 3, 4, 5]);
    }
}
