//! The search benchmark's Rust side (bench/search-vs-fts5.sh):
//!
//! - `generate N DOCS QUERIES`: N posts from a made-up vocabulary with a
//!   skewed word frequency, as JSON lines, and fuzzy two-term queries (a
//!   misspelt pair, tab, the pair spelt right) for both engines.
//! - `index DIR DOCS`: the embedded index at DIR from DOCS, in the
//!   consumer's batches; documents per second.
//! - `optimize DIR`: merges the index into one segment, as a rebuild does
//!   before it publishes.
//! - `query DIR QUERIES SECONDS`: one caller running the queries in turn
//!   (typo tolerance on, facets, highlights, total) for SECONDS;
//!   throughput and latency.
//! - `lag USERS SEARCH RATE SECONDS`: posts created in the users service
//!   over gRPC at RATE a second while the search service is polled for
//!   each; from the create's answer to the post being searchable.
//!
//! gRPC calls are signed as the gateway with `PLATFORM_SERVICE_SECRET`.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::auth::{ServiceCredentials, ServiceSecret};
use platform_proto::posts::v1::CreatePostRequest;
use platform_proto::posts::v1::post_service_client::PostServiceClient;
use platform_proto::search::v1::SearchRequest;
use platform_proto::search::v1::search_service_client::SearchServiceClient;
use platform_proto::users::v1::CreateUserRequest;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use search::document::{Change, Document, Kind, hashtags};
use search::index::{Embedded, SearchIndex};
use search::query::{SearchParams, SearchQuery};
use serde_json::{Value, json};

type Error = Box<dyn std::error::Error + Send + Sync>;

const SYLLABLES: [&str; 24] = [
    "ka", "ro", "mi", "ta", "ne", "so", "lu", "ve", "da", "ri", "po", "sha", "tre", "gal", "bin",
    "or", "en", "ul", "qua", "zen", "mor", "pi", "the", "cy",
];
const VOCABULARY: usize = 20_000;
/// One post in this many is followed until it is searchable.
const SAMPLE: u64 = 5;

fn vocabulary(rng: &mut fastrand::Rng) -> Vec<String> {
    let mut words = std::collections::BTreeSet::new();
    while words.len() < VOCABULARY {
        let parts = rng.usize(2..=4);
        let word: String = (0..parts)
            .map(|_| SYLLABLES[rng.usize(..SYLLABLES.len())])
            .collect();
        words.insert(word);
    }
    let mut words: Vec<String> = words.into_iter().collect();
    rng.shuffle(&mut words);
    words
}

/// A word index skewed towards the front: a few words are common, most
/// rare, as in text.
fn skewed(rng: &mut fastrand::Rng) -> usize {
    let u = rng.f64();
    ((u * u * u) * VOCABULARY as f64) as usize % VOCABULARY
}

