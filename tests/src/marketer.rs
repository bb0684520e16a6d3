//! The marketer's side: fetching slices as a marketer does, and checking refusals.

use optin_examples::Response;
use optin_protocol::bundle::GrantBundle;
use optin_protocol::problem::Problem;
use optin_protocol::slice::{SliceClaims, SliceItem};

use crate::{fixture, Agent};

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
pub fn assert_problem(response: &Response, status: u16, field: &str, what: &str) -> Problem {
    assert_eq!(response.status.as_u16(), status, "{what}: expected {status}, got {} {}", response.status, response.text());
    let problem = response.problem().unwrap_or_else(|| panic!("{what}: body is not problem+json: {}", response.text()));
    assert_eq!(problem.status, status, "{what}");
    assert_eq!(problem.field.as_deref(), Some(field), "{what}: the problem should name the field: {problem:?}");
    problem
}

/// The key of a slice item (see [`fixture::key`]), with the cart state if any.
pub fn item_key(item: &SliceItem) -> String {
    let value = serde_json::to_value(item).expect("slice items serialize");
    fixture::key(&value)
}

/// The raw items of a slice as `(key, state)` pairs, sorted.
pub fn raw_items(claims: &SliceClaims) -> Vec<(String, Option<String>)> {
    let mut out: Vec<(String, Option<String>)> = claims
        .items
        .iter()
        .map(|item| match item {
            SliceItem::Raw(raw) => {
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
pub async fn fetch(agent: &Agent, bundle: &GrantBundle, query: &str) -> Vec<(String, SliceClaims)> {
    optin_examples::fetch_slices(&agent.client(), bundle, query).await.unwrap_or_else(|e| panic!("fetching the slice failed: {e}\nagent log:\n{}", agent.log()))
}

/// Fetches every page and returns the raw items' keys and states, sorted.
pub async fn fetch_raw(agent: &Agent, bundle: &GrantBundle) -> Vec<(String, Option<String>)> {
    let pages = fetch(agent, bundle, "").await;
    let mut all: Vec<(String, Option<String>)> = pages.iter().flat_map(|(_, c)| raw_items(c)).collect();
    all.sort();
    all
}
