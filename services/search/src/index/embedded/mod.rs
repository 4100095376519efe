//! The embedded backend: tantivy, on local disk.
//!
//! The index root holds one directory per generation (`gen-<fencing
//! token>`) and a `CURRENT` file naming the one searched; publishing a
//! rebuild rewrites `CURRENT` atomically (write, fsync, rename) and swaps
//! the engine in memory, so a search sees the old generation or the new
//! one, never a half-built one. A cursor holds its searcher (a snapshot of
//! the committed segments) for the keep-alive, so its pages stay ranked as
//! the first one was whatever is written meanwhile.
//!
//! One process writes a generation (tantivy takes a lock file); replicas
//! each keep their own index, fed by their own consumer group.

mod build;
mod collect;
mod schema;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tantivy::collector::TopDocs;
use tantivy::directory::MmapDirectory;
use tantivy::query::{BooleanQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::{IndexReader, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use self::collect::Ranked;
use self::schema::{Fields, Stored, kind_code};
use super::{Generation, IndexError, MAX_TAG_FACETS, SearchIndex, SearchResults, rank_facets};
use crate::document::{Change, Kind};
use crate::query::{Cursor, MAX_DEPTH, SearchQuery, SuggestQuery, highlight};

/// Memory the writer buffers before it flushes a segment.
const WRITER_MEMORY: usize = 50_000_000;
/// Snapshots (one per committed state a cursor was taken from) kept at
/// once; the least recently used goes first.
const MAX_SNAPSHOTS: usize = 256;
const CURRENT: &str = "CURRENT";
/// Segments beyond which a write asks for a merge of them all.
const COMPACT_ABOVE: usize = 4;
/// The least time between two such merges, by default: a search expands
/// each word once per segment, so a live index fed one commit per batch
/// (tantivy keeps up to 8 segments per level) searches several times
/// slower than a merged one; merging 100 000 posts takes about a second.
pub const DEFAULT_COMPACT_EVERY: Duration = Duration::from_secs(300);

fn backend(error: impl std::fmt::Display) -> IndexError {
    IndexError::Backend(error.to_string())
}

/// One generation: its index, reader and writer.
struct Engine {
    fencing: u64,
    dir: PathBuf,
    index: tantivy::Index,
    fields: Fields,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    compact_every: Duration,
    compacted: Mutex<Option<Instant>>,
    compactions: std::sync::atomic::AtomicU64,
}

impl Engine {
    fn open(dir: &Path, fencing: u64, compact_every: Duration) -> Result<Self, IndexError> {
        std::fs::create_dir_all(dir).map_err(backend)?;
        let (schema, fields) = Fields::schema();
        let directory = MmapDirectory::open(dir).map_err(backend)?;
        let index = tantivy::Index::open_or_create(directory, schema).map_err(backend)?;
        let writer: IndexWriter = index.writer(WRITER_MEMORY).map_err(backend)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()
            .map_err(backend)?;
        Ok(Self {
            fencing,
            dir: dir.to_owned(),
            index,
            fields,
            reader,
            writer: Mutex::new(writer),
            compact_every,
            compacted: Mutex::new(None),
            compactions: Default::default(),
        })
    }

    /// The versioned write (module docs of [`crate::index`]); blocking.
    /// One writer at a time, and the reader is reloaded before the next
    /// one starts: each write checks versions against every commit before
    /// it (the users' and the posts' consumers, and a rebuild's replay,
    /// write at once).
    fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let written = self.write(&mut writer, changes).and_then(|written| {
            if written {
                writer.commit().map_err(backend)?;
                self.reader.reload().map_err(backend)?;
                self.compact(&mut writer);
            }
            Ok(())
        });
        if written.is_err() {
            // Nothing of a failed batch may ride along with the next
            // commit (a delete without the tombstone that follows it).
            if let Err(error) = writer.rollback() {
                tracing::warn!(%error, "cannot roll a failed index write back");
            }
        }
        written
    }

    /// Queues `changes` in `writer`; whether anything was.
    fn write(&self, writer: &mut IndexWriter, changes: &[Change]) -> Result<bool, IndexError> {
        let searcher = self.reader.searcher();
        let f = &self.fields;
        // What this batch has written so far, ahead of the committed index.
        let mut written: HashMap<String, Stored> = HashMap::new();
        let stored = |written: &HashMap<String, Stored>, key: &str| match written.get(key) {
            Some(state) => Ok(Some(*state)),
            None => f.stored(&searcher, key),
        };
        for change in changes {
            let key = change.key();
            let current = stored(&written, &key).map_err(backend)?;
            if current.is_some_and(|c| c.version >= change.version()) {
                continue;
            }
            match change {
                Change::Upsert(doc) => {
                    if doc.kind == Kind::Post {
                        let author = crate::document::key(Kind::User, doc.author_id);
                        if stored(&written, &author)
                            .map_err(backend)?
                            .is_some_and(|a| a.deleted)
                        {
                            // The author is gone, and their posts with them.
                            continue;
                        }
                    }
                    let created_at_ms = doc
                        .created_at_ms
                        .or(current.filter(|c| !c.deleted).map(|c| c.created_at_ms))
                        .unwrap_or_else(common::jobs::now_ms);
                    writer.delete_term(f.key_term(&key));
                    writer
                        .add_document(f.live(doc, created_at_ms))
                        .map_err(backend)?;
                    written.insert(
                        key,
                        Stored {
                            version: doc.version,
                            deleted: false,
                            created_at_ms,
                        },
                    );
                }
                Change::Delete { kind, id, version } => {
                    writer.delete_term(f.key_term(&key));
                    writer
                        .add_document(f.tombstone(*kind, *id, *version))
                        .map_err(backend)?;
                    written.insert(
                        key,
                        Stored {
                            version: *version,
                            deleted: true,
                            created_at_ms: 0,
                        },
                    );
                    if *kind == Kind::User {
                        let posts: Vec<(Occur, Box<dyn Query>)> = vec![
                            (
                                Occur::Must,
                                term(Term::from_field_u64(f.kind, kind_code(Kind::Post))),
                            ),
                            (Occur::Must, term(Term::from_field_u64(f.author_id, *id))),
                        ];
                        writer
                            .delete_query(Box::new(BooleanQuery::new(posts)))
                            .map_err(backend)?;
                    }
                }
            }
        }
        Ok(!written.is_empty())
    }

    /// Asks, in the background, for every segment to be merged into one
    /// when there are many and the last such merge is old enough. Writes
    /// go on meanwhile; the merged segment replaces the others once done.
    fn compact(&self, writer: &mut IndexWriter) {
        if self.reader.searcher().segment_readers().len() <= COMPACT_ABOVE {
            return;
        }
        let mut compacted = self.compacted.lock().unwrap_or_else(|p| p.into_inner());
        if compacted.is_some_and(|at| at.elapsed() < self.compact_every) {
            return;
        }
        *compacted = Some(Instant::now());
        self.compactions
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        metrics::counter!("search_compactions_total").increment(1);
        match self.index.searchable_segment_ids() {
            // Not waited for; one the merge policy is already merging
            // makes this one fail, and the next interval tries again.
            Ok(segments) => drop(writer.merge(&segments)),
            Err(error) => tracing::warn!(%error, "cannot list the segments to merge"),
        }
    }

    /// Merges every segment into one, as a bulk load (a rebuild) ends:
    /// searches then expand each word once. Blocking.
    fn optimize(&self) -> Result<(), IndexError> {
        let mut writer = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let segments = self.index.searchable_segment_ids().map_err(backend)?;
        if segments.len() > 1 {
            writer.merge(&segments).wait().map_err(backend)?;
        }
        self.reader.reload().map_err(backend)
    }

    fn snapshot_id(&self, searcher: &Searcher) -> String {
        format!("{}.{}", self.fencing, searcher.generation().generation_id())
    }
}

fn term(term: Term) -> Box<dyn Query> {
    Box::new(TermQuery::new(term, IndexRecordOption::Basic))
}

struct Inner {
    root: PathBuf,
    current: RwLock<Arc<Engine>>,
    keep_alive: Duration,
    compact_every: Duration,
    snapshots: Mutex<HashMap<String, (Searcher, Instant)>>,
    /// Searches on blocking threads at once: twice the cores. More would
    /// only queue for the CPU while holding a thread each; a caller that
    /// gives up (its deadline) leaves the queue without a thread.
    searching: tokio::sync::Semaphore,
}

impl Inner {
    fn engine(&self) -> Arc<Engine> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The searcher a cursor names, if still kept.
    fn snapshot(&self, id: &str) -> Option<Searcher> {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        snapshots.retain(|_, (_, used)| now.duration_since(*used) < self.keep_alive);
        let (searcher, used) = snapshots.get_mut(id)?;
        *used = now;
        Some(searcher.clone())
    }

    fn keep(&self, id: String, searcher: &Searcher) {
        let mut snapshots = self.snapshots.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        // Expired ones go first: each pins segments (and, after a publish,
        // a whole old generation) on disk.
        snapshots.retain(|_, (_, used)| now.duration_since(*used) < self.keep_alive);
        if !snapshots.contains_key(&id) && snapshots.len() >= MAX_SNAPSHOTS {
            let oldest = snapshots
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(id, _)| id.clone());
            if let Some(oldest) = oldest {
                snapshots.remove(&oldest);
            }
        }
        snapshots.insert(id, (searcher.clone(), now));
    }

    fn search(&self, query: &SearchQuery) -> Result<SearchResults, IndexError> {
        let engine = self.engine();
        let searcher = match &query.after {
            Some(cursor) => self
                .snapshot(&cursor.snapshot)
                .ok_or(IndexError::CursorExpired)?,
            None => engine.reader.searcher(),
        };
        let f = &engine.fields;
        let tantivy_query =
            build::search_query(&searcher, f, &query.terms, &query.filters).map_err(backend)?;
        let page = searcher
            .search(
                &tantivy_query,
                &Ranked {
                    size: query.size,
                    after: query.after.as_ref().map(|c| c.last.clone()),
                },
            )
            .map_err(backend)?;
        let mut hits = Vec::with_capacity(page.top.len());
        for candidate in &page.top {
            let doc: TantivyDocument = searcher.doc(candidate.address).map_err(backend)?;
            let mut hit = f.hit(&doc, candidate.score);
            for (name, text) in [("title", &hit.title), ("content", &hit.content)] {
                if let Some(marked) = highlight(text, &query.terms) {
                    hit.highlights.insert(name.to_owned(), marked);
                }
            }
            hits.push(hit);
        }
        let depth = query.after.as_ref().map_or(0, |c| c.depth) + hits.len();
        let next = match page.top.last() {
            Some(last)
                if hits.len() == query.size && (depth as u64) < page.total && depth < MAX_DEPTH =>
            {
                // A cursor's snapshot keeps its id, whichever generation
                // is current by now.
                let snapshot = match &query.after {
                    Some(cursor) => cursor.snapshot.clone(),
                    None => engine.snapshot_id(&searcher),
                };
                self.keep(snapshot.clone(), &searcher);
                Some(Cursor {
                    snapshot,
                    depth,
                    last: last.sort_key(),
                })
            }
            _ => None,
        };
        Ok(SearchResults {
            hits,
            total: page.total,
            kinds: rank_facets(
                page.kinds
                    .into_iter()
                    .map(|(k, n)| (k.as_str().to_owned(), n)),
                Kind::ALL.len(),
            ),
            tags: rank_facets(page.tags, MAX_TAG_FACETS),
            next,
        })
    }

    fn suggest(&self, query: &SuggestQuery) -> Result<Vec<String>, IndexError> {
        let engine = self.engine();
        let searcher = engine.reader.searcher();
        let f = &engine.fields;
        let text =
            build::text_query(&searcher, &[(f.title, 1.0)], &query.terms).map_err(backend)?;
        let query_all = BooleanQuery::new(vec![
            (Occur::Must, text),
            (Occur::MustNot, build::live_filter(f)),
        ]);
        // Titles repeat; read a few more than asked to fill the list.
        let top = searcher
            .search(
                &query_all,
                &TopDocs::with_limit(query.limit * 4).order_by_score(),
            )
            .map_err(backend)?;
        let mut seen = HashSet::new();
        let mut titles = Vec::with_capacity(query.limit);
        for (_, address) in top {
            let doc: TantivyDocument = searcher.doc(address).map_err(backend)?;
            let title = f.hit(&doc, 0.0).title;
            if seen.insert(title.to_lowercase()) {
                titles.push(title);
                if titles.len() == query.limit {
                    break;
                }
            }
        }
        Ok(titles)
    }
}

