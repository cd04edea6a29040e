//! Berth's provider contract over gRPC (`proto/berth/provider/v1/provider.proto`):
//! - [`RemoteProvider`]: a [`berth_core::Provider`] that calls a remote server, for the agent's
//!   `type = "remote"` backends;
//! - [`serve`] and [`Service`] (the SDK): any `Provider` served, with a bearer token or mutual
//!   TLS, and the standard `grpc.health.v1` service.
//!
//! The proto is compiled at build time in pure Rust (protox): no system `protoc`.

use std::fmt;

mod client;
mod convert;
mod serve;
mod server;
mod status;
mod tls;

pub use client::{RemoteConfig, RemoteProvider};
pub use serve::{Listen, ServeError, ServeOptions, Served, ServerTls, bind};
pub use server::{PROTOCOL_MINOR, Service};
pub use status::{from_status, to_status};

/// The generated protocol types, client and server.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    tonic::include_proto!("berth.provider.v1");
}

/// By hand: a machine may carry its root password, which never shows in `Debug`.
impl fmt::Debug for pb::Instance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Instance")
            .field("instance_id", &self.instance_id)
            .field("backend_id", &self.backend_id)
            .field("kind", &self.kind)
            .field("node", &self.node)
            .field("name", &self.name)
            .field("state", &self.state)
            .field("ipv4", &self.ipv4)
            .field("ipv6", &self.ipv6)
            .field("cores", &self.cores)
            .field("memory_mib", &self.memory_mib)
            .field("disk_gib", &self.disk_gib)
            .field("ssh_port", &self.ssh_port)
            .field("login_user", &self.login_user)
            .field("root_password", &self.root_password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}
