//! The HTTPS API: the only module that knows HTTP.
//!
//! `GET /v1/slice` and `GET /v1/grant` for marketers, `POST /v1/signals` for the owner's
//! feeders. Every error is an RFC 9457 problem; 4xx say exactly what was wrong, 5xx say
//! little and log the detail. [`app`] builds the router without a socket; `server.rs` puts
//! it behind TLS.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use hyper::body::Frame;
use optin_protocol::problem::{self, Problem};

use crate::core::gate::Pass;
use crate::core::{Core, CoreError, Refusal, Served};

/// Largest `POST /v1/signals` body.
pub const MAX_INGEST_BYTES: usize = 16 * 1024 * 1024;

/// The router over a shared core.
pub fn app(core: Arc<Core>) -> Router {
    Router::new().route("/v1/slice", get(slice)).route("/v1/grant", get(grant)).route("/v1/signals", post(signals)).fallback(not_found).with_state(core)
}

/// An error answer: a problem and, for 401, the bearer challenge.
pub struct ApiError(Problem);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self.0).unwrap_or_default();
        let mut response = (status, [(header::CONTENT_TYPE, problem::CONTENT_TYPE)], body).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer error="invalid_token""#));
        }
        response
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> ApiError {
        ApiError(match refusal {
            Refusal::Token(_) => Problem::new(401, "invalid-token", "Invalid token", "the token is missing, malformed, unknown, expired or revoked"),
            Refusal::Exceeds { field, reason } => {
                Problem::new(403, "exceeds-grant", "Request exceeds the grant", format!("`{field}` exceeds the grant: {reason}")).with_field(field)
            }
            Refusal::Invalid { field, reason } => Problem::new(400, "invalid-request", "Invalid request", format!("`{field}`: {reason}")).with_field(field),
            Refusal::Paused => Problem::new(403, "paused", "Sharing paused", "the person has paused all sharing"),
            Refusal::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                Problem::new(500, "internal", "Internal error", "the agent could not answer; the owner can read its log")
            }
        })
    }
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

async fn slice(State(core): State<Arc<Core>>, headers: HeaderMap, uri: Uri) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let Served { jws, pass, audit } = core.slice(token, uri.query().unwrap_or(""), crate::core::now()).await?;
    let body = Body::new(GatedBody { bytes: Some(Bytes::from(jws)), pass: Some(pass), audit: Some((core.clone(), audit)) });
    Ok(([(header::CONTENT_TYPE, "application/jose"), (header::CACHE_CONTROL, "no-store")], body).into_response())
}

async fn grant(State(core): State<Arc<Core>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let token = bearer(&headers)?;
    let info = core.grant_info(token, crate::core::now()).await?;
    Ok(([(header::CACHE_CONTROL, "no-store")], axum::Json(info)).into_response())
}

async fn signals(State(core): State<Arc<Core>>, headers: HeaderMap, body: Body) -> Result<Response, ApiError> {
    let presented = bearer(&headers)?.ok_or(Refusal::Token("no bearer token"))?;
    if !core.keys().check_ingest_token(presented) {
        return Err(Refusal::Token("not the ingest token").into());
    }
    let bytes = axum::body::to_bytes(body, MAX_INGEST_BYTES)
        .await
        .map_err(|_| ApiError(Problem::new(413, "too-large", "Body too large", format!("the body exceeds {MAX_INGEST_BYTES} bytes"))))?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError(Problem::new(400, "invalid-body", "Invalid body", format!("the body is not UTF-8 (byte {})", e.valid_up_to()))))?;
    let core2 = core.clone();
    let text = text.to_owned();
    // Parsing and the fsync of a large batch are blocking work: keep them off the reactor.
    let result = tokio::task::spawn_blocking(move || core2.ingest(&text)).await.map_err(|e| ApiError::from(Refusal::Internal(e.to_string())))?;
    match result {
        Ok((stored, duplicates)) => Ok(axum::Json(serde_json::json!({ "stored": stored, "duplicates": duplicates })).into_response()),
        Err(CoreError::Batch(e)) => {
            let mut p = Problem::new(400, "invalid-signal", "Invalid signal", format!("batch refused, nothing stored: {e}"));
            p.line = e.line();
            p.field = e.field().map(str::to_owned);
            Err(ApiError(p))
        }
        Err(other) => Err(Refusal::Internal(other.to_string()).into()),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(256).collect();
    ApiError(Problem::new(404, "not-found", "Not found", format!("no endpoint {method} {path}")))
}

/// The body of a slice: hands its bytes over only if the grant is still unrevoked at that
/// moment, records the delivery then, and holds the grant's gate until the connection has
/// the bytes and drops the body (see `gate.rs`).
struct GatedBody {
    bytes: Option<Bytes>,
    pass: Option<Pass>,
    audit: Option<(Arc<Core>, crate::core::audit::AuditEvent)>,
}

#[derive(Debug, thiserror::Error)]
#[error("grant revoked while the slice was in flight")]
struct RevokedInFlight;

impl hyper::body::Body for GatedBody {
    type Data = Bytes;
    type Error = RevokedInFlight;

    fn poll_frame(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, RevokedInFlight>>> {
        let Some(bytes) = self.bytes.take() else { return Poll::Ready(None) };
        let revoked = self.pass.as_ref().is_some_and(Pass::revoked);
        if let Some((core, event)) = self.audit.take() {
            if revoked {
                core.cut_off(event);
            } else {
                core.delivered(event);
            }
        }
        if revoked {
            self.pass = None;
            return Poll::Ready(Some(Err(RevokedInFlight)));
        }
        Poll::Ready(Some(Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.bytes.as_ref().map_or(0, |b| b.len() as u64))
    }
}
