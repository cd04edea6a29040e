//! The control plane's wire contract shared by server, agent and CLI. So far: RFC 9421 request
//! signing and verification (`httpsig`) with RFC 9530 content digests (`digest`).

pub mod digest;
pub mod httpsig;
