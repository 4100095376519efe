//! Addresses from configuration, for running without Consul.
//!
//! Instances that register at run time are added to the configured ones, so
//! services sharing one registry in a single process (the all-in-one runner)
//! find each other at whatever ports they actually bound. There are no
//! health checks: every listed instance counts as healthy.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;
use tokio::sync::watch;

use super::{DiscoveryError, Instance, InstanceWatch, Registration, Registry};

pub struct StaticRegistry {
    // One channel per service name: the current list doubles as the state
    // watchers follow, so a registration reaches them without extra plumbing.
    services: Mutex<HashMap<String, watch::Sender<Vec<Instance>>>>,
}

impl StaticRegistry {
    pub fn new(instances: Vec<Instance>) -> Self {
        let mut by_service: HashMap<String, Vec<Instance>> = HashMap::new();
        for instance in instances {
            by_service
                .entry(instance.service.clone())
                .or_default()
                .push(instance);
        }
        let services = by_service
            .into_iter()
            .map(|(name, list)| (name, watch::Sender::new(list)))
            .collect();
        Self {
            services: Mutex::new(services),
        }
    }

    fn with_channel<T>(
        &self,
        service: &str,
        f: impl FnOnce(&watch::Sender<Vec<Instance>>) -> T,
    ) -> T {
        // A poisoned lock only means another thread panicked mid-update of
        // a plain map; the data is still consistent, so keep serving.
        let mut services = self
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let channel = services
            .entry(service.to_owned())
            .or_insert_with(|| watch::Sender::new(Vec::new()));
        f(channel)
    }
}

#[async_trait]
impl Registry for StaticRegistry {
    fn backend(&self) -> &'static str {
        "static"
    }

    async fn register(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        let instance = registration.instance.clone();
        self.with_channel(&instance.service.clone(), |channel| {
            channel.send_modify(|list| {
                list.retain(|i| i.id != instance.id);
                list.push(instance);
            });
        });
        Ok(())
    }

    async fn deregister(&self, instance_id: &str) -> Result<(), DiscoveryError> {
        let services = self
            .services
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for channel in services.values() {
            channel.send_if_modified(|list| {
                let before = list.len();
                list.retain(|i| i.id != instance_id);
                list.len() != before
            });
        }
        Ok(())
    }

    async fn healthy_instances(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        Ok(self.with_channel(service, |channel| channel.borrow().clone()))
    }

    fn watch(&self, service: &str) -> InstanceWatch {
        self.with_channel(service, watch::Sender::subscribe)
    }

    async fn ping(&self) -> Result<(), DiscoveryError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::parse_static_services;

    fn registry() -> StaticRegistry {
        StaticRegistry::new(
            parse_static_services(
                "users=10.0.0.1:8081/50051,users=10.0.0.2:8081/50051,chat=10.0.0.3:8082",
            )
            .unwrap(),
        )
    }

    fn instance(id: &str, service: &str, port: u16) -> Instance {
        Instance {
            id: id.into(),
            service: service.into(),
            host: "127.0.0.1".into(),
            http_port: port,
            grpc_port: None,
            tags: vec![],
        }
    }

    #[tokio::test]
    async fn configured_instances_are_listed_per_service() {
        let registry = registry();
        let users = registry.healthy_instances("users").await.unwrap();
        assert_eq!(users.len(), 2);
        assert_eq!(users[0].host, "10.0.0.1");
        assert_eq!(registry.healthy_instances("chat").await.unwrap().len(), 1);
        assert!(
            registry
                .healthy_instances("search")
                .await
                .unwrap()
                .is_empty()
        );
        registry.ping().await.unwrap();
    }

    #[tokio::test]
    async fn registration_and_deregistration_reach_watchers() {
        let registry = registry();
        let mut watch = registry.watch("search");
        assert!(watch.borrow_and_update().is_empty());

        registry
            .register(&Registration::new(instance("search-1", "search", 9001)))
            .await
            .unwrap();
        watch.changed().await.unwrap();
        assert_eq!(watch.borrow_and_update()[0].http_port, 9001);

        // Registering the same id again replaces, not duplicates.
        registry
            .register(&Registration::new(instance("search-1", "search", 9002)))
            .await
            .unwrap();
        watch.changed().await.unwrap();
        assert_eq!(
            watch
                .borrow_and_update()
                .iter()
                .map(|i| i.http_port)
                .collect::<Vec<_>>(),
            [9002]
        );

        registry.deregister("search-1").await.unwrap();
        watch.changed().await.unwrap();
        assert!(watch.borrow_and_update().is_empty());
        assert_eq!(registry.healthy_instances("users").await.unwrap().len(), 2);
    }
}
