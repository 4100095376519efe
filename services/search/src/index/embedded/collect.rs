//! One pass over the matches: the page after the cursor, the total, and
//! the facet counts.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use tantivy::collector::{Collector, SegmentCollector};
use tantivy::columnar::{Column, StrColumn};
use tantivy::{DocAddress, DocId, Score, SegmentOrdinal, SegmentReader};

use super::schema::{CREATED_AT, ID, KIND, TAGS, kind_of};
use crate::document::Kind;
use crate::query::SortKey;

/// A match that may make the page.
#[derive(Clone, Debug)]
pub(super) struct Candidate {
    pub score: Score,
    pub created_at_ms: i64,
    pub kind: Kind,
    pub id: u64,
    pub address: DocAddress,
}

impl Candidate {
    pub fn sort_key(&self) -> SortKey {
        SortKey {
            score: self.score,
            created_at_ms: self.created_at_ms,
            key: crate::document::key(self.kind, self.id),
        }
    }

    /// Best first: score, then older, then key (as text, the way
    /// OpenSearch sorts a keyword).
    fn rank(&self, other: &Self) -> Ordering {
        other
            .score
            .total_cmp(&self.score)
            .then(self.created_at_ms.cmp(&other.created_at_ms))
            .then_with(|| self.kind.as_str().cmp(other.kind.as_str()))
            .then_with(|| self.id.to_string().cmp(&other.id.to_string()))
    }
}

/// Orders a heap so that its top is the worst candidate kept.
struct Worst(Candidate);

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        // A better rank is less, so the heap's top is the worst kept.
        self.0.rank(&other.0)
    }
}

pub(super) struct Ranked {
    pub size: usize,
    pub after: Option<SortKey>,
}

#[derive(Default)]
pub(super) struct Page {
    /// Best first.
    pub top: Vec<Candidate>,
    pub total: u64,
    pub kinds: HashMap<Kind, u64>,
    pub tags: HashMap<String, u64>,
}

pub(super) struct RankedSegment {
    segment: SegmentOrdinal,
    size: usize,
    after: Option<SortKey>,
    created: Column<i64>,
    kind: Column<u64>,
    id: Column<u64>,
    tags: Option<StrColumn>,
    tag_counts: Vec<u64>,
    kind_counts: [u64; 2],
    total: u64,
    heap: BinaryHeap<Worst>,
}

impl Collector for Ranked {
    type Fruit = Page;
    type Child = RankedSegment;

    fn for_segment(
        &self,
        segment: SegmentOrdinal,
        reader: &SegmentReader,
    ) -> tantivy::Result<RankedSegment> {
        let fast = reader.fast_fields();
        let tags = fast.str(TAGS)?;
        let tag_counts = vec![0; tags.as_ref().map_or(0, |t| t.num_terms())];
        Ok(RankedSegment {
            segment,
            size: self.size,
            after: self.after.clone(),
            created: fast.i64(CREATED_AT)?,
            kind: fast.u64(KIND)?,
            id: fast.u64(ID)?,
            tags,
            tag_counts,
            kind_counts: [0; 2],
            total: 0,
            heap: BinaryHeap::with_capacity(self.size + 1),
        })
    }

    fn requires_scoring(&self) -> bool {
        true
    }

    fn merge_fruits(&self, pages: Vec<Page>) -> tantivy::Result<Page> {
        let mut merged = Page::default();
        for page in pages {
            merged.top.extend(page.top);
            merged.total += page.total;
            for (kind, n) in page.kinds {
                *merged.kinds.entry(kind).or_default() += n;
            }
            for (tag, n) in page.tags {
                *merged.tags.entry(tag).or_default() += n;
            }
        }
        merged.top.sort_by(|a, b| a.rank(b));
        merged.top.truncate(self.size);
        Ok(merged)
    }
}

impl SegmentCollector for RankedSegment {
    type Fruit = Page;

    fn collect(&mut self, doc: DocId, score: Score) {
        self.total += 1;
        let code = self.kind.first(doc).unwrap_or(0);
        self.kind_counts[usize::from(code != 0)] += 1;
        if let Some(tags) = &self.tags {
            for ord in tags.term_ords(doc) {
                if let Some(count) = usize::try_from(ord)
                    .ok()
                    .and_then(|ord| self.tag_counts.get_mut(ord))
                {
                    *count += 1;
                }
            }
        }
        if self.size == 0 {
            return;
        }
        let candidate = Candidate {
            score,
            created_at_ms: self.created.first(doc).unwrap_or(0),
            kind: kind_of(code),
            id: self.id.first(doc).unwrap_or(0),
            address: DocAddress::new(self.segment, doc),
        };
        if let Some(after) = &self.after
            && !candidate.sort_key().is_after(after)
        {
            return;
        }
        if self.heap.len() < self.size {
            self.heap.push(Worst(candidate));
        } else if self
            .heap
            .peek()
            .is_some_and(|worst| candidate.rank(&worst.0) == Ordering::Less)
        {
            self.heap.pop();
            self.heap.push(Worst(candidate));
        }
    }

    fn harvest(self) -> Page {
        let mut tags = HashMap::new();
        if let Some(column) = &self.tags {
            // Only the tags that matched, read in one pass over the
            // dictionary (looking each up alone costs a block scan each).
            let (ords, counts): (Vec<u64>, Vec<u64>) = self
                .tag_counts
                .iter()
                .enumerate()
                .filter(|(_, count)| **count > 0)
                .map(|(ord, count)| (ord as u64, *count))
                .unzip();
            let mut counts = counts.into_iter();
            let read = column.dictionary().sorted_ords_to_term_cb(&ords, |bytes| {
                if let (Ok(tag), Some(count)) = (std::str::from_utf8(bytes), counts.next()) {
                    tags.insert(tag.to_owned(), count);
                }
            });
            if let Err(error) = read {
                tracing::warn!(%error, "cannot read the tags of a segment");
            }
        }
        let mut kinds = HashMap::new();
        for (code, &count) in self.kind_counts.iter().enumerate() {
            if count > 0 {
                kinds.insert(kind_of(code as u64), count);
            }
        }
        let mut top: Vec<Candidate> = self.heap.into_iter().map(|w| w.0).collect();
        top.sort_by(|a, b| a.rank(b));
        Page {
            top,
            total: self.total,
            kinds,
            tags,
        }
    }
}
