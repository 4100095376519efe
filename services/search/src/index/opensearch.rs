//! The OpenSearch backend (the `opensearch` crate), with the seed's index
//! settings and mapping and its query.
//!
//! Searches and writes go through an alias (`SEARCH_INDEX`, `platform` by
//! default) over one concrete index, `<alias>-<fencing token>`; a rebuild
//! fills a new one and moves the alias in one `_aliases` call whose
//! `remove` names the index it replaces (`must_exist`), so two publishers
//! cannot both win. Versions are OpenSearch's external versions: the
//! cluster itself refuses an older one, whichever replica writes. A delete
//! is indexed as a tombstone (`deleted: true`) rather than deleted, so its
//! version outlives `index.gc_deletes`. Pages read a point in time, so
//! a cursor's pages are ranked as the first one was.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use opensearch::auth::Credentials;
use opensearch::http::StatusCode;
use opensearch::http::request::JsonBody;
use opensearch::http::response::Response;
use opensearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use opensearch::indices::{
    IndicesCreateParts, IndicesDeleteParts, IndicesExistsAliasParts, IndicesGetAliasParts,
};
use opensearch::params::Refresh;
use opensearch::{BulkParts, CreatePitParts, DeleteByQueryParts, MgetParts, SearchParts};
use serde_json::{Value, json};

use super::{Generation, Hit, IndexError, MAX_TAG_FACETS, SearchIndex, SearchResults};
use crate::document::{Change, Kind};
use crate::query::{
    Cursor, MAX_DEPTH, MAX_EXPANSIONS, PASSAGE_CHARS, SearchQuery, SortKey, SuggestQuery,
};

#[derive(Clone, Debug)]
pub struct OpenSearchSettings {
    /// `http(s)://[user:password@]host:port`.
    pub url: String,
    /// The alias searched and written.
    pub index: String,
    pub shards: u32,
    pub replicas: u32,
    /// Each request's deadline.
    pub timeout: Duration,
    /// How long a cursor's point in time lives unused.
    pub keep_alive: Duration,
}

fn backend(error: impl std::fmt::Display) -> IndexError {
    IndexError::Backend(error.to_string())
}

#[derive(Clone)]
pub struct OpenSearch {
    client: opensearch::OpenSearch,
    settings: Arc<OpenSearchSettings>,
    /// This process's writes, one at a time: the users' and the posts'
    /// consumers (and a rebuild) would otherwise check authors against
    /// each other's half-done batches.
    writing: Arc<tokio::sync::Mutex<()>>,
}

/// The body `PUT /<index>` creates an index with: the seed's settings and
/// mapping (title and content `text` with the standard analyzer, tags
/// `keyword`, created_at `date`) and the fields filters and tombstones
/// need. `strict`: a document with an unknown field is refused, not
/// mapped by guess.
pub fn index_body(shards: u32, replicas: u32) -> Value {
    json!({
        "settings": {
            "number_of_shards": shards,
            "number_of_replicas": replicas
        },
        "mappings": {
            "dynamic": "strict",
            "properties": {
                "key": { "type": "keyword" },
                "kind": { "type": "keyword" },
                "id": { "type": "long" },
                "title": { "type": "text", "analyzer": "standard" },
                "content": { "type": "text", "analyzer": "standard" },
                "tags": { "type": "keyword" },
                "author_id": { "type": "long" },
                "created_at": { "type": "date", "format": "epoch_millis" },
                "deleted": { "type": "boolean" }
            }
        }
    })
}

