//! The host every service runs in.
//!
//! A service hands its HTTP routes, gRPC services and readiness checks to
//! [`ServiceHost::builder`]; the host adds what every service must have —
//! `/health/*`, request metrics and traces, the gRPC health service,
//! registration with discovery, and an admin listener (`ADMIN_ADDR`,
//! loopback by default) with `/metrics`, detailed readiness and the
//! service's own `/admin/*` routes, which never share the public port —
//! and owns the lifecycle:
//!
//! 1. [`ServiceHostBuilder::build`] binds the listeners (port 0 works, which
//!    is how tests run many services side by side);
//! 2. [`ServiceHost::run_until_stopped`] serves, registers, and waits for
//!    the shutdown future;
//! 3. on shutdown it reports not-ready, deregisters (so no new work is
//!    routed here), stops accepting, lets in-flight requests finish within
//!    `SHUTDOWN_TIMEOUT`, and returns.

use std::convert::Infallible;
use std::future::Future;
use std::net::{SocketAddr, TcpListener};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::server::NamedService;
use tonic::service::Routes;
use tonic_health::ServingStatus;
use tonic_health::server::HealthReporter;

use crate::auth::{GrpcAccess, ServiceAuthLayer, ServiceVerifier};
use crate::config::ServiceConfig;
use crate::discovery::{DiscoveryError, Instance, Registration, Registry};
use crate::health::{DiscoveryCheck, Health, ReadinessCheck};
use crate::metrics::grpc::GrpcMetricsLayer;
use crate::metrics::http::{ServiceLabel, record_http_metrics};
use crate::telemetry::http::trace_http_request;
use crate::telemetry::propagation::grpc_server_span;

/// How often the gRPC health service is brought in line with readiness.
const GRPC_HEALTH_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr} for {protocol}")]
    Bind {
        protocol: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot register with service discovery ({backend})")]
    Register {
        backend: &'static str,
        #[source]
        source: DiscoveryError,
    },
    #[error("the gRPC file descriptor set for reflection is invalid")]
    Reflection {
        #[source]
        source: tonic_reflection::server::Error,
    },
    #[error("the {service} service serves gRPC but has no service secret to check its callers")]
    NoServiceSecret { service: &'static str },
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("the {protocol} server stopped unexpectedly: {reason}")]
    Stopped {
        protocol: &'static str,
        reason: String,
    },
}

type HttpRoutes = Arc<dyn Fn(&mut web::ServiceConfig) + Send + Sync>;
type BackgroundTask =
    Box<dyn FnOnce(CancellationToken) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

pub struct ServiceHostBuilder {
    config: ServiceConfig,
    http: Vec<HttpRoutes>,
    admin: Vec<HttpRoutes>,
    grpc: Routes,
    grpc_names: Vec<&'static str>,
    grpc_access: GrpcAccess,
    checks: Vec<Arc<dyn ReadinessCheck>>,
    registry: Option<Arc<dyn Registry>>,
    tasks: Vec<(&'static str, BackgroundTask)>,
    draining: Vec<CancellationToken>,
}

impl ServiceHostBuilder {
    /// `token` is cancelled the moment the host starts draining. Long-lived
    /// connections (WebSockets, event streams) should end then, telling
    /// their clients to reconnect elsewhere; otherwise the drain waits for
    /// them until the shutdown timeout.
    pub fn on_drain(mut self, token: CancellationToken) -> Self {
        self.draining.push(token);
        self
    }

    /// Work that runs beside the servers (an outbox relay, a consumer). It
    /// starts with the service and is told to stop, through the token,
    /// after in-flight requests have drained; the host waits for it to
    /// finish, up to the shutdown timeout.
    pub fn task<F, Fut>(mut self, name: &'static str, task: F) -> Self
    where
        F: FnOnce(CancellationToken) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tasks
            .push((name, Box::new(move |stop| Box::pin(task(stop)))));
        self
    }

    /// Runs `workers` on `queue` beside the servers, and serves the jobs'
    /// operator routes ([`crate::jobs::admin`]) on the admin listener behind
    /// `admin_token`. On shutdown the workers stop taking jobs and running
    /// ones get three quarters of the shutdown timeout to finish before
    /// they are queued again.
    pub fn jobs(
        self,
        queue: crate::jobs::JobQueue,
        workers: crate::jobs::Workers,
        admin_token: Option<crate::config::Secret>,
    ) -> Self {
        let deadline = self.config.shutdown_timeout * 3 / 4;
        self.admin(crate::jobs::admin::routes(queue.clone(), admin_token))
            .task("jobs", move |stop| async move {
                let pool = queue.start(workers);
                stop.cancelled().await;
                pool.drain(deadline).await;
            })
    }

