//! The marketer's requests: the signing key `init` makes, `request new` (a document built
//! from flags, read back by the protocol crate's own parser, signed, and written), and the
//! set `serve` publishes and holds grants to.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use ring::rand::SystemRandom;
use ring::signature::Ed25519KeyPair;
use serde_json::json;
use time::OffsetDateTime;

use optin_protocol::request::{self, limits, Request, RequestId};
use optin_protocol::span::Span;

use crate::home::{check_private, shown, write_new, Config, Home};

/// Makes the marketer's request-signing key, readable by its owner only; refuses to replace one.
pub fn make_key(home: &Home) -> Result<()> {
    let pkcs8 =
        Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| anyhow::anyhow!("cannot make an Ed25519 key: the system's randomness failed"))?;
    write_new(&home.signing_key(), pkcs8.as_ref(), 0o600)
}

/// Reads the request-signing key.
pub fn load_key(home: &Home) -> Result<Ed25519KeyPair> {
    let path = home.signing_key();
    check_private(&path)?;
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    // The error would say nothing useful, and the bytes are a secret: name the file only.
    Ed25519KeyPair::from_pkcs8(&bytes).map_err(|_| anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key", path.display()))
}

/// What `request new` was given.
#[derive(Clone, Debug)]
pub struct NewRequest {
    /// The request's id.
    pub id: String,
    /// A DPV purpose code.
    pub purpose_code: String,
    /// The purpose in the marketer's words.
    pub purpose: String,
    /// Kinds of signal.
    pub kinds: Vec<String>,
    /// `raw` or `category`.
    pub granularity: String,
    /// How far back.
    pub window: String,
    /// How long the grant lasts.
    pub duration: String,
    /// Category paths, if any.
    pub categories: Option<Vec<String>>,
    /// Merchants, if any.
    pub merchants: Option<Vec<String>>,
    /// What the person gets.
    pub offer: String,
    /// How often the agent pushes.
    pub every: String,
    /// How long the request may be approved.
    pub expires: Span,
}

/// Builds, checks and signs a request; returns its JWS. Nothing is written here.
pub fn build(config: &Config, key: &Ed25519KeyPair, new: &NewRequest, now: OffsetDateTime) -> Result<(Request, String)> {
    // Whole seconds, as the wire writes them.
    let now = now.replace_nanosecond(0).unwrap_or(now);
    let mut terms = json!({"kinds": new.kinds, "granularity": new.granularity, "window": new.window, "duration": new.duration});
    if let Some(categories) = &new.categories {
        terms["categories"] = json!(categories);
    }
    if let Some(merchants) = &new.merchants {
        terms["merchants"] = json!(merchants);
    }
    let document = json!({
        "version": request::VERSION,
        "id": new.id,
        "issued_at": optin_protocol::timestamp::format(now),
        "expires_at": optin_protocol::timestamp::format(now + new.expires.duration()),
        "marketer": {"name": config.name, "domain": config.domain, "contact": config.contact, "privacy_policy": config.privacy_policy},
        "purpose": {"code": new.purpose_code, "text": new.purpose},
        "terms": terms,
        "offer": new.offer,
        "delivery": {"method": "push", "inbox": config.inbox_url(), "every": new.every},
    })
    .to_string();
    // The parser agents run: a request it refuses is refused here, naming the field, with
    // the option that set it.
    let parsed = Request::parse(&document).map_err(|e| anyhow::anyhow!("{}", flagged(&e)))?;
    // Signed as the request serializes, member for member in the order SPEC.md writes them.
    let jws = request::sign(key, parsed.to_json().as_bytes());
    request::verify(&jws, Some(&config.domain), now).context("the signed request does not verify")?;
    Ok((parsed, jws))
}

/// A request error, with the flag that sets the field it names.
fn flagged(error: &request::RequestError) -> String {
    let flag = match error.field().unwrap_or("") {
        "id" => "--id",
        "purpose.code" => "--purpose-code",
        "purpose.text" => "--purpose",
        "offer" => "--offer",
        "expires_at" => "--expires",
        "delivery.every" => "--push-every",
        "delivery.inbox" => "the public URL given to init",
        f if f.starts_with("terms.kinds") => "--kinds",
        f if f.starts_with("terms.categories") => "--categories",
        f if f.starts_with("terms.merchants") => "--merchants",
        "terms.granularity" => "--granularity",
        "terms.window" => "--window",
        "terms.duration" => "--duration",
        f if f.starts_with("marketer") => "the configuration init wrote",
        _ => "the request",
    };
    format!("{flag}: {error}")
}

/// Writes a signed request into the home, refusing an id already used and a ninth live one
/// (a published document holds at most eight).
pub fn write(home: &Home, request: &Request, jws: &str, now: OffsetDateTime) -> Result<std::path::PathBuf> {
    let live = Published::load(home, &request.marketer.domain, now)?;
    if live.requests.len() >= limits::PUBLISHED_REQUESTS {
        bail!("{} requests are published already, the most a document holds; wait for one to expire", limits::PUBLISHED_REQUESTS);
    }
    let path = home.requests_dir().join(format!("{}.jws", request.id));
    if path.exists() {
        bail!("a request with id {} exists ({}); agents name a request by its id, so give the new one another", request.id, path.display());
    }
    // Written aside, then linked into place: `serve` may read the directory at any moment and
    // must never see half a request, and a link, unlike a rename, never replaces a file.
    let aside = home.requests_dir().join(format!(".{}.jws.new", request.id));
    let _ = std::fs::remove_file(&aside);
    write_new(&aside, format!("{jws}\n").as_bytes(), 0o644)?;
    let linked = std::fs::hard_link(&aside, &path).with_context(|| format!("cannot write {}", path.display()));
    let _ = std::fs::remove_file(&aside);
    linked?;
    Ok(path)
}

/// The requests as `serve` holds them: read again when the requests directory changes, so a
/// request made with `request new` while the inbox runs is published without a restart.
pub struct Catalog {
    source: Option<(Home, String)>,
    state: Mutex<CatalogState>,
}

struct CatalogState {
    /// The directory's modification time when `published` was read.
    read_at: Option<SystemTime>,
    published: Arc<Published>,
    /// When reading it last failed: it is tried again a second later, not on every request.
    failed: Option<Instant>,
}

impl Catalog {
    /// A set that never changes (tests).
    pub fn fixed(published: Published) -> Catalog {
        Catalog { source: None, state: Mutex::new(CatalogState { read_at: None, published: Arc::new(published), failed: None }) }
    }

    /// The home's requests for `domain`, read now (an error names the file at fault) and
    /// again whenever the directory changes.
    pub fn watching(home: &Home, domain: &str, now: OffsetDateTime) -> Result<Catalog> {
        let read_at = modified(&home.requests_dir());
        let published = Published::load(home, domain, now)?;
        let state = CatalogState { read_at, published: Arc::new(published), failed: None };
        Ok(Catalog { source: Some((home.clone(), domain.to_owned())), state: Mutex::new(state) })
    }

    /// The requests as they are now.
    pub fn current(&self, now: OffsetDateTime) -> Arc<Published> {
        // Nothing panics while the lock is held, and the state is whole after each step.
        let mut state = self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((home, domain)) = &self.source else { return state.published.clone() };
        let changed = modified(&home.requests_dir());
        let retry = state.failed.map_or(true, |at| at.elapsed() >= Duration::from_secs(1));
        if changed != state.read_at && retry {
            match Published::load(home, domain, now) {
                Ok(published) => *state = CatalogState { read_at: changed, published: Arc::new(published), failed: None },
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "the requests changed but cannot be read; still publishing the ones read before");
                    state.failed = Some(Instant::now());
                }
            }
        }
        state.published.clone()
    }
}