/// The seed's query (`multi_match`, `most_fields`, fuzziness `AUTO`, title
/// boosted twice) or its `bool_prefix` twin (the last word as a prefix), in
/// a bool query with the filters and without tombstones.
pub fn query_body(query: &SearchQuery) -> Value {
    let fields = json!(["title^2", "content"]);
    let mut filter = Vec::new();
    let filters = &query.filters;
    if let Some(kind) = filters.kind {
        filter.push(json!({ "term": { "kind": kind.as_str() } }));
    }
    if let Some(tag) = &filters.tag {
        filter.push(json!({ "term": { "tags": tag } }));
    }
    if let Some(author) = filters.author_id {
        filter.push(json!({ "term": { "author_id": author } }));
    }
    if filters.from_ms.is_some() || filters.to_ms.is_some() {
        let mut range = serde_json::Map::new();
        if let Some(from) = filters.from_ms {
            range.insert("gte".into(), json!(from));
        }
        if let Some(to) = filters.to_ms {
            range.insert("lte".into(), json!(to));
        }
        filter.push(json!({ "range": { "created_at": range } }));
    }
    json!({
        "bool": {
            "should": [
                { "multi_match": {
                    "query": query.text,
                    "fields": fields,
                    "type": "most_fields",
                    "fuzziness": "AUTO",
                    "max_expansions": MAX_EXPANSIONS
                } },
                { "multi_match": {
                    "query": query.text,
                    "fields": fields,
                    "type": "bool_prefix",
                    "fuzziness": "AUTO",
                    "max_expansions": MAX_EXPANSIONS
                } }
            ],
            "minimum_should_match": 1,
            "filter": filter,
            "must_not": [{ "term": { "deleted": true } }]
        }
    })
}

/// The whole `_search` body of one page read from point in time `pit`.
pub fn search_body(query: &SearchQuery, pit: &str, keep_alive: &str) -> Value {
    let mut body = json!({
        "size": query.size,
        "track_total_hits": true,
        "query": query_body(query),
        "sort": ["_score", { "created_at": "asc" }, { "key": "asc" }],
        "pit": { "id": pit, "keep_alive": keep_alive },
        "highlight": {
            "pre_tags": ["<mark>"],
            "post_tags": ["</mark>"],
            "encoder": "html",
            "fields": {
                "title": { "number_of_fragments": 0 },
                "content": { "fragment_size": PASSAGE_CHARS, "number_of_fragments": 1 }
            }
        },
        "aggs": {
            "kinds": { "terms": { "field": "kind", "size": Kind::ALL.len() } },
            "tags": { "terms": { "field": "tags", "size": MAX_TAG_FACETS } }
        }
    });
    if let Some(cursor) = &query.after {
        body["search_after"] = json!([
            cursor.last.score,
            cursor.last.created_at_ms,
            cursor.last.key
        ]);
    }
    body
}

/// The `_source` of a live document.
fn source(doc: &crate::document::Document, created_at_ms: i64) -> Value {
    json!({
        "key": doc.key(),
        "kind": doc.kind.as_str(),
        "id": doc.id,
        "title": doc.title,
        "content": doc.content,
        "tags": doc.tags,
        "author_id": doc.author_id,
        "created_at": created_at_ms,
        "deleted": false
    })
}

fn tombstone(kind: Kind, id: u64) -> Value {
    json!({
        "key": crate::document::key(kind, id),
        "kind": kind.as_str(),
        "id": id,
        "created_at": 0,
        "deleted": true
    })
}

/// What the index has for a document, as `_mget` tells it.
#[derive(Clone, Copy)]
struct Stored {
    version: u64,
    deleted: bool,
    created_at_ms: i64,
}

async fn json_of(response: Response) -> Result<Value, IndexError> {
    let status = response.status_code();
    let body: Value = response.json().await.map_err(backend)?;
    if !status.is_success() {
        return Err(backend(format!("OpenSearch answered {status}: {body}")));
    }
    Ok(body)
}

impl OpenSearch {
    /// A client for `settings.url`; nothing is asked of the cluster yet.
    pub fn new(settings: OpenSearchSettings) -> Result<Self, IndexError> {
        let mut url = url::Url::parse(&settings.url).map_err(backend)?;
        let credentials = (!url.username().is_empty()).then(|| {
            Credentials::Basic(
                url.username().to_owned(),
                url.password().unwrap_or_default().to_owned(),
            )
        });
        // Credentials go in the header, not in every logged URL.
        let _ = url.set_username("");
        let _ = url.set_password(None);
        let mut transport = TransportBuilder::new(SingleNodeConnectionPool::new(url))
            .timeout(settings.timeout)
            .disable_proxy();
        if let Some(credentials) = credentials {
            transport = transport.auth(credentials);
        }
        Ok(Self {
            client: opensearch::OpenSearch::new(transport.build().map_err(backend)?),
            settings: Arc::new(settings),
            writing: Arc::default(),
        })
    }

