//! The engine at scale: NATS JetStream, so that several `optin-inbox serve` processes on one
//! NATS server share one state. The only module that imports async-nats.
//!
//! Layout, for a name `NAME` (`optin` unless the engine URL's path names another):
//! - the stream `NAME-slices`, subjects `NAME.slices.<grant>`: one message per slice, the
//!   JSON of `StoredSlice`, published with `Nats-Msg-Id` set to its `webhook-id` so that
//!   the server drops a second publish of one delivery within [`DUPLICATE_WINDOW`];
//! - the key-value bucket `NAME-inbox`: `grant.<grant>` holds a grant (`StoredGrant`) and
//!   `seen.<webhook-id>` a delivery taken (`StoredDelivery`); both are made with `create`,
//!   which only one process can win, and a grant changes only by a revision-checked
//!   `update`.
//!
//! JetStream has no transaction across a stream and a bucket, so each write is ordered so
//! that a process stopped at any point leaves nothing the rules forbid, and a retry of the
//! same delivery finishes the work or is refused as the rules say:
//! - a grant is created before its delivery is recorded (a retry then finds the grant);
//! - a slice is published, then its delivery recorded (the one process that records it goes
//!   on; any other sending it at once was deduplicated by the stream and answers
//!   `Duplicate`), then committed by counting it in its grant with an update checked against
//!   the revision read while the grant was live. An end changes that revision, so a slice
//!   is either counted before the end (and purged with the grant's subject) or, its update
//!   refused, removed from the stream and refused. A replay after the duplicate window is
//!   stopped by the recorded delivery, checked before publishing; a message published twice
//!   by a process stopped before recording it is listed once, by its `jti`; one stopped
//!   between recording and counting leaves its slice stored and erased with the grant, but
//!   missing from the erasure's count;
//! - an end marks the grant (a revision-checked update, so two ends cannot both win, with the
//!   count of its slices as erased or kept), then purges the grant's subject and marks that
//!   done, then records the delivery. A retry of the same end, finding the grant marked by
//!   it, does the rest again; until then, listings leave out the slices of a grant ended
//!   without keeping them.
//!
//! One race answers differently from SQLite: a delivery sent to two processes at once while
//! its grant ends may be answered `Duplicate` by one though the other, which recorded it,
//! refuses it after the end. Only the same delivery, at once, at the end does this, and
//! nothing is kept of it either way.

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, kv, stream};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use optin_protocol::request::RequestId;
use optin_protocol::scope::GrantId;
use optin_protocol::webhook::WebhookId;

use super::{Ended, Ending, GrantRecord, GrantState, Insert, Keep, NewGrant, NewSlice, Refused, SliceQuery, SliceRecord, Store, StoreError};

/// How long the stream remembers a `Nats-Msg-Id`. It covers retries racing each other on two
/// processes; the recorded delivery covers any replay after it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// The name used when the engine URL names none.
const DEFAULT_NAME: &str = "optin";

/// The version of the records below, in each of them.
const RECORD_VERSION: u32 = 1;

/// Where the engine is: `nats://HOST:PORT[/NAME]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTarget {
    /// `HOST:PORT`.
    pub server: String,
    /// What the stream, its subjects and the bucket are named after: 1-32 of a-z 0-9 _, so
    /// that it is a subject token and part of a stream and bucket name as it stands.
    pub name: String,
}

impl NatsTarget {
    /// Reads `nats://HOST:PORT[/NAME]`; `None` when it is not one.
    pub fn parse(text: &str) -> Option<NatsTarget> {
        let rest = text.strip_prefix("nats://")?;
        let (server, name) = match rest.split_once('/') {
            Some((server, name)) => (server, name),
            None => (rest, DEFAULT_NAME),
        };
        let (host, port) = server.rsplit_once(':')?;
        let host_ok = !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
        let name_ok = (1..=32).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        (host_ok && port.parse::<u16>().is_ok() && name_ok).then(|| NatsTarget { server: server.to_owned(), name: name.to_owned() })
    }
}

