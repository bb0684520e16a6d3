//! RFC 9457 problem details: the one error shape of the HTTP API.

use serde::{Deserialize, Serialize};

/// The media type of problems.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// A problem, as the agent sends it and a client reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Problem {
    /// `urn:optin:problem:<slug>`, stable for programs to match on.
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
}

impl Problem {
    /// A problem of type `urn:optin:problem:{slug}`.
    pub fn new(status: u16, slug: &str, title: &str, detail: impl Into<String>) -> Problem {
        Problem { type_: format!("urn:optin:problem:{slug}"), title: title.into(), status, detail: detail.into(), field: None, line: None }
    }

    /// The same problem, naming the field at fault.
    pub fn with_field(mut self, field: impl Into<String>) -> Problem {
        self.field = Some(field.into());
        self
    }
}
