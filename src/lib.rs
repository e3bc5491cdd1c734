//! media-converter: shrinks media libraries on shared disks by re-encoding video to HEVC.
//!
//! See `ARCHITECTURE.md` for the flow of a run and which module owns each step.

pub mod identity;
pub mod lock;
