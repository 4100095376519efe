//! Full-text search, translated to the search service's gRPC API. Public:
//! only what anyone may read is indexed (usernames, never emails; posts).

use actix_web::{HttpResponse, web};
use platform_proto::search::v1 as pb;
use platform_proto::search::v1::search_service_client::SearchServiceClient;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::not_allowed;
use crate::Gateway;
use crate::problem::{ApiError, ProblemBody};
use crate::upstream::{CallContext, RouteClass};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/search", web::get().to(search))
        .route("/search", not_allowed("GET"))
        .route("/search/suggest", web::get().to(suggest))
        .route("/search/suggest", not_allowed("GET"));
}

/// The search's parameters; an unknown one is a 400, not ignored.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SearchParams {
    /// The words to look for (at most 256 bytes and 10 words). Each may be
    /// misspelt (one edit from 3 letters, two from 6) and the last is also
    /// a prefix. Not a query language: punctuation only separates words.
    #[param(min_length = 1, max_length = 256)]
    q: String,
    /// `user` or `post`.
    #[param(pattern = "^(user|post)$")]
    kind: Option<String>,
    /// A post's tag (a `#hashtag` in its title or content; the `#` may be
    /// left out).
    #[param(max_length = 51)]
    tag: Option<String>,
    /// Posts by this user.
    #[param(minimum = 1)]
    author: Option<u64>,
    /// Created at or after: an RFC 3339 time or a `YYYY-MM-DD` date (its
    /// start, UTC).
    #[param(max_length = 64)]
    from: Option<String>,
    /// Created at or before: an RFC 3339 time or a date (its end, UTC).
    #[param(max_length = 64)]
    to: Option<String>,
    /// `next_cursor` of the previous page. It holds the first page's
    /// snapshot for a minute after its last use; pages reach at most 1000
    /// hits deep.
    #[param(max_length = 2048)]
    cursor: Option<String>,
    /// Hits per page, 1 to 100; 10 when absent.
    #[serde(default, deserialize_with = "super::in_range::<_, _, 1, 100>")]
    #[param(minimum = 1, maximum = 100)]
    size: Option<u32>,
}

#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct SuggestParams {
    /// What has been typed so far.
    #[param(min_length = 1, max_length = 256)]
    q: String,
    /// Suggestions, 1 to 20; 5 when absent.
    #[serde(default, deserialize_with = "super::in_range::<_, _, 1, 20>")]
    #[param(minimum = 1, maximum = 20)]
    limit: Option<u32>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SearchHit {
    /// `post:42`, `user:7`.
    id: String,
    /// `user` or `post`.
    kind: String,
    /// The post's or the user's id.
    aggregate_id: u64,
    /// A post's title; a user's username.
    title: String,
    /// A post's content; empty for a user.
    content: String,
    tags: Vec<String>,
    /// A post's author; `null` for a user.
    #[schema(required = true)]
    author_id: Option<u64>,
    created_at: String,
    score: f32,
    /// `title`, `content` → the field's text (or its best passage) with
    /// the matched words in `<mark>…</mark>`, HTML-escaped.
    highlights: BTreeMap<String, String>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct FacetCount {
    value: String,
    count: u64,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Facets {
    /// Matches by kind.
    kind: Vec<FacetCount>,
    /// The 20 most frequent tags among the matches.
    tags: Vec<FacetCount>,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct SearchPage {
    hits: Vec<SearchHit>,
    /// Every match, not only this page's.
    total: u64,
    facets: Facets,
    /// The next page's `cursor`; `null` on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
    took_ms: u32,
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct Suggestions {
    /// Titles and usernames, best first.
    suggestions: Vec<String>,
}

fn facets(counts: Vec<pb::FacetCount>) -> Vec<FacetCount> {
    counts
        .into_iter()
        .map(|c| FacetCount {
            value: c.value,
            count: c.count,
        })
        .collect()
}

#[utoipa::path(get, path = "/api/v1/search", tag = "search", params(SearchParams),
    responses((status = 200, body = SearchPage), (status = 400, body = ProblemBody)))]
pub(crate) async fn search(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    query: web::Query<SearchParams>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let message = pb::SearchRequest {
        query: query.q,
        kind: query.kind.unwrap_or_default(),
        tag: query.tag.unwrap_or_default(),
        author_id: query.author.unwrap_or(0),
        created_from: query.from.unwrap_or_default(),
        created_to: query.to.unwrap_or_default(),
        cursor: query.cursor.unwrap_or_default(),
        size: query.size.unwrap_or(0),
    };
    let found = gw
        .search
        .call(&ctx, RouteClass::Read, message, |ch, req| async move {
            SearchServiceClient::new(ch).search(req).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(SearchPage {
        hits: found
            .hits
            .into_iter()
            .map(|h| SearchHit {
                author_id: (h.kind == "post").then_some(h.author_id),
                id: h.id,
                kind: h.kind,
                aggregate_id: h.aggregate_id,
                title: h.title,
                content: h.content,
                tags: h.tags,
                created_at: h.created_at,
                score: h.score,
                highlights: h.highlights.into_iter().collect(),
            })
            .collect(),
        total: found.total,
        facets: Facets {
            kind: facets(found.kinds),
            tags: facets(found.tags),
        },
        next_cursor: (!found.next_cursor.is_empty()).then_some(found.next_cursor),
        took_ms: found.took_ms,
    }))
}

#[utoipa::path(get, path = "/api/v1/search/suggest", tag = "search", params(SuggestParams),
    responses((status = 200, body = Suggestions), (status = 400, body = ProblemBody)))]
pub(crate) async fn suggest(
    gw: web::Data<Gateway>,
    ctx: CallContext,
    query: web::Query<SuggestParams>,
) -> Result<HttpResponse, ApiError> {
    let query = query.into_inner();
    let message = pb::SuggestRequest {
        query: query.q,
        limit: query.limit.unwrap_or(0),
    };
    let found = gw
        .search
        .call(&ctx, RouteClass::Read, message, |ch, req| async move {
            SearchServiceClient::new(ch).suggest(req).await
        })
        .await?;
    Ok(HttpResponse::Ok().json(Suggestions {
        suggestions: found.suggestions,
    }))
}
