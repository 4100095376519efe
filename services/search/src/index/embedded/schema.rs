//! The tantivy schema, and documents to and from it.

use tantivy::schema::{FAST, Field, INDEXED, STORED, STRING, Schema, TEXT, Value};
use tantivy::{DocSet, Searcher, TERMINATED, TantivyDocument, Term};

use crate::document::{Document, Kind};
use crate::index::Hit;

/// Kinds as stored (a number is a fast field that costs nothing to read
/// per hit).
pub(super) fn kind_code(kind: Kind) -> u64 {
    match kind {
        Kind::User => 0,
        Kind::Post => 1,
    }
}

pub(super) fn kind_of(code: u64) -> Kind {
    if code == 0 { Kind::User } else { Kind::Post }
}

#[derive(Clone, Copy, Debug)]
pub(super) struct Fields {
    pub key: Field,
    pub kind: Field,
    pub id: Field,
    pub version: Field,
    pub title: Field,
    pub content: Field,
    pub tags: Field,
    pub author_id: Field,
    pub created_at: Field,
    pub deleted: Field,
}

pub(super) const CREATED_AT: &str = "created_at";
pub(super) const KIND: &str = "kind";
pub(super) const ID: &str = "id";
pub(super) const TAGS: &str = "tags";

impl Fields {
    pub fn schema() -> (Schema, Self) {
        let mut builder = Schema::builder();
        let fields = Self {
            key: builder.add_text_field("key", STRING | STORED),
            kind: builder.add_u64_field(KIND, INDEXED | FAST | STORED),
            id: builder.add_u64_field(ID, FAST | STORED),
            version: builder.add_u64_field("version", FAST | STORED),
            // The default tokenizer: split on what is not a letter or a
            // digit, drop words over 40 bytes, lowercase. The query side
            // splits the same way (`query::terms`).
            title: builder.add_text_field("title", TEXT | STORED),
            content: builder.add_text_field("content", TEXT | STORED),
            tags: builder.add_text_field(TAGS, STRING | FAST | STORED),
            author_id: builder.add_u64_field("author_id", INDEXED | FAST | STORED),
            created_at: builder.add_i64_field(CREATED_AT, INDEXED | FAST | STORED),
            deleted: builder.add_bool_field("deleted", INDEXED | FAST | STORED),
        };
        (builder.build(), fields)
    }

    pub fn key_term(&self, key: &str) -> Term {
        Term::from_field_text(self.key, key)
    }

    /// A live document at `created_at_ms`.
    pub fn live(&self, doc: &Document, created_at_ms: i64) -> TantivyDocument {
        let mut stored = TantivyDocument::default();
        stored.add_text(self.key, doc.key());
        stored.add_u64(self.kind, kind_code(doc.kind));
        stored.add_u64(self.id, doc.id);
        stored.add_u64(self.version, doc.version);
        stored.add_text(self.title, &doc.title);
        stored.add_text(self.content, &doc.content);
        for tag in &doc.tags {
            stored.add_text(self.tags, tag);
        }
        stored.add_u64(self.author_id, doc.author_id);
        stored.add_i64(self.created_at, created_at_ms);
        stored.add_bool(self.deleted, false);
        stored
    }

    /// What is left of a deleted document: its version, so that nothing
    /// older is kept after it.
    pub fn tombstone(&self, kind: Kind, id: u64, version: u64) -> TantivyDocument {
        let mut stored = TantivyDocument::default();
        stored.add_text(self.key, crate::document::key(kind, id));
        stored.add_u64(self.kind, kind_code(kind));
        stored.add_u64(self.id, id);
        stored.add_u64(self.version, version);
        stored.add_i64(self.created_at, 0);
        stored.add_bool(self.deleted, true);
        stored
    }

    /// A stored document as a hit (no highlights yet).
    pub fn hit(&self, doc: &TantivyDocument, score: f32) -> Hit {
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default()
        };
        let number = |field| doc.get_first(field).and_then(|v| v.as_u64()).unwrap_or(0);
        Hit {
            kind: kind_of(number(self.kind)),
            id: number(self.id),
            title: text(self.title),
            content: text(self.content),
            tags: doc
                .get_all(self.tags)
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            author_id: number(self.author_id),
            created_at_ms: doc
                .get_first(self.created_at)
                .and_then(|v| v.as_i64())
                .unwrap_or(0),
            score,
            highlights: Default::default(),
        }
    }

    /// What the committed index has for `key`.
    pub fn stored(&self, searcher: &Searcher, key: &str) -> tantivy::Result<Option<Stored>> {
        let term = self.key_term(key);
        for segment in searcher.segment_readers() {
            let inverted = segment.inverted_index(self.key)?;
            let Some(mut postings) =
                inverted.read_postings(&term, tantivy::schema::IndexRecordOption::Basic)?
            else {
                continue;
            };
            let mut doc = postings.doc();
            while doc != TERMINATED {
                if !segment.is_deleted(doc) {
                    let fast = segment.fast_fields();
                    return Ok(Some(Stored {
                        version: fast.u64("version")?.first(doc).unwrap_or(0),
                        deleted: fast.bool("deleted")?.first(doc).unwrap_or(false),
                        created_at_ms: fast.i64(CREATED_AT)?.first(doc).unwrap_or(0),
                    }));
                }
                doc = postings.advance();
            }
        }
        Ok(None)
    }
}

/// The state of one document as far as a write needs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stored {
    pub version: u64,
    pub deleted: bool,
    pub created_at_ms: i64,
}
