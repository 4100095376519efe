//! One suite, every backend of `SearchIndex`: tantivy for real, and the
//! OpenSearch client against an in-test cluster that checks its requests
//! (tests/support/fake_opensearch.rs).

mod support;

use std::sync::Arc;
use std::time::Duration;

use search::document::{Change, Document, Kind};
use search::index::{Embedded, IndexError, SearchIndex, SearchResults};
use search::query::{CursorKey, SearchParams, SearchQuery, SuggestQuery};
use test_support::TempDir;

/// A backend under test and what keeps it alive.
struct Backend {
    index: Arc<dyn SearchIndex>,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn backends(keep_alive: Duration) -> Vec<(&'static str, Backend)> {
    let dir = TempDir::new("search-contract");
    let embedded = Embedded::open(dir.path().join("index"), keep_alive).expect("tantivy opens");
    let (opensearch, cluster) = support::fake_opensearch::start(keep_alive).await;
    vec![
        (
            "tantivy",
            Backend {
                index: Arc::new(embedded),
                _keep: Box::new(dir),
            },
        ),
        (
            "opensearch",
            Backend {
                index: Arc::new(opensearch),
                _keep: Box::new(cluster),
            },
        ),
    ]
}

fn post(id: u64, version: u64, title: &str, content: &str, author: u64, at: i64) -> Change {
    Change::Upsert(Document {
        kind: Kind::Post,
        id,
        version,
        title: title.into(),
        content: content.into(),
        tags: search::document::hashtags(&[title, content]),
        author_id: author,
        created_at_ms: Some(at),
    })
}

fn user(id: u64, version: u64, name: &str) -> Change {
    Change::Upsert(Document {
        kind: Kind::User,
        id,
        version,
        title: name.into(),
        content: String::new(),
        tags: Vec::new(),
        author_id: 0,
        created_at_ms: Some(1_000),
    })
}

fn key() -> CursorKey {
    CursorKey::new(b"contract")
}

fn query(text: &str) -> SearchQuery {
    params(SearchParams {
        query: text,
        ..SearchParams::default()
    })
}

fn params(params: SearchParams<'_>) -> SearchQuery {
    SearchQuery::parse(&params, &key()).expect("a valid query")
}

async fn search(index: &Arc<dyn SearchIndex>, query: &SearchQuery) -> SearchResults {
    index.search(query).await.expect("the search runs")
}

fn keys(results: &SearchResults) -> Vec<String> {
    results
        .hits
        .iter()
        .map(|h| format!("{}:{}", h.kind, h.id))
        .collect()
}

#[tokio::test]
async fn a_misspelt_word_finds_the_right_one_and_the_last_word_is_a_prefix() {
    for (name, backend) in backends(Duration::from_secs(60)).await {
        let index = &backend.index;
        index
            .apply(&[
                post(1, 1, "Full-text search engines", "Inverted indexes", 7, 10),
                post(2, 1, "Cooking pasta", "Boil water, add salt", 7, 20),
            ])
            .await
            .unwrap();
        assert_eq!(
            keys(&search(index, &query("serch")).await),
            ["post:1"],
            "{name}"
        );
        assert_eq!(
            keys(&search(index, &query("pasat")).await),
            ["post:2"],
            "{name}"
        );
        // As typed so far: the last word is a prefix, earlier ones are not.
        assert_eq!(
            keys(&search(index, &query("full-text eng")).await),
            ["post:1"],
            "{name}"
        );
        assert_eq!(
            keys(&search(index, &query("coo")).await),
            ["post:2"],
            "{name}"
        );
        assert!(
            search(index, &query("zebra")).await.hits.is_empty(),
            "{name}"
        );

        let found = search(index, &query("serch")).await;
        assert_eq!(
            found.hits[0].highlights.get("title").map(String::as_str),
            Some("Full-text <mark>search</mark> engines"),
            "{name}"
        );
        assert!(!found.hits[0].highlights.contains_key("content"), "{name}");
        let suggestions = index
            .suggest(&SuggestQuery::parse("cook", 5).unwrap())
            .await
            .unwrap();
        assert_eq!(suggestions, ["Cooking pasta"], "{name}");
    }
}

#[tokio::test]
async fn a_title_hit_outranks_a_content_hit() {
    for (name, backend) in backends(Duration::from_secs(60)).await {
        let index = &backend.index;
        index
            .apply(&[
                post(1, 1, "Notes", "A long text that mentions tokio once", 7, 10),
                post(2, 1, "Tokio", "A long text about something else", 7, 20),
            ])
            .await
            .unwrap();
        let results = search(index, &query("tokio")).await;
        assert_eq!(keys(&results), ["post:2", "post:1"], "{name}");
        assert!(results.hits[0].score > results.hits[1].score, "{name}");
        assert_eq!(results.total, 2, "{name}");
    }
}

#[tokio::test]
async fn pages_stay_as_the_first_one_ranked_them_while_writes_go_on() {
    for (name, backend) in backends(Duration::from_secs(60)).await {
        let index = &backend.index;
        let first: Vec<Change> = (1..=23)
            .map(|i| post(i, 1, &format!("rust note {i}"), "text", 7, i as i64))
            .collect();
        index.apply(&first).await.unwrap();
        let mut seen = Vec::new();
        let mut cursor = String::new();
        let mut writes = 100;
        loop {
            let page = search(
                index,
                &params(SearchParams {
                    query: "rust",
                    cursor: &cursor,
                    size: 5,
                    ..SearchParams::default()
                }),
            )
            .await;
            assert_eq!(page.total, 23, "{name}: the total is the snapshot's");
            seen.extend(keys(&page));
            // Between pages: new matches, an update, a delete.
            writes += 1;
            index
                .apply(&[
                    post(writes, 1, "rust rust rust", "rust", 7, 0),
                    post(1, 1 + writes, "rust renamed", "text", 7, 1),
                    Change::Delete {
                        kind: Kind::Post,
                        id: 23,
                        version: 2,
                    },
                ])
                .await
                .unwrap();
            match page.next {
                Some(next) => cursor = next.encode(&key()),
                None => break,
            }
        }
        let mut sorted = seen.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 23, "{name}: each once: {seen:?}");
        assert!(seen.iter().all(|k| {
            k.strip_prefix("post:")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| n <= 23)
        }));
        // A fresh search sees the writes.
        let fresh = search(index, &query("rust")).await;
        assert_eq!(fresh.total, 22 + (writes - 100), "{name}");
    }
}

