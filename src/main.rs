use clap::Parser;

fn main() {
    // XLA's plugins log informational lines to stderr before absl is initialised; keep the
    // terminal for our own output unless the user asked for the plugin's logs. Set before any
    // thread starts, which is what makes changing the environment sound.
    if std::env::var_os("TF_CPP_MIN_LOG_LEVEL").is_none() {
        std::env::set_var("TF_CPP_MIN_LOG_LEVEL", "1");
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
