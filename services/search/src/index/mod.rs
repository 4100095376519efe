//! The seed's SearchService as a trait with two backends that keep the
//! same promises (one contract suite runs against both):
//!
//! - [`Embedded`]: tantivy, an index on local disk; the default.
//! - [`OpenSearch`]: an OpenSearch cluster, through an alias.
//!
//! Writes are versioned: a change is kept only if its version is newer
//! than the document's, and a delete leaves a tombstone, so events that
//! arrive twice or out of order (a reindex racing the live feed) end in the
//! same index. A rebuild writes a new generation no search sees until it
//! is published, atomically and only by the newest lock holder.

pub mod embedded;
mod opensearch;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;

pub use embedded::Embedded;
pub use opensearch::{OpenSearch, OpenSearchSettings};

use crate::document::{Change, Kind};
use crate::query::{Cursor, SearchQuery, SuggestQuery};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The cursor's snapshot is gone (older than its keep-alive, or from a
    /// generation that has since been replaced).
    #[error("the cursor has expired; search again from the first page")]
    CursorExpired,
    /// A rebuild under a newer fencing token has published since this one
    /// began: this one's lock was lost.
    #[error("a rebuild with fencing token {newer} has published; {ours} is stale")]
    Fenced { ours: u64, newer: u64 },
    /// The backend cannot be reached or failed; the detail is for logs.
    #[error("the search backend failed: {0}")]
    Backend(String),
}

/// One hit: the document as stored, with highlights.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub kind: Kind,
    pub id: u64,
    pub title: String,
    pub content: String,
    pub tags: Vec<String>,
    pub author_id: u64,
    pub created_at_ms: i64,
    pub score: f32,
    /// `title`, `content` → the marked-up text, for fields that matched.
    pub highlights: BTreeMap<String, String>,
}

/// One page of results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchResults {
    pub hits: Vec<Hit>,
    pub total: u64,
    /// Over every match: value and count, most frequent first, then by
    /// value.
    pub kinds: Vec<(String, u64)>,
    pub tags: Vec<(String, u64)>,
    /// Set when more hits follow (and the depth limit allows them).
    pub next: Option<Cursor>,
}

/// Most tag values a facet lists.
pub const MAX_TAG_FACETS: usize = 20;

/// Sorts facet counts the way both backends report them and keeps `limit`.
pub(crate) fn rank_facets(
    counts: impl IntoIterator<Item = (String, u64)>,
    limit: usize,
) -> Vec<(String, u64)> {
    let mut counts: Vec<(String, u64)> = counts.into_iter().filter(|(_, n)| *n > 0).collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    counts.truncate(limit);
    counts
}

#[async_trait]
pub trait SearchIndex: Send + Sync + 'static {
    fn backend(&self) -> &'static str;

    /// Applies `changes` in order, each only if newer than what the index
    /// has; searchable once this returns.
    async fn apply(&self, changes: &[Change]) -> Result<(), IndexError>;

    async fn search(&self, query: &SearchQuery) -> Result<SearchResults, IndexError>;

    /// Distinct titles (and usernames) matching what has been typed, best
    /// first.
    async fn suggest(&self, query: &SuggestQuery) -> Result<Vec<String>, IndexError>;

    /// A new, empty generation written under `fencing`.
    async fn begin_rebuild(&self, fencing: u64) -> Result<Arc<dyn Generation>, IndexError>;

    /// Whether the backend answers (readiness).
    async fn ping(&self) -> Result<(), IndexError>;
}

/// An index being rebuilt beside the one searched.
#[async_trait]
pub trait Generation: Send + Sync + 'static {
    fn fencing(&self) -> u64;

    /// As [`SearchIndex::apply`], into this generation only.
    async fn apply(&self, changes: &[Change]) -> Result<(), IndexError>;

    /// Makes this generation the one searched and written, in one step,
    /// unless a newer fencing token published first
    /// ([`IndexError::Fenced`]); the replaced one is removed.
    async fn publish(&self) -> Result<(), IndexError>;

    /// Removes this generation unpublished.
    async fn abandon(&self) -> Result<(), IndexError>;
}

/// The index the service uses: the backend, and while a rebuild runs here
/// its generation too, so that what this replica consumes meanwhile is in
/// both.
pub struct Index {
    live: Arc<dyn SearchIndex>,
    building: RwLock<Option<Arc<dyn Generation>>>,
}

impl Index {
    pub fn new(live: Arc<dyn SearchIndex>) -> Self {
        Self {
            live,
            building: RwLock::new(None),
        }
    }

    pub fn live(&self) -> &Arc<dyn SearchIndex> {
        &self.live
    }

    pub(crate) fn set_building(&self, generation: Option<Arc<dyn Generation>>) {
        *self.building.write().unwrap_or_else(|p| p.into_inner()) = generation;
    }

    fn building(&self) -> Option<Arc<dyn Generation>> {
        self.building
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Applies `changes` to the live index and to a generation being built.
    pub async fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        self.live.apply(changes).await?;
        if let Some(generation) = self.building() {
            // Versioned, so the rebuild's own replay of the same events
            // changes nothing; a failure here fails the batch, which is
            // then retried for both.
            generation.apply(changes).await?;
        }
        Ok(())
    }
}
