//! Which fields of a signal a `raw` grant shares (`--fields`, the `fields=` caveat).
//!
//! A field is named as it appears in a raw item ([`NAMES`]); an item's own fields are named
//! below `items` (`items.price`). Every item always shows [`ALWAYS`]: without its kind, time
//! and per-grant id it would not be an item. A field left out is absent from the item, and no
//! field that stays tells it: `total` is the sum of the items' prices times their
//! quantities, so a list holding `total` must hold `items.price` and `items.quantity` too.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde_json::{Map, Value};

/// The fields every raw item shows, whatever the grant says.
pub const ALWAYS: [&str; 3] = ["id", "kind", "at"];

/// The fields a grant may share or leave out, in the order they print.
pub const NAMES: [&str; 13] = [
    "category",
    "currency",
    "engine",
    "items.category",
    "items.name",
    "items.price",
    "items.quantity",
    "items.sku",
    "merchant",
    "order_id",
    "query",
    "state",
    "total",
];

/// What `total` tells, and so what a list holding it must hold too.
const TOTAL_TELLS: [&str; 2] = ["items.price", "items.quantity"];

/// Why a list of fields was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FieldError {
    /// A name that is no field.
    #[error("unknown field `{0}`: the fields are {list}", list = NAMES.join(", "))]
    Unknown(String),
    /// A field every item shows; naming it would suggest it could be left out.
    #[error("`{0}` is always shared: list only fields that may be left out")]
    Always(&'static str),
    /// `total` without what it tells.
    #[error("`total` tells the items' prices and quantities: share items.price and items.quantity too, or leave total out")]
    TotalAlone,
    /// No field at all.
    #[error("name at least one field")]
    Empty,
    /// The same field twice.
    #[error("`{0}` is named more than once")]
    Repeated(&'static str),
}

/// A valid, non-empty set of shareable fields, printed sorted and comma-separated.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fields(BTreeSet<&'static str>);

impl Fields {
    /// Checks a list of names: each a field of [`NAMES`], once, and `total` only with what it
    /// tells.
    pub fn from_list<S: AsRef<str>>(names: &[S]) -> Result<Fields, FieldError> {
        if names.is_empty() {
            return Err(FieldError::Empty);
        }
        let mut set = BTreeSet::new();
        for name in names {
            let name = name.as_ref();
            if let Some(always) = ALWAYS.iter().find(|a| **a == name) {
                return Err(FieldError::Always(always));
            }
            let known = NAMES.iter().find(|n| **n == name).ok_or_else(|| FieldError::Unknown(name.chars().take(32).collect()))?;
            if !set.insert(*known) {
                return Err(FieldError::Repeated(known));
            }
        }
        if set.contains("total") && !TOTAL_TELLS.iter().all(|t| set.contains(t)) {
            return Err(FieldError::TotalAlone);
        }
        Ok(Fields(set))
    }

    /// The names, sorted, as terms hold them.
    pub fn to_vec(&self) -> Vec<String> {
        self.0.iter().map(|n| (*n).to_owned()).collect()
    }

    /// The names, sorted.
    pub fn iter(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.0.iter().copied()
    }
}

impl FromStr for Fields {
    type Err = FieldError;
    /// Parses `name,name,…`, in any order; repeated names are refused.
    fn from_str(text: &str) -> Result<Fields, FieldError> {
        let names: Vec<&str> = if text.is_empty() { Vec::new() } else { text.split(',').collect() };
        Fields::from_list(&names)
    }
}

impl fmt::Display for Fields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.iter().collect::<Vec<_>>().join(","))
    }
}

/// The fields shared by both lists, the intersection of two valid lists, valid too (a list
/// holding `total` holds what it tells, so both lists do and so does what they share). An
/// empty intersection shares only [`ALWAYS`].
pub fn intersect(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = a.iter().filter(|n| b.contains(n)).cloned().collect();
    out.sort();
    out.dedup();
    out
}