    /// Adds the service's own HTTP routes.
    pub fn http(
        mut self,
        routes: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.http.push(Arc::new(routes));
        self
    }

    /// Adds operator routes (under `/admin/`, by convention) to the admin
    /// listener, beside `/metrics` and the detailed readiness.
    pub fn admin(
        mut self,
        routes: impl Fn(&mut web::ServiceConfig) + Send + Sync + 'static,
    ) -> Self {
        self.admin.push(Arc::new(routes));
        self
    }

    /// Adds a generated tonic service; its health is reported under its
    /// full name (`users.v1.UserService`).
    pub fn grpc_service<S>(mut self, service: S) -> Self
    where
        S: tower::Service<
                http::Request<tonic::body::Body>,
                Response = http::Response<tonic::body::Body>,
                Error = Infallible,
            > + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.grpc = self.grpc.add_service(service);
        self.grpc_names.push(S::NAME);
        self
    }

    /// Serves gRPC server reflection for the services in `descriptor_set`
    /// (an encoded `FileDescriptorSet`), in both protocol versions: grpcurl
    /// and Postman ask for `v1`, older clients (Python's reflection
    /// client, Evans) only for `v1alpha`.
    pub fn grpc_reflection(mut self, descriptor_set: &'static [u8]) -> Result<Self, ServerError> {
        let configure = || {
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(descriptor_set)
        };
        let invalid = |source| ServerError::Reflection { source };
        let v1 = configure().build_v1().map_err(invalid)?;
        let v1alpha = configure().build_v1alpha().map_err(invalid)?;
        self.grpc = self.grpc.add_service(v1).add_service(v1alpha);
        // It maps the whole internal API: operators' tools only.
        Ok(self
            .grpc_allow(
                "/grpc.reflection.v1.ServerReflection/",
                &[crate::auth::ADMIN_CALLER],
            )
            .grpc_allow(
                "/grpc.reflection.v1alpha.ServerReflection/",
                &[crate::auth::ADMIN_CALLER],
            ))
    }

    /// Every gRPC call but health checks must carry a service token; this
    /// narrows `method` (a full path, or a service's path ending in `/`)
    /// to the named callers — the admin RPCs to
    /// [`ADMIN_CALLER`](crate::auth::ADMIN_CALLER), for example.
    pub fn grpc_allow(mut self, method: &str, callers: &[&str]) -> Self {
        self.grpc_access = std::mem::take(&mut self.grpc_access).allow(method, callers);
        self
    }

    /// A backend that must answer before the service reports ready.
    pub fn readiness_check(mut self, check: Arc<dyn ReadinessCheck>) -> Self {
        self.checks.push(check);
        self
    }

    /// Uses `registry` instead of the one `DISCOVERY_URL` configures, so
    /// services in one process can share a static registry.
    pub fn registry(mut self, registry: Arc<dyn Registry>) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Binds the listeners. Nothing is served until
    /// [`ServiceHost::run_until_stopped`].
    pub fn build(self) -> Result<ServiceHost, ServerError> {
        crate::metrics::install()?;
        let http_listener = bind("http", self.config.http_addr)?;
        let http_addr = local_addr("http", &http_listener, self.config.http_addr)?;
        let admin_listener = bind("admin", self.config.admin_addr)?;
        let admin_addr = local_addr("admin", &admin_listener, self.config.admin_addr)?;
        let grpc_listener = match self.config.grpc_addr {
            Some(addr) => {
                let listener = bind("grpc", addr)?;
                let bound = local_addr("grpc", &listener, addr)?;
                Some((listener, bound))
            }
            None => None,
        };
        let registry = self
            .registry
            .unwrap_or_else(|| self.config.discovery.connect());
        let mut checks = self.checks;
        checks.push(Arc::new(DiscoveryCheck(registry.clone())));
        Ok(ServiceHost {
            health: Health::new(checks),
            config: self.config,
            http_listener,
            http_addr,
            admin_listener,
            admin_addr,
            grpc_listener,
            http: self.http,
            admin: self.admin,
            grpc: self.grpc,
            grpc_names: self.grpc_names,
            grpc_access: self.grpc_access,
            registry,
            tasks: self.tasks,
            draining: self.draining,
        })
    }
}

