//! A Consul agent, through its documented HTTP API.
//!
//! Registration goes through the *agent* endpoints
//! (`/v1/agent/service/register`), not the catalog: only the local agent runs
//! the HTTP health check that takes a failing instance out of rotation.
//! (`rs-consul` 0.15 only speaks the catalog API, which is why this small
//! client exists; see the README's discovery section.)
//!
//! Following a service uses Consul's blocking queries: the request carries
//! the last `X-Consul-Index` seen and Consul holds it open until the healthy
//! set changes or `wait` passes.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::{DiscoveryError, Instance, InstanceWatch, Registration, Registry};
use crate::clients::Timeouts;
use crate::config::Secret;

const BACKEND: &str = "consul";
const GRPC_PORT_META: &str = "grpc_port";
/// Where Prometheus scrapes `/metrics` (`__meta_consul_service_metadata_admin_port`).
const ADMIN_PORT_META: &str = "admin_port";
const TOKEN_HEADER: &str = "X-Consul-Token";
const INDEX_HEADER: &str = "X-Consul-Index";

/// How long Consul holds a blocking query (its default).
pub const BLOCKING_WAIT: Duration = Duration::from_secs(300);

/// Connecting to the agent, and any call but a blocking query's wait.
pub const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(5),
    request: Duration::from_secs(10),
};

#[derive(Clone)]
pub struct ConsulRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    client: reqwest::Client,
    address: String,
    token: Option<Secret>,
    blocking_wait: Duration,
    /// For every call but a blocking query's wait.
    request_timeout: Duration,
}

impl ConsulRegistry {
    /// `address` is the agent's base URL, e.g. `http://127.0.0.1:8500`.
    pub fn new(address: String, token: Option<Secret>) -> Self {
        Self::with_blocking_wait(address, token, BLOCKING_WAIT)
    }

    /// Like [`ConsulRegistry::new`] with a shorter hold time for blocking
    /// queries (Consul's default and ours is five minutes).
    pub fn with_blocking_wait(
        address: String,
        token: Option<Secret>,
        blocking_wait: Duration,
    ) -> Self {
        Self::with_timeouts(address, token, blocking_wait, DEFAULT_TIMEOUTS)
    }

    /// Like [`ConsulRegistry::with_blocking_wait`], with `timeouts` for
    /// connecting and for every call that is not a blocking query
    /// (`DISCOVERY_CONNECT_TIMEOUT`, `DISCOVERY_REQUEST_TIMEOUT`).
    pub fn with_timeouts(
        address: String,
        token: Option<Secret>,
        blocking_wait: Duration,
        timeouts: Timeouts,
    ) -> Self {
        // A blocking query legitimately waits `blocking_wait`; Consul adds
        // up to 1/16 of it as jitter, so a call gets that and the request
        // timeout.
        let client = crate::clients::http(Timeouts {
            connect: timeouts.connect,
            request: blocking_wait + blocking_wait / 16 + timeouts.request,
        })
        .unwrap_or_default();
        Self {
            inner: Arc::new(Inner {
                client,
                address: address.trim_end_matches('/').to_owned(),
                token,
                blocking_wait,
                request_timeout: timeouts.request,
            }),
        }
    }
}

impl Inner {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.address))
            .timeout(self.request_timeout);
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, token.expose());
        }
        request
    }

    async fn send(
        &self,
        operation: &'static str,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, DiscoveryError> {
        let response = request
            .send()
            .await
            .map_err(|source| DiscoveryError::Unreachable {
                backend: BACKEND,
                address: self.address.clone(),
                source: Box::new(source),
            })?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let body = excerpt(response.text().await.unwrap_or_default());
        Err(DiscoveryError::Rejected {
            backend: BACKEND,
            operation,
            status,
            body,
        })
    }

    /// One `GET /v1/health/service/:name?passing`, optionally blocking.
    async fn passing(
        &self,
        service: &str,
        block_on: Option<u64>,
    ) -> Result<(Vec<Instance>, u64), DiscoveryError> {
        let mut path = format!("/v1/health/service/{}?passing", path_segment(service));
        let mut request_timeout = Duration::from_secs(10);
        if let Some(index) = block_on {
            path.push_str(&format!(
                "&index={index}&wait={}",
                go_duration(self.blocking_wait)
            ));
            // Consul adds up to wait/16 of jitter before answering.
            request_timeout += self.blocking_wait + self.blocking_wait / 16;
        }
        let request = self
            .request(reqwest::Method::GET, &path)
            .timeout(request_timeout);
        let response = self.send("health query", request).await?;
        let index = response
            .headers()
            .get(INDEX_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let entries: Vec<ServiceEntry> =
            response
                .json()
                .await
                .map_err(|e| DiscoveryError::BadResponse {
                    backend: BACKEND,
                    reason: e.to_string(),
                })?;
        Ok((
            entries
                .into_iter()
                .map(ServiceEntry::into_instance)
                .collect(),
            index,
        ))
    }
}

#[async_trait]
impl Registry for ConsulRegistry {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    async fn register(&self, registration: &Registration) -> Result<(), DiscoveryError> {
        let body = AgentServiceRegistration::from(registration);
        let request = self
            .inner
            .request(reqwest::Method::PUT, "/v1/agent/service/register")
            .json(&body);
        self.inner.send("service registration", request).await?;
        Ok(())
    }

    async fn deregister(&self, instance_id: &str) -> Result<(), DiscoveryError> {
        let path = format!("/v1/agent/service/deregister/{}", path_segment(instance_id));
        let request = self.inner.request(reqwest::Method::PUT, &path);
        self.inner.send("service deregistration", request).await?;
        Ok(())
    }

