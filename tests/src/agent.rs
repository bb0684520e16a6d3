//! `optin serve` in a home: started, talked to, and stopped.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use optin_examples::{PinnedClient, Protocol, Response};
use optin_protocol::bundle::GrantBundle;

use crate::{find_optin_bin, unique, HarnessError, Home, Out};

/// How long the agent may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A running agent. Dropping it sends SIGTERM and waits (bounded) for the exit.
pub struct Agent {
    home: Option<Home>,
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The certificate's SHA-256, from the ready line.
    pub fingerprint: String,
    addr: SocketAddr,
    stderr_path: PathBuf,
}

impl Agent {
    /// An agent in a fresh home with default settings.
    pub async fn start() -> Agent {
        Home::new().serve(&[]).await
    }

    /// Starts `optin serve --home HOME --listen 127.0.0.1:0 EXTRA…` and waits for its ready
    /// line.
    pub(crate) async fn launch(home: Home, extra: &[&str], log: Option<&str>) -> Result<Agent, HarnessError> {
        let bin = find_optin_bin()?;
        let stderr_path = home.scratch(&format!("serve-{}.stderr", unique()));
        let io = |what: &str| {
            let what = what.to_owned();
            move |error| HarnessError::Process { what, error }
        };
        let stderr = std::fs::File::create(&stderr_path).map_err(io("create the agent's log file"))?;
        let mut command = Command::new(&bin);
        if let Some(filter) = log {
            command.env("OPTIN_LOG", filter);
        }
        let mut child = command
            .arg("serve")
            .arg("--home")
            .arg(home.path())
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("OPTIN_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(io(&format!("start {} serve", bin.display())))?;
        let (tx, rx) = mpsc::channel();
        if let Some(stdout) = child.stdout.take() {
            // Reads the ready line, then keeps draining stdout so the agent never blocks on it.
            std::thread::spawn(move || {
                let mut lines = BufReader::new(stdout).lines();
                if let Some(Ok(line)) = lines.next() {
                    let _ = tx.send(line);
                }
                for _ in lines {}
            });
        }
        let waited = tokio::task::spawn_blocking(move || rx.recv_timeout(READY_TIMEOUT)).await;
        let ready = match waited {
            Ok(Ok(line)) => parse_ready_line(&line).ok_or_else(|| format!("not a ready line: {line:?}")),
            Ok(Err(mpsc::RecvTimeoutError::Timeout)) => Err(format!("no ready line within {READY_TIMEOUT:?}")),
            Ok(Err(mpsc::RecvTimeoutError::Disconnected)) => Err("it closed its standard output".to_owned()),
            Err(e) => Err(format!("waiting for it failed: {e}")),
        };
        match ready {
            Ok((url, fingerprint, addr)) => Ok(Agent { home: Some(home), child: Some(child), url, fingerprint, addr, stderr_path }),
            Err(reason) => {
                let status = terminate(child);
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                Err(HarnessError::NotReady { reason: format!("{reason}; exit status {status:?}"), log })
            }
        }
    }

    /// The home.
    pub fn home(&self) -> &Home {
        self.home.as_ref().expect("the home outlives the agent")
    }

    /// The agent's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The address the agent listens on (loopback).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Runs the CLI against this agent's home.
    pub async fn cli(&self, args: &[&str]) -> Out {
        self.home().cli(args).await
    }

    /// The agent's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// A client pinned to this agent's certificate, speaking HTTP/1.1.
    pub fn client(&self) -> PinnedClient {
        self.client_over(Protocol::Http1)
    }

    /// A client pinned to this agent's certificate, speaking `protocol`.
    pub fn client_over(&self, protocol: Protocol) -> PinnedClient {
        PinnedClient::with_protocol(&self.url, &self.fingerprint, protocol)
            .expect("a client for the ready line's URL and pin")
            .with_timeout(Duration::from_secs(15))
    }

    /// `GET path` with a bearer token; panics if no HTTP answer arrives.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        self.client().get(path, token).await.unwrap_or_else(|e| panic!("GET {path}: {e}\nagent log:\n{}", self.log()))
    }

    /// Ingests NDJSON through the CLI (from a file) and returns its stdout.
    pub async fn ingest(&self, ndjson: &str) -> String {
        let file = self.home().scratch(&format!("batch-{}.ndjson", unique()));
        std::fs::write(&file, ndjson).expect("write the batch");
        self.cli(&["ingest", file.to_str().expect("a UTF-8 path")]).await.ok().to_owned()
    }

    /// `optin grant MARKETER --kinds K --granularity G --window W --expires 90d --json`.
    pub async fn grant(&self, marketer: &str, kinds: &str, granularity: &str, window: &str) -> GrantBundle {
        self.grant_with(marketer, &["--kinds", kinds, "--granularity", granularity, "--window", window, "--expires", "90d"]).await
    }

    /// `optin grant MARKETER ARGS… --purpose … --json`, parsed.
    pub async fn grant_with(&self, marketer: &str, args: &[&str]) -> GrantBundle {
        let mut all = vec!["grant", marketer];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--purpose", "show me relevant offers", "--json"]);
        let out = self.cli(&all).await;
        let bundle = GrantBundle::parse(out.ok()).unwrap_or_else(|e| panic!("not a grant bundle ({e}): {}", out.stdout));
        assert_eq!(bundle.pull_from(), Some((self.url.as_str(), self.fingerprint.as_str())), "the bundle names the running agent and pins its certificate");
        bundle
    }

    /// Sends SIGTERM, waits for the exit, checks it was graceful (status 0) and hands the
    /// home back; panics otherwise.
    pub fn stop(self) -> Home {
        self.try_stop().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends SIGTERM, waits for the exit and hands the home back if it was graceful
    /// (status 0).
    pub fn try_stop(mut self) -> Result<Home, HarnessError> {
        match self.terminate() {
            Some(status) if status.code() == Some(0) => Ok(self.home.take().expect("the home")),
            status => Err(HarnessError::UncleanStop { status, log: self.log() }),
        }
    }

    /// Kills the agent with SIGKILL (no chance to flush anything) and hands the home back.
    pub fn kill_hard(mut self) -> Home {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.home.take().expect("the home")
    }

    fn terminate(&mut self) -> Option<ExitStatus> {
        self.child.take().and_then(terminate)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// SIGTERM, then a bounded wait for the exit; SIGKILL if that runs out (and `None`).
fn terminate(mut child: Child) -> Option<ExitStatus> {
    if let Ok(Some(status)) = child.try_wait() {
        return Some(status);
    }
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// `listening on https://127.0.0.1:PORT (certificate sha256 HEX)` into the URL, HEX and the
/// address.
fn parse_ready_line(line: &str) -> Option<(String, String, SocketAddr)> {
    let rest = line.strip_prefix("listening on ")?;
    let (url, rest) = rest.split_once(" (certificate sha256 ")?;
    let fingerprint = rest.strip_suffix(')')?;
    let hex_ok = fingerprint.len() == 64 && fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let addr: SocketAddr = url.strip_prefix("https://")?.parse().ok()?;
    let addr_ok = addr.ip() == Ipv4Addr::LOCALHOST && addr.port() != 0;
    (hex_ok && addr_ok).then(|| (url.to_owned(), fingerprint.to_owned(), addr))
}
