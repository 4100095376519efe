//! The users service's event log, read for a reindex: `ExportEvents`, on
//! an instance found through discovery, signed with this service's
//! credentials, a page at a time.

use std::sync::Arc;
use std::time::Duration;

use common::auth::ServiceInterceptor;
use common::clients::Timeouts;
use common::discovery::{InstanceWatch, Registry};
use platform_proto::users::v1::user_service_client::UserServiceClient;
use platform_proto::users::v1::{ExportEventsRequest, StoredEvent};

/// Events asked for per page of the export.
const PAGE: u32 = 500;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("no users instance is healthy")]
    NoInstance,
    #[error("the users service failed the export: {0}")]
    Failed(String),
    #[error("the users service sent nothing for {0:?}")]
    Stalled(Duration),
}

pub struct Users {
    instances: InstanceWatch,
    signer: ServiceInterceptor,
    timeouts: Timeouts,
}

/// An export under way.
pub struct Export {
    stream: tonic::Streaming<StoredEvent>,
    wait: Duration,
}

impl Export {
    /// The next event; `None` at the end of the log.
    pub async fn next(&mut self) -> Result<Option<StoredEvent>, ExportError> {
        match tokio::time::timeout(self.wait, self.stream.message()).await {
            Err(_) => Err(ExportError::Stalled(self.wait)),
            Ok(Err(status)) => Err(ExportError::Failed(format!(
                "{}: {}",
                status.code(),
                status.message()
            ))),
            Ok(Ok(event)) => Ok(event),
        }
    }
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
        }
    }

    /// The log's events after `position`, oldest first.
    pub async fn export_events(&self, position: u64) -> Result<Export, ExportError> {
        let authorities: Vec<String> = self
            .instances
            .borrow()
            .iter()
            .filter_map(|i| i.grpc_authority())
            .collect();
        if authorities.is_empty() {
            return Err(ExportError::NoInstance);
        }
        let authority = &authorities[fastrand::usize(..authorities.len())];
        // A stream lives longer than one request: only its connection and
        // each message wait are bounded.
        let endpoint = common::clients::grpc_endpoint(
            format!("http://{authority}"),
            Timeouts {
                connect: self.timeouts.connect,
                request: Duration::from_secs(24 * 3600),
            },
        )
        .map_err(|e| ExportError::Failed(e.to_string()))?;
        let mut client =
            UserServiceClient::with_interceptor(endpoint.connect_lazy(), self.signer.clone())
                .max_decoding_message_size(8 * 1024 * 1024);
        let stream = client
            .export_events(ExportEventsRequest {
                after_position: position,
                page_size: PAGE,
            })
            .await
            .map_err(|s| ExportError::Failed(format!("{}: {}", s.code(), s.message())))?
            .into_inner();
        Ok(Export {
            stream,
            wait: self.timeouts.request,
        })
    }
}
