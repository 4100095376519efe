//! The check in front of every internal gRPC API: one tower layer the
//! host puts around all of a service's gRPC routes, so no RPC (reflection
//! included) can be added without it. Only the gRPC health service stays
//! open: load balancers and Kubernetes probes call it without credentials,
//! and it tells nothing but serving or not.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::{Layer, Service};

use super::service::ServiceVerifier;

const HEALTH_PREFIX: &str = "/grpc.health.v1.Health/";

/// Marks a refusal by this layer, so a caller can tell "you, the service,
/// may not" (a deployment fault) from an answer about its user's request.
pub const REFUSED_METADATA: &str = "platform-service-auth-refused";

/// The caller name operators' tools sign as (`platform service-token
/// admin <service>`): the only one the admin RPCs and reflection admit.
pub const ADMIN_CALLER: &str = "admin";

/// Which callers may call which methods; a method no rule names is open
/// to every authenticated service.
#[derive(Clone, Debug, Default)]
pub struct GrpcAccess {
    rules: Vec<(String, Vec<String>)>,
}

impl GrpcAccess {
    /// Only `callers` may call `method`: a full path
    /// (`/users.v1.UserService/RebuildReadModels`), or a whole service
    /// (`/users.v1.UserService/`).
    pub fn allow(mut self, method: &str, callers: &[&str]) -> Self {
        self.rules.push((
            method.to_owned(),
            callers.iter().map(|c| (*c).to_owned()).collect(),
        ));
        self
    }

    /// The most specific rule for `path` decides.
    fn permits(&self, path: &str, caller: &str) -> bool {
        let rule = self
            .rules
            .iter()
            .filter(|(method, _)| {
                path == method || (method.ends_with('/') && path.starts_with(method.as_str()))
            })
            .max_by_key(|(method, _)| method.len());
        match rule {
            Some((_, callers)) => callers.iter().any(|c| c == caller),
            None => true,
        }
    }
}

/// Who made the call, for handlers that care (in the request's
/// extensions).
#[derive(Clone, Debug)]
pub struct ServiceCaller(pub Arc<str>);

#[derive(Clone, Debug)]
pub struct ServiceAuthLayer {
    verifier: Arc<ServiceVerifier>,
    access: Arc<GrpcAccess>,
}

impl ServiceAuthLayer {
    pub fn new(verifier: Arc<ServiceVerifier>, access: GrpcAccess) -> Self {
        Self {
            verifier,
            access: Arc::new(access),
        }
    }
}

impl<S> Layer<S> for ServiceAuthLayer {
    type Service = ServiceAuth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        ServiceAuth {
            inner,
            layer: self.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct ServiceAuth<S> {
    inner: S,
    layer: ServiceAuthLayer,
}

impl ServiceAuthLayer {
    /// The caller, or the status that refuses the call.
    fn check(&self, request: &http::Request<impl Sized>) -> Result<Arc<str>, tonic::Status> {
        let path = request.uri().path();
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(super::bearer);
        let Some(token) = token else {
            tracing::warn!(method = path, "gRPC call without a service token refused");
            return Err(tonic::Status::unauthenticated(
                "a service token is required",
            ));
        };
        let caller = self.verifier.verify(token).map_err(|error| {
            tracing::warn!(method = path, %error, "gRPC call with a bad service token refused");
            tonic::Status::unauthenticated("the service token is not valid here")
        })?;
        if !self.access.permits(path, &caller) {
            tracing::warn!(
                method = path,
                caller = &*caller,
                "gRPC call not allowed for this caller"
            );
            return Err(tonic::Status::permission_denied(format!(
                "{caller} may not call {path}"
            )));
        }
        Ok(caller)
    }
}

impl<S, B, ResB> Service<http::Request<B>> for ServiceAuth<S>
where
    S: Service<http::Request<B>, Response = http::Response<ResB>>,
    S::Future: Send + 'static,
    ResB: Default + Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PREFIX) {
            return Box::pin(self.inner.call(request));
        }
        match self.layer.check(&request) {
            Ok(caller) => {
                request.extensions_mut().insert(ServiceCaller(caller));
                Box::pin(self.inner.call(request))
            }
            Err(mut status) => {
                status.metadata_mut().insert(
                    REFUSED_METADATA,
                    tonic::metadata::MetadataValue::from_static("1"),
                );
                let response = status.into_http::<ResB>();
                Box::pin(async move { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_most_specific_rule_decides_and_unnamed_methods_are_open() {
        let access = GrpcAccess::default()
            .allow("/users.v1.UserService/", &["gateway", "admin"])
            .allow("/users.v1.UserService/RebuildReadModels", &["admin"]);
        assert!(access.permits("/users.v1.UserService/GetUser", "gateway"));
        assert!(!access.permits("/users.v1.UserService/GetUser", "chat"));
        assert!(!access.permits("/users.v1.UserService/RebuildReadModels", "gateway"));
        assert!(access.permits("/users.v1.UserService/RebuildReadModels", "admin"));
        assert!(access.permits("/users.v1.PostService/GetPost", "chat"));
    }
}