fn modified(dir: &Path) -> Option<SystemTime> {
    std::fs::metadata(dir).and_then(|m| m.modified()).ok()
}

/// The requests this inbox publishes: those in the home that verify now for its domain.
#[derive(Clone, Debug, Default)]
pub struct Published {
    /// By id.
    pub requests: BTreeMap<RequestId, (Request, String)>,
}

impl Published {
    /// Reads the home's requests, each verified as an agent would with this domain; expired
    /// ones are left out, and one that does not verify is an error naming its file.
    pub fn load(home: &Home, domain: &str, now: OffsetDateTime) -> Result<Published> {
        let dir = home.requests_dir();
        let mut requests = BTreeMap::new();
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Published { requests }),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", dir.display())),
        };
        for entry in entries {
            let path = entry.with_context(|| format!("cannot read {}", dir.display()))?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("jws") {
                continue;
            }
            if let Some(found) = read_one(&path, domain, now)? {
                requests.insert(found.0.id.clone(), found);
            }
        }
        Ok(Published { requests })
    }

    /// The well-known document, `{"requests":[…]}` of those still live at `now`; `None` when
    /// none is.
    pub fn document(&self, now: OffsetDateTime) -> Option<String> {
        let live: Vec<&str> = self.requests.values().filter(|(r, _)| now < r.expires_at).map(|(_, jws)| jws.as_str()).collect();
        (!live.is_empty()).then(|| json!({ "requests": live }).to_string())
    }

    /// The request `id`, if this inbox publishes it and it is live at `now`.
    pub fn live(&self, id: &RequestId, now: OffsetDateTime) -> Option<&Request> {
        self.requests.get(id).map(|(r, _)| r).filter(|r| now < r.expires_at)
    }
}

