//! One `run` per subcommand. Errors returned from a `run` are setup errors (exit 2);
//! per-file problems are events, and the run goes on.

pub mod cache;
pub mod convert;
pub mod dashboard;
pub mod doctor;
pub mod generate;
pub mod locks;
pub mod pause;
pub mod status;
