//! Contract tests for the room brokers: one suite, run against the
//! in-process broker and the Redis broker on the machine's Redis
//! (`TEST_REDIS_URL`, default `redis://127.0.0.1:6379`; a missing server
//! fails the test). Then what only Redis does: replicas sharing rooms.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chat::broker::{Broker, Draft, HistoryLimits, MemoryBroker, RedisBroker, RedisBrokerConfig};
use chat::hub::{Frame, Hub, Next, Registration};
use chat::protocol::{Member, Position};

use test_support::backends::redis_url;

/// A fresh key space per test, so runs never see each other's rooms.
fn prefix() -> String {
    format!("chat-test:{}:", uuid::Uuid::new_v4().simple())
}

async fn redis_replica(
    prefix: &str,
    history: HistoryLimits,
    presence_ttl: Duration,
) -> (Arc<Hub>, Arc<RedisBroker>) {
    replica_at(redis_url(), prefix, history, presence_ttl).await
}

async fn replica_at(
    url: String,
    prefix: &str,
    history: HistoryLimits,
    presence_ttl: Duration,
) -> (Arc<Hub>, Arc<RedisBroker>) {
    let hub = Arc::new(Hub::default());
    let config = RedisBrokerConfig {
        url: url.clone(),
        prefix: prefix.to_owned(),
        history,
        presence_ttl,
        redis: common::redis::RedisOptions::default(),
    };
    let broker = RedisBroker::connect(config, hub.clone())
        .await
        .unwrap_or_else(|e| {
            panic!("Redis at {url} must be running for this test (make test starts it): {e:?}")
        });
    (hub, broker)
}

async fn backends(history: HistoryLimits) -> Vec<(&'static str, Arc<Hub>, Arc<dyn Broker>)> {
    let memory_hub = Arc::new(Hub::default());
    let memory = Arc::new(MemoryBroker::new(memory_hub.clone(), history));
    let (redis_hub, redis) = redis_replica(&prefix(), history, Duration::from_secs(30)).await;
    let (cluster_hub, cluster) = replica_at(
        test_support::backends::redis_cluster_url(),
        &prefix(),
        history,
        Duration::from_secs(30),
    )
    .await;
    vec![
        ("memory", memory_hub, memory),
        ("redis", redis_hub, redis),
        ("redis-cluster", cluster_hub, cluster),
    ]
}

fn limits(size: usize) -> HistoryLimits {
    HistoryLimits {
        size,
        ttl: Duration::from_secs(60),
    }
}

fn member(id: u64) -> Member {
    Member {
        id,
        name: format!("user{id}"),
    }
}

fn draft(id: u64, content: &str) -> Draft {
    Draft {
        user: member(id),
        content: content.to_owned(),
        mentions: Vec::new(),
    }
}

/// Registers a connection in `room` and makes the broker deliver there.
async fn subscriber(hub: &Arc<Hub>, broker: &Arc<dyn Broker>, id: u64, room: &str) -> Registration {
    let reg = hub.register(member(id), 1024, 10).unwrap();
    hub.join(room, reg.id);
    broker.watch(room).await.unwrap();
    reg
}

async fn next_frame(reg: &mut Registration) -> serde_json::Value {
    let next = tokio::time::timeout(Duration::from_secs(5), reg.outbound.next())
        .await
        .expect("a frame within 5 s");
    let Next::Frame(frame) = next else {
        panic!("the connection was ended: {next:?}")
    };
    serde_json::from_str(&frame).unwrap()
}

