//! The relay's side toward a destination: resolve the name within a deadline, check every
//! address against the destination policy at the moment of connecting, connect with keepalive.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use braid_proto::logsafe::escaped;
use braid_proto::socks5::TargetAddr;
use tokio::net::TcpStream;
use tracing::debug;

use super::Shared;
use crate::listener::LIVENESS;

/// Connects to `target`, trying its addresses in order; the error says why the last one failed
/// (refused by policy, unreachable, timed out), ready for the log.
pub(super) async fn connect(shared: &Shared, target: &TargetAddr) -> Result<TcpStream, String> {
    let limit = shared.cfg.connect_timeout;
    let candidates: Vec<SocketAddr> = match target {
        TargetAddr::Ip(a) => vec![braid_sys::socket::normalize(*a)],
        TargetAddr::Domain(h, p) => {
            resolve(h, tokio::net::lookup_host((h.as_str(), *p)), limit).await?
        }
    };
    let mut last = String::from("no address");
    for addr in candidates {
        if let Err(refusal) = shared.policy.check(addr.ip(), |ip| shared.own.is_own(ip)) {
            last = format!("refused destination {addr}: {refusal}; an operator can allow it with allow_destinations in server.toml");
            continue;
        }
        match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                if let Err(e) = braid_sys::keepalive::apply(&s, &LIVENESS) {
                    debug!("keepalive toward {addr}: {e}");
                }
                return Ok(s);
            }
            Ok(Err(e)) => last = format!("connect to {addr} failed: {e}"),
            Err(_) => last = format!("connect to {addr} timed out after {limit:?}"),
        }
    }
    Err(last)
}

/// Waits for a name's addresses at most `limit` (`connect_timeout_secs`): a resolver that does
/// not answer would otherwise hold the connection, and its descriptors, for minutes.
async fn resolve<I>(
    host: &str,
    lookup: impl Future<Output = io::Result<I>>,
    limit: Duration,
) -> Result<Vec<SocketAddr>, String>
where
    I: Iterator<Item = SocketAddr>,
{
    match tokio::time::timeout(limit, lookup).await {
        Ok(Ok(addrs)) => Ok(addrs.collect()),
        Ok(Err(e)) => Err(format!("cannot resolve {}: {e}", escaped(host))),
        Err(_) => Err(format!(
            "cannot resolve {}: no answer within {limit:?}",
            escaped(host)
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn resolver_that_never_answers_is_given_up() {
        let never = std::future::pending::<io::Result<std::vec::IntoIter<SocketAddr>>>();
        let e = resolve("slow.example\n", never, Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(e.contains("no answer within 10s"), "{e}");
        assert!(
            e.contains("slow.example\\n"),
            "the name is shown escaped: {e}"
        );
    }

    #[tokio::test]
    async fn resolved_addresses_come_back_in_order() {
        let a: Vec<SocketAddr> = vec![
            "192.0.2.1:80".parse().unwrap(),
            "[2001:db8::1]:80".parse().unwrap(),
        ];
        let got = resolve(
            "x",
            std::future::ready(Ok(a.clone().into_iter())),
            Duration::from_secs(1),
        )
        .await
        .unwrap();
        assert_eq!(got, a);
    }
}
