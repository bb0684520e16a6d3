//! The person's never-share list: which shipped sensitive topics stay withheld, and
//! category paths of their own. Owner commands change it; every scope a slice, push,
//! preview or count is cut to applies it ([`Core::applied`](super::Core)), so a change
//! holds from the next cut on, for every grant, whatever its terms.
//!
//! Signals are also marked at ingest with the topics they match ([`mark`]), so the mark
//! stays with a signal even if a later list stops matching it.

use optin_protocol::sensitive::{Entry, NeverShare, Table};
use optin_protocol::signal::Signal;
use serde::{Deserialize, Serialize};

use super::command::Response;
use super::{Core, CoreError};
use crate::store::StoreError;

/// The list as the person reads it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NeverShareView {
    /// Every shipped topic, in the list's order, and whether it is withheld.
    pub topics: Vec<TopicView>,
    /// The person's own category paths.
    pub categories: Vec<String>,
}

/// One shipped topic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicView {
    /// Its id, as `optin include` and `exclude` take it.
    pub id: String,
    /// What it covers.
    pub label: String,
    /// Whether no grant may share what matches it (on by default).
    pub withheld: bool,
}

/// Marks each signal with the shipped topics it matches, before it is stored.
pub fn mark(signals: &mut [Signal]) {
    let table = Table::shipped();
    for signal in signals {
        signal.sensitive = table.signal_topics(signal);
    }
}

fn view(list: &NeverShare) -> NeverShareView {
    let topics = Table::shipped().topics().iter().map(|t| TopicView { id: t.id.clone(), label: t.label.clone(), withheld: list.topic_on(&t.id) }).collect();
    NeverShareView { topics, categories: list.categories.iter().cloned().collect() }
}

fn entry(text: &str) -> Result<Entry, CoreError> {
    Entry::parse(text, Table::shipped()).map_err(|e| CoreError::Invalid(e.to_string()))
}

impl Core {
    /// The never-share list every scope applies now.
    pub(super) fn never_share(&self) -> Result<NeverShare, StoreError> {
        self.store.never_share()
    }

    /// `optin exclude`: withholds a shipped topic again, or adds a category path of the
    /// person's own. Durable on return.
    pub(super) fn exclude(&self, text: &str) -> Result<Response, CoreError> {
        let entry = entry(text)?;
        let (before, after) = self.store.update_never_share(|list| match &entry {
            Entry::Topic(id) => {
                list.included.remove(id);
            }
            Entry::Category(path) => {
                list.categories.insert(path.clone());
            }
        })?;
        Ok(Response::NeverShare { list: Box::new(view(&after)), changed: before != after })
    }

    /// `optin include`: lets a shipped topic be shared again, or removes a path of the
    /// person's own. A path that is not on their list is refused and changes nothing.
    /// Durable on return.
    pub(super) fn include(&self, text: &str) -> Result<Response, CoreError> {
        let entry = entry(text)?;
        if let Entry::Category(path) = &entry {
            let list = self.store.never_share()?;
            if !list.categories.contains(path) {
                let topic = Table::shipped().topics().iter().find(|t| t.categories.iter().any(|c| c == path));
                return Err(CoreError::Invalid(match topic {
                    Some(t) => format!("`{path}` is part of the topic `{}`: `optin include {}` shares that topic", t.id, t.id),
                    None => format!("`{path}` is not one of your own categories (`optin exclusions` lists them)"),
                }));
            }
        }
        let (before, after) = self.store.update_never_share(|list| match &entry {
            Entry::Topic(id) => {
                list.included.insert(id.clone());
            }
            Entry::Category(path) => {
                list.categories.remove(path);
            }
        })?;
        Ok(Response::NeverShare { list: Box::new(view(&after)), changed: before != after })
    }

    /// `optin exclusions`: the list as it stands.
    pub(super) fn exclusions(&self) -> Result<Response, CoreError> {
        Ok(Response::NeverShare { list: Box::new(view(&self.store.never_share()?)), changed: false })
    }
}
