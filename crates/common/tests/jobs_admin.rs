//! The jobs' operator routes on a service's admin listener: dead jobs
//! listed, retried and discarded, behind the admin token; the workers
//! stop with the service.

#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::config::{Secret, ServiceConfig};
use common::jobs::{JobFailure, JobQueue, JobState, NewJob, Workers, handler_fn};
use common::server::ServiceHost;
use reqwest::StatusCode;
use serde_json::{Value, json};
use test_support::{TestHost, eventually, http::problem};

const TOKEN: &str = "an admin token of thirty-two bytes or more";

#[tokio::test]
async fn operators_list_retry_and_discard_dead_jobs_behind_the_admin_token() {
    let queue = JobQueue::in_process();
    // Fails until its payload says otherwise: the operator's retry is what
    // a fixed dependency looks like.
    let fixed = Arc::new(AtomicBool::new(false));
    let repaired = fixed.clone();
    let handler = handler_fn(move |job| {
        let repaired = repaired.clone();
        Box::pin(async move {
            if repaired.load(Ordering::SeqCst) || job.payload == json!("ok") {
                Ok(())
            } else {
                Err(JobFailure::permanent("the mail server refused"))
            }
        })
    });
    let host = TestHost::spawn(
        ServiceHost::builder(ServiceConfig::ephemeral("jobs-admin", false)).jobs(
            queue.clone(),
            Workers::new().register("mail", handler, 2),
            Some(Secret::new(TOKEN)),
        ),
    );
    let dead = queue
        .enqueue(NewJob::new("mail", json!(1)))
        .await
        .unwrap()
        .id();
    let other = queue
        .enqueue(NewJob::new("mail", json!(2)))
        .await
        .unwrap()
        .id();
    let fine = queue
        .enqueue(NewJob::new("mail", json!("ok")))
        .await
        .unwrap()
        .id();
    for id in [dead, other] {
        eventually(Duration::from_secs(5), "the job to die", || async {
            queue.get(id).await.unwrap().unwrap().state == JobState::Dead
        })
        .await;
    }
    let client = reqwest::Client::new();
    let admin = host.admin_url();
    let call = |method: reqwest::Method, path: &str| {
        client
            .request(method, format!("{admin}{path}"))
            .bearer_auth(TOKEN)
    };

    let listed: Value = call(reqwest::Method::GET, "/admin/jobs?state=dead")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = listed["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [dead.to_string(), other.to_string()]);
    assert_eq!(listed["jobs"][0]["last_error"], "the mail server refused");
    assert_eq!(listed["jobs"][0]["attempts"], 1);
    // Paged by `after`.
    let page: Value = call(reqwest::Method::GET, "/admin/jobs?state=dead&limit=1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(page["next"], dead.to_string());

    fixed.store(true, Ordering::SeqCst);
    let retried = call(reqwest::Method::POST, &format!("/admin/jobs/{dead}/retry"))
        .send()
        .await
        .unwrap();
    assert_eq!(retried.status(), StatusCode::OK);
    eventually(
        Duration::from_secs(5),
        "the retried job to succeed",
        || async { queue.get(dead).await.unwrap().unwrap().state == JobState::Succeeded },
    )
    .await;
    let discarded = call(
        reqwest::Method::POST,
        &format!("/admin/jobs/{other}/discard"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(discarded.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        queue.get(other).await.unwrap().unwrap().state,
        JobState::Discarded
    );

    let again = call(reqwest::Method::POST, &format!("/admin/jobs/{fine}/retry"))
        .send()
        .await
        .unwrap();
    problem(again, 409, "not_dead").await;
    let missing = call(
        reqwest::Method::GET,
        &format!("/admin/jobs/{}", uuid::Uuid::now_v7()),
    )
    .send()
    .await
    .unwrap();
    problem(missing, 404, "not_found").await;
    let bad = call(reqwest::Method::GET, "/admin/jobs?state=exploded")
        .send()
        .await
        .unwrap();
    problem(bad, 400, "bad_query").await;
    let anonymous = client
        .get(format!("{admin}/admin/jobs"))
        .send()
        .await
        .unwrap();
    problem(anonymous, 401, "unauthorized").await;
    let wrong = client
        .get(format!("{admin}/admin/jobs"))
        .bearer_auth("guess")
        .send()
        .await
        .unwrap();
    problem(wrong, 401, "unauthorized").await;
    // What the workers did, on the admin listener's /metrics.
    let metrics = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "jobs_enqueued_total{kind=\"mail\"}",
        "jobs_dead_lettered_total{kind=\"mail\",reason=\"failed\"}",
        "jobs_duration_seconds_count{kind=\"mail\",outcome=\"succeeded\"}",
        "jobs_duration_seconds_count{kind=\"mail\",outcome=\"dead\"}",
        "jobs_in_flight{kind=\"mail\"}",
        "jobs_queue_depth{kind=\"mail\"}",
        "jobs{state=\"dead\"}",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
    // Never on the public port.
    let public = client
        .get(format!("{}/admin/jobs", host.http_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(public.status(), StatusCode::NOT_FOUND);
    host.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_the_job_routes_are_absent() {
    let host = TestHost::spawn(
        ServiceHost::builder(ServiceConfig::ephemeral("jobs-closed", false)).jobs(
            JobQueue::in_process(),
            Workers::new(),
            None,
        ),
    );
    let res = reqwest::Client::new()
        .get(format!("{}/admin/jobs", host.admin_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    host.stop().await;
}
