//! What each parser of untrusted input in this crate must hold to, whatever the bytes: one
//! function per parser, called by its fuzz target (`fuzz/fuzz_targets/`) and, for every file
//! of the committed corpus (`fuzz/corpus/<target>/`), by `cargo test` (`tests/corpus.rs`).
//!
//! The functions live in the crate, not in the fuzz crate, so that the tests replay the
//! corpus on stable Rust through exactly the checks the fuzzer ran: a crash found once stays
//! found. They are public for those two callers only and are no part of the crate's API.
//!
//! Each never panics on input the parser refuses; a panic is a failed invariant. Where a
//! parser accepts, its value written back out must read back the same. The parsers of what
//! strangers send the agent or an inbox (consent requests, push events, webhook headers,
//! receipts) also run twice on the same bytes, since a verdict that changed between the
//! agent's check and the person's approval would be two answers to one document; and what
//! they accept is held to the bounds their documentation promises, field by field.

use ring::signature::{Ed25519KeyPair, KeyPair};
use time::macros::datetime;
use time::OffsetDateTime;

use crate::bundle::GrantBundle;
use crate::push::{self, Data, Event, PushError, Received};
use crate::receipt::{self, ConsentState};
use crate::request::{self, Delivery, Request, RequestError, RequestId};
use crate::scope::{Granularity, Terms};
use crate::signal::{self, limits, plain_domain};
use crate::span::Span;
use crate::token::Token;
use crate::webhook::{self, Headers, PublicKey, WebhookId};
use crate::{is_hidden_or_control, jws};

/// A fuzz target's invariant function: takes any bytes, panics only when an invariant fails.
pub type Check = fn(&[u8]);

/// The fuzz targets of this crate with their functions, for the corpus replay.
pub const TARGETS: &[(&str, Check)] = &[
    ("token", token),
    ("batch", batch),
    ("bundle", bundle),
    ("jws", jws),
    ("request", request),
    ("well_known", well_known),
    ("push", push),
    ("webhook", webhook),
    ("receipt", receipt),
    ("sensitive", sensitive),
    ("slice", slice),
];

/// The grant secret and the slice-signing key's seed of the test vectors (bytes 0x00..0x1f),
/// so that the vectors' tokens and slices, which verify, can seed the corpus.
const SECRET: [u8; 32] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31];

/// The `now` of the consent vectors: the request vector verifies at it, and the push vector's
/// `webhook-timestamp` is it, so the valid seeds stay valid whenever the corpus is replayed.
const NOW: OffsetDateTime = datetime!(2026-11-23 12:00 UTC);

/// The domain the request vector is fetched from.
const DOMAIN: &str = "acme.example";

/// A token's text: accepted only in its canonical form, which it must write back byte for
/// byte; verifying it never panics; narrowing it gives a token that parses to itself.
pub fn token(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(token) = Token::parse(text) else { return };
    assert_eq!(token.encode(), text, "an accepted token is its own canonical text");
    let caveats = match token.caveats() {
        Ok(c) => c,
        Err(e) => panic!("an accepted token's caveats parse: {e}"),
    };
    let Some(window) = Span::from_seconds(30 * 86_400) else { return };
    let terms = Terms {
        audience: "acme.example".into(),
        kinds: signal::Kinds::all(),
        granularity: Granularity::Raw,
        window,
        expires_at: datetime!(2027-01-01 0:00 UTC),
        categories: None,
        merchants: None,
        fields: None,
        rate: None,
        noise: None,
    };
    let _ = token.verify(&SECRET, &terms);
    for caveat in caveats.iter().take(2) {
        let narrower = token.attenuate(caveat);
        match Token::parse(&narrower.encode()) {
            Ok(again) => assert_eq!(again, narrower, "a narrowed token reads back as itself"),
            // One caveat more than the most a token may carry is refused; nothing else is.
            Err(e) => assert!(caveats.len() + 1 > crate::token::MAX_CAVEATS || narrower.encode().len() > crate::token::MAX_LEN, "a narrowed token parses: {e}"),
        }
    }
}

