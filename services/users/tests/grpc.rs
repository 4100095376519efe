//! The gRPC API through a real tonic client against the service on a
//! random port, over SQLite and PostgreSQL.

#![allow(clippy::unwrap_used)]

use common::service::Shared;
use platform_proto::posts::v1 as posts;
use platform_proto::users::v1 as pb;
use test_support::backends;
use tokio_stream::StreamExt;
use tonic::Code;
use tonic_types::StatusExt;
use users::test_util::{Options, TestApp, fresh_postgres_url, spawn_app};

async fn spawn(database_url: String) -> TestApp {
    let options = Options {
        database_url: Some(database_url),
        ..Options::default()
    };
    spawn_app(options, &Shared::default()).await
}

/// Runs `test` against the service on SQLite and on PostgreSQL.
async fn each_backend(test: impl AsyncFn(&'static str, TestApp)) {
    test(
        "sqlite",
        spawn_app(Options::default(), &Shared::default()).await,
    )
    .await;
    test("postgres", spawn(fresh_postgres_url().await).await).await;
}

fn sign_up(name: &str) -> pb::CreateUserRequest {
    pb::CreateUserRequest {
        username: name.into(),
        email: format!("{name}@example.com"),
        password: "correct horse battery".into(),
    }
}

#[tokio::test]
async fn user_rpcs_happy_path() {
    each_backend(async |backend, svc| {
        let mut client = svc.users();
        let ann = client
            .create_user(sign_up("ann"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (ann.username.as_str(), ann.version),
            ("ann", 1),
            "{backend}"
        );
        assert!(ann.created_at.ends_with('Z'));

        let got = client
            .get_user(pb::GetUserRequest { id: ann.id })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(got, ann);

        let updated = client
            .update_user(pb::UpdateUserRequest {
                id: ann.id,
                email: Some("ann@elsewhere.org".into()),
                expected_version: Some(1),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (updated.email.as_str(), updated.version),
            ("ann@elsewhere.org", 2)
        );
        assert_eq!(
            client
                .get_user(pb::GetUserRequest { id: ann.id })
                .await
                .unwrap()
                .into_inner(),
            updated
        );

        let verified = client
            .verify_credentials(pb::VerifyCredentialsRequest {
                login: "ANN@elsewhere.org".into(),
                password: "correct horse battery".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(verified.id, ann.id);

        client.create_user(sign_up("bob")).await.unwrap();
        let listed = client
            .list_users(pb::ListUsersRequest {
                page: 0,
                per_page: 10_000,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.total, 2);
        assert_eq!(
            listed.users.len(),
            2,
            "page 0 means the first; per_page is clamped"
        );

        let deleted = client
            .delete_user(pb::DeleteUserRequest {
                id: ann.id,
                expected_version: Some(2),
            })
            .await
            .unwrap();
        assert!(deleted.into_inner().success);
        let status = client
            .get_user(pb::GetUserRequest { id: ann.id })
            .await
            .unwrap_err();
        assert_eq!(status.code(), Code::NotFound);
        svc.stop().await;
    })
    .await;
}

#[tokio::test]
async fn every_error_status_is_the_documented_one() {
    each_backend(async |backend, svc| {
        let mut client = svc.users();
        let ann = client
            .create_user(sign_up("ann"))
            .await
            .unwrap()
            .into_inner();

        let missing = client
            .get_user(pb::GetUserRequest { id: 4242 })
            .await
            .unwrap_err();
        assert_eq!(missing.code(), Code::NotFound, "{backend}");

        let mut dup = sign_up("ANN");
        dup.email = "other@example.com".into();
        let taken = client.create_user(dup).await.unwrap_err();
        assert_eq!(taken.code(), Code::AlreadyExists, "{backend}");
        assert_eq!(
            taken.get_details_bad_request().unwrap().field_violations[0].field,
            "username"
        );

        let mut bad = sign_up("carol");
        bad.email = "carol@@example".into();
        let invalid = client.create_user(bad).await.unwrap_err();
        assert_eq!(invalid.code(), Code::InvalidArgument);
        let violation = &invalid.get_details_bad_request().unwrap().field_violations[0];
        assert_eq!(violation.field, "email");
        assert!(
            violation.description.contains("valid address"),
            "{violation:?}"
        );

        let stale = client
            .update_user(pb::UpdateUserRequest {
                id: ann.id,
                username: Some("ann2".into()),
                expected_version: Some(7),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(stale.code(), Code::Aborted);

        let wrong = client
            .verify_credentials(pb::VerifyCredentialsRequest {
                login: "ann".into(),
                password: "wrong password".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(wrong.code(), Code::Unauthenticated);
        let unknown = client
            .verify_credentials(pb::VerifyCredentialsRequest {
                login: "nobody".into(),
                password: "wrong password".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(
            (unknown.code(), unknown.message()),
            (Code::Unauthenticated, wrong.message()),
            "no user enumeration"
        );

        for (request, field) in [
            (
                pb::CreateUserRequest {
                    username: String::new(),
                    ..sign_up("x")
                },
                "username",
            ),
            (
                pb::CreateUserRequest {
                    username: "x".repeat(500),
                    ..sign_up("x")
                },
                "username",
            ),
            (
                pb::CreateUserRequest {
                    password: "short".into(),
                    ..sign_up("dave")
                },
                "password",
            ),
        ] {
            let status = client.create_user(request).await.unwrap_err();
            assert_eq!(status.code(), Code::InvalidArgument);
            assert_eq!(
                status.get_details_bad_request().unwrap().field_violations[0].field,
                field
            );
        }
        let zero = client
            .get_user(pb::GetUserRequest { id: 0 })
            .await
            .unwrap_err();
        assert_eq!(zero.code(), Code::InvalidArgument);
        let negative = client
            .list_users(pb::ListUsersRequest {
                page: -1,
                per_page: 5,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(negative.code(), Code::InvalidArgument);

        // Nothing half-written by the failures: one user, one event.
        let events: Vec<_> = svc
            .users_as("search")
            .export_events(pb::ExportEventsRequest {
                after_position: 0,
                page_size: 10,
            })
            .await
            .unwrap()
            .into_inner()
            .collect::<Result<Vec<_>, _>>()
            .await
            .unwrap();
        assert_eq!(events.len(), 1, "{backend}");
        svc.stop().await;
    })
    .await;
}

#[tokio::test]
async fn posts_and_comments_rpcs() {
    each_backend(async |backend, svc| {
        let ann = svc
            .users()
            .create_user(sign_up("ann"))
            .await
            .unwrap()
            .into_inner();
        let mut posts_client = svc.posts();
        let mut comments = svc.comments();

        let post = posts_client
            .create_post(posts::CreatePostRequest {
                title: "Hello".into(),
                content: "World".into(),
                author_id: ann.id,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            posts_client
                .get_post(posts::GetPostRequest { id: post.id })
                .await
                .unwrap()
                .into_inner(),
            post
        );
        let edited = posts_client
            .update_post(posts::UpdatePostRequest {
                id: post.id,
                title: Some("Hi".into()),
                content: None,
                actor_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (edited.title.as_str(), edited.content.as_str()),
            ("Hi", "World"),
            "{backend}"
        );
        let by_author = posts_client
            .list_posts_by_author(posts::ListPostsByAuthorRequest {
                author_id: ann.id,
                page: 1,
                per_page: 10,
                after_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_author.total, 1);

        let comment = comments
            .create_comment(posts::CreateCommentRequest {
                content: "first!".into(),
                author_id: ann.id,
                post_id: post.id,
            })
            .await
            .unwrap()
            .into_inner();
        let changed = comments
            .update_comment(posts::UpdateCommentRequest {
                id: comment.id,
                content: "second".into(),
                actor_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(changed.content, "second");
        let on_post = comments
            .list_comments_by_post(posts::ListCommentsByPostRequest {
                post_id: post.id,
                page: 1,
                per_page: 5,
                after_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(on_post.comments, vec![changed.clone()]);
        let by_ann = comments
            .list_comments_by_author(posts::ListCommentsByAuthorRequest {
                author_id: ann.id,
                page: 1,
                per_page: 5,
                after_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(by_ann.total, 1);
        assert!(
            comments
                .delete_comment(posts::DeleteCommentRequest {
                    id: comment.id,
                    actor_id: None,
                })
                .await
                .unwrap()
                .into_inner()
                .success
        );
        assert_eq!(
            comments
                .get_comment(posts::GetCommentRequest { id: comment.id })
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );
        assert!(
            posts_client
                .delete_post(posts::DeletePostRequest {
                    id: post.id,
                    actor_id: None,
                })
                .await
                .unwrap()
                .into_inner()
                .success
        );
        assert_eq!(
            posts_client
                .get_post(posts::GetPostRequest { id: post.id })
                .await
                .unwrap_err()
                .code(),
            Code::NotFound
        );

        let orphan = posts_client
            .create_post(posts::CreatePostRequest {
                title: "t".into(),
                content: "c".into(),
                author_id: 999,
            })
            .await
            .unwrap_err();
        assert_eq!(orphan.code(), Code::NotFound);
        let empty = posts_client
            .create_post(posts::CreatePostRequest {
                title: "  ".into(),
                content: "c".into(),
                author_id: ann.id,
            })
            .await
            .unwrap_err();
        assert_eq!(empty.code(), Code::InvalidArgument);
        svc.stop().await;
    })
    .await;
}

#[tokio::test]
async fn export_streams_every_user_in_pages_and_survives_a_cancelled_stream() {
    let svc = spawn_app(Options::default(), &Shared::default()).await;
    let mut client = svc.users_as("search");
    for i in 0..25 {
        client
            .create_user(sign_up(&format!("user{i:02}")))
            .await
            .unwrap();
    }
    let all: Vec<pb::User> = client
        .export_users(pb::ExportUsersRequest { page_size: 7 })
        .await
        .unwrap()
        .into_inner()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(all.len(), 25);
    assert!(
        all.windows(2).all(|w| w[0].id < w[1].id),
        "oldest first, no repeats"
    );

    // Read two users, then hang up mid-stream.
    let mut partial = client
        .export_users(pb::ExportUsersRequest { page_size: 2 })
        .await
        .unwrap()
        .into_inner();
    partial.next().await.unwrap().unwrap();
    partial.next().await.unwrap().unwrap();
    drop(partial);

    // The service is unharmed.
    let again = client
        .list_users(pb::ListUsersRequest {
            page: 1,
            per_page: 5,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.total, 25);
    let rebuilt = svc
        .users_as("admin")
        .rebuild_read_models(pb::RebuildReadModelsRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rebuilt.events_applied, 25);
    svc.stop().await;
}

#[tokio::test]
async fn an_update_through_replica_a_is_not_served_stale_by_replica_b() {
    // Both replicas share one cache namespace, unique to this test run, so
    // entries left in Redis by earlier runs cannot answer.
    let options = Options {
        database_url: Some(fresh_postgres_url().await),
        redis_url: Some(backends::redis_url()),
        cache_namespace: Some(backends::unique("users-test")),
        ..Options::default()
    };
    let a = spawn_app(options.clone(), &Shared::default()).await;
    let b = spawn_app(options, &Shared::default()).await;
    let ann = a
        .users()
        .create_user(sign_up("ann"))
        .await
        .unwrap()
        .into_inner();

    // B caches the user (L1, and L2 in Redis).
    let first = b
        .users()
        .get_user(pb::GetUserRequest { id: ann.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.username, "ann");
    let again = b
        .users()
        .get_user(pb::GetUserRequest { id: ann.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again, first);

    a.users()
        .update_user(pb::UpdateUserRequest {
            id: ann.id,
            username: Some("anne".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    test_support::eventually(
        std::time::Duration::from_secs(5),
        "replica B to drop its cached copy when A wrote",
        || async {
            let seen = b
                .users()
                .get_user(pb::GetUserRequest { id: ann.id })
                .await
                .unwrap()
                .into_inner();
            seen.username == "anne"
        },
    )
    .await;
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_services_in_both_protocol_versions() {
    use tonic_reflection::pb::{v1, v1alpha};
    let svc = spawn_app(Options::default(), &Shared::default()).await;

    // grpcurl and Postman speak v1.
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(svc.signed("admin"));
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("v1: expected a service list, got {answer:?}");
    };
    let v1_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();

    // Python's grpcio-reflection client and Evans speak v1alpha.
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(svc.signed("admin"));
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::ListServices(String::new()),
        ),
    };
    let mut answers = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.next().await.unwrap().unwrap();
    let Some(v1alpha::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        answer.message_response
    else {
        panic!("v1alpha: expected a service list, got {answer:?}");
    };
    let v1alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();

    for names in [&v1_names, &v1alpha_names] {
        for service in [
            "users.v1.UserService",
            "posts.v1.PostService",
            "posts.v1.CommentService",
        ] {
            assert!(names.iter().any(|n| n == service), "{service} in {names:?}");
        }
    }
    // Each version lists its own reflection service; the API is the same.
    let api = |names: Vec<String>| -> Vec<String> {
        names
            .into_iter()
            .filter(|n| !n.starts_with("grpc.reflection."))
            .collect()
    };
    assert_eq!(api(v1_names), api(v1alpha_names));
    svc.stop().await;
}

#[tokio::test]
async fn a_fake_author_written_to_the_shared_cache_grants_no_change() {
    use fred::prelude::KeysInterface as _;
    let namespace = backends::unique("users-test");
    let options = Options {
        database_url: Some(fresh_postgres_url().await),
        redis_url: Some(backends::redis_url()),
        cache_namespace: Some(namespace.clone()),
        ..Options::default()
    };
    let a = spawn_app(options.clone(), &Shared::default()).await;
    let ann = a
        .users()
        .create_user(sign_up("ann"))
        .await
        .unwrap()
        .into_inner();
    let bob = a
        .users()
        .create_user(sign_up("bob"))
        .await
        .unwrap()
        .into_inner();
    let post = a
        .posts()
        .create_post(posts::CreatePostRequest {
            author_id: ann.id,
            title: "Ann's".into(),
            content: "mine".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Cached in Redis by the read; then someone with Redis access makes
    // bob its author there.
    a.posts()
        .get_post(posts::GetPostRequest { id: post.id })
        .await
        .unwrap();
    let url = backends::redis_url();
    let (redis, _) = common::redis::connect(&url, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{}", backends::missing("Redis", &url, &e)));
    // A fresh namespace is in generation 0.
    let key = format!("cache:{namespace}:g0:post:{}", post.id);
    let cached: Option<String> = redis.get(&key).await.unwrap();
    let mut forged: serde_json::Value =
        serde_json::from_str(&cached.expect("the post is cached")).unwrap();
    forged["author_id"] = serde_json::json!(bob.id);
    let _: () = redis
        .set(&key, forged.to_string(), None, None, false)
        .await
        .unwrap();

    // A replica with nothing in process reads the forged author...
    let b = spawn_app(options, &Shared::default()).await;
    let seen = b
        .posts()
        .get_post(posts::GetPostRequest { id: post.id })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(seen.author_id, bob.id, "the forgery reached the cache");
    // ...but changes are decided by the store.
    let edit = b
        .posts()
        .update_post(posts::UpdatePostRequest {
            id: post.id,
            title: Some("Bob's now".into()),
            content: None,
            actor_id: Some(bob.id),
        })
        .await
        .unwrap_err();
    assert_eq!(edit.code(), tonic::Code::PermissionDenied);
    let delete = b
        .posts()
        .delete_post(posts::DeletePostRequest {
            id: post.id,
            actor_id: Some(bob.id),
        })
        .await
        .unwrap_err();
    assert_eq!(delete.code(), tonic::Code::PermissionDenied);
    let by_ann = b
        .posts()
        .update_post(posts::UpdatePostRequest {
            id: post.id,
            title: Some("Still Ann's".into()),
            content: None,
            actor_id: Some(ann.id),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(by_ann.author_id, ann.id);
    a.stop().await;
    b.stop().await;
}

fn keyed<M>(message: M, key: &str) -> tonic::Request<M> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(platform_proto::IDEMPOTENCY_KEY, key.parse().unwrap());
    request
        .metadata_mut()
        .insert(platform_proto::IDEMPOTENCY_SCOPE, "user:1".parse().unwrap());
    request
}

#[tokio::test]
async fn concurrent_creates_with_one_idempotency_key_make_one_post_and_one_answer() {
    each_backend(async |backend, svc| {
        let ann = svc
            .users()
            .create_user(sign_up("ann"))
            .await
            .unwrap()
            .into_inner();
        let post = |title: &str| posts::CreatePostRequest {
            title: title.into(),
            content: "body".into(),
            author_id: ann.id,
        };
        let calls = (0..8).map(|_| {
            let mut client = svc.posts();
            let request = keyed(post("Hello"), "key-1");
            async move { client.create_post(request).await }
        });
        let answers = futures_util::future::join_all(calls).await;
        let answers: Vec<_> = answers
            .into_iter()
            .map(|a| {
                a.unwrap_or_else(|s| panic!("{backend}: {s:?}"))
                    .into_inner()
            })
            .collect();
        assert!(
            answers.iter().all(|a| *a == answers[0]),
            "{backend}: one answer"
        );
        let listed = svc
            .posts()
            .list_posts_by_author(posts::ListPostsByAuthorRequest {
                author_id: ann.id,
                page: 1,
                per_page: 100,
                after_id: None,
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(listed.total, 1, "{backend}: one post");

        let refused = svc
            .posts()
            .create_post(keyed(post("Other"), "key-1"))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{backend}");
        assert!(
            refused
                .metadata()
                .contains_key(platform_proto::IDEMPOTENCY_MISMATCH)
        );
    })
    .await;
}

#[tokio::test]
async fn a_username_is_looked_up_case_insensitively_by_the_notifications_service_only() {
    each_backend(async |backend, svc| {
        let ann = svc
            .users()
            .create_user(sign_up("Ann_Lee"))
            .await
            .unwrap()
            .into_inner();
        let mut notifications = svc.users_as("notifications");
        let found = notifications
            .lookup_username(pb::LookupUsernameRequest {
                username: "ann_lee".into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(found.id, ann.id, "{backend}");
        assert_eq!(found.username, "Ann_Lee", "{backend}");
        for (name, code) in [
            ("nobody", Code::NotFound),
            ("", Code::InvalidArgument),
            ("no spaces allowed", Code::InvalidArgument),
        ] {
            let refused = notifications
                .lookup_username(pb::LookupUsernameRequest {
                    username: name.into(),
                })
                .await
                .unwrap_err();
            assert_eq!(refused.code(), code, "{backend}: {name:?}");
        }
        // Usernames to ids is not for every caller (it would list accounts).
        let gateway = svc
            .users()
            .lookup_username(pb::LookupUsernameRequest {
                username: "ann_lee".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(gateway.code(), Code::PermissionDenied, "{backend}");
        svc.stop().await;
    })
    .await;
}
