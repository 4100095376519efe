//! The store's contract on both backends: a SQLite file and a fresh
//! PostgreSQL database on the machine's server (a missing server fails
//! the test).

#![allow(clippy::unwrap_used)]

use common::db::DatabaseTimeouts;
use notifications::store::{Kind, NewNotification, Store, Topic};
use test_support::TempDir;

async fn stores(dir: &TempDir) -> Vec<(&'static str, Store)> {
    let sqlite = Store::connect(
        &dir.sqlite_url("notifications.db"),
        1,
        DatabaseTimeouts::default(),
    )
    .await
    .unwrap();
    let postgres = Store::connect(
        &test_support::backends::fresh_postgres_url("notifications").await,
        8,
        DatabaseTimeouts::default(),
    )
    .await
    .unwrap();
    vec![("sqlite", sqlite), ("postgres", postgres)]
}

fn new(user: i64, title: &str) -> NewNotification {
    NewNotification {
        user_id: user,
        kind: Kind::Warning,
        topic: Topic::Comment,
        title: title.to_owned(),
        message: format!("about {title}"),
    }
}

#[tokio::test]
async fn each_users_notifications_are_numbered_one_by_one_even_when_created_at_once() {
    let dir = TempDir::new("notifications-store");
    for (backend, store) in stores(&dir).await {
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0..20 {
            let store = store.clone();
            tasks.spawn(async move {
                store
                    .create(&new(1 + n % 2, "x"))
                    .await
                    .unwrap()
                    .unwrap()
                    .seq
            });
        }
        let mut seqs = tasks.join_all().await;
        seqs.sort_unstable();
        let expected: Vec<i64> = (1..=10).flat_map(|n| [n, n]).collect();
        assert_eq!(seqs, expected, "{backend}: 1..10 for each of two users");
        assert_eq!(store.last_seq(1).await.unwrap(), 10, "{backend}");
        let after = store.after(1, 7, 100).await.unwrap();
        let numbers: Vec<i64> = after.iter().map(|n| n.seq).collect();
        assert_eq!(numbers, [8, 9, 10], "{backend}");
        assert!(
            after
                .iter()
                .all(|n| n.user_id == 1 && n.kind == Kind::Warning)
        );
    }
}

#[tokio::test]
async fn an_event_is_applied_once_and_a_deleted_user_is_forgotten() {
    let dir = TempDir::new("notifications-store");
    for (backend, store) in stores(&dir).await {
        let first = store
            .apply_event("ev-1", &[new(5, "a"), new(6, "b")])
            .await
            .unwrap();
        assert_eq!(first.map(|n| n.len()), Some(2), "{backend}");
        assert!(
            store
                .apply_event("ev-1", &[new(5, "a"), new(6, "b")])
                .await
                .unwrap()
                .is_none(),
            "{backend}: a redelivery changes nothing"
        );
        assert_eq!(store.unread_count(5).await.unwrap(), 1, "{backend}");
        assert!(store.forget_user("ev-2", 5).await.unwrap(), "{backend}");
        assert!(!store.forget_user("ev-2", 5).await.unwrap(), "{backend}");
        assert_eq!(store.unread_count(5).await.unwrap(), 0, "{backend}");
        assert_eq!(store.last_seq(5).await.unwrap(), 0, "{backend}");
        assert_eq!(store.unread_count(6).await.unwrap(), 1, "{backend}");
    }
}

#[tokio::test]
async fn pages_go_from_newest_to_oldest_and_reads_are_the_owners_alone() {
    let dir = TempDir::new("notifications-store");
    for (backend, store) in stores(&dir).await {
        for n in 0..5 {
            store.create(&new(9, &format!("n{n}"))).await.unwrap();
        }
        let other = store.create(&new(10, "theirs")).await.unwrap().unwrap();
        let first = store.list(9, false, None, 2).await.unwrap();
        let titles: Vec<&str> = first
            .notifications
            .iter()
            .map(|n| n.title.as_str())
            .collect();
        assert_eq!(titles, ["n4", "n3"], "{backend}");
        let cursor: i64 = first.next_cursor.unwrap().parse().unwrap();
        let second = store.list(9, false, Some(cursor), 10).await.unwrap();
        assert_eq!(second.notifications.len(), 3, "{backend}");
        assert!(second.next_cursor.is_none(), "{backend}");

        assert!(store.get(9, other.id).await.unwrap().is_none(), "{backend}");
        assert!(!store.mark_read(9, other.id).await.unwrap(), "{backend}");
        assert!(!store.delete(9, other.id).await.unwrap(), "{backend}");
        let mine = &first.notifications[0];
        assert!(store.mark_read(9, mine.id).await.unwrap(), "{backend}");
        let unread = store.list(9, true, None, 10).await.unwrap();
        assert_eq!(unread.notifications.len(), 4, "{backend}");
        assert_eq!(store.mark_all_read(9).await.unwrap(), 4, "{backend}");
        assert_eq!(store.unread_count(9).await.unwrap(), 0, "{backend}");
        assert_eq!(store.unread_count(10).await.unwrap(), 1, "{backend}");
    }
}

#[tokio::test]
async fn a_comment_tells_the_posts_author_once_whichever_arrives_first() {
    let dir = TempDir::new("notifications-store");
    for (backend, store) in stores(&dir).await {
        // The post first, then a comment by someone else and one by its author.
        store.post_created("p-1", 100, 41, "Hello").await.unwrap();
        let told = store
            .comment_added("c-1", 100, 42, "nice")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(told.len(), 1, "{backend}");
        assert_eq!(told[0].user_id, 41, "{backend}");
        assert!(told[0].message.contains("Hello") && told[0].message.contains("nice"));
        assert!(
            store
                .comment_added("c-1", 100, 42, "nice")
                .await
                .unwrap()
                .is_none(),
            "{backend}: a redelivery tells no one again"
        );
        let own = store
            .comment_added("c-2", 100, 41, "thanks")
            .await
            .unwrap()
            .unwrap();
        assert!(own.is_empty(), "{backend}: not of one's own comment");

        // A comment before its post: told when the post arrives.
        let early = store
            .comment_added("c-3", 200, 43, "first!")
            .await
            .unwrap()
            .unwrap();
        assert!(early.is_empty(), "{backend}");
        let late = store
            .post_created("p-2", 200, 44, "Late")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(late.len(), 1, "{backend}");
        assert_eq!(late[0].user_id, 44, "{backend}");
        assert!(
            store
                .post_created("p-2", 200, 44, "Late")
                .await
                .unwrap()
                .is_none()
        );

        // A deleted post is forgotten: later comments on it wait for a post
        // that never comes.
        assert!(store.post_deleted("p-3", 100).await.unwrap(), "{backend}");
        let after = store
            .comment_added("c-4", 100, 42, "gone?")
            .await
            .unwrap()
            .unwrap();
        assert!(after.is_empty(), "{backend}");
        assert_eq!(store.unread_count(41).await.unwrap(), 1, "{backend}");
    }
}
