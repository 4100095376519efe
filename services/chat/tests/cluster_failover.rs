//! Chat on a Redis Cluster whose master for a room is paused until its
//! replica takes over: the room keeps delivering across replicas, in one
//! order, once the cluster has failed over, with no restart.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use chat::broker::{Broker, Draft, HistoryLimits, RedisBroker, RedisBrokerConfig};
use chat::hub::{Hub, Next, Registration};
use chat::protocol::Member;
use test_support::PrivateRedisCluster;

async fn replica(url: &str, prefix: &str) -> (Arc<Hub>, Arc<dyn Broker>) {
    let hub = Arc::new(Hub::default());
    let config = RedisBrokerConfig {
        url: url.to_owned(),
        prefix: prefix.to_owned(),
        history: HistoryLimits {
            size: 100,
            ttl: Duration::from_secs(60),
        },
        presence_ttl: Duration::from_secs(30),
        redis: common::redis::RedisOptions::default(),
    };
    let broker = RedisBroker::connect(config, hub.clone()).await.unwrap();
    (hub, broker)
}

fn member(id: u64) -> Member {
    Member {
        id,
        name: format!("user{id}"),
    }
}

async fn subscriber(hub: &Arc<Hub>, broker: &Arc<dyn Broker>, id: u64, room: &str) -> Registration {
    let reg = hub.register(member(id), 1024, 10).unwrap();
    hub.join(room, reg.id);
    broker.watch(room).await.unwrap();
    reg
}

/// The next message frame's (content, offset) within `wait`.
async fn next_message(reg: &mut Registration, wait: Duration) -> Option<(String, u64)> {
    loop {
        let next = tokio::time::timeout(wait, reg.outbound.next()).await.ok()?;
        let Next::Frame(frame) = next else {
            panic!("the connection was ended: {next:?}")
        };
        let frame: serde_json::Value = serde_json::from_str(&frame).unwrap();
        if let (Some(content), Some(offset)) = (frame["content"].as_str(), frame["offset"].as_u64())
        {
            return Some((content.to_owned(), offset));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_master_fails_over_and_rooms_keep_delivering_across_replicas() {
    let cluster = PrivateRedisCluster::start();
    let url = cluster.url();
    let prefix = "chat-failover:";
    let (hub_a, a) = replica(&url, prefix).await;
    let (hub_b, b) = replica(&url, prefix).await;
    let mut on_b = subscriber(&hub_b, &b, 2, "lobby").await;
    let _on_a = subscriber(&hub_a, &a, 1, "lobby").await;

    let draft = |content: &str| Draft {
        user: member(1),
        content: content.to_owned(),
        mentions: Vec::new(),
    };
    a.publish("lobby", draft("before")).await.unwrap();
    let (content, before) = next_message(&mut on_b, Duration::from_secs(5))
        .await
        .expect("delivered before the failover");
    assert_eq!(content, "before");

    // Once the replica has the room, pause the master of the room's slot.
    let master = cluster.master_of("{lobby}");
    cluster.wait_replicated(master);
    let paused = cluster.pause_until_failover(master);

    // Publishing fails while the slot has no master; once the replica has
    // taken over, a message published on A reaches B.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(45);
    let mut attempt = 0;
    let delivered = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the room delivered nothing within 45 s of the failover"
        );
        attempt += 1;
        let content = format!("after-{attempt}");
        if a.publish("lobby", draft(&content)).await.is_ok() {
            let mut seen = None;
            while let Some((got, offset)) = next_message(&mut on_b, Duration::from_secs(2)).await {
                if got == content {
                    seen = Some(offset);
                    break;
                }
            }
            if let Some(offset) = seen {
                break offset;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    };
    assert!(
        delivered > before,
        "offsets keep growing across the failover: {before} then {delivered}"
    );

    // And the room goes on in order: what A publishes next, B gets next.
    a.publish("lobby", draft("settled")).await.unwrap();
    let (content, offset) = next_message(&mut on_b, Duration::from_secs(5))
        .await
        .expect("delivered after the failover");
    assert_eq!(content, "settled");
    assert_eq!(offset, delivered + 1);
    drop(paused);
}
