//! The harness shared by the end-to-end tests (`it/`) and the slice benchmark (`benches/`):
//! a temporary home, the real `optin` binary serving from it, its CLI, and fixtures.
//!
//! - [`Home`] is a home directory that does not exist until the agent or a command makes it;
//!   [`Home::cli`] and [`Home::command`] run `optin --home HOME …` and return an [`Out`],
//!   whose [`Out::ok`] and [`Out::fails`] state what a person at the CLI must see.
//! - [`Home::serve`] starts `optin serve` on `127.0.0.1:0` and waits for its ready line; the
//!   [`Agent`] it returns knows its URL and certificate, talks to it as a pinned marketer,
//!   and stops it with SIGTERM (checking the exit) or SIGKILL.
//! - [`fixture`] writes signals relative to the moment a test runs; [`marketer`] fetches
//!   slices and checks refusals the way a marketer would see them.
//! - [`site`] serves a marketer's site or inbox over real TLS under a made-up name, with a
//!   certificate authority made for the test, for `--ca-file` and `--resolve`.
//!
//! Every wait is bounded, so a hung agent fails a test instead of hanging the run. Tests use
//! the panicking methods; the benchmark, which reports failures instead of panicking, uses the
//! `try_` ones, which return a [`HarnessError`].

mod agent;
mod cli;
pub mod fixture;
mod home;
pub mod inbox;
pub mod marketer;
pub mod proxy;
pub mod site;

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

pub use agent::Agent;
pub use cli::{Cli, Out};
pub use fixture::{now, ts};
pub use home::Home;
pub use marketer::{assert_problem, assert_unauthorized, fetch, fetch_raw, item_key, raw_items};

/// Why the harness could not do what it was asked.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// There is no `optin` binary where it was looked for.
    #[error("{0} not found: build the agent first (cargo build -p optin-agent, with --release for the benchmark) or set OPTIN_BIN")]
    NoBinary(PathBuf),
    /// A process could not be started, fed or waited for.
    #[error("{what}: {error}")]
    Process {
        /// What was being done.
        what: String,
        /// Why it failed.
        error: std::io::Error,
    },
    /// A command did not finish in time.
    #[error("`{command}` did not finish within {after:?}")]
    Timeout {
        /// The command line.
        command: String,
        /// How long it was given.
        after: Duration,
    },
    /// `optin serve` printed no ready line, or not one that can be read.
    #[error("optin serve did not get ready ({reason}); its log:\n{log}")]
    NotReady {
        /// What went wrong: the exit, the timeout, or the line it printed instead.
        reason: String,
        /// The agent's standard error.
        log: String,
    },
    /// `optin serve` did not exit 0 on SIGTERM within the time allowed.
    #[error("optin serve should exit 0 on SIGTERM, got {status:?}; its log:\n{log}")]
    UncleanStop {
        /// The exit status, if it exited at all.
        status: Option<ExitStatus>,
        /// The agent's standard error.
        log: String,
    },
    /// A command that had to succeed did not.
    #[error("`{}` failed: exit {:?}, stderr:\n{}", .0.command, .0.code, .0.stderr)]
    Failed(Box<Out>),
}

/// The `optin` binary: `$OPTIN_BIN`, or `optin` in the profile directory of the running
/// test or benchmark (`<target>/<profile>/optin`, next to `deps/`).
pub fn find_optin_bin() -> Result<PathBuf, HarnessError> {
    if let Some(path) = std::env::var_os("OPTIN_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().map_err(|error| HarnessError::Process { what: "the running executable's path".into(), error })?;
    // Tests and benchmarks run as <target>/<profile>/deps/NAME-HASH.
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let bin = profile_dir.join(format!("optin{}", std::env::consts::EXE_SUFFIX));
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(HarnessError::NoBinary(bin))
    }
}

/// Like [`find_optin_bin`], for tests: panics when there is no binary.
pub fn optin_bin() -> PathBuf {
    find_optin_bin().unwrap_or_else(|e| panic!("{e}"))
}

/// A size in KiB from `/proc/PID/status` (`VmRSS`, `VmHWM`, …), for the benchmarks' memory
/// figures; 0 when the process or the line is not there.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let prefix = format!("{field}:");
    status.lines().find_map(|l| l.strip_prefix(prefix.as_str())).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// CPU time used, user and system, in clock ticks, from `/proc/WHAT/stat`: `WHAT` is a PID,
/// `self`, or `self/task/TID` for one thread. 0 when it is not there.
pub fn cpu_ticks(what: &str) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{what}/stat")).unwrap_or_default();
    // After the command name in parentheses: state is field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    field(14) + field(15)
}

/// Clock ticks a second, as `/proc/…/stat` counts CPU time (USER_HZ, 100 on Linux).
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf").arg("CLK_TCK").output().ok().and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok()).unwrap_or(100)
}

/// How to give the Python tests their interpreter, for the message of a test that has none.
pub const PYTHON_SETUP: &str = "set OPTIN_PYTHON to a Python with jwcrypto: \
    python3 -m venv .venv && .venv/bin/pip install -r tests/jose/requirements.txt, \
    then OPTIN_PYTHON=.venv/bin/python (or OPTIN_SKIP_JOSE=1 to skip this test)";

/// The Python with jwcrypto that checks `what` (`$OPTIN_PYTHON`), or `None` when the Python
/// tests are skipped on purpose (`OPTIN_SKIP_JOSE=1`); panics with [`PYTHON_SETUP`] when
/// neither is set, so a machine without it fails loudly rather than passing untested.
pub fn python(what: &str) -> Option<PathBuf> {
    match std::env::var_os("OPTIN_PYTHON") {
        Some(path) if !path.is_empty() => Some(PathBuf::from(path)),
        _ if std::env::var("OPTIN_SKIP_JOSE").is_ok_and(|v| v == "1") => {
            eprintln!("skipping {what}: OPTIN_SKIP_JOSE=1");
            None
        }
        _ => panic!("{PYTHON_SETUP}"),
    }
}

/// The `optin-inbox` binary, the marketer's inbox: `$OPTIN_INBOX_BIN`, or `optin-inbox` next
/// to `optin` in the profile directory of the running test; panics when there is none.
pub fn optin_inbox_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("OPTIN_INBOX_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("the running executable's path: {e}"));
    let profile_dir = exe.parent().and_then(Path::parent).unwrap_or(Path::new("."));
    let bin = profile_dir.join(format!("optin-inbox{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} not found: build it first (cargo build -p optin-inbox) or set OPTIN_INBOX_BIN", bin.display());
    bin
}

/// A number no two calls in this process share, for file names.
fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}
