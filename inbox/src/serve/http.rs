//! The routes and answers: the one module that knows HTTP requests and statuses.
//!
//! | request | answer |
//! |---|---|
//! | `GET /.well-known/optin-request.json` | `200 application/json` `{"requests":[…]}`, or `404` when no request is live |
//! | `POST /optin/inbox` with the `webhook-*` headers | `200 {"taken":"stored"}` or `{"taken":"duplicate"}`; a refusal's status and problem+json |
//!
//! Bodies in memory at once are bounded by a budget (`serve --body-budget`); a push that
//! finds no room within 5 s is answered `503` with `Retry-After: 1`, which the agent retries.
//!
//! Every refusal is `application/problem+json`, `{"type":"urn:optin:inbox:problem:<slug>",
//! "title","status","detail"}`: the detail says what was wrong, and for a 500 only that the
//! inbox failed (the log has the rest).

use std::sync::Arc;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes};
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde_json::json;
use time::OffsetDateTime;
use tokio::sync::Semaphore;

use optin_protocol::push;
use optin_protocol::request::WELL_KNOWN_PATH;
use optin_protocol::webhook::Headers;

use crate::home::INBOX_PATH;
use crate::receive::{Inbox, Refusal, Taken};
use crate::store::Store;

/// What a problem's `type` starts with.
pub const PROBLEM_PREFIX: &str = "urn:optin:inbox:problem:";

/// How long a push's body may take to arrive once its head has.
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a push waits for room in the body budget before it is answered 503.
const BUDGET_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// The body budget: bytes of push bodies held at once, in KiB permits.
pub fn body_budget(bytes: usize) -> Arc<Semaphore> {
    // At least one largest body, so that any push the protocol allows can be taken.
    Arc::new(Semaphore::new(bytes.max(push::MAX_BODY_BYTES).div_ceil(1024)))
}

/// Answers one request. Generic over the body so that tests answer requests without a socket.
pub async fn answer<S, B>(inbox: Arc<Inbox<S>>, bodies: Arc<Semaphore>, request: Request<B>) -> Response<Full<Bytes>>
where
    S: Store,
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let path = request.uri().path();
    if path == WELL_KNOWN_PATH {
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return not_allowed("GET, HEAD");
        }
        let now = OffsetDateTime::now_utc();
        return match inbox.requests.current(now).document(now) {
            Some(document) => {
                let mut response = Response::new(Full::new(Bytes::from(document)));
                response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                response.headers_mut().insert(CACHE_CONTROL, HeaderValue::from_static("public, max-age=300"));
                response
            }
            None => problem(StatusCode::NOT_FOUND, "not-found", "this inbox publishes no live request"),
        };
    }
    if path != INBOX_PATH {
        return problem(StatusCode::NOT_FOUND, "not-found", "no such endpoint");
    }
    if request.method() != Method::POST {
        return not_allowed("POST");
    }
    let headers = webhook_headers(request.headers());
    let declared = request.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > push::MAX_BODY_BYTES as u64) {
        return refused(&Refusal::TooLarge(push::MAX_BODY_BYTES));
    }
    // Bodies are held whole until verified, so their bytes in memory at once are bounded: a
    // push takes its declared length (or the largest a body may be) from the budget first,
    // and one that cannot have it soon is asked to come again, as the agent does on 503.
    let need = declared.map_or(push::MAX_BODY_BYTES as u64, |n| n.max(1)).div_ceil(1024);
    let need = u32::try_from(need).unwrap_or(u32::MAX);
    let _budget = match tokio::time::timeout(BUDGET_WAIT, bodies.acquire_many_owned(need)).await {
        Ok(Ok(permit)) => permit,
        _ => {
            let mut response = problem(StatusCode::SERVICE_UNAVAILABLE, "busy", "the inbox is taking other pushes; send this one again shortly");
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return response;
        }
    };
    let body = match tokio::time::timeout(BODY_TIMEOUT, Limited::new(request.into_body(), push::MAX_BODY_BYTES).collect()).await {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => return refused(&Refusal::TooLarge(push::MAX_BODY_BYTES)),
        Ok(Err(_)) => return problem(StatusCode::BAD_REQUEST, "invalid-body", "the body broke off"),
        Err(_) => return problem(StatusCode::REQUEST_TIMEOUT, "timeout", "the body did not arrive in time"),
    };
    match inbox.take(headers, &body, OffsetDateTime::now_utc()).await {
        Ok(taken) => {
            let word = match taken {
                Taken::Stored => "stored",
                Taken::Duplicate => "duplicate",
            };
            tracing::info!(taken = word, bytes = body.len(), "push taken");
            let mut response = Response::new(Full::new(Bytes::from(json!({ "taken": word }).to_string())));
            response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Err(refusal) => {
            // The refusal's text names fields and ids, never a slice's contents or a token.
            match &refusal {
                Refusal::Store(detail) => tracing::error!(detail = %detail, "push not stored"),
                other => tracing::info!(status = other.status(), reason = %other, "push refused"),
            }
            refused(&refusal)
        }
    }
}