/// Removes from a raw item's JSON object every field not in `shared` (nor in [`ALWAYS`]).
/// The `items` list stays when at least one item field is shared, each item holding only
/// those; otherwise it goes too.
pub fn project(item: &mut Map<String, Value>, shared: &[String]) {
    let has = |name: &str| shared.iter().any(|s| s == name);
    item.retain(|key, _| key == "items" || ALWAYS.contains(&key.as_str()) || has(key));
    let item_fields: Vec<&str> = shared.iter().filter_map(|s| s.strip_prefix("items.")).collect();
    if item_fields.is_empty() {
        item.remove("items");
    } else if let Some(Value::Array(items)) = item.get_mut("items") {
        for line in items {
            if let Value::Object(line) = line {
                line.retain(|key, _| item_fields.contains(&key.as_str()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn lists_have_one_spelling() {
        for (text, printed) in [
            ("query", "query"),
            ("total,items.price,items.quantity", "items.price,items.quantity,total"),
            ("merchant,items.name", "items.name,merchant"),
            ("state,category", "category,state"),
        ] {
            let fields: Fields = text.parse().unwrap();
            assert_eq!(fields.to_string(), printed, "{text}");
            assert_eq!(printed.parse::<Fields>().unwrap(), fields, "{printed} reads back");
        }
    }

    #[test]
    fn rejects_lists_that_name_no_field_or_leak_one() {
        for (text, error) in [
            ("", FieldError::Empty),
            ("price", FieldError::Unknown("price".into())),
            ("items", FieldError::Unknown("items".into())),
            ("Query", FieldError::Unknown("Query".into())),
            ("query,", FieldError::Unknown(String::new())),
            (" query", FieldError::Unknown(" query".into())),
            ("at", FieldError::Always("at")),
            ("query,id", FieldError::Always("id")),
            ("kind", FieldError::Always("kind")),
            ("query,query", FieldError::Repeated("query")),
            ("total", FieldError::TotalAlone),
            ("total,items.price", FieldError::TotalAlone),
            ("total,items.quantity", FieldError::TotalAlone),
        ] {
            assert_eq!(text.parse::<Fields>(), Err(error), "{text:?}");
        }
        assert!(FieldError::Unknown("price".into()).to_string().contains("items.price"), "an unknown name is answered with the known ones");
    }

    #[test]
    fn intersections_stay_valid() {
        let all: Vec<String> = NAMES.iter().map(|n| (*n).to_owned()).collect();
        let with_total = Fields::from_list(&["total", "items.price", "items.quantity", "merchant"]).unwrap().to_vec();
        let without = Fields::from_list(&["items.price", "query"]).unwrap().to_vec();
        for (a, b, shared) in [
            (&all, &with_total, vec!["items.price", "items.quantity", "merchant", "total"]),
            (&with_total, &without, vec!["items.price"]),
            (&without, &all, vec!["items.price", "query"]),
            (&vec!["query".to_string()], &with_total, vec![]),
        ] {
            let got = intersect(a, b);
            assert_eq!(got, shared, "{a:?} and {b:?}");
            assert_eq!(intersect(b, a), got, "in either order");
            if !got.is_empty() {
                assert!(Fields::from_list(&got).is_ok(), "{got:?} is a valid list");
            }
        }
    }

    #[test]
    fn projection_keeps_only_what_is_shared() {
        let purchase = json!({
            "id": "i_1", "at": "2026-11-20T10:00:00Z", "kind": "purchase", "category": "Apparel",
            "merchant": "shoes.example", "currency": "EUR", "total": "89.90", "order_id": "A-1",
            "items": [{"name": "Trail shoe", "sku": "TS-1", "category": "Apparel > Shoes", "price": "89.90", "quantity": 1}]
        });
        let cases: Vec<(&[&str], serde_json::Value)> = vec![
            (&["merchant"], json!({"id": "i_1", "at": "2026-11-20T10:00:00Z", "kind": "purchase", "merchant": "shoes.example"})),
            (
                &["merchant", "items.name", "items.category"],
                json!({"id": "i_1", "at": "2026-11-20T10:00:00Z", "kind": "purchase", "merchant": "shoes.example",
                       "items": [{"name": "Trail shoe", "category": "Apparel > Shoes"}]}),
            ),
            (&["query"], json!({"id": "i_1", "at": "2026-11-20T10:00:00Z", "kind": "purchase"})),
            (&NAMES, purchase.clone()),
        ];
        for (shared, expected) in cases {
            let mut item = purchase.as_object().unwrap().clone();
            let shared: Vec<String> = shared.iter().map(|s| (*s).to_owned()).collect();
            project(&mut item, &shared);
            assert_eq!(Value::Object(item), expected, "{shared:?}");
        }
    }
}
