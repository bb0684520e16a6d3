//! The browser's way in: `optin native-host` spoken to as the browser does (length-prefixed
//! JSON on stdin/stdout), and `optin browser install|status|uninstall`.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

use optin_tests::{assert_unauthorized, now, optin_bin, ts, Agent, Home, Out};

const EXTENSION_ID: &str = include_str!("../../extension/EXTENSION_ID");
/// The version of optin under test: the workspace's, which the tests package shares.
const VERSION: &str = env!("CARGO_PKG_VERSION");

fn origin() -> String {
    format!("chrome-extension://{}/", EXTENSION_ID.trim())
}

/// A native host started the way Chromium starts it: one argument, the caller's origin.
struct Host {
    command: String,
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

impl Host {
    fn start(program: &Path, pre_args: &[&str], caller: &str) -> Host {
        let mut child = tokio::process::Command::new(program)
            .args(pre_args)
            .arg(caller)
            .env_remove("OPTIN_HOME")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the native host");
        let stdin = child.stdin.take().expect("stdin");
        let stdout = child.stdout.take().expect("stdout");
        let command = format!("{} {} {caller:?}", program.display(), pre_args.join(" "));
        Host { command, child, stdin, stdout }
    }

    fn for_home(home: &Path) -> Host {
        let home = home.to_str().expect("a UTF-8 path").to_owned();
        Host::start(&optin_bin(), &["--home", &home, "native-host"], &origin())
    }

    async fn send_raw(&mut self, body: &[u8]) {
        let len = u32::try_from(body.len()).expect("small").to_ne_bytes();
        self.stdin.write_all(&len).await.expect("write length");
        self.stdin.write_all(body).await.expect("write body");
        self.stdin.flush().await.expect("flush");
    }

    async fn receive(&mut self) -> Value {
        let read = async {
            let mut len = [0u8; 4];
            self.stdout.read_exact(&mut len).await?;
            let mut body = vec![0u8; u32::from_ne_bytes(len) as usize];
            self.stdout.read_exact(&mut body).await?;
            Ok::<_, std::io::Error>(body)
        };
        let body = tokio::time::timeout(Duration::from_secs(30), read).await.expect("a reply within 30 s").expect("a framed reply");
        serde_json::from_slice(&body).expect("a JSON reply")
    }

    async fn ask(&mut self, message: Value) -> Value {
        self.send_raw(message.to_string().as_bytes()).await;
        let reply = self.receive().await;
        assert_eq!(reply["id"], message["id"], "the reply echoes the id: {reply}");
        reply
    }

