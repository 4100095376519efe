//! Contract tests for the event store and read models: the same suite runs
//! against PostgreSQL and SQLite.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use std::time::Duration;

use test_support::TempDir;
use test_support::contract;
use users::test_util::{fresh_postgres_url, stores};

use sqlx::Row;
use users::domain::{Email, Page, Slice, Username};
use users::events::{POSTS_TOPIC, USERS_TOPIC};
use users::store::{NewUser, Store, StoreError, UserChanges};

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        email: Email::parse(&format!("{name}@example.com")).unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA".into(),
    }
}

#[tokio::test]
async fn users_are_created_read_updated_and_deleted() {
    let dir = TempDir::new("users-test");
    contract(stores(&dir).await, |backend, store| async move {
        let created = store.create_user(new_user("ann"), None).await.unwrap();
        assert_eq!(created.version, 1, "{backend}");
        assert_eq!(
            store.get_user(created.id).await.unwrap(),
            created,
            "{backend}"
        );

        let changes = UserChanges {
            email: Some(Email::parse("ann@new.example.com").unwrap()),
            ..UserChanges::default()
        };
        let updated = store
            .update_user(created.id, changes, Some(1), None)
            .await
            .unwrap();
        assert_eq!(updated.version, 2, "{backend}");
        assert_eq!(updated.username, "ann");
        assert_eq!(updated.email, "ann@new.example.com");
        assert_eq!(updated.created_at, created.created_at);

        store.delete_user(created.id, None, None).await.unwrap();
        assert!(matches!(
            store.get_user(created.id).await,
            Err(StoreError::NotFound { entity: "user", .. })
        ));
        assert!(
            store.credentials("ann").await.unwrap().is_none(),
            "{backend}: credentials go with the user"
        );
        assert!(matches!(
            store.delete_user(created.id, None, None).await,
            Err(StoreError::NotFound { .. })
        ));
    })
    .await;
}

#[tokio::test]
async fn usernames_and_emails_are_unique_regardless_of_case() {
    let dir = TempDir::new("users-test");
    contract(stores(&dir).await, |backend, store| async move {
        store.create_user(new_user("bob"), None).await.unwrap();
        let mut same_name = new_user("BOB");
        same_name.email = Email::parse("other@example.com").unwrap();
        assert!(
            matches!(
                store.create_user(same_name, None).await,
                Err(StoreError::Taken { field: "username" })
            ),
            "{backend}"
        );
        let mut same_email = new_user("robert");
        same_email.email = Email::parse("Bob@EXAMPLE.com").unwrap();
        assert!(
            matches!(
                store.create_user(same_email, None).await,
                Err(StoreError::Taken { field: "email" })
            ),
            "{backend}"
        );
        let carol = store.create_user(new_user("carol"), None).await.unwrap();
        let steal = UserChanges {
            username: Some(Username::parse("Bob").unwrap()),
            ..UserChanges::default()
        };
        assert!(matches!(
            store.update_user(carol.id, steal, None, None).await,
            Err(StoreError::Taken { field: "username" })
        ));
        // Nothing half-written: the failed commands left no events behind.
        assert_eq!(
            store.events_after(0, 100).await.unwrap().len(),
            2,
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn two_updates_at_the_same_expected_version_exactly_one_wins() {
    let dir = TempDir::new("users-test");
    contract(stores(&dir).await, |backend, store| async move {
        let user = store.create_user(new_user("dora"), None).await.unwrap();
        let update = |name: &'static str| {
            let store = store.clone();
            async move {
                let changes = UserChanges {
                    username: Some(Username::parse(name).unwrap()),
                    ..UserChanges::default()
                };
                store.update_user(user.id, changes, Some(1), None).await
            }
        };
        let (a, b) = tokio::join!(
            tokio::spawn(update("dora_a")),
            tokio::spawn(update("dora_b"))
        );
        let results = [a.unwrap(), b.unwrap()];
        let wins = results.iter().filter(|r| r.is_ok()).count();
        assert_eq!(wins, 1, "{backend}: {results:?}");
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(StoreError::Conflict { expected: 1, .. }))),
            "{backend}: the loser gets a conflict, {results:?}"
        );
        let stored = store.get_user(user.id).await.unwrap();
        assert_eq!(stored.version, 2, "{backend}");
        let versions: Vec<i64> = store
            .events_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.version)
            .collect();
        assert_eq!(versions, [1, 2], "{backend}: never overwritten");
    })
    .await;
}

