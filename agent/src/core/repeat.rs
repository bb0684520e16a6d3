//! Slices served again. A marketer that asks the same question again and again (a poller,
//! a dashboard) would have every answer cut and signed afresh although nothing in it changed:
//! most of a slice's cost. So the last slices signed are kept, and the same request is
//! answered with the same signed bytes *while a cut made now would hold exactly the same
//! items*; otherwise it is cut again. Every delivery is still on record, a repeat as a
//! `served` record naming the record that first served it (SPEC.md, "Repeated slices").
//!
//! Whether a slice is served again must depend only on what the request's scope shows:
//! otherwise a marketer polling one question would learn, from a new `jti` over the same
//! items, that the person did something the grant does not show (a search withheld by the
//! never-share list, a cart where only searches are granted). So a kept slice is served
//! again exactly when a cut made now would hold the same items, in the same order and
//! states, with or without a next page, for the same terms (a token narrowed otherwise cuts
//! its own) and a scope that differs only in its time window, which the clock moves; and
//! never before it was cut. That is known in one of two ways:
//! - without cutting ([`Repeats::find`]), when since the slice was kept no signal was stored
//!   or forgotten ([`crate::store::Store::signals_version`]), no signal the scope admits
//!   left the window at its start or entered it at its end, and no open cart in it reached
//!   its deadline;
//! - otherwise by cutting, and comparing what the cut holds with what the slice holds
//!   ([`Repeats::renewed`]); when they are the same, the slice is kept again as of that cut.
//!
//! A forget lets go of every slice kept ([`Repeats::clear`]), so none holds, even in memory,
//! what the person forgot. Aggregate answers are never kept here: they have their own memory
//! (`store::budget`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use optin_protocol::scope::{Applied, GrantId, Granularity, Terms};
use optin_protocol::signal::Kind;
use optin_protocol::slice::{SliceClaims, SliceItem};
use optin_protocol::span::Span;
use time::OffsetDateTime;

use crate::store::{Store, StoreError};

/// Most slices kept, over all grants.
const MOST_KEPT: usize = 256;
/// Most bytes of signed slices kept, over all grants: a page of 1,000 raw items is about
/// 0.3 MB, so this keeps the slices of a few dozen busy pollers without weighing on the
/// person's laptop.
const MOST_BYTES: usize = 32 * 1024 * 1024;

/// The slices kept, by grant and request.
#[derive(Default)]
pub(super) struct Repeats {
    kept: Mutex<Kept>,
}

#[derive(Default)]
struct Kept {
    slices: HashMap<(GrantId, String), Entry>,
    /// Counts lookups, so the least recently used slice is the one let go of.
    clock: u64,
}

impl Kept {
    /// The bytes of the signed slices kept (a few hundred at most to add up).
    fn bytes(&self) -> usize {
        self.slices.values().map(|e| e.slice.jws.len()).sum()
    }
}

/// A kept slice, and when it was last asked for.
struct Entry {
    slice: Arc<Slice>,
    used: u64,
}

/// A signed slice, with what it was cut from.
#[derive(Clone)]
pub(super) struct Slice {
    /// The JWS as first sent.
    pub jws: Bytes,
    /// Its `jti`.
    pub slice_id: String,
    /// Hex SHA-256 of the JWS, as its records name it.
    pub jws_sha256: String,
    /// The audit record that first served it (its `audit_seq`).
    pub first_seq: u64,
    /// When it was cut (its `iat`): it is never served as of an earlier time.
    cut_at: OffsetDateTime,
    /// What a cut is compared with: its items and whether a page follows ([`content`]).
    content: [u8; 32],
    /// How many items it holds.
    pub items: usize,
    /// The scope it was last found current under, never-share list included: the scope it
    /// was cut to, or that of a later cut that held the same.
    applied: Applied,
    /// The terms it was cut under (the grant's, narrowed by the token), which give the
    /// claims besides the scope, and its grant's purpose.
    terms: Terms,
    purpose: String,
    /// The signals' version it was last found current at.
    version: u64,
    /// When its first open cart settles (is abandoned unless a purchase came), if it holds one.
    settles: Option<OffsetDateTime>,
}

/// What a request gets now, to compare with a kept slice.
pub(super) struct Asked<'a> {
    pub grant: &'a GrantId,
    /// The request's path and query, exactly as sent.
    pub asked: &'a str,
    pub applied: &'a Applied,
    /// The terms the token gives now, and the grant's purpose.
    pub terms: &'a Terms,
    pub purpose: &'a str,
    pub now: OffsetDateTime,
}

impl Repeats {
    /// Keeps a slice just signed for `asked` (its claims, JWS and the JWS's hex SHA-256),
    /// cut when the signals were at `version`.
    pub(super) fn keep(&self, asked: &Asked<'_>, signed: (&SliceClaims, &Bytes, &str), version: u64, abandon_after: Span) {
        let (claims, jws, jws_sha256) = signed;
        if claims.scope.granularity == Granularity::Aggregate || jws.len() > MOST_BYTES / 8 {
            return;
        }
        let Some(first_seq) = claims.audit_seq else { return };
        let cut_at = OffsetDateTime::from_unix_timestamp(claims.iat).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let slice = Slice {
            slice_id: claims.jti.clone(),
            jws_sha256: jws_sha256.to_owned(),
            first_seq,
            cut_at,
            content: content(claims),
            items: claims.items.len(),
            applied: claims.scope.clone(),
            terms: asked.terms.clone(),
            purpose: asked.purpose.to_owned(),
            version,
            settles: settles(&claims.items, abandon_after, cut_at),
            jws: jws.clone(),
        };
        self.put(asked, slice);
    }