fn bind(protocol: &'static str, addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let listener = TcpListener::bind(addr).map_err(|source| ServerError::Bind {
        protocol,
        addr,
        source,
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|source| ServerError::Bind {
            protocol,
            addr,
            source,
        })?;
    Ok(listener)
}

fn local_addr(
    protocol: &'static str,
    listener: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, ServerError> {
    listener.local_addr().map_err(|source| ServerError::Bind {
        protocol,
        addr,
        source,
    })
}

/// One service, bound and ready to serve.
pub struct ServiceHost {
    config: ServiceConfig,
    health: Health,
    http_listener: TcpListener,
    http_addr: SocketAddr,
    admin_listener: TcpListener,
    admin_addr: SocketAddr,
    grpc_listener: Option<(TcpListener, SocketAddr)>,
    http: Vec<HttpRoutes>,
    admin: Vec<HttpRoutes>,
    grpc: Routes,
    grpc_names: Vec<&'static str>,
    grpc_access: GrpcAccess,
    registry: Arc<dyn Registry>,
    tasks: Vec<(&'static str, BackgroundTask)>,
    draining: Vec<CancellationToken>,
}

impl ServiceHost {
    pub fn builder(config: ServiceConfig) -> ServiceHostBuilder {
        ServiceHostBuilder {
            config,
            http: Vec::new(),
            admin: Vec::new(),
            grpc: Routes::default(),
            grpc_names: Vec::new(),
            grpc_access: GrpcAccess::default(),
            checks: Vec::new(),
            registry: None,
            tasks: Vec::new(),
            draining: Vec::new(),
        }
    }

    pub fn name(&self) -> &'static str {
        self.config.name
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Where the admin listener (`/metrics`, `/admin/*`) answers.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener.as_ref().map(|(_, addr)| *addr)
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    fn instance(&self) -> Instance {
        let mut tags = vec![
            "platform".to_owned(),
            format!("version={}", env!("CARGO_PKG_VERSION")),
        ];
        tags.extend(self.config.discovery.tags().iter().cloned());
        Instance {
            id: self.config.instance_id.clone(),
            service: self.config.name.to_owned(),
            host: self.config.advertise_host.clone(),
            http_port: self.http_addr.port(),
            grpc_port: self.grpc_addr().map(|a| a.port()),
            tags,
        }
    }

    /// Serves until `shutdown` resolves, then drains and deregisters.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        let name = self.config.name;
        let mut registration = Registration::new(self.instance());
        registration.admin_port = Some(self.admin_addr.port());
        let timeout = self.config.shutdown_timeout;
        let grpc_addr = self.grpc_addr();

        let http_server = self.http_server()?;
        let http_listener = self.http_listener;
        let http_handle = http_server.handle();
        let mut http_task = tokio::spawn(http_server);
        // Up for the whole drain, so it can be watched; stopped last.
        let admin_server = admin_server(
            &self.admin_listener,
            self.admin_addr,
            self.health.clone(),
            self.admin.clone(),
        )?;
        let admin_handle = admin_server.handle();
        let admin_task = tokio::spawn(admin_server);

        let grpc_stop = CancellationToken::new();
        let (reporter, grpc_task) = match self.grpc_listener {
            Some((listener, _)) => {
                let secret = self
                    .config
                    .service_auth
                    .secret
                    .clone()
                    .ok_or(ServerError::NoServiceSecret { service: name })?;
                let auth = ServiceAuthLayer::new(
                    Arc::new(ServiceVerifier::new(secret, name)),
                    self.grpc_access,
                );
                let (reporter, task) = serve_grpc(
                    name,
                    listener,
                    self.grpc,
                    auth,
                    grpc_stop.clone().cancelled_owned(),
                )?;
                (Some(reporter), Some(task))
            }
            None => (None, None),
        };
        let health_sync = reporter.clone().map(|reporter| {
            tokio::spawn(sync_grpc_health(
                self.health.clone(),
                reporter,
                self.grpc_names.clone(),
            ))
        });
        let mut grpc_task = grpc_task;
        let tasks_stop = CancellationToken::new();
        let background: Vec<_> = self
            .tasks
            .into_iter()
            .map(|(task_name, task)| (task_name, tokio::spawn(task(tasks_stop.clone()))))
            .collect();

        tracing::info!(
            service = name,
            http_addr = %self.http_addr,
            grpc_addr = grpc_addr.map(tracing::field::display),
            admin_addr = %self.admin_addr,
            "listening"
        );

        if let Err(source) = self.registry.register(&registration).await {
            http_handle.stop(false).await;
            admin_handle.stop(false).await;
            grpc_stop.cancel();
            tasks_stop.cancel();
            return Err(ServerError::Register {
                backend: self.registry.backend(),
                source,
            });
        }
        tracing::info!(
            service = name,
            instance = %registration.instance.id,
            registry = self.registry.backend(),
            "registered"
        );

        let unexpected = tokio::select! {
            () = shutdown => None,
            result = &mut http_task => Some(("http", describe_exit(result))),
            result = wait_optional(&mut grpc_task) => Some(("grpc", describe_exit(result))),
        };

        // Not ready and deregistered first: load balancers and discovery
        // stop routing here while in-flight requests still complete.
        self.health.mark_shutting_down();
        for token in &self.draining {
            token.cancel();
        }
        if let Some(reporter) = &reporter {
            set_grpc_status(reporter, &self.grpc_names, ServingStatus::NotServing).await;
        }
        if let Err(error) = self.registry.deregister(&registration.instance.id).await {
            tracing::warn!(
                service = name,
                error = %crate::exit::chain(&error),
                "deregistration failed; the registry's health check will remove this instance"
            );
        }
        tracing::info!(service = name, ?timeout, "draining in-flight requests");

        // `stop(true)` closes actix-web's listeners at once and waits up to
        // the configured shutdown timeout for requests in flight.
        drop(http_listener);
        let http_drain = http_handle.stop(true);
        grpc_stop.cancel();
        let grpc_drain = async {
            if let Some(task) = grpc_task.as_mut()
                && tokio::time::timeout(timeout, task).await.is_err()
            {
                tracing::warn!(
                    service = name,
                    "gRPC calls still running after the shutdown timeout; abandoning them"
                );
            }
        };
        tokio::join!(http_drain, grpc_drain);
        if !http_task.is_finished() {
            let _ = tokio::time::timeout(timeout, &mut http_task).await;
        }
        if let Some(task) = health_sync {
            task.abort();
        }
        tasks_stop.cancel();
        for (task_name, task) in background {
            if tokio::time::timeout(timeout, task).await.is_err() {
                tracing::warn!(
                    service = name,
                    task = task_name,
                    "background task did not stop within the shutdown timeout"
                );
            }
        }

        drop(self.admin_listener);
        admin_handle.stop(true).await;
        let _ = tokio::time::timeout(timeout, admin_task).await;

        match unexpected {
            Some((protocol, reason)) => Err(ServerError::Stopped { protocol, reason }),
            None => {
                tracing::info!(service = name, "stopped");
                Ok(())
            }
        }
    }

    fn http_server(&self) -> Result<actix_web::dev::Server, ServerError> {
        // actix-web gets its own descriptor, and ours is closed before the
        // drain starts (see run_until_stopped): a listening socket left open
        // anywhere keeps accepting connections nobody will serve.
        let health = web::Data::new(self.health.clone());
        let label = web::Data::new(ServiceLabel(self.config.name));
        let routes = self.http.clone();
        let listener = self
            .http_listener
            .try_clone()
            .map_err(|source| ServerError::Bind {
                protocol: "http",
                addr: self.http_addr,
                source,
            })?;
        let server = HttpServer::new(move || {
            let routes = routes.clone();
            App::new()
                .app_data(health.clone())
                .app_data(label.clone())
                .wrap(from_fn(record_http_metrics))
                .wrap(from_fn(trace_http_request))
                .configure(crate::health::routes)
                .configure(move |cfg| {
                    for add in &routes {
                        add(cfg);
                    }
                })
                .default_service(web::to(not_found))
        })
        .workers(self.config.http_workers)
        .shutdown_timeout(self.config.shutdown_timeout.as_secs().max(1))
        .disable_signals()
        .listen(listener)
        .map_err(|source| ServerError::Bind {
            protocol: "http",
            addr: self.http_addr,
            source,
        })?
        .run();
        Ok(server)
    }
}

/// The operators' listener: one worker, no request metrics of its own (a
/// scrape every 15 s would be most of what it counted).
fn admin_server(
    listener: &TcpListener,
    addr: SocketAddr,
    health: Health,
    routes: Vec<HttpRoutes>,
) -> Result<actix_web::dev::Server, ServerError> {
    let bind_error = |source| ServerError::Bind {
        protocol: "admin",
        addr,
        source,
    };
    let listener = listener.try_clone().map_err(bind_error)?;
    let health = web::Data::new(health);
    let server = HttpServer::new(move || {
        let routes = routes.clone();
        App::new()
            .app_data(health.clone())
            .configure(crate::health::admin_routes)
            .route("/metrics", web::get().to(metrics_endpoint))
            .configure(move |cfg| {
                for add in &routes {
                    add(cfg);
                }
            })
            .default_service(web::to(not_found))
    })
    .workers(1)
    .shutdown_timeout(1)
    .disable_signals()
    .listen(listener)
    .map_err(bind_error)?
    .run();
    Ok(server)
}

async fn metrics_endpoint() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::render())
}

