//! An in-test OpenSearch cluster: it checks each request against
//! OpenSearch's documented REST API — paths, query parameters, the index
//! creation body, `_bulk` NDJSON lines with external versions, the query
//! DSL, point-in-time and alias actions — and answers with the documented
//! response shapes. (No OpenSearch server can run on the CI machines.)
//! What a request asks of the data is answered by a tantivy index per
//! concrete index, so the contract suite runs through the real client code.
//!
//! API references:
//! - <https://opensearch.org/docs/latest/api-reference/index-apis/create-index/>
//! - <https://opensearch.org/docs/latest/api-reference/document-apis/bulk/>
//! - <https://opensearch.org/docs/latest/api-reference/document-apis/multi-get/>
//! - <https://opensearch.org/docs/latest/api-reference/document-apis/delete-by-query/>
//! - <https://opensearch.org/docs/latest/search-plugins/searching-data/point-in-time-api/>
//! - <https://opensearch.org/docs/latest/api-reference/index-apis/alias/>
//! - <https://opensearch.org/docs/latest/query-dsl/full-text/multi-match/>

#![allow(dead_code)]
// A poisoned lock means an earlier assertion already failed the test.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::http::StatusCode;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

use search::document::{Change, Document, Kind};
use search::index::{Embedded, OpenSearch, OpenSearchSettings, SearchIndex};
use search::query::{Cursor, CursorKey, SearchParams, SearchQuery, SortKey, SuggestQuery};
use test_support::TempDir;

pub const ALIAS: &str = "platform";
const SHARDS: u32 = 3;
const REPLICAS: u32 = 2;

/// One concrete index: its documents (id → version, source) and the
/// engine that answers searches over them.
struct Concrete {
    docs: BTreeMap<String, (u64, Value)>,
    engine: Embedded,
}

struct Pit {
    index: String,
    snapshot: Option<String>,
    depth: usize,
    keep_alive: Duration,
    used: Instant,
}

#[derive(Default)]
pub struct Cluster {
    indices: Mutex<HashMap<String, Concrete>>,
    aliases: Mutex<HashMap<String, String>>,
    pits: Mutex<HashMap<String, Pit>>,
    /// Every request: method, path, query string.
    pub requests: Mutex<Vec<(String, String, String)>>,
    dir: Mutex<Option<TempDir>>,
    pits_made: Mutex<u64>,
}

pub struct FakeOpenSearch {
    pub cluster: Arc<Cluster>,
    pub url: String,
    handle: actix_web::dev::ServerHandle,
}

impl Drop for FakeOpenSearch {
    fn drop(&mut self) {
        drop(self.handle.stop(false));
    }
}

fn error(status: StatusCode, kind: &str, reason: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({
        "error": { "root_cause": [{ "type": kind, "reason": reason.into() }], "type": kind },
        "status": status.as_u16()
    }))
}

fn bad(reason: impl Into<String>) -> HttpResponse {
    error(StatusCode::BAD_REQUEST, "parsing_exception", reason)
}

fn param<'a>(req: &'a HttpRequest, key: &str) -> Option<&'a str> {
    req.query_string().split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then_some(v)
    })
}

