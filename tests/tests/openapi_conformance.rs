//! The gateway's OpenAPI document as tools read it: valid OpenAPI 3.1
//! (openapi-spec-validator), and true of the running platform
//! (schemathesis: requests generated from the document, valid, invalid and
//! at every boundary, each answer checked against it with every check
//! schemathesis has). Both tools are pinned in
//! `scripts/requirements-api.txt`; `make test` installs them.

#![allow(clippy::disallowed_methods)] // test clients of servers the test starts
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use e2e::{ServiceProcess, random_ports, services, wait_until_ok};
use serde_json::{Value, json};
use test_support::TempDir;
use tokio::process::Command;

/// The whole run, schema download to summary; it takes under a minute
/// here, so this only stops a hung run.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
}

/// A tool from the venv `scripts/ensure-tools.sh` fills, which lives under
/// `PLATFORM_TOOLS_DIR` (default `~/.cache/platform-tools`).
fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("PLATFORM_TOOLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/platform-tools")))
        .expect("HOME or PLATFORM_TOOLS_DIR is set");
    let path = dir.join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `bash scripts/ensure-tools.sh` (which `make test` does)",
        path.display()
    );
    path
}

#[tokio::test]
async fn the_committed_document_is_valid_openapi() {
    let document = workspace().join("services/gateway/openapi.json");
    let out = Command::new(tool("openapi-spec-validator"))
        .arg(&document)
        .output()
        .await
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains(": OK"), "{said}");
}

struct Account {
    id: u64,
    token: String,
}

async fn account(client: &reqwest::Client, gateway: &str, name: &str) -> Account {
    let password = "correct horse battery";
    let created = client
        .post(format!("{gateway}/api/v1/users"))
        .json(&json!({ "username": name, "email": format!("{name}@example.com"), "password": password }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "sign up {name}");
    let id = created.json::<Value>().await.unwrap()["id"]
        .as_u64()
        .unwrap();
    let session: Value = client
        .post(format!("{gateway}/api/v1/auth/login"))
        .json(&json!({ "login": name, "password": password }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Account {
        id,
        token: session["access_token"].as_str().unwrap().to_owned(),
    }
}

/// A webhook receiver that takes every delivery (204), on a loopback
/// port the notifications service is allowed to reach over http.
async fn receiver() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let authority = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = vec![0; 64 * 1024];
                // One request per connection (the service makes a client
                // per delivery); its end is not awaited, only its start.
                let _ = conn.read(&mut buf).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    authority
}

/// `account`'s new webhook to `url`: its id.
async fn webhook(client: &reqwest::Client, gateway: &str, account: &Account, url: &str) -> i64 {
    let created: Value = client
        .post(format!("{gateway}/api/v1/notifications/webhooks"))
        .bearer_auth(&account.token)
        .json(&json!({ "url": url }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["webhook"]["id"]
        .as_i64()
        .expect("a webhook is made")
}

#[tokio::test]
async fn schemathesis_finds_nothing_the_document_does_not_say() {
    let hooks = receiver().await;
    let mut env: Vec<(String, String)> = services()
        .flat_map(|(_, prefix)| random_ports(prefix))
        .collect();
    env.push(("NOTIFICATIONS_WEBHOOK_HTTP_ALLOWED".into(), hooks.clone()));
    // The run sends a few thousand requests from one address and signs in
    // with made-up names: limits are tested elsewhere, and would only turn
    // most of these answers into 429s here.
    for (key, value) in [
        ("GATEWAY_RATE_LIMIT_REQUESTS", "1000000"),
        ("GATEWAY_LOGIN_ATTEMPTS_PER_ACCOUNT", "1000000"),
        ("GATEWAY_SIGNUPS_PER_EMAIL", "1000000"),
    ] {
        env.push((key.into(), value.into()));
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let platform = ServiceProcess::start(
        "platform",
        &env,
        &services().map(|(n, _)| n).collect::<Vec<_>>(),
    )
    .await;
    let gateway = platform.http("gateway").to_owned();
    let client = reqwest::Client::new();
    wait_until_ok(&client, &format!("{gateway}/health/ready")).await;

    let deleter = account(&client, &gateway, "deleter").await;
    let leaver = account(&client, &gateway, "leaver").await;
    let fuzzer = account(&client, &gateway, "fuzzer").await;
    // Its welcome notification (from its UserCreated event), for the
    // operations on one notification to reach one.
    let notification = test_support::eventually_some(
        Duration::from_secs(10),
        "the fuzzer's welcome notification",
        || async {
            let page: Value = client
                .get(format!("{gateway}/api/v1/notifications"))
                .bearer_auth(&fuzzer.token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            page["notifications"][0]["id"].as_i64()
        },
    )
    .await;

    // Its webhooks: one the operations on a webhook and its deliveries
    // reach, with a delivery (a comment on the fuzzer's post notifies it),
    // and a spare for the delete.
    let url = format!("http://{hooks}/hook");
    let hook = webhook(&client, &gateway, &fuzzer, &url).await;
    let spare = webhook(&client, &gateway, &fuzzer, &url).await;
    let post: Value = client
        .post(format!("{gateway}/api/v1/posts"))
        .bearer_auth(&fuzzer.token)
        .json(&json!({ "title": "Webhooks", "content": "for the fuzzer" }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let commented = client
        .post(format!("{gateway}/api/v1/posts/{}/comments", post["id"]))
        .bearer_auth(&leaver.token)
        .json(&json!({ "content": "a delivery" }))
        .send()
        .await
        .unwrap();
    assert_eq!(commented.status(), 201);
    let delivery = test_support::eventually_some(
        Duration::from_secs(10),
        "the fuzzer's first webhook delivery",
        || async {
            let list: Value = client
                .get(format!(
                    "{gateway}/api/v1/notifications/webhooks/{hook}/deliveries"
                ))
                .bearer_auth(&fuzzer.token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            (list["deliveries"][0]["state"] == "delivered")
                .then(|| list["deliveries"][0]["id"].as_str().map(str::to_owned))
                .flatten()
        },
    )
    .await;

    let workdir = TempDir::new("schemathesis");
    let run = Command::new(tool("schemathesis"))
        .current_dir(workdir.path())
        .arg("--config-file")
        .arg(workspace().join("tests/schemathesis/schemathesis.toml"))
        .args(["run", &format!("{gateway}/openapi.json")])
        .args([
            "--header",
            &format!("Authorization: Bearer {}", fuzzer.token),
        ])
        .arg("--no-color")
        .env("SCHEMATHESIS_DELETER_TOKEN", &deleter.token)
        .env("SCHEMATHESIS_LEAVER_TOKEN", &leaver.token)
        .env("SCHEMATHESIS_USER_ID", fuzzer.id.to_string())
        .env("SCHEMATHESIS_NOTIFICATION_ID", notification.to_string())
        .env("SCHEMATHESIS_WEBHOOK_ID", hook.to_string())
        .env("SCHEMATHESIS_SPARE_WEBHOOK_ID", spare.to_string())
        .env("SCHEMATHESIS_DELIVERY_ID", &delivery)
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(RUN_TIMEOUT, run)
        .await
        .expect("schemathesis finishes in time")
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed:\n{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("No issues found"), "{said}");
    // Every operation but the WebSocket upgrade and the notifications
    // stream (disabled in the config) was tried: a run that reached none
    // would pass too.
    let document: Value = serde_json::from_str(&gateway::openapi::document()).unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert!(
        said.contains(&format!("Tested: {}\n", operations - 2)),
        "{operations} operations: {said}"
    );
}