fn read_one(path: &Path, domain: &str, now: OffsetDateTime) -> Result<Option<(Request, String)>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let jws = text.trim_end().to_owned();
    match request::verify(&jws, Some(domain), now) {
        Ok(signed) => Ok(Some((signed.request, jws))),
        Err(request::RequestError::Expired(_)) => Ok(None),
        Err(e) => bail!("{}: not a request this inbox can publish: {}", path.display(), shown(&e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

    fn config() -> Config {
        Config::new(
            "acme.example",
            Some("https://acme.example:8443"),
            "Acme Shoes".into(),
            "privacy@acme.example".into(),
            "https://acme.example/privacy".into(),
        )
        .unwrap()
    }

    fn new() -> NewRequest {
        NewRequest {
            id: "shoes-2026-11".into(),
            purpose_code: "dpv:PersonalisedAdvertising".into(),
            purpose: "Show you running-shoe offers that fit what you look for.".into(),
            kinds: vec!["search".into(), "cart".into()],
            granularity: "category".into(),
            window: "30d".into(),
            duration: "90d".into(),
            categories: Some(vec!["Apparel & Accessories > Shoes".into()]),
            merchants: None,
            offer: "10% off your next pair".into(),
            every: "1d".into(),
            expires: "30d".parse().unwrap(),
        }
    }

    fn key() -> Ed25519KeyPair {
        Ed25519KeyPair::from_seed_unchecked(&[7u8; 32]).unwrap()
    }

    #[test]
    fn builds_a_request_an_agent_accepts_from_this_domain() {
        let (request, jws) = build(&config(), &key(), &new(), NOW).unwrap();
        let signed = request::verify(&jws, Some("acme.example"), NOW).unwrap();
        assert_eq!(signed.request, request);
        assert_eq!(
            serde_json::to_value(&request.delivery).unwrap(),
            json!({"method": "push", "inbox": "https://acme.example:8443/optin/inbox", "every": "1d"})
        );
        assert_eq!(request.expires_at, datetime!(2026-12-23 12:00 UTC));
    }

    #[test]
    fn rejects_terms_an_agent_would_refuse_naming_the_flag() {
        type Edit = fn(&mut NewRequest);
        let table: [(&str, Edit, &str); 8] = [
            ("unknown kind", |n| n.kinds = vec!["email".into()], "--kinds"),
            ("repeated kind", |n| n.kinds = vec!["cart".into(), "cart".into()], "--kinds"),
            ("bad purpose code", |n| n.purpose_code = "dpv:SellDataToThirdParties".into(), "--purpose-code"),
            ("control character", |n| n.purpose = "offers\u{1b}[31m".into(), "--purpose"),
            ("push too often", |n| n.every = "30m".into(), "--push-every"),
            ("bad granularity", |n| n.granularity = "fine".into(), "--granularity"),
            ("bad id", |n| n.id = "shoes 2026".into(), "--id"),
            ("expires too late", |n| n.expires = "3000d".parse().unwrap(), "--expires"),
        ];
        for (what, edit, flag) in table {
            let mut n = new();
            edit(&mut n);
            let error = format!("{:#}", build(&config(), &key(), &n, NOW).unwrap_err());
            assert!(error.starts_with(&format!("{flag}: ")), "{what}: {error}");
            assert!(!error.contains('\u{1b}'), "{what}: the message holds the raw escape: {error}");
        }
    }

    #[test]
    fn publishes_live_requests_only_and_refuses_a_reused_id() {
        let dir = tempfile::tempdir().unwrap();
        let home = Home::at(dir.path().to_owned());
        let (request, jws) = build(&config(), &key(), &new(), NOW).unwrap();
        write(&home, &request, &jws, NOW).unwrap();
        let error = format!("{:#}", write(&home, &request, &jws, NOW).unwrap_err());
        assert!(error.contains("a request with id shoes-2026-11 exists"), "{error}");
        let published = Published::load(&home, "acme.example", NOW).unwrap();
        let id = RequestId::parse("shoes-2026-11").unwrap();
        assert!(published.live(&id, NOW).is_some());
        assert_eq!(request::published(&published.document(NOW).unwrap()).unwrap(), [jws]);
        let later = NOW + time::Duration::days(31);
        assert_eq!(published.live(&id, later), None);
        assert_eq!(published.document(later), None);
        assert!(Published::load(&home, "acme.example", later).unwrap().requests.is_empty());
        // Serving, a request made meanwhile is published without a restart.
        let catalog = Catalog::watching(&home, "acme.example", NOW).unwrap();
        let mut second = new();
        second.id = "boots-2026-11".into();
        let (request, jws2) = build(&config(), &key(), &second, NOW).unwrap();
        // Directory times can be as coarse as a second on some file systems.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        write(&home, &request, &jws2, NOW).unwrap();
        let ids: Vec<String> = catalog.current(NOW).requests.keys().map(|id| id.to_string()).collect();
        assert_eq!(ids, ["boots-2026-11", "shoes-2026-11"]);
        assert_eq!(std::fs::read_dir(home.requests_dir()).unwrap().count(), 2, "nothing left aside");
        // A request of another domain in the home is an error naming the file, not skipped.
        let error = format!("{:#}", Published::load(&home, "other.example", NOW).unwrap_err());
        assert!(error.contains("-2026-11.jws: not a request this inbox can publish"), "{error}");
    }
}
