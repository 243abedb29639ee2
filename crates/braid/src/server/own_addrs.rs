//! The server's own addresses, refreshed in the background, so that a client cannot make the
//! relay connect to itself (and to services bound to its public address).

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::Shared;

/// A cached list of local addresses.
pub struct OwnAddrs(RwLock<Vec<IpAddr>>);

impl OwnAddrs {
    /// Reads the addresses now.
    pub fn new() -> Self {
        OwnAddrs(RwLock::new(read()))
    }

    /// A copy of the current list.
    pub fn get(&self) -> Vec<IpAddr> {
        self.0.read().map(|v| v.clone()).unwrap_or_default()
    }
}

fn read() -> Vec<IpAddr> {
    let Ok(ifs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    ifs.filter_map(|i| i.address)
        .filter_map(|a| {
            if let Some(v4) = a.as_sockaddr_in() {
                Some(IpAddr::V4(v4.ip()))
            } else {
                a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// Re-reads the list every 30 s (addresses change with DHCP and cloud re-plumbing).
pub async fn refresh_forever(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(Duration::from_secs(30)).await;
        let fresh = read();
        if let Ok(mut w) = shared.own.0.write() {
            *w = fresh;
        }
    }
}
