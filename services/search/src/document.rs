//! What the index holds, and how the users service's events change it.
//!
//! One document per user (its username; never its email) and one per post
//! (title, content, the `#hashtags` in them as tags, author, creation
//! time). Comments are not indexed. Each change carries its aggregate's
//! version: an index keeps a change only if it is newer than what it has
//! for that document, and a delete leaves a tombstone with its version, so
//! a late update cannot bring a deleted document back.

use std::fmt;

use serde::Deserialize;

/// At most this many tags are kept per post.
pub const MAX_TAGS: usize = 20;
/// A tag is at most this many characters (longer `#words` are not tags).
pub const MAX_TAG_CHARS: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    User,
    Post,
}

impl Kind {
    pub const ALL: [Kind; 2] = [Kind::User, Kind::Post];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Post => "post",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == value)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A document's identity in every backend: `post:42`, `user:7`.
pub fn key(kind: Kind, id: u64) -> String {
    format!("{kind}:{id}")
}

/// A searchable user or post.
#[derive(Clone, Debug, PartialEq)]
pub struct Document {
    pub kind: Kind,
    pub id: u64,
    /// The aggregate version this state is from.
    pub version: u64,
    /// A post's title; a user's username.
    pub title: String,
    /// A post's content; empty for a user.
    pub content: String,
    pub tags: Vec<String>,
    /// A post's author; 0 for a user.
    pub author_id: u64,
    /// Milliseconds since the epoch. An update does not know it: the index
    /// keeps the one it has (`None` until the document is stored).
    pub created_at_ms: Option<i64>,
}

impl Document {
    pub fn key(&self) -> String {
        key(self.kind, self.id)
    }
}

/// One change to the index, in the order its events happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// Creates or replaces the document, if `version` is newer.
    Upsert(Document),
    /// Removes the document, leaving a tombstone at `version`. A deleted
    /// user also takes their posts, now and whenever one arrives later.
    Delete { kind: Kind, id: u64, version: u64 },
}

impl Change {
    pub fn kind(&self) -> Kind {
        match self {
            Self::Upsert(doc) => doc.kind,
            Self::Delete { kind, .. } => *kind,
        }
    }

    pub fn id(&self) -> u64 {
        match self {
            Self::Upsert(doc) => doc.id,
            Self::Delete { id, .. } => *id,
        }
    }

    pub fn version(&self) -> u64 {
        match self {
            Self::Upsert(doc) => doc.version,
            Self::Delete { version, .. } => *version,
        }
    }

    pub fn key(&self) -> String {
        key(self.kind(), self.id())
    }
}

/// Why an event changes nothing here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Skip {
    /// Comments and events of other services.
    NotIndexed,
    Malformed,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotIndexed => "not_indexed",
            Self::Malformed => "malformed",
        }
    }
}

#[derive(Deserialize)]
struct UserState {
    id: u64,
    username: String,
    // The email is in the payload and deliberately not read: it is never
    // indexed, highlighted or returned.
}

#[derive(Deserialize)]
struct PostState {
    id: u64,
    title: String,
    content: String,
    author_id: u64,
}

#[derive(Deserialize)]
struct Deleted {
    id: u64,
}

/// The change an event of `event_type` with JSON `payload` makes, at
/// aggregate `version`, having happened at `at_ms`.
pub fn change(event_type: &str, payload: &[u8], version: u64, at_ms: i64) -> Result<Change, Skip> {
    fn parse<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, Skip> {
        serde_json::from_slice(payload).map_err(|_| Skip::Malformed)
    }
    let created = |created: bool| created.then_some(at_ms);
    Ok(match event_type {
        "UserCreated" | "UserUpdated" => {
            let user: UserState = parse(payload)?;
            Change::Upsert(Document {
                kind: Kind::User,
                id: user.id,
                version,
                title: user.username,
                content: String::new(),
                tags: Vec::new(),
                author_id: 0,
                created_at_ms: created(event_type == "UserCreated"),
            })
        }
        "PostCreated" | "PostUpdated" => {
            let post: PostState = parse(payload)?;
            let tags = hashtags(&[&post.title, &post.content]);
            Change::Upsert(Document {
                kind: Kind::Post,
                id: post.id,
                version,
                title: post.title,
                content: post.content,
                tags,
                author_id: post.author_id,
                created_at_ms: created(event_type == "PostCreated"),
            })
        }
        "UserDeleted" | "PostDeleted" => {
            let deleted: Deleted = parse(payload)?;
            let kind = if event_type == "UserDeleted" {
                Kind::User
            } else {
                Kind::Post
            };
            Change::Delete {
                kind,
                id: deleted.id,
                version,
            }
        }
        _ => return Err(Skip::NotIndexed),
    })
}

