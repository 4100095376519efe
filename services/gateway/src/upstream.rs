//! Calls to one upstream service over gRPC, with everything the gateway
//! promises around them: instances from discovery balanced round robin, a
//! circuit breaker, a deadline propagated as `grpc-timeout`, retries (only
//! for idempotent calls) with jittered exponential backoff inside the
//! deadline, and the request id and trace context passed along.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::auth::ServiceCredentials;
use common::discovery::{InstanceWatch, Registry};
use resilience::breaker::{BreakerConfig, CircuitBreaker};
use resilience::clock::Clock;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::{Channel, Endpoint};

use crate::problem::ApiError;

/// What travels from the public request into each upstream call.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub request_id: String,
}

impl CallContext {
    /// Wraps `message` with the request id, the trace context and the
    /// time left until `deadline`.
    fn request<M>(&self, message: M, deadline: Instant) -> tonic::Request<M> {
        let mut request = tonic::Request::new(message);
        if let Ok(value) = self.request_id.parse() {
            request.metadata_mut().insert("x-request-id", value);
        }
        common::telemetry::propagation::inject_metadata(request.metadata_mut());
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        request
    }
}

pub struct Upstream {
    service: Arc<str>,
    instances: InstanceWatch,
    channels: Mutex<HashMap<String, Channel>>,
    next: AtomicUsize,
    breaker: CircuitBreaker,
    timeout: Duration,
    /// Signs gRPC calls; the pass-through's HTTP upstreams have none.
    credentials: Option<Arc<ServiceCredentials>>,
}

/// Statuses that mean the upstream is unwell (they count against the
/// breaker); everything else is an answer about the request itself.
fn upstream_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
            | Code::ResourceExhausted
    )
}

impl Upstream {
    pub fn new(
        service: &str,
        registry: &dyn Registry,
        breaker: BreakerConfig,
        clock: Arc<dyn Clock>,
        timeout: Duration,
    ) -> Self {
        Self {
            service: service.into(),
            instances: registry.watch(service),
            channels: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            breaker: CircuitBreaker::new(service, breaker, clock),
            timeout,
            credentials: None,
        }
    }

    /// Calls carry a service token signed by `credentials`.
    pub fn with_credentials(mut self, credentials: Arc<ServiceCredentials>) -> Self {
        self.credentials = Some(credentials);
        self
    }

    fn request<M>(
        &self,
        ctx: &CallContext,
        message: M,
        deadline: Instant,
    ) -> Result<tonic::Request<M>, ApiError> {
        let mut request = ctx.request(message, deadline);
        if let Some(credentials) = &self.credentials {
            let value = credentials.authorization(&self.service).map_err(|error| {
                tracing::error!(%error, "cannot sign a service token");
                ApiError::Internal("cannot sign a service token".into())
            })?;
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }

    /// The next healthy instance's channel, round robin. Channels connect
    /// lazily and reconnect by themselves, so a restarted instance is used
    /// again without restarting the gateway.
    fn pick(&self) -> Option<Channel> {
        let authority = {
            // Counted, then indexed: no list built on every request.
            let instances = self.instances.borrow();
            let with_grpc = instances.iter().filter(|i| i.grpc_port.is_some()).count();
            if with_grpc == 0 {
                return None;
            }
            let n = self.next.fetch_add(1, Ordering::Relaxed) % with_grpc;
            instances.iter().filter_map(|i| i.grpc_authority()).nth(n)?
        };
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(&authority) {
            return Some(channel.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{authority}"))
            .ok()?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true);
        let channel = endpoint.connect_lazy();
        channels.insert(authority, channel.clone());
        Some(channel)
    }

    /// The next healthy instance's HTTP `host:port`, round robin.
    pub fn pick_http(&self) -> Option<String> {
        let instances = self.instances.borrow();
        if instances.is_empty() {
            return None;
        }
        let instance = &instances[self.next.fetch_add(1, Ordering::Relaxed) % instances.len()];
        Some(instance.http_authority())
    }

    pub fn service(&self) -> &Arc<str> {
        &self.service
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }

    /// Makes the call `call(channel, request)`. `idempotent` calls are
    /// retried on upstream failures while the deadline allows.
    pub async fn call<M, T, F, Fut>(
        &self,
        ctx: &CallContext,
        idempotent: bool,
        message: M,
        call: F,
    ) -> Result<T, ApiError>
    where
        M: Clone,
        F: Fn(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        let attempts = if idempotent { 3 } else { 1 };
        let mut backoff = Duration::from_millis(25);
        for attempt in 1..=attempts {
            let permit = self
                .breaker
                .try_acquire()
                .map_err(|rejected| ApiError::Unavailable {
                    service: self.service.clone(),
                    retry_after: rejected.retry_after,
                })?;
            let Some(channel) = self.pick() else {
                self.breaker.record(permit, false);
                return Err(ApiError::Unavailable {
                    service: self.service.clone(),
                    retry_after: Duration::from_secs(1),
                });
            };
            let started = Instant::now();
            let outcome = tokio::time::timeout_at(
                deadline,
                call(channel, self.request(ctx, message.clone(), deadline)?),
            )
            .await;
            let result = match &outcome {
                Ok(Ok(_)) => "ok",
                Ok(Err(status)) if !upstream_failure(status.code()) => "rejected",
                _ => "failed",
            };
            metrics::histogram!(
                "gateway_upstream_request_duration_seconds",
                "upstream" => self.service.clone(),
                "result" => result
            )
            .record(started.elapsed().as_secs_f64());
            let status = match outcome {
                Ok(Ok(response)) => {
                    self.breaker.record(permit, true);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if !upstream_failure(status.code()) => {
                    self.breaker.record(permit, true);
                    return Err(ApiError::from_status(&self.service, &status));
                }
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("the gateway's deadline passed"),
            };
            self.breaker.record(permit, false);
            metrics::counter!("gateway_upstream_failures_total", "upstream" => self.service.clone())
                .increment(1);
            // Jitter spreads retries of many clients apart: 50–150 % of the step.
            let jitter =
                0.5 + f64::from(uuid::Uuid::new_v4().as_u128() as u16) / f64::from(u16::MAX);
            let pause = backoff.mul_f64(jitter);
            let retry = attempt < attempts
                && status.code() == Code::Unavailable
                && Instant::now() + pause < deadline;
            if !retry {
                return Err(ApiError::from_status(&self.service, &status));
            }
            tokio::time::sleep(pause).await;
            backoff *= 2;
        }
        Err(ApiError::Unavailable {
            service: self.service.clone(),
            retry_after: Duration::from_secs(1),
        })
    }
}
