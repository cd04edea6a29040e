//! The control plane's wire contract shared by server, agent and CLI: the JSON bodies (`wire`),
//! RFC 9421 request signing and verification (`httpsig`) with RFC 9530 content digests
//! (`digest`), and the typed client (`client`).

pub mod client;
pub mod digest;
pub mod httpsig;
pub mod wire;
