//! The process exit codes: one table, documented in the README and tested.

/// How a run ended, as the number cron, Task Scheduler and scripts see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitCode {
    /// Everything eligible was converted, or there was nothing to do.
    Success,
    /// The run finished, but at least one file failed.
    SomeFailed,
    /// The command line was wrong or the tool cannot run here (e.g. no ffmpeg).
    UsageOrSetup,
    /// Stopped by Ctrl-C or SIGTERM; work in progress was rolled back.
    Interrupted,
}

impl ExitCode {
    /// The numeric process exit status.
    pub fn code(self) -> i32 {
        match self {
            ExitCode::Success => 0,
            ExitCode::SomeFailed => 1,
            ExitCode::UsageOrSetup => 2,
            ExitCode::Interrupted => 130,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documented_table() {
        assert_eq!(ExitCode::Success.code(), 0);
        assert_eq!(ExitCode::SomeFailed.code(), 1);
        assert_eq!(ExitCode::UsageOrSetup.code(), 2);
        assert_eq!(ExitCode::Interrupted.code(), 130);
    }
}