    /// The kept slice for `asked` that holds what `claims`, just cut for it at `version`,
    /// hold: kept again as current under the cut's scope and version, and returned.
    pub(super) fn renewed(&self, asked: &Asked<'_>, claims: &SliceClaims, version: u64, abandon_after: Span) -> Option<Arc<Slice>> {
        let slice = self.lookup(asked)?;
        let (then, now) = (&slice.applied, &claims.scope);
        if !(slice.same_terms(asked) && same_scope_later(then, now) && content(claims) == slice.content) {
            return None;
        }
        let settles = settles(&claims.items, abandon_after, asked.now);
        Some(self.put(asked, Slice { applied: now.clone(), version, settles, ..Slice::clone(&slice) }))
    }

    /// Keeps `slice` for `asked`, in place of any before, within the bounds.
    fn put(&self, asked: &Asked<'_>, slice: Slice) -> Arc<Slice> {
        let slice = Arc::new(slice);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.clock += 1;
        let entry = Entry { slice: slice.clone(), used: kept.clock };
        kept.slices.insert((asked.grant.clone(), asked.asked.to_owned()), entry);
        while kept.slices.len() > MOST_KEPT || kept.bytes() > MOST_BYTES {
            let Some(oldest) = kept.slices.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone()) else { break };
            kept.slices.remove(&oldest);
        }
        slice
    }

    /// The slice kept for `asked`, if any, marked as just used.
    fn lookup(&self, asked: &Asked<'_>) -> Option<Arc<Slice>> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.clock += 1;
        let clock = kept.clock;
        let entry = kept.slices.get_mut(&(asked.grant.clone(), asked.asked.to_owned()))?;
        entry.used = clock;
        Some(entry.slice.clone())
    }

    /// The kept slice that answers `asked` now, if one is still current (see the module).
    pub(super) fn find(&self, store: &Store, asked: &Asked<'_>) -> Result<Option<Arc<Slice>>, StoreError> {
        let Some(slice) = self.lookup(asked) else { return Ok(None) };
        Ok(slice.current(store, asked)?.then_some(slice))
    }

    /// Lets go of every slice kept: after a forget, none may hold what was forgotten.
    pub(super) fn clear(&self) {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).slices.clear();
    }

    /// Lets go of a grant's slices (revoked: none will be asked for again).
    pub(super) fn forget_grant(&self, grant: &GrantId) {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).slices.retain(|(g, _), _| g != grant);
    }

    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.kept.lock().unwrap_or_else(|p| p.into_inner()).slices.len()
    }
}

impl Slice {
    /// Whether `asked` presents the terms and purpose it was cut for, no earlier than it was.
    fn same_terms(&self, asked: &Asked<'_>) -> bool {
        asked.now >= self.cut_at && self.terms == *asked.terms && self.purpose == asked.purpose
    }

    /// Whether it is current for `asked`, known without cutting (see the module).
    fn current(&self, store: &Store, asked: &Asked<'_>) -> Result<bool, StoreError> {
        let (then, now) = (&self.applied, asked.applied);
        let unchanged = self.version == store.signals_version() && self.settles.map_or(true, |at| asked.now < at) && self.same_terms(asked);
        if !unchanged || !same_scope_later(then, now) {
            return Ok(false);
        }
        for kind in then.kinds.iter() {
            // What left the window at its start was admitted then; what entered at its end
            // is admitted now.
            if any_admitted(store, kind, then.since, now.since, then)? || any_admitted(store, kind, then.until, now.until, now)? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What two cuts for the same request are compared by: the SHA-256 of the items' JSON and
/// whether a page follows. The same items (ids are per grant, states included) with a next
/// page after both end at the same position, so the kept `next_cursor` is right too.
fn content(claims: &SliceClaims) -> [u8; 32] {
    // Serialising items cannot fail (no map with non-string keys); an empty hash for a
    // failure would only make two cuts differ.
    let mut bytes = serde_json::to_vec(&claims.items).unwrap_or_default();
    bytes.push(u8::from(claims.next_cursor.is_some()));
    optin_protocol::sha256(&bytes)
}

/// Whether scope `b` is scope `a` later: the same but for a time window that only moved
/// forward (a clock set back cuts again). Every field is named, so that one added to
/// [`Applied`] must be placed here, in the comparison or out of it.
fn same_scope_later(a: &Applied, b: &Applied) -> bool {
    let Applied { kinds, granularity, since, until, limit, categories, merchants, fields, never_share } = a;
    b.since >= *since
        && b.until >= *until
        && *kinds == b.kinds
        && *granularity == b.granularity
        && *limit == b.limit
        && *categories == b.categories
        && *merchants == b.merchants
        && *fields == b.fields
        && *never_share == b.never_share
}

/// Whether a signal of `kind` in `since ≤ at < until` is one `applied` admits.
fn any_admitted(store: &Store, kind: Kind, since: OffsetDateTime, until: OffsetDateTime, applied: &Applied) -> Result<bool, StoreError> {
    for row in store.scan(kind, since, until, None) {
        if applied.admits(&row?.1) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// When the first cart of `items` that may still be open at `now` settles: a cart shows its
/// state (open, abandoned, purchased), and an open one becomes abandoned at its deadline. A
/// purchase that settles it sooner is a stored signal, which changes the version anyway.
fn settles(items: &[SliceItem], abandon_after: Span, now: OffsetDateTime) -> Option<OffsetDateTime> {
    items
        .iter()
        .filter_map(|item| match item {
            SliceItem::Raw(raw) if raw.body.kind() == Kind::Cart => Some(raw.at),
            SliceItem::Partial(partial) if partial.kind == Kind::Cart => Some(partial.at),
            _ => None,
        })
        .filter_map(|at| at.checked_add(abandon_after.duration()))
        .filter(|deadline| *deadline > now)
        .min()
}