/// An NDJSON batch: never more than the batch limit; every signal accepted writes out as a
/// line that parses to the same signal.
pub fn batch(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(signals) = signal::parse_batch(text, &plain_domain) else { return };
    assert!(signals.len() <= limits::BATCH_SIGNALS, "a batch holds at most the limit");
    for s in signals {
        let line = match serde_json::to_string(&s) {
            Ok(line) => line,
            Err(e) => panic!("an accepted signal serializes: {e}"),
        };
        match signal::parse_line(&line, &plain_domain) {
            Ok(again) => assert_eq!(again, s, "a signal reads back as itself: {line}"),
            Err(e) => panic!("an accepted signal, written out, is refused: {e}: {line}"),
        }
    }
}

/// A grant bundle: an accepted one writes out as JSON that parses to the same bundle, and its
/// token parses.
pub fn bundle(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(bundle) = GrantBundle::parse(text) else { return };
    let json = match serde_json::to_string(&bundle) {
        Ok(json) => json,
        Err(e) => panic!("an accepted bundle serializes: {e}"),
    };
    match GrantBundle::parse(&json) {
        Ok(again) => assert_eq!(again, bundle, "a bundle reads back as itself"),
        Err(e) => panic!("an accepted bundle, written out, is refused: {e}"),
    }
    assert!(Token::parse(&bundle.token).is_ok(), "an accepted bundle's token parses");
    let receipt_of_its_grant = bundle.consent().map_or(true, |r| r.is_ok_and(|r| r.record.record_id == bundle.grant_id));
    assert!(receipt_of_its_grant, "an accepted bundle's receipt verifies and is its grant's");
}

/// A compact JWS on the verify path, against the pinned key of the vectors' seed: what verifies
/// returns the payload its middle part encodes, and that payload signed again verifies to
/// the same bytes.
pub fn jws(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(key) = Ed25519KeyPair::from_seed_unchecked(&SECRET) else { return };
    let jwk = jws::Jwk::ed25519(key.public_key().as_ref());
    let Ok(payload) = jws::verify(text, &jwk) else { return };
    let middle = text.trim_end().split('.').nth(1).unwrap_or_default();
    assert_eq!(crate::b64::encode(&payload), middle, "the payload is the middle part, in canonical base64url");
    let again = jws::sign(&key, &payload);
    match jws::verify(&again, &jwk) {
        Ok(p) => assert_eq!(p, payload, "a payload signed again verifies to itself"),
        Err(e) => panic!("a payload signed again does not verify: {e}"),
    }
}

/// A consent request, as fetched from [`DOMAIN`]'s well-known URL ([`signed_request`]) and as
/// the document a marketer signs ([`document`]): a marketer signs whatever it likes, so the
/// document's parser must hold behind a valid signature too, where mutated JWS never reach.
pub fn request(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    signed_request(text);
    document(text);
}

/// The seed of the marketer's key in the request vector, to sign documents with.
const MARKETER_SEED: [u8; 32] = [0x42; 32];

/// A well-known document (`{"requests":[…]}`): what is accepted is 1 to the most requests,
/// each a string no longer than a signed request may be, and the same list every time; each
/// then goes through the checks of a signed request, as the agent's fetch does.
pub fn well_known(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let listed = request::published(text);
    assert_eq!(request::published(text), listed, "reading a well-known document is deterministic");
    let Ok(listed) = listed else { return };
    assert!(
        (1..=request::limits::PUBLISHED_REQUESTS).contains(&listed.len()),
        "a well-known document lists 1 to {} requests",
        request::limits::PUBLISHED_REQUESTS
    );
    for jws in &listed {
        assert!(jws.len() <= request::limits::JWS_BYTES, "a listed request is at most the size of a signed request");
        signed_request(jws);
    }
}

