//! Who a username is, for events that name users (chat's mentions): the
//! users service's `LookupUsername`, on an instance found through
//! discovery, signed with this service's credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tonic::Code;
use tonic::transport::Channel;

use common::auth::ServiceInterceptor;
use common::clients::Timeouts;
use common::discovery::{InstanceWatch, Registry};
use platform_proto::users::v1::LookupUsernameRequest;
use platform_proto::users::v1::user_service_client::UserServiceClient;

/// What a lookup found.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(i64),
    /// No such user, or not a username at all: the event names no one.
    Unknown,
    /// No instance, or it failed: worth asking again.
    Unavailable(String),
}

pub struct Users {
    instances: InstanceWatch,
    signer: ServiceInterceptor,
    timeouts: Timeouts,
    /// One lazily connected channel per instance address.
    channels: Mutex<HashMap<String, Channel>>,
}

impl Users {
    pub fn new(
        registry: &Arc<dyn Registry>,
        signer: ServiceInterceptor,
        timeouts: Timeouts,
    ) -> Self {
        Self {
            instances: registry.watch("users"),
            signer,
            timeouts,
            channels: Mutex::default(),
        }
    }

    fn channel(&self) -> Result<Channel, String> {
        let authorities: Vec<String> = self
            .instances
            .borrow()
            .iter()
            .filter_map(|i| i.grpc_authority())
            .collect();
        if authorities.is_empty() {
            return Err("no users instance is healthy".into());
        }
        let authority = &authorities[fastrand::usize(..authorities.len())];
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = channels.get(authority) {
            return Ok(channel.clone());
        }
        let channel = common::clients::grpc_endpoint(format!("http://{authority}"), self.timeouts)
            .map_err(|e| e.to_string())?
            .connect_lazy();
        channels.insert(authority.clone(), channel.clone());
        Ok(channel)
    }

    pub async fn lookup(&self, username: &str) -> Lookup {
        let channel = match self.channel() {
            Ok(channel) => channel,
            Err(error) => return Lookup::Unavailable(error),
        };
        let mut client = UserServiceClient::with_interceptor(channel, self.signer.clone());
        let request = LookupUsernameRequest {
            username: username.to_owned(),
        };
        match client.lookup_username(request).await {
            Ok(found) => match i64::try_from(found.into_inner().id) {
                Ok(id) => Lookup::Found(id),
                Err(_) => Lookup::Unknown,
            },
            Err(status) if matches!(status.code(), Code::NotFound | Code::InvalidArgument) => {
                Lookup::Unknown
            }
            Err(status) => Lookup::Unavailable(format!("{}: {}", status.code(), status.message())),
        }
    }
}
