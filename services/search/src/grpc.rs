//! `search.v1.SearchService`: what the gateway calls.
//!
//! A request the service will not run is `INVALID_ARGUMENT` with a
//! `BadRequest` detail naming the field (the gateway turns it into a 400
//! problem); a backend failure is `UNAVAILABLE` with a fixed message, its
//! detail only in the logs, so nothing of tantivy or OpenSearch reaches a
//! client.

use std::sync::Arc;
use std::time::Instant;

use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use platform_proto::search::v1 as pb;
use platform_proto::search::v1::search_service_server::SearchService;

use crate::App;
use crate::index::{Hit, IndexError};
use crate::query::{Invalid, SearchParams, SearchQuery, SuggestQuery};

pub struct SearchApi {
    app: Arc<App>,
}

impl SearchApi {
    pub fn new(app: Arc<App>) -> Self {
        Self { app }
    }
}

fn invalid(error: Invalid) -> Status {
    Status::with_error_details(
        Code::InvalidArgument,
        error.to_string(),
        ErrorDetails::with_bad_request_violation(error.field, error.reason),
    )
}

fn index_status(error: IndexError) -> Status {
    match error {
        IndexError::CursorExpired => invalid(Invalid {
            field: "cursor",
            reason: "has expired; search again from the first page".into(),
        }),
        error => {
            tracing::warn!(%error, "a search failed in the backend");
            Status::unavailable("the search index is unavailable; try again")
        }
    }
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn hit(hit: Hit) -> pb::Hit {
    pb::Hit {
        id: crate::document::key(hit.kind, hit.id),
        kind: hit.kind.as_str().to_owned(),
        aggregate_id: hit.id,
        title: hit.title,
        content: hit.content,
        tags: hit.tags,
        author_id: hit.author_id,
        created_at: rfc3339(hit.created_at_ms),
        score: hit.score,
        highlights: hit.highlights.into_iter().collect(),
    }
}

fn facets(counts: Vec<(String, u64)>) -> Vec<pb::FacetCount> {
    counts
        .into_iter()
        .map(|(value, count)| pb::FacetCount { value, count })
        .collect()
}

#[tonic::async_trait]
impl SearchService for SearchApi {
    async fn search(
        &self,
        request: Request<pb::SearchRequest>,
    ) -> Result<Response<pb::SearchResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let query = SearchQuery::parse(
            &SearchParams {
                query: &req.query,
                kind: &req.kind,
                tag: &req.tag,
                author_id: req.author_id,
                created_from: &req.created_from,
                created_to: &req.created_to,
                cursor: &req.cursor,
                size: req.size,
            },
            &self.app.cursor_key,
        )
        .map_err(invalid)?;
        let results = self.app.index.live().search(&query).await;
        self.app.metrics.record("search", started, results.is_ok());
        let results = results.map_err(index_status)?;
        Ok(Response::new(pb::SearchResponse {
            hits: results.hits.into_iter().map(hit).collect(),
            total: results.total,
            kinds: facets(results.kinds),
            tags: facets(results.tags),
            next_cursor: results
                .next
                .map(|c| c.encode(&self.app.cursor_key))
                .unwrap_or_default(),
            took_ms: u32::try_from(started.elapsed().as_millis()).unwrap_or(u32::MAX),
        }))
    }

    async fn suggest(
        &self,
        request: Request<pb::SuggestRequest>,
    ) -> Result<Response<pb::SuggestResponse>, Status> {
        let started = Instant::now();
        let req = request.into_inner();
        let query = SuggestQuery::parse(&req.query, req.limit).map_err(invalid)?;
        let suggestions = self.app.index.live().suggest(&query).await;
        self.app
            .metrics
            .record("suggest", started, suggestions.is_ok());
        Ok(Response::new(pb::SuggestResponse {
            suggestions: suggestions.map_err(index_status)?,
        }))
    }
}

/// Query latency by operation and outcome, the handles built once, on
/// first use: a handle made before the process's recorder is installed
/// (while the service is being built, in a test) would record nothing.
#[derive(Default)]
pub struct QueryMetrics {
    handles: std::sync::OnceLock<[metrics::Histogram; 4]>,
}

impl QueryMetrics {
    fn record(&self, op: &str, started: Instant, ok: bool) {
        let handles = self.handles.get_or_init(|| {
            let histogram = |op: &'static str, outcome: &'static str| {
                metrics::histogram!("search_query_duration_seconds", "op" => op, "outcome" => outcome)
            };
            [
                histogram("search", "ok"),
                histogram("search", "error"),
                histogram("suggest", "ok"),
                histogram("suggest", "error"),
            ]
        });
        let at = usize::from(op != "search") * 2 + usize::from(!ok);
        handles[at].record(started.elapsed().as_secs_f64());
    }
}