/// A signed request, verified at [`NOW`] both as fetched from [`DOMAIN`] and as handed over
/// as a file. Either way the verdict is the same every time, and its message is safe to
/// print. What verifies names the domain it was fetched from, is valid at `now`, carries the
/// key its header's thumbprint names, and is [`bounded`].
fn signed_request(text: &str) {
    let fetched = request::verify(text, Some(DOMAIN), NOW);
    assert_eq!(request::verify(text, Some(DOMAIN), NOW), fetched, "verifying a request is deterministic");
    let handed = request::verify(text, None, NOW);
    for verdict in [&fetched, &handed] {
        if let Err(e) = verdict {
            let message = e.to_string();
            assert!(!message.chars().any(is_hidden_or_control), "a refusal is safe to print: {message:?}");
        }
    }
    match (&fetched, &handed) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "where it was fetched from changes nothing but the domain check"),
        (Ok(_), Err(e)) => panic!("a request that verifies fetched from its domain is refused as a file: {e}"),
        (Err(RequestError::Domain { expected, found }), Ok(b)) => {
            assert_eq!((expected.as_str(), found), (DOMAIN, &b.request.marketer.domain), "the domain error names both domains");
            assert_ne!(b.request.marketer.domain, DOMAIN, "a request naming the domain it was fetched from is not refused for its domain");
        }
        (Err(e), Ok(b)) => panic!("a request that verifies as a file is refused fetched from `{}` as `{e}`", b.request.marketer.domain),
        (Err(_), Err(_)) => {}
    }
    let Ok(signed) = handed else { return };
    assert!(text.len() <= request::limits::JWS_BYTES, "an accepted request is at most the limit");
    let r = &signed.request;
    if fetched.is_ok() {
        assert_eq!(r.marketer.domain, DOMAIN, "a fetched request names the domain it was fetched from");
    }
    assert!(NOW < r.expires_at && r.issued_at <= NOW + request::limits::CLOCK_SKEW, "a verified request is valid now");
    assert_eq!(signed.key.kid.as_deref(), Some(signed.key.thumbprint().as_str()), "the key's kid is its thumbprint");
    assert!(signed.key.public_key().is_ok(), "the key is an Ed25519 public key");
    bounded(r);
}

/// A request document: read the same every time, refused with a message safe to print, and
/// what is read is [`bounded`]. Signed, it verifies fetched from its own domain at the
/// instant it was issued, to the same request.
fn document(text: &str) {
    let parsed = Request::parse(text);
    assert_eq!(Request::parse(text), parsed, "reading a request document is deterministic");
    let r = match parsed {
        Ok(r) => r,
        Err(e) => {
            let message = e.to_string();
            assert!(!message.chars().any(is_hidden_or_control), "a refusal is safe to print: {message:?}");
            return;
        }
    };
    bounded(&r);
    let Ok(key) = Ed25519KeyPair::from_seed_unchecked(&MARKETER_SEED) else { return };
    let jws = request::sign(&key, text.as_bytes());
    match request::verify(&jws, Some(&r.marketer.domain), r.issued_at) {
        Ok(signed) => assert_eq!(signed.request, r, "a signed document verifies to what it reads as"),
        Err(e) => panic!("a document that reads, signed, is refused: {e}"),
    }
}

