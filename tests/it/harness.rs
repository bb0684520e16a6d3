//! The harness: a temporary home, the real `optin` binary serving from it, and the CLI.
//!
//! Every wait is bounded, so a hung agent fails a test instead of hanging the run.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use optin_examples::{PinnedClient, Protocol, Response};
use optin_protocol::bundle::GrantBundle;
use serde_json::Value;
use tempfile::TempDir;
use time::OffsetDateTime;

/// How long the agent may take to print its ready line.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one CLI command may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the agent may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// The `optin` binary: `$OPTIN_BIN`, or `optin` next to this test's target directory.
pub fn optin_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("OPTIN_BIN") {
        return PathBuf::from(path);
    }
    // This test runs as <target>/<profile>/deps/it-<hash>; the agent is <target>/<profile>/optin.
    let exe = std::env::current_exe().expect("the test binary's path");
    let profile_dir = exe.parent().and_then(Path::parent).expect("the test binary lives in <target>/<profile>/deps");
    let bin = profile_dir.join(format!("optin{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.is_file(), "{} not found: build the agent first: cargo build -p optin-agent (or set OPTIN_BIN)", bin.display());
    bin
}

/// What a CLI command did.
#[derive(Debug)]
pub struct Out {
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
        &self.stdout
    }

    /// The standard output of a successful command, as JSON.
    #[track_caller]
    pub fn json(&self) -> Value {
        let text = self.ok();
        serde_json::from_str(text).unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {text}"))
    }

    /// The standard error of a command that must have failed with `code`.
    #[track_caller]
    pub fn fails(&self, code: i32) -> &str {
        assert_eq!(self.code, Some(code), "expected exit code {code}, got {self:#?}");
        &self.stderr
    }
}

/// A home directory for the agent, inside a temporary directory removed on drop. The home
/// itself does not exist until the agent or a command creates it.
pub struct Home {
    _dir: TempDir,
    path: PathBuf,
    logs: PathBuf,
}

impl Home {
    /// A fresh, not yet existing home.
    pub fn new() -> Home {
        let dir = tempfile::Builder::new().prefix("optin-it-").tempdir().expect("a temporary directory");
        let path = dir.path().join("home");
        let logs = dir.path().join("logs");
        std::fs::create_dir(&logs).expect("the log directory");
        Home { _dir: dir, path, logs }
    }

    /// The home's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A path for scratch files next to (not inside) the home.
    pub fn scratch(&self, name: &str) -> PathBuf {
        self.logs.join(name)
    }

    /// Runs `optin --home HOME ARGS…` and waits for it (bounded).
    pub async fn cli(&self, args: &[&str]) -> Out {
        self.cli_with_stdin(args, None).await
    }

    /// Like [`Home::cli`], writing `stdin` to the command's standard input.
    pub async fn cli_with_stdin(&self, args: &[&str], stdin: Option<&[u8]>) -> Out {
        use tokio::io::AsyncWriteExt;
        let mut command = tokio::process::Command::new(optin_bin());
        command
            .arg("--home")
            .arg(&self.path)
            .args(args)
            .env_remove("OPTIN_HOME")
            .env("NO_COLOR", "1")
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = command.spawn().expect("spawn optin");
        if let Some(bytes) = stdin {
            let mut pipe = child.stdin.take().expect("piped stdin");
            pipe.write_all(bytes).await.expect("write stdin");
            drop(pipe);
        }
        let output = tokio::time::timeout(CLI_TIMEOUT, child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("`optin {}` did not finish within {CLI_TIMEOUT:?}", args.join(" ")))
            .expect("wait for optin");
        Out {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// Starts `optin serve --listen 127.0.0.1:0 EXTRA…` and waits for its ready line.
    pub async fn serve(self, extra: &[&str]) -> Agent {
        let stderr_path = self.logs.join(format!("serve-{}.stderr", unique()));
        let stderr = std::fs::File::create(&stderr_path).expect("the agent's log file");
        let mut child = Command::new(optin_bin())
            .arg("serve")
            .arg("--home")
            .arg(&self.path)
            .args(["--listen", "127.0.0.1:0"])
            .args(extra)
            .env_remove("OPTIN_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn optin serve");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        // Reads the ready line, then keeps draining stdout so the agent never blocks on it.
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            for _ in lines {}
        });
        let line = match tokio::task::spawn_blocking(move || rx.recv_timeout(READY_TIMEOUT)).await.expect("join") {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                let log = std::fs::read_to_string(&stderr_path).unwrap_or_default();
                panic!("optin serve printed no ready line within {READY_TIMEOUT:?} (exit {status:?}); stderr:\n{log}");
            }
        };
        let (url, fingerprint) = parse_ready_line(&line).unwrap_or_else(|| panic!("not a ready line: {line:?}"));
        Agent { home: Some(self), child: Some(child), url, fingerprint, stderr_path }
    }
}

