//! The HTTP routes, one module per resource.

pub mod accounts;
pub mod actions;
pub mod agent;
pub mod audit;
pub mod catalog;
pub mod customer_quotas;
pub mod inputs;
pub mod instances;
pub mod keys;
pub mod offerings;
pub mod operations;
pub mod placement;
pub mod quotas;
pub mod tokens;
