//! The `optin-inbox` binary: flags in, `{:#}` of the error out, exit 1 on failure (clap
//! exits 2 on a wrong command line).

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = optin_inbox::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("OPTIN_INBOX_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("optin_inbox=info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("optin-inbox: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(optin_inbox::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("optin-inbox: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