#[tokio::test]
async fn offsets_grow_by_one_in_one_epoch_and_history_keeps_the_newest() {
    for (backend, _hub, broker) in backends(limits(5)).await {
        let mut epoch = None;
        for i in 1..=8u64 {
            let message = broker
                .publish("r", draft(1, &format!("m{i}")))
                .await
                .unwrap();
            assert_eq!(message.offset, i, "{backend}");
            assert_eq!(message.room, "r");
            assert_eq!(message.user, member(1));
            let e = epoch.get_or_insert_with(|| message.epoch.clone());
            assert_eq!(*e, message.epoch, "{backend}: one epoch");
        }
        let history = broker.history("r", 3).await.unwrap();
        let contents: Vec<_> = history.missed.iter().map(|m| m.content.as_str()).collect();
        assert_eq!(contents, ["m6", "m7", "m8"], "{backend}");
        assert_eq!(history.position.offset, 8);
        let all = broker.history("r", 100).await.unwrap();
        assert_eq!(
            all.missed.len(),
            5,
            "{backend}: bounded by the history size"
        );
        assert_eq!(all.missed[0].offset, 4);
        let other = broker.history("other", 10).await.unwrap();
        assert!(other.missed.is_empty(), "{backend}: rooms are separate");
        assert_eq!(other.position.offset, 0);
    }
}

#[tokio::test]
async fn a_client_that_missed_messages_gets_exactly_those_in_order() {
    for (backend, _hub, broker) in backends(limits(100)).await {
        let first = broker.publish("r", draft(1, "seen")).await.unwrap();
        let seen = Position {
            offset: first.offset,
            epoch: first.epoch.clone(),
        };
        for i in 0..50 {
            broker
                .publish("r", draft(2, &format!("missed {i}")))
                .await
                .unwrap();
        }
        let recovery = broker.recover("r", Some(&seen), 100).await.unwrap();
        assert!(recovery.recovered, "{backend}");
        assert_eq!(recovery.position.offset, 51);
        let offsets: Vec<u64> = recovery.missed.iter().map(|m| m.offset).collect();
        assert_eq!(offsets, (2..=51).collect::<Vec<_>>(), "{backend}");
        assert_eq!(recovery.missed[0].content, "missed 0");

        let fresh = broker.recover("r", None, 100).await.unwrap();
        assert!(fresh.recovered && fresh.missed.is_empty(), "{backend}");
        assert_eq!(fresh.position, recovery.position);

        let too_far = broker.recover("r", Some(&seen), 20).await.unwrap();
        assert!(!too_far.recovered, "{backend}: more than the limit");
        assert!(too_far.missed.is_empty());

        let other_epoch = Position {
            offset: 1,
            epoch: "someone-else".into(),
        };
        let lost = broker.recover("r", Some(&other_epoch), 100).await.unwrap();
        assert!(!lost.recovered, "{backend}: the epoch changed");

        let ahead = Position {
            offset: 999,
            epoch: first.epoch.clone(),
        };
        assert!(
            !broker
                .recover("r", Some(&ahead), 100)
                .await
                .unwrap()
                .recovered
        );
    }
}

#[tokio::test]
async fn recovery_past_the_trimmed_history_is_refused() {
    for (backend, _hub, broker) in backends(limits(10)).await {
        let first = broker.publish("r", draft(1, "old")).await.unwrap();
        for i in 0..20 {
            broker
                .publish("r", draft(1, &format!("{i}")))
                .await
                .unwrap();
        }
        let since = Position {
            offset: first.offset,
            epoch: first.epoch,
        };
        let recovery = broker.recover("r", Some(&since), 100).await.unwrap();
        assert!(
            !recovery.recovered,
            "{backend}: offsets 2..=11 were trimmed"
        );
        assert!(recovery.missed.is_empty());
    }
}

#[tokio::test]
async fn an_expired_history_starts_a_new_epoch() {
    let history = HistoryLimits {
        size: 10,
        ttl: Duration::from_millis(300),
    };
    for (backend, _hub, broker) in backends(history).await {
        let before = broker.publish("r", draft(1, "a")).await.unwrap();
        tokio::time::sleep(Duration::from_millis(1_300)).await;
        let after = broker.publish("r", draft(1, "b")).await.unwrap();
        assert_ne!(before.epoch, after.epoch, "{backend}");
        assert_eq!(after.offset, 1, "{backend}: offsets start again");
        let since = Position {
            offset: before.offset,
            epoch: before.epoch,
        };
        assert!(
            !broker
                .recover("r", Some(&since), 10)
                .await
                .unwrap()
                .recovered
        );
    }
}