/// What the request module promises of a request it accepted: every text within its limit,
/// trimmed and free of control, bidirectional and invisible characters; canonical domain
/// names; a bounded lifetime; a push inbox on the marketer's domain, at most hourly. Written
/// back out, it reads back the same.
fn bounded(r: &Request) {
    assert_eq!(r.version, request::VERSION);
    assert_eq!(RequestId::parse(r.id.as_str()).as_ref(), Some(&r.id), "the id has the form of an id");
    printable("marketer.name", &r.marketer.name, request::limits::NAME_CHARS);
    printable("marketer.contact", &r.marketer.contact, request::limits::CONTACT_CHARS);
    printable("purpose.text", &r.purpose.text, request::limits::PURPOSE_CHARS);
    printable("offer", &r.offer, request::limits::OFFER_CHARS);
    assert_eq!(plain_domain(&r.marketer.domain).as_deref(), Ok(r.marketer.domain.as_str()), "the marketer's domain is a canonical domain name");
    url("marketer.privacy_policy", r.marketer.privacy_policy.as_str());
    assert!(r.issued_at < r.expires_at && r.expires_at - r.issued_at <= request::limits::LIFETIME, "the lifetime is within bounds");
    if let Some(categories) = &r.terms.categories {
        assert!((1..=request::limits::CATEGORIES).contains(&categories.len()), "1 to {} categories", request::limits::CATEGORIES);
        distinct(categories);
        for c in categories {
            printable("terms.categories[]", c, limits::CATEGORY_CHARS);
        }
    }
    if let Some(merchants) = &r.terms.merchants {
        assert!((1..=request::limits::MERCHANTS).contains(&merchants.len()), "1 to {} merchants", request::limits::MERCHANTS);
        distinct(merchants);
        for m in merchants {
            assert_eq!(plain_domain(m).as_deref(), Ok(m.as_str()), "a merchant is a canonical domain name");
        }
    }
    if let Delivery::Push { inbox, every } = &r.delivery {
        url("delivery.inbox", inbox.as_str());
        let host = inbox.host();
        assert!(host == r.marketer.domain || host.ends_with(&format!(".{}", r.marketer.domain)), "the inbox `{host}` is on the marketer's domain");
        assert!(every.seconds() >= request::limits::MIN_EVERY_SECONDS, "pushes are at most hourly");
    }
    let json = r.to_json();
    match Request::parse(&json) {
        Ok(again) => assert_eq!(&again, r, "a request reads back as itself: {json}"),
        Err(e) => panic!("an accepted request, written out, is refused: {e}: {json}"),
    }
}

/// A text a person is shown as it is: not empty, at most `max` characters, trimmed, nothing
/// that hides or steers text.
fn printable(field: &str, text: &str, max: usize) {
    assert!(!text.is_empty() && text.chars().count() <= max, "{field}: 1 to {max} characters");
    assert_eq!(text.trim(), text, "{field}: trimmed");
    assert!(!text.chars().any(is_hidden_or_control), "{field}: no control, bidirectional or invisible characters: {text:?}");
}

/// An https URL as requests accept them: printable ASCII within the limit.
fn url(field: &str, text: &str) {
    assert!(text.starts_with("https://") && text.len() <= request::limits::URL_CHARS, "{field}: an https URL within the limit");
    assert!(text.bytes().all(|b| b.is_ascii_graphic() && b != b'\\'), "{field}: printable ASCII: {text:?}");
}

fn distinct(list: &[String]) {
    let set: std::collections::BTreeSet<&String> = list.iter().collect();
    assert_eq!(set.len(), list.len(), "no entry is listed twice");
}

/// A push as an inbox receives it: three header lines (`webhook-id`, `webhook-timestamp`,
/// `webhook-signature`), then the body, the rest of the bytes. `None` when there are not
/// three lines of UTF-8 before it, which no HTTP server would hand over as headers anyway.
fn posted(data: &[u8]) -> Option<(Headers, &[u8])> {
    let mut parts = data.splitn(4, |&b| b == b'\n');
    let mut line = || parts.next().and_then(|l| std::str::from_utf8(l).ok()).map(String::from);
    let (id, timestamp, signature) = (line()?, line()?, line()?);
    let body = parts.next().unwrap_or_default();
    Some((Headers { id, timestamp, signature }, body))
}

/// The key of the vectors' seed, which signs the push and receipt vectors.
fn vector_key() -> Option<(Ed25519KeyPair, jws::Jwk)> {
    let key = Ed25519KeyPair::from_seed_unchecked(&SECRET).ok()?;
    let jwk = jws::Jwk::ed25519(key.public_key().as_ref());
    Some((key, jwk))
}

