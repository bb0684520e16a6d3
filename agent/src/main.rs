//! The `optin` binary: everything lives in the library (see `lib.rs`).

fn main() -> std::process::ExitCode {
    optin_agent::cli::main()
}
