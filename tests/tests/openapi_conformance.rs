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

#[tokio::test]
async fn schemathesis_finds_nothing_the_document_does_not_say() {
    let mut env: Vec<(String, String)> = services()
        .flat_map(|(_, prefix)| random_ports(prefix))
        .collect();
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