/// Standard Webhooks headers and body (as [`posted`] frames them), verified at [`NOW`] with
/// the vectors' key; and the whole input as a `whpk_` public key. A push that verifies has an
/// id of the allowed form, the timestamp it says within the tolerance, a signature header
/// within its limits, and verifies the same every time and at whatever `now` its timestamp
/// is, with no tolerance at all; with one byte more of body it does not. A key that parses is
/// its own canonical text.
pub fn webhook(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(key) = PublicKey::parse(text) {
            assert_eq!(key.to_string(), text, "an accepted public key is its own canonical text");
        }
    }
    let Some((headers, body)) = posted(data) else { return };
    let Some((_, jwk)) = vector_key() else { return };
    let Ok(key) = PublicKey::from_jwk(&jwk) else { return };
    let tolerance = webhook::DEFAULT_TOLERANCE;
    let verdict = webhook::verify(&key, &headers, body, NOW, tolerance);
    assert_eq!(webhook::verify(&key, &headers, body, NOW, tolerance), verdict, "verifying a push is deterministic");
    let Ok(verified) = verdict else { return };
    assert_eq!(WebhookId::parse(&headers.id).as_ref(), Some(&verified.id), "the id is the header's, of the allowed form");
    assert_eq!(headers.timestamp.parse::<i64>().ok(), Some(verified.timestamp.unix_timestamp()), "the timestamp is the header's");
    assert!((verified.timestamp - NOW).abs() <= tolerance, "the timestamp is within the tolerance");
    assert!(headers.signature.len() <= webhook::limits::SIGNATURE_HEADER_BYTES, "the signature header is within its limit");
    assert!(headers.signature.split(' ').filter(|e| !e.is_empty()).count() <= webhook::limits::SIGNATURES, "at most the most signatures");
    let exact = webhook::verify(&key, &headers, body, verified.timestamp, time::Duration::ZERO);
    assert_eq!(exact, Ok(verified), "a push verifies at its own timestamp with no tolerance");
    let longer = [body, b" "].concat();
    assert_eq!(webhook::verify(&key, &headers, &longer, NOW, tolerance), Err(webhook::WebhookError::Signature), "the signature covers the body");
}

/// A push as an inbox receives it (framed as [`posted`] says), at [`NOW`]: as the first push
/// of a grant, and as a later one for the grant the vectors' key signs. Each verdict is the
/// same every time. What is received has the event's own id, a timestamp within the
/// tolerance, a body that reads as the event, an event that writes out and reads back as
/// itself, and a receipt, where it carries one, of its grant and state that verifies with the
/// grant's key. A first push is `grant.created`, and its bundle's key receives it as a later
/// push would.
pub fn push(data: &[u8]) {
    let Some((headers, body)) = posted(data) else { return };
    let Some((_, jwk)) = vector_key() else { return };
    let tolerance = webhook::DEFAULT_TOLERANCE;
    let first = push::receive_new_grant(&headers, body, NOW, tolerance);
    assert_eq!(push::receive_new_grant(&headers, body, NOW, tolerance), first, "receiving a first push is deterministic");
    let later = push::receive(&jwk, &headers, body, NOW, tolerance);
    assert_eq!(push::receive(&jwk, &headers, body, NOW, tolerance), later, "receiving a push is deterministic");
    if let Ok(received) = &first {
        let Data::GrantCreated { bundle, .. } = &received.event.data else { panic!("a first push is grant.created, not {}", received.event.data.type_name()) };
        received_push(&bundle.jwk, &headers, body, received);
        assert_eq!(
            push::receive(&bundle.jwk, &headers, body, NOW, tolerance).as_ref(),
            Ok(received),
            "the bundle's key receives its first push as a later one"
        );
    }
    if let Ok(received) = &later {
        received_push(&jwk, &headers, body, received);
    }
    // Whoever makes a grant's first push signs whatever body it likes: the body is also
    // received signed by the pinned key under its event's own id, where a mutated body with
    // its old signature never gets, and is then refused for nothing but its receipt.
    let Ok(event) = Event::parse(body) else { return };
    let Some((key, _)) = vector_key() else { return };
    let signed = webhook::sign(&key, &event.webhook_id(), NOW, body);
    match push::receive(&jwk, &signed, body, NOW, tolerance) {
        Ok(received) => received_push(&jwk, &signed, body, &received),
        Err(PushError::Receipt(_) | PushError::Mismatch(_)) => assert!(!matches!(event.data, Data::SliceDelivered { .. }), "a slice carries no receipt"),
        Err(e) => panic!("an event signed as its own push is refused: {e}"),
    }
    if let Ok(received) = push::receive_new_grant(&signed, body, NOW, tolerance) {
        received_push(&jwk, &signed, body, &received);
    }
}