/// An RFC 3339 time (an event's) as ms since the epoch.
pub fn time_ms(time: &str) -> Option<i64> {
    let at = humantime::parse_rfc3339_weak(time).ok()?;
    let since = at.duration_since(std::time::UNIX_EPOCH).ok()?;
    i64::try_from(since.as_millis()).ok()
}

/// The `#hashtags` in `texts`, lowercased, each once, in order of first
/// appearance: a tag is `#` then letters, digits, `_` or `-`.
pub fn hashtags(texts: &[&str]) -> Vec<String> {
    let mut tags: Vec<String> = Vec::new();
    for text in texts {
        let mut rest = *text;
        while let Some(at) = rest.find('#') {
            // A `#` inside a word (`C#`, `a#b`) does not start a tag.
            let starts_word = rest[..at]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric());
            rest = &rest[at + 1..];
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(rest.len());
            let word = rest[..end].trim_end_matches('-');
            rest = &rest[end..];
            if !starts_word || word.is_empty() || word.chars().count() > MAX_TAG_CHARS {
                continue;
            }
            let tag = word.to_lowercase();
            if !tags.contains(&tag) {
                tags.push(tag);
                if tags.len() == MAX_TAGS {
                    return tags;
                }
            }
        }
    }
    tags
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashtags_are_words_after_a_hash_lowercased_and_each_once() {
        assert_eq!(
            hashtags(&[
                "Learning #Rust and #tokio",
                "more #rust, #web-dev! C# a#b #"
            ]),
            ["rust", "tokio", "web-dev"]
        );
        let many: String = (0..30).map(|i| format!("#t{i} ")).collect();
        assert_eq!(hashtags(&[&many]).len(), MAX_TAGS);
        assert!(hashtags(&[&format!("#{}", "x".repeat(51))]).is_empty());
    }

    #[test]
    fn a_users_email_never_reaches_the_document() {
        let payload = br#"{"id":7,"username":"ada","email":"ada@example.com"}"#;
        let Ok(Change::Upsert(doc)) = change("UserCreated", payload, 1, 5) else {
            panic!("a user is indexed");
        };
        assert_eq!((doc.title.as_str(), doc.content.as_str()), ("ada", ""));
        assert_eq!(doc.created_at_ms, Some(5));
        assert!(!format!("{doc:?}").contains("example.com"));
    }

    #[test]
    fn updates_keep_the_creation_time_and_deletes_name_their_kind() {
        let payload = br##"{"id":3,"title":"t","content":"#a","author_id":7}"##;
        let Ok(Change::Upsert(doc)) = change("PostUpdated", payload, 4, 5) else {
            panic!("a post is indexed");
        };
        assert_eq!(
            (doc.created_at_ms, doc.tags.as_slice()),
            (None, &["a".to_owned()][..])
        );
        assert_eq!(
            change("UserDeleted", br#"{"id":7}"#, 9, 5),
            Ok(Change::Delete {
                kind: Kind::User,
                id: 7,
                version: 9
            })
        );
        assert_eq!(change("CommentAdded", b"{}", 1, 5), Err(Skip::NotIndexed));
        assert_eq!(change("PostCreated", b"{", 1, 5), Err(Skip::Malformed));
    }
}
