//! The marketer's inbox, driven as a marketer drives it: the real `optin-inbox` binary in a
//! home of its own, every command bounded in time, `serve` waited for by its ready line. The
//! inbox tests (SQLite and NATS) and the fleet benchmark share it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::optin_inbox_bin;

/// How long one command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// The terms of the push request the tests make with `optin-inbox request new --id ID`.
pub const PUSH_REQUEST: &[&str] = &[
    "--purpose-code",
    "dpv:PersonalisedAdvertising",
    "--purpose",
    "Show you running-shoe offers that fit what you look for.",
    "--kinds",
    "search,cart",
    "--granularity",
    "raw",
    "--window",
    "30d",
    "--duration",
    "90d",
    "--offer",
    "10% off your next pair",
    "--push-every",
    "1h",
];

/// `request new --id ID` with the terms of [`PUSH_REQUEST`].
pub fn push_request(id: &str) -> Vec<&str> {
    [&["request", "new", "--id", id][..], PUSH_REQUEST].concat()
}

/// What a command did.
#[derive(Debug)]
pub struct Ran {
    /// Its exit code; `None` when a signal ended it.
    pub code: Option<i32>,
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
}

/// `optin-inbox --home HOME [--engine ENGINE] ARGS…`, killed after 30 s.
pub fn run(home: &Path, engine: Option<&str>, args: &[&str]) -> Result<Ran, String> {
    run_within(home, engine, args, COMMAND_TIMEOUT)
}

/// [`run`], killed after `timeout`. Its output is read while it runs, since a long listing
/// would fill the pipe and never end.
pub fn run_within(home: &Path, engine: Option<&str>, args: &[&str], timeout: Duration) -> Result<Ran, String> {
    let mut child = command(home, engine)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run optin-inbox: {e}"))?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let stderr = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("optin-inbox {args:?} did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ok(Ran { code: status.code(), stdout: stdout.join().unwrap_or_default(), stderr: stderr.join().unwrap_or_default() })
}

/// Starts `optin-inbox --home HOME [--engine ENGINE] serve --listen LISTEN EXTRA…`, its
/// standard error into `log`, and waits up to `patience` for its first line, which it returns
/// with the process. A process that prints none is killed.
pub fn serve(home: &Path, engine: Option<&str>, listen: &str, extra: &[&str], log: File, patience: Duration) -> Result<(Child, String), String> {
    let mut child = command(home, engine)
        .args(["serve", "--listen", listen])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("cannot start optin-inbox serve: {e}"))?;
    let stdout = child.stdout.take().ok_or("no standard output")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        if let Some(Ok(line)) = lines.next() {
            let _ = tx.send(line);
        }
        // Read to the end, so the process never blocks on a full pipe.
        for _ in lines {}
    });
    match rx.recv_timeout(patience) {
        Ok(line) => Ok((child, line)),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("optin-inbox serve printed no ready line ({e})"))
        }
    }
}

fn command(home: &Path, engine: Option<&str>) -> Command {
    let mut command = Command::new(optin_inbox_bin());
    command.arg("--home").arg(home);
    if let Some(engine) = engine {
        command.args(["--engine", engine]);
    }
    command
}
