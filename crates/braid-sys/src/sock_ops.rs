//! A larger initial congestion window for the connections one listener accepts: a cgroup
//! `sock_ops` BPF program that sets `TCP_BPF_IW`.
//!
//! Why: a short answer (a 100 kB web object) through the relay spends most of its time in slow
//! start: from the kernel's 10 segments it needs three round trips of the first uplink. Linux
//! sets the initial window per route (`ip route … initcwnd`), which braid must not change on
//! the host, or per socket from a BPF `sock_ops` program only. So braid loads a program of 20
//! instructions, written here (no compiler, no libbpf), and attaches it to its own cgroup
//! through a BPF *link*: the kernel detaches the program when the link's last descriptor
//! closes, so a relay that stops, crashes or is killed with SIGKILL leaves nothing attached.
//!
//! The program acts on one kind of socket only: accepted (`BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB`,
//! when the handshake completes, before any data is sent) on the listener's port, in the
//! listener's network namespace (its netns cookie). Every other socket of the cgroup is left
//! alone. MPTCP subflows are TCP sockets the kernel puts in the MPTCP socket's cgroup, so every
//! subflow of a relayed connection starts with the window, the joins included.
//!
//! Needs CAP_BPF and CAP_NET_ADMIN (root), a kernel with `CONFIG_CGROUP_BPF` and
//! `bpf_get_netns_cookie` for `sock_ops` (5.15 and later), and a cgroup2 mount.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::sockopt;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
const BPF_CGROUP_SOCK_OPS: u32 = 3;
const BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB: i32 = 5;
/// `struct bpf_sock_ops`: `op` at 0, `local_port` (host byte order) at 68.
const OFF_OP: i16 = 0;
const OFF_LOCAL_PORT: i16 = 68;
const HELPER_SETSOCKOPT: i32 = 49;
const HELPER_GET_NETNS_COOKIE: i32 = 122;
const TCP_BPF_IW: i32 = 1001;
const SO_NETNS_COOKIE: i32 = 71;
/// The most segments braid asks for: the kernel takes any positive value, a relay has no use
/// for an initial burst of more than ~370 kB.
pub const MAX_SEGMENTS: u32 = 256;

/// One BPF instruction: opcode, destination and source registers, offset, immediate.
fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[0] = code;
    b[1] = (src << 4) | dst;
    b[2..4].copy_from_slice(&off.to_le_bytes());
    b[4..8].copy_from_slice(&imm.to_le_bytes());
    b
}

/// The program, for `port` in the namespace with `netns_cookie`:
///
/// ```text
///  0  r6 = r1                        ; the context, struct bpf_sock_ops *
///  1  r2 = *(u32 *)(r6 + op)
///  2  if r2 != PASSIVE_ESTABLISHED goto out
///  3  r2 = *(u32 *)(r6 + local_port)
///  4  if r2 != port goto out
///  5  r1 = r6
///  6  call bpf_get_netns_cookie
///  7  r2 = netns_cookie ll           ; two slots
///  9  if r0 != r2 goto out
/// 10  *(u32 *)(r10 - 4) = segments
/// 11  r1 = r6; r2 = SOL_TCP; r3 = TCP_BPF_IW; r4 = r10 - 4; r5 = 4
/// 17  call bpf_setsockopt
/// 18  out: r0 = 1                   ; never reject the socket
/// 19  exit
/// ```
fn program(port: u16, netns_cookie: u64, segments: u32) -> Vec<[u8; 8]> {
    const OUT: i16 = 18;
    let jump_to_out = |at: i16| OUT - at - 1;
    vec![
        insn(0xbf, 6, 1, 0, 0),
        insn(0x61, 2, 6, OFF_OP, 0),
        insn(
            0x55,
            2,
            0,
            jump_to_out(2),
            BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB,
        ),
        insn(0x61, 2, 6, OFF_LOCAL_PORT, 0),
        insn(0x55, 2, 0, jump_to_out(4), i32::from(port)),
        insn(0xbf, 1, 6, 0, 0),
        insn(0x85, 0, 0, 0, HELPER_GET_NETNS_COOKIE),
        insn(0x18, 2, 0, 0, netns_cookie as u32 as i32),
        insn(0x00, 0, 0, 0, (netns_cookie >> 32) as u32 as i32),
        insn(0x5d, 0, 2, jump_to_out(9), 0),
        insn(0x62, 10, 0, -4, segments.min(MAX_SEGMENTS) as i32),
        insn(0xbf, 1, 6, 0, 0),
        insn(0xb7, 2, 0, 0, libc::SOL_TCP),
        insn(0xb7, 3, 0, 0, TCP_BPF_IW),
        insn(0xbf, 4, 10, 0, 0),
        insn(0x07, 4, 0, 0, -4),
        insn(0xb7, 5, 0, 0, 4),
        insn(0x85, 0, 0, 0, HELPER_SETSOCKOPT),
        insn(0xb7, 0, 0, 0, 1),
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// The attached program; dropping it detaches it (the kernel does the same when the process
/// ends).
#[derive(Debug)]
pub struct InitialWindow {
    _link: OwnedFd,
    /// The cgroup it is attached to.
    pub cgroup: PathBuf,
}

/// Attaches the program for connections accepted on `port` in this thread's network namespace
/// to this process's cgroup: each starts with a congestion window of `segments`.
pub fn attach_initial_window(port: u16, segments: u32) -> io::Result<InitialWindow> {
    let cookie = netns_cookie()?;
    let cgroup = own_cgroup_dir()?;
    let dir = std::fs::File::open(&cgroup).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot open the cgroup {}: {e}", cgroup.display()),
        )
    })?;
    let prog = load(&program(port, cookie, segments))?;
    let attr = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_fd: dir.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_SOCK_OPS,
        flags: 0,
    };
    let link = bpf(BPF_LINK_CREATE, &attr).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "attaching the sock_ops program to {} (BPF_LINK_CREATE): {e}",
                cgroup.display()
            ),
        )
    })?;
    Ok(InitialWindow {
        _link: link,
        cgroup,
    })
}

