//! The control plane's wire contract shared by server, agent and CLI: the JSON bodies (`wire`),
//! RFC 9421 request signing and verification (`httpsig`) with RFC 9530 content digests
//! (`digest`), the typed client (`client`), and the sealed credentials a customer decrypts
//! (`credentials`).

pub mod client;
mod client_accounts;
mod client_events;
mod client_instances;
pub mod credentials;
pub mod digest;
pub mod httpsig;
pub mod wire;
