//! Calls to one upstream service over gRPC, with everything the gateway
//! promises around them: instances from discovery balanced round robin, a
//! circuit breaker and a concurrency limit per [`RouteClass`] (a flood of
//! slow sign-ins must not shut off reads), a deadline propagated as
//! `grpc-timeout`, retries with jittered exponential backoff inside the
//! deadline (reads always; writes only when they carry an idempotency key;
//! sign-ins never), and the request id and trace context passed along.

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
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tonic::Code;
use tonic::transport::Channel;

use crate::problem::ApiError;

/// What travels from the public request into each upstream call.
#[derive(Clone, Debug)]
pub struct CallContext {
    pub request_id: String,
    /// The caller's `Idempotency-Key` with its scope, for writes that
    /// carry one: passed to the owning service, which answers a repeat
    /// from its record, so the gateway may retry such a write.
    pub idempotency: Option<IdempotencyKey>,
}

/// An `Idempotency-Key` and whose it is (a user, or for anonymous calls
/// such as sign-up, the client's address).
#[derive(Clone, Debug)]
pub struct IdempotencyKey {
    pub key: String,
    pub scope: String,
}

/// Calls to one upstream fall in classes that fail apart: each has its own
/// breaker and concurrency limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteClass {
    /// Sign-in: slow by design (password hashing), never retried.
    Auth,
    /// Reads: retried on upstream failures.
    Read,
    /// Writes: retried only with an idempotency key.
    Write,
}

impl RouteClass {
    const ALL: [Self; 3] = [Self::Auth, Self::Read, Self::Write];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Auth => "auth",
            Self::Read => "read",
            Self::Write => "write",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The class of a pass-through request: safe methods read.
    pub fn of_method(safe: bool) -> Self {
        if safe { Self::Read } else { Self::Write }
    }
}

/// Upstream calls of each class in flight at once, per upstream
/// (`GATEWAY_CONCURRENCY_AUTH`, `_READ`, `_WRITE`); beyond it the gateway
/// answers 503 with `Retry-After` at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassLimits {
    pub auth: usize,
    pub read: usize,
    pub write: usize,
}

impl Default for ClassLimits {
    fn default() -> Self {
        Self {
            auth: 64,
            read: 1024,
            write: 256,
        }
    }
}

impl ClassLimits {
    fn of(&self, class: RouteClass) -> usize {
        match class {
            RouteClass::Auth => self.auth,
            RouteClass::Read => self.read,
            RouteClass::Write => self.write,
        }
    }
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
        if let Some(idempotency) = &self.idempotency
            && let (Ok(key), Ok(scope)) = (idempotency.key.parse(), idempotency.scope.parse())
        {
            request
                .metadata_mut()
                .insert(platform_proto::IDEMPOTENCY_KEY, key);
            request
                .metadata_mut()
                .insert(platform_proto::IDEMPOTENCY_SCOPE, scope);
        }
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        request
    }
}

pub struct Upstream {
    service: Arc<str>,
    instances: InstanceWatch,
    channels: Mutex<HashMap<String, Channel>>,
    next: AtomicUsize,
    breakers: [CircuitBreaker; 3],
    in_flight: [Semaphore; 3],
    timeout: Duration,
    connect_timeout: Duration,
    /// Signs gRPC calls; the pass-through's HTTP upstreams have none.
    credentials: Option<Arc<ServiceCredentials>>,
}

/// Statuses that mean the upstream is unwell (they count against the
/// breaker); everything else is an answer about the request itself.
fn upstream_failure(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Internal | Code::Unknown
    )
    // RESOURCE_EXHAUSTED is not one: it is a healthy upstream shedding load
    // at once (answered 503 with Retry-After), and counting it would open
    // the breaker on the clients it did serve.
}

impl Upstream {
    pub fn new(
        service: &str,
        registry: &dyn Registry,
        breaker: BreakerConfig,
        clock: Arc<dyn Clock>,
        timeout: Duration,
    ) -> Self {
        let limits = ClassLimits::default();
        Self {
            service: service.into(),
            instances: registry.watch(service),
            channels: Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            breakers: RouteClass::ALL.map(|class| {
                CircuitBreaker::for_class(service, class.as_str(), breaker.clone(), clock.clone())
            }),
            in_flight: RouteClass::ALL.map(|class| Semaphore::new(limits.of(class))),
            timeout,
            connect_timeout: Duration::from_secs(1),
            credentials: None,
        }
    }

    /// Connections to an instance give up after `timeout`
    /// (`GATEWAY_UPSTREAM_CONNECT_TIMEOUT`).
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Caps each class's calls in flight at `limits`.
    pub fn with_limits(mut self, limits: ClassLimits) -> Self {
        self.in_flight = RouteClass::ALL.map(|class| Semaphore::new(limits.of(class).max(1)));
        self
    }

    /// A slot for one call of `class`, or 503 at once when the class is
    /// full: waiting would only hold the client's connection while the
    /// upstream is already as busy as it is allowed to be.
    pub fn admit(&self, class: RouteClass) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        self.in_flight[class.index()].try_acquire().map_err(|_| {
            metrics::counter!(
                "gateway_upstream_shed_total",
                "upstream" => self.service.clone(),
                "class" => class.as_str()
            )
            .increment(1);
            ApiError::Unavailable {
                service: self.service.clone(),
                retry_after: Duration::from_secs(1),
            }
        })
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
        let endpoint = common::clients::grpc_endpoint(
            format!("http://{authority}"),
            common::clients::Timeouts {
                connect: self.connect_timeout,
                request: self.timeout,
            },
        )
        .ok()?;
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

    pub fn breaker(&self, class: RouteClass) -> &CircuitBreaker {
        &self.breakers[class.index()]
    }