fn received_push(key: &jws::Jwk, headers: &Headers, body: &[u8], received: &Received) {
    assert!(body.len() <= push::MAX_BODY_BYTES, "an accepted body is at most the limit");
    let event = &received.event;
    assert_eq!(received.id, event.webhook_id(), "the push's id is its event's");
    assert_eq!(received.id.as_str(), headers.id, "the push's id is its header's");
    assert!((received.sent_at - NOW).abs() <= webhook::DEFAULT_TOLERANCE, "the push was sent within the tolerance");
    assert_eq!(Event::parse(body).as_ref(), Ok(event), "the body reads as the event received");
    let json = event.to_json();
    match Event::parse(json.as_bytes()) {
        Ok(again) => assert_eq!(&again, event, "an event reads back as itself: {json}"),
        Err(e) => panic!("an accepted event, written out, is refused: {e}: {json}"),
    }
    let (jws, state) = match &event.data {
        Data::GrantCreated { bundle, receipt } => {
            let written = serde_json::to_string(bundle).unwrap_or_default();
            assert_eq!(GrantBundle::parse(&written).as_ref(), Ok(&**bundle), "the bundle of a grant.created is a valid bundle");
            (receipt, ConsentState::Given)
        }
        Data::GrantRevoked { receipt, .. } => (receipt, ConsentState::Withdrawn),
        Data::GrantExpired { receipt, .. } => (receipt, ConsentState::Expired),
        Data::SliceDelivered { .. } => return,
    };
    match receipt::verify(jws, key) {
        Ok(r) => {
            assert_eq!(&r.record.record_id, event.data.grant_id(), "the receipt is of the event's grant");
            assert_eq!(r.state(), Some(state), "the receipt's last event is the one the push announces");
        }
        Err(e) => panic!("a received push carries a receipt that does not verify: {e}"),
    }
}

/// A consent receipt, verified with the vectors' key, as it is and as the payload of a receipt
/// that key signed: the same verdict every time; what verifies is within the size limit, a
/// record this version writes (one purpose, one party that is its controller, the DPV
/// constants, the consent given and then at most withdrawn or expired, in order), and signed
/// again reads back as itself.
pub fn receipt(data: &[u8]) {
    let Some((key, jwk)) = vector_key() else { return };
    if let Ok(text) = std::str::from_utf8(data) {
        signed_receipt(text, &key, &jwk);
    }
    // The receipt's checks sit behind its signature, where a mutated JWS never gets: the
    // bytes are also read as a payload the grant's key signed.
    signed_receipt(&receipt::sign_document(&key, data), &key, &jwk);
}

