//! Notifications from the users service's events, read with a consumer
//! group from `users.events` and `posts.events`.
//!
//! - `UserCreated` → a welcome notification for the new user;
//! - `UserDeleted` → the user's notifications are forgotten;
//! - `PostCreated` → who wrote the post is kept (`PostDeleted` forgets it);
//! - `CommentAdded` → the post's author is told, unless they commented on
//!   their own post. A comment can arrive before its post (their events
//!   have different keys, so different partitions); it is kept and told
//!   when the post arrives.
//! - `UserMentioned` (chat) → the mentioned user, named by username and
//!   looked up in the users service (not for mentioning oneself; a name
//!   no one has is skipped). While the users service cannot answer, the
//!   event waits, uncommitted, like one the store cannot take.
//! - `FileUploaded` (storage) → the file's owner.
//!
//! Each event is applied once: its id is recorded in the transaction that
//! stores its effect, so a redelivery changes nothing, and its offset is
//! committed only after that transaction. An event of a type this service
//! does not use, or whose payload does not decode, is counted in
//! `notifications_events_skipped_total{reason}` and committed: it never
//! stops the consumer or holds up its partition. A store that fails is
//! retried, with backoff, without committing.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use common::events::{Delivery, EventBus, Subscription};

use crate::App;
use crate::store::{Kind, NewNotification, Topic};
use crate::users::Lookup;

pub const USERS_TOPIC: &str = "users.events";
pub const POSTS_TOPIC: &str = "posts.events";
pub const CHAT_TOPIC: &str = "chat.events";
pub const STORAGE_TOPIC: &str = "storage.events";

/// The longest comment excerpt a notification quotes, in characters.
const EXCERPT_CHARS: usize = 140;

#[derive(Deserialize)]
struct UserCreated {
    id: i64,
    username: String,
}

#[derive(Deserialize)]
struct Deleted {
    id: i64,
}

#[derive(Deserialize)]
struct PostCreated {
    id: i64,
    title: String,
    author_id: i64,
}

#[derive(Deserialize)]
struct UserMentioned {
    room: String,
    mentioned_username: String,
    by_user_id: i64,
    by_username: String,
    excerpt: String,
}

#[derive(Deserialize)]
struct FileUploaded {
    owner_id: i64,
    name: String,
    size: u64,
}

#[derive(Deserialize)]
struct CommentAdded {
    post_id: i64,
    author_id: i64,
    content: String,
}

/// What one event asks for.
enum Effect {
    Notify(Vec<NewNotification>),
    Forget(i64),
    Post {
        post: i64,
        author: i64,
        title: String,
    },
    PostGone(i64),
    Comment {
        post: i64,
        commenter: i64,
        excerpt: String,
    },
    Mention(UserMentioned),
    Skip(&'static str),
}

fn excerpt(content: &str) -> String {
    let mut chars = content.chars();
    let mut excerpt: String = chars.by_ref().take(EXCERPT_CHARS).collect();
    if chars.next().is_some() {
        excerpt.push('…');
    }
    excerpt
}

fn effect(delivery: &Delivery) -> Effect {
    let event = &delivery.event;
    match event.event_type.as_str() {
        "UserCreated" => match serde_json::from_slice::<UserCreated>(&event.data) {
            Ok(user) => Effect::Notify(vec![NewNotification {
                user_id: user.id,
                kind: Kind::Info,
                topic: Topic::Welcome,
                title: "Welcome".into(),
                message: format!("Welcome, {}! Your account is ready.", user.username),
            }]),
            Err(_) => Effect::Skip("malformed"),
        },
        "UserDeleted" => match serde_json::from_slice::<Deleted>(&event.data) {
            Ok(user) => Effect::Forget(user.id),
            Err(_) => Effect::Skip("malformed"),
        },
        "PostCreated" => match serde_json::from_slice::<PostCreated>(&event.data) {
            Ok(post) => Effect::Post {
                post: post.id,
                author: post.author_id,
                title: post.title,
            },
            Err(_) => Effect::Skip("malformed"),
        },
        "PostDeleted" => match serde_json::from_slice::<Deleted>(&event.data) {
            Ok(post) => Effect::PostGone(post.id),
            Err(_) => Effect::Skip("malformed"),
        },
        "CommentAdded" => match serde_json::from_slice::<CommentAdded>(&event.data) {
            Ok(comment) => Effect::Comment {
                post: comment.post_id,
                commenter: comment.author_id,
                excerpt: excerpt(&comment.content),
            },
            Err(_) => Effect::Skip("malformed"),
        },
        "FileUploaded" => match serde_json::from_slice::<FileUploaded>(&event.data) {
            Ok(file) => Effect::Notify(vec![NewNotification {
                user_id: file.owner_id,
                kind: Kind::Info,
                topic: Topic::File,
                title: "Upload complete".into(),
                message: format!(
                    "\"{}\" ({}) is stored.",
                    excerpt(&file.name),
                    size(file.size)
                ),
            }]),
            Err(_) => Effect::Skip("malformed"),
        },
        "UserMentioned" => match serde_json::from_slice::<UserMentioned>(&event.data) {
            Ok(mention) => Effect::Mention(mention),
            Err(_) => Effect::Skip("malformed"),
        },
        _ => Effect::Skip("unknown_type"),
    }
}

/// `size` bytes for people: 512 B, 1.5 KiB, 2.0 MiB.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// What a mentioned user is told.
fn mention_notice(user: i64, mention: &UserMentioned) -> NewNotification {
    NewNotification {
        user_id: user,
        kind: Kind::Info,
        topic: Topic::Mention,
        title: format!("{} mentioned you in {}", mention.by_username, mention.room),
        message: excerpt(&mention.excerpt),
    }
}

/// Consumes `topic` until `stop`.
pub async fn run(
    app: Arc<App>,
    bus: Arc<dyn EventBus>,
    topic: &'static str,
    group: String,
    stop: CancellationToken,
) {
    let Some(mut subscription) =
        common::events::subscribe_until_stopped(&*bus, topic, &group, &stop).await
    else {
        return;
    };
    loop {
        let delivery = tokio::select! {
            () = stop.cancelled() => return,
            next = subscription.next() => next,
        };
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(error) => {
                // A message that is not a CloudEvent was skipped by the bus.
                metrics::counter!("notifications_events_skipped_total", "reason" => "not_an_event")
                    .increment(1);
                tracing::warn!(error = %common::exit::chain(&error), "skipped a message");
                continue;
            }
        };
        if !apply(&app, &delivery, &stop).await {
            return;
        }
        commit(&mut *subscription, &delivery, &stop).await;
    }
}