async fn not_found(req: actix_web::HttpRequest) -> HttpResponse {
    crate::problem::Problem::no_route(req.method().as_str(), req.path()).response()
}

type GrpcTask = JoinHandle<Result<(), tonic::transport::Error>>;

fn serve_grpc(
    name: &'static str,
    listener: TcpListener,
    routes: Routes,
    auth: ServiceAuthLayer,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(HealthReporter, GrpcTask), ServerError> {
    let addr = listener.local_addr().ok();
    let listener =
        tokio::net::TcpListener::from_std(listener).map_err(|source| ServerError::Bind {
            protocol: "grpc",
            addr: addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0))),
            source,
        })?;
    let (reporter, health_service) = tonic_health::server::health_reporter();
    let routes = routes.add_service(health_service);
    let mut builder = tonic::transport::Server::builder()
        .trace_fn(grpc_server_span)
        .layer(GrpcMetricsLayer::new(name))
        .layer(auth);
    let server = builder
        .add_routes(routes)
        .serve_with_incoming_shutdown(TcpListenerStream::new(listener), stop);
    Ok((reporter, tokio::spawn(server)))
}

/// Keeps the gRPC health service's answer equal to `/health/ready`'s.
async fn sync_grpc_health(health: Health, reporter: HealthReporter, names: Vec<&'static str>) {
    loop {
        let status = if health.readiness().await.ready {
            ServingStatus::Serving
        } else {
            ServingStatus::NotServing
        };
        set_grpc_status(&reporter, &names, status).await;
        tokio::time::sleep(GRPC_HEALTH_INTERVAL).await;
    }
}

