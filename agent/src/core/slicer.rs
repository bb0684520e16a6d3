//! Cutting a slice: reading the store within an applied scope (kinds, time and the grant's
//! filters, as [`Applied::admits`] decides), deriving cart states, and reducing each signal
//! to what the granularity shows.

use optin_protocol::scope::{Applied, Granularity};
use optin_protocol::signal::{Body, Signal};
use optin_protocol::slice::{CartState, CategoryItem, PartialItem, RawItem, SliceItem};
use optin_protocol::span::Span;
use time::OffsetDateTime;

use crate::keys::GrantKeys;
use crate::store::{key, Store, StoreError};

/// A malformed cursor (answered 400, field `cursor`).
#[derive(Debug, thiserror::Error)]
#[error("malformed cursor")]
pub struct BadCursor;

/// Why cutting failed.
#[derive(Debug, thiserror::Error)]
pub enum CutError {
    /// The request's cursor does not decode or does not fit the scope.
    #[error(transparent)]
    Cursor(#[from] BadCursor),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No randomness for a cursor's nonce.
    #[error("cannot seal a cursor")]
    Seal,
}

/// One page of items and the cursor of the next, if any.
pub struct Page {
    /// The items.
    pub items: Vec<SliceItem>,
    /// Where the next page starts.
    pub next_cursor: Option<String>,
}

/// Cuts one page of the store to `applied`.
pub fn cut(store: &Store, applied: &Applied, cursor: Option<&str>, keys: &GrantKeys, abandon_after: Span, now: OffsetDateTime) -> Result<Page, CutError> {
    let after = cursor.map(|c| keys.open_cursor(c).and_then(key::Position::from_bytes).ok_or(BadCursor)).transpose()?;
    if after.as_ref().is_some_and(|a| !applied.kinds.contains(a.kind())) {
        return Err(BadCursor.into());
    }
    let limit = applied.limit as usize;
    let mut items = Vec::new();
    let mut last: Option<key::Position> = None;
    // Pages list kind by kind, each in time order; the cursor is the position of the last
    // item sent, so a page never repeats or skips an item even as new signals arrive.
    for kind in applied.kinds.iter() {
        let from = match &after {
            Some(a) if a.kind().tag() > kind.tag() => continue,
            Some(a) if a.kind() == kind => Some(a),
            _ => None,
        };
        for row in store.scan(kind, applied.since, applied.until, from) {
            let (position, signal) = row?;
            // The scan reads the kind and time range; the scope decides the rest (the
            // grant's category and merchant filters), before the page counts the signal, so
            // a page holds only what the grant admits and `next_cursor` means more follows.
            if !applied.admits(&signal) {
                continue;
            }
            if items.len() == limit {
                let next_cursor = match &last {
                    Some(p) => Some(keys.seal_cursor(p.as_bytes()).ok_or(CutError::Seal)?),
                    None => None,
                };
                return Ok(Page { items, next_cursor });
            }
            items.push(project(store, &signal, applied, keys, abandon_after, now)?);
            last = Some(position);
        }
    }
    Ok(Page { items, next_cursor: None })
}

/// How far ahead of the agent's clock a signal may be dated and still wait for a pushed slice
/// to reach it: a category slice ends at the start of the UTC day, so today's signals wait
/// up to a day; one dated beyond that is passed over rather than waited for.
const FAR_AHEAD: time::Duration = time::Duration::days(1);

/// A page of signals in the order they arrived, for a push grant's slice.
pub struct ArrivedPage {
    /// The items.
    pub items: Vec<SliceItem>,
    /// The arrival number the grant's watermark moves to once the inbox takes the page:
    /// every arrival up to it was put in the page or can never be; `None` when none was
    /// passed.
    pub through: Option<u64>,
    /// Whether the page stopped full, with more that can be cut now after it.
    pub more: bool,
}

/// Cuts the signals that arrived after the number `after` to `applied`, in arrival order, at
/// most `applied.limit` of them. A signal the grant will never take (another kind, older
/// than its window, outside its filters) is passed over; one too recent for the scope's
/// `until` (a category slice ends at the start of today) stops the page there, so the
/// watermark waits before it and it goes in a later slice; one dated more than a day ahead
/// ([`FAR_AHEAD`]) is passed over instead.
pub fn cut_arrived(
    store: &Store,
    applied: &Applied,
    after: Option<u64>,
    keys: &GrantKeys,
    abandon_after: Span,
    now: OffsetDateTime,
) -> Result<ArrivedPage, StoreError> {
    let limit = applied.limit as usize;
    let mut page = ArrivedPage { items: Vec::new(), through: None, more: false };
    for arrived in store.arrived_after(after) {
        let arrived = arrived?;
        let signal = &arrived.signal;
        if applied.kinds.contains(signal.kind()) && signal.at >= applied.until {
            // Too recent for this slice: it waits, and with it everything that arrived
            // after, so the watermark never passes it. Unless it is dated further ahead than
            // any slice will reach soon: waiting for it would hold the grant's pushes until
            // then, so it is passed over.
            if signal.at <= now + FAR_AHEAD {
                break;
            }
        } else if applied.admits(signal) {
            if page.items.len() == limit {
                page.more = true;
                break;
            }
            page.items.push(project(store, signal, applied, keys, abandon_after, now)?);
        }
        page.through = Some(arrived.number);
    }
    Ok(page)
}

/// What became of a cart: purchased if a purchase at its merchant followed within
/// `abandon_after`, abandoned if none did and that time has passed, open otherwise.
pub fn cart_state(store: &Store, signal: &Signal, abandon_after: Span, now: OffsetDateTime) -> Result<Option<CartState>, StoreError> {
    let Body::Cart { merchant, .. } = &signal.body else { return Ok(None) };
    // A cart within the delay of the end of representable time can only be open.
    let Some(deadline) = signal.at.checked_add(abandon_after.duration()) else { return Ok(Some(CartState::Open)) };
    let state = if store.purchase_between(merchant, signal.at, deadline)? {
        CartState::Purchased
    } else if now >= deadline {
        CartState::Abandoned
    } else {
        CartState::Open
    };
    Ok(Some(state))
}

/// Reduces a signal to what `applied` shows: its granularity, and at `raw` the grant's
/// fields ([`optin_protocol::fields`]), the others left out.
fn project(store: &Store, signal: &Signal, applied: &Applied, keys: &GrantKeys, abandon_after: Span, now: OffsetDateTime) -> Result<SliceItem, StoreError> {
    Ok(match applied.granularity {
        Granularity::Raw => {
            let raw = RawItem {
                id: keys.item_id(signal.id.as_str()),
                at: signal.at,
                category: signal.category.clone(),
                body: signal.body.clone(),
                state: cart_state(store, signal, abandon_after, now)?,
            };
            match &applied.fields {
                None => SliceItem::Raw(raw),
                Some(shared) => partial(raw, shared)?,
            }
        }
        // An aggregate slice is counted, not cut item by item; until it has its own path a
        // count is made of category items, which show no more than one.
        Granularity::Category | Granularity::Aggregate => {
            SliceItem::Category(CategoryItem { kind: signal.kind(), category: signal.category.clone(), day: signal.at.date().to_string() })
        }
    })
}

/// A raw item with only the `shared` fields.
fn partial(raw: RawItem, shared: &[String]) -> Result<SliceItem, StoreError> {
    let bad = |e: String| StoreError::Corrupt { tree: "signals", detail: format!("a signal does not reduce to its shared fields: {e}") };
    let serde_json::Value::Object(mut object) = serde_json::to_value(&raw).map_err(|e| bad(e.to_string()))? else {
        return Err(bad("not an object".into()));
    };
    optin_protocol::fields::project(&mut object, shared);
    let item: PartialItem = serde_json::from_value(serde_json::Value::Object(object)).map_err(|e| bad(e.to_string()))?;
    Ok(SliceItem::Partial(item))
}
