//! The libvirt/QEMU backend: guests on KVM hosts through libvirt's native API. Templates are
//! base images; a VM's disk is a qcow2 overlay (or copy) in its own directory, next to its
//! NoCloud seed ISO and console log; the domain carries Berth's ownership marker in
//! `<metadata>`.

pub mod accel;
pub mod config;
pub mod conn;
mod create;
mod doctor;
pub mod domain;
pub mod exec;
pub mod image;
mod pool;
pub mod provider;
mod reconfigure;
pub mod seed;
pub mod templates;
pub mod xml;

pub use config::{CloneMode, DomainTypeSetting, LibvirtConfig, NetworkAttachment};
pub use provider::LibvirtProvider;
