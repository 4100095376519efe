//! gRPC server metrics as a tower layer around tonic's router:
//! `grpc_server_requests_total{service,grpc_service,grpc_method,code}` and
//! `grpc_server_request_duration_seconds{service,grpc_service,grpc_method}`.
//!
//! The status is read from the response headers, where tonic puts it for
//! every error of a unary call ("trailers-only" responses); a response
//! without it is a success whose status follows in trailers. Calls to
//! methods the server does not have (`UNIMPLEMENTED`) are labelled
//! `unknown`, so a client cannot create series by inventing paths.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use tower::{Layer, Service};

#[derive(Clone, Copy, Debug)]
pub struct GrpcMetricsLayer {
    service: &'static str,
}

impl GrpcMetricsLayer {
    /// `service` is the platform service name (the `service` label).
    pub fn new(service: &'static str) -> Self {
        Self { service }
    }
}

impl<S> Layer<S> for GrpcMetricsLayer {
    type Service = GrpcMetrics<S>;

    fn layer(&self, inner: S) -> Self::Service {
        GrpcMetrics {
            inner,
            service: self.service,
        }
    }
}

#[derive(Clone, Debug)]
pub struct GrpcMetrics<S> {
    inner: S,
    service: &'static str,
}

const UNIMPLEMENTED: &str = "12";

impl<S, B, ResB> Service<http::Request<B>> for GrpcMetrics<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let started = Instant::now();
        let path = request.uri().path().to_owned();
        let service = self.service;
        let response = self.inner.call(request);
        Box::pin(async move {
            let result = response.await;
            let code = match &result {
                Ok(response) => response
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                // A transport-level failure: the call never got a status.
                Err(_) => "transport".to_owned(),
            };
            let (grpc_service, grpc_method) = if code == UNIMPLEMENTED {
                ("unknown".to_owned(), "unknown".to_owned())
            } else {
                split_path(&path)
            };
            let labels = [
                ("service", service.to_owned()),
                ("grpc_service", grpc_service),
                ("grpc_method", grpc_method),
            ];
            metrics::histogram!("grpc_server_request_duration_seconds", &labels)
                .record(started.elapsed().as_secs_f64());
            let [a, b, c] = labels;
            metrics::counter!("grpc_server_requests_total", &[a, b, c, ("code", code)])
                .increment(1);
            result
        })
    }
}

/// `/users.v1.UserService/GetUser` → (`users.v1.UserService`, `GetUser`).
fn split_path(path: &str) -> (String, String) {
    let trimmed = path.trim_start_matches('/');
    match trimmed.split_once('/') {
        Some((service, method)) => (service.to_owned(), method.to_owned()),
        None => ("unknown".to_owned(), "unknown".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use super::*;

    #[test]
    fn paths_split_into_service_and_method() {
        assert_eq!(
            split_path("/users.v1.UserService/GetUser"),
            ("users.v1.UserService".to_owned(), "GetUser".to_owned())
        );
        assert_eq!(
            split_path("/"),
            ("unknown".to_owned(), "unknown".to_owned())
        );
    }

    #[tokio::test]
    async fn calls_are_counted_by_method_and_status_and_unknown_methods_collapse() {
        crate::metrics::install().unwrap();
        let inner = tower::service_fn(|req: http::Request<()>| async move {
            let mut response = http::Response::new(());
            match req.uri().path() {
                "/grpcmetrics.Test/Fail" => {
                    response
                        .headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static("5"));
                }
                "/grpcmetrics.Test/Ok" => {}
                _ => {
                    response
                        .headers_mut()
                        .insert("grpc-status", http::HeaderValue::from_static("12"));
                }
            }
            Ok::<_, Infallible>(response)
        });
        let mut svc = GrpcMetricsLayer::new("grpc-metrics-test").layer(inner);
        for path in [
            "/grpcmetrics.Test/Ok",
            "/grpcmetrics.Test/Ok",
            "/grpcmetrics.Test/Fail",
            "/made.Up/Path",
        ] {
            let req = http::Request::builder().uri(path).body(()).unwrap();
            svc.call(req).await.unwrap();
        }

        let text = crate::metrics::render();
        let count = |needle: &[&str]| {
            text.lines()
                .find(|l| {
                    l.starts_with("grpc_server_requests_total")
                        && needle.iter().all(|n| l.contains(n))
                })
                .and_then(|l| l.rsplit(' ').next())
                .map(str::to_owned)
        };
        assert_eq!(
            count(&["grpc_method=\"Ok\"", "code=\"0\""]).as_deref(),
            Some("2")
        );
        assert_eq!(
            count(&["grpc_method=\"Fail\"", "code=\"5\""]).as_deref(),
            Some("1")
        );
        assert_eq!(
            count(&[
                "service=\"grpc-metrics-test\"",
                "grpc_method=\"unknown\"",
                "code=\"12\""
            ])
            .as_deref(),
            Some("1")
        );
        assert!(!text.contains("made.Up"));
    }
}
