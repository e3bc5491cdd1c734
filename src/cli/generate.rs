//! `completions SHELL` and `man`: shell completion scripts and the man page, rendered from the
//! clap definition itself so that they can never drift from the real flags.
//!
//! The installers (`installers/install.sh`, `installers/install.ps1`) run the installed binary
//! to produce them, so what a user's shell completes is always what that binary accepts.

use std::io;

use clap::{CommandFactory, Subcommand};
pub use clap_complete::Shell;

use super::Cli;

#[derive(Debug, Subcommand)]
pub(super) enum GenerateCommand {
    /// Print a shell completion script, e.g. `media-converter completions bash`.
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: Shell,
    },
    /// Print the man page (roff), e.g. `media-converter man > media-converter.1`.
    Man,
}

impl GenerateCommand {
    pub(super) fn into_artifact(self) -> Artifact {
        match self {
            GenerateCommand::Completions { shell } => Artifact::Completions(shell),
            GenerateCommand::Man => Artifact::ManPage,
        }
    }
}

/// A document generated from the command-line definition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Artifact {
    /// The completion script for one shell.
    Completions(Shell),
    /// The `media-converter(1)` man page, in roff.
    ManPage,
}

/// Renders an artifact into memory; the caller decides where it goes.
pub fn render(artifact: Artifact) -> io::Result<Vec<u8>> {
    let mut command = Cli::command();
    let mut out = Vec::new();
    match artifact {
        Artifact::Completions(shell) => {
            // The name the completion is registered under must be the installed binary's
            // name, not the crate's.
            let bin_name = command.get_name().to_string();
            clap_complete::generate(shell, &mut command, bin_name, &mut out);
        }
        Artifact::ManPage => clap_mangen::Man::new(command).render(&mut out)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::RunCommand;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<RunCommand, clap::Error> {
        let full = std::iter::once("media-converter").chain(args.iter().copied());
        Cli::try_parse_from(full).map(|cli| cli.into_command().0)
    }

    fn text(artifact: Artifact) -> String {
        String::from_utf8(render(artifact).unwrap()).unwrap()
    }

    #[test]
    fn every_shell_gets_a_script_that_knows_the_real_flags() {
        // fish names long options without their dashes (`-l dir`).
        for (shell, long) in [
            (Shell::Bash, "--"),
            (Shell::Zsh, "--"),
            (Shell::Fish, "-l "),
            (Shell::PowerShell, "--"),
            (Shell::Elvish, "--"),
        ] {
            let script = text(Artifact::Completions(shell));
            // Flags from different parts of the definition: the flattened convert flags and
            // the global output flags.
            for flag in ["dir", "min-savings", "json"] {
                let needle = format!("{long}{flag}");
                assert!(
                    script.contains(&needle),
                    "{shell}: no {needle:?} in\n{script}"
                );
            }
            assert!(script.contains("completions"), "{shell}: no subcommand");
            assert!(
                script.contains("media-converter") || script.contains("media_converter"),
                "{shell}: not registered for the binary's name"
            );
        }
    }

    #[test]
    fn man_page_is_roff_and_documents_the_flags() {
        let page = text(Artifact::ManPage);
        assert!(page.starts_with(".ie") || page.starts_with(".TH"), "{page}");
        assert!(page.contains(".TH media-converter 1"), "{page}");
        // roff escapes the dashes of options as `\-`.
        for flag in [r"\-\-min\-savings", r"\-\-dir", r"\-\-dry\-run"] {
            assert!(page.contains(flag), "no {flag} in\n{page}");
        }
    }

    #[test]
    fn subcommands_parse_without_a_convert_target() {
        match parse(&["completions", "powershell"]) {
            Ok(RunCommand::Generate(Artifact::Completions(Shell::PowerShell))) => {}
            other => panic!("{other:?}"),
        }
        match parse(&["man"]) {
            Ok(RunCommand::Generate(Artifact::ManPage)) => {}
            other => panic!("{other:?}"),
        }
        assert!(parse(&["completions", "tcsh"]).is_err());
        assert!(parse(&["completions"]).is_err());
        assert!(parse(&["--dir", "a", "man"]).is_err());
    }
}
