//! Gathers the evidence for the TCP Fast Open decision (the rules are in `braid_proto::tfo`).
//!
//! Local facts (the sysctl, a setsockopt on an MPTCP socket; `crate::fast_open`) are read at
//! start-up, so that `fast_open = "on"` can refuse to start at once. The end-to-end part sends braid control
//! requests through the relay, first without TFO and then three times with it (the first of
//! which only fetches the cookie), and times each request/reply.

use std::time::{Duration, Instant};

use braid_proto::control::{ControlResponse, ServerReport, CONTROL_HOST, CONTROL_PORT};
use braid_proto::tfo::{Exchange, Facts};
use shadowsocks::relay::socks5::Address;

use super::dialer::Dialer;
use crate::control::Connection;

/// A reply slower than this counts as lost. A relay that holds back TFO replies (Linux 6.2 to
/// 6.18 without braid's push, docs/TFO-MPTCP.md) sends them only when the gateway sends again,
/// which in this exchange is never.
pub const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(2);
/// TFO request/replies after the baseline.
pub const TFO_TRIES: usize = 3;

/// Adds the end-to-end exchanges to `facts`. Returns the relay's report, if it is a braid relay.
pub async fn probe_relay(dialer: &Dialer, facts: &mut Facts) -> Option<ServerReport> {
    let (baseline, report) = exchange(dialer, false).await;
    facts.baseline = Some(baseline);
    facts.relay_kernel = report.as_ref().map(|r| r.kernel.clone());
    if !matches!(baseline, Exchange::Replied { .. }) {
        return None;
    }
    for _ in 0..TFO_TRIES {
        let (x, _) = exchange(dialer, true).await;
        facts.tfo.push(x);
        if !matches!(x, Exchange::Replied { .. }) {
            break;
        }
    }
    report
}

/// One timed control request/reply, from before the connect to the reply's last byte.
pub async fn exchange(dialer: &Dialer, tfo: bool) -> (Exchange, Option<ServerReport>) {
    let started = Instant::now();
    let work = async {
        let target = Address::DomainNameAddress(CONTROL_HOST.to_string(), CONTROL_PORT);
        let mut conn = Connection::new(dialer.open(target, tfo).await.ok()?);
        // A frame that cannot be read fails the exchange at once, not at the timeout.
        let resp: ControlResponse = conn.request(&crate::control::hello()).await.ok()?;
        let s = conn.get_ref().get_ref();
        let syn_data = braid_sys::tfo::syn_data_acked(s).unwrap_or(false);
        dialer.note_transport(s);
        Some((resp, syn_data))
    };
    match tokio::time::timeout(EXCHANGE_TIMEOUT, work).await {
        Err(_) => (Exchange::TimedOut, None),
        Ok(None) => (Exchange::Failed, None),
        Ok(Some((resp, syn_data))) => {
            let report = match resp {
                ControlResponse::Report(r) => Some(r),
                ControlResponse::Error { .. }
                | ControlResponse::Pong { .. }
                | ControlResponse::Accepted { .. }
                | ControlResponse::Received(_)
                | ControlResponse::Tunnel(_) => None,
            };
            (
                Exchange::Replied {
                    elapsed: started.elapsed(),
                    syn_data,
                },
                report,
            )
        }
    }
}
