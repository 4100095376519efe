//! The outbox relay against a real Kafka-protocol broker (librdkafka's mock
//! cluster) and the in-process bus.

#![allow(clippy::unwrap_used)]
#![allow(clippy::disallowed_methods)] // test clients of servers the test starts

use test_support::TempDir;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::events::{EventBus, KafkaBus, KafkaConfig, MemoryBus};
use rdkafka::mocking::MockCluster;
use users::domain::{Email, Username};
use users::events::{POSTS_TOPIC, USERS_TOPIC};
use users::outbox::{OutboxRelay, RelayConfig};
use users::store::{NewUser, Store, UserChanges};

fn relay_config() -> RelayConfig {
    RelayConfig {
        batch: 100,
        idle_poll: Duration::from_millis(20),
        lease: Duration::from_secs(5),
        holder: "test".into(),
        max_attempts: 3,
        retention: Duration::from_secs(3600),
    }
}

fn new_user(name: &str) -> NewUser {
    NewUser {
        username: Username::parse(name).unwrap(),
        email: Email::parse(&format!("{name}@example.com")).unwrap(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
    }
}

/// Three users with a few updates each, and a post: 10 events.
async fn write_history(store: &Store) {
    for name in ["ann", "bob", "cat"] {
        let user = store.create_user(new_user(name), None).await.unwrap();
        for n in 0..2 {
            let changes = UserChanges {
                username: Some(Username::parse(&format!("{name}_{n}")).unwrap()),
                ..UserChanges::default()
            };
            store
                .update_user(user.id, changes, None, None)
                .await
                .unwrap();
        }
    }
    store
        .create_post(1, "hello".into(), "world".into(), None)
        .await
        .unwrap();
}

#[tokio::test]
async fn relay_publishes_cloud_events_to_the_in_process_bus_and_marks_them_sent() {
    let dir = TempDir::new("users-test");
    let store = Store::connect(&dir.sqlite_url("users.db"), 1)
        .await
        .unwrap();
    write_history(&store).await;
    let bus = MemoryBus::default();
    let relay = OutboxRelay::new(store.clone(), Arc::new(bus.clone()), relay_config());
    assert_eq!(relay.relay_once().await.unwrap(), 10);
    assert_eq!(
        relay.relay_once().await.unwrap(),
        0,
        "nothing is sent twice"
    );

    let users = bus.published(USERS_TOPIC);
    assert_eq!(users.len(), 9);
    let first = &users[0];
    assert_eq!(
        (
            first.event_type.as_str(),
            first.subject.as_str(),
            first.aggregate_version
        ),
        ("UserCreated", "1", 1)
    );
    assert_eq!(first.source, "/users");
    let payload: serde_json::Value = serde_json::from_slice(&first.data).unwrap();
    assert_eq!(payload["username"], "ann");
    assert_eq!(bus.published(POSTS_TOPIC).len(), 1);
    assert!(store.pending_outbox(10).await.unwrap().is_empty());
}

/// Reads `topic` with a fresh consumer group until `expected` distinct event
/// ids have arrived, as an idempotent consumer would: duplicates (same id)
/// are counted but ignored. Returns, per aggregate, the versions applied.
async fn consume_idempotently(
    bus: &KafkaBus,
    topic: &str,
    expected: usize,
) -> (BTreeMap<String, Vec<u64>>, usize) {
    let mut sub = bus
        .subscribe(topic, &format!("checker-{}", uuid::Uuid::new_v4()))
        .await
        .unwrap();
    let mut seen = HashSet::new();
    let mut applied: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut duplicates = 0;
    loop {
        // Until every expected id is in, wait long; after that, drain what
        // else the topic holds (the redeliveries) until it goes quiet.
        let wait = if seen.len() < expected {
            Duration::from_secs(30)
        } else {
            Duration::from_secs(2)
        };
        let delivery = match tokio::time::timeout(wait, sub.next()).await {
            Ok(delivery) => delivery.unwrap(),
            Err(_) if seen.len() >= expected => break,
            Err(_) => panic!("only {} of {expected} events arrived", seen.len()),
        };
        if seen.insert(delivery.event.id.clone()) {
            applied
                .entry(delivery.event.subject.clone())
                .or_default()
                .push(delivery.event.aggregate_version);
        } else {
            duplicates += 1;
        }
        sub.commit(&delivery).await.unwrap();
    }
    (applied, duplicates)
}

#[tokio::test]
async fn events_survive_a_refusing_broker_and_a_lost_acknowledgement_exactly_once_per_id_in_order()
{
    let dir = TempDir::new("users-test");
    let store = Store::connect(&dir.sqlite_url("users.db"), 1)
        .await
        .unwrap();
    let cluster = MockCluster::new(1).unwrap();
    let bus = KafkaBus::new(KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        client_id: "relay-test".into(),
        message_timeout: Duration::from_secs(2),
        session_timeout: Duration::from_secs(6),
        fetch_wait_max: Duration::from_millis(100),
        security: Default::default(),
    })
    .unwrap();
    let bus: Arc<dyn EventBus> = Arc::new(bus);
    let relay = OutboxRelay::new(store.clone(), bus.clone(), relay_config());

    // Committed, then the broker refuses: nothing is marked sent.
    write_history(&store).await;
    cluster.broker_down(1).unwrap();
    assert!(
        relay.relay_once().await.is_err(),
        "publishing to a down broker fails"
    );
    assert_eq!(
        store.pending_outbox(100).await.unwrap().len(),
        10,
        "unsent events stay in the outbox"
    );

    // Recovery: everything goes out.
    cluster.broker_up(1).unwrap();
    let mut sent = 0;
    for _ in 0..20 {
        match relay.relay_once().await {
            Ok(n) => sent += n,
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
        if store.pending_outbox(100).await.unwrap().is_empty() {
            break;
        }
    }
    assert!(store.pending_outbox(100).await.unwrap().is_empty());
    assert!(sent >= 10);

    // A crash after publishing but before marking: the relay publishes the
    // same events again on restart.
    let pool = sqlx::AnyPool::connect(&dir.sqlite_url("users.db"))
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET sent_at_ms = NULL WHERE position > 5")
        .execute(&pool)
        .await
        .unwrap();
    let restarted = OutboxRelay::new(store.clone(), bus.clone(), relay_config());
    assert_eq!(restarted.relay_once().await.unwrap(), 5);

    let kafka = KafkaBus::new(KafkaConfig {
        brokers: cluster.bootstrap_servers(),
        client_id: "checker".into(),
        message_timeout: Duration::from_secs(5),
        session_timeout: Duration::from_secs(6),
        fetch_wait_max: Duration::from_millis(100),
        security: Default::default(),
    })
    .unwrap();
    let (users, duplicates) = consume_idempotently(&kafka, USERS_TOPIC, 9).await;
    assert_eq!(users.len(), 3, "three user aggregates");
    for (subject, versions) in &users {
        assert_eq!(
            versions,
            &[1, 2, 3],
            "user {subject}: every version once, in order"
        );
    }
    assert!(
        duplicates > 0,
        "the lost acknowledgement really caused redelivery"
    );
    let (posts, _) = consume_idempotently(&kafka, POSTS_TOPIC, 1).await;
    assert_eq!(posts.values().next().unwrap(), &[1]);
}

#[tokio::test]
async fn only_the_lease_holder_relays_and_a_released_lease_passes_on() {
    let dir = TempDir::new("users-test");
    let store = Store::connect(&dir.sqlite_url("users.db"), 1)
        .await
        .unwrap();
    assert!(
        store
            .try_lead("replica-a", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lead("replica-b", Duration::from_secs(30))
            .await
            .unwrap()
    );
    assert!(
        store
            .try_lead("replica-a", Duration::from_secs(30))
            .await
            .unwrap(),
        "renewal"
    );
    store.release_lead("replica-a").await.unwrap();
    assert!(
        store
            .try_lead("replica-b", Duration::from_secs(30))
            .await
            .unwrap()
    );
}

#[tokio::test]
async fn an_idle_relay_publishes_as_soon_as_a_command_commits() {
    let dir = TempDir::new("users-test");
    let store = Store::connect(&dir.sqlite_url("users.db"), 1)
        .await
        .unwrap();
    let bus = MemoryBus::default();
    let config = RelayConfig {
        idle_poll: Duration::from_secs(30),
        ..relay_config()
    };
    let stop = common::shutdown::CancellationToken::new();
    let relay = tokio::spawn(
        OutboxRelay::new(store.clone(), Arc::new(bus.clone()), config).run(stop.clone()),
    );
    // Let the relay finish its first (empty) round and go idle.
    tokio::time::sleep(Duration::from_millis(200)).await;

    store.create_user(new_user("ann"), None).await.unwrap();
    let started = std::time::Instant::now();
    while bus.published(USERS_TOPIC).is_empty() {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "not waiting for the 30 s poll"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.cancel();
    relay.await.unwrap();
}

/// A bus that refuses one event for ever and takes every other.
struct Poisoned {
    inner: MemoryBus,
    poison: (&'static str, &'static str),
    /// Every publish fails, as with no broker reachable.
    down: bool,
}

#[async_trait::async_trait]
impl EventBus for Poisoned {
    fn backend(&self) -> &'static str {
        "poisoned"
    }

    async fn publish(
        &self,
        topic: &str,
        event: &common::events::CloudEvent,
    ) -> Result<(), common::events::EventBusError> {
        if (event.event_type.as_str(), event.subject.as_str()) == self.poison {
            return Err(common::events::EventBusError::Rejected {
                topic: topic.to_owned(),
                reason: "the broker rejects this record".into(),
            });
        }
        if self.down {
            return Err(common::events::EventBusError::Publish {
                topic: topic.to_owned(),
                source: "all brokers down".into(),
            });
        }
        self.inner.publish(topic, event).await
    }

    async fn subscribe(
        &self,
        topic: &str,
        group: &str,
    ) -> Result<Box<dyn common::events::Subscription>, common::events::EventBusError> {
        self.inner.subscribe(topic, group).await
    }
}

#[tokio::test]
async fn a_poison_event_is_parked_after_its_attempts_and_the_rest_flow() {
    let dir = TempDir::new("users-test");
    let store = Store::connect(&dir.sqlite_url("users.db"), 1)
        .await
        .unwrap();
    write_history(&store).await;
    let bus = MemoryBus::default();
    // An outage first: every publish fails, which says nothing about any
    // one event, so nothing is parked however long it lasts.
    let outage = Poisoned {
        inner: bus.clone(),
        poison: ("", ""),
        down: true,
    };
    let relay = OutboxRelay::new(store.clone(), Arc::new(outage), relay_config());
    for _ in 0..5 {
        assert!(relay.relay_once().await.is_err());
    }
    assert!(store.parked_outbox().await.unwrap().is_empty());
    let poisoned = Poisoned {
        inner: bus.clone(),
        poison: ("UserCreated", "2"),
        down: false,
    };
    let relay = OutboxRelay::new(store.clone(), Arc::new(poisoned), relay_config());
    // Attempts 1 and 2 fail (the rest of each batch is sent); the third parks it.
    for _ in 0..3 {
        assert!(relay.relay_once().await.is_err());
    }
    assert_eq!(
        relay.relay_once().await.unwrap(),
        0,
        "nothing left but the parked event"
    );
    let users = bus.published(USERS_TOPIC);
    assert_eq!(users.len(), 8, "every event but the poison one, each once");
    assert!(
        !users
            .iter()
            .any(|e| e.event_type == "UserCreated" && e.subject == "2")
    );
    assert_eq!(bus.published(POSTS_TOPIC).len(), 1);
    let parked = store.parked_outbox().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].1, 3, "three attempts");
    assert!(
        parked[0].2.contains("rejects this record"),
        "{:?}",
        parked[0]
    );
    assert_eq!(
        store.outbox_lag_ms().await.unwrap(),
        0,
        "a parked event is not lag"
    );

    // An operator puts it back once the cause is fixed (here: a healthy bus).
    assert_eq!(store.retry_parked().await.unwrap(), 1);
    let healthy = OutboxRelay::new(store.clone(), Arc::new(bus.clone()), relay_config());
    assert_eq!(healthy.relay_once().await.unwrap(), 1);
    assert_eq!(bus.published(USERS_TOPIC).len(), 9);
    assert!(store.parked_outbox().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_relay_whose_lease_expired_records_nothing_and_sent_rows_are_pruned() {
    let dir = TempDir::new("users-test");
    let store = Store::connect(&dir.sqlite_url("users.db"), 1)
        .await
        .unwrap();
    write_history(&store).await;
    let pending = store.pending_outbox(100).await.unwrap();
    let positions: Vec<i64> = pending.iter().map(|e| e.event.position).collect();
    // Replica A's lease runs out while it publishes; B takes over.
    assert!(store.try_lead("a", Duration::from_millis(1)).await.unwrap());
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(store.try_lead("b", Duration::from_secs(30)).await.unwrap());
    assert!(
        !store.mark_sent(&positions, "a").await.unwrap(),
        "A's late results are refused"
    );
    assert_eq!(
        store.pending_outbox(100).await.unwrap().len(),
        10,
        "B relays them"
    );
    assert!(store.mark_sent(&positions, "b").await.unwrap());
    assert!(store.pending_outbox(100).await.unwrap().is_empty());
    assert_eq!(
        store.prune_sent(Duration::from_secs(3600)).await.unwrap(),
        0,
        "recent rows stay"
    );
    tokio::time::sleep(Duration::from_millis(5)).await;
    assert_eq!(
        store.prune_sent(Duration::from_millis(1)).await.unwrap(),
        10
    );
}
