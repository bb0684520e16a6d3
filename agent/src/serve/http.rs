//! The HTTPS API: the only module that knows HTTP.
//!
//! `GET /v1/slice` and `GET /v1/grant` for marketers, `POST /v1/signals` for the owner's
//! feeders, and `GET /openapi.json`, the document that describes them. Every error is an
//! RFC 9457 problem; 4xx say exactly what was wrong, 5xx say little and log the detail.
//! [`app`] builds the router without a socket; `listener.rs` puts it behind TLS.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::{Extension, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use hyper::body::Frame;
use optin_protocol::problem::{self, Problem, ProblemType};
use optin_protocol::scope::{ScopeError, SliceQuery};

use crate::core::command::{ErrorKind, Request, Response as CommandResponse};
use crate::core::gate::MAX_IN_FLIGHT;
use crate::core::marketer::{CutOff, Delivery};
use crate::core::{now, Core, CoreError, Refusal, Served, SliceRequest};
use crate::serve::listener::{Link, SliceBody};

/// Largest `POST /v1/signals` body.
pub const MAX_INGEST_BYTES: usize = 16 * 1024 * 1024;

/// The OpenAPI 3.1 document of this API, written by hand in the crate (`agent/openapi.json`)
/// and served byte for byte at `GET /openapi.json`. The tests hold its paths to [`routes`]
/// and its problem types to [`ProblemType::ALL`].
pub const OPENAPI: &str = include_str!("../../openapi.json");

/// Every route and the methods it takes (a GET route answers HEAD too). The router is built
/// from this one table, so the tests can compare it with the OpenAPI document's `paths`.
fn routes() -> [(&'static str, MethodRouter<Arc<Core>>); 4] {
    [("/v1/slice", get(slice)), ("/v1/grant", get(grant)), ("/v1/signals", post(signals)), ("/openapi.json", get(openapi))]
}

/// The paths of [`routes`].
#[cfg(test)]
pub(super) fn paths() -> Vec<&'static str> {
    routes().into_iter().map(|(path, _)| path).collect()
}

/// The router over a shared core.
pub fn app(core: Arc<Core>) -> Router {
    routes()
        .into_iter()
        .fold(Router::new(), |router, (path, methods)| router.route(path, methods))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(core)
}

/// How long a client told 429 should wait before asking again, in seconds.
const RETRY_AFTER_SECS: u32 = 1;

/// An error answer: a problem and, for 401, the bearer challenge; for 429, when to retry.
pub struct ApiError(Problem);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response = (status, [(header::CONTENT_TYPE, problem::CONTENT_TYPE)], body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(self.0.retry_after.map_or(RETRY_AFTER_SECS, std::num::NonZeroU32::get)));
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        let status = refusal.status();
        ApiError(match refusal {
            Refusal::Token(_) => Problem::new(status, ProblemType::InvalidToken, "the token is missing, malformed, unknown, expired or revoked"),
            Refusal::Exceeds { field, reason } => {
                Problem::new(status, ProblemType::ExceedsGrant, format!("`{field}` exceeds the grant: {reason}")).with_field(field)
            }
            Refusal::Invalid { field, reason } => Problem::new(status, ProblemType::InvalidRequest, format!("`{field}`: {reason}")).with_field(field),
            Refusal::Paused => Problem::new(status, ProblemType::Paused, "the person has paused all sharing"),
            Refusal::BudgetExhausted => Problem::new(
                status,
                ProblemType::BudgetExhausted,
                "the grant's privacy budget is spent: it answers no new aggregate query, and never will again; answers already given are served again as given",
            ),
            Refusal::Busy => Problem::new(
                status,
                ProblemType::TooManyRequests,
                format!("{MAX_IN_FLIGHT} requests of this grant are already being answered; try again after {RETRY_AFTER_SECS} s"),
            ),
            Refusal::RateLimited { retry_after } => {
                Problem::new(status, ProblemType::RateLimited, format!("the grant's rate allows no more slices now; the next in {retry_after} s"))
                    .with_retry_after(u32::try_from(retry_after).unwrap_or(u32::MAX))
            }
            Refusal::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Problem::new(status, ProblemType::Internal, "the agent could not answer; the owner can read its log")
            }
        })
    }
}

