//! Ctrl-C and SIGTERM: the first asks the run to stop cleanly, the second exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};

static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler; call once, early in `main`.
pub fn install() -> Result<(), ctrlc::Error> {
    ctrlc::set_handler(|| {
        if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
            // Second signal: the user means it. ffmpeg dies with us (parent-death signal)
            // and its hidden temp file is debris that `locks clean` removes.
            std::process::exit(130);
        }
    })
}

/// Whether a stop was asked for.
pub fn interrupted() -> bool {
    SIGNALS.load(Ordering::SeqCst) > 0
}
