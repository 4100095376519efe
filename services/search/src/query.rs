//! A search as the backends run it, checked before any of them sees it.
//!
//! There is no query language: the text is split into words the way the
//! index splits what it stores (letters and digits, lowercased), so
//! `title:x AND (` is three words, never a syntax error. Every word may be
//! misspelt by an edit distance that grows with its length (OpenSearch's
//! `AUTO`), and the last one is also a prefix, spelt as typed (search as
//! you type; OpenSearch's `bool_prefix` does not correct a prefix either).

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::document::{Kind, MAX_TAG_CHARS};

/// Longest query text, in bytes.
pub const MAX_QUERY_BYTES: usize = 256;
/// Most words in a query.
pub const MAX_TERMS: usize = 10;
/// Hits per page: the default and the most.
pub const DEFAULT_SIZE: usize = 10;
pub const MAX_SIZE: usize = 100;
/// The deepest hit a cursor reaches: pages go no further than this.
pub const MAX_DEPTH: usize = 1000;
/// Longest cursor accepted, in bytes (an OpenSearch point in time's id is
/// long).
pub const MAX_CURSOR_BYTES: usize = 2048;
/// Words longer than this are not indexed (tantivy's default tokenizer
/// drops them too), so a query word this long matches nothing.
pub const MAX_TERM_BYTES: usize = 40;
/// Most indexed words one query word stands for, per field (OpenSearch's
/// `max_expansions`): 10 words, 2 fields and 2 clauses stay within
/// OpenSearch's default limit of 1024 clauses.
pub const MAX_EXPANSIONS: usize = 20;
/// Suggestions: the default and the most.
pub const DEFAULT_SUGGESTIONS: usize = 5;
pub const MAX_SUGGESTIONS: usize = 20;

/// A request the service will not run, naming the field at fault.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{field}: {reason}")]
pub struct Invalid {
    pub field: &'static str,
    pub reason: String,
}

fn invalid(field: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field,
        reason: reason.into(),
    }
}

/// What a hit must also be.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Filters {
    pub kind: Option<Kind>,
    pub tag: Option<String>,
    pub author_id: Option<u64>,
    /// Inclusive bounds on the creation time, in ms since the epoch.
    pub from_ms: Option<i64>,
    pub to_ms: Option<i64>,
}

/// A checked search.
#[derive(Clone, Debug, PartialEq)]
pub struct SearchQuery {
    /// The text as given, trimmed (OpenSearch analyses it itself).
    pub text: String,
    /// Its words, lowercased; at least one.
    pub terms: Vec<String>,
    pub filters: Filters,
    pub size: usize,
    pub after: Option<Cursor>,
}

/// Signs cursors, so that only one this service issued is read back (a
/// forged snapshot id or depth is refused as a client's mistake, never
/// sent to the backend). Replicas that must read each other's cursors
/// derive it from the same service secret.
#[derive(Clone)]
pub struct CursorKey([u8; 32]);

impl CursorKey {
    pub fn new(material: &[u8]) -> Self {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(b"search.cursor.v1")
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(material);
        Self(mac.finalize().into_bytes().into())
    }

    fn tag(&self, payload: &[u8]) -> [u8; 16] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .unwrap_or_else(|_| unreachable!("HMAC accepts keys of any length"));
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        let mut tag = [0; 16];
        tag.copy_from_slice(&full[..16]);
        tag
    }
}

/// Where the previous page ended: the snapshot it was read from and its
/// last hit's sort key. Opaque to clients: base64 of JSON, then a MAC.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cursor {
    /// The backend's snapshot id (a tantivy searcher's, an OpenSearch
    /// point in time).
    #[serde(rename = "s")]
    pub snapshot: String,
    /// Hits already returned.
    #[serde(rename = "d")]
    pub depth: usize,
    #[serde(rename = "k")]
    pub last: SortKey,
}

/// A hit's place in the order: score (higher first), then creation time
/// (older first, as the seed sorts), then key, so no two hits tie.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SortKey {
    pub score: f32,
    pub created_at_ms: i64,
    pub key: String,
}

impl SortKey {
    /// Whether `self` comes after `other` in the result order.
    pub fn is_after(&self, other: &SortKey) -> bool {
        use std::cmp::Ordering;
        match self.score.total_cmp(&other.score) {
            Ordering::Less => true,
            Ordering::Greater => false,
            Ordering::Equal => (self.created_at_ms, &self.key) > (other.created_at_ms, &other.key),
        }
    }
}