/// The embedded search index.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

impl Embedded {
    /// Opens (or creates) the index under `root`, removing generations a
    /// rebuild left unpublished.
    pub fn open(root: impl Into<PathBuf>, keep_alive: Duration) -> Result<Self, IndexError> {
        Self::open_with(root, keep_alive, DEFAULT_COMPACT_EVERY)
    }

    /// As [`Embedded::open`], merging a fragmented index at most once per
    /// `compact_every`.
    pub fn open_with(
        root: impl Into<PathBuf>,
        keep_alive: Duration,
        compact_every: Duration,
    ) -> Result<Self, IndexError> {
        let root = root.into();
        std::fs::create_dir_all(&root).map_err(backend)?;
        let fencing = match std::fs::read_to_string(root.join(CURRENT)) {
            Ok(text) => text
                .trim()
                .strip_prefix("gen-")
                .and_then(|n| n.parse::<u64>().ok())
                .ok_or_else(|| backend(format!("{CURRENT} in {} is corrupt", root.display())))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                write_current(&root, 0).map_err(backend)?;
                0
            }
            Err(error) => return Err(backend(error)),
        };
        let current = generation_dir(&root, fencing);
        for entry in std::fs::read_dir(&root).map_err(backend)?.flatten() {
            let path = entry.path();
            let generation = entry
                .file_name()
                .to_str()
                .and_then(|name| name.strip_prefix("gen-"))
                .is_some_and(|n| n.parse::<u64>().is_ok());
            // Only this index's own generations: whatever else shares the
            // directory is not ours to remove.
            if generation && path.is_dir() && path != current {
                tracing::info!(dir = %path.display(), "removing an unpublished index generation");
                if let Err(error) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(%error, dir = %path.display(), "cannot remove an old generation");
                }
            }
        }
        let engine = Engine::open(&current, fencing, compact_every)?;
        Ok(Self {
            inner: Arc::new(Inner {
                root,
                current: RwLock::new(Arc::new(engine)),
                keep_alive,
                compact_every,
                snapshots: Mutex::default(),
                searching: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(2, |n| n.get() * 2),
                ),
            }),
        })
    }

    /// Merges the index into one segment (what a rebuild does before it
    /// publishes); for a bulk load outside a rebuild.
    pub async fn optimize(&self) -> Result<(), IndexError> {
        self.blocking(|inner| inner.engine().optimize()).await
    }

    /// Segments searched now (after a look for merges that finished).
    pub fn segments(&self) -> usize {
        let engine = self.inner.engine();
        if let Err(error) = engine.reader.reload() {
            tracing::warn!(%error, "cannot reload the index reader");
        }
        engine.reader.searcher().segment_readers().len()
    }

    /// Background merges of the whole index asked for so far.
    pub fn compactions(&self) -> u64 {
        self.inner
            .engine()
            .compactions
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    async fn turn(&self) -> Result<tokio::sync::SemaphorePermit<'_>, IndexError> {
        self.inner.searching.acquire().await.map_err(backend)
    }

    async fn blocking<T: Send + 'static>(
        &self,
        run: impl FnOnce(&Inner) -> Result<T, IndexError> + Send + 'static,
    ) -> Result<T, IndexError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || run(&inner))
            .await
            .map_err(backend)?
    }
}