#[tokio::test]
async fn every_change_is_queued_in_the_outbox_in_order() {
    let dir = TempDir::new("users-test");
    contract(stores(&dir).await, |backend, store| async move {
        let ann = store.create_user(new_user("ann"), None).await.unwrap();
        let post = store
            .create_post(
                ann.id,
                "Hello".into(),
                "First post".into(),
                Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            )
            .await
            .unwrap();
        store
            .create_comment(post.id, ann.id, "Nice".into(), None)
            .await
            .unwrap();

        let pending = store.pending_outbox(10).await.unwrap();
        let seen: Vec<(&str, &str)> = pending
            .iter()
            .map(|e| (e.topic.as_str(), e.event.event_type.as_str()))
            .collect();
        assert_eq!(
            seen,
            [
                (USERS_TOPIC, "UserCreated"),
                (POSTS_TOPIC, "PostCreated"),
                (POSTS_TOPIC, "CommentAdded")
            ],
            "{backend}"
        );
        assert_eq!(
            pending[1].event.traceparent.as_deref().map(|t| &t[3..35]),
            Some("4bf92f3577b34da6a3ce929d0e0e4736")
        );
        assert!(
            pending.iter().all(|e| !e.event.payload.contains("argon2")),
            "{backend}: no hashes in events"
        );
        assert!(store.outbox_lag_ms().await.unwrap() >= 0);

        assert!(store.try_lead("me", Duration::from_secs(10)).await.unwrap());
        assert!(
            store
                .mark_sent(&[pending[0].event.position], "me")
                .await
                .unwrap()
        );
        let left = store.pending_outbox(10).await.unwrap();
        assert_eq!(left.len(), 2, "{backend}");
        assert_eq!(left[0].event.position, pending[1].event.position);
    })
    .await;
}

