//! The outbox under a Kafka that stops answering: a broker process
//! (`kafka-mock-cluster`) paused with SIGSTOP for longer than the relay
//! lease, two relays (two replicas, each its own producer) on one
//! PostgreSQL database, publish and lease timeouts shortened. Every event
//! reaches an idempotent consumer exactly once per id and in version order
//! per aggregate; a poison event (larger than any broker accepts) is
//! parked and the rest flow.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashSet};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::events::{EventBus, KafkaBus, KafkaConfig};
use common::shutdown::CancellationToken;
use tokio::io::{AsyncBufReadExt, BufReader};
use users::domain::{Email, Username};
use users::events::USERS_TOPIC;
use users::outbox::{OutboxRelay, RelayConfig};
use users::store::{NewUser, Store, UserChanges};

fn kafka(brokers: &str, client: &str) -> KafkaBus {
    KafkaBus::new(KafkaConfig {
        brokers: brokers.to_owned(),
        client_id: client.to_owned(),
        message_timeout: Duration::from_secs(1),
        session_timeout: Duration::from_secs(6),
        fetch_wait_max: Duration::from_millis(100),
        security: Default::default(),
    })
    .unwrap()
}

fn relay_config(holder: &str) -> RelayConfig {
    RelayConfig {
        batch: 4,
        idle_poll: Duration::from_millis(20),
        lease: RelayConfig::lease_for(Duration::from_secs(1)),
        holder: holder.to_owned(),
        max_attempts: 3,
        retention: Duration::from_secs(3600),
    }
}

async fn new_user(store: &Store, name: &str) -> i64 {
    let user = store
        .create_user(
            NewUser {
                username: Username::parse(name).unwrap(),
                email: Email::parse(&format!("{name}@example.com")).unwrap(),
                password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            },
            None,
        )
        .await
        .unwrap();
    user.id
}

async fn rename(store: &Store, id: i64, name: &str) {
    let changes = UserChanges {
        username: Some(Username::parse(name).unwrap()),
        ..UserChanges::default()
    };
    store.update_user(id, changes, None, None).await.unwrap();
}

fn signal(pid: u32, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([signal, &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {signal} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_broker_past_the_lease_loses_duplicates_nothing_and_parks_the_poison_event() {
    let mut broker = tokio::process::Command::new(e2e::binary("kafka-mock-cluster"))
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start kafka-mock-cluster");
    let pid = broker.id().unwrap();
    let mut lines = BufReader::new(broker.stdout.take().unwrap()).lines();
    let brokers = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("broker prints its address")
        .unwrap()
        .expect("an address line");

    let store = Store::connect(&users::test_util::fresh_postgres_url().await, 5)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for name in ["ann", "bob", "cat", "dan"] {
        ids.push(new_user(&store, name).await);
    }
    // Larger than the broker's message.max.bytes: it can never be sent.
    store
        .create_post(ids[0], "poison".into(), "x".repeat(2_000_000), None)
        .await
        .unwrap();

    let stop = CancellationToken::new();
    let mut relays = Vec::new();
    for holder in ["replica-a", "replica-b"] {
        let bus: Arc<dyn EventBus> = Arc::new(kafka(&brokers, holder));
        let relay = OutboxRelay::new(store.clone(), bus, relay_config(holder));
        relays.push(tokio::spawn(relay.run(stop.clone())));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Kafka stops answering for longer than the lease (3 s); writes go on.
    signal(pid, "-STOP");
    for round in 0..3 {
        for (n, id) in ids.iter().enumerate() {
            rename(&store, *id, &format!("user{n}_r{round}")).await;
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
    }
    signal(pid, "-CONT");

    test_support::eventually(Duration::from_secs(30), "the outbox to drain", || async {
        store.pending_outbox(100).await.unwrap().is_empty()
    })
    .await;
    stop.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    let parked = store.parked_outbox().await.unwrap();
    assert_eq!(parked.len(), 1, "the poison event is parked: {parked:?}");

    // 4 users × (created + 3 renames), each id once, in version order.
    let checker = kafka(&brokers, "checker");
    let mut sub = checker.subscribe(USERS_TOPIC, "checker").await.unwrap();
    let mut seen = HashSet::new();
    let mut applied: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    while seen.len() < 16 {
        let delivery = tokio::time::timeout(Duration::from_secs(30), sub.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of 16 events arrived", seen.len()))
            .unwrap();
        if seen.insert(delivery.event.id.clone()) {
            applied
                .entry(delivery.event.subject.clone())
                .or_default()
                .push(delivery.event.aggregate_version);
        }
        sub.commit(&delivery).await.unwrap();
    }
    assert_eq!(applied.len(), 4);
    for (subject, versions) in &applied {
        assert_eq!(
            versions,
            &[1, 2, 3, 4],
            "user {subject}: every version once, in order"
        );
    }
}
