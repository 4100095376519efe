//! Redis URLs with credentials, against the real Redis at `TEST_REDIS_URL`:
//! they connect, and no error shows their password.

#![allow(clippy::unwrap_used)]

use fred::prelude::*;
use test_support::backends::{missing, redis_url, unique};

#[tokio::test]
async fn a_url_with_a_user_and_password_connects_and_errors_never_show_the_password() {
    let url = redis_url();
    let (admin, _) = common::redis::connect(&url, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{}", missing("Redis", &url, &e)));
    let user = unique("acl");
    let password = unique("pw");
    let _: () = admin
        .custom(
            fred::cmd!("ACL"),
            vec![
                "SETUSER".to_owned(),
                user.clone(),
                "on".to_owned(),
                format!(">{password}"),
                "~*".to_owned(),
                "+@all".to_owned(),
            ],
        )
        .await
        .unwrap();
    let authority = url.trim_start_matches("redis://");
    let with_credentials = format!("redis://{user}:{password}@{authority}");
    let within = std::time::Duration::from_secs(20);
    let result = tokio::time::timeout(
        within,
        common::redis::connect(&with_credentials, &Default::default()),
    )
    .await
    .expect("connects in time");

    let (client, subscriber) = result.unwrap();
    let pong: String = client.ping(None).await.unwrap();
    assert_eq!(pong, "PONG");
    // Before the user goes: a client whose user is deleted reconnects,
    // and is refused, for ever.
    let _: () = client.quit().await.unwrap();
    let _: () = subscriber.quit().await.unwrap();
    let _: () = admin
        .custom(fred::cmd!("ACL"), vec!["DELUSER".to_owned(), user.clone()])
        .await
        .unwrap();
    // A URL the client cannot use: the error names it, without the
    // password.
    let error = match common::redis::parse(&format!("redis://{user}:{password}@{authority}:x/db")) {
        Ok(_) => panic!("a malformed URL must be refused"),
        Err(e) => common::exit::chain(&e),
    };
    assert!(!error.contains(&password), "{error}");
    assert!(error.contains(&format!("{user}:***@")), "{error}");
}