fn keep_alive(text: &str) -> Option<Duration> {
    if let Some(m) = text.strip_suffix('m') {
        return m.parse::<u64>().ok().map(|m| Duration::from_secs(m * 60));
    }
    text.strip_suffix('s')?
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// The documented creation body, built here independently of the client.
fn expected_mapping() -> Value {
    json!({
        "settings": { "number_of_shards": SHARDS, "number_of_replicas": REPLICAS },
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

const FIELDS: [&str; 9] = [
    "key",
    "kind",
    "id",
    "title",
    "content",
    "tags",
    "author_id",
    "created_at",
    "deleted",
];

impl Cluster {
    /// Points in time not yet closed.
    pub fn open_pits(&self) -> usize {
        self.pits.lock().unwrap().len()
    }

    /// The index behind `alias`.
    pub fn aliased(&self, alias: &str) -> Option<String> {
        self.aliases.lock().unwrap().get(alias).cloned()
    }

    fn resolve(&self, target: &str) -> Option<String> {
        if let Some(index) = self.aliases.lock().unwrap().get(target) {
            return Some(index.clone());
        }
        self.indices
            .lock()
            .unwrap()
            .contains_key(target)
            .then(|| target.to_owned())
    }

    fn create(&self, name: &str, body: Value) -> HttpResponse {
        let mut body = body;
        let aliases = body.as_object_mut().and_then(|b| b.remove("aliases"));
        if body != expected_mapping() {
            return bad(format!("unexpected index body: {body}"));
        }
        let mut indices = self.indices.lock().unwrap();
        if indices.contains_key(name) {
            return error(
                StatusCode::BAD_REQUEST,
                "resource_already_exists_exception",
                format!("index [{name}] already exists"),
            );
        }
        let dir = self.dir.lock().unwrap();
        let path = dir.as_ref().expect("a directory").join(name);
        let engine = Embedded::open(path, Duration::from_secs(3600)).expect("an engine");
        indices.insert(
            name.to_owned(),
            Concrete {
                docs: BTreeMap::new(),
                engine,
            },
        );
        if let Some(aliases) = aliases.and_then(|a| a.as_object().cloned()) {
            for alias in aliases.keys() {
                self.aliases
                    .lock()
                    .unwrap()
                    .insert(alias.clone(), name.to_owned());
            }
        }
        HttpResponse::Ok().json(json!({
            "acknowledged": true, "shards_acknowledged": true, "index": name
        }))
    }

    fn change_of(source: &Value, version: u64) -> Option<Change> {
        let kind = Kind::parse(source["kind"].as_str()?)?;
        let id = source["id"].as_u64()?;
        if source["deleted"] == true {
            return Some(Change::Delete { kind, id, version });
        }
        Some(Change::Upsert(Document {
            kind,
            id,
            version,
            title: source["title"].as_str()?.to_owned(),
            content: source["content"].as_str()?.to_owned(),
            tags: source["tags"]
                .as_array()?
                .iter()
                .filter_map(|t| t.as_str().map(str::to_owned))
                .collect(),
            author_id: source["author_id"].as_u64()?,
            created_at_ms: Some(source["created_at"].as_i64()?),
        }))
    }

    async fn bulk(&self, target: &str, req: &HttpRequest, body: &[u8]) -> HttpResponse {
        if param(req, "refresh") != Some("wait_for") {
            return bad("a write must be searchable when acknowledged: refresh=wait_for");
        }
        let content_type = req
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with("application/x-ndjson")
            && !content_type.starts_with("application/json")
        {
            return bad(format!("_bulk takes NDJSON, not {content_type}"));
        }
        let Ok(text) = std::str::from_utf8(body) else {
            return bad("not UTF-8");
        };
        if !text.ends_with('\n') {
            return bad("the bulk request must be terminated by a newline");
        }
        let Some(index) = self.resolve(target) else {
            return error(StatusCode::NOT_FOUND, "index_not_found_exception", target);
        };
        let lines: Vec<&str> = text.lines().collect();
        if !lines.len().is_multiple_of(2) {
            return bad("an action line without its source");
        }
        let mut items = Vec::new();
        let mut changes = Vec::new();
        let mut errors = false;
        {
            let mut indices = self.indices.lock().unwrap();
            let concrete = indices.get_mut(&index).expect("resolved");
            for pair in lines.chunks(2) {
                let (Ok(action), Ok(source)) = (
                    serde_json::from_str::<Value>(pair[0]),
                    serde_json::from_str::<Value>(pair[1]),
                ) else {
                    return bad("a line is not JSON");
                };
                let meta = &action["index"];
                let (Some(id), Some(version)) = (meta["_id"].as_str(), meta["version"].as_u64())
                else {
                    return bad(format!(
                        "expected an index action with _id and version: {action}"
                    ));
                };
                if meta["version_type"] != "external"
                    || action.as_object().map(|a| a.len()) != Some(1)
                {
                    return bad(format!("expected version_type external: {action}"));
                }
                let unknown: Vec<&String> = source
                    .as_object()
                    .into_iter()
                    .flat_map(|s| s.keys())
                    .filter(|k| !FIELDS.contains(&k.as_str()))
                    .collect();
                if !unknown.is_empty() {
                    // `dynamic: strict`.
                    items.push(
                        json!({ "index": { "_index": index, "_id": id, "status": 400,
                        "error": { "type": "strict_dynamic_mapping_exception",
                                   "reason": format!("unknown fields {unknown:?}") } } }),
                    );
                    errors = true;
                    continue;
                }
                let current = concrete.docs.get(id).map(|(v, _)| *v);
                if current.is_some_and(|c| c >= version) {
                    items.push(json!({ "index": { "_index": index, "_id": id, "status": 409,
                        "error": { "type": "version_conflict_engine_exception",
                            "reason": format!("[{id}]: version conflict, current version [{}] is higher or equal to the one provided [{version}]", current.unwrap_or(0)) } } }));
                    errors = true;
                    continue;
                }
                let Some(change) = Self::change_of(&source, version) else {
                    return bad(format!("a source this mapping does not take: {source}"));
                };
                changes.push(change);
                concrete.docs.insert(id.to_owned(), (version, source));
                items.push(
                    json!({ "index": { "_index": index, "_id": id, "_version": version,
                    "result": if current.is_some() { "updated" } else { "created" },
                    "status": if current.is_some() { 200 } else { 201 } } }),
                );
            }
        }
        let engine = self.engine(&index);
        engine.apply(&changes).await.expect("the engine writes");
        HttpResponse::Ok().json(json!({ "took": 1, "errors": errors, "items": items }))
    }

    fn engine(&self, index: &str) -> Embedded {
        self.indices.lock().unwrap()[index].engine.clone()
    }

    fn mget(&self, target: &str, req: &HttpRequest, body: &Value) -> HttpResponse {
        if param(req, "_source_includes") != Some("deleted%2Ccreated_at")
            && param(req, "_source_includes") != Some("deleted,created_at")
        {
            return bad(format!(
                "unexpected _source_includes: {}",
                req.query_string()
            ));
        }
        let Some(index) = self.resolve(target) else {
            return error(StatusCode::NOT_FOUND, "index_not_found_exception", target);
        };
        let Some(ids) = body["ids"].as_array() else {
            return bad("_mget takes {\"ids\": [...]}");
        };
        let indices = self.indices.lock().unwrap();
        let docs = &indices[&index].docs;
        let found: Vec<Value> = ids
            .iter()
            .filter_map(Value::as_str)
            .map(|id| match docs.get(id) {
                Some((version, source)) => json!({
                    "_index": index, "_id": id, "_version": version,
                    "_seq_no": 0, "_primary_term": 1, "found": true,
                    "_source": { "deleted": source["deleted"], "created_at": source["created_at"] }
                }),
                None => json!({ "_index": index, "_id": id, "found": false }),
            })
            .collect();
        HttpResponse::Ok().json(json!({ "docs": found }))
    }

    fn delete_by_query(&self, target: &str, req: &HttpRequest, body: &Value) -> HttpResponse {
        if param(req, "refresh") != Some("true") || param(req, "conflicts") != Some("proceed") {
            return bad(format!("unexpected parameters: {}", req.query_string()));
        }
        let filter = &body["query"]["bool"]["filter"];
        let (Some("post"), Some(author)) = (
            filter[0]["term"]["kind"].as_str(),
            filter[1]["term"]["author_id"].as_u64(),
        ) else {
            return bad(format!("unexpected delete query: {body}"));
        };
        let Some(index) = self.resolve(target) else {
            return error(StatusCode::NOT_FOUND, "index_not_found_exception", target);
        };
        let mut indices = self.indices.lock().unwrap();
        let docs = &mut indices.get_mut(&index).expect("resolved").docs;
        let before = docs.len();
        docs.retain(|_, (_, s)| !(s["kind"] == "post" && s["author_id"] == author));
        let deleted = before - docs.len();
        // The engine dropped them when the author's tombstone arrived.
        HttpResponse::Ok().json(json!({
            "took": 1, "timed_out": false, "total": deleted, "deleted": deleted,
            "batches": 1, "version_conflicts": 0, "noops": 0, "failures": []
        }))
    }

    /// The query DSL the client sends, checked and read back into the
    /// search it stands for.
    fn read_query(body: &Value) -> Result<(String, SearchParams<'static>), String> {
        let query = &body["query"]["bool"];
        let fields = json!(["title^2", "content"]);
        let text = query["should"][0]["multi_match"]["query"]
            .as_str()
            .ok_or("no multi_match query")?
            .to_owned();
        let expected_should = json!([
            { "multi_match": { "query": text, "fields": fields, "type": "most_fields", "fuzziness": "AUTO", "max_expansions": 20 } },
            { "multi_match": { "query": text, "fields": fields, "type": "bool_prefix", "fuzziness": "AUTO", "max_expansions": 20 } }
        ]);
        if query["should"] != expected_should || query["minimum_should_match"] != 1 {
            return Err(format!("not the seed's query: {query}"));
        }
        if query["must_not"] != json!([{ "term": { "deleted": true } }]) {
            return Err("tombstones are not excluded".into());
        }
        let mut params = SearchParams::default();
        let mut tag = String::new();
        let mut kind = String::new();
        let (mut from, mut to) = (String::new(), String::new());
        for filter in query["filter"].as_array().ok_or("no filter array")? {
            if let Some(value) = filter["term"]["kind"].as_str() {
                kind = value.to_owned();
            } else if let Some(value) = filter["term"]["tags"].as_str() {
                tag = value.to_owned();
            } else if let Some(value) = filter["term"]["author_id"].as_u64() {
                params.author_id = value;
            } else if let Some(range) = filter["range"]["created_at"].as_object() {
                let rfc = |ms: &Value| {
                    chrono::DateTime::from_timestamp_millis(ms.as_i64().unwrap_or(0))
                        .unwrap_or_default()
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                };
                if let Some(gte) = range.get("gte") {
                    from = rfc(gte);
                }
                if let Some(lte) = range.get("lte") {
                    to = rfc(lte);
                }
            } else {
                return Err(format!("an unknown filter: {filter}"));
            }
        }
        // The engine's parser wants borrowed text for the test's lifetime.
        params.kind = Box::leak(kind.into_boxed_str());
        params.tag = Box::leak(tag.into_boxed_str());
        params.created_from = Box::leak(from.into_boxed_str());
        params.created_to = Box::leak(to.into_boxed_str());
        Ok((text, params))
    }

    async fn search(&self, body: &Value) -> HttpResponse {
        let expected_sort = json!(["_score", { "created_at": "asc" }, { "key": "asc" }]);
        if body["sort"] != expected_sort || body["track_total_hits"] != true {
            return bad(format!("unexpected sort or totals: {body}"));
        }
        let highlight = &body["highlight"];
        if highlight["pre_tags"] != json!(["<mark>"])
            || highlight["post_tags"] != json!(["</mark>"])
            || highlight["encoder"] != "html"
            || highlight["fields"]["title"]["number_of_fragments"] != 0
        {
            return bad(format!("unexpected highlight: {highlight}"));
        }
        if body["aggs"]["kinds"]["terms"]["field"] != "kind"
            || body["aggs"]["tags"]["terms"]["field"] != "tags"
        {
            return bad("unexpected aggregations");
        }
        let (text, mut params) = match Self::read_query(body) {
            Ok(read) => read,
            Err(reason) => return bad(reason),
        };
        let Some(pit_id) = body["pit"]["id"].as_str() else {
            return bad("pages read a point in time");
        };
        let Some(alive) = body["pit"]["keep_alive"].as_str().and_then(keep_alive) else {
            return bad("a point in time needs its keep_alive");
        };
        let size = body["size"].as_u64().unwrap_or(10) as usize;
        let (index, snapshot, depth) = {
            let mut pits = self.pits.lock().unwrap();
            let Some(pit) = pits.get_mut(pit_id) else {
                return error(
                    StatusCode::NOT_FOUND,
                    "search_context_missing_exception",
                    "no such pit",
                );
            };
            if pit.used.elapsed() > pit.keep_alive {
                pits.remove(pit_id);
                return error(
                    StatusCode::NOT_FOUND,
                    "search_context_missing_exception",
                    "pit expired",
                );
            }
            pit.used = Instant::now();
            pit.keep_alive = alive;
            (pit.index.clone(), pit.snapshot.clone(), pit.depth)
        };
        let after = match body.get("search_after") {
            None => None,
            Some(values) => {
                let (Some(score), Some(created), Some(key)) =
                    (values[0].as_f64(), values[1].as_i64(), values[2].as_str())
                else {
                    return bad(format!(
                        "search_after is [score, created_at, key]: {values}"
                    ));
                };
                let Some(snapshot) = snapshot else {
                    // The first page had them all.
                    return HttpResponse::Ok().json(json!({
                        "pit_id": pit_id, "took": 1, "timed_out": false,
                        "hits": { "total": { "value": 0, "relation": "eq" }, "hits": [] },
                        "aggregations": { "kinds": { "buckets": [] }, "tags": { "buckets": [] } }
                    }));
                };
                Some(Cursor {
                    snapshot,
                    depth,
                    last: SortKey {
                        score: score as f32,
                        created_at_ms: created,
                        key: key.to_owned(),
                    },
                })
            }
        };
        params.query = Box::leak(text.into_boxed_str());
        params.size = size as u32;
        let mut query = SearchQuery::parse(&params, &CursorKey::new(b"fake"))
            .expect("a query the client built");
        query.after = after;
        let engine = self.engine(&index);
        let results = match engine.search(&query).await {
            Ok(results) => results,
            Err(e) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "exception",
                    e.to_string(),
                );
            }
        };
        if let Some(pit) = self.pits.lock().unwrap().get_mut(pit_id) {
            pit.depth = depth + results.hits.len();
            if let Some(next) = &results.next {
                pit.snapshot = Some(next.snapshot.clone());
            }
        }
        let hits: Vec<Value> = results
            .hits
            .iter()
            .map(|hit| {
                let key = format!("{}:{}", hit.kind, hit.id);
                let highlight: serde_json::Map<String, Value> = hit
                    .highlights
                    .iter()
                    .map(|(field, text)| (field.clone(), json!([text])))
                    .collect();
                json!({
                    "_index": index, "_id": key, "_score": hit.score,
                    "_source": {
                        "key": key, "kind": hit.kind.as_str(), "id": hit.id, "title": hit.title,
                        "content": hit.content, "tags": hit.tags, "author_id": hit.author_id,
                        "created_at": hit.created_at_ms, "deleted": false
                    },
                    "highlight": highlight,
                    "sort": [hit.score, hit.created_at_ms, key]
                })
            })
            .collect();
        let buckets = |counts: &[(String, u64)]| -> Vec<Value> {
            counts
                .iter()
                .map(|(key, n)| json!({ "key": key, "doc_count": n }))
                .collect()
        };
        HttpResponse::Ok().json(json!({
            "pit_id": pit_id,
            "took": 1,
            "timed_out": false,
            "_shards": { "total": SHARDS, "successful": SHARDS, "skipped": 0, "failed": 0 },
            "hits": {
                "total": { "value": results.total, "relation": "eq" },
                "max_score": results.hits.first().map(|h| h.score),
                "hits": hits
            },
            "aggregations": {
                "kinds": { "doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": buckets(&results.kinds) },
                "tags": { "doc_count_error_upper_bound": 0, "sum_other_doc_count": 0, "buckets": buckets(&results.tags) }
            }
        }))
    }

    async fn suggest(&self, target: &str, body: &Value) -> HttpResponse {
        let must = &body["query"]["bool"]["must"][0]["multi_match"];
        let Some(text) = must["query"].as_str() else {
            return bad("no query");
        };
        if must["fields"] != json!(["title"])
            || must["type"] != "bool_prefix"
            || must["fuzziness"] != "AUTO"
            || must["max_expansions"] != 20
            || body["_source"] != json!(["title"])
            || body["query"]["bool"]["must_not"] != json!([{ "term": { "deleted": true } }])
        {
            return bad(format!("unexpected completion query: {body}"));
        }
        let Some(index) = self.resolve(target) else {
            return error(StatusCode::NOT_FOUND, "index_not_found_exception", target);
        };
        let limit = body["size"].as_u64().unwrap_or(20) as u32;
        let query = SuggestQuery::parse(text, limit.min(20)).expect("a valid query");
        let titles = self
            .engine(&index)
            .suggest(&query)
            .await
            .expect("suggestions");
        let hits: Vec<Value> = titles
            .iter()
            .map(|t| json!({ "_index": index, "_score": 1.0, "_source": { "title": t } }))
            .collect();
        HttpResponse::Ok().json(json!({
            "took": 1, "timed_out": false,
            "hits": { "total": { "value": hits.len(), "relation": "eq" }, "hits": hits }
        }))
    }

    fn update_aliases(&self, body: &Value) -> HttpResponse {
        let Some(actions) = body["actions"].as_array() else {
            return bad("_aliases takes {\"actions\": [...]}");
        };
        let mut aliases = self.aliases.lock().unwrap();
        let mut next = aliases.clone();
        for action in actions {
            if let Some(remove) = action.get("remove") {
                let (Some(index), Some(alias)) =
                    (remove["index"].as_str(), remove["alias"].as_str())
                else {
                    return bad("remove names an index and an alias");
                };
                if next.get(alias).map(String::as_str) != Some(index) {
                    if remove["must_exist"] == true {
                        return error(
                            StatusCode::NOT_FOUND,
                            "aliases_not_found_exception",
                            format!("aliases [{alias}] missing"),
                        );
                    }
                    continue;
                }
                next.remove(alias);
            } else if let Some(add) = action.get("add") {
                let (Some(index), Some(alias)) = (add["index"].as_str(), add["alias"].as_str())
                else {
                    return bad("add names an index and an alias");
                };
                if !self.indices.lock().unwrap().contains_key(index) {
                    return error(StatusCode::NOT_FOUND, "index_not_found_exception", index);
                }
                next.insert(alias.to_owned(), index.to_owned());
            } else {
                return bad(format!("an unknown alias action: {action}"));
            }
        }
        // All the actions or none.
        *aliases = next;
        HttpResponse::Ok().json(json!({ "acknowledged": true }))
    }
}

async fn handle(cluster: web::Data<Cluster>, req: HttpRequest, body: web::Bytes) -> HttpResponse {
    let method = req.method().as_str().to_owned();
    let path = req.path().to_owned();
    cluster.requests.lock().unwrap().push((
        method.clone(),
        path.clone(),
        req.query_string().to_owned(),
    ));
    let json_body = || serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("HEAD", [""]) => HttpResponse::Ok().finish(),
        ("HEAD", ["_alias", alias]) => {
            if cluster.aliases.lock().unwrap().contains_key(*alias) {
                HttpResponse::Ok().finish()
            } else {
                HttpResponse::NotFound().finish()
            }
        }
        ("GET", ["_alias", alias]) => match cluster.aliases.lock().unwrap().get(*alias) {
            Some(index) => HttpResponse::Ok().json(json!({ index: { "aliases": { *alias: {} } } })),
            None => error(StatusCode::NOT_FOUND, "aliases_not_found_exception", *alias),
        },
        ("POST", ["_aliases"]) => cluster.update_aliases(&json_body()),
        ("PUT", [name]) => cluster.create(name, json_body()),
        ("DELETE", [name]) => {
            if cluster.indices.lock().unwrap().remove(*name).is_some() {
                cluster.aliases.lock().unwrap().retain(|_, i| i != name);
                HttpResponse::Ok().json(json!({ "acknowledged": true }))
            } else {
                error(StatusCode::NOT_FOUND, "index_not_found_exception", *name)
            }
        }
        ("POST" | "PUT", [target, "_bulk"]) => cluster.bulk(target, &req, &body).await,
        ("POST" | "GET", [target, "_mget"]) => cluster.mget(target, &req, &json_body()),
        ("POST", [target, "_delete_by_query"]) => {
            cluster.delete_by_query(target, &req, &json_body())
        }
        ("POST", [target, "_search", "point_in_time"]) => {
            let Some(index) = cluster.resolve(target) else {
                return error(StatusCode::NOT_FOUND, "index_not_found_exception", *target);
            };
            let Some(alive) = param(&req, "keep_alive").and_then(keep_alive) else {
                return bad("keep_alive is required");
            };
            let mut made = cluster.pits_made.lock().unwrap();
            *made += 1;
            let id = format!("pit{made}");
            cluster.pits.lock().unwrap().insert(
                id.clone(),
                Pit {
                    index,
                    snapshot: None,
                    depth: 0,
                    keep_alive: alive,
                    used: Instant::now(),
                },
            );
            HttpResponse::Ok().json(json!({
                "pit_id": id,
                "_shards": { "total": SHARDS, "successful": SHARDS, "skipped": 0, "failed": 0 },
                "creation_time": 0
            }))
        }
        ("DELETE", ["_search", "point_in_time"]) => {
            let Some(ids) = json_body()["pit_id"].as_array().cloned() else {
                return bad("DELETE point_in_time takes {\"pit_id\": [...]}");
            };
            let mut pits = cluster.pits.lock().unwrap();
            let freed: Vec<Value> = ids
                .iter()
                .filter_map(Value::as_str)
                .map(|id| json!({ "pit_id": id, "successful": pits.remove(id).is_some() }))
                .collect();
            HttpResponse::Ok().json(json!({ "pits": freed }))
        }
        ("POST" | "GET", ["_search"]) => {
            if param(&req, "allow_partial_search_results") != Some("false") {
                return bad("a page must not miss a shard's hits");
            }
            cluster.search(&json_body()).await
        }
        ("POST" | "GET", [target, "_search"]) => cluster.suggest(target, &json_body()).await,
        _ => error(
            StatusCode::BAD_REQUEST,
            "illegal_argument_exception",
            format!("no handler for {method} {path}"),
        ),
    }
}

/// A cluster on a random port and the client configured for it.
pub async fn start(keep_alive: Duration) -> (OpenSearch, FakeOpenSearch) {
    let cluster = Arc::new(Cluster::default());
    *cluster.dir.lock().unwrap() = Some(TempDir::new("fake-opensearch"));
    let data = web::Data::from(cluster.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(64 * 1024 * 1024))
            .default_service(web::to(handle))
    })
    .workers(1)
    .bind(("127.0.0.1", 0))
    .expect("a port");
    let url = format!("http://{}", server.addrs()[0]);
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    let client = OpenSearch::new(OpenSearchSettings {
        url: url.clone(),
        index: ALIAS.into(),
        shards: SHARDS,
        replicas: REPLICAS,
        timeout: Duration::from_secs(5),
        keep_alive,
    })
    .expect("a client");
    client.ensure_index().await.expect("the index is created");
    (
        client,
        FakeOpenSearch {
            cluster,
            url,
            handle,
        },
    )
}
