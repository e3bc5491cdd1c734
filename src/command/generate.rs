//! `completions SHELL` and `man`: print a document generated from the command line itself.

use std::io::{self, Write};

use anyhow::Context;

use crate::cli::generate::{Artifact, render};
use crate::exit_codes::ExitCode;

/// Writes the artifact to stdout.
pub fn run(artifact: Artifact) -> anyhow::Result<ExitCode> {
    // Only the man page can fail to render (roff into memory); completions cannot.
    let text = render(artifact).with_context(|| format!("generating {artifact:?}"))?;
    let mut stdout = io::stdout().lock();
    match stdout.write_all(&text).and_then(|()| stdout.flush()) {
        Ok(()) => Ok(ExitCode::Success),
        // `media-converter man | head` closes the pipe early; the reader got what it wanted.
        Err(err) if err.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::Success),
        Err(err) => Err(err).context("writing to stdout"),
    }
}
