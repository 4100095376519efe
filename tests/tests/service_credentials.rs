//! Service credentials between processes, as operators deploy them: the
//! users binary holds the platform secret, the gateway binary only its own
//! derived key, and an operator's token comes from the `platform` CLI.

#![allow(clippy::disallowed_methods)] // test clients of servers the test starts
#![allow(clippy::unwrap_used, clippy::expect_used)]

use e2e::{SERVICE_SECRET, ServiceProcess, random_ports, wait_until_ok};
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use tonic::Code;

/// Runs `platform <args>` with the test secret and returns its one line.
async fn platform_cli(args: &[&str]) -> String {
    let output = tokio::process::Command::new(e2e::binary("platform"))
        .args(args)
        .env_clear()
        .env("PLATFORM_SERVICE_SECRET", SERVICE_SECRET)
        .output()
        .await
        .expect("run the platform CLI");
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

async fn rebuild_with(grpc: &str, token: &str) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Endpoint::from_shared(grpc.to_owned())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut request = tonic::Request::new(pb::RebuildReadModelsRequest {});
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    UserServiceClient::new(channel)
        .rebuild_read_models(request)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn a_gateway_with_only_its_own_key_calls_users_and_the_cli_token_decides_admin_access() {
    let env = random_ports("USERS");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let users = ServiceProcess::start("users", &env, &["users"]).await;
    let grpc = users.listening["users"].grpc.clone().unwrap();

    // The gateway never sees the platform secret.
    let key = platform_cli(&["service-key", "gateway"]).await;
    let http = users.http("users").trim_start_matches("http://").to_owned();
    let grpc_port = grpc.rsplit(':').next().unwrap().to_owned();
    let mut gateway_env = random_ports("GATEWAY");
    gateway_env.extend([
        ("PLATFORM_SERVICE_SECRET".to_owned(), String::new()),
        ("GATEWAY_SERVICE_KEY".to_owned(), key),
        (
            "GATEWAY_STATIC_SERVICES".to_owned(),
            format!("users={http}/{grpc_port}"),
        ),
    ]);
    let gateway_env: Vec<(&str, &str)> = gateway_env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let gateway = ServiceProcess::start("gateway", &gateway_env, &["gateway"]).await;
    let client = reqwest::Client::new();
    wait_until_ok(
        &client,
        &format!("{}/health/ready", gateway.http("gateway")),
    )
    .await;
    let created = client
        .post(format!("{}/api/v1/users", gateway.http("gateway")))
        .json(&serde_json::json!({"username": "erin", "email": "erin@example.com", "password": "correct horse battery"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201, "{:?}", created.text().await);

    // An operator's token rebuilds the read models; the gateway's cannot.
    let admin = platform_cli(&["service-token", "admin", "users"]).await;
    rebuild_with(&grpc, &admin).await.unwrap();
    let as_gateway = platform_cli(&["service-token", "gateway", "users"]).await;
    let refused = rebuild_with(&grpc, &as_gateway).await.unwrap_err();
    assert_eq!(refused.code(), Code::PermissionDenied);
    // A token minted for another service is not accepted here.
    let for_chat = platform_cli(&["service-token", "admin", "chat"]).await;
    let refused = rebuild_with(&grpc, &for_chat).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);

    assert!(gateway.terminate().await.success());
    assert!(users.terminate().await.success());
}