fn generation_dir(root: &Path, fencing: u64) -> PathBuf {
    root.join(format!("gen-{fencing}"))
}

/// Points `CURRENT` at generation `fencing`, atomically and durably.
fn write_current(root: &Path, fencing: u64) -> std::io::Result<()> {
    use std::io::Write;
    let temporary = root.join(format!("{CURRENT}.tmp"));
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(format!("gen-{fencing}\n").as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, root.join(CURRENT))?;
    // Once renamed it is done: a failed directory fsync only means a crash
    // now might bring the old one back, which is still a whole index.
    if let Err(error) = std::fs::File::open(root).and_then(|dir| dir.sync_all()) {
        tracing::warn!(%error, "cannot make the new CURRENT durable yet");
    }
    Ok(())
}

/// The generation `CURRENT` names, if it can be read.
fn named_current(root: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(root.join(CURRENT)).ok()?;
    Some(root.join(text.trim()))
}

#[async_trait]
impl SearchIndex for Embedded {
    fn backend(&self) -> &'static str {
        "tantivy"
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        let changes = changes.to_vec();
        self.blocking(move |inner| inner.engine().apply(&changes))
            .await
    }

    async fn search(&self, query: &SearchQuery) -> Result<SearchResults, IndexError> {
        let query = query.clone();
        let _turn = self.turn().await?;
        self.blocking(move |inner| inner.search(&query)).await
    }

    async fn suggest(&self, query: &SuggestQuery) -> Result<Vec<String>, IndexError> {
        let query = query.clone();
        let _turn = self.turn().await?;
        self.blocking(move |inner| inner.suggest(&query)).await
    }

    async fn begin_rebuild(&self, fencing: u64) -> Result<Arc<dyn Generation>, IndexError> {
        self.blocking(move |inner| {
            let current = inner.engine().fencing;
            if fencing <= current {
                return Err(IndexError::Fenced {
                    ours: fencing,
                    newer: current,
                });
            }
            let dir = generation_dir(&inner.root, fencing);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(backend)?;
            }
            Ok(Arc::new(Engine::open(&dir, fencing, inner.compact_every)?))
        })
        .await
        .map(|engine| {
            Arc::new(EmbeddedGeneration {
                index: self.clone(),
                engine,
            }) as Arc<dyn Generation>
        })
    }

    async fn ping(&self) -> Result<(), IndexError> {
        // The index is local: it answers while its directory is there.
        let root = self.inner.root.clone();
        tokio::task::spawn_blocking(move || std::fs::metadata(root.join(CURRENT)))
            .await
            .map_err(backend)?
            .map(|_| ())
            .map_err(backend)
    }
}

