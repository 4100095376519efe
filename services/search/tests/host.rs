//! What every service answers before it has an API of its own.

use common::service::Shared;

#[tokio::test]
async fn the_host_answers_health_metrics_and_unknown_paths_with_a_problem() {
    let app = search::test_util::spawn_app(&[], &Shared::default(), None).await;
    test_support::http::assert_host_routes(&app.host).await;
    app.stop().await;
}
