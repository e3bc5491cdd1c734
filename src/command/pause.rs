//! `media-converter pause DIR` / `resume DIR`: the pause file every host checks before it
//! starts a new file.

use std::path::Path;

use anyhow::{Context, bail};

use crate::exit_codes::ExitCode;
use crate::output::Reporter;
use crate::unattended;

/// Pauses the library at `dir`.
pub fn pause(dir: &Path, reason: Option<String>, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    let host = crate::identity::HostIdentity::current().hostname;
    let file = unattended::pause(dir, &host, reason)
        .with_context(|| format!("cannot write the pause file in {}", dir.display()))?;
    reporter.note(&format!(
        "paused: no host starts a new file under {} until `media-converter resume` ({})",
        dir.display(),
        file.display()
    ));
    Ok(ExitCode::Success)
}

/// Lifts the pause of the library at `dir`.
pub fn resume(dir: &Path, reporter: &Reporter) -> anyhow::Result<ExitCode> {
    let removed = unattended::resume(dir)
        .with_context(|| format!("cannot remove the pause file in {}", dir.display()))?;
    reporter.note(&if removed {
        format!("resumed: hosts may start new files under {}", dir.display())
    } else {
        format!("{} was not paused", dir.display())
    });
    Ok(ExitCode::Success)
}