    async fn healthy_instances(&self, service: &str) -> Result<Vec<Instance>, DiscoveryError> {
        Ok(self.inner.passing(service, None).await?.0)
    }

    fn watch(&self, service: &str) -> InstanceWatch {
        let (tx, rx) = watch::channel(Vec::new());
        tokio::spawn(follow(self.inner.clone(), service.to_owned(), tx));
        rx
    }

    async fn ping(&self) -> Result<(), DiscoveryError> {
        let request = self
            .inner
            .request(reqwest::Method::GET, "/v1/status/leader");
        self.inner.send("status query", request).await?;
        Ok(())
    }
}

/// Keeps `tx` current with blocking queries until every receiver is gone.
async fn follow(inner: Arc<Inner>, service: String, tx: watch::Sender<Vec<Instance>>) {
    const MAX_BACKOFF: Duration = Duration::from_secs(30);
    let mut index = 0u64;
    let mut backoff = Duration::from_millis(250);
    loop {
        let block_on = (index > 0).then_some(index);
        let result = tokio::select! {
            _ = tx.closed() => return,
            result = inner.passing(&service, block_on) => result,
        };
        match result {
            Ok((instances, new_index)) => {
                backoff = Duration::from_millis(250);
                // Consul's rules for blocking queries: an index that goes
                // backwards means the agent's state was reset, so start
                // over; an index below 1 must never be sent.
                index = if new_index < index {
                    0
                } else {
                    new_index.max(1)
                };
                tx.send_if_modified(|current| {
                    let changed = *current != instances;
                    if changed {
                        *current = instances;
                    }
                    changed
                });
            }
            Err(error) => {
                tracing::warn!(%service, error = %crate::exit::chain(&error), "consul watch failed; retrying");
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Go's duration syntax, which Consul parses.
fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Percent-encodes everything but unreserved characters, so an id can never
/// change the path it is placed in.
fn path_segment(raw: &str) -> String {
    // `.` and `..` alone would be resolved away by URL normalisation.
    let dots_only = raw.bytes().all(|b| b == b'.');
    let mut out = String::with_capacity(raw.len());
    for byte in raw.bytes() {
        let unreserved = byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'~');
        if unreserved || (byte == b'.' && !dots_only) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Body of `PUT /v1/agent/service/register`.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentServiceRegistration<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    name: &'a str,
    tags: &'a [String],
    address: &'a str,
    port: u16,
    meta: BTreeMap<&'static str, String>,
    check: AgentServiceCheck,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct AgentServiceCheck {
    #[serde(rename = "HTTP")]
    http: String,
    interval: String,
    timeout: String,
    deregister_critical_service_after: String,
}

impl<'a> From<&'a Registration> for AgentServiceRegistration<'a> {
    fn from(registration: &'a Registration) -> Self {
        let instance = &registration.instance;
        let mut meta = BTreeMap::new();
        if let Some(port) = instance.grpc_port {
            meta.insert(GRPC_PORT_META, port.to_string());
        }
        if let Some(port) = registration.admin_port {
            meta.insert(ADMIN_PORT_META, port.to_string());
        }
        Self {
            id: &instance.id,
            name: &instance.service,
            tags: &instance.tags,
            address: &instance.host,
            port: instance.http_port,
            meta,
            check: AgentServiceCheck {
                http: registration.health_check_url.clone(),
                interval: go_duration(registration.check_interval),
                timeout: go_duration(registration.check_timeout),
                deregister_critical_service_after: go_duration(
                    registration.deregister_critical_after,
                ),
            },
        }
    }
}

/// One element of `GET /v1/health/service/:name`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceEntry {
    node: NodeEntry,
    service: AgentService,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NodeEntry {
    address: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    #[serde(default)]
    tags: Option<Vec<String>>,
    #[serde(default)]
    address: String,
    port: u16,
    #[serde(default)]
    meta: Option<BTreeMap<String, String>>,
}

impl ServiceEntry {
    fn into_instance(self) -> Instance {
        let service = self.service;
        // Consul leaves the service address empty when it equals the node's.
        let host = if service.address.is_empty() {
            self.node.address
        } else {
            service.address
        };
        let grpc_port = service
            .meta
            .as_ref()
            .and_then(|m| m.get(GRPC_PORT_META))
            .and_then(|p| p.parse().ok());
        Instance {
            id: service.id,
            service: service.service,
            host,
            http_port: service.port,
            grpc_port,
            tags: service.tags.unwrap_or_default(),
        }
    }
}

/// At most 512 bytes of an error body for the error message, cut where a
/// character ends (a byte index inside one would panic).
fn excerpt(mut body: String) -> String {
    const MAX: usize = 512;
    if body.len() > MAX {
        let end = (0..=MAX)
            .rev()
            .find(|&i| body.is_char_boundary(i))
            .unwrap_or(0);
        body.truncate(end);
    }
    body
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_error_body_is_cut_on_a_character_boundary() {
        let body = format!("{}é and more", "x".repeat(511));
        let cut = super::excerpt(body);
        assert_eq!(
            cut.len(),
            511,
            "the two-byte é straddling byte 512 is left out"
        );
        assert_eq!(super::excerpt("short".into()), "short");
    }

    use super::*;

    #[test]
    fn durations_use_go_syntax() {
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(path_segment("users-10.0.0.1-8081"), "users-10.0.0.1-8081");
        assert_eq!(path_segment("../../kv/x?y"), "..%2F..%2Fkv%2Fx%3Fy");
        assert_eq!(path_segment(".."), "%2E%2E");
    }
}
