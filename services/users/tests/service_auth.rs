//! Who may call the users service's internal API: every RPC but health
//! needs a service token, and the admin RPCs only admit the operators'.

#![allow(clippy::unwrap_used)]

use common::auth::{ServiceCredentials, ServiceSecret};
use common::service::Shared;
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use tonic::Code;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;
use users::test_util::{Options, spawn_app};

#[tokio::test]
async fn a_call_without_a_service_token_is_unauthenticated_but_health_answers() {
    let svc = spawn_app(Options::default(), &Shared::default()).await;
    let status = UserServiceClient::new(svc.channel())
        .get_user(pb::GetUserRequest { id: 1 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    let status = UserServiceClient::new(svc.channel())
        .rebuild_read_models(pb::RebuildReadModelsRequest {})
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

    // Probes and load balancers carry no credentials.
    let health = HealthClient::new(svc.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await;
    assert!(health.is_ok(), "{health:?}");
    svc.stop().await;
}

#[tokio::test]
async fn another_services_token_cannot_rebuild_the_read_models_but_the_admins_can() {
    let svc = spawn_app(Options::default(), &Shared::default()).await;
    for caller in ["gateway", "chat", "search"] {
        let status = svc
            .users_as(caller)
            .rebuild_read_models(pb::RebuildReadModelsRequest {})
            .await
            .unwrap_err();
        assert_eq!(
            status.code(),
            Code::PermissionDenied,
            "{caller}: {status:?}"
        );
    }
    svc.users_as("admin")
        .rebuild_read_models(pb::RebuildReadModelsRequest {})
        .await
        .unwrap();
    svc.stop().await;
}

#[tokio::test]
async fn each_internal_rpc_admits_only_the_callers_it_names() {
    let svc = spawn_app(Options::default(), &Shared::default()).await;
    svc.users()
        .create_user(pb::CreateUserRequest {
            username: "ann".into(),
            email: "ann@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap();
    // Sign-in checks are the gateway's alone.
    let verify = pb::VerifyCredentialsRequest {
        login: "ann".into(),
        password: "correct horse battery".into(),
    };
    let status = svc
        .users_as("chat")
        .verify_credentials(verify.clone())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    svc.users().verify_credentials(verify).await.unwrap();

    // The bulk export (emails included) feeds search, nobody else.
    let status = svc
        .users_as("gateway")
        .export_users(pb::ExportUsersRequest { page_size: 10 })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    let mut export = svc
        .users_as("search")
        .export_users(pb::ExportUsersRequest { page_size: 10 })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(export.message().await.unwrap().unwrap().username, "ann");

    // Any authenticated service may read a profile.
    svc.users_as("chat")
        .get_user(pb::GetUserRequest { id: 1 })
        .await
        .unwrap();
    svc.stop().await;
}

#[tokio::test]
async fn tokens_from_another_secret_or_for_another_service_are_refused() {
    let svc = spawn_app(Options::default(), &Shared::default()).await;
    let foreign = ServiceSecret::new(b"not-the-platform-secret-but-32-bytes-long").unwrap();
    let credentials = std::sync::Arc::new(ServiceCredentials::new(&foreign.key_for("admin")));
    let status =
        UserServiceClient::with_interceptor(svc.channel(), credentials.interceptor("users"))
            .get_user(pb::GetUserRequest { id: 1 })
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // The right secret, but a token minted for chat: not replayable here.
    let credentials = common::auth::ServiceAuthConfig::process_default("gateway").credentials();
    let status =
        UserServiceClient::with_interceptor(svc.channel(), credentials.interceptor("chat"))
            .get_user(pb::GetUserRequest { id: 1 })
            .await
            .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    svc.stop().await;
}

#[tokio::test]
async fn reflection_is_for_the_operators_tools_only() {
    use tonic_reflection::pb::v1;
    let svc = spawn_app(Options::default(), &Shared::default()).await;
    let request = || v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let status = v1::server_reflection_client::ServerReflectionClient::new(svc.signed("gateway"))
        .server_reflection_info(tokio_stream::iter([request()]))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied);
    v1::server_reflection_client::ServerReflectionClient::new(svc.signed("admin"))
        .server_reflection_info(tokio_stream::iter([request()]))
        .await
        .unwrap();
    svc.stop().await;
}
