//! The users service's domain events: what changed, as facts.
//!
//! Each event belongs to one aggregate (a user, a post or a comment) and is
//! published to that aggregate's topic with the aggregate id as key. The
//! payload is JSON and never contains a password or its hash.

use serde::{Deserialize, Serialize};

pub const USERS_TOPIC: &str = "users.events";
pub const POSTS_TOPIC: &str = "posts.events";

/// Payload schema version; bumped when a payload changes incompatibly.
pub const SCHEMA_VERSION: i32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateType {
    User,
    Post,
    Comment,
}

impl AggregateType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Post => "post",
            Self::Comment => "comment",
        }
    }

    pub fn topic(self) -> &'static str {
        match self {
            Self::User => USERS_TOPIC,
            Self::Post | Self::Comment => POSTS_TOPIC,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    pub id: i64,
    pub username: String,
    pub email: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deleted {
    pub id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostState {
    pub id: i64,
    pub title: String,
    pub content: String,
    pub author_id: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommentState {
    pub id: i64,
    pub post_id: i64,
    pub author_id: i64,
    pub content: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DomainEvent {
    UserCreated(UserState),
    UserUpdated(UserState),
    UserDeleted(Deleted),
    PostCreated(PostState),
    PostUpdated(PostState),
    PostDeleted(Deleted),
    CommentAdded(CommentState),
    CommentUpdated(CommentState),
    CommentDeleted(Deleted),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("unknown event type {0:?}")]
    UnknownType(String),
    #[error("malformed {event_type} payload: {source}")]
    Payload {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

impl DomainEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            Self::UserCreated(_) => "UserCreated",
            Self::UserUpdated(_) => "UserUpdated",
            Self::UserDeleted(_) => "UserDeleted",
            Self::PostCreated(_) => "PostCreated",
            Self::PostUpdated(_) => "PostUpdated",
            Self::PostDeleted(_) => "PostDeleted",
            Self::CommentAdded(_) => "CommentAdded",
            Self::CommentUpdated(_) => "CommentUpdated",
            Self::CommentDeleted(_) => "CommentDeleted",
        }
    }

    pub fn aggregate(&self) -> (AggregateType, i64) {
        match self {
            Self::UserCreated(s) | Self::UserUpdated(s) => (AggregateType::User, s.id),
            Self::UserDeleted(d) => (AggregateType::User, d.id),
            Self::PostCreated(s) | Self::PostUpdated(s) => (AggregateType::Post, s.id),
            Self::PostDeleted(d) => (AggregateType::Post, d.id),
            Self::CommentAdded(s) | Self::CommentUpdated(s) => (AggregateType::Comment, s.id),
            Self::CommentDeleted(d) => (AggregateType::Comment, d.id),
        }
    }

    /// The JSON payload.
    pub fn payload(&self) -> String {
        let value = match self {
            Self::UserCreated(s) | Self::UserUpdated(s) => serde_json::to_string(s),
            Self::PostCreated(s) | Self::PostUpdated(s) => serde_json::to_string(s),
            Self::CommentAdded(s) | Self::CommentUpdated(s) => serde_json::to_string(s),
            Self::UserDeleted(d) | Self::PostDeleted(d) | Self::CommentDeleted(d) => {
                serde_json::to_string(d)
            }
        };
        // Plain structs of strings and integers always serialise.
        value.unwrap_or_default()
    }

    pub fn decode(event_type: &str, payload: &str) -> Result<Self, DecodeError> {
        fn parse<T: serde::de::DeserializeOwned>(t: &str, p: &str) -> Result<T, DecodeError> {
            serde_json::from_str(p).map_err(|source| DecodeError::Payload {
                event_type: t.to_owned(),
                source,
            })
        }
        Ok(match event_type {
            "UserCreated" => Self::UserCreated(parse(event_type, payload)?),
            "UserUpdated" => Self::UserUpdated(parse(event_type, payload)?),
            "UserDeleted" => Self::UserDeleted(parse(event_type, payload)?),
            "PostCreated" => Self::PostCreated(parse(event_type, payload)?),
            "PostUpdated" => Self::PostUpdated(parse(event_type, payload)?),
            "PostDeleted" => Self::PostDeleted(parse(event_type, payload)?),
            "CommentAdded" => Self::CommentAdded(parse(event_type, payload)?),
            "CommentUpdated" => Self::CommentUpdated(parse(event_type, payload)?),
            "CommentDeleted" => Self::CommentDeleted(parse(event_type, payload)?),
            other => return Err(DecodeError::UnknownType(other.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_round_trips_through_its_payload() {
        let events = [
            DomainEvent::UserCreated(UserState {
                id: 1,
                username: "ann".into(),
                email: "a@b.co".into(),
            }),
            DomainEvent::UserDeleted(Deleted { id: 1 }),
            DomainEvent::PostUpdated(PostState {
                id: 2,
                title: "t".into(),
                content: "c".into(),
                author_id: 1,
            }),
            DomainEvent::CommentAdded(CommentState {
                id: 3,
                post_id: 2,
                author_id: 1,
                content: "hi".into(),
            }),
        ];
        for event in events {
            let decoded = DomainEvent::decode(event.event_type(), &event.payload()).unwrap();
            assert_eq!(decoded, event);
        }
    }

    #[test]
    fn user_payloads_carry_no_secrets() {
        let event = DomainEvent::UserCreated(UserState {
            id: 1,
            username: "ann".into(),
            email: "a@b.co".into(),
        });
        let payload = event.payload();
        assert!(
            !payload.contains("password") && !payload.contains("hash"),
            "{payload}"
        );
    }

    #[test]
    fn comments_go_to_the_posts_topic() {
        let event = DomainEvent::CommentDeleted(Deleted { id: 9 });
        assert_eq!(event.aggregate().0.topic(), POSTS_TOPIC);
        assert!(DomainEvent::decode("Nope", "{}").is_err());
        assert!(DomainEvent::decode("UserDeleted", "{").is_err());
    }
}
