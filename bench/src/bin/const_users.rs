//! The baseline for the GetUser benchmark: a tonic `UserService` whose
//! GetUser returns one constant user, with nothing behind it. Everything
//! else is UNIMPLEMENTED.
//!
//! `const-users <addr>`

use platform_proto::users::v1 as pb;
use platform_proto::users::v1::user_service_server::{UserService, UserServiceServer};
use tonic::{Request, Response, Status};

struct Constant(pb::User);

type Stream<T> = std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl UserService for Constant {
    async fn get_user(&self, _: Request<pb::GetUserRequest>) -> Result<Response<pb::User>, Status> {
        Ok(Response::new(self.0.clone()))
    }
    async fn create_user(
        &self,
        _: Request<pb::CreateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn update_user(
        &self,
        _: Request<pb::UpdateUserRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn delete_user(
        &self,
        _: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn list_users(
        &self,
        _: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn lookup_username(
        &self,
        _: Request<pb::LookupUsernameRequest>,
    ) -> Result<Response<pb::UserRef>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn verify_credentials(
        &self,
        _: Request<pb::VerifyCredentialsRequest>,
    ) -> Result<Response<pb::User>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type ExportUsersStream = Stream<pb::User>;
    async fn export_users(
        &self,
        _: Request<pb::ExportUsersRequest>,
    ) -> Result<Response<Self::ExportUsersStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    type ExportEventsStream = Stream<pb::StoredEvent>;
    async fn export_events(
        &self,
        _: Request<pb::ExportEventsRequest>,
    ) -> Result<Response<Self::ExportEventsStream>, Status> {
        Err(Status::unimplemented("baseline"))
    }
    async fn rebuild_read_models(
        &self,
        _: Request<pb::RebuildReadModelsRequest>,
    ) -> Result<Response<pb::RebuildReadModelsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }

    async fn retry_parked_events(
        &self,
        _: Request<pb::RetryParkedEventsRequest>,
    ) -> Result<Response<pb::RetryParkedEventsResponse>, Status> {
        Err(Status::unimplemented("baseline"))
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:15060".to_owned())
        .parse()?;
    let user = pb::User {
        id: 1,
        username: "ann".into(),
        email: "ann@example.com".into(),
        created_at: "2026-11-29T12:00:00.000000Z".into(),
        updated_at: "2026-11-29T12:00:00.000000Z".into(),
        version: 1,
    };
    tonic::transport::Server::builder()
        .add_service(UserServiceServer::new(Constant(user)))
        .serve(addr)
        .await?;
    Ok(())
}