/// The three `webhook-*` headers as text, or which one is missing or unreadable.
fn webhook_headers(headers: &hyper::HeaderMap) -> Result<Headers, String> {
    let one = |name: &str| -> Result<String, String> {
        let mut values = headers.get_all(name).iter();
        let value = values.next().ok_or_else(|| format!("{name} is missing"))?;
        if values.next().is_some() {
            return Err(format!("{name} is given more than once"));
        }
        value.to_str().map(str::to_owned).map_err(|_| format!("{name} is not visible ASCII"))
    };
    Ok(Headers { id: one("webhook-id")?, timestamp: one("webhook-timestamp")?, signature: one("webhook-signature")? })
}

fn refused(refusal: &Refusal) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(refusal.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // A store failure's detail is logged; its text here says only to send it again.
    problem(status, refusal.slug(), &refusal.to_string())
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = problem(StatusCode::METHOD_NOT_ALLOWED, "method-not-allowed", &format!("use {allow}"));
    response.headers_mut().insert(ALLOW, HeaderValue::from_static(allow));
    response
}

/// An RFC 9457 problem.
pub fn problem(status: StatusCode, slug: &str, detail: &str) -> Response<Full<Bytes>> {
    let body = json!({
        "type": format!("{PROBLEM_PREFIX}{slug}"),
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
    response
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;
    use crate::requests::{Catalog, Published};
    use crate::store::{Keep, Sqlite};

    fn inbox() -> Arc<Inbox<Sqlite>> {
        let tolerance = optin_protocol::webhook::DEFAULT_TOLERANCE;
        Arc::new(Inbox {
            store: Sqlite::in_memory(),
            domain: "acme.example".into(),
            requests: Catalog::fixed(Published::default()),
            tolerance,
            keep: Keep::Erase,
        })
    }

    /// A request, and the status, problem slug and `Allow` it must be answered with.
    type Case = (&'static str, Request<Full<Bytes>>, u16, &'static str, Option<&'static str>);

    fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &'static [u8]) -> Request<Full<Bytes>> {
        let mut builder = Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(Full::new(Bytes::from_static(body))).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_push_with_no_room_in_the_budget_is_asked_to_come_again() {
        let budget = body_budget(0);
        let _held = budget.clone().acquire_many_owned(u32::try_from(budget.available_permits()).unwrap()).await.unwrap();
        let hooks = [("webhook-id", "x"), ("webhook-timestamp", "1"), ("webhook-signature", "v1a,AAAA"), ("content-length", "2")];
        let response = answer(inbox(), budget, request("POST", INBOX_PATH, &hooks, b"{}")).await;
        assert_eq!((response.status().as_u16(), response.headers().get(RETRY_AFTER).map(|v| v.to_str().unwrap())), (503, Some("1")));
    }

    #[tokio::test]
    async fn every_route_answers_with_its_status_and_a_problem() {
        let big = (push::MAX_BODY_BYTES + 1).to_string();
        let hooks = [("webhook-id", "x"), ("webhook-timestamp", "1"), ("webhook-signature", "v1a,AAAA")];
        let table: Vec<Case> = vec![
            ("no live request", request("GET", WELL_KNOWN_PATH, &[], b""), 404, "not-found", None),
            ("posting the requests", request("POST", WELL_KNOWN_PATH, &[], b""), 405, "method-not-allowed", Some("GET, HEAD")),
            ("another path", request("GET", "/optin", &[], b""), 404, "not-found", None),
            ("getting the inbox", request("GET", INBOX_PATH, &[], b""), 405, "method-not-allowed", Some("POST")),
            ("no webhook headers", request("POST", INBOX_PATH, &[], b"{}"), 400, "invalid-header", None),
            ("a declared body too large", request("POST", INBOX_PATH, &[("content-length", big.as_str())], b""), 413, "too-large", None),
            ("a repeated header", request("POST", INBOX_PATH, &[hooks[0], hooks[0], hooks[1], hooks[2]], b"{}"), 400, "invalid-header", None),
            ("not an event", request("POST", INBOX_PATH, &hooks, b"[]"), 400, "invalid-body", None),
        ];
        for (what, req, status, slug, allow) in table {
            let response = answer(inbox(), body_budget(0), req).await;
            assert_eq!(response.status().as_u16(), status, "{what}");
            assert_eq!(response.headers()[CONTENT_TYPE], "application/problem+json", "{what}");
            assert_eq!(response.headers().get(ALLOW).map(|v| v.to_str().unwrap()), allow, "{what}");
            let body: serde_json::Value = serde_json::from_slice(&response.into_body().collect().await.unwrap().to_bytes()).unwrap();
            assert_eq!(
                (body["type"].as_str(), body["status"].as_u64()),
                (Some(format!("{PROBLEM_PREFIX}{slug}").as_str()), Some(u64::from(status))),
                "{what}: {body}"
            );
        }
    }
}