/// A grant in the bucket.
#[derive(Serialize, Deserialize)]
struct StoredGrant {
    v: u32,
    request_id: String,
    bundle: String,
    receipt: String,
    created_at: i64,
    /// Slices taken while it was live: each slice's commit is a revision-checked update of
    /// this record, so the count is exact and an end, another update, comes after all of them.
    slices: u64,
    ended: Option<StoredEnd>,
}

/// A grant's end in the bucket.
#[derive(Serialize, Deserialize)]
struct StoredEnd {
    state: String,
    by: String,
    at: i64,
    receipt: String,
    keep: bool,
    erased: u64,
    kept: u64,
    /// The subject was purged (or nothing was to be).
    purged: bool,
}

/// A delivery taken, in the bucket.
#[derive(Serialize, Deserialize)]
struct StoredDelivery {
    v: u32,
    grant_id: String,
    r#type: String,
    received_at: i64,
}

/// A slice, one message of the stream.
#[derive(Serialize, Deserialize)]
struct StoredSlice {
    v: u32,
    jti: String,
    grant_id: String,
    jws: String,
    items: u64,
    received_at: i64,
}

/// The JetStream engine. Cloning shares the connection.
#[derive(Clone)]
pub struct Nats {
    bucket: kv::Store,
    stream: stream::Stream,
    context: jetstream::Context,
    name: String,
}

fn engine(e: impl std::fmt::Display) -> StoreError {
    StoreError::Engine(e.to_string())
}

fn json<T: Serialize>(value: &T) -> Result<bytes::Bytes, StoreError> {
    serde_json::to_vec(value).map(bytes::Bytes::from).map_err(engine)
}

fn time(seconds: i64) -> Result<OffsetDateTime, StoreError> {
    OffsetDateTime::from_unix_timestamp(seconds).map_err(|_| StoreError::Damaged(format!("a time of {seconds} s")))
}

fn grant_key(grant: &GrantId) -> String {
    format!("grant.{grant}")
}

fn seen_key(id: &WebhookId) -> String {
    format!("seen.{id}")
}

impl Nats {
    /// Connects to `target` and makes the stream and the bucket where they do not exist.
    pub async fn connect(target: &NatsTarget) -> Result<Nats, StoreError> {
        Nats::connect_with(target, DUPLICATE_WINDOW).await
    }

    /// The same with another duplicate window, so a test can outlast it.
    pub(crate) async fn connect_with(target: &NatsTarget, window: Duration) -> Result<Nats, StoreError> {
        let client = async_nats::ConnectOptions::new()
            .name("optin-inbox")
            .connection_timeout(Duration::from_secs(5))
            .request_timeout(Some(Duration::from_secs(10)))
            .connect(target.server.as_str())
            .await
            .map_err(|e| StoreError::Engine(format!("cannot reach NATS at {}: {e}", target.server)))?;
        let context = jetstream::new(client);
        let name = target.name.clone();
        let stream = context
            .get_or_create_stream(stream::Config {
                name: format!("{name}-slices"),
                subjects: vec![format!("{name}.slices.*")],
                storage: stream::StorageType::File,
                duplicate_window: window,
                ..Default::default()
            })
            .await
            .map_err(|e| StoreError::Engine(format!("the stream {name}-slices: {e}")))?;
        let config = kv::Config { bucket: format!("{name}-inbox"), history: 1, storage: stream::StorageType::File, ..Default::default() };
        // Two processes starting at once both try to make it; the loser finds it made.
        let bucket = match context.create_key_value(config).await {
            Ok(bucket) => bucket,
            Err(made) => {
                context.get_key_value(format!("{name}-inbox")).await.map_err(|e| StoreError::Engine(format!("the bucket {name}-inbox: {made}; {e}")))?
            }
        };
        Ok(Nats { bucket, stream, context, name })
    }

    /// Removes the stream and the bucket, for tests that made their own.
    #[cfg(test)]
    pub(crate) async fn danger_delete_all(self) {
        let _ = self.context.delete_stream(format!("{}-slices", self.name)).await;
        let _ = self.context.delete_key_value(format!("{}-inbox", self.name)).await;
    }

    /// How many messages the stream holds, each copy counted: what listing would hide.
    #[cfg(test)]
    pub(crate) async fn messages_held(&self) -> u64 {
        let mut stream = self.stream.clone();
        stream.info().await.map(|info| info.state.messages).unwrap_or(u64::MAX)
    }

