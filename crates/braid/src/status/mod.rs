//! Live status of a daemon: the document served by the HTTP status API ([`http`]), printed by
//! `braid status`, turned into Prometheus metrics and drawn by the dashboard.

pub mod access;
pub mod client;
pub mod dashboard;
pub mod gateway;
pub mod http;
pub mod kernel;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod server;
