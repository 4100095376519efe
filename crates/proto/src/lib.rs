//! Generated clients and servers for the platform's gRPC contracts.
//!
//! The `.proto` files in the repository's `proto/` directory are the source
//! of truth; this crate only compiles them. Each package is its own module,
//! named after the proto package.

// Generated clients carry tonic's `connect(uri)` helper, which builds an
// endpoint without timeouts; the platform's code calls them on endpoints
// from `common::clients::grpc_endpoint` instead.
#[allow(clippy::disallowed_methods)]
pub mod users {
    pub mod v1 {
        tonic::include_proto!("users.v1");
    }
}

#[allow(clippy::disallowed_methods)]
pub mod posts {
    pub mod v1 {
        tonic::include_proto!("posts.v1");
    }
}

#[allow(clippy::disallowed_methods)]
pub mod search {
    pub mod v1 {
        tonic::include_proto!("search.v1");
    }
}

/// Request metadata of a create that may be retried: the caller's
/// `Idempotency-Key` and whose it is (a user, or a client address).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENCY_SCOPE: &str = "idempotency-scope";
/// Set on the `FAILED_PRECONDITION` answered to a key reused with another
/// request.
pub const IDEMPOTENCY_MISMATCH: &str = "idempotency-mismatch";

/// Encoded `FileDescriptorSet` of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("platform_descriptor");