    fn subject(&self, grant: &GrantId) -> String {
        format!("{}.slices.{grant}", self.name)
    }

    async fn stored_grant(&self, grant: &GrantId) -> Result<Option<(StoredGrant, u64)>, StoreError> {
        let Some(entry) = self.bucket.entry(grant_key(grant)).await.map_err(engine)? else { return Ok(None) };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let stored: StoredGrant = serde_json::from_slice(&entry.value).map_err(|e| StoreError::Damaged(format!("grant {grant}: {e}")))?;
        Ok(Some((stored, entry.revision)))
    }

    /// Every grant in the bucket, in no order.
    async fn stored_grants(&self) -> Result<Vec<(GrantId, StoredGrant)>, StoreError> {
        let mut keys = self.bucket.keys().await.map_err(engine)?;
        let mut ids = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(engine)?;
            if let Some(id) = key.strip_prefix("grant.").and_then(GrantId::parse) {
                ids.push(id);
            }
        }
        let mut grants = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some((stored, _)) = self.stored_grant(&id).await? {
                grants.push((id, stored));
            }
        }
        Ok(grants)
    }

    async fn seen(&self, id: &WebhookId) -> Result<bool, StoreError> {
        Ok(self.bucket.entry(seen_key(id)).await.map_err(engine)?.is_some_and(|e| e.operation == kv::Operation::Put))
    }

    /// Records a delivery; `false` when another process (or an earlier try) did.
    async fn record(&self, id: &WebhookId, grant: &GrantId, kind: &str, at: OffsetDateTime) -> Result<bool, StoreError> {
        let value = json(&StoredDelivery { v: RECORD_VERSION, grant_id: grant.to_string(), r#type: kind.into(), received_at: at.unix_timestamp() })?;
        match self.bucket.create(seen_key(id), value).await {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(engine(e)),
        }
    }

    /// The slices on `subject`, in stream order, each `jti` once.
    async fn read(&self, subject: String) -> Result<Vec<StoredSlice>, StoreError> {
        let consumer = self.stream.create_consumer(pull::OrderedConfig { filter_subject: subject, ..Default::default() }).await.map_err(engine)?;
        let pending = consumer.cached_info().num_pending;
        let mut slices: Vec<StoredSlice> = Vec::new();
        if pending == 0 {
            return Ok(slices);
        }
        let mut messages = consumer.messages().await.map_err(engine)?;
        let mut jtis = std::collections::HashSet::new();
        while let Some(message) = messages.next().await {
            let message = message.map_err(engine)?;
            let info = message.info().map_err(engine)?;
            let (sequence, left) = (info.stream_sequence, info.pending);
            let slice: StoredSlice = serde_json::from_slice(&message.payload).map_err(|e| StoreError::Damaged(format!("stream message {sequence}: {e}")))?;
            if jtis.insert(slice.jti.clone()) {
                slices.push(slice);
            }
            if left == 0 {
                break;
            }
        }
        Ok(slices)
    }

    /// Removes one message, which the grant's purge may have taken already: a failed delete
    /// is an error only while the message is still there.
    async fn remove(&self, sequence: u64) -> Result<(), StoreError> {
        let Err(deleting) = self.stream.delete_message(sequence).await else { return Ok(()) };
        match self.stream.get_raw_message(sequence).await {
            Err(e) if e.kind() == stream::RawMessageErrorKind::NoMessageFound => Ok(()),
            _ => Err(engine(deleting)),
        }
    }

    /// Purges the grant's subject once: the purge is marked done in the grant, so a retry of
    /// the end that finds it marked does not purge again.
    async fn purge(&self, grant_id: &GrantId) -> Result<(), StoreError> {
        self.stream.purge().filter(self.subject(grant_id)).await.map_err(engine)?;
        loop {
            let (mut stored, revision) = self.stored_grant(grant_id).await?.ok_or_else(|| StoreError::Damaged(format!("grant {grant_id} vanished")))?;
            let Some(end) = stored.ended.as_mut() else { return Err(StoreError::Damaged(format!("grant {grant_id} lost its end"))) };
            if end.purged {
                return Ok(());
            }
            end.purged = true;
            match self.bucket.update(grant_key(grant_id), json(&stored)?, revision).await {
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(engine(e)),
            }
        }
    }
}

fn state_of(end: &StoredEnd) -> Result<GrantState, StoreError> {
    GrantState::parse(&end.state).ok_or_else(|| StoreError::Damaged(format!("a grant ended as `{}`", end.state)))
}

fn ended_refusal(grant: &GrantId, end: &StoredEnd) -> Result<Insert, StoreError> {
    let by = WebhookId::parse(&end.by).ok_or_else(|| StoreError::Damaged(format!("grant {grant} ended by no delivery")))?;
    Ok(Insert::Refused(Refused::GrantEnded(state_of(end)?, by)))
}

fn grant_record(grant_id: GrantId, stored: StoredGrant) -> Result<GrantRecord, StoreError> {
    let damaged = |what: &str| StoreError::Damaged(format!("grant {grant_id}: {what}"));
    let ended = match stored.ended {
        None => None,
        Some(end) => Some(Ended {
            state: state_of(&end)?,
            by: WebhookId::parse(&end.by).ok_or_else(|| damaged("ended by no delivery"))?,
            at: time(end.at)?,
            erased: end.erased,
            kept: end.kept,
        }),
    };
    Ok(GrantRecord {
        request_id: RequestId::parse(&stored.request_id).ok_or_else(|| damaged("not a request id"))?,
        bundle: stored.bundle,
        receipt: stored.receipt,
        created_at: time(stored.created_at)?,
        ended,
        grant_id,
    })
}

impl Store for Nats {
    async fn create_grant(&self, grant: NewGrant) -> Result<Insert, StoreError> {
        if self.seen(&grant.delivery).await? {
            return Ok(Insert::Duplicate);
        }
        let stored = StoredGrant {
            v: RECORD_VERSION,
            request_id: grant.request_id.to_string(),
            bundle: grant.bundle,
            receipt: grant.receipt,
            created_at: grant.at.unix_timestamp(),
            slices: 0,
            ended: None,
        };
        match self.bucket.create(grant_key(&grant.grant_id), json(&stored)?).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(Insert::Duplicate),
            Err(e) => return Err(engine(e)),
        }
        self.record(&grant.delivery, &grant.grant_id, "grant.created", grant.at).await?;
        Ok(Insert::Stored)
    }

    async fn store_slice(&self, slice: NewSlice) -> Result<Insert, StoreError> {
        let Some((mut stored, mut revision)) = self.stored_grant(&slice.grant_id).await? else { return Ok(Insert::Refused(Refused::UnknownGrant)) };
        if let Some(end) = &stored.ended {
            return ended_refusal(&slice.grant_id, end);
        }
        if self.seen(&slice.delivery).await? {
            return Ok(Insert::Duplicate);
        }
        let message = StoredSlice {
            v: RECORD_VERSION,
            jti: slice.delivery.to_string(),
            grant_id: slice.grant_id.to_string(),
            jws: slice.jws,
            items: slice.items,
            received_at: slice.at.unix_timestamp(),
        };
        let publish = jetstream::message::PublishMessage::build().message_id(slice.delivery.as_str()).payload(json(&message)?);
        let ack = self.context.send_publish(self.subject(&slice.grant_id), publish).await.map_err(engine)?.await.map_err(engine)?;
        // One process records the delivery; the others, sending it at the same time, were
        // deduplicated by the stream and answer that it was taken.
        if !self.record(&slice.delivery, &slice.grant_id, "slice.delivered", slice.at).await? {
            return Ok(Insert::Duplicate);
        }
        // The commit: counted in the grant at the revision read while it was live. An end in
        // between changed the revision; then the message is removed (the grant's purge may
        // have taken it already) and the slice refused.
        loop {
            stored.slices += 1;
            match self.bucket.update(grant_key(&slice.grant_id), json(&stored)?, revision).await {
                Ok(_) => return Ok(Insert::Stored),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(e) => return Err(engine(e)),
            }
            (stored, revision) = self.stored_grant(&slice.grant_id).await?.ok_or_else(|| StoreError::Damaged(format!("grant {} vanished", slice.grant_id)))?;
            if let Some(end) = &stored.ended {
                self.remove(ack.sequence).await?;
                return ended_refusal(&slice.grant_id, end);
            }
        }
    }

    async fn end_grant(&self, ending: Ending) -> Result<Insert, StoreError> {
        // A replay of the end itself is a duplicate, not a refusal: checked first.
        if self.seen(&ending.delivery).await? {
            return Ok(Insert::Duplicate);
        }
        let kind = match ending.state {
            GrantState::Revoked => "grant.revoked",
            GrantState::Expired => "grant.expired",
            GrantState::Live => return Err(StoreError::Engine("a grant cannot end as live".into())),
        };
        loop {
            let Some((mut stored, revision)) = self.stored_grant(&ending.grant_id).await? else { return Ok(Insert::Refused(Refused::UnknownGrant)) };
            match &stored.ended {
                // Marked by this very delivery, by a try that stopped before it finished.
                Some(end) if end.by == ending.delivery.as_str() => break,
                Some(end) => return ended_refusal(&ending.grant_id, end),
                None => {}
            }
            stored.ended = Some(StoredEnd {
                state: ending.state.as_str().into(),
                by: ending.delivery.to_string(),
                at: ending.at.unix_timestamp(),
                receipt: ending.receipt.clone(),
                keep: ending.keep == Keep::Flagged,
                erased: if ending.keep == Keep::Erase { stored.slices } else { 0 },
                kept: if ending.keep == Keep::Flagged { stored.slices } else { 0 },
                purged: ending.keep == Keep::Flagged,
            });
            match self.bucket.update(grant_key(&ending.grant_id), json(&stored)?, revision).await {
                Ok(_) => break,
                // Another process changed the grant in between: read it again.
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(e) => return Err(engine(e)),
            }
        }
        if ending.keep == Keep::Erase {
            self.purge(&ending.grant_id).await?;
        }
        self.record(&ending.delivery, &ending.grant_id, kind, ending.at).await?;
        Ok(Insert::Stored)
    }

    async fn grant(&self, grant_id: GrantId) -> Result<Option<GrantRecord>, StoreError> {
        match self.stored_grant(&grant_id).await? {
            Some((stored, _)) => grant_record(grant_id, stored).map(Some),
            None => Ok(None),
        }
    }

    async fn grants(&self) -> Result<Vec<GrantRecord>, StoreError> {
        let mut grants = self.stored_grants().await?.into_iter().map(|(id, stored)| grant_record(id, stored)).collect::<Result<Vec<_>, _>>()?;
        grants.sort_by(|a, b| (a.created_at, a.grant_id.as_str()).cmp(&(b.created_at, b.grant_id.as_str())));
        Ok(grants)
    }

    async fn slices(&self, query: SliceQuery) -> Result<Vec<SliceRecord>, StoreError> {
        let grants: std::collections::HashMap<String, (GrantId, Option<StoredEnd>)> =
            self.stored_grants().await?.into_iter().map(|(id, stored)| (id.to_string(), (id, stored.ended))).collect();
        let subject = match &query.grant {
            Some(grant) => self.subject(grant),
            None => format!("{}.slices.*", self.name),
        };
        let mut out = Vec::new();
        for slice in self.read(subject).await? {
            let damaged = |what: &str| StoreError::Damaged(format!("slice {}: {what}", optin_protocol::request::shown(&slice.jti)));
            let Some((grant_id, ended)) = grants.get(&slice.grant_id) else { return Err(damaged("of no grant")) };
            let kept_after_end = match ended {
                None => false,
                Some(end) if end.keep => true,
                // Ended and erased: a message a stopped process left behind is not data the
                // inbox holds.
                Some(_) => continue,
            };
            let received_at = time(slice.received_at)?;
            if query.since.is_some_and(|since| received_at < since) || (query.live_only && ended.is_some()) {
                continue;
            }
            out.push(SliceRecord {
                jti: WebhookId::parse(&slice.jti).ok_or_else(|| damaged("not a slice id"))?,
                grant_id: grant_id.clone(),
                jws: slice.jws,
                items: slice.items,
                received_at,
                kept_after_end,
            });
        }
        Ok(out)
    }
}