impl Cursor {
    pub fn encode(&self, key: &CursorKey) -> String {
        let payload = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(key.tag(&payload))
        )
    }

    pub fn decode(text: &str, key: &CursorKey) -> Result<Self, Invalid> {
        let bad = || invalid("cursor", "not a cursor this service issued");
        if text.len() > MAX_CURSOR_BYTES {
            return Err(bad());
        }
        let (payload, tag) = text.split_once('.').ok_or_else(bad)?;
        let payload = URL_SAFE_NO_PAD.decode(payload).map_err(|_| bad())?;
        let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| bad())?;
        // Constant time: a forger learns nothing from how long it took.
        if !common::auth::same_secret(&tag, &key.tag(&payload)) {
            return Err(bad());
        }
        let cursor: Cursor = serde_json::from_slice(&payload).map_err(|_| bad())?;
        if !cursor.last.score.is_finite() || cursor.depth > MAX_DEPTH {
            return Err(bad());
        }
        Ok(cursor)
    }
}

/// The words of `text`, as the index splits and lowercases what it stores.
pub fn terms(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// How many edits a word of `term`'s length may be off by (OpenSearch's
/// `AUTO`: none up to 2 characters, one up to 5, two beyond).
pub fn fuzziness(term: &str) -> u8 {
    match term.chars().count() {
        0..=2 => 0,
        3..=5 => 1,
        _ => 2,
    }
}

/// The raw fields of a search request.
#[derive(Clone, Debug, Default)]
pub struct SearchParams<'a> {
    pub query: &'a str,
    pub kind: &'a str,
    pub tag: &'a str,
    pub author_id: u64,
    pub created_from: &'a str,
    pub created_to: &'a str,
    pub cursor: &'a str,
    pub size: u32,
}

impl SearchQuery {
    /// Checks `params`; a cursor must carry `key`'s signature.
    pub fn parse(params: &SearchParams<'_>, key: &CursorKey) -> Result<Self, Invalid> {
        let (text, terms) = text_terms(params.query)?;
        let kind = match params.kind {
            "" => None,
            kind => {
                Some(Kind::parse(kind).ok_or_else(|| invalid("kind", "is \"user\" or \"post\""))?)
            }
        };
        let tag = match params.tag.trim_start_matches('#') {
            "" => None,
            tag if tag.chars().count() > MAX_TAG_CHARS => {
                return Err(invalid(
                    "tag",
                    format!("is at most {MAX_TAG_CHARS} characters"),
                ));
            }
            tag => Some(tag.to_lowercase()),
        };
        let from_ms = time_bound("from", params.created_from, Bound::Start)?;
        let to_ms = time_bound("to", params.created_to, Bound::End)?;
        if let (Some(from), Some(to)) = (from_ms, to_ms)
            && from > to
        {
            return Err(invalid("from", "is after `to`"));
        }
        let size = match params.size as usize {
            0 => DEFAULT_SIZE,
            size if size > MAX_SIZE => {
                return Err(invalid("size", format!("is at most {MAX_SIZE}")));
            }
            size => size,
        };
        let after = match params.cursor {
            "" => None,
            cursor => Some(Cursor::decode(cursor, key)?),
        };
        let depth = after.as_ref().map_or(0, |c| c.depth);
        if depth + size > MAX_DEPTH {
            return Err(invalid(
                "cursor",
                format!("pages reach at most {MAX_DEPTH} hits deep; narrow the search"),
            ));
        }
        Ok(Self {
            text,
            terms,
            filters: Filters {
                kind,
                tag,
                author_id: (params.author_id != 0).then_some(params.author_id),
                from_ms,
                to_ms,
            },
            size,
            after,
        })
    }
}

/// A checked completion request.
#[derive(Clone, Debug, PartialEq)]
pub struct SuggestQuery {
    pub text: String,
    pub terms: Vec<String>,
    pub limit: usize,
}

impl SuggestQuery {
    pub fn parse(query: &str, limit: u32) -> Result<Self, Invalid> {
        let (text, terms) = text_terms(query)?;
        let limit = match limit as usize {
            0 => DEFAULT_SUGGESTIONS,
            limit if limit > MAX_SUGGESTIONS => {
                return Err(invalid("limit", format!("is at most {MAX_SUGGESTIONS}")));
            }
            limit => limit,
        };
        Ok(Self { text, terms, limit })
    }
}

fn text_terms(query: &str) -> Result<(String, Vec<String>), Invalid> {
    if query.len() > MAX_QUERY_BYTES {
        return Err(invalid("q", format!("is at most {MAX_QUERY_BYTES} bytes")));
    }
    let text = query.trim();
    let terms = terms(text);
    if terms.is_empty() {
        return Err(invalid("q", "has no words to search for"));
    }
    if terms.len() > MAX_TERMS {
        return Err(invalid("q", format!("has at most {MAX_TERMS} words")));
    }
    Ok((text.to_owned(), terms))
}