fn unique() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

/// `listening on https://127.0.0.1:PORT (certificate sha256 HEX)` into URL and HEX.
pub fn parse_ready_line(line: &str) -> Option<(String, String)> {
    let rest = line.strip_prefix("listening on ")?;
    let (url, rest) = rest.split_once(" (certificate sha256 ")?;
    let fingerprint = rest.strip_suffix(')')?;
    let hex_ok = fingerprint.len() == 64 && fingerprint.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let url_ok = url.strip_prefix("https://127.0.0.1:").is_some_and(|p| p.parse::<u16>().is_ok_and(|p| p != 0));
    (hex_ok && url_ok).then(|| (url.to_owned(), fingerprint.to_owned()))
}

/// A running agent. Dropping it sends SIGTERM and waits for the exit.
pub struct Agent {
    home: Option<Home>,
    child: Option<Child>,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The certificate's SHA-256, from the ready line.
    pub fingerprint: String,
    stderr_path: PathBuf,
}

impl Agent {
    /// An agent in a fresh home with default settings.
    pub async fn start() -> Agent {
        Home::new().serve(&[]).await
    }

    /// The home.
    pub fn home(&self) -> &Home {
        self.home.as_ref().expect("the home outlives the agent")
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
        assert_eq!(bundle.agent_url, self.url, "the bundle names the running agent");
        assert_eq!(bundle.cert_sha256, self.fingerprint, "the bundle pins the served certificate");
        bundle
    }

    /// Sends SIGTERM, waits for the exit, checks it was graceful (status 0) and hands the
    /// home back.
    pub fn stop(mut self) -> Home {
        let status = self.terminate();
        assert_eq!(status.and_then(|s| s.code()), Some(0), "optin serve should exit 0 on SIGTERM; log:\n{}", self.log());
        self.home.take().expect("the home")
    }

    /// Kills the agent with SIGKILL (no chance to flush anything) and hands the home back.
    pub fn kill_hard(mut self) -> Home {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.home.take().expect("the home")
    }

    fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
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
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// Asserts the answer is the bearer challenge of a refused token.
#[track_caller]
pub fn assert_unauthorized(response: &Response, what: &str) {
    assert_eq!(response.status.as_u16(), 401, "{what}: expected 401, got {} {}", response.status, response.text());
    assert_eq!(response.header("www-authenticate"), Some(r#"Bearer error="invalid_token""#), "{what}: 401 must carry the bearer challenge");
    let problem = response.problem().unwrap_or_else(|| panic!("{what}: 401 body is not problem+json: {}", response.text()));
    assert_eq!(problem.status, 401, "{what}");
}

/// Asserts the answer is a problem with `status` naming `field`.
#[track_caller]
pub fn assert_problem(response: &Response, status: u16, field: &str, what: &str) -> optin_protocol::problem::Problem {
    assert_eq!(response.status.as_u16(), status, "{what}: expected {status}, got {} {}", response.status, response.text());
    let problem = response.problem().unwrap_or_else(|| panic!("{what}: body is not problem+json: {}", response.text()));
    assert_eq!(problem.status, status, "{what}");
    assert_eq!(problem.field.as_deref(), Some(field), "{what}: the problem should name the field: {problem:?}");
    problem
}

/// Now, to the second: the wire format has no fractions, so fixtures never have them.
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc().replace_nanosecond(0).expect("0 is a valid nanosecond")
}

/// RFC 3339 in UTC.
pub fn ts(at: OffsetDateTime) -> String {
    optin_protocol::timestamp::format(at)
}

/// Signals to feed, written relative to the moment a test runs.
pub mod fixture {
    use serde_json::{json, Value};
    use time::{Duration, OffsetDateTime};

    use super::ts;

    /// `hours` before `now`.
    pub fn ago(now: OffsetDateTime, hours: i64) -> OffsetDateTime {
        now - Duration::hours(hours)
    }

    /// A search.
    pub fn search(id: &str, at: OffsetDateTime, query: &str, engine: &str, category: &str) -> Value {
        json!({"id": id, "kind": "search", "at": ts(at), "source": "test", "category": category, "query": query, "engine": engine})
    }

    /// A cart of one item.
    pub fn cart(id: &str, at: OffsetDateTime, merchant: &str, item: &str, price: &str) -> Value {
        json!({
            "id": id, "kind": "cart", "at": ts(at), "source": "test", "category": "Apparel & Accessories > Shoes",
            "merchant": merchant, "currency": "EUR",
            "items": [{"name": item, "sku": format!("SKU-{id}"), "price": price, "quantity": 1}],
        })
    }

    /// A purchase of one item.
    pub fn purchase(id: &str, at: OffsetDateTime, merchant: &str, item: &str, price: &str) -> Value {
        json!({
            "id": id, "kind": "purchase", "at": ts(at), "source": "test", "category": "Apparel & Accessories > Shoes",
            "merchant": merchant, "currency": "EUR", "total": price, "order_id": format!("order-{id}"),
            "items": [{"name": item, "price": price, "quantity": 1}],
        })
    }

    /// Lines of NDJSON.
    pub fn ndjson(signals: &[Value]) -> String {
        signals.iter().map(|s| format!("{s}\n")).collect()
    }

    /// What identifies a signal across the store and slices, whatever id a grant gives it:
    /// kind, time and what it was about (query or merchant).
    pub fn key(signal: &Value) -> String {
        let kind = signal["kind"].as_str().unwrap_or("?");
        let about = match kind {
            "search" => &signal["query"],
            _ => &signal["merchant"],
        };
        format!("{kind} {} {}", signal["at"].as_str().unwrap_or("?"), about.as_str().unwrap_or("?"))
    }

    /// The walk-through's signals: what a week of shopping for running shoes leaves behind.
    /// Granting `search,cart` over 30 days shares exactly [`WALKTHROUGH_SHARED`] of them.
    pub fn walkthrough(now: OffsetDateTime) -> Vec<Value> {
        vec![
            search("s1", ago(now, 30), "trail running shoes wide fit", "duckduckgo.com", "Apparel & Accessories > Shoes"),
            search("s2", ago(now, 20), "ridgeline gtx review", "google.com", "Apparel & Accessories > Shoes"),
            cart("c1", ago(now, 29), "trailshoes.example", "Ridgeline GTX 44W", "139.00"),
            purchase("p1", ago(now, 10), "trailshoes.example", "Ridgeline GTX 44W", "139.00"),
            cart("c2", ago(now, 50), "soundshop.example", "OpenRun headphones", "119.99"),
            search("s3", ago(now, 45 * 24), "winter boots", "bing.com", "Apparel & Accessories > Shoes"),
            cart("c3", ago(now, 3), "outdoor-gear.example", "Featherlite 2 tent", "289.00"),
        ]
    }

    /// The ids of [`walkthrough`] a `search,cart` grant over 30 days shares, with the state
    /// of each cart.
    pub const WALKTHROUGH_SHARED: [(&str, Option<&str>); 5] =
        [("s1", None), ("s2", None), ("c1", Some("purchased")), ("c2", Some("abandoned")), ("c3", Some("open"))];

    /// The signal of `id` in `signals`.
    pub fn by_id<'a>(signals: &'a [Value], id: &str) -> &'a Value {
        signals.iter().find(|s| s["id"] == id).unwrap_or_else(|| panic!("no fixture signal {id}"))
    }
}

/// The key of a slice item (see [`fixture::key`]), with the cart state if any.
pub fn item_key(item: &optin_protocol::slice::SliceItem) -> String {
    let value = serde_json::to_value(item).expect("slice items serialize");
    fixture::key(&value)
}

/// The raw items of a slice as `(key, state)` pairs, sorted.
pub fn raw_items(claims: &optin_protocol::slice::SliceClaims) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = claims
        .items
        .iter()
        .map(|item| match item {
            optin_protocol::slice::SliceItem::Raw(raw) => {
                let state = raw.state.map(|s| serde_json::to_value(s).expect("states serialize").as_str().unwrap_or("?").to_owned());
                (item_key(item), state)
            }
            other => panic!("expected raw items, got {other:?}"),
        })
        .collect();
    out.sort();
    out
}

/// Fetches every page of a slice for `bundle` with `query`, verified.
pub async fn fetch(agent: &Agent, bundle: &GrantBundle, query: &str) -> Vec<(String, optin_protocol::slice::SliceClaims)> {
    optin_examples::fetch_slices(&agent.client(), bundle, query).await.unwrap_or_else(|e| panic!("fetching the slice failed: {e}\nagent log:\n{}", agent.log()))
}

/// Fetches every page and returns the raw items' keys and states, sorted.
pub async fn fetch_raw(agent: &Agent, bundle: &GrantBundle) -> Vec<(String, Option<String>)> {
    let pages = fetch(agent, bundle, "").await;
    let mut all: Vec<(String, Option<String>)> = pages.iter().flat_map(|(_, c)| raw_items(c)).collect();
    all.sort();
    all
}