#[tokio::test]
async fn members_of_a_room_receive_its_messages_in_order_and_nothing_else() {
    for (backend, hub, broker) in backends(limits(100)).await {
        let mut a = subscriber(&hub, &broker, 1, "room-a").await;
        let mut b = subscriber(&hub, &broker, 2, "room-b").await;
        for i in 0..20 {
            broker
                .publish("room-a", draft(1, &format!("a{i}")))
                .await
                .unwrap();
        }
        broker.publish("room-b", draft(2, "b0")).await.unwrap();
        broker
            .broadcast("room-a", Frame::from(r#"{"type":"typing"}"#))
            .await
            .unwrap();
        for i in 0..20 {
            let frame = next_frame(&mut a).await;
            assert_eq!(frame["type"], "message", "{backend}");
            assert_eq!(frame["content"], format!("a{i}"), "{backend}");
            assert_eq!(frame["offset"], i + 1);
        }
        assert_eq!(next_frame(&mut a).await["type"], "typing", "{backend}");
        let frame = next_frame(&mut b).await;
        assert_eq!(frame["content"], "b0", "{backend}");
        assert!(
            b.outbound.try_recv().is_err(),
            "{backend}: room-a's traffic stayed out of room-b"
        );
    }
}

#[tokio::test]
async fn presence_lists_members_until_they_leave() {
    for (backend, _hub, broker) in backends(limits(10)).await {
        assert!(
            broker.set_presence("r", &member(1), true).await.unwrap(),
            "{backend}"
        );
        assert!(broker.set_presence("r", &member(2), true).await.unwrap());
        assert_eq!(
            broker.presence("r").await.unwrap(),
            if backend == "memory" {
                // In process, presence is the hub's members, and nobody
                // joined the hub here.
                vec![]
            } else {
                vec![member(1), member(2)]
            },
            "{backend}"
        );
        assert_eq!(
            broker.presence_count("r").await.unwrap(),
            if backend == "memory" { 0 } else { 2 },
            "{backend}"
        );
        assert!(broker.set_presence("r", &member(1), false).await.unwrap());
        if backend == "redis" {
            assert_eq!(broker.presence("r").await.unwrap(), vec![member(2)]);
            assert_eq!(broker.presence_count("r").await.unwrap(), 1);
        }
    }
}

#[tokio::test]
async fn in_process_presence_is_the_rooms_connected_members() {
    let hub = Arc::new(Hub::default());
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new(hub.clone(), limits(10)));
    let a = subscriber(&hub, &broker, 1, "r").await;
    let _b = subscriber(&hub, &broker, 2, "r").await;
    let _also_b = subscriber(&hub, &broker, 2, "r").await;
    assert_eq!(
        broker.presence("r").await.unwrap(),
        vec![member(1), member(2)]
    );
    assert_eq!(
        broker.presence_count("r").await.unwrap(),
        2,
        "users, not connections"
    );
    drop(a);
    assert_eq!(broker.presence("r").await.unwrap(), vec![member(2)]);
    assert_eq!(broker.presence_count("r").await.unwrap(), 1);
}

#[tokio::test]
async fn a_message_published_on_one_replica_reaches_members_on_another() {
    let prefix = prefix();
    let (hub_a, a) = redis_replica(&prefix, limits(100), Duration::from_secs(30)).await;
    let (hub_b, b) = redis_replica(&prefix, limits(100), Duration::from_secs(30)).await;
    let (a, b): (Arc<dyn Broker>, Arc<dyn Broker>) = (a, b);
    let mut on_a = subscriber(&hub_a, &a, 1, "shared").await;
    let mut on_b = subscriber(&hub_b, &b, 2, "shared").await;
    for i in 0..10 {
        let (from, user) = if i % 2 == 0 { (&a, 1) } else { (&b, 2) };
        from.publish("shared", draft(user, &format!("m{i}")))
            .await
            .unwrap();
    }
    for reg in [&mut on_a, &mut on_b] {
        for i in 0..10 {
            let frame = next_frame(reg).await;
            assert_eq!(frame["content"], format!("m{i}"));
            assert_eq!(frame["offset"], i + 1, "one order for every replica");
        }
    }
    let history_a = a.history("shared", 100).await.unwrap();
    let history_b = b.history("shared", 100).await.unwrap();
    assert_eq!(history_a, history_b, "one shared history");
    assert_eq!(history_a.missed.len(), 10);

    // Once B's last member leaves, B stops hearing the room.
    drop(on_b);
    b.unwatch("shared").await.unwrap();
    a.publish("shared", draft(1, "after")).await.unwrap();
    assert_eq!(next_frame(&mut on_a).await["content"], "after");
}

#[tokio::test]
async fn presence_spans_replicas_and_a_dead_replicas_members_expire() {
    let prefix = prefix();
    let ttl = Duration::from_millis(600);
    let (_hub_a, a) = redis_replica(&prefix, limits(10), ttl).await;
    let (_hub_b, b) = redis_replica(&prefix, limits(10), ttl).await;
    assert!(
        a.set_presence("r", &member(1), true).await.unwrap(),
        "first join"
    );
    assert!(
        !b.set_presence("r", &member(1), true).await.unwrap(),
        "already present through A"
    );
    assert!(b.set_presence("r", &member(2), true).await.unwrap());
    assert_eq!(a.presence("r").await.unwrap(), vec![member(1), member(2)]);
    assert!(
        !a.set_presence("r", &member(1), false).await.unwrap(),
        "still present through B"
    );
    assert_eq!(b.presence("r").await.unwrap(), vec![member(1), member(2)]);

    // B dies without saying goodbye; its members are gone after the TTL.
    drop(b);
    tokio::time::sleep(ttl * 2).await;
    assert!(a.presence("r").await.unwrap().is_empty());
}

#[tokio::test]
async fn a_live_replica_keeps_its_members_present_past_the_ttl() {
    let ttl = Duration::from_millis(600);
    let (hub, broker) = redis_replica(&prefix(), limits(10), ttl).await;
    let broker: Arc<dyn Broker> = broker;
    let _reg = subscriber(&hub, &broker, 7, "r").await;
    broker.set_presence("r", &member(7), true).await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    assert_eq!(broker.presence("r").await.unwrap(), vec![member(7)]);
}

#[tokio::test]
async fn a_created_room_keeps_its_access_rules_and_its_name_is_claimed_once() {
    for (name, _hub, broker) in backends(limits(10)).await {
        let room = format!("private-{}", uuid::Uuid::new_v4().simple());
        assert_eq!(broker.room_access(&room).await.unwrap(), None, "{name}");
        let access = chat::broker::RoomAccess {
            private: true,
            owner: 1,
            members: vec![1, 2],
            created_by: None,
        };
        assert!(broker.create_room(&room, &access).await.unwrap(), "{name}");
        let other = chat::broker::RoomAccess {
            private: false,
            owner: 3,
            members: Vec::new(),
            created_by: None,
        };
        assert!(
            !broker.create_room(&room, &other).await.unwrap(),
            "{name}: the second claim loses"
        );
        let kept = broker.room_access(&room).await.unwrap().unwrap();
        assert_eq!(kept, access, "{name}");
        assert!(kept.admits(2) && !kept.admits(3), "{name}");
    }
}

#[tokio::test]
async fn a_remembered_value_is_kept_once_and_returned_to_later_callers_until_it_expires() {
    for (name, _hub, broker) in backends(limits(10)).await {
        let key = format!("k-{}", uuid::Uuid::new_v4().simple());
        let ttl = Duration::from_millis(300);
        assert_eq!(
            broker.remember(&key, "first", ttl).await.unwrap(),
            None,
            "{name}"
        );
        assert_eq!(
            broker
                .remember(&key, "second", ttl)
                .await
                .unwrap()
                .as_deref(),
            Some("first"),
            "{name}: the first value stays"
        );
        tokio::time::sleep(ttl * 2).await;
        assert_eq!(
            broker.remember(&key, "third", ttl).await.unwrap(),
            None,
            "{name}: an expired key is free again"
        );
    }
}