/// Applies `delivery`, retrying the store until it works; false if told to
/// stop first (the event is then redelivered to whoever consumes next).
async fn apply(app: &App, delivery: &Delivery, stop: &CancellationToken) -> bool {
    let event = &delivery.event;
    let effect = effect(delivery);
    let mut pause = Duration::from_millis(100);
    loop {
        let applied = match &effect {
            Effect::Skip(reason) => {
                metrics::counter!("notifications_events_skipped_total", "reason" => *reason)
                    .increment(1);
                tracing::debug!(event_type = event.event_type, reason, "skipped an event");
                return true;
            }
            Effect::Notify(new) => app.store.apply_event(&event.id, new).await,
            Effect::Mention(mention) => match app.users.lookup(&mention.mentioned_username).await {
                Lookup::Found(user) => {
                    let new = if user == mention.by_user_id {
                        Vec::new()
                    } else {
                        vec![mention_notice(user, mention)]
                    };
                    app.store.apply_event(&event.id, &new).await
                }
                Lookup::Unknown => {
                    metrics::counter!("notifications_events_skipped_total", "reason" => "unknown_user")
                        .increment(1);
                    return true;
                }
                Lookup::Unavailable(error) => {
                    tracing::warn!(
                        error,
                        event = event.id,
                        "cannot look a mentioned user up yet"
                    );
                    tokio::select! {
                        () = stop.cancelled() => return false,
                        () = tokio::time::sleep(pause) => {}
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            Effect::Forget(user) => app.store.forget_user(&event.id, *user).await.map(|_| None),
            Effect::Post {
                post,
                author,
                title,
            } => {
                app.store
                    .post_created(&event.id, *post, *author, title)
                    .await
            }
            Effect::PostGone(post) => app.store.post_deleted(&event.id, *post).await.map(|_| None),
            Effect::Comment {
                post,
                commenter,
                excerpt,
            } => {
                app.store
                    .comment_added(&event.id, *post, *commenter, excerpt)
                    .await
            }
        };
        let applied = match applied {
            Ok(Some(stored)) => {
                app.delivered(&stored).await;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(error) => Err(error),
        };
        match applied {
            Ok(()) => {
                metrics::counter!("notifications_events_consumed_total", "type" => event.event_type.clone())
                    .increment(1);
                record_lag(&event.time);
                return true;
            }
            Err(error) => {
                tracing::warn!(error = %common::exit::chain(&error), event = event.id, "cannot apply an event yet");
                tokio::select! {
                    () = stop.cancelled() => return false,
                    () = tokio::time::sleep(pause) => {}
                }
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn commit(
    subscription: &mut dyn Subscription,
    delivery: &Delivery,
    stop: &CancellationToken,
) {
    // A failed commit only means a redelivery later, which changes nothing.
    if let Err(error) = subscription.commit(delivery).await
        && !stop.is_cancelled()
    {
        tracing::warn!(error = %common::exit::chain(&error), "cannot commit an offset");
    }
}

/// How far behind the consumer is: from the event's time to its effect
/// being stored (`notifications_event_lag_seconds`). The bus does not
/// expose partition offsets, and this is what a user feels.
fn record_lag(time: &str) {
    if let Ok(at) = humantime::parse_rfc3339_weak(time)
        && let Ok(lag) = std::time::SystemTime::now().duration_since(at)
    {
        metrics::histogram!("notifications_event_lag_seconds").record(lag.as_secs_f64());
    }
}