    /// Creates `<alias>-0` behind the alias unless the alias exists.
    pub async fn ensure_index(&self) -> Result<(), IndexError> {
        let alias = self.settings.index.as_str();
        let exists = self
            .client
            .indices()
            .exists_alias(IndicesExistsAliasParts::Name(&[alias]))
            .send()
            .await
            .map_err(backend)?;
        match exists.status_code() {
            StatusCode::OK => return Ok(()),
            StatusCode::NOT_FOUND => {}
            status => return Err(backend(format!("checking the alias answered {status}"))),
        }
        let mut body = index_body(self.settings.shards, self.settings.replicas);
        body["aliases"] = json!({ alias: {} });
        let name = format!("{alias}-0");
        let created = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&name))
            .body(body)
            .send()
            .await
            .map_err(backend)?;
        let status = created.status_code();
        let answer: Value = created.json().await.map_err(backend)?;
        // Another replica created it first: as good.
        if status.is_success() || answer["error"]["type"] == "resource_already_exists_exception" {
            return Ok(());
        }
        Err(backend(format!(
            "creating {name} answered {status}: {answer}"
        )))
    }

    /// The concrete index behind the alias and its fencing token.
    async fn aliased(&self) -> Result<(String, u64), IndexError> {
        let alias = self.settings.index.as_str();
        let response = self
            .client
            .indices()
            .get_alias(IndicesGetAliasParts::Name(&[alias]))
            .send()
            .await
            .map_err(backend)?;
        let body = json_of(response).await?;
        let prefix = format!("{alias}-");
        body.as_object()
            .into_iter()
            .flat_map(|indices| indices.keys())
            .find_map(|name| {
                let token = name.strip_prefix(&prefix)?.parse::<u64>().ok()?;
                Some((name.clone(), token))
            })
            .ok_or_else(|| backend(format!("the alias {alias} is on no index of this service")))
    }

    async fn stored(
        &self,
        target: &str,
        keys: Vec<String>,
    ) -> Result<HashMap<String, Stored>, IndexError> {
        if keys.is_empty() {
            return Ok(HashMap::new());
        }
        let response = self
            .client
            .mget(MgetParts::Index(target))
            ._source_includes(&["deleted", "created_at"])
            .body(json!({ "ids": keys }))
            .send()
            .await
            .map_err(backend)?;
        let body = json_of(response).await?;
        let mut stored = HashMap::new();
        for doc in body["docs"].as_array().into_iter().flatten() {
            if doc["found"] != true {
                continue;
            }
            let (Some(id), Some(version)) = (doc["_id"].as_str(), doc["_version"].as_u64()) else {
                continue;
            };
            stored.insert(
                id.to_owned(),
                Stored {
                    version,
                    deleted: doc["_source"]["deleted"] == true,
                    created_at_ms: doc["_source"]["created_at"].as_i64().unwrap_or(0),
                },
            );
        }
        Ok(stored)
    }

    /// The versioned write into `target` (the alias, or a generation).
    async fn write(&self, target: &str, changes: &[Change]) -> Result<(), IndexError> {
        let _one_at_a_time = self.writing.lock().await;
        let mut keys: Vec<String> = Vec::new();
        let mut wanted = HashSet::new();
        for change in changes {
            let mut want = |key: String| {
                if wanted.insert(key.clone()) {
                    keys.push(key);
                }
            };
            want(change.key());
            if let Change::Upsert(doc) = change
                && doc.kind == Kind::Post
            {
                want(crate::document::key(Kind::User, doc.author_id));
            }
        }
        let mut state = self.stored(target, keys).await?;
        let mut lines: Vec<JsonBody<Value>> = Vec::new();
        let mut gone_authors = Vec::new();
        let mut post_authors: Vec<String> = Vec::new();
        for change in changes {
            let key = change.key();
            let current = state.get(&key).copied();
            if current.is_some_and(|c| c.version >= change.version()) {
                continue;
            }
            let (body, stored) = match change {
                Change::Upsert(doc) => {
                    let author = crate::document::key(Kind::User, doc.author_id);
                    if doc.kind == Kind::Post && state.get(&author).is_some_and(|a| a.deleted) {
                        continue;
                    }
                    let created_at_ms = doc
                        .created_at_ms
                        .or(current.filter(|c| !c.deleted).map(|c| c.created_at_ms))
                        .unwrap_or_else(common::jobs::now_ms);
                    if doc.kind == Kind::Post && !post_authors.contains(&author) {
                        post_authors.push(author);
                    }
                    (
                        source(doc, created_at_ms),
                        Stored {
                            version: doc.version,
                            deleted: false,
                            created_at_ms,
                        },
                    )
                }
                Change::Delete { kind, id, version } => {
                    if *kind == Kind::User {
                        gone_authors.push(*id);
                    }
                    (
                        tombstone(*kind, *id),
                        Stored {
                            version: *version,
                            deleted: true,
                            created_at_ms: 0,
                        },
                    )
                }
            };
            lines.push(JsonBody::new(json!({ "index": {
                "_id": key,
                "version": change.version(),
                "version_type": "external"
            } })));
            lines.push(JsonBody::new(body));
            state.insert(key, stored);
        }
        if !lines.is_empty() {
            let response = self
                .client
                .bulk(BulkParts::Index(target))
                .refresh(Refresh::WaitFor)
                .body(lines)
                .send()
                .await
                .map_err(backend)?;
            let body = json_of(response).await?;
            if body["errors"] == true {
                for item in body["items"].as_array().into_iter().flatten() {
                    let status = item["index"]["status"].as_u64().unwrap_or(0);
                    // 409: the cluster has this version or a newer one
                    // (another replica, or a redelivery): already applied.
                    if !(200..300).contains(&status) && status != 409 {
                        return Err(backend(format!(
                            "a bulk write failed: {}",
                            item["index"]["error"]
                        )));
                    }
                }
            }
        }
        // An author deleted (by another replica) between the read above and
        // the write: their posts go now. A deletion after this read runs
        // its own delete, which sees these posts (the bulk waited for a
        // refresh).
        if !post_authors.is_empty() {
            let authors = self.stored(target, post_authors).await?;
            for (key, author) in authors {
                if author.deleted
                    && let Some(id) = key.strip_prefix("user:").and_then(|n| n.parse().ok())
                    && !gone_authors.contains(&id)
                {
                    gone_authors.push(id);
                }
            }
        }
        for author in gone_authors {
            let response = self
                .client
                .delete_by_query(DeleteByQueryParts::Index(&[target]))
                .refresh(true)
                .conflicts(opensearch::params::Conflicts::Proceed)
                .body(json!({ "query": { "bool": { "filter": [
                    { "term": { "kind": "post" } },
                    { "term": { "author_id": author } }
                ] } } }))
                .send()
                .await
                .map_err(backend)?;
            json_of(response).await?;
        }
        Ok(())
    }

    fn keep_alive(&self) -> String {
        format!("{}s", self.settings.keep_alive.as_secs().max(1))
    }

    /// Frees a point in time no cursor names (a cluster holds a bounded
    /// number); a failure only leaves it to its keep-alive.
    async fn close_pit(&self, pit: &str) {
        let closed = self
            .client
            .delete_pit()
            .body(json!({ "pit_id": [pit] }))
            .send()
            .await;
        if let Err(error) = closed.map_err(backend).and_then(|r| {
            r.status_code()
                .is_success()
                .then_some(())
                .ok_or_else(|| backend(r.status_code()))
        }) {
            tracing::debug!(%error, "cannot close a point in time");
        }
    }

    async fn open_pit(&self) -> Result<String, IndexError> {
        let keep_alive = self.keep_alive();
        let response = self
            .client
            .create_pit(CreatePitParts::Index(&[self.settings.index.as_str()]))
            .keep_alive(&keep_alive)
            .send()
            .await
            .map_err(backend)?;
        let body = json_of(response).await?;
        body["pit_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| backend("a point in time without an id"))
    }
}