enum Bound {
    Start,
    End,
}

/// `value` as ms since the epoch: RFC 3339, or a date (its first or last
/// millisecond in UTC, for `from` and `to`).
fn time_bound(field: &'static str, value: &str, bound: Bound) -> Result<Option<i64>, Invalid> {
    if value.is_empty() {
        return Ok(None);
    }
    let bad = || invalid(field, "is an RFC 3339 time or a YYYY-MM-DD date");
    if let Ok(time) = chrono::DateTime::parse_from_rfc3339(value) {
        return Ok(Some(time.timestamp_millis()));
    }
    let date = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").map_err(|_| bad())?;
    let start = date
        .and_hms_opt(0, 0, 0)
        .ok_or_else(bad)?
        .and_utc()
        .timestamp_millis();
    Ok(Some(match bound {
        Bound::Start => start,
        Bound::End => start + 86_400_000 - 1,
    }))
}

/// Whether `word` (lowercased) is what `term` asks for: the term itself,
/// within its fuzziness, or, for the last term, starting with it.
pub fn matches(word: &str, term: &str, prefix: bool) -> bool {
    word == term
        || (prefix && word.starts_with(term))
        || distance(word, term, usize::from(fuzziness(term))).is_some()
}

/// How many edits apart `a` and `b` are (insertions, deletions,
/// substitutions and transpositions of neighbours, each costing one), if
/// no more than `max`.
pub fn distance(a: &str, b: &str, max: usize) -> Option<usize> {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len().abs_diff(b.len()) > max {
        return None;
    }
    // Optimal string alignment over three rows.
    let mut before: Vec<usize> = Vec::new();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for i in 1..=a.len() {
        let mut row = vec![i; b.len() + 1];
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (previous[j] + 1)
                .min(row[j - 1] + 1)
                .min(previous[j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(before[j - 2] + 1);
            }
            row[j] = best;
        }
        if row.iter().min().is_some_and(|&m| m > max) {
            return None;
        }
        before = std::mem::replace(&mut previous, row);
    }
    Some(previous[b.len()]).filter(|&d| d <= max)
}

/// Longest passage of a long field a highlight shows, in characters.
pub const PASSAGE_CHARS: usize = 200;