fn signed_receipt(text: &str, key: &Ed25519KeyPair, jwk: &jws::Jwk) {
    let verdict = receipt::verify(text, jwk);
    assert_eq!(receipt::verify(text, jwk), verdict, "verifying a receipt is deterministic");
    let Ok(r) = verdict else { return };
    assert!(text.len() <= receipt::MAX_LEN, "an accepted receipt is at most the limit");
    assert_eq!(r.record.schema_version, receipt::SCHEMA_VERSION);
    let ([purpose], [party]) = (r.pii_processing.purposes.as_slice(), r.party_identification.as_slice()) else {
        panic!("a receipt has one purpose and one party")
    };
    assert_eq!((purpose.lawful_basis.as_str(), party.party_role.as_str()), (receipt::LAWFUL_BASIS, receipt::CONTROLLER_ROLE));
    assert_eq!(purpose.pii_controllers, std::slice::from_ref(&party.party_id), "the one party is the controller");
    let states: Vec<ConsentState> = r.event.iter().map(|e| e.state).collect();
    assert!(
        matches!(states.as_slice(), [ConsentState::Given] | [ConsentState::Given, ConsentState::Withdrawn | ConsentState::Expired]),
        "the consent is given, then at most withdrawn or expired: {states:?}"
    );
    assert!(r.event.windows(2).all(|w| w[0].event_time <= w[1].event_time), "the events are in order");
    assert!(r.event.iter().all(|e| e.type_ == receipt::CONSENT_TYPE), "every event is of the one consent type");
    let json = r.to_json();
    match receipt::verify(&receipt::sign_document(key, json.as_bytes()), jwk) {
        Ok(again) => assert_eq!(again, r, "a receipt reads back as itself: {json}"),
        Err(e) => panic!("an accepted receipt, signed again, is refused: {e}: {json}"),
    }
}

/// A search query, a category path or a never-share entry, as pages and people write them:
/// matching never panics and gives one answer; more words after a space only ever match
/// more; ASCII case changes nothing; an entry taken reads back as itself.
pub fn sensitive(data: &[u8]) {
    use crate::sensitive::{Entry, Table};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let table = Table::shipped();
    let topics = table.query_topics(text);
    assert_eq!(topics, table.query_topics(text), "one answer to one query");
    let longer = table.query_topics(&format!("{text} hiv"));
    assert!(topics.is_subset(&longer) && longer.contains("health"), "a query with more words matches at least as much: {text:?}");
    assert_eq!(table.query_topics(&text.to_ascii_uppercase()), topics, "ASCII case changes nothing: {text:?}");
    let categories = table.category_topics(text);
    assert_eq!(categories, table.category_topics(text), "one answer to one category");
    if let Ok(entry) = Entry::parse(text, table) {
        assert_eq!(Entry::parse(&entry.to_string(), table).ok(), Some(entry.clone()), "an entry reads back as itself: {text:?}");
        if let Entry::Category(path) = entry {
            assert!(!path.is_empty() && !path.chars().any(is_hidden_or_control), "an entry holds no hidden character: {text:?}");
        }
    }
}

/// A slice as a marketer verifies it, against the pinned key of the vectors' seed and the
/// vectors' issuer, audience and grant: what verifies has the shape its granularity says
/// (counts and no items or cursor at `aggregate`, no counts or noise elsewhere), and its
/// claims written out and read back are the same claims.
pub fn slice(data: &[u8]) {
    use crate::scope::{GrantId, Granularity};
    use crate::slice::{self, Expected};
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(key) = Ed25519KeyPair::from_seed_unchecked(&SECRET) else { return };
    let jwk = jws::Jwk::ed25519(key.public_key().as_ref());
    let Some(grant_id) = GrantId::parse("g_000102030405060708090a0b") else { return };
    let expected = Expected { issuer: "urn:optin:agent:p_00000000000000000000000000000000", audience: DOMAIN, grant_id: &grant_id, jwk: &jwk };
    let Ok(claims) = slice::verify(text, expected) else { return };
    if claims.scope.granularity == Granularity::Aggregate {
        assert!(claims.counts.is_some() && claims.items.is_empty() && claims.next_cursor.is_none(), "an aggregate slice holds counts only");
    } else {
        assert!(claims.counts.is_none() && claims.noise.is_none(), "only an aggregate slice holds counts");
    }
    let written = serde_json::to_vec(&claims).unwrap_or_default();
    let again: Result<slice::SliceClaims, _> = serde_json::from_slice(&written);
    assert_eq!(again.ok().as_ref(), Some(&claims), "claims written out read back the same");
}
