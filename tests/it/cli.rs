//! The CLI as a person meets it: pipes that close early, completions and the man page,
//! `status`, bundles printed again or written to private files, forgetting by span and
//! everything, a home that is not there, colour, other people's text on a terminal, and
//! tables that count right.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use optin_protocol::bundle::GrantBundle;
use optin_tests::fixture::{self, ago, search};
use optin_tests::{fetch, now, optin_bin, ts, Agent, Home};

const ESC: char = '\u{1b}';
/// The version of optin under test: the workspace's, which the tests package shares.
const VERSION: &str = env!("CARGO_PKG_VERSION");
const RLO: char = '\u{202e}';

/// The JSON array `optin signals --json` prints, as ids.
fn ids(listing: &Value) -> Vec<String> {
    listing.as_array().expect("an array").iter().map(|s| s["id"].as_str().expect("an id").to_owned()).collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())).permissions().mode() & 0o777
}

/// Single-quoted for `sh -c`.
fn quoted(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a command printed on a terminal: run under `script`, which gives it a
/// pseudo-terminal for standard input and output and feeds it `input` as typed.
struct OnTerminal {
    code: Option<i32>,
    screen: String,
}

async fn on_terminal(home: &Home, args: &[&str], input: &str, no_color: Option<&str>) -> OnTerminal {
    let mut line = format!("{} --home {}", quoted(optin_bin().to_str().expect("utf-8")), quoted(home.path().to_str().expect("utf-8")));
    for arg in args {
        line.push(' ');
        line.push_str(&quoted(arg));
    }
    let input_file = home.scratch(&format!("typed-{}", args.join("-")));
    std::fs::write(&input_file, input).expect("write the input");
    let mut command = tokio::process::Command::new("script");
    command.args(["-q", "-e", "-c", &line, "/dev/null"]).env_remove("OPTIN_HOME").env_remove("NO_COLOR");
    if let Some(value) = no_color {
        command.env("NO_COLOR", value);
    }
    command.stdin(std::fs::File::open(&input_file).expect("input")).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(30), command.output())
        .await
        .expect("done within 30 s")
        .expect("script runs (util-linux's, from Debian's bsdutils)");
    OnTerminal { code: output.status.code(), screen: String::from_utf8_lossy(&output.stdout).into_owned() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_pipe_is_not_an_error() {
    let home = Home::new();
    let t = now();
    // Far more than a pipe holds (64 KiB), so the command is still writing when the reader
    // goes away.
    let signals: Vec<Value> = (0..3000).map(|i| search(&format!("s{i}"), ago(t, 1), &format!("search number {i} for a pipe"), "bing.com", "Home")).collect();
    let batch = home.scratch("many.ndjson");
    std::fs::write(&batch, fixture::ndjson(&signals)).expect("write the batch");
    home.cli(&["ingest", batch.to_str().expect("utf-8")]).await.ok();

    for args in [vec!["signals"], vec!["signals", "--json"], vec!["signals", "--kind", "search"]] {
        let mut child = Command::new(optin_bin())
            .arg("--home")
            .arg(home.path())
            .args(&args)
            .env_remove("OPTIN_HOME")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start optin");
        let mut first = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut first).expect("a first line");
        // Dropping the reader closes the pipe, as `head -1` does once it has its line.
        assert!(!first.is_empty(), "{args:?} printed something");
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(Instant::now() < deadline, "{args:?} did not exit after its reader went away");
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut stderr).expect("stderr");
        assert_eq!(status.code(), Some(0), "{args:?}: a closed pipe is success; stderr: {stderr}");
        assert!(stderr.is_empty(), "{args:?}: nothing to say about it, least of all a panic: {stderr}");
    }
}