#[tokio::test]
async fn deletes_disappear_and_stay_gone_and_a_deleted_users_posts_go_with_them() {
    for (name, backend) in backends(Duration::from_secs(60)).await {
        let index = &backend.index;
        index
            .apply(&[
                user(7, 1, "grace"),
                post(1, 1, "grace writes", "kept", 7, 10),
                post(2, 1, "another by grace", "kept", 7, 20),
                post(3, 1, "grace mentioned", "by someone else", 8, 30),
            ])
            .await
            .unwrap();
        assert_eq!(search(index, &query("grace")).await.total, 4, "{name}");
        index
            .apply(&[Change::Delete {
                kind: Kind::Post,
                id: 3,
                version: 2,
            }])
            .await
            .unwrap();
        // A late update of the deleted post does not bring it back.
        index
            .apply(&[post(3, 1, "grace mentioned", "late", 8, 30)])
            .await
            .unwrap();
        let found = keys(&search(index, &query("grace")).await);
        assert_eq!(found.len(), 3, "{name}: {found:?}");
        assert!(!found.contains(&"post:3".to_owned()), "{name}");

        index
            .apply(&[Change::Delete {
                kind: Kind::User,
                id: 7,
                version: 2,
            }])
            .await
            .unwrap();
        assert!(
            search(index, &query("grace")).await.hits.is_empty(),
            "{name}"
        );
        // A post of theirs that arrives after they left is not indexed.
        index
            .apply(&[post(4, 1, "grace again", "late", 7, 40)])
            .await
            .unwrap();
        assert!(
            search(index, &query("grace")).await.hits.is_empty(),
            "{name}"
        );
    }
}

#[tokio::test]
async fn an_older_version_never_overwrites_a_newer_one() {
    for (name, backend) in backends(Duration::from_secs(60)).await {
        let index = &backend.index;
        index
            .apply(&[post(1, 3, "newest title", "text", 7, 10)])
            .await
            .unwrap();
        index
            .apply(&[
                post(1, 2, "older title", "text", 7, 10),
                post(1, 3, "same version", "x", 7, 10),
            ])
            .await
            .unwrap();
        assert!(
            search(index, &query("older")).await.hits.is_empty(),
            "{name}"
        );
        assert!(
            search(index, &query("same")).await.hits.is_empty(),
            "{name}"
        );
        // Out of order in one batch: the newest wins whatever the order.
        index
            .apply(&[
                post(2, 5, "five", "t", 7, 10),
                post(2, 4, "four", "t", 7, 10),
            ])
            .await
            .unwrap();
        assert_eq!(
            keys(&search(index, &query("five")).await),
            ["post:2"],
            "{name}"
        );
        assert!(
            search(index, &query("four")).await.hits.is_empty(),
            "{name}"
        );
        // An update keeps the creation time it does not know.
        let mut update = post(1, 4, "newest title again", "text", 7, 0);
        if let Change::Upsert(doc) = &mut update {
            doc.created_at_ms = None;
        }
        index.apply(&[update]).await.unwrap();
        let hit = &search(index, &query("again")).await.hits[0];
        assert_eq!(hit.created_at_ms, 10, "{name}");
    }
}

