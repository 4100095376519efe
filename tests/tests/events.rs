//! Events across processes: the users binary publishes through its outbox
//! to a Kafka-protocol broker running as its own process
//! (`kafka-mock-cluster`), and consumer groups read them: this test's, and
//! the notifications binary's.

#![allow(clippy::disallowed_methods)] // test clients of servers the test starts
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::Duration;

use common::events::{EventBus, KafkaBus, KafkaConfig};
use e2e::{ServiceProcess, random_ports};
use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_client::UserServiceClient;
use tokio::io::{AsyncBufReadExt, BufReader};

/// A Kafka-protocol broker process of the test's own, and its address.
async fn broker() -> (tokio::process::Child, String) {
    let mut broker = tokio::process::Command::new(e2e::binary("kafka-mock-cluster"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kafka-mock-cluster");
    let mut lines = BufReader::new(broker.stdout.take().unwrap()).lines();
    let brokers = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("broker prints its address")
        .unwrap()
        .expect("an address line");
    (broker, brokers)
}

/// A gRPC client of `users`, calling as the gateway does.
async fn users_client(
    users: &ServiceProcess,
) -> UserServiceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        impl tonic::service::Interceptor + use<>,
    >,
> {
    let grpc = users.listening["users"].grpc.clone().unwrap();
    let channel = tonic::transport::Endpoint::from_shared(grpc)
        .unwrap()
        .connect()
        .await
        .unwrap();
    UserServiceClient::with_interceptor(
        channel,
        e2e::service_credentials("gateway").interceptor("users"),
    )
}

/// Users and notifications as their own processes on one broker: a sign-up
/// goes out through users' outbox to Kafka, and notifications' consumer
/// group turns it into a welcome on the new user's open stream.
#[tokio::test]
async fn a_sign_up_becomes_a_welcome_on_the_new_users_stream_through_kafka() {
    let (_broker, brokers) = broker().await;
    let mut env = random_ports("USERS");
    env.extend(random_ports("NOTIFICATIONS"));
    env.push(("PLATFORM_KAFKA_BROKERS".into(), brokers.clone()));
    env.push((
        "NOTIFICATIONS_JWT_SECRET".into(),
        notifications::test_util::SIGNING_KEY.into(),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let users = ServiceProcess::start("users", &env, &["users"]).await;
    let notifications = ServiceProcess::start("notifications", &env, &["notifications"]).await;
    let base = notifications.http("notifications").to_owned();

    // Ids start at 1 in a fresh database: the stream is open before the
    // user exists, so the welcome must arrive live.
    let mut stream = notifications::test_util::Sse::open_at(&base, 1, None).await;
    stream
        .next_block(Duration::from_secs(5))
        .await
        .expect("the stream opens");
    let mut client = users_client(&users).await;
    let ann = client
        .create_user(pb::CreateUserRequest {
            username: "ann".into(),
            email: "ann@example.com".into(),
            password: "correct horse battery".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(ann.id, 1);
    let (seq, welcome) = stream
        .next_event(Duration::from_secs(30))
        .await
        .expect("the welcome, live, through Kafka");
    assert_eq!(seq, 1);
    assert_eq!(welcome["user_id"], 1);
    assert!(
        welcome["message"].as_str().unwrap().contains("ann"),
        "{welcome}"
    );
    assert!(users.terminate().await.success());
    assert!(notifications.terminate().await.success());
}

#[tokio::test]
async fn a_sign_up_reaches_kafka_as_a_cloud_event_with_its_trace() {
    let (_broker, brokers) = broker().await;

    let mut env = random_ports("USERS");
    env.push(("USERS_KAFKA_BROKERS".into(), brokers.clone()));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let users = ServiceProcess::start("users", &env, &["users"]).await;
    let mut client = users_client(&users).await;
    let mut request = tonic::Request::new(pb::CreateUserRequest {
        username: "ann".into(),
        email: "ann@example.com".into(),
        password: "correct horse battery".into(),
    });
    request.metadata_mut().insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    let ann = client.create_user(request).await.unwrap().into_inner();

    let consumer = KafkaBus::new(KafkaConfig {
        brokers,
        client_id: "e2e".into(),
        message_timeout: Duration::from_secs(5),
        session_timeout: Duration::from_secs(6),
        fetch_wait_max: Duration::from_millis(100),
        security: Default::default(),
    })
    .unwrap();
    let mut sub = consumer
        .subscribe("users.events", "e2e-check")
        .await
        .unwrap();
    let delivery = tokio::time::timeout(Duration::from_secs(30), sub.next())
        .await
        .expect("the event arrives")
        .unwrap();
    let event = delivery.event;
    assert_eq!(event.event_type, "UserCreated");
    assert_eq!(event.source, "/users");
    assert_eq!(event.subject, ann.id.to_string());
    assert_eq!(event.aggregate_version, 1);
    let trace = event
        .traceparent
        .expect("trace context travels with the event");
    assert_eq!(
        &trace[3..35],
        "4bf92f3577b34da6a3ce929d0e0e4736",
        "same trace as the request"
    );
    let payload: serde_json::Value = serde_json::from_slice(&event.data).unwrap();
    assert_eq!(payload["username"], "ann");
    assert!(
        payload.get("password").is_none()
            && !String::from_utf8_lossy(&event.data).contains("argon2")
    );

    let status = users.terminate().await;
    assert!(status.success());
}
