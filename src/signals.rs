//! Ctrl-C and SIGTERM (what cloud VMs and schedulers send), handled alike: before training has
//! anything to save (downloads, compilation) the first one ends the process at once, writing
//! nothing; during training it asks the loop to stop after the current step and write a
//! checkpoint; a second one ends the process at once.

use std::sync::atomic::{AtomicBool, Ordering};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);
static TRAINING: AtomicBool = AtomicBool::new(false);

/// Installs the handler (once per process; later calls keep the first).
pub fn install() {
    let _ = ctrlc::set_handler(|| {
        if !TRAINING.load(Ordering::SeqCst) {
            eprintln!("\ninterrupted before training started: nothing was written");
            std::process::exit(130);
        }
        if INTERRUPTED.swap(true, Ordering::SeqCst) {
            eprintln!("\ninterrupted again: exiting now, without a checkpoint");
            std::process::exit(130);
        }
        eprintln!(
            "\nstopping after this step and writing a checkpoint (Ctrl-C again to exit at once)"
        );
    });
}

/// From here on an interrupt stops the loop instead of the process.
pub fn training_started() {
    TRAINING.store(true, Ordering::SeqCst);
}

/// Whether an interrupt asked training to stop.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}
