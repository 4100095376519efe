//! The OpenAPI 3 document of the public REST API, generated from the
//! handlers' annotations and served at `/openapi.json`. A test compares it
//! with the committed `services/gateway/openapi.json` and calls every
//! documented operation, so the document and the routes cannot drift.

use actix_web::HttpResponse;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::chat;
use crate::routes::{auth, posts, users, v2};

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Platform API", description = "The platform's public REST API, served by the gateway."),
    paths(
        users::sign_up, auth::login, auth::refresh, auth::logout, auth::ticket, users::list, users::get, users::update, users::delete,
        posts::create_post, posts::get_post, posts::update_post, posts::delete_post, posts::posts_of_user,
        posts::create_comment, posts::comments_of_post, posts::comments_of_user,
        posts::get_comment, posts::update_comment, posts::delete_comment,
        v2::list_users, v2::get_user,
        v2::posts_of_user, v2::comments_of_post, v2::comments_of_user, v2::get_post, v2::get_comment,
        chat::ws, chat::rooms, chat::create_room, chat::room, chat::presence, chat::history,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

/// The document as pretty JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_pretty_json().unwrap_or_default()
}

pub async fn serve() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(document())
}
