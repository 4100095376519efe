//! Assertions on HTTP answers.

use common::problem::{CONTENT_TYPE, ProblemBody};

/// Asserts that `res` is a problem body with `status` and `code`, in the
/// one shape every service answers with, and returns it.
pub async fn problem(res: reqwest::Response, status: u16, code: &str) -> ProblemBody {
    assert_eq!(res.status().as_u16(), status, "status of {}", res.url());
    let content_type = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert_eq!(content_type, CONTENT_TYPE, "media type of {}", res.url());
    let body: ProblemBody = res.json().await.expect("a problem body");
    assert_eq!(body.code, code, "{body:?}");
    assert_eq!(body.status, status, "{body:?}");
    assert_eq!(body.kind, common::problem::type_uri(code), "{body:?}");
    body
}
