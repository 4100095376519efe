//! What every service answers before it has an API of its own.

use common::service::Shared;

#[tokio::test]
async fn the_host_answers_health_metrics_and_unknown_paths_with_a_problem() {
    let app = storage::test_util::spawn_app(&Shared::default()).await;
    test_support::http::assert_host_routes(&app).await;
    app.stop().await;
}
