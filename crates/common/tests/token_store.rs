//! One contract for both token stores: in process, and the real Redis at
//! `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`; a missing server
//! fails the test).

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use common::auth::store::RedisTokenStore;
use common::auth::{MemoryTokenStore, Rotation, TokenStore};
use test_support::backends::{missing, redis_cluster_url, redis_url, unique};
use test_support::contract;

async fn on(url: String) -> Arc<dyn TokenStore> {
    let (client, _subscriber) = common::redis::connect(&url, &Default::default())
        .await
        .unwrap_or_else(|e| panic!("{}", missing("Redis", &url, &e)));
    Arc::new(RedisTokenStore::new(client))
}

async fn backends() -> Vec<(&'static str, Arc<dyn TokenStore>)> {
    vec![
        (
            "memory",
            Arc::new(MemoryTokenStore::default()) as Arc<dyn TokenStore>,
        ),
        ("redis", on(redis_url()).await),
        ("redis-cluster", on(redis_cluster_url()).await),
    ]
}

const TTL: Duration = Duration::from_secs(60);

#[tokio::test]
async fn only_the_newest_refresh_token_rotates_and_a_reused_one_revokes_the_family() {
    contract(backends().await, |_, store| async move {
        let family = unique("fam");
        store.start_family(&family, "r1", TTL).await.unwrap();
        assert_eq!(
            store.rotate(&family, "r1", "r2", TTL).await.unwrap(),
            Rotation::Rotated
        );
        assert_eq!(
            store.rotate(&family, "r2", "r3", TTL).await.unwrap(),
            Rotation::Rotated
        );
        assert!(!store.is_revoked(&family, "a1").await.unwrap());
        // r1 again: someone kept an old token.
        assert_eq!(
            store.rotate(&family, "r1", "x", TTL).await.unwrap(),
            Rotation::Reused
        );
        // The legitimate holder's newest token no longer works either.
        assert_eq!(
            store.rotate(&family, "r3", "r4", TTL).await.unwrap(),
            Rotation::Unknown
        );
        assert!(
            store.is_revoked(&family, "a1").await.unwrap(),
            "the family's access tokens too"
        );
        let other = unique("fam");
        assert!(
            !store.is_revoked(&other, "a1").await.unwrap(),
            "other families are untouched"
        );
    })
    .await;
}

#[tokio::test]
async fn unknown_and_logged_out_families_do_not_rotate() {
    contract(backends().await, |_, store| async move {
        let never = unique("fam");
        assert_eq!(
            store.rotate(&never, "r1", "r2", TTL).await.unwrap(),
            Rotation::Unknown
        );
        let family = unique("fam");
        store.start_family(&family, "r1", TTL).await.unwrap();
        store.revoke_family(&family, TTL).await.unwrap();
        assert_eq!(
            store.rotate(&family, "r1", "r2", TTL).await.unwrap(),
            Rotation::Unknown
        );
        assert!(store.is_revoked(&family, "anything").await.unwrap());
    })
    .await;
}

#[tokio::test]
async fn a_revoked_token_id_is_refused_until_its_ttl_ends() {
    contract(backends().await, |_, store| async move {
        let family = unique("fam");
        store
            .revoke(&family, "a1", Duration::from_millis(300))
            .await
            .unwrap();
        assert!(store.is_revoked(&family, "a1").await.unwrap());
        assert!(!store.is_revoked(&family, "a2").await.unwrap());
        test_support::eventually(Duration::from_secs(5), "the revocation expires", || {
            let store = store.clone();
            let family = family.clone();
            async move { !store.is_revoked(&family, "a1").await.unwrap() }
        })
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_ticket_is_redeemed_once_even_by_racing_redemptions() {
    contract(backends().await, |_, store| async move {
        let ticket = unique("ticket");
        store.put_ticket(&ticket, "the token", TTL).await.unwrap();
        let racing = (0..8).map(|_| {
            let store = store.clone();
            let ticket = ticket.clone();
            async move { store.take_ticket(&ticket).await.unwrap() }
        });
        let won: Vec<String> = futures_util::future::join_all(racing)
            .await
            .into_iter()
            .flatten()
            .collect();
        assert_eq!(won, vec!["the token".to_owned()]);
        assert_eq!(store.take_ticket(&ticket).await.unwrap(), None);
        assert_eq!(store.take_ticket(&unique("never")).await.unwrap(), None);
    })
    .await;
}

#[tokio::test]
async fn an_expired_ticket_is_not_redeemed() {
    contract(backends().await, |_, store| async move {
        let ticket = unique("ticket");
        store
            .put_ticket(&ticket, "the token", Duration::from_millis(50))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(store.take_ticket(&ticket).await.unwrap(), None);
    })
    .await;
}
