use clap::Parser;

fn main() {
    // XLA's plugins log informational lines to stderr before absl is initialised; keep the
    // terminal for our own output unless the user asked for the plugin's logs. Set before any
    // thread starts, which is what makes changing the environment sound.
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "1");
    }
    // A bug is one line for a user; RUST_BACKTRACE=1 keeps Rust's full report for developers.
    if std::env::var_os("RUST_BACKTRACE").is_none_or(|v| v == "0") {
        std::panic::set_hook(Box::new(|info| {
            let what = info
                .payload()
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| info.payload().downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            let at = info
                .location()
                .map(|l| format!(" at {}:{}", l.file(), l.line()))
                .unwrap_or_default();
            eprintln!(
                "error: internal error in ti-xla: {}{at}; please report it (RUST_BACKTRACE=1 shows the details)",
                what.lines().next().unwrap_or("")
            );
        }));
    }
    // Developers' check of the hook above (tests/hostile_inputs.rs).
    if std::env::var_os("TI_XLA_TEST_PANIC").is_some() {
        panic!("TI_XLA_TEST_PANIC is set");
    }
    let cli = ti_xla::cli::Cli::parse();
    if let Err(e) = ti_xla::cli::run(cli) {
        if e.downcast_ref::<ti_xla::train::trainer::Interrupted>()
            .is_some()
        {
            eprintln!("{e}");
            std::process::exit(130);
        }
        // One line that says what went wrong and, where we know it, what to do.
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
