//! RFC 9457 problem details: the one error shape of the HTTP API.
//!
//! [`ProblemType`] is every type the agent sends. SPEC.md ("Errors") and the agent's OpenAPI
//! document list the same types; the agent's tests hold the three lists equal, so a client
//! that matches on `type` is never sent one it was not told of.

use serde::{Deserialize, Serialize};

/// The media type of problems.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// What every problem `type` starts with; the slug follows.
pub const TYPE_PREFIX: &str = "urn:optin:problem:";

/// Declares [`ProblemType`] and its table from one list, so that [`ProblemType::ALL`] cannot
/// miss a variant.
macro_rules! problem_types {
    ($($(#[doc = $doc:literal])* $variant:ident = $slug:literal, $title:literal;)*) => {
        /// A kind of problem the agent sends, named on the wire `urn:optin:problem:<slug>`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ProblemType {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ProblemType {
            /// Every type, in the order SPEC.md lists them.
            pub const ALL: &'static [ProblemType] = &[$(ProblemType::$variant),*];

            /// The slug, the part of the `type` after [`TYPE_PREFIX`].
            pub fn slug(self) -> &'static str {
                match self {
                    $(ProblemType::$variant => $slug,)*
                }
            }

            /// The fixed title of problems of this type.
            pub fn title(self) -> &'static str {
                match self {
                    $(ProblemType::$variant => $title,)*
                }
            }
        }
    };
}

problem_types! {
    /// A malformed query (400).
    InvalidRequest = "invalid-request", "Invalid request";
    /// A refused ingest batch (400).
    InvalidSignal = "invalid-signal", "Invalid signal";
    /// An ingest body that is not UTF-8 (400).
    InvalidBody = "invalid-body", "Invalid body";
    /// A missing, malformed, unknown, forged, expired or revoked token (401).
    InvalidToken = "invalid-token", "Invalid token";
    /// A request for more than the grant allows (403).
    ExceedsGrant = "exceeds-grant", "Request exceeds the grant";
    /// The person paused all sharing (403).
    Paused = "paused", "Sharing paused";
    /// An aggregate grant's privacy budget cannot pay for a new answer (403).
    BudgetExhausted = "budget-exhausted", "Privacy budget exhausted";
    /// No such endpoint (404).
    NotFound = "not-found", "Not found";
    /// A known endpoint with another method (405).
    MethodNotAllowed = "method-not-allowed", "Method not allowed";
    /// An ingest body over the limit (413).
    TooLarge = "too-large", "Body too large";
    /// An ingest body that does not say it is NDJSON (415).
    UnsupportedMediaType = "unsupported-media-type", "Unsupported media type";
    /// Too many requests of one grant at once (429).
    TooManyRequests = "too-many-requests", "Too many requests";
    /// The grant's rate is used up for now (429); `retry_after` says for how long.
    RateLimited = "rate-limited", "Rate limit reached";
    /// The agent could not answer; the detail is in its log (500).
    Internal = "internal", "Internal error";
    /// The store cannot take a batch now (503).
    Unavailable = "unavailable", "Unavailable";
}

impl ProblemType {
    /// The `type` as sent: `urn:optin:problem:<slug>`.
    pub fn urn(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug())
    }

    /// The type a problem's `type` names, or `None` for one this version does not know.
    pub fn from_urn(type_: &str) -> Option<ProblemType> {
        let slug = type_.strip_prefix(TYPE_PREFIX)?;
        ProblemType::ALL.iter().copied().find(|t| t.slug() == slug)
    }
}

/// A problem, as the agent sends it and a client reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:optin:problem:<slug>`, stable for programs to match on. A string, not a
    /// [`ProblemType`], so that a client reads types added after it was built.
    #[serde(rename = "type")]
    pub type_: String,
    /// A short, fixed summary of the type.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What was wrong with this request.
    pub detail: String,
    /// The request field at fault (query parameter, JSON field), when one is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    /// The 1-based line of an NDJSON body at fault.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    /// For a 429: seconds until the request may succeed, as the `Retry-After` header says
    /// (at least 1; non-zero so that a problem stays small enough to return by value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<std::num::NonZeroU32>,
}

impl Problem {
    /// A problem of type `kind`, with its title. Only a [`ProblemType`] makes one, so the
    /// agent sends no type that SPEC.md does not list.
    pub fn new(status: u16, kind: ProblemType, detail: impl Into<String>) -> Problem {
        Problem { type_: kind.urn(), title: kind.title().into(), status, detail: detail.into(), field: None, line: None, retry_after: None }
    }

    /// The same problem, saying when to retry.
    pub fn with_retry_after(mut self, seconds: u32) -> Problem {
        self.retry_after = std::num::NonZeroU32::new(seconds.max(1));
        self
    }

    /// The same problem, naming the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_has_one_slug_and_reads_back_from_its_urn() {
        let mut slugs = std::collections::BTreeSet::new();
        for &kind in ProblemType::ALL {
            assert!(slugs.insert(kind.slug()), "{kind:?}: its slug is another's too");
            assert_eq!(ProblemType::from_urn(&kind.urn()), Some(kind));
        }
    }

    #[test]
    fn rejects_unknown_types() {
        for urn in ["urn:optin:problem:", "urn:optin:problem:nope", "invalid-token", "urn:other:problem:invalid-token"] {
            assert_eq!(ProblemType::from_urn(urn), None, "{urn}");
        }
    }
}