/// The cookie of this thread's network namespace (`SO_NETNS_COOKIE`, Linux 5.14).
fn netns_cookie() -> io::Result<u64> {
    let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)?;
    let mut b = [0u8; 8];
    let n = sockopt::get_raw(&s, libc::SOL_SOCKET, SO_NETNS_COOKIE, &mut b)?;
    if n != 8 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "SO_NETNS_COOKIE returned a short value",
        ));
    }
    Ok(u64::from_ne_bytes(b))
}

/// This process's cgroup2 directory: its path in `/proc/self/cgroup` (`0::/…`) under the
/// cgroup2 mount of this mount namespace (`/proc/self/mountinfo`).
fn own_cgroup_dir() -> io::Result<PathBuf> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")?;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    cgroup_dir(&cgroup, &mountinfo).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "no cgroup2 mount holds this process's cgroup (mount one: mount -t cgroup2 cgroup2 /sys/fs/cgroup)",
        )
    })
}

/// [`own_cgroup_dir`] from the two files' text.
fn cgroup_dir(cgroup: &str, mountinfo: &str) -> Option<PathBuf> {
    let path = cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    mountinfo.lines().find_map(|l| {
        let (mount, fs) = l.split_once(" - ")?;
        if fs.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let f: Vec<&str> = mount.split_whitespace().collect();
        let (root, point) = (*f.get(3)?, *f.get(4)?);
        let rest = path.strip_prefix(root.trim_end_matches('/'))?;
        let rest = rest.trim_start_matches('/');
        let dir = Path::new(point);
        Some(if rest.is_empty() {
            dir.to_path_buf()
        } else {
            dir.join(rest)
        })
    })
}

/// The congestion window of a TCP socket now (`tcpi_snd_cwnd` of `TCP_INFO`).
#[cfg(test)]
fn snd_cwnd<S: std::os::fd::AsFd>(sock: &S) -> io::Result<u32> {
    let mut b = [0u8; 84];
    let n = sockopt::get_raw(sock, libc::IPPROTO_TCP, libc::TCP_INFO, &mut b)?;
    if n < 84 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "TCP_INFO too short for tcpi_snd_cwnd",
        ));
    }
    Ok(u32::from_ne_bytes([b[80], b[81], b[82], b[83]]))
}

#[repr(C)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
}

#[repr(C)]
struct LinkCreate {
    prog_fd: u32,
    target_fd: u32,
    attach_type: u32,
    flags: u32,
}

