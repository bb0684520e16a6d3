//! The CLI: one command run against a home, and what a person would see of it.

use std::ffi::OsString;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;

use crate::{find_optin_bin, HarnessError, Home};

/// How long one CLI command may take unless told otherwise.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// What a Rust panic prints: never part of what the CLI tells a person.
const PANIC: &str = "panicked at";

/// What a CLI command did.
#[derive(Debug)]
pub struct Out {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Out {
    /// The standard output of a command that must have succeeded.
    #[track_caller]
    pub fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "expected success, got {self:#?}");
        assert!(!self.stderr.contains(PANIC), "`{}` succeeded but panicked: {self:#?}", self.command);
        &self.stdout
    }

    /// The standard output of a successful command, as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let text = self.ok();
        serde_json::from_str(text).unwrap_or_else(|e| panic!("stdout of `{}` is not JSON ({e}): {text}", self.command))
    }

    /// The standard error of a command that must have failed with exit `code` (1: the
    /// command failed, 2: the command line is wrong), saying `needle`, without panicking.
    #[track_caller]
    pub fn fails(&self, code: i32, needle: &str) -> &str {
        assert_eq!(self.code, Some(code), "expected exit code {code}, got {self:#?}");
        assert!(!self.stderr.contains(PANIC), "`{}` panicked instead of failing: {self:#?}", self.command);
        assert!(self.stderr.contains(needle), "`{}`: stderr should say {needle:?}: {self:#?}", self.command);
        &self.stderr
    }

    /// This, if the command succeeded; for callers that report failures instead of panicking.
    pub fn succeeded(self) -> Result<Out, HarnessError> {
        if self.code == Some(0) && !self.stderr.contains(PANIC) {
            Ok(self)
        } else {
            Err(HarnessError::Failed(Box::new(self)))
        }
    }
}

/// `optin --home HOME ARGS…`, to be run; made by [`Home::command`].
pub struct Cli<'a> {
    home: &'a Home,
    args: Vec<String>,
    stdin: Option<Vec<u8>>,
    env: Vec<(OsString, OsString)>,
    timeout: Duration,
}

impl<'a> Cli<'a> {
    pub(crate) fn new(home: &'a Home, args: &[&str]) -> Cli<'a> {
        Cli { home, args: args.iter().map(|a| a.to_string()).collect(), stdin: None, env: Vec::new(), timeout: CLI_TIMEOUT }
    }

    /// Writes `bytes` to the command's standard input (otherwise it reads nothing).
    pub fn stdin(mut self, bytes: &[u8]) -> Cli<'a> {
        self.stdin = Some(bytes.to_vec());
        self
    }

    /// Sets an environment variable for the command.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Cli<'a> {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Gives the command `timeout` instead of 30 s.
    pub fn timeout(mut self, timeout: Duration) -> Cli<'a> {
        self.timeout = timeout;
        self
    }

    /// Runs the command and waits for it; panics if it cannot run or overstays.
    pub async fn run(self) -> Out {
        self.try_run().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs the command and waits for it, whatever its exit code.
    pub async fn try_run(self) -> Result<Out, HarnessError> {
        let command = format!("optin {}", self.args.join(" "));
        let process = |what: &str| {
            let what = format!("{what} `{command}`");
            move |error| HarnessError::Process { what, error }
        };
        let mut child = tokio::process::Command::new(find_optin_bin()?)
            .arg("--home")
            .arg(self.home.path())
            .args(&self.args)
            .env_remove("OPTIN_HOME")
            .env("NO_COLOR", "1")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(if self.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(process("start"))?;
        // Fed while the command runs and prints, so neither side waits on a full pipe. A
        // command may exit without reading all of it: its answer says why, not the pipe.
        let stdin = self.stdin.as_deref().zip(child.stdin.take());
        let feed = async move {
            if let Some((bytes, mut pipe)) = stdin {
                match pipe.write_all(bytes).await {
                    Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e),
                    _ => {}
                }
            }
            Ok(())
        };
        let wait = tokio::time::timeout(self.timeout, child.wait_with_output());
        let (fed, output) = tokio::join!(feed, wait);
        let output = output.map_err(|_| HarnessError::Timeout { command: command.clone(), after: self.timeout })?.map_err(process("wait for"))?;
        fed.map_err(process("write the standard input of"))?;
        Ok(Out {
            command,
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        })
    }
}
