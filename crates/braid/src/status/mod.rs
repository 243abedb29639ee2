//! Live status of a daemon: the document served by the control API, printed by `braid status`,
//! turned into Prometheus metrics and drawn by the dashboard.

pub mod model;