/// Loads `insns` as a `sock_ops` program; the verifier's log is in the error.
fn load(insns: &[[u8; 8]]) -> io::Result<OwnedFd> {
    let code: Vec<u8> = insns.iter().flatten().copied().collect();
    // The program is braid's own; "Dual MIT/GPL" lets it call every helper it needs.
    let license = c"Dual MIT/GPL";
    let mut log = vec![0u8; 16 * 1024];
    let attr = ProgLoad {
        prog_type: BPF_PROG_TYPE_SOCK_OPS,
        insn_cnt: insns.len() as u32,
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
    };
    bpf(BPF_PROG_LOAD, &attr).map_err(|e| {
        let text = String::from_utf8_lossy(&log);
        let text = text.trim_end_matches('\0').trim();
        let tail: String = text.lines().rev().take(3).collect::<Vec<_>>().join(" / ");
        io::Error::new(
            e.kind(),
            format!("loading the sock_ops program (BPF_PROG_LOAD): {e}; verifier: {tail}"),
        )
    })
}

/// One `bpf(2)` call that returns a new descriptor.
fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a #[repr(C)] prefix of `union bpf_attr` for `cmd`, valid for reads of
    // its size for the call (the kernel zero-fills the rest of its union); every pointer in it
    // (instructions, license, log buffer) points into memory the caller keeps alive across the
    // call, and the log buffer is writable for `log_size` bytes.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *const A).cast::<libc::c_void>(),
            std::mem::size_of::<A>() as libc::c_uint,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success these commands return a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(rc as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn every_jump_lands_on_the_exit_that_accepts_the_socket() {
        let p = program(8388, 0x1234_5678_9abc_def0, 32);
        assert_eq!(p.len(), 20);
        for (at, i) in p.iter().enumerate() {
            if i[0] == 0x55 || i[0] == 0x5d {
                let off = i16::from_le_bytes([i[2], i[3]]);
                let to = at as i64 + 1 + i64::from(off);
                assert_eq!(to, 18, "jump at {at}");
                assert_eq!(p[18], insn(0xb7, 0, 0, 0, 1));
            }
        }
        // The cookie is split over the two slots of the 64-bit load.
        assert_eq!(
            i32::from_le_bytes(p[7][4..8].try_into().unwrap()) as u32,
            0x9abc_def0
        );
        assert_eq!(
            i32::from_le_bytes(p[8][4..8].try_into().unwrap()) as u32,
            0x1234_5678
        );
        assert_eq!(i32::from_le_bytes(p[4][4..8].try_into().unwrap()), 8388);
        assert_eq!(i32::from_le_bytes(p[10][4..8].try_into().unwrap()), 32);
        assert_eq!(
            i32::from_le_bytes(program(1, 0, 100_000)[10][4..8].try_into().unwrap()),
            MAX_SEGMENTS as i32
        );
    }

    #[test]
    fn the_cgroup_dir_is_found_under_the_cgroup2_mount() {
        let mi = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                  35 25 0:30 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dir("4:memory:/x\n0::/\n", mi),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        let mi = "35 25 0:30 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dir("0::/system.slice/braid-server.service\n", mi),
            Some(PathBuf::from(
                "/sys/fs/cgroup/system.slice/braid-server.service"
            ))
        );
        // A mount of a subtree (a container's): the path must lie under its root.
        let mi = "35 25 0:30 /system.slice /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(
            cgroup_dir("0::/system.slice/a.service\n", mi),
            Some(PathBuf::from("/mnt/cg/a.service"))
        );
        assert_eq!(cgroup_dir("0::/user.slice\n", mi), None);
        assert_eq!(
            cgroup_dir("0::/\n", "1 0 0:1 / / rw - ext4 /dev/vda rw\n"),
            None
        );
    }

    /// Accepts one connection on `l` and returns the accepted socket's congestion window.
    fn accepted_cwnd(l: &TcpListener) -> u32 {
        let _c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        snd_cwnd(&s).unwrap()
    }

    /// On loopback in the host's namespace: the program is scoped to one ephemeral port and
    /// this namespace, so nothing else on the machine is touched.
    #[test]
    fn accepted_connections_on_the_port_start_with_the_window_and_no_others() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let before = accepted_cwnd(&l);
        let attached = match attach_initial_window(port, 32) {
            Ok(a) => a,
            Err(e) if std::env::var("CI").as_deref() != Ok("true") => {
                eprintln!("skipped (not root, or no cgroup BPF here): {e}");
                return;
            }
            Err(e) => panic!("attach: {e}"),
        };
        assert_ne!(before, 32, "the kernel's own initial window is not 32");
        assert_eq!(
            accepted_cwnd(&l),
            32,
            "attached to {}",
            attached.cgroup.display()
        );
        assert_eq!(accepted_cwnd(&other), before, "another port is not touched");
        drop(attached);
        assert_eq!(
            accepted_cwnd(&l),
            before,
            "dropping the link detaches the program"
        );
    }
}
