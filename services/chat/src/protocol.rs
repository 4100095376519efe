//! The WebSocket protocol: JSON text frames, one object each, tagged by
//! `type`. See the README's chat section for the full exchange.
//!
//! Client → server: `join` (optionally with the last position seen, to
//! recover what was missed), `leave`, `send`, `typing`.
//! Server → client: `joined`, `message`, `ack`, `presence`, `typing`,
//! `left`, `error`.

use serde::{Deserialize, Serialize};

/// Longest room name; names are `[A-Za-z0-9_.:-]`.
pub const MAX_ROOM_LEN: usize = 64;

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ClientFrame {
    Join {
        room: String,
        /// The last message the client saw in this room, from an earlier
        /// connection.
        #[serde(default)]
        since: Option<Position>,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        content: String,
        /// Echoed in the `ack`, so the client can match it to its send.
        #[serde(default)]
        client_id: Option<String>,
    },
    Typing {
        room: String,
    },
}

/// Where a client is in a room's stream. Offsets grow by one per message
/// within an epoch; a new epoch means the history was lost (restart,
/// expiry) and offsets started again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// A user as others see them: the authenticated identity, never what a
/// client claims.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    pub id: u64,
    pub name: String,
}

/// A message in a room: its content and author, with the id and position
/// the server assigns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub room: String,
    pub id: String,
    pub offset: u64,
    pub epoch: String,
    pub user: Member,
    pub content: String,
    /// Usernames mentioned with `@name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// Unix milliseconds when the server accepted it.
    pub sent_at: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PresenceAction {
    Join,
    Leave,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Joined {
        room: &'a str,
        /// The room's current position: the next message has `offset + 1`.
        position: Position,
        /// Whether everything after `since` is in `missed`; false when the
        /// epoch changed or the history no longer reaches back that far, so
        /// the client should reload.
        recovered: bool,
        missed: &'a [ChatMessage],
        /// How many users are in the room.
        members: usize,
        /// Who they are, unless the room is large (then empty: ask
        /// `GET /rooms/{room}/presence`).
        presence: &'a [Member],
    },
    Message(&'a ChatMessage),
    Ack {
        room: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_id: Option<&'a str>,
        id: &'a str,
        offset: u64,
    },
    Presence {
        room: &'a str,
        user: &'a Member,
        action: PresenceAction,
    },
    Typing {
        room: &'a str,
        user: &'a Member,
    },
    Left {
        room: &'a str,
    },
    Error {
        code: &'a str,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        room: Option<&'a str>,
    },
}

impl ServerFrame<'_> {
    pub fn to_text(&self) -> String {
        // Serialising these plain structs cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// What [`valid_room`] accepts, for error messages.
pub const ROOM_RULES: &str = "room names are 1 to 64 letters, digits, '_', '.', ':' or '-'";

pub fn valid_room(room: &str) -> bool {
    !room.is_empty()
        && room.len() <= MAX_ROOM_LEN
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// `@name` mentions in a message, each once, in order of appearance. Names
/// follow the users service's rules (letters, digits, `_ . -`, starting
/// with a letter or digit); trailing punctuation is not part of a name. At
/// most `max` are taken: each becomes an event and a notification, and one
/// message must not fan out into a thousand.
pub fn mentions(content: &str, max: usize) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    let bytes = content.as_bytes();
    let mut i = 0;
    while i < bytes.len() && found.len() < max {
        let preceded_by_word =
            i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'@');
        if bytes[i] == b'@' && !preceded_by_word {
            let start = i + 1;
            let mut end = start;
            while end < bytes.len()
                && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b'.' | b'-'))
            {
                end += 1;
            }
            let name = content[start..end].trim_end_matches(['.', '-']);
            if (3..=32).contains(&name.len())
                && name.starts_with(|c: char| c.is_ascii_alphanumeric())
                && !found.iter().any(|f| f == name)
            {
                found.push(name.to_owned());
            }
            i = end;
        } else {
            i += 1;
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_names_after_a_free_standing_at() {
        assert_eq!(
            mentions(
                "hi @alice and @bob.smith, mail me at x@example.com. @alice again @al",
                10
            ),
            ["alice", "bob.smith"]
        );
        assert_eq!(mentions("end of sentence @carol.", 10), ["carol"]);
        assert!(mentions("@ @@ no", 10).is_empty());
    }

    #[test]
    fn a_message_mentions_at_most_the_cap() {
        let many: String = (0..1000).map(|i| format!("@user{i:04} ")).collect();
        let found = mentions(&many, 10);
        assert_eq!(found.len(), 10);
        assert_eq!(found[0], "user0000");
        assert_eq!(found[9], "user0009");
    }

    #[test]
    fn client_frames_reject_unknown_types_and_fields() {
        let ok: ClientFrame =
            serde_json::from_str(r#"{"type":"join","room":"r1","since":{"offset":3,"epoch":"e"}}"#)
                .unwrap();
        assert!(matches!(ok, ClientFrame::Join { since: Some(_), .. }));
        assert!(serde_json::from_str::<ClientFrame>(r#"{"type":"explode"}"#).is_err());
        assert!(
            serde_json::from_str::<ClientFrame>(r#"{"type":"leave","room":"r","user":"x"}"#)
                .is_err()
        );
    }

    #[test]
    fn room_names_are_short_and_plain() {
        assert!(valid_room("general"));
        assert!(valid_room("team:42.dev-ops_x"));
        assert!(!valid_room(""));
        assert!(!valid_room("a b"));
        assert!(!valid_room(&"r".repeat(65)));
    }
}
