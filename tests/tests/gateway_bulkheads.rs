//! Bulkheads between the gateway and the users service: a flood of
//! sign-ins is bounded where the memory goes (password hashing), shed with
//! `503` and `Retry-After` instead of queued, never retried, and does not
//! shut off reads.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use e2e::in_process::Platform;
use reqwest::StatusCode;
use serde_json::json;
use users::password::HashLimits;

const BOUND: usize = 2;

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} missing from\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_flood_is_bounded_shed_with_retry_after_and_reads_keep_working() {
    let options = users::test_util::Options {
        hashing: Some(HashLimits {
            concurrency: BOUND,
            queue: 2,
        }),
        ..Default::default()
    };
    let p = Platform::start_with_users(&[], options).await;
    let ann = p.sign_up("ann").await;
    let id = ann["id"].as_u64().unwrap();

    let logins = (0..100).map(|i| {
        let (client, base) = (p.client.clone(), p.base.clone());
        tokio::spawn(async move {
            let res = client
                .post(format!("{base}/api/v1/auth/login"))
                .json(&json!({ "login": format!("nobody{i}"), "password": "wrong password" }))
                .timeout(Duration::from_secs(20))
                .send()
                .await
                .expect("every login is answered, none hangs");
            let retry_after = res.headers().get("retry-after").cloned();
            (res.status(), retry_after)
        })
    });
    let logins: Vec<_> = logins.collect();
    // Reads go on beside the flood: their breaker and slots are their own.
    for _ in 0..20 {
        let res = p
            .client
            .get(format!("{}/api/v1/users/{id}", p.base))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let (mut refused, mut shed) = (0, 0);
    for login in logins {
        let (status, retry_after) = login.await.unwrap();
        match status {
            StatusCode::UNAUTHORIZED => refused += 1,
            StatusCode::SERVICE_UNAVAILABLE => {
                assert!(retry_after.is_some(), "a shed login says when to come back");
                shed += 1;
            }
            other => panic!("a wrong password got {other}"),
        }
    }
    assert!(
        refused >= BOUND,
        "the admitted logins are checked: {refused}"
    );
    assert!(shed > 0, "beyond the queue, logins are shed");

    let users = p.users.as_ref().unwrap();
    let text = p
        .client
        .get(format!("{}/metrics", users.host.admin_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let peak = metric(&text, "users_password_hashes_peak");
    assert!(
        peak <= BOUND as f64,
        "at most {BOUND} hashes ran at once, saw {peak}"
    );
    // Shedding is not a failure of the users service: sign-in still works
    // at once, with no breaker to wait out.
    let res = p
        .client
        .post(format!("{}/api/v1/auth/login", p.base))
        .json(&json!({ "login": "ann", "password": "correct horse battery" }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    assert_eq!(status, StatusCode::OK, "{}", res.text().await.unwrap());
    p.stop().await;
}