struct EmbeddedGeneration {
    index: Embedded,
    engine: Arc<Engine>,
}

#[async_trait]
impl Generation for EmbeddedGeneration {
    fn fencing(&self) -> u64 {
        self.engine.fencing
    }

    async fn apply(&self, changes: &[Change]) -> Result<(), IndexError> {
        let changes = changes.to_vec();
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || engine.apply(&changes))
            .await
            .map_err(backend)?
    }

    async fn publish(&self) -> Result<(), IndexError> {
        let engine = self.engine.clone();
        self.index
            .blocking(move |inner| {
                engine.optimize()?;
                let mut current = inner.current.write().unwrap_or_else(|p| p.into_inner());
                if current.fencing >= engine.fencing {
                    return Err(IndexError::Fenced {
                        ours: engine.fencing,
                        newer: current.fencing,
                    });
                }
                write_current(&inner.root, engine.fencing).map_err(backend)?;
                let old = std::mem::replace(&mut *current, engine);
                drop(current);
                // Open cursors keep their segments (mapped files outlive
                // their names); new searches read the new generation.
                if let Err(error) = std::fs::remove_dir_all(&old.dir) {
                    tracing::warn!(%error, dir = %old.dir.display(), "cannot remove the replaced generation");
                }
                Ok(())
            })
            .await
    }

    async fn abandon(&self) -> Result<(), IndexError> {
        let dir = self.engine.dir.clone();
        let inner = self.index.inner.clone();
        tokio::task::spawn_blocking(move || {
            // Never the generation searched, nor the one `CURRENT` names.
            if dir == inner.engine().dir || named_current(&inner.root).is_some_and(|c| c == dir) {
                return Ok(());
            }
            std::fs::remove_dir_all(dir).map_err(backend)
        })
        .await
        .map_err(backend)?
    }
}
