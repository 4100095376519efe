//! The seed's query — `multi_match` over `title^2` and `content`,
//! `most_fields`, fuzziness `AUTO` — in tantivy terms, plus a prefix on the
//! last word and the filters.
//!
//! tantivy's own fuzzy query scores every match alike; OpenSearch instead
//! expands a fuzzy word into the indexed words within reach and scores
//! each by BM25. This does the same: each query word becomes the words of
//! the term dictionary its Levenshtein automaton accepts — the closest
//! [`MAX_EXPANSIONS`] of them, as OpenSearch's `max_expansions` — and the
//! last word also the words it begins (as typed, like `bool_prefix`), an
//! exact match weighing more than a near one.

use std::collections::HashMap;
use std::ops::Bound;

use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, FuzzyTermQuery, Occur, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{Field, IndexRecordOption};
use tantivy::{Searcher, Term};

use super::schema::{Fields, kind_code};
use crate::query::{Filters, MAX_EXPANSIONS, MAX_TERM_BYTES, distance, fuzziness};

/// Weight of a near (misspelt or prefix) match beside an exact one.
const NEAR: f32 = 0.6;
/// The seed's boost of the title over the content.
const TITLE_BOOST: f32 = 2.0;
/// Candidates read from the dictionary per word before the closest are
/// kept: bounds the work a short prefix (`a`) can cause.
const MAX_CANDIDATES: usize = 2_000;

/// The words of the index within reach of `term` in `field`, across the
/// searcher's segments, closest first (then most frequent), the exact word
/// (if indexed) always among them.
fn expand(
    searcher: &Searcher,
    field: Field,
    term: &str,
    prefix: bool,
) -> tantivy::Result<Vec<(String, bool)>> {
    if term.len() > MAX_TERM_BYTES {
        return Ok(Vec::new());
    }
    let allowed = fuzziness(term);
    let fuzzy =
        FuzzyTermQuery::new(Term::from_field_text(field, term), allowed, true).automaton()?;
    // word → (edits, documents holding it).
    let mut found: HashMap<String, (usize, u64)> = HashMap::new();
    let mut note = |word: &[u8], docs: u32, edits: usize| {
        if let Ok(word) = std::str::from_utf8(word) {
            let entry = found.entry(word.to_owned()).or_insert((edits, 0));
            entry.0 = entry.0.min(edits);
            entry.1 += u64::from(docs);
        }
    };
    for segment in searcher.segment_readers() {
        let inverted = segment.inverted_index(field)?;
        let terms = inverted.terms();
        let mut stream = terms.search(&fuzzy).into_stream()?;
        let mut read = 0;
        while read < MAX_CANDIDATES && stream.advance() {
            read += 1;
            let edits = std::str::from_utf8(stream.key())
                .ok()
                .and_then(|w| distance(w, term, usize::from(allowed)))
                .unwrap_or(usize::from(allowed));
            note(stream.key(), stream.value().doc_freq, edits);
        }
        if prefix {
            // Words that begin with the term, in dictionary order from it.
            let mut stream = terms.range().ge(term.as_bytes()).into_stream()?;
            let mut read = 0;
            while read < MAX_CANDIDATES && stream.advance() {
                if !stream.key().starts_with(term.as_bytes()) {
                    break;
                }
                read += 1;
                // A completion counts as one edit: the exact word first.
                let edits = usize::from(stream.key() != term.as_bytes());
                note(stream.key(), stream.value().doc_freq, edits);
            }
        }
    }
    let mut ranked: Vec<(String, (usize, u64))> = found.into_iter().collect();
    ranked.sort_by(|a, b| {
        a.1.0
            .cmp(&b.1.0)
            .then(b.1.1.cmp(&a.1.1))
            .then(a.0.cmp(&b.0))
    });
    ranked.truncate(MAX_EXPANSIONS);
    Ok(ranked
        .into_iter()
        .map(|(word, _)| {
            let exact = word == term;
            (word, exact)
        })
        .collect())
}

/// Matches any query word in `fields` (with their boosts), scored by BM25
/// summed over fields and words.
pub(super) fn text_query(
    searcher: &Searcher,
    fields: &[(Field, f32)],
    terms: &[String],
) -> tantivy::Result<Box<dyn Query>> {
    let last = terms.len().saturating_sub(1);
    let mut should: Vec<(Occur, Box<dyn Query>)> = Vec::new();
    for &(field, boost) in fields {
        for (n, term) in terms.iter().enumerate() {
            for (word, exact) in expand(searcher, field, term, n == last)? {
                let weight = if exact { boost } else { boost * NEAR };
                let query = TermQuery::new(
                    Term::from_field_text(field, &word),
                    IndexRecordOption::WithFreqs,
                );
                should.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(query), weight)),
                ));
            }
        }
    }
    Ok(Box::new(BooleanQuery::new(should)))
}

/// The full query: the words in title (boosted) and content, the filters,
/// and never a tombstone.
pub(super) fn search_query(
    searcher: &Searcher,
    fields: &Fields,
    terms: &[String],
    filters: &Filters,
) -> tantivy::Result<Box<dyn Query>> {
    let text = text_query(
        searcher,
        &[(fields.title, TITLE_BOOST), (fields.content, 1.0)],
        terms,
    )?;
    let mut clauses: Vec<(Occur, Box<dyn Query>)> = vec![(Occur::Must, text)];
    let mut filter = |query: Box<dyn Query>| {
        // A filter decides, it does not score.
        clauses.push((Occur::Must, Box::new(ConstScoreQuery::new(query, 0.0))));
    };
    let term =
        |term: Term| -> Box<dyn Query> { Box::new(TermQuery::new(term, IndexRecordOption::Basic)) };
    if let Some(kind) = filters.kind {
        filter(term(Term::from_field_u64(fields.kind, kind_code(kind))));
    }
    if let Some(tag) = &filters.tag {
        filter(term(Term::from_field_text(fields.tags, tag)));
    }
    if let Some(author) = filters.author_id {
        filter(term(Term::from_field_u64(fields.author_id, author)));
    }
    if filters.from_ms.is_some() || filters.to_ms.is_some() {
        let bound = |ms: Option<i64>| {
            ms.map_or(Bound::Unbounded, |ms| {
                Bound::Included(Term::from_field_i64(fields.created_at, ms))
            })
        };
        filter(Box::new(RangeQuery::new(
            bound(filters.from_ms),
            bound(filters.to_ms),
        )));
    }
    clauses.push((Occur::MustNot, live_filter(fields)));
    Ok(Box::new(BooleanQuery::new(clauses)))
}

/// What a search must not match: tombstones.
pub(super) fn live_filter(fields: &Fields) -> Box<dyn Query> {
    Box::new(TermQuery::new(
        Term::from_field_bool(fields.deleted, true),
        IndexRecordOption::Basic,
    ))
}