async fn set_grpc_status(reporter: &HealthReporter, names: &[&'static str], status: ServingStatus) {
    // "" is the whole server, per the gRPC health checking protocol.
    reporter.set_service_status("", status).await;
    for name in names {
        reporter.set_service_status(*name, status).await;
    }
}

async fn wait_optional<T>(task: &mut Option<JoinHandle<T>>) -> Result<T, tokio::task::JoinError> {
    match task {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

fn describe_exit<E: std::fmt::Display>(
    result: Result<Result<(), E>, tokio::task::JoinError>,
) -> String {
    match result {
        Ok(Ok(())) => "it exited".to_owned(),
        Ok(Err(error)) => error.to_string(),
        Err(error) => error.to_string(),
    }
}

/// Runs a service binary: installs telemetry, builds the service, serves
/// until SIGTERM or SIGINT, drains, and flushes traces.
pub async fn serve(
    telemetry: &crate::telemetry::TelemetryConfig,
    build: impl Future<Output = anyhow::Result<ServiceHost>>,
) -> anyhow::Result<()> {
    let guard = crate::telemetry::init(telemetry)?;
    // Before the service is built: a metric handle made while building (a
    // counter kept in a struct) is bound to the recorder installed then,
    // and one made before any is installed records nothing, ever.
    crate::metrics::install()?;
    let result = async {
        let host = build.await?;
        host.run_until_stopped(crate::shutdown::token_on_signal().cancelled_owned())
            .await?;
        anyhow::Ok(())
    }
    .await;
    guard.shutdown().await;
    result
}