/// `text` with the words `terms` ask for in `<mark>…</mark>`, HTML-escaped;
/// a long text is cut to the passage around its first match. `None` when
/// nothing in it matches.
pub fn highlight(text: &str, terms: &[String]) -> Option<String> {
    let last = terms.len().saturating_sub(1);
    let mut marks: Vec<(usize, usize)> = Vec::new();
    let mut start = None;
    for (at, c) in text
        .char_indices()
        .chain(std::iter::once((text.len(), ' ')))
    {
        match (c.is_alphanumeric(), start) {
            (true, None) => start = Some(at),
            (false, Some(from)) => {
                let word = text[from..at].to_lowercase();
                if terms
                    .iter()
                    .enumerate()
                    .any(|(n, term)| matches(&word, term, n == last))
                {
                    marks.push((from, at));
                }
                start = None;
            }
            _ => {}
        }
    }
    let first = marks.first()?.0;
    // The passage: from a little before the first match, on a char
    // boundary, for PASSAGE_CHARS characters.
    let (from, to) = if text.chars().count() <= PASSAGE_CHARS {
        (0, text.len())
    } else {
        let lead = text[..first]
            .char_indices()
            .rev()
            .nth(PASSAGE_CHARS / 4)
            .map_or(0, |(at, _)| at);
        let to = text[lead..]
            .char_indices()
            .nth(PASSAGE_CHARS)
            .map_or(text.len(), |(at, _)| lead + at);
        (lead, to)
    };
    let mut out = String::with_capacity(to - from + marks.len() * 13 + 2);
    if from > 0 {
        out.push('…');
    }
    let mut at = from;
    for &(start, end) in marks.iter().filter(|(s, e)| *s >= from && *e <= to) {
        escape_into(&mut out, &text[at..start]);
        out.push_str("<mark>");
        escape_into(&mut out, &text[start..end]);
        out.push_str("</mark>");
        at = end;
    }
    escape_into(&mut out, &text[at..to]);
    if to < text.len() {
        out.push('…');
    }
    Some(out)
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> CursorKey {
        CursorKey::new(b"test")
    }

    fn parse(query: &str) -> Result<SearchQuery, Invalid> {
        SearchQuery::parse(
            &SearchParams {
                query,
                ..SearchParams::default()
            },
            &key(),
        )
    }

    #[test]
    fn query_syntax_is_only_words() {
        let query = parse("  title:Rust AND (async* \"tokio\" -x  ").unwrap();
        assert_eq!(query.terms, ["title", "rust", "and", "async", "tokio", "x"]);
        assert_eq!(parse("*:* ()").unwrap_err().field, "q");
        assert_eq!(parse("").unwrap_err().field, "q");
        assert_eq!(parse(&"a".repeat(10_000)).unwrap_err().field, "q");
        assert_eq!(parse("a b c d e f g h i j k").unwrap_err().field, "q");
    }

    #[test]
    fn fuzziness_grows_with_length_and_the_last_word_is_a_prefix() {
        assert!(matches("search", "serch", false));
        assert!(matches("search", "saerch", false));
        assert!(matches("cat", "car", false));
        assert!(!matches("at", "an", false));
        assert!(matches("searching", "sear", true));
        // A prefix is taken as typed, as OpenSearch's `bool_prefix` does.
        assert!(!matches("searching", "saer", true));
        assert!(!matches("searching", "sear", false));
        assert!(!matches("research", "sear", true));
    }

    #[test]
    fn filters_dates_sizes_and_cursors_are_checked() {
        let mut params = SearchParams {
            query: "x",
            kind: "comment",
            ..SearchParams::default()
        };
        assert_eq!(
            SearchQuery::parse(&params, &key()).unwrap_err().field,
            "kind"
        );
        params.kind = "post";
        params.created_from = "yesterday";
        assert_eq!(
            SearchQuery::parse(&params, &key()).unwrap_err().field,
            "from"
        );
        params.created_from = "2026-12-02";
        params.created_to = "2026-12-01";
        assert_eq!(
            SearchQuery::parse(&params, &key()).unwrap_err().field,
            "from"
        );
        params.created_to = "2026-12-02";
        let query = SearchQuery::parse(&params, &key()).unwrap();
        assert_eq!(
            query.filters.to_ms.unwrap() - query.filters.from_ms.unwrap(),
            86_399_999
        );
        params.size = 101;
        assert_eq!(
            SearchQuery::parse(&params, &key()).unwrap_err().field,
            "size"
        );
        params.size = 100;
        params.cursor = "not-a-cursor";
        assert_eq!(
            SearchQuery::parse(&params, &key()).unwrap_err().field,
            "cursor"
        );
        let deep = Cursor {
            snapshot: "s".into(),
            depth: 950,
            last: SortKey {
                score: 1.0,
                created_at_ms: 0,
                key: "post:1".into(),
            },
        }
        .encode(&key());
        params.cursor = &deep;
        let error = SearchQuery::parse(&params, &key()).unwrap_err();
        assert_eq!(error.field, "cursor");
        assert!(error.reason.contains("1000"), "{error}");
        // Signed by another key, or its payload changed: not ours.
        assert!(Cursor::decode(&deep, &CursorKey::new(b"another")).is_err());
        let (payload, tag) = deep.split_once('.').unwrap();
        let forged = format!("{}A.{tag}", &payload[..payload.len() - 1]);
        assert!(Cursor::decode(&forged, &key()).is_err());
        params.size = 50;
        assert_eq!(
            SearchQuery::parse(&params, &key())
                .unwrap()
                .after
                .unwrap()
                .depth,
            950
        );
    }

    #[test]
    fn highlights_mark_matches_escape_the_rest_and_cut_long_text() {
        let terms = vec!["serch".to_owned(), "eng".to_owned()];
        assert_eq!(
            highlight("<b>Search</b> & engines", &terms).unwrap(),
            "&lt;b&gt;<mark>Search</mark>&lt;/b&gt; &amp; <mark>engines</mark>"
        );
        assert_eq!(highlight("nothing here", &terms), None);
        let long = format!("{} search {}", "word ".repeat(200), "tail ".repeat(200));
        let passage = highlight(&long, &terms).unwrap();
        assert!(
            passage.starts_with('…') && passage.ends_with('…'),
            "{passage}"
        );
        assert!(passage.contains("<mark>search</mark>"));
        assert!(passage.chars().count() < PASSAGE_CHARS + 20);
    }

    #[test]
    fn sort_keys_order_by_score_then_age_then_key() {
        let key = |score, created_at_ms, key: &str| SortKey {
            score,
            created_at_ms,
            key: key.into(),
        };
        assert!(key(1.0, 0, "a").is_after(&key(2.0, 0, "a")));
        assert!(key(1.0, 5, "a").is_after(&key(1.0, 4, "z")));
        assert!(key(1.0, 5, "b").is_after(&key(1.0, 5, "a")));
        assert!(!key(1.0, 5, "a").is_after(&key(1.0, 5, "a")));
    }
}