fn hit(raw: &Value) -> Option<(Hit, SortKey)> {
    let source = &raw["_source"];
    let kind = Kind::parse(source["kind"].as_str()?)?;
    let score = raw["_score"].as_f64().unwrap_or(0.0) as f32;
    let created_at_ms = source["created_at"].as_i64().unwrap_or(0);
    let mut highlights = BTreeMap::new();
    if let Some(fields) = raw["highlight"].as_object() {
        for (field, fragments) in fields {
            if let Some(first) = fragments.get(0).and_then(Value::as_str) {
                highlights.insert(field.clone(), first.to_owned());
            }
        }
    }
    let key = raw["_id"].as_str()?.to_owned();
    Some((
        Hit {
            kind,
            id: source["id"].as_u64()?,
            title: source["title"].as_str().unwrap_or_default().to_owned(),
            content: source["content"].as_str().unwrap_or_default().to_owned(),
            tags: source["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            author_id: source["author_id"].as_u64().unwrap_or(0),
            created_at_ms,
            score,
            highlights,
        },
        SortKey {
            score,
            created_at_ms,
            key,
        },
    ))
}

fn buckets(aggregation: &Value) -> Vec<(String, u64)> {
    aggregation["buckets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|b| Some((b["key"].as_str()?.to_owned(), b["doc_count"].as_u64()?)))
        .collect()
}

#[async_trait]
impl SearchIndex for OpenSearch {
    fn backend(&self) -> &'static str {
        "opensearch"
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        self.write(&self.settings.index, changes).await
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchResults, IndexError> {
        let pit = match &query.after {
            Some(cursor) => cursor.snapshot.clone(),
            None => self.open_pit().await?,
        };
        let keep_alive = self.keep_alive();
        let response = self
            .client
            .search(SearchParts::None)
            // A page missing a shard's hits would be a page with holes.
            .allow_partial_search_results(false)
            .body(search_body(query, &pit, &keep_alive))
            .send()
            .await
            .map_err(backend)?;
        // The point in time is gone (expired, or its node restarted).
        if query.after.is_some()
            && matches!(
                response.status_code(),
                StatusCode::NOT_FOUND | StatusCode::BAD_REQUEST
            )
        {
            return Err(IndexError::CursorExpired);
        }
        let body = json_of(response).await?;
        let mut hits = Vec::new();
        let mut last = None;
        for raw in body["hits"]["hits"].as_array().into_iter().flatten() {
            if let Some((hit, key)) = hit(raw) {
                hits.push(hit);
                last = Some(key);
            }
        }
        let total = body["hits"]["total"]["value"].as_u64().unwrap_or(0);
        let depth = query.after.as_ref().map_or(0, |c| c.depth) + hits.len();
        let next = match last {
            Some(last)
                if hits.len() == query.size && (depth as u64) < total && depth < MAX_DEPTH =>
            {
                Some(Cursor {
                    // The cluster may hand back a new id for the same point.
                    snapshot: body["pit_id"]
                        .as_str()
                        .map_or_else(|| pit.clone(), str::to_owned),
                    depth,
                    last,
                })
            }
            _ => None,
        };
        if next.is_none() {
            self.close_pit(&pit).await;
        }
        Ok(SearchResults {
            hits,
            total,
            kinds: super::rank_facets(buckets(&body["aggregations"]["kinds"]), Kind::ALL.len()),
            tags: super::rank_facets(buckets(&body["aggregations"]["tags"]), MAX_TAG_FACETS),
            next,
        })
    }

    async fn suggest(&self, query: &SuggestQuery) -> Result<Vec<String>, IndexError> {
        let response = self
            .client
            .search(SearchParts::Index(&[self.settings.index.as_str()]))
            .body(json!({
                "size": query.limit * 4,
                "_source": ["title"],
                "query": { "bool": {
                    "must": [{ "multi_match": {
                        "query": query.text,
                        "fields": ["title"],
                        "type": "bool_prefix",
                        "fuzziness": "AUTO",
                        "max_expansions": MAX_EXPANSIONS
                    } }],
                    "must_not": [{ "term": { "deleted": true } }]
                } }
            }))
            .send()
            .await
            .map_err(backend)?;
        let body = json_of(response).await?;
        let mut seen = HashSet::new();
        Ok(body["hits"]["hits"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|h| h["_source"]["title"].as_str())
            .filter(|title| seen.insert(title.to_lowercase()))
            .take(query.limit)
            .map(str::to_owned)
            .collect())
    }

    async fn begin_rebuild(&self, fencing: u64) -> Result<Arc<dyn Generation>, IndexError> {
        let (_, current) = self.aliased().await?;
        if fencing <= current {
            return Err(IndexError::Fenced {
                ours: fencing,
                newer: current,
            });
        }
        let name = format!("{}-{fencing}", self.settings.index);
        // A rebuild under this token that died before publishing.
        let removed = self
            .client
            .indices()
            .delete(IndicesDeleteParts::Index(&[name.as_str()]))
            .send()
            .await
            .map_err(backend)?;
        if !matches!(
            removed.status_code(),
            StatusCode::OK | StatusCode::NOT_FOUND
        ) {
            return Err(backend(format!(
                "removing a stale {name} answered {}",
                removed.status_code()
            )));
        }
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(&name))
            .body(index_body(self.settings.shards, self.settings.replicas))
            .send()
            .await
            .map_err(backend)?;
        json_of(response).await?;
        Ok(Arc::new(OpenSearchGeneration {
            index: self.clone(),
            name,
            fencing,
        }))
    }

    async fn ping(&self) -> Result<(), IndexError> {
        let response = self.client.ping().send().await.map_err(backend)?;
        if response.status_code().is_success() {
            Ok(())
        } else {
            Err(backend(format!("ping answered {}", response.status_code())))
        }
    }
}

struct OpenSearchGeneration {
    index: OpenSearch,
    name: String,
    fencing: u64,
}

#[async_trait]
impl Generation for OpenSearchGeneration {
    fn fencing(&self) -> u64 {
        self.fencing
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        self.index.write(&self.name, changes).await
    }

    async fn publish(&self) -> Result<(), IndexError> {
        let (old, current) = self.index.aliased().await?;
        if current >= self.fencing {
            return Err(IndexError::Fenced {
                ours: self.fencing,
                newer: current,
            });
        }
        let alias = &self.index.settings.index;
        let response = self
            .index
            .client
            .indices()
            .update_aliases()
            .body(json!({ "actions": [
                { "remove": { "index": old, "alias": alias, "must_exist": true } },
                { "add": { "index": self.name, "alias": alias } }
            ] }))
            .send()
            .await
            .map_err(backend)?;
        if response.status_code() == StatusCode::NOT_FOUND {
            // Moved since it was read: by a newer holder, or a backend fault.
            let (_, newer) = self.index.aliased().await?;
            return Err(IndexError::Fenced {
                ours: self.fencing,
                newer,
            });
        }
        json_of(response).await?;
        let removed = self
            .index
            .client
            .indices()
            .delete(IndicesDeleteParts::Index(&[old.as_str()]))
            .send()
            .await
            .map_err(backend)?;
        if !removed.status_code().is_success() {
            tracing::warn!(index = old, status = %removed.status_code(), "cannot remove the replaced index");
        }
        Ok(())
    }

    async fn abandon(&self) -> Result<(), IndexError> {
        // A publish that failed on its way back may have moved the alias:
        // the index it names is never removed.
        if self.index.aliased().await?.0 == self.name {
            return Ok(());
        }
        let response = self
            .index
            .client
            .indices()
            .delete(IndicesDeleteParts::Index(&[self.name.as_str()]))
            .send()
            .await
            .map_err(backend)?;
        json_of(response).await.map(|_| ())
    }
}
