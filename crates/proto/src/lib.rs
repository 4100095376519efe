//! Generated clients and servers for the platform's gRPC contracts.
//!
//! The `.proto` files in the repository's `proto/` directory are the source
//! of truth; this crate only compiles them. Each package is its own module,
//! named after the proto package.

pub mod users {
    pub mod v1 {
        tonic::include_proto!("users.v1");
    }
}

pub mod posts {
    pub mod v1 {
        tonic::include_proto!("posts.v1");
    }
}

/// Encoded `FileDescriptorSet` of every contract, for gRPC server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("platform_descriptor");