#[tokio::test]
async fn completions_for_each_shell_and_a_man_page() {
    let home = Home::new();
    for (shell, marker) in [("bash", "complete -F _optin"), ("zsh", "#compdef optin"), ("fish", "complete -c optin")] {
        let out = home.cli(&["completions", shell]).await;
        let script = out.ok();
        assert!(script.contains(marker), "{shell}: {script}");
        for subcommand in ["grants", "status", "bundle"] {
            assert!(script.contains(subcommand), "{shell} completes `{subcommand}`");
        }
    }
    home.cli(&["completions", "tcsh"]).await.fails(2, "tcsh");

    let out = home.cli(&["man"]).await;
    let page = out.ok();
    // The title line: name, section 1, and this version in the footer.
    let title = page.lines().find(|l| l.starts_with(".TH")).map(str::trim_end);
    assert_eq!(title, Some(format!(".TH optin 1  \"optin {VERSION}\"").as_str()), "roff: {}", &page[..page.len().min(200)]);
    for text in ["status", "bundle", "completions", "Exit codes"] {
        assert!(page.contains(text), "the man page mentions {text}");
    }
    assert!(!home.path().exists(), "neither command needs a home");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_says_whether_the_agent_runs_and_what_it_holds() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let bundle = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let revoked = agent.grant("globex.example", "search", "raw", "30d").await;
    agent.cli(&["revoke", revoked.grant_id.as_str()]).await.ok();
    let pages = fetch(&agent, &bundle, "").await;

    let running = agent.cli(&["status", "--json"]).await.json();
    let expected = json!({
        "home": agent.home().path().to_str().expect("utf-8"),
        "running": true,
        "version": VERSION,
        "agent_url": agent.url,
        "paused": false,
        "signals": {"search": 3, "cart": 3, "purchase": 1},
        "active_grants": 1,
        "served_last_24h": pages.len(),
        "extension_last_connected": null,
    });
    assert_eq!(running, expected);
    let text = agent.cli(&["status"]).await.ok().to_owned();
    for line in
        ["agent:     running", &format!("url:       {}", agent.url), "sharing:   on", "signals:   7 (3 searches, 3 carts, 1 purchase)", "grants:    1 active"]
    {
        assert!(text.contains(line), "status shows {line:?}:\n{text}");
    }
    assert!(
        text.contains(&format!("served:    {} in the last 24 h", if pages.len() == 1 { "1 slice".to_owned() } else { format!("{} slices", pages.len()) })),
        "{text}"
    );

    agent.cli(&["pause"]).await.ok();
    let home = agent.stop();
    // What the native host records when the extension connects.
    std::fs::create_dir_all(home.path().join("browser")).expect("mkdir");
    std::fs::write(home.path().join("browser/last-connection.json"), r#"{"at":"2026-11-20T10:00:00Z","browser":"firefox"}"#).expect("write");

    let stopped = home.cli(&["status", "--json"]).await.json();
    let mut expected = expected;
    expected["running"] = json!(false);
    expected["paused"] = json!(true);
    expected["extension_last_connected"] = json!({"at": "2026-11-20T10:00:00Z", "browser": "firefox"});
    assert_eq!(stopped, expected, "the same counts from the store, the last address, and the extension");
    let text = home.cli(&["status"]).await.ok().to_owned();
    for line in ["agent:     not running", "(when it last ran)", "sharing:   paused", "extension: last connected 2026-11-20T10:00:00Z (firefox)"] {
        assert!(text.contains(line), "status shows {line:?}:\n{text}");
    }

    // A damaged record is only a display: the status says so and is shown whole.
    std::fs::write(home.path().join("browser/last-connection.json"), r#"{"at":"2026-11-20T10:00:00Z","browser":"netscape"}"#).expect("write");
    expected["extension_last_connected"] = json!("unknown");
    assert_eq!(home.cli(&["status", "--json"]).await.json(), expected);
    let text = home.cli(&["status"]).await.ok().to_owned();
    assert!(text.contains("extension: unknown: the record of its last connection cannot be read\n"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundles_print_again_and_go_to_private_files() {
    let agent = Agent::start().await;
    agent.ingest(&fixture::ndjson(&fixture::walkthrough(now()))).await;
    let original = agent.grant("acme.example", "search,cart", "raw", "30d").await;
    let id = original.grant_id.as_str().to_owned();

    // Printed again: the same bundle, token included, and it still fetches verified slices.
    let again = GrantBundle::parse(agent.cli(&["bundle", &id]).await.ok()).expect("a bundle");
    assert_eq!(serde_json::to_value(&again).expect("json"), serde_json::to_value(&original).expect("json"));
    assert_eq!(again.token, original.token);
    assert_eq!(fetch(&agent, &again, "").await[0].1.items.len(), 5, "the re-printed bundle works");

    // To a file: 0600, the bundle in it, no token on the screen.
    let file = agent.home().scratch("acme.json");
    let path = file.to_str().expect("utf-8");
    let out = agent.cli(&["bundle", &id, "--output", path]).await;
    assert!(out.ok().contains(path) && !out.stdout.contains(&original.token), "{}", out.stdout);
    assert_eq!(mode(&file), 0o600);
    let written = GrantBundle::parse(&std::fs::read_to_string(&file).expect("written")).expect("a bundle");
    assert_eq!(written.token, original.token);

    // An existing file is left alone, unless --force replaces it (whatever its mode was).
    std::fs::write(&file, "keep me").expect("write");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    agent.cli(&["bundle", &id, "--output", path]).await.fails(1, "already exists");
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "keep me");
    agent.cli(&["bundle", &id, "--output", path, "--force"]).await.ok();
    assert_eq!(mode(&file), 0o600, "the replacement is a new private file");
    assert_eq!(GrantBundle::parse(&std::fs::read_to_string(&file).expect("read")).expect("a bundle").token, original.token);

    // `grant --output`: the same, and the summary on the screen holds no token.
    let file = agent.home().scratch("globex.json");
    let path = file.to_str().expect("utf-8");
    let args =
        ["grant", "globex.example", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "90d", "--purpose", "p", "--output", path];
    let out = agent.cli(&args).await;
    let summary = out.ok();
    assert!(summary.starts_with("granted g_") && summary.contains(path), "{summary}");
    assert!(summary.contains("sees the same address and certificate"), "a pull grant says what it links: {summary}");
    assert_eq!(mode(&file), 0o600);
    let globex = GrantBundle::parse(&std::fs::read_to_string(&file).expect("written")).expect("a bundle");
    assert!(!summary.contains(&globex.token), "no token on the screen: {summary}");
    assert_eq!(fetch(&agent, &globex, "").await[0].1.items.len(), 2, "the written bundle works: the searches of 30 days");
    // A taken name or a missing directory is refused before any grant is made.
    let before = agent.cli(&["grants", "--json"]).await.json();
    agent.cli(&args).await.fails(1, "already exists");
    let nowhere = agent.home().scratch("no-such-dir/globex.json");
    let mut elsewhere = args.to_vec();
    *elsewhere.last_mut().expect("the path") = nowhere.to_str().expect("utf-8");
    agent.cli(&elsewhere).await.fails(1, "no-such-dir");
    assert_eq!(agent.cli(&["grants", "--json"]).await.json(), before, "no grant was made");

    // Nothing to print for a grant that serves nothing, or none at all.
    agent.cli(&["revoke", &id]).await.ok();
    agent.cli(&["bundle", &id]).await.fails(1, "revoked");
    agent.cli(&["bundle", "g_000000000000000000000000"]).await.fails(1, "no grant g_000000000000000000000000");
    agent.cli(&["bundle", "not-a-grant"]).await.fails(2, "not-a-grant");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_takes_spans_and_asks_before_everything() {
    let home = Home::new();
    let t = now();
    let signals = [
        search("s-100h", ago(t, 100), "oldest", "bing.com", "Home"),
        search("s-50h", ago(t, 50), "older", "bing.com", "Home"),
        search("s-5h", ago(t, 5), "newest", "bing.com", "Home"),
        search("s-2h", ago(t, 2), "newer still", "bing.com", "Home"),
    ];
    let batch = home.scratch("batch.ndjson");
    std::fs::write(&batch, fixture::ndjson(&signals)).expect("write");
    home.cli(&["ingest", batch.to_str().expect("utf-8")]).await.ok();
    let cutoff = ts(ago(t, 3));

    // (arguments, what is printed or the failure, what is left)
    type Step<'a> = (Vec<&'a str>, Result<&'a str, (i32, &'a str)>, Vec<&'a str>);
    let steps: Vec<Step> = vec![
        (vec!["--before", "3d"], Ok("forgot 1 signal"), vec!["s-50h", "s-5h", "s-2h"]),
        (vec!["--before", "1d"], Ok("forgot 1 signal"), vec!["s-5h", "s-2h"]),
        (vec!["--before", &cutoff], Ok("forgot 1 signal"), vec!["s-2h"]),
        (vec!["--before", "-1d"], Err((2, "`-1d` is neither a span")), vec!["s-2h"]),
        (vec!["--id", "no-such-signal"], Err((1, "no signal with id \"no-such-signal\"")), vec!["s-2h"]),
        (vec!["--all"], Err((2, "pass --yes")), vec!["s-2h"]),
        (vec!["--all", "--yes"], Ok("forgot 1 signal"), vec![]),
    ];
    for (args, expected, left) in steps {
        let mut all = vec!["forget"];
        all.extend(&args);
        let out = home.cli(&all).await;
        match expected {
            Ok(printed) => assert_eq!(out.ok().trim(), printed, "forget {args:?}"),
            Err((code, said)) => {
                out.fails(code, said);
            }
        }
        assert_eq!(ids(&home.cli(&["signals", "--json"]).await.json()), left, "after forget {args:?}");
    }

    // Typing `y` into a pipe is not a person answering.
    home.cli(&["ingest", batch.to_str().expect("utf-8")]).await.ok();
    home.command(&["forget", "--all"]).stdin(b"y\n").run().await.fails(2, "standard input is not a terminal");
    assert_eq!(ids(&home.cli(&["signals", "--json"]).await.json()).len(), 4, "nothing was forgotten");

    // On a terminal it asks, and only `y` forgets.
    let declined = on_terminal(&home, &["forget", "--all"], "n\n", None).await;
    assert_eq!(declined.code, Some(1), "{}", declined.screen);
    assert!(declined.screen.contains("forget all 4 signals for good? [y/N]") && declined.screen.contains("nothing was forgotten"), "{}", declined.screen);
    assert_eq!(ids(&home.cli(&["signals", "--json"]).await.json()).len(), 4, "nothing was forgotten");
    let confirmed = on_terminal(&home, &["forget", "--all"], "y\n", None).await;
    assert_eq!(confirmed.code, Some(0), "{}", confirmed.screen);
    assert!(confirmed.screen.contains("forgot 4 signals"), "{}", confirmed.screen);
    assert!(ids(&home.cli(&["signals", "--json"]).await.json()).is_empty());
}

#[tokio::test]
async fn commands_that_read_need_a_home() {
    let home = Home::new();
    let grant = "g_000000000000000000000000";
    for args in [
        vec!["signals"],
        vec!["signals", "--json"],
        vec!["grants"],
        vec!["audit"],
        vec!["audit", "--verify"],
        vec!["status"],
        vec!["status", "--json"],
        vec!["preview", grant],
        vec!["bundle", grant],
        vec!["revoke", grant],
        vec!["forget", "--id", "x"],
        vec!["forget", "--all", "--yes"],
        vec!["pause"],
        vec!["resume"],
    ] {
        let out = home.cli(&args).await;
        let said = out.fails(1, &format!("no optin home at {}", home.path().display()));
        assert!(said.starts_with("error: "), "{args:?}: {said}");
        assert!(out.stdout.is_empty(), "{args:?} shows nothing: {}", out.stdout);
        assert!(!home.path().exists(), "{args:?} made the home");
    }
    // Looking at the browser side needs none either, and makes none.
    home.cli(&["browser", "status", "--manifest-dir", home.scratch("hosts").to_str().expect("utf-8")]).await.ok();
    assert!(!home.path().exists(), "browser status made the home");

    // Starting to use optin makes it, private.
    home.cli(&["ingest-token"]).await.ok();
    assert_eq!(mode(home.path()), 0o700);
    assert!(home.cli(&["signals"]).await.ok().starts_with("no signals yet"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colour_only_where_it_is_wanted() {
    let home = Home::new();
    let batch = home.scratch("one.ndjson");
    std::fs::write(&batch, fixture::ndjson(&[search("s1", ago(now(), 1), "tent", "bing.com", "Home")])).expect("write");
    home.cli(&["ingest", batch.to_str().expect("utf-8")]).await.ok();

    // Off a terminal (the harness also sets NO_COLOR=1): only --color always colours.
    for (flag, coloured) in [(None, false), (Some("never"), false), (Some("auto"), false), (Some("always"), true)] {
        let mut args = vec!["signals"];
        if let Some(flag) = flag {
            args.extend(["--color", flag]);
        }
        let out = home.cli(&args).await;
        assert_eq!(out.ok().contains(ESC), coloured, "{args:?}: {:?}", out.stdout);
    }
    home.cli(&["signals", "--color", "sometimes"]).await.fails(2, "sometimes");
    // clap's own errors and help follow the flag too.
    for (flag, coloured) in [(None, false), (Some("--color=never"), false), (Some("--color=always"), true)] {
        let mut args: Vec<&str> = flag.into_iter().collect();
        args.extend(["signals", "--kind", "nope"]);
        let refused = home.cli(&args).await;
        assert_eq!(refused.fails(2, "nope").contains(ESC), coloured, "{args:?}: {:?}", refused.stderr);
        args.truncate(args.len() - 3);
        args.push("--help");
        let help = home.cli(&args).await;
        assert_eq!(help.ok().contains(ESC), coloured, "{args:?}: {:?}", help.stdout);
    }

    // On a terminal: colour unless NO_COLOR says otherwise (an empty NO_COLOR does not).
    for (flag, no_color, coloured) in
        [("auto", None, true), ("auto", Some("1"), false), ("auto", Some(""), true), ("never", None, false), ("always", Some("1"), true)]
    {
        let shown = on_terminal(&home, &["--color", flag, "signals"], "", no_color).await;
        assert_eq!(shown.code, Some(0), "{}", shown.screen);
        assert!(shown.screen.contains("tent"), "{}", shown.screen);
        assert_eq!(shown.screen.contains(ESC), coloured, "--color {flag} with NO_COLOR={no_color:?}: {:?}", shown.screen);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_peoples_text_is_inert_on_the_terminal() {
    let agent = Agent::start().await;
    let t = now();
    // Control characters and bidirectional overrides never get into the store: a query that
    // reads backwards from the override on is refused, naming the field.
    for (query, refusal) in [(format!("{ESC}[31mred"), "control"), (format!("cheap {RLO}exe.tnet"), "bidirectional")] {
        let file = agent.home().scratch("hostile.ndjson");
        std::fs::write(&file, fixture::ndjson(&[search("s1", ago(t, 1), &query, "bing.com", "Home")])).expect("write");
        agent.cli(&["ingest", file.to_str().expect("utf-8")]).await.fails(1, refusal);
    }
    // Nor in a marketer's name, which the person reads as an identity.
    let grant = ["grant", "acme\u{202e}elpmaxe.moc", "--kinds", "search", "--granularity", "raw", "--window", "30d", "--expires", "90d", "--purpose", "p"];
    agent.cli(&grant).await.fails(1, "printable characters");

    // What a marketer sends is kept as it came, in the audit log's refusal reason.
    let bundle = agent.grant("acme.example", "search", "raw", "30d").await;
    let refused = agent.get(&format!("/v1/slice?kinds=%1B%5B31m{}", "%E2%80%AE"), Some(&bundle.token)).await;
    assert_eq!(refused.status.as_u16(), 400, "{}", refused.text());
    let audit = agent.cli(&["audit", "--json"]).await.json();
    let reason = audit["records"].as_array().expect("array").iter().find(|r| r["event"]["type"] == "refused").expect("the refusal")["event"]["reason"].clone();
    assert!(reason.as_str().is_some_and(|r| r.contains(ESC) && r.contains(RLO)), "the raw text is what is kept: {reason}");

    // And shown inert: escaped on the terminal, escaped the JSON way in JSON.
    for (args, shown) in [(vec!["audit"], vec!["\\u{1b}[31m\\u{202e}"]), (vec!["status"], vec![])] {
        let out = agent.cli(&args).await;
        let text = out.ok();
        assert!(!text.contains(ESC) && !text.contains(RLO), "{args:?} printed it raw: {text:?}");
        for escaped in shown {
            assert!(text.contains(escaped), "{args:?} shows {escaped:?}: {text}");
        }
    }
    let out = agent.cli(&["audit", "--json"]).await;
    assert!(!out.ok().contains(ESC) && !out.stdout.contains(RLO), "printed it raw: {:?}", out.stdout);
    assert!(out.stdout.contains("\\u202e"), "{}", out.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_count_right_and_say_what_to_do_when_empty() {
    let home = Home::new();
    let t = now();
    let long = "日本語のとても長い検索クエリ ".repeat(8);
    let signals = [
        search("s1", ago(t, 3), &long, "bing.com", "Home"),
        fixture::cart("c1", ago(t, 2), "shop.example", "tent", "10.00"),
        fixture::purchase("p1", ago(t, 1), "shop.example", "tent", "10.00"),
    ];
    // (what was stored, the command, what its output must hold)
    let cases: Vec<(usize, Vec<&str>, Vec<String>)> = vec![
        (1, vec!["signals"], vec!["1 signal\n".into(), "…".into()]),
        (1, vec!["grants"], vec!["no grants yet: optin grant MARKETER --kinds".into()]),
        (1, vec!["audit"], vec!["the audit log is empty".into()]),
        (1, vec!["signals", "--kind", "cart"], vec!["no cart signals stored".into()]),
        (2, vec!["signals"], vec!["2 signals\n".into(), "1 item at shop.example".into()]),
        (3, vec!["signals", "--kind", "purchase"], vec!["10.00 EUR at shop.example".into(), "1 signal\n".into()]),
    ];
    let mut stored = 0;
    for (count, args, expected) in cases {
        if count > stored {
            let batch = home.scratch(&format!("batch-{count}.ndjson"));
            std::fs::write(&batch, fixture::ndjson(&signals[stored..count])).expect("write");
            let out = home.cli(&["ingest", batch.to_str().expect("utf-8")]).await;
            let noun = if count - stored == 1 { "signal" } else { "signals" };
            assert_eq!(out.ok().trim(), format!("stored {} {noun} (0 already present)", count - stored));
            stored = count;
        }
        let out = home.cli(&args).await;
        let text = out.ok();
        for piece in &expected {
            assert!(text.contains(piece.as_str()), "{args:?} with {stored} stored shows {piece:?}:\n{text}");
        }
        assert!(!text.contains(long.trim()), "long values are cut: {text}");
    }

    // Grants, oldest first, whatever their ids.
    let agent = home.serve(&[]).await;
    let mut made = Vec::new();
    for marketer in ["first.example", "second.example", "third.example", "fourth.example"] {
        made.push(agent.grant(marketer, "search", "category", "30d").await.grant_id.as_str().to_owned());
        // Creation times are kept to the second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let listed: Vec<String> =
        agent.cli(&["grants", "--json"]).await.json().as_array().expect("array").iter().map(|g| g["grant_id"].as_str().expect("id").to_owned()).collect();
    assert_eq!(listed, made, "--json lists them oldest first");
    let out = agent.cli(&["grants"]).await;
    let table: Vec<&str> = out.ok().lines().filter(|l| l.starts_with("g_")).map(|l| &l[..26]).collect();
    assert_eq!(table, made, "the table lists them oldest first");
    assert!(out.stdout.ends_with("4 grants, 4 active\n"), "{}", out.stdout);
    agent.cli(&["revoke", &made[0]]).await.ok();
    assert!(agent.cli(&["grants"]).await.ok().ends_with("4 grants, 3 active\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_reads_its_options_as_a_person_writes_them() {
    // A span that starts with a hyphen reaches the span parser, which names it.
    for delay in ["-1h", "-5"] {
        let home = Home::new();
        let out = home.cli(&["serve", "--listen", "127.0.0.1:0", "--abandon-after", delay]).await;
        out.fails(2, "--abandon-after");
        out.fails(2, &format!("`{delay}` is not a duration"));
    }
    let home = Home::new();
    home.cli(&["serve", "--listen", "nowhere"]).await.fails(2, "`nowhere` is not HOST:PORT");

    // A host name resolves, to the loopback.
    let mut child = Command::new(optin_bin())
        .args(["serve", "--listen", "localhost:0", "--home"])
        .arg(home.path())
        .env_remove("OPTIN_HOME")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start optin serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("listening on https://127.0.0.1:"), "{line:?}");
}
