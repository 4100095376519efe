//! Contract tests for the service registry, run against the static
//! registry and against Consul (the in-test agent in `support`): what
//! every backend must do for the host and the gateway to work on it.

#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use common::discovery::{ConsulRegistry, Instance, Registration, Registry, StaticRegistry};
use support::fake_consul::{FakeConsul, start_fake};
use test_support::{contract, eventually};

type Backends = Vec<(&'static str, Arc<dyn Registry>)>;

/// Both backends; the fake agent lives as long as the returned guard.
fn registries() -> (FakeConsul, Backends) {
    let consul = start_fake(false);
    let backends: Backends = vec![
        ("static", Arc::new(StaticRegistry::new(Vec::new()))),
        (
            "consul",
            Arc::new(ConsulRegistry::new(consul.address.clone(), None)),
        ),
    ];
    (consul, backends)
}

fn instance(service: &str, id: &str, port: u16) -> Instance {
    Instance {
        id: id.into(),
        service: service.into(),
        host: "10.0.0.7".into(),
        http_port: port,
        grpc_port: Some(port + 1),
        tags: vec!["platform".into(), "blue".into()],
    }
}

async fn ids(registry: &dyn Registry, service: &str) -> Vec<String> {
    let mut ids: Vec<String> = registry
        .healthy_instances(service)
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    ids.sort();
    ids
}

#[tokio::test]
async fn a_registered_instance_is_listed_as_registered_under_its_service_only() {
    let (_consul, backends) = registries();
    contract(backends, |backend, registry| async move {
        let users = instance("users", "users-1", 8081);
        registry
            .register(&Registration::new(users.clone()))
            .await
            .unwrap();
        registry
            .register(&Registration::new(instance("chat", "chat-1", 8082)))
            .await
            .unwrap();
        let listed = registry.healthy_instances("users").await.unwrap();
        assert_eq!(listed, [users], "{backend}");
        assert_eq!(
            ids(registry.as_ref(), "chat").await,
            ["chat-1"],
            "{backend}"
        );
        assert!(
            registry
                .healthy_instances("search")
                .await
                .unwrap()
                .is_empty(),
            "{backend}: a service nobody registered has no instances"
        );
    })
    .await;
}

#[tokio::test]
async fn registering_an_id_again_replaces_it_instead_of_adding_a_second() {
    let (_consul, backends) = registries();
    contract(backends, |backend, registry| async move {
        registry
            .register(&Registration::new(instance("users", "users-1", 8081)))
            .await
            .unwrap();
        let moved = instance("users", "users-1", 9081);
        registry
            .register(&Registration::new(moved.clone()))
            .await
            .unwrap();
        assert_eq!(
            registry.healthy_instances("users").await.unwrap(),
            [moved],
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_deregistered_instance_is_no_longer_listed_and_the_others_stay() {
    let (_consul, backends) = registries();
    contract(backends, |backend, registry| async move {
        for (id, port) in [("users-1", 8081), ("users-2", 8091)] {
            registry
                .register(&Registration::new(instance("users", id, port)))
                .await
                .unwrap();
        }
        assert_eq!(
            ids(registry.as_ref(), "users").await,
            ["users-1", "users-2"]
        );
        registry.deregister("users-1").await.unwrap();
        assert_eq!(
            ids(registry.as_ref(), "users").await,
            ["users-2"],
            "{backend}"
        );
    })
    .await;
}

#[tokio::test]
async fn a_watch_follows_registrations_and_deregistrations() {
    let (_consul, backends) = registries();
    contract(backends, |backend, registry| async move {
        let watch = registry.watch("users");
        registry
            .register(&Registration::new(instance("users", "users-1", 8081)))
            .await
            .unwrap();
        let seen = |want: &'static [&'static str]| {
            let watch = watch.clone();
            async move {
                let mut ids: Vec<String> = watch.borrow().iter().map(|i| i.id.clone()).collect();
                ids.sort();
                ids == want
            }
        };
        eventually(
            Duration::from_secs(10),
            &format!("{backend}: the watch to see users-1"),
            || seen(&["users-1"]),
        )
        .await;
        registry.deregister("users-1").await.unwrap();
        eventually(
            Duration::from_secs(10),
            &format!("{backend}: the watch to see users-1 leave"),
            || seen(&[]),
        )
        .await;
    })
    .await;
}

#[tokio::test]
async fn a_reachable_registry_answers_ping() {
    let (_consul, backends) = registries();
    contract(backends, |backend, registry| async move {
        registry
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{backend}: {e}"));
    })
    .await;
}
