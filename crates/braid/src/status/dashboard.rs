//! The web dashboard served at `GET /` of the HTTP status API: one self-contained HTML page (inline
//! CSS and JS, nothing fetched from elsewhere) that polls `GET /api/status` every second and draws
//! each uplink's state, rates and last 5 minutes of throughput, the bonded total, the live
//! connections, the TFO decision and the blackhole state.
//!
//! Testable DOM: each uplink card has `data-uplink="NAME"`, and its state badge `class="state"`
//! with `data-state="up|suspect|down|recovering"` and the visible text (`Up`, `Down`, …).
//! `<body data-status>` is `ok` after a successful poll and `disconnected` (with a visible
//! banner) after a failed one. `tests/dashboard_dom.rs` checks it in a real headless Chromium.

/// The page, embedded in the binary.
pub const DASHBOARD_HTML: &str = include_str!("dashboard.html");