    /// Closes the host's standard input, as the browser does when it is done, and waits for
    /// the exit: what the host printed after the last reply, and its standard error.
    async fn finish(mut self) -> Out {
        drop(self.stdin);
        let mut stderr_pipe = self.child.stderr.take().expect("stderr");
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let done = async {
            let (out, err) = tokio::join!(self.stdout.read_to_end(&mut stdout), stderr_pipe.read_to_end(&mut stderr));
            out.and(err)?;
            self.child.wait().await
        };
        let status = tokio::time::timeout(Duration::from_secs(15), done).await.expect("the host exits when stdin closes").expect("wait");
        Out {
            command: self.command,
            code: status.code(),
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
        }
    }
}

fn search(id: &str, query: &str) -> Value {
    json!({"id": id, "kind": "search", "at": ts(now()), "query": query, "engine": "duckduckgo.com", "source": "extension"})
}

fn cart(id: &str, host: &str) -> Value {
    json!({"id": id, "kind": "cart", "at": ts(now()), "merchant": host, "currency": "EUR", "source": "extension",
           "items": [{"name": "Trail X", "price": "89.9", "quantity": 1}]})
}

#[tokio::test]
async fn native_host_forwards_to_the_running_agent() {
    let agent = Agent::start().await;
    let mut host = Host::for_home(agent.home().path());

    let hello = host.ask(json!({"type": "hello", "id": 1, "version": "0.1.0"})).await;
    assert_eq!(hello["ok"], true, "{hello}");
    assert_eq!(hello["agent"], "running", "{hello}");

    let batch = json!({"type": "signals", "id": 2, "signals": [search("ext-1", "tent"), cart("ext-2", "www.shop.example.co.uk")]});
    let stored = host.ask(batch.clone()).await;
    assert_eq!((stored["ok"].clone(), stored["stored"].clone(), stored["duplicates"].clone()), (json!(true), json!(2), json!(0)), "{stored}");
    // The extension resends what it did not see acknowledged: nothing is stored twice.
    let again = host.ask(json!({"type": "signals", "id": 3, "signals": batch["signals"]})).await;
    assert_eq!((again["stored"].clone(), again["duplicates"].clone()), (json!(0), json!(2)), "{again}");
    let listed = list(agent.cli(&["signals", "--json"]).await.json());
    assert_eq!(listed.len(), 2);
    let cart = listed.iter().find(|s| s["id"] == "ext-2").expect("the cart");
    assert_eq!(cart["merchant"], "example.co.uk", "the merchant is the registrable domain");

    // Grants are listed by their terms only: never a token or key.
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let grants = host.ask(json!({"type": "grants", "id": 4})).await;
    assert_eq!(grants["grants"][0]["grant_id"], bundle.grant_id.as_str(), "{grants}");
    assert_eq!(grants["grants"][0]["state"], "active");
    let text = grants.to_string();
    assert!(!text.contains("optin_") && !text.contains("token") && !text.contains(&bundle.jwk.x), "the host leaked a secret: {text}");

    // Revoke from the extension: the marketer's next request is refused.
    assert_eq!(agent.get("/v1/slice", Some(&bundle.token)).await.status, 200);
    let revoked = host.ask(json!({"type": "revoke", "id": 5, "grant_id": bundle.grant_id.as_str()})).await;
    assert_eq!(revoked["ok"], true, "{revoked}");
    assert_unauthorized(&agent.get("/v1/slice", Some(&bundle.token)).await, "a grant revoked from the extension");

    host.finish().await.ok();
}

#[tokio::test]
async fn native_host_writes_to_the_store_when_no_agent_runs() {
    let home = Home::new();
    let mut host = Host::for_home(home.path());
    let hello = host.ask(json!({"type": "hello", "id": 1})).await;
    assert_eq!(hello["agent"], "stopped", "{hello}");
    let stored = host.ask(json!({"type": "signals", "id": 2, "signals": [search("off-1", "offline tent")]})).await;
    assert_eq!(stored["stored"], 1, "{stored}");
    // The host closed the store after the write: the CLI (and an agent) can open it at once,
    // while the host is still running.
    let listed = list(home.cli(&["signals", "--json"]).await.json());
    assert_eq!(listed.iter().map(|s| s["id"].clone()).collect::<Vec<_>>(), vec![json!("off-1")]);
    let agent = home.serve(&[]).await;
    let listed = list(agent.cli(&["signals", "--json"]).await.json());
    assert_eq!(listed.len(), 1, "the signal written without an agent is there when it starts");
    let hello = host.ask(json!({"type": "hello", "id": 3})).await;
    assert_eq!(hello["agent"], "running", "{hello}");
    host.finish().await.ok();
}

#[tokio::test]
async fn rejects_bad_messages_and_changes_nothing() {
    let agent = Agent::start().await;
    let mut host = Host::for_home(agent.home().path());
    for (message, needle) in [
        (json!({"type": "signals", "id": 3, "signals": []}), "1 to 100"),
        (json!({"type": "signals", "id": 4, "signals": "all of them"}), "list"),
        (json!({"type": "revoke", "id": 5, "grant_id": "g_nope"}), "grant id"),
        (json!({"type": "revoke", "id": 6, "grant_id": "g_000000000000000000000000"}), "no grant"),
        (json!({"type": "launch-missiles", "id": 7}), "unknown message type"),
        (json!({"id": 8}), "missing field `type`"),
    ] {
        let reply = host.ask(message.clone()).await;
        assert_eq!(reply["ok"], false, "{message} -> {reply}");
        assert!(reply["retry"].is_null(), "a bad message is not to be retried: {reply}");
        assert!(reply["error"].as_str().is_some_and(|e| e.contains(needle)), "{message} -> {reply}, expected `{needle}`");
    }
    host.send_raw(b"{not json").await;
    assert_eq!(host.receive().await, json!({"ok": false, "error": "message is not JSON: key must be a string at line 1 column 2"}));
    host.send_raw(br#"{"type": "hello"}"#).await;
    assert_eq!(host.receive().await, json!({"ok": false, "error": "message has no numeric id"}));
    assert!(list(agent.cli(&["signals", "--json"]).await.json()).is_empty(), "nothing was stored");
    host.finish().await.ok();
}

/// Page data is untrusted: a string no Rust string can hold (a lone surrogate escape) costs
/// the signal that holds it, or the frame when it is in the frame's own fields; either way
/// the reply carries the frame's id, the host serves the next frame, and its log says what
/// was wrong without saying what the frame held.
#[tokio::test]
async fn a_frame_that_cannot_be_read_is_answered_under_its_id_and_the_next_is_served() {
    let agent = Agent::start().await;
    let mut host = Host::for_home(agent.home().path());
    let mut forged = cart("forged-1", "shop.example");
    forged["items"][0]["name"] = json!("PLACEHOLDER");
    let forged = forged.to_string().replace("PLACEHOLDER", r"\udc00");
    let frame = format!(r#"{{"type":"signals","id":1,"signals":[{},{forged}]}}"#, search("page-1", "zeppelin tent"));
    host.send_raw(frame.as_bytes()).await;
    let reply = host.receive().await;
    assert_eq!((reply["id"].clone(), reply["ok"].clone(), reply["stored"].clone()), (json!(1), json!(true), json!(1)), "{reply}");
    assert_eq!(reply["rejected"][0]["index"], 1, "{reply}");
    assert_eq!(reply["rejected"][0]["id"], "forged-1", "{reply}");
    assert!(reply["rejected"][0]["error"].as_str().is_some_and(|e| e.starts_with("signals[1]: not JSON: lone leading surrogate")), "{reply}");

    let unreadable: [(&str, &str); 2] = [
        (r#"{"id":2,"type":"\udc00","signals":[{"query":"zeppelin"}]}"#, "`type` must be a string"),
        (r#"{"id":3,"type":"signals","signals":[{"query":"zeppelin"#, "message is not JSON: EOF while parsing a string at line 1 column 54"),
    ];
    for (id, (frame, error)) in (2..).zip(unreadable) {
        host.send_raw(frame.as_bytes()).await;
        assert_eq!(host.receive().await, json!({"id": id, "ok": false, "error": error}), "{frame}");
    }
    let hello = host.ask(json!({"type": "hello", "id": 4})).await;
    assert_eq!(hello["agent"], "running", "{hello}");
    let listed = list(agent.cli(&["signals", "--json"]).await.json());
    assert_eq!(listed.iter().map(|s| s["id"].clone()).collect::<Vec<_>>(), [json!("page-1")]);

    let out = host.finish().await;
    let log = without_colours(&out.stderr);
    for (frame, _) in unreadable {
        assert!(log.contains(&format!("refused a frame from the extension bytes={}", frame.len())), "{log}");
    }
    assert!(!log.contains("zeppelin") && !log.contains("udc00"), "the log holds page data: {log}");
}

#[tokio::test]
async fn a_bad_signal_is_rejected_alone_and_the_good_ones_are_stored() {
    let agent = Agent::start().await;
    let mut host = Host::for_home(agent.home().path());
    let mut bad = cart("ctl-1", "shop.example");
    bad["items"][0]["name"] = json!("Trail\u{7}X");
    let batch = json!({"type": "signals", "id": 1, "signals": [search("good-1", "tent"), bad, search("good-2", "stove")]});
    let reply = host.ask(batch).await;
    let rejected = json!([{"index": 1, "id": "ctl-1", "error": "signals[1].items[0].name: contains control or bidirectional formatting characters"}]);
    assert_eq!(reply, json!({"id": 1, "ok": true, "stored": 2, "duplicates": 0, "rejected": rejected}));
    let mut ids: Vec<Value> = list(agent.cli(&["signals", "--json"]).await.json()).iter().map(|s| s["id"].clone()).collect();
    ids.sort_by_key(Value::to_string);
    assert_eq!(ids, [json!("good-1"), json!("good-2")]);
    host.finish().await.ok();
}

#[tokio::test]
async fn an_oversized_frame_is_refused_and_the_host_keeps_serving() {
    let agent = Agent::start().await;
    let mut host = Host::for_home(agent.home().path());
    // The limit the extension shares with the host, and a frame one byte over it.
    let limits: Value = serde_json::from_str(include_str!("../../extension/limits.json")).expect("limits.json is JSON");
    let limit = usize::try_from(limits["native_messaging"]["message_bytes"].as_u64().expect("a limit")).expect("a size");
    let head = r#"{"type":"signals","id":1,"signals":[],"padding":""#;
    let mut frame = head.as_bytes().to_vec();
    frame.resize(limit + 1 - 2, b'a');
    frame.extend_from_slice(br#""}"#);
    host.send_raw(&frame).await;
    assert_eq!(host.receive().await, json!({"id": 1, "ok": false, "error": format!("message of {} bytes exceeds {limit}", limit + 1)}));
    let stored = host.ask(json!({"type": "signals", "id": 2, "signals": [search("after-1", "tent")]})).await;
    assert_eq!(stored, json!({"id": 2, "ok": true, "stored": 1, "duplicates": 0, "rejected": []}));
    host.finish().await.ok();
}

/// A page cannot flood the store: the agent takes the extension's new signals up to its
/// daily quota, from `extension/limits.json`, and refuses the rest with `quota:`; duplicates
/// count nothing, and the owner's own `optin ingest` is not limited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_quota_refuses_the_signal_after_the_last_of_the_day() {
    let limits: Value = serde_json::from_str(include_str!("../../extension/limits.json")).expect("limits.json is JSON");
    let per_day = limits["agent"]["extension_signals_per_day"].as_u64().expect("a quota");
    let per_message = limits["native_messaging"]["signals_per_message"].as_u64().expect("a limit");
    let agent = Agent::start().await;
    let mut host = Host::for_home(agent.home().path());
    // The quota is per UTC day: a run does not start so close to midnight that it could cross it.
    let midnight = now().date().next_day().expect("a next day").midnight().assume_utc();
    if midnight - now() < time::Duration::minutes(2) {
        tokio::time::sleep((midnight - now()).unsigned_abs() + Duration::from_secs(1)).await;
    }
    let mut next = (0..).map(|i| search(&format!("q-{i}"), &format!("query {i}")));
    let mut id = 0;
    for _ in 0..per_day / per_message {
        id += 1;
        let batch: Vec<Value> = next.by_ref().take(per_message as usize).collect();
        let reply = host.ask(json!({"type": "signals", "id": id, "signals": batch})).await;
        assert_eq!((reply["stored"].clone(), reply["rejected"].clone()), (json!(per_message), json!([])), "{reply}");
    }
    let over = host.ask(json!({"type": "signals", "id": id + 1, "signals": [search("q-0", "query 0"), next.next()]})).await;
    assert_eq!((over["ok"].clone(), over["stored"].clone(), over["duplicates"].clone()), (json!(true), json!(0), json!(1)), "{over}");
    assert_eq!(over["rejected"][0]["index"], 1, "{over}");
    assert_eq!(over["rejected"][0]["id"], format!("q-{per_day}"), "{over}");
    assert!(over["rejected"][0]["error"].as_str().is_some_and(|e| e.starts_with("quota:")), "{over}");

    let file = agent.home().scratch("mine.ndjson");
    let mine: String = (0..3).map(|i| format!("{}\n", search(&format!("mine-{i}"), "my own"))).collect();
    std::fs::write(&file, mine).expect("write");
    assert_eq!(agent.cli(&["ingest", file.to_str().expect("utf-8")]).await.ok().trim(), "stored 3 signals (0 already present)");
    host.finish().await.ok();
}

/// Opens the store of `home` with sled itself and keeps it, as another process holding it
/// would: optin cannot open it until the handle is dropped.
fn hold_store(home: &Path) -> sled::Db {
    // The host closed the store a moment ago, but sled's own threads may keep its lock a
    // little longer: wait for them, as optin does.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match sled::open(home.join("store")) {
            Ok(db) => return db,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("cannot open the store: {e}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_held_elsewhere_is_retried_and_a_bad_signal_is_refused() {
    let home = Home::new();
    let mut host = Host::for_home(home.path());
    // No agent runs: the first batch makes the store, and the host closes it again.
    let first = host.ask(json!({"type": "signals", "id": 1, "signals": [search("held-1", "tent")]})).await;
    assert_eq!(first, json!({"id": 1, "ok": true, "stored": 1, "duplicates": 0, "rejected": []}));

    let store = hold_store(home.path());
    let batch = json!([search("held-2", "headlamp")]);
    // Nothing is wrong with the batch: the extension keeps it and sends it again.
    let busy = host.ask(json!({"type": "signals", "id": 2, "signals": batch})).await;
    let in_use = format!(
        "the agent is not running and the store cannot be opened: the store at {} is in use by another process \
         (is `optin serve` running without its admin socket?)",
        home.path().join("store").display()
    );
    assert_eq!(busy, json!({"id": 2, "ok": false, "retry": true, "error": in_use}));
    // A bad signal is rejected for good, store or no store: sending it again cannot help.
    let bad = host.ask(json!({"type": "signals", "id": 3, "signals": [{"id": "held-3", "kind": "search", "at": "then"}]})).await;
    let rejected = json!([{"index": 0, "id": "held-3", "error": "signals[0].at: `then` is not an RFC 3339 timestamp"}]);
    assert_eq!(bad, json!({"id": 3, "ok": true, "stored": 0, "duplicates": 0, "rejected": rejected}));

    drop(store);
    let stored = host.ask(json!({"type": "signals", "id": 4, "signals": batch})).await;
    assert_eq!(stored, json!({"id": 4, "ok": true, "stored": 1, "duplicates": 0, "rejected": []}));
    let mut ids: Vec<Value> = list(home.cli(&["signals", "--json"]).await.json()).iter().map(|s| s["id"].clone()).collect();
    ids.sort_by_key(Value::to_string);
    assert_eq!(ids, [json!("held-1"), json!("held-2")]);
    host.finish().await.ok();
}

/// An agent of another version of optin on the admin socket of `home`: it answers every
/// request with a reply of another kind (`forgot`) than the request's.
fn skewed_agent(home: &Path) -> tokio::task::JoinHandle<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(home).expect("make the home");
    let listener = tokio::net::UnixListener::bind(home.join("admin.sock")).expect("bind the admin socket");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (read, mut write) = stream.into_split();
            let mut request = String::new();
            if BufReader::new(read).read_line(&mut request).await.is_ok() {
                let _ = write.write_all(b"{\"ok\":{\"result\":\"forgot\",\"count\":0}}\n").await;
            }
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_of_the_wrong_kind_is_retried() {
    let home = Home::new();
    let agent = skewed_agent(home.path());
    let mut host = Host::for_home(home.path());
    let hello = host.ask(json!({"type": "hello", "id": 1})).await;
    assert_eq!(hello, json!({"id": 1, "ok": true, "agent": "running", "version": VERSION}));
    // Version skew, not bad input: the extension keeps what it sent.
    for (id, message) in [
        (2, json!({"type": "signals", "id": 2, "signals": [search("skew-1", "tent")]})),
        (3, json!({"type": "grants", "id": 3})),
        (4, json!({"type": "revoke", "id": 4, "grant_id": "g_000000000000000000000000"})),
    ] {
        let reply = host.ask(message).await;
        let error = "unexpected answer from the agent (is it another version of optin?)";
        assert_eq!(reply, json!({"id": id, "ok": false, "retry": true, "error": error}));
    }
    host.finish().await.ok();
    agent.abort();
}

#[tokio::test]
async fn rejects_callers_other_than_the_extension() {
    let home = Home::new();
    for caller in ["chrome-extension://aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/", "someone@else.example", ""] {
        let path = home.path().to_str().expect("utf-8").to_owned();
        let mut host = Host::start(&optin_bin(), &["--home", &path, "native-host"], caller);
        host.send_raw(json!({"type": "hello", "id": 1}).to_string().as_bytes()).await;
        let out = host.finish().await;
        assert!(out.stdout.is_empty(), "no answer to {caller:?}");
        out.fails(1, "refusing");
    }
}

#[tokio::test]
async fn browser_install_status_uninstall() {
    let home = Home::new();
    let fake_user = home.scratch("user-home");
    std::fs::create_dir_all(&fake_user).expect("mkdir");
    let run = |args: &'static [&'static str]| home.command(args).env("HOME", &fake_user).run();

    let out = run(&["browser", "status"]).await;
    let status = out.ok();
    assert!(status.contains("chromium: not installed") && status.contains("never connected"), "{status}");

    let out = run(&["browser", "install"]).await;
    let installed = out.ok();
    assert_eq!(installed.lines().count(), 3, "one manifest per browser: {installed}");
    for (dir, key, allowed) in [
        (".config/chromium/NativeMessagingHosts", "allowed_origins", origin()),
        (".config/google-chrome/NativeMessagingHosts", "allowed_origins", origin()),
        (".mozilla/native-messaging-hosts", "allowed_extensions", "optin@optin.dev".to_owned()),
    ] {
        let path = fake_user.join(dir).join("dev.optin.agent.json");
        let manifest: Value = serde_json::from_str(&std::fs::read_to_string(&path).expect("manifest written")).expect("JSON");
        assert_eq!(manifest["name"], "dev.optin.agent");
        assert_eq!(manifest["type"], "stdio");
        assert_eq!(manifest[key], json!([allowed]), "{}", path.display());
        let launcher = Path::new(manifest["path"].as_str().expect("a path"));
        assert!(launcher.is_absolute(), "browsers need an absolute path: {}", launcher.display());
        use std::os::unix::fs::PermissionsExt;
        assert!(std::fs::metadata(launcher).expect("launcher").permissions().mode() & 0o100 != 0, "the launcher is executable");
    }

    // The launcher the manifest names really starts the host for this home.
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(fake_user.join(".config/chromium/NativeMessagingHosts/dev.optin.agent.json")).expect("manifest"))
            .expect("JSON");
    let mut host = Host::start(Path::new(manifest["path"].as_str().expect("path")), &[], &origin());
    let stored = host.ask(json!({"type": "signals", "id": 1, "signals": [search("via-launcher", "headlamp")]})).await;
    assert_eq!(stored["stored"], 1, "{stored}");
    host.finish().await.ok();
    assert_eq!(list(home.cli(&["signals", "--json"]).await.json()).len(), 1);

    let out = run(&["browser", "status"]).await;
    let status = out.ok();
    assert!(status.contains("chromium: installed at") && status.contains("firefox: installed at"), "{status}");
    assert!(status.contains("extension last connected: ") && status.contains(" (chromium)\n"), "{status}");
    assert!(status.contains("agent: not running"), "{status}");
    // A damaged record is only a display: the status says so and goes on.
    let record = home.path().join("browser/last-connection.json");
    std::fs::write(&record, "{").expect("damage the record");
    let status = run(&["browser", "status"]).await.ok().to_owned();
    assert!(status.contains(&format!("\nextension last connected: unknown ({} cannot be read)\n", record.display())), "{status}");

    let out = run(&["browser", "uninstall", "--browser", "firefox"]).await;
    assert!(out.ok().contains("native-messaging-hosts"), "{}", out.stdout);
    let out = run(&["browser", "status"]).await;
    let status = out.ok();
    assert!(status.contains("firefox: not installed") && status.contains("chromium: installed"), "{status}");
    let out = run(&["browser", "uninstall"]).await;
    assert_eq!(out.ok().lines().count(), 2, "{}", out.stdout);
    run(&["browser", "install", "--browser", "netscape"]).await.fails(2, "invalid value 'netscape' for '--browser");
}

#[tokio::test]
async fn browser_install_into_a_profile_directory() {
    let home = Home::new();
    let dir = home.scratch("profile/NativeMessagingHosts");
    let out = home.cli(&["browser", "install", "--browser", "chromium", "--manifest-dir", dir.to_str().expect("utf-8")]).await;
    out.ok();
    assert!(dir.join("dev.optin.agent.json").is_file());
    let status = home.cli(&["browser", "status", "--manifest-dir", dir.to_str().expect("utf-8")]).await;
    assert!(status.ok().contains("chromium: installed"), "{}", status.stdout);
}

/// `text` without its ANSI colour sequences (`ESC [ … m`).
fn without_colours(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("\x1b[") {
        out.push_str(&rest[..start]);
        rest = rest[start..].find('m').map_or("", |end| &rest[start + end + 1..]);
    }
    out.push_str(rest);
    out
}

/// The array `optin signals --json` prints.
fn list(v: Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_else(|| panic!("not a JSON array: {v}"))
}