    /// Makes the call `call(channel, request)` as one of `class`. Reads,
    /// and writes with an idempotency key, are retried on upstream failures
    /// while the deadline allows.
    pub async fn call<M, T, F, Fut>(
        &self,
        ctx: &CallContext,
        class: RouteClass,
        message: M,
        call: F,
    ) -> Result<T, ApiError>
    where
        M: Clone,
        F: Fn(Channel, tonic::Request<M>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let _slot = self.admit(class)?;
        let deadline = Instant::now() + self.timeout;
        let retried = match class {
            RouteClass::Read => true,
            RouteClass::Write => ctx.idempotency.is_some(),
            RouteClass::Auth => false,
        };
        let attempts = if retried { 3 } else { 1 };
        let breaker = self.breaker(class);
        let mut backoff = Duration::from_millis(25);
        for attempt in 1..=attempts {
            let permit = breaker
                .try_acquire()
                .map_err(|rejected| ApiError::Unavailable {
                    service: self.service.clone(),
                    retry_after: rejected.retry_after,
                })?;
            let Some(channel) = self.pick() else {
                breaker.record(permit, false);
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
                "class" => class.as_str(),
                "result" => result
            )
            .record(started.elapsed().as_secs_f64());
            let status = match outcome {
                Ok(Ok(response)) => {
                    breaker.record(permit, true);
                    return Ok(response.into_inner());
                }
                Ok(Err(status)) if !upstream_failure(status.code()) => {
                    breaker.record(permit, true);
                    return Err(ApiError::from_status(&self.service, &status));
                }
                Ok(Err(status)) => status,
                Err(_) => tonic::Status::deadline_exceeded("the gateway's deadline passed"),
            };
            breaker.record(permit, false);
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;

    use common::discovery::{Instance, StaticRegistry};
    use resilience::clock::SystemClock;

    use super::*;

    fn upstream() -> Upstream {
        let registry = StaticRegistry::new(vec![Instance {
            id: "users-1".into(),
            service: "users".into(),
            host: "127.0.0.1".into(),
            http_port: 9,
            grpc_port: Some(9),
            tags: Vec::new(),
        }]);
        Upstream::new(
            "users",
            &registry,
            BreakerConfig {
                min_calls: 4,
                ..BreakerConfig::default()
            },
            Arc::new(SystemClock),
            Duration::from_secs(2),
        )
    }

    fn ctx(key: Option<&str>) -> CallContext {
        CallContext {
            request_id: "test".into(),
            idempotency: key.map(|key| IdempotencyKey {
                key: key.into(),
                scope: "user:1".into(),
            }),
        }
    }

    /// How many times `class` is tried against an upstream that answers
    /// every attempt with `code`.
    async fn attempts(
        upstream: &Upstream,
        ctx: &CallContext,
        class: RouteClass,
        code: Code,
    ) -> u32 {
        let tried = AtomicU32::new(0);
        let outcome: Result<(), ApiError> = upstream
            .call(ctx, class, (), |_channel, _request| {
                tried.fetch_add(1, Ordering::Relaxed);
                let status = tonic::Status::new(code, "no");
                async move { Err(status) }
            })
            .await;
        assert!(outcome.is_err());
        tried.load(Ordering::Relaxed)
    }

    #[tokio::test]
    async fn reads_are_retried_logins_never_and_writes_only_with_an_idempotency_key() {
        let unavailable = Code::Unavailable;
        assert_eq!(
            attempts(&upstream(), &ctx(None), RouteClass::Read, unavailable).await,
            3
        );
        assert_eq!(
            attempts(&upstream(), &ctx(None), RouteClass::Auth, unavailable).await,
            1
        );
        assert_eq!(
            attempts(&upstream(), &ctx(Some("k")), RouteClass::Auth, unavailable).await,
            1
        );
        assert_eq!(
            attempts(&upstream(), &ctx(None), RouteClass::Write, unavailable).await,
            1
        );
        assert_eq!(
            attempts(&upstream(), &ctx(Some("k")), RouteClass::Write, unavailable).await,
            3
        );
    }

    #[tokio::test]
    async fn shed_logins_neither_retry_nor_open_a_breaker_and_classes_fail_apart() {
        let upstream = upstream();
        for _ in 0..10 {
            let tried = attempts(
                &upstream,
                &ctx(None),
                RouteClass::Auth,
                Code::ResourceExhausted,
            )
            .await;
            assert_eq!(tried, 1);
        }
        assert_eq!(
            upstream.breaker(RouteClass::Auth).state(),
            resilience::breaker::State::Closed
        );
        // Failing calls do open it (past the shed ones, which counted as
        // answers), and only the sign-in breaker.
        for _ in 0..12 {
            attempts(&upstream, &ctx(None), RouteClass::Auth, Code::Internal).await;
        }
        assert_eq!(
            upstream.breaker(RouteClass::Auth).state(),
            resilience::breaker::State::Open
        );
        assert_eq!(
            upstream.breaker(RouteClass::Read).state(),
            resilience::breaker::State::Closed
        );
    }

    #[tokio::test]
    async fn a_full_class_is_shed_at_once_and_others_still_pass() {
        let upstream = upstream().with_limits(ClassLimits {
            auth: 1,
            read: 1,
            write: 1,
        });
        let held = upstream.admit(RouteClass::Auth).unwrap();
        let shed = upstream.admit(RouteClass::Auth).unwrap_err();
        assert!(matches!(shed, ApiError::Unavailable { .. }), "{shed:?}");
        assert!(upstream.admit(RouteClass::Read).is_ok());
        drop(held);
        assert!(upstream.admit(RouteClass::Auth).is_ok());
    }
}