/// Parses a slice request's query string (`application/x-www-form-urlencoded`) into a
/// [`SliceQuery`]. The core never sees percent-encoding.
pub fn slice_query(query: &str) -> Result<SliceQuery, Refusal> {
    let invalid = |reason: &str| Refusal::Invalid { field: "query".into(), reason: reason.into() };
    // form_urlencoded decodes bytes that are not UTF-8 lossily; a query that would lose
    // bytes that way is refused instead. Separators are ASCII, so if the whole query decodes
    // to UTF-8, so does every name and value in it.
    if percent_encoding::percent_decode_str(query).decode_utf8().is_err() {
        return Err(invalid("not UTF-8 once percent-decoded"));
    }
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes()).into_owned().collect();
    SliceQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(|e| match e {
        ScopeError::Invalid { field, reason } => Refusal::Invalid { field, reason },
        other => invalid(&other.to_string()),
    })
}

fn bearer(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else { return Ok(None) };
    if values.next().is_some() {
        return Err(Refusal::Token("several Authorization headers").into());
    }
    let text = value.to_str().map_err(|_| ApiError::from(Refusal::Token("non-ASCII Authorization")))?;
    match text.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(Refusal::Token("not a bearer token").into()),
    }
}

async fn slice(State(core): State<Arc<Core>>, link: Option<Extension<Arc<Link>>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let bearer = bearer(&headers)?;
    let query = uri.query().unwrap_or("");
    let asked = format!("/v1/slice?{query}");
    // The connection, when there is one (the router also answers without a socket, in tests).
    let link = link.map(|Extension(link)| link);
    let carrier = link.as_deref().map(Link::carrier);
    let served = core.slice(SliceRequest { bearer, query: slice_query(query), asked: &asked, carrier }, now()).await?;
    let body = Body::new(GatedBody { handing: Handing::NotYet(served), on: link.as_ref().map(Link::slice_body) });
    Ok(([(header::CONTENT_TYPE, "application/jose"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}

async fn grant(State(core): State<Arc<Core>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let info = core.grant_info(bearer(&headers)?, "/v1/grant", now()).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(info)).into_response())
}

/// How long a client may keep the OpenAPI document: it changes only with the agent's version,
/// and holds nothing secret.
const OPENAPI_CACHE: &str = "public, max-age=3600";

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, OPENAPI_CACHE)], OPENAPI).into_response()
}

/// The answer to `POST /v1/signals`: the batch is stored.
#[derive(serde::Serialize)]
struct Ingested {
    /// New signals.
    stored: usize,
    /// Signals already present, by id.
    duplicates: usize,
}

/// The media types of an NDJSON body, with or without parameters (`; charset=utf-8`).
const NDJSON_TYPES: [&str; 2] = ["application/x-ndjson", "application/jsonl"];

/// Refuses a body that does not say it is NDJSON (415): a form post or a JSON array sent by
/// mistake should be told so, not parsed line by line into a confusing error.
fn ndjson_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let essence = given.split(';').next().unwrap_or("").trim();
    if NDJSON_TYPES.iter().any(|t| essence.eq_ignore_ascii_case(t)) {
        return Ok(());
    }
    let shown: String = given.chars().take(64).filter(|c| !c.is_control()).collect();
    let detail = format!("the body must be NDJSON ({}), not `{shown}`", NDJSON_TYPES.join(" or "));
    Err(ApiError(Problem::new(415, ProblemType::UnsupportedMediaType, detail)))
}