#[tokio::test]
async fn filters_narrow_the_hits_and_facets_count_every_match() {
    for (name, backend) in backends(Duration::from_secs(60)).await {
        let index = &backend.index;
        let day = 86_400_000;
        // 2026-12-01 and 2026-12-02 (UTC).
        let dec1 = 1_796_083_200_000;
        index
            .apply(&[
                post(1, 1, "rust #async", "#tokio runtime", 7, dec1),
                post(2, 1, "rust #async", "more", 8, dec1 + day),
                post(3, 1, "rust #web", "actix", 7, dec1 + day),
                user(9, 1, "rustacean"),
            ])
            .await
            .unwrap();
        let all = search(index, &query("rust")).await;
        assert_eq!(all.total, 4, "{name}");
        assert_eq!(
            all.kinds,
            [("post".to_owned(), 3), ("user".to_owned(), 1)],
            "{name}"
        );
        assert_eq!(
            all.tags,
            [
                ("async".to_owned(), 2),
                ("tokio".to_owned(), 1),
                ("web".to_owned(), 1)
            ],
            "{name}"
        );
        let filtered = |p: SearchParams<'static>| {
            let index = index.clone();
            async move { keys(&search(&index, &params(p)).await) }
        };
        let base = SearchParams {
            query: "rust",
            ..SearchParams::default()
        };
        assert_eq!(
            filtered(SearchParams {
                kind: "user",
                ..base.clone()
            })
            .await,
            ["user:9"],
            "{name}"
        );
        let mut tagged = filtered(SearchParams {
            tag: "#Async",
            ..base.clone()
        })
        .await;
        tagged.sort();
        assert_eq!(tagged, ["post:1", "post:2"], "{name}");
        let mut by_author = filtered(SearchParams {
            author_id: 7,
            ..base.clone()
        })
        .await;
        by_author.sort();
        assert_eq!(by_author, ["post:1", "post:3"], "{name}");
        let mut on_day = filtered(SearchParams {
            created_from: "2026-12-02",
            created_to: "2026-12-02",
            ..base.clone()
        })
        .await;
        on_day.sort();
        assert_eq!(on_day, ["post:2", "post:3"], "{name}");
        let narrowed = search(
            index,
            &params(SearchParams {
                tag: "async",
                ..base.clone()
            }),
        )
        .await;
        assert_eq!(narrowed.kinds, [("post".to_owned(), 2)], "{name}");
    }
}

#[tokio::test]
async fn a_rebuild_is_invisible_until_published_and_a_stale_one_cannot_publish() {
    for (name, backend) in backends(Duration::from_secs(60)).await {
        let index = &backend.index;
        index
            .apply(&[post(1, 1, "old world", "t", 7, 10)])
            .await
            .unwrap();
        let stale = index.begin_rebuild(5).await.unwrap();
        let generation = index.begin_rebuild(9).await.unwrap();
        generation
            .apply(&[
                post(1, 1, "old world", "t", 7, 10),
                post(2, 1, "new world", "t", 7, 20),
            ])
            .await
            .unwrap();
        assert_eq!(search(index, &query("world")).await.total, 1, "{name}");
        generation.publish().await.unwrap();
        assert_eq!(search(index, &query("world")).await.total, 2, "{name}");
        // Writes now reach the published generation.
        index
            .apply(&[post(3, 1, "third world", "t", 7, 30)])
            .await
            .unwrap();
        assert_eq!(search(index, &query("world")).await.total, 3, "{name}");
        assert!(
            matches!(
                stale.publish().await,
                Err(IndexError::Fenced { ours: 5, newer: 9 })
            ),
            "{name}"
        );
        stale.abandon().await.unwrap();
        assert!(
            matches!(index.begin_rebuild(9).await, Err(IndexError::Fenced { .. })),
            "{name}"
        );
        assert_eq!(search(index, &query("world")).await.total, 3, "{name}");
    }
}