fn sentence(rng: &mut fastrand::Rng, words: &[String], n: usize) -> String {
    (0..n)
        .map(|_| words[skewed(rng)].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` with one letter changed (a typo within `AUTO`'s reach).
fn misspell(rng: &mut fastrand::Rng, word: &str) -> String {
    let mut chars: Vec<char> = word.chars().collect();
    let at = rng.usize(1..chars.len());
    let replacement = (b'a' + rng.u8(..26)) as char;
    chars[at] = if chars[at] == replacement {
        'x'
    } else {
        replacement
    };
    chars.into_iter().collect()
}

fn generate(n: usize, docs: &str, queries: &str) -> Result<(), Error> {
    let mut rng = fastrand::Rng::with_seed(42);
    let words = vocabulary(&mut rng);
    let mut out = std::io::BufWriter::new(std::fs::File::create(docs)?);
    let start = 1_764_547_200_000i64; // 2025-12-01
    for id in 1..=n {
        let title_words = rng.usize(4..=8);
        let content_words = rng.usize(30..=80);
        let mut content = sentence(&mut rng, &words, content_words);
        for _ in 0..rng.usize(0..=3) {
            content.push_str(&format!(" #{}", words[rng.usize(..200)]));
        }
        let doc = json!({
            // Far above the ids the users service hands out, so the posts
            // the lag part writes are new documents, not older versions.
            "id": 1_000_000_000 + id,
            "title": sentence(&mut rng, &words, title_words),
            "content": content,
            "author_id": rng.u64(1..=1000),
            "created_at_ms": start + id as i64 * 60_000,
        });
        writeln!(out, "{doc}")?;
    }
    out.flush()?;
    let mut out = std::io::BufWriter::new(std::fs::File::create(queries)?);
    for _ in 0..1000 {
        // Words of middling frequency: neither in every post nor in one.
        let a = &words[rng.usize(50..2000)];
        let b = &words[rng.usize(50..2000)];
        let typo_a = misspell(&mut rng, a);
        let typo_b = misspell(&mut rng, b);
        writeln!(out, "{typo_a} {typo_b}\t{a} {b}")?;
    }
    out.flush()?;
    Ok(())
}

fn read_docs(path: &str) -> Result<Vec<Change>, Error> {
    let file = std::io::BufReader::new(std::fs::File::open(path)?);
    let mut changes = Vec::new();
    for line in file.lines() {
        let doc: Value = serde_json::from_str(&line?)?;
        let title = doc["title"].as_str().unwrap_or_default().to_owned();
        let content = doc["content"].as_str().unwrap_or_default().to_owned();
        changes.push(Change::Upsert(Document {
            kind: Kind::Post,
            id: doc["id"].as_u64().unwrap_or(0),
            version: 1,
            tags: hashtags(&[&title, &content]),
            title,
            content,
            author_id: doc["author_id"].as_u64().unwrap_or(0),
            created_at_ms: doc["created_at_ms"].as_i64(),
        }));
    }
    Ok(changes)
}

async fn index(dir: &str, docs: &str) -> Result<(), Error> {
    let changes = read_docs(docs)?;
    let index = Embedded::open(dir, Duration::from_secs(60))?;
    let started = Instant::now();
    for batch in changes.chunks(500) {
        index.apply(batch).await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "indexed {} docs in {seconds:.1}s: {:.0} docs/s ({} segments)",
        changes.len(),
        changes.len() as f64 / seconds,
        index.segments()
    );
    Ok(())
}

async fn optimize(dir: &str) -> Result<(), Error> {
    let index = Embedded::open(dir, Duration::from_secs(60))?;
    let before = index.segments();
    let started = Instant::now();
    index.optimize().await?;
    println!(
        "merged {before} segments into {} in {:.1}s",
        index.segments(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let at = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[at].as_secs_f64() * 1000.0
}

fn report(what: &str, mut latencies: Vec<Duration>, elapsed: Duration, hits: u64) {
    latencies.sort();
    println!(
        "{what}: {} queries in {:.1}s: {:.0} q/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} hits/query",
        latencies.len(),
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        hits as f64 / latencies.len().max(1) as f64
    );
}

async fn query(dir: &str, queries: &str, seconds: u64) -> Result<(), Error> {
    let index = Embedded::open(dir, Duration::from_secs(60))?;
    let texts: Vec<String> = std::fs::read_to_string(queries)?
        .lines()
        .filter_map(|l| l.split('\t').next().map(str::to_owned))
        .collect();
    let key = search::query::CursorKey::new(b"bench");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut latencies = Vec::new();
    let mut hits = 0u64;
    for text in texts.iter().cycle() {
        if Instant::now() >= deadline {
            break;
        }
        let query = SearchQuery::parse(
            &SearchParams {
                query: text,
                ..SearchParams::default()
            },
            &key,
        )?;
        let t = Instant::now();
        let found = index.search(&query).await?;
        latencies.push(t.elapsed());
        hits += found.hits.len() as u64;
    }
    report("tantivy, typo tolerant", latencies, started.elapsed(), hits);
    Ok(())
}

fn credentials() -> Result<Arc<ServiceCredentials>, Error> {
    let secret = std::env::var("PLATFORM_SERVICE_SECRET")
        .map_err(|_| "PLATFORM_SERVICE_SECRET: the services' secret is needed to sign calls")?;
    Ok(Arc::new(ServiceCredentials::new(
        &ServiceSecret::new(secret.as_bytes())?.key_for("gateway"),
    )))
}

async fn channel(addr: &str) -> Result<tonic::transport::Channel, Error> {
    let timeouts = common::clients::Timeouts {
        connect: Duration::from_secs(5),
        request: Duration::from_secs(30),
    };
    Ok(common::clients::grpc_endpoint(addr.to_owned(), timeouts)?
        .connect()
        .await?)
}

async fn lag(users: &str, search: &str, rate: u64, seconds: u64) -> Result<(), Error> {
    let credentials = credentials()?;
    let users_channel = channel(users).await?;
    let mut accounts = UserServiceClient::with_interceptor(
        users_channel.clone(),
        credentials.interceptor("users"),
    );
    let run = std::process::id();
    let author = accounts
        .create_user(CreateUserRequest {
            username: format!("lag{run}"),
            email: format!("lag{run}@example.com"),
            password: "correct horse battery".into(),
        })
        .await?
        .into_inner()
        .id;
    let posts =
        PostServiceClient::with_interceptor(users_channel, credentials.interceptor("users"));
    let finder = SearchServiceClient::with_interceptor(
        channel(search).await?,
        credentials.interceptor("search"),
    );
    let mut posts = posts;
    // The consumer group's first assignment takes a moment: one post
    // through first, so the run measures the steady state.
    let warm = format!("lagwarm{run}");
    posts
        .create_post(CreatePostRequest {
            title: warm.clone(),
            content: "warm-up".into(),
            author_id: author,
        })
        .await?;
    let mut finder_warm = finder.clone();
    let warmed = Instant::now();
    loop {
        let found = finder_warm
            .search(SearchRequest {
                query: warm.clone(),
                size: 1,
                ..SearchRequest::default()
            })
            .await?
            .into_inner();
        if found.total > 0 {
            break;
        }
        if warmed.elapsed() > Duration::from_secs(60) {
            return Err("the warm-up post never became searchable".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let total = rate * seconds;
    let started = Instant::now();
    let mut probes = Vec::new();
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    for n in 0..total {
        let due = started + every * n as u32;
        tokio::time::sleep_until(due.into()).await;
        // A word no generated post has, one per post.
        let token = format!("lagmark{run}n{n}");
        let made = posts
            .create_post(CreatePostRequest {
                title: format!("{token} fresh post"),
                content: "written while the index holds the corpus".into(),
                author_id: author,
            })
            .await;
        let at = Instant::now();
        if let Err(status) = made {
            eprintln!("a create failed: {status}");
            continue;
        }
        // One post in SAMPLE is followed until it is found, every 10 ms:
        // following all of them would load the service more than the
        // writes do (the service's own histogram covers every post).
        if n % SAMPLE != 0 {
            continue;
        }
        let mut finder = finder.clone();
        probes.push(tokio::spawn(async move {
            let deadline = at + Duration::from_secs(30);
            while Instant::now() < deadline {
                let found = finder
                    .search(SearchRequest {
                        query: token.clone(),
                        size: 1,
                        ..SearchRequest::default()
                    })
                    .await
                    .ok()?
                    .into_inner();
                if found.hits.iter().any(|h| h.title.starts_with(&token)) {
                    return Some(at.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            None
        }));
    }
    let written = started.elapsed();
    let mut lags = Vec::new();
    let followed = probes.len();
    for probe in probes {
        if let Some(lag) = probe.await? {
            lags.push(lag);
        }
    }
    lags.sort();
    println!(
        "{total} posts written at {:.0}/s; {} of {followed} followed found; create answered → searchable: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        total as f64 / written.as_secs_f64().max(1e-9),
        lags.len(),
        percentile(&lags, 0.50),
        percentile(&lags, 0.99),
        percentile(&lags, 1.0),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let arg = |n: usize| args.get(n).cloned().unwrap_or_default();
    match arg(1).as_str() {
        "generate" => generate(arg(2).parse()?, &arg(3), &arg(4)),
        "index" => index(&arg(2), &arg(3)).await,
        "optimize" => optimize(&arg(2)).await,
        "query" => query(&arg(2), &arg(3), arg(4).parse()?).await,
        "lag" => lag(&arg(2), &arg(3), arg(4).parse()?, arg(5).parse()?).await,
        _ => Err("usage: search-load generate|index|query|lag ...".into()),
    }
}
