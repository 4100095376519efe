//! Request metrics for actix-web: count, latency and body sizes per
//! method, route and status.
//!
//! The `path` label is the *route template* (`/users/{id}`), never the raw
//! URL: raw paths carry ids and would create one time series per user. A
//! request that matched no route is labelled `unmatched`.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{Error, web};

/// Name of the service recording, added as the `service` label so several
/// services sharing one process (the all-in-one runner) stay apart.
#[derive(Clone, Copy, Debug)]
pub struct ServiceLabel(pub &'static str);

/// Middleware for `App::wrap(from_fn(record_http_metrics))`; reads the
/// service label from app data.
pub async fn record_http_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let started = Instant::now();
    let service = req
        .app_data::<web::Data<ServiceLabel>>()
        .map_or("unknown", |s| s.0);
    let method = method_label(req.method());
    let request_size = req
        .headers()
        .get(actix_web::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());

    let result = next.call(req).await;

    let (path, status, response_size) = match &result {
        Ok(res) => {
            let path = res
                .request()
                .match_pattern()
                .unwrap_or_else(|| "unmatched".to_owned());
            let size = match res.response().body().size() {
                BodySize::Sized(n) => Some(n),
                BodySize::None => Some(0),
                BodySize::Stream => None,
            };
            (path, res.status().as_u16(), size)
        }
        Err(e) => (
            "unmatched".to_owned(),
            e.as_response_error().status_code().as_u16(),
            None,
        ),
    };

    RouteMetrics::with(service, method, &path, status, |m| {
        m.requests.increment(1);
        m.duration.record(started.elapsed().as_secs_f64());
        m.request_size.record(request_size.unwrap_or(0) as f64);
        // Streamed bodies have no size until sent; leaving them out beats
        // recording a fake zero.
        if let Some(size) = response_size {
            m.response_size.record(size as f64);
        }
    });
    result
}

/// The handles of one (service, method, route, status) series.
///
/// Building a metric key (label strings, hashing, a registry lookup) on
/// every request costs more than the request itself on a cheap route, so
/// each worker thread keeps the handles it has used. The set is small and
/// bounded: routes are templates and methods a fixed list.
struct RouteMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
    request_size: metrics::Histogram,
    response_size: metrics::Histogram,
}

type SeriesKey = (&'static str, &'static str, u16);

thread_local! {
    static SERIES: RefCell<HashMap<SeriesKey, HashMap<String, RouteMetrics>>> =
        RefCell::new(HashMap::new());
}

impl RouteMetrics {
    fn register(service: &'static str, method: &'static str, path: &str, status: u16) -> Self {
        let labels = [
            ("service", service.to_owned()),
            ("method", method.to_owned()),
            ("path", path.to_owned()),
        ];
        let [a, b, c] = labels.clone();
        Self {
            requests: metrics::counter!(
                "http_requests_total",
                &[a, b, c, ("status", status.to_string())]
            ),
            duration: metrics::histogram!("http_request_duration_seconds", &labels),
            request_size: metrics::histogram!("http_request_size_bytes", &labels),
            response_size: metrics::histogram!("http_response_size_bytes", &labels),
        }
    }

    fn with(
        service: &'static str,
        method: &'static str,
        path: &str,
        status: u16,
        f: impl FnOnce(&Self),
    ) {
        SERIES.with_borrow_mut(|series| {
            let by_path = series.entry((service, method, status)).or_default();
            if let Some(found) = by_path.get(path) {
                return f(found);
            }
            let created = Self::register(service, method, path, status);
            f(&created);
            by_path.insert(path.to_owned(), created);
        });
    }
}

/// Methods outside the standard set collapse into one label value, so a
/// client inventing methods cannot create series.
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

#[cfg(test)]
mod tests {
    use actix_web::middleware::from_fn;
    use actix_web::test::{TestRequest, call_service, init_service};
    use actix_web::{App, HttpResponse, web};

    use super::*;

    #[tokio::test]
    async fn request_is_counted_under_its_route_template() {
        crate::metrics::install().unwrap();
        let app = init_service(
            App::new()
                .app_data(web::Data::new(ServiceLabel("metrics-test")))
                .wrap(from_fn(record_http_metrics))
                .route(
                    "/widgets/{id}",
                    web::get().to(|| async { HttpResponse::Ok().body("twelve bytes") }),
                ),
        )
        .await;

        for id in [17, 18, 19] {
            let req = TestRequest::get()
                .uri(&format!("/widgets/{id}"))
                .to_request();
            assert!(call_service(&app, req).await.status().is_success());
        }
        let req = TestRequest::get().uri("/nowhere/42").to_request();
        assert_eq!(call_service(&app, req).await.status(), 404);

        let text = crate::metrics::render();
        let line = |prefix: &str| {
            text.lines()
                .find(|l| {
                    l.starts_with(prefix)
                        && l.contains("service=\"metrics-test\"")
                        && l.contains("path=\"/widgets/{id}\"")
                })
                .map(str::to_owned)
        };
        let counted = line("http_requests_total").expect("counter rendered");
        assert!(counted.contains("path=\"/widgets/{id}\""), "{counted}");
        assert!(counted.contains("method=\"GET\""), "{counted}");
        assert!(counted.contains("status=\"200\""), "{counted}");
        assert!(counted.ends_with(" 3"), "{counted}");
        assert!(
            !text.contains("/widgets/17"),
            "raw paths must never be labels"
        );
        assert!(text.contains("path=\"unmatched\""));
        assert!(line("http_request_duration_seconds_bucket").is_some());
        assert!(line("http_request_size_bytes_bucket").is_some());
        let sizes = line("http_response_size_bytes_sum").expect("response sizes");
        assert!(
            sizes.ends_with(" 36"),
            "three responses of 12 bytes: {sizes}"
        );
    }

    #[test]
    fn invented_methods_share_one_label() {
        let method = Method::from_bytes(b"BREW").unwrap();
        assert_eq!(method_label(&method), "OTHER");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }
}