#[tokio::test]
async fn a_cursor_past_its_keep_alive_has_expired() {
    for (name, backend) in backends(Duration::from_millis(300)).await {
        let index = &backend.index;
        let docs: Vec<Change> = (1..=4)
            .map(|i| post(i, 1, "page", "t", 7, i as i64))
            .collect();
        index.apply(&docs).await.unwrap();
        let first = search(
            index,
            &params(SearchParams {
                query: "page",
                size: 2,
                ..SearchParams::default()
            }),
        )
        .await;
        let cursor = first.next.expect("more pages").encode(&key());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let again = index
            .search(&params(SearchParams {
                query: "page",
                size: 2,
                cursor: &cursor,
                ..SearchParams::default()
            }))
            .await;
        assert!(
            matches!(again, Err(IndexError::CursorExpired)),
            "{name}: {again:?}"
        );
    }
}

#[tokio::test]
async fn opensearch_closes_every_point_in_time_no_cursor_names() {
    let (index, cluster) = support::fake_opensearch::start(Duration::from_secs(60)).await;
    let docs: Vec<Change> = (1..=5)
        .map(|i| post(i, 1, "pit", "t", 7, i as i64))
        .collect();
    index.apply(&docs).await.unwrap();
    let one_page = index.search(&query("pit")).await.unwrap();
    assert!(one_page.next.is_none());
    assert_eq!(cluster.cluster.open_pits(), 0, "a single page keeps none");
    let mut cursor = String::new();
    loop {
        let page = index
            .search(&params(SearchParams {
                query: "pit",
                size: 2,
                cursor: &cursor,
                ..SearchParams::default()
            }))
            .await
            .unwrap();
        match page.next {
            Some(next) => {
                assert_eq!(cluster.cluster.open_pits(), 1, "the cursor's");
                cursor = next.encode(&key());
            }
            None => break,
        }
    }
    assert_eq!(cluster.cluster.open_pits(), 0, "the last page closes it");
}

#[tokio::test]
async fn a_failed_publish_never_removes_the_index_the_alias_names() {
    let (index, cluster) = support::fake_opensearch::start(Duration::from_secs(60)).await;
    let generation = index.begin_rebuild(3).await.unwrap();
    generation.publish().await.unwrap();
    assert_eq!(
        cluster.cluster.aliased("platform").as_deref(),
        Some("platform-3")
    );
    // As if the publish had failed on its way back: the job abandons it.
    generation.abandon().await.unwrap();
    assert_eq!(
        cluster.cluster.aliased("platform").as_deref(),
        Some("platform-3")
    );
    index
        .apply(&[post(1, 1, "still", "here", 7, 1)])
        .await
        .unwrap();
    assert_eq!(index.search(&query("still")).await.unwrap().total, 1);
}

#[tokio::test]
async fn the_embedded_index_removes_only_its_own_unpublished_generations() {
    let dir = TempDir::new("search-generations");
    let root = dir.path().join("index");
    let index = Embedded::open(&root, Duration::from_secs(60)).unwrap();
    index.apply(&[post(1, 1, "kept", "t", 7, 1)]).await.unwrap();
    let unpublished = index.begin_rebuild(7).await.unwrap();
    unpublished
        .apply(&[post(2, 1, "lost", "t", 7, 1)])
        .await
        .unwrap();
    drop((unpublished, index));
    std::fs::create_dir_all(root.join("not-an-index")).unwrap();
    let index = Embedded::open(&root, Duration::from_secs(60)).unwrap();
    assert!(
        !root.join("gen-7").exists(),
        "a crashed rebuild's generation goes"
    );
    assert!(root.join("not-an-index").exists(), "what is not ours stays");
    assert_eq!(
        search(&(Arc::new(index) as Arc<dyn SearchIndex>), &query("kept"))
            .await
            .total,
        1
    );
}

#[tokio::test]
async fn a_fragmented_embedded_index_is_merged_in_the_background_at_most_once_an_interval() {
    let dir = TempDir::new("search-compaction");
    let open = |name: &str, every| {
        Embedded::open_with(dir.path().join(name), Duration::from_secs(60), every).unwrap()
    };
    let (often, rarely) = (
        open("often", Duration::ZERO),
        open("rarely", Duration::from_secs(3600)),
    );
    for index in [&often, &rarely] {
        for i in 0..40u64 {
            index
                .apply(&[post(i + 1, 1, "fragment", "t", 7, i as i64)])
                .await
                .unwrap();
        }
    }
    // Asked for once more than 4 segments are searched, then again only
    // after the interval.
    assert!(often.compactions() >= 2, "{}", often.compactions());
    assert_eq!(rarely.compactions(), 1);
    test_support::eventually(Duration::from_secs(10), "the merges finish", || async {
        often.segments() <= 5
    })
    .await;
    let all = search(
        &(Arc::new(often) as Arc<dyn SearchIndex>),
        &query("fragment"),
    )
    .await;
    assert_eq!(all.total, 40);
}