#[tokio::test]
async fn posts_and_comments_need_existing_authors_and_posts() {
    let dir = TempDir::new("users-test");
    contract(stores(&dir).await, |backend, store| async move {
        assert!(
            matches!(
                store.create_post(999, "t".into(), "c".into(), None).await,
                Err(StoreError::NotFound {
                    entity: "user",
                    id: 999
                })
            ),
            "{backend}"
        );
        let ann = store.create_user(new_user("ann"), None).await.unwrap();
        assert!(matches!(
            store.create_comment(7, ann.id, "c".into(), None).await,
            Err(StoreError::NotFound {
                entity: "post",
                id: 7
            })
        ));
        for i in 0..5 {
            store
                .create_post(ann.id, format!("post {i}"), "body".into(), None)
                .await
                .unwrap();
        }
        let (page, total) = store
            .posts_by_author(ann.id, Slice::Page(Page::parse(2, 2).unwrap()))
            .await
            .unwrap();
        assert_eq!(total, 5, "{backend}");
        assert_eq!(
            page.iter().map(|p| p.title.as_str()).collect::<Vec<_>>(),
            ["post 2", "post 3"]
        );
        // Keyset: the two after post 2, whatever page they were on.
        let (after, _) = store
            .posts_by_author(
                ann.id,
                Slice::After {
                    id: page[0].id,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            after.iter().map(|p| p.title.as_str()).collect::<Vec<_>>(),
            ["post 3", "post 4"],
            "{backend}"
        );
        let post = page[0].id;
        for i in 0..3 {
            store
                .create_comment(post, ann.id, format!("comment {i}"), None)
                .await
                .unwrap();
        }
        let (first, total) = store
            .comments_by_post(post, Slice::After { id: 0, limit: 2 })
            .await
            .unwrap();
        assert_eq!(total, 3, "{backend}");
        let (rest, _) = store
            .comments_by_post(
                post,
                Slice::After {
                    id: first[1].id,
                    limit: 2,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            first
                .iter()
                .chain(&rest)
                .map(|c| c.content.as_str())
                .collect::<Vec<_>>(),
            ["comment 0", "comment 1", "comment 2"],
            "{backend}"
        );
        let updated = store
            .update_post(page[0].id, None, Some("edited".into()), None)
            .await
            .unwrap();
        assert_eq!(
            (
                updated.title.as_str(),
                updated.content.as_str(),
                updated.version
            ),
            ("post 2", "edited", 2)
        );
    })
    .await;
}

#[tokio::test]
async fn listing_pages_users_with_a_total() {
    let dir = TempDir::new("users-test");
    contract(stores(&dir).await, |backend, store| async move {
        for name in ["u1", "u2", "u3", "u4", "u5"].map(|n| format!("user_{n}")) {
            store.create_user(new_user(&name), None).await.unwrap();
        }
        let (users, total) = store.list_users(Page::parse(2, 2).unwrap()).await.unwrap();
        assert_eq!(total, 5, "{backend}");
        assert_eq!(
            users
                .iter()
                .map(|u| u.username.as_str())
                .collect::<Vec<_>>(),
            ["user_u3", "user_u4"]
        );
        let (beyond, total) = store.list_users(Page::parse(9, 2).unwrap()).await.unwrap();
        assert!(beyond.is_empty());
        assert_eq!(total, 5);
        let after = store.users_after(users[1].id, 10).await.unwrap();
        assert_eq!(after.len(), 1, "{backend}");
    })
    .await;
}

#[tokio::test]
async fn credentials_are_found_by_username_or_email_regardless_of_case() {
    let dir = TempDir::new("users-test");
    contract(stores(&dir).await, |backend, store| async move {
        let ann = store.create_user(new_user("Ann"), None).await.unwrap();
        for login in ["ann", "ANN", "ann@example.com", "Ann@Example.com"] {
            let found = store.credentials(login).await.unwrap().expect(backend);
            assert_eq!(found.user.id, ann.id);
            assert!(found.password_hash.starts_with("$argon2id$"));
        }
        assert!(store.credentials("nobody").await.unwrap().is_none());
    })
    .await;
}

async fn dump(store_url: &str) -> Vec<String> {
    let pool = sqlx::AnyPool::connect(store_url).await.unwrap();
    let mut out = Vec::new();
    for (table, columns) in [
        (
            "users",
            "id, username, username_key, email, email_key, version, created_at, updated_at",
        ),
        (
            "posts",
            "id, title, content, author_id, version, created_at, updated_at",
        ),
        (
            "comments",
            "id, content, author_id, post_id, version, created_at",
        ),
    ] {
        let n = columns.split(", ").count();
        for row in sqlx::query(&format!("SELECT {columns} FROM {table} ORDER BY id"))
            .fetch_all(&pool)
            .await
            .unwrap()
        {
            let fields: Vec<String> = (0..n)
                .map(|i| {
                    row.try_get::<i64, _>(i)
                        .map(|v| v.to_string())
                        .or_else(|_| row.try_get::<String, _>(i))
                        .unwrap()
                })
                .collect();
            out.push(format!("{table}|{}", fields.join("|")));
        }
    }
    out
}

#[tokio::test]
async fn replay_rebuilds_byte_identical_read_models() {
    let dir = TempDir::new("users-test");
    let urls = [dir.sqlite_url("users.db"), fresh_postgres_url().await];
    for url in urls {
        let store = Store::connect(&url, 4).await.unwrap();
        let ann = store.create_user(new_user("ann"), None).await.unwrap();
        let bob = store.create_user(new_user("bob"), None).await.unwrap();
        let gone = store.create_user(new_user("gone"), None).await.unwrap();
        store
            .update_user(
                bob.id,
                UserChanges {
                    username: Some(Username::parse("bobby").unwrap()),
                    ..UserChanges::default()
                },
                None,
                None,
            )
            .await
            .unwrap();
        store.delete_user(gone.id, None, None).await.unwrap();
        let p1 = store
            .create_post(ann.id, "one".into(), "1".into(), None)
            .await
            .unwrap();
        let p2 = store
            .create_post(bob.id, "two".into(), "2".into(), None)
            .await
            .unwrap();
        let c1 = store
            .create_comment(p1.id, bob.id, "hi".into(), None)
            .await
            .unwrap();
        store
            .create_comment(p2.id, ann.id, "yo".into(), None)
            .await
            .unwrap();
        store
            .update_comment(c1.id, "hi!".into(), None)
            .await
            .unwrap();
        store
            .update_post(p1.id, Some("one!".into()), None, None)
            .await
            .unwrap();
        store.delete_post(p2.id, None).await.unwrap();
        drop(store);

        let before = dump(&url).await;
        assert!(before.len() >= 4, "{before:?}");
        let store = Store::connect(&url, 4).await.unwrap();
        let applied = store.rebuild_read_models().await.unwrap();
        assert_eq!(applied, 12);
        let after = dump(&url).await;
        assert_eq!(before, after, "{url}");
        // Credentials are not read models and survive the rebuild.
        assert!(store.credentials("ann").await.unwrap().is_some());
    }
}

#[tokio::test]
async fn a_postgres_statement_past_the_statement_timeout_is_cancelled() {
    let timeouts = users::store::DatabaseTimeouts {
        acquire: Duration::from_secs(5),
        statement: Duration::from_millis(200),
    };
    let store = Store::connect_with(&fresh_postgres_url().await, 2, timeouts)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let outcome = users::test_util::sleep_in_database(&store, 5.0).await;
    assert!(outcome.is_err(), "cancelled by the server");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    // The pool is fine afterwards.
    users::test_util::sleep_in_database(&store, 0.01)
        .await
        .unwrap();
}
