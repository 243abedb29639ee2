//! TUN devices for the userspace tunnel (`ip tuntap add mode tun NAME`, then `ip link set NAME
//! mtu M up`), read and written as whole IP packets on tokio.
//!
//! The device is not persistent: the kernel removes it, with its addresses and routes, when the
//! last descriptor closes, so a killed daemon leaves no TUN device behind. Addresses are added
//! with [`crate::netlink::Rtnl`], like every other address braid sets.

use std::io;

/// Why a TUN device could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TunError {
    /// The kernel refused `TUNSETIFF` or the MTU or flags.
    #[error("cannot create the TUN device {name}: {source}; fix: {}", hint(source))]
    Create {
        /// The device name asked for.
        name: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

fn hint(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => {
            "run braid as root, or give it CAP_NET_ADMIN (AmbientCapabilities=CAP_NET_ADMIN)"
        }
        Some(libc::ENOENT) | Some(libc::ENODEV) => {
            "load the tun module (modprobe tun) and check that /dev/net/tun exists"
        }
        Some(libc::EBUSY) | Some(libc::EEXIST) => {
            "another program uses a device of that name; stop it or remove the device"
        }
        _ => "check the kernel log (dmesg)",
    }
}

/// One TUN device (no packet-information header: each read is one IP packet).
pub struct Tun {
    device: tun_rs::AsyncDevice,
    name: String,
    ifindex: u32,
}

impl std::fmt::Debug for Tun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tun")
            .field("name", &self.name)
            .field("ifindex", &self.ifindex)
            .finish()
    }
}

impl Tun {
    /// Creates TUN device `name` with `mtu`, up, in the calling thread's network namespace.
    /// Must run inside a tokio runtime.
    pub fn open(name: &str, mtu: u16) -> Result<Tun, TunError> {
        let err = |source| TunError::Create {
            name: name.to_string(),
            source,
        };
        let device = tun_rs::DeviceBuilder::new()
            .name(name)
            .mtu(mtu)
            .packet_information(false)
            .enable(true)
            .build_async()
            .map_err(err)?;
        let ifindex = nix::net::if_::if_nametoindex(name)
            .map_err(|e| err(io::Error::from_raw_os_error(e as i32)))?;
        Ok(Tun {
            device,
            name: name.to_string(),
            ifindex,
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device's interface index.
    pub fn ifindex(&self) -> u32 {
        self.ifindex
    }

    /// Reads one packet the kernel routed into the device.
    pub async fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.device.recv(buf).await
    }

    /// Hands one packet to the kernel as if it arrived on the device.
    pub async fn send(&self, packet: &[u8]) -> io::Result<usize> {
        self.device.send(packet).await
    }
}
