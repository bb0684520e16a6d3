//! The marketer's inbox, driven as a marketer drives it: the real `optin-inbox` binary in a
//! home of its own, every command bounded in time, `serve` waited for by its ready line. The
//! inbox tests (SQLite and NATS) and the fleet benchmark share it.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use optin_protocol::bundle::GrantBundle;
use optin_protocol::jws::Jwk;
use optin_protocol::push::{Data, Event};
use optin_protocol::receipt::{Basis, ConsentState, Receipt};
use optin_protocol::request::Request;
use optin_protocol::scope::{Applied, GrantId, Granularity, Terms};
use optin_protocol::slice::{GrantClaim, SliceClaims, SliceItem};
use optin_protocol::webhook::{self, WebhookId};
use ring::signature::{Ed25519KeyPair, KeyPair};
use time::OffsetDateTime;

use crate::{now, optin_inbox_bin};

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

/// Stops `optin-inbox serve` by its PID with SIGTERM and checks it exits 0 within 15 s;
/// panics otherwise, with what `log` returns (the server's log).
pub fn stop(mut child: Child, log: impl Fn() -> String) {
    let status = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().expect("run kill");
    assert!(status.success(), "kill -TERM failed");
    let deadline = Instant::now() + Duration::from_secs(15);
    let exit = loop {
        if let Some(exit) = child.try_wait().expect("wait for optin-inbox serve") {
            break exit;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("optin-inbox serve did not exit within 15 s of SIGTERM: {}", log());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(exit.code(), Some(0), "optin-inbox serve should exit 0 on SIGTERM: {}", log());
}

/// One POST: the webhook headers and the body.
#[derive(Clone, Debug)]
pub struct Push {
    /// `webhook-id`.
    pub id: String,
    /// `webhook-timestamp`.
    pub timestamp: String,
    /// `webhook-signature`.
    pub signature: String,
    /// The event.
    pub body: Vec<u8>,
}

/// A grant made outside any agent, with its own key: what a stranger who read the inbox's
/// published request could push, and so what the inbox must judge on its merits alone.
pub struct Stranger {
    /// The grant's key.
    pub key: Ed25519KeyPair,
    /// Its bundle, as its `grant.created` carries it.
    pub bundle: GrantBundle,
    /// Its receipt, as given.
    pub receipt: Receipt,
}

/// The pseudonym of the person in every grant a test or the fleet signs itself.
pub const PRINCIPAL: &str = "p_0123456789abcdef0123456789abcdef";

impl Stranger {
    /// A grant `n` for `marketer`, answering `request` (or none, as `optin grant` makes).
    pub fn new(n: u8, marketer: &str, request: Option<&Request>) -> Stranger {
        let key = Ed25519KeyPair::from_seed_unchecked(&[n; 32]).expect("a key");
        let grant_id = GrantId::parse(&format!("g_{:024x}", u32::from(n) + 0xabc000)).expect("a grant id");
        let now = now();
        let terms = Terms {
            audience: marketer.into(),
            kinds: "search".parse().expect("kinds"),
            granularity: Granularity::Raw,
            window: "30d".parse().expect("a span"),
            expires_at: (now + time::Duration::days(90)).replace_time(time::Time::MIDNIGHT),
            categories: None,
            merchants: None,
            fields: None,
            rate: None,
            noise: None,
        };
        let purpose = request.map_or("offers".to_owned(), |r| r.purpose.text.clone());
        let basis = match request {
            Some(r) => Basis::Request(r),
            None => Basis::Owner { marketer, purpose: &purpose },
        };
        let receipt = Receipt::given(basis, &grant_id, PRINCIPAL, &terms, now);
        let bundle = GrantBundle {
            version: optin_protocol::bundle::VERSION,
            token: optin_protocol::token::Token::mint(&[n; 32], &grant_id).encode(),
            grant_id,
            marketer: marketer.into(),
            purpose,
            issuer: format!("urn:optin:agent:{PRINCIPAL}"),
            agent_url: None,
            cert_sha256: None,
            jwk: Jwk::ed25519(key.public_key().as_ref()),
            terms,
            receipt: None,
        };
        Stranger { key, bundle, receipt }
    }

    /// Its grant id.
    pub fn grant_id(&self) -> String {
        self.bundle.grant_id.to_string()
    }

    /// Its `grant.created`.
    pub fn created(&self) -> Event {
        Event { timestamp: now(), data: Data::GrantCreated { bundle: Box::new(self.bundle.clone()), receipt: self.receipt.sign(&self.key) } }
    }

    /// Its slice `n`, holding no item.
    pub fn slice(&self, n: u8) -> Event {
        let now = now();
        let jti = format!("s_{n:032x}");
        let claims = raw_slice_claims(&self.bundle, &jti, Vec::new(), now);
        let jws = optin_protocol::jws::sign(&self.key, &serde_json::to_vec(&claims).expect("claims"));
        Event { timestamp: now, data: Data::SliceDelivered { grant_id: self.bundle.grant_id.clone(), jti: WebhookId::parse(&jti).expect("an id"), slice: jws } }
    }

    /// Its `grant.revoked`.
    pub fn revoked(&self) -> Event {
        let receipt = self.receipt.ended(ConsentState::Withdrawn, now()).sign(&self.key);
        Event { timestamp: now(), data: Data::GrantRevoked { grant_id: self.bundle.grant_id.clone(), receipt } }
    }

    /// `event` as the agent would push it now, signed with this grant's key.
    pub fn push(&self, event: &Event) -> Push {
        sign(&self.key, event.webhook_id().as_str(), &event.to_json(), now())
    }
}

/// The claims of a `raw` slice of `bundle`'s grant holding `items`, cut at `at` under the
/// id `jti` over the 30 days before it, as the agent pushes one.
pub fn raw_slice_claims(bundle: &GrantBundle, jti: &str, items: Vec<SliceItem>, at: OffsetDateTime) -> SliceClaims {
    SliceClaims {
        audit_seq: None,
        iss: bundle.issuer.clone(),
        sub: PRINCIPAL.into(),
        aud: bundle.marketer.clone(),
        iat: at.unix_timestamp(),
        jti: jti.to_owned(),
        grant: GrantClaim { id: bundle.grant_id.clone(), purpose: bundle.purpose.clone(), expires_at: bundle.terms.expires_at },
        scope: Applied {
            kinds: bundle.terms.kinds.clone(),
            granularity: Granularity::Raw,
            since: at - time::Duration::days(30),
            until: at,
            limit: 1000,
            categories: None,
            merchants: None,
            fields: None,
            never_share: Default::default(),
        },
        items,
        next_cursor: None,
        counts: None,
        noise: None,
    }
}

/// `body` signed under `id` at `at` with `key`, per Standard Webhooks `v1a`.
pub fn sign(key: &Ed25519KeyPair, id: &str, body: &str, at: OffsetDateTime) -> Push {
    let headers = webhook::sign(key, &WebhookId::parse(id).expect("an id"), at, body.as_bytes());
    Push { id: headers.id, timestamp: headers.timestamp, signature: headers.signature, body: body.as_bytes().to_vec() }
}