async fn signals(State(core): State<Arc<Core>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let presented = bearer(&headers)?.ok_or(Refusal::Token("no bearer token"))?;
    if !core.keys().check_ingest_token(presented) {
        return Err(Refusal::Token("not the ingest token").into());
    }
    ndjson_content_type(&headers)?;
    let bytes = match read_body(body, MAX_INGEST_BYTES).await {
        Ok(Some(bytes)) => bytes,
        Ok(None) => return Err(ApiError(Problem::new(413, ProblemType::TooLarge, format!("the body exceeds {MAX_INGEST_BYTES} bytes")))),
        Err(e) => {
            tracing::debug!(error = %e, "ingest body unreadable");
            return Err(ApiError(Problem::new(400, ProblemType::InvalidBody, "the body could not be read: its framing is broken or it ended early")));
        }
    };
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError(Problem::new(400, ProblemType::InvalidBody, format!("the body is not UTF-8 (byte {})", e.valid_up_to()))))?;
    // The core moves the parsing and the fsync off this worker.
    let result = core.handle(Request::Ingest { ndjson: text.to_owned(), dry_run: false }, now()).await;
    match result {
        Ok(CommandResponse::Ingested { stored, duplicates }) => Ok(axum::Json(Ingested { stored, duplicates }).into_response()),
        Ok(other) => Err(Refusal::Internal(format!("ingest answered {other:?}")).into()),
        Err(CoreError::Batch(e)) => {
            let mut p = Problem::new(400, ProblemType::InvalidSignal, format!("batch refused, nothing stored: {e}"));
            p.line = e.line();
            p.field = e.field().map(str::to_owned);
            Err(ApiError(p))
        }
        Err(other) if other.kind() == ErrorKind::Unavailable => {
            tracing::warn!(error = %other, "ingest unavailable");
            Err(ApiError(Problem::new(503, ProblemType::Unavailable, "the store cannot take signals now; send them again later")))
        }
        Err(other) => Err(Refusal::Internal(other.to_string()).into()),
    }
}

/// Reads a whole body of at most `limit` bytes, or `None` if it is longer. A body that breaks
/// off (a malformed chunk, a connection closed before its `Content-Length`) is an error of the
/// client, told apart from one that is too long: `axum::body::to_bytes` reports both alike.
async fn read_body(mut body: Body, limit: usize) -> Result<Option<Vec<u8>>, axum::Error> {
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| hyper::body::Body::poll_frame(Pin::new(&mut body), cx)).await {
        // Trailers carry nothing an ingest reads.
        let Ok(data) = frame?.into_data() else { continue };
        if bytes.len() + data.len() > limit {
            return Ok(None);
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Some(bytes))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(256).collect();
    ApiError(Problem::new(405, ProblemType::MethodNotAllowed, format!("{path} does not take {method}")))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(256).collect();
    ApiError(Problem::new(404, ProblemType::NotFound, format!("no endpoint {method} {path}")))
}

/// How much of a slice the connection takes at a time: one HTTP/2 frame, one TLS record.
const PART: usize = 16 * 1024;

/// The body of a slice. It starts the hand-over ([`Served::deliver`]) when the connection first
/// asks for bytes, so a revoke that came first cuts it off, then hands the slice over part by
/// part, each only if the grant is still not revoked ([`Delivery::take`]). hyper asks for the
/// next part only when it has room for it (HTTP/1.1: its write buffer; HTTP/2: the stream's
/// flow-control window, after the first part), so what a client does not read stays here.
/// After the last part the delivery goes to the connection ([`Link::handed_over`]), which
/// lets go of the grant's gate once the bytes are written out: until then a revocation cuts
/// the connection off, and the connection's stall timeout watches it.
struct GatedBody {
    handing: Handing,
    /// The connection, when there is one.
    on: Option<SliceBody>,
}

enum Handing {
    NotYet(Served),
    Parts { jws: Bytes, at: usize, delivery: Delivery },
    Done,
}

impl hyper::body::Body for GatedBody {
    type Data = Bytes;
    type Error = CutOff;

    fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, CutOff>>> {
        let this = self.get_mut();
        let (jws, at, mut delivery) = match std::mem::replace(&mut this.handing, Handing::Done) {
            Handing::NotYet(served) => match served.deliver() {
                Some((jws, delivery)) => (jws, 0, delivery),
                None => return Poll::Ready(Some(Err(CutOff))),
            },
            Handing::Parts { jws, at, delivery } => (jws, at, delivery),
            Handing::Done => return Poll::Ready(None),
        };
        delivery.take()?;
        let end = jws.len().min(at + PART);
        let part = jws.slice(at..end);
        if let Some(on) = &this.on {
            on.link().progressed();
        }
        if end < jws.len() {
            this.handing = Handing::Parts { jws, at: end, delivery };
        } else {
            match &this.on {
                Some(on) => on.link().handed_over(delivery),
                // No connection to watch (the router answering in tests): handed over is out.
                None => delivery.written(),
            }
        }
        Poll::Ready(Some(Ok(Frame::data(part))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.handing, Handing::Done)
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        let left = match &self.handing {
            Handing::NotYet(served) => served.len(),
            Handing::Parts { jws, at, .. } => jws.len() - at,
            Handing::Done => 0,
        };
        hyper::body::SizeHint::with_exact(left as u64)
    }
}
