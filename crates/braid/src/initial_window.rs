//! The relay's `initial_window`, applied one way for the relay, which holds the program while it
//! runs, and for `braid doctor`, which tries it and lets go: the two cannot disagree.

use braid_sys::sock_ops::InitialWindow;

/// What an operator can do when the window cannot be set.
pub const FIX: &str = "run the relay as root (or with CAP_BPF and CAP_NET_ADMIN, as the braid-server unit does) on Linux 5.15 or later with cgroup2 mounted at /sys/fs/cgroup, or set initial_window = 0";

/// The outcome of applying `initial_window` for one port.
#[derive(Debug)]
pub struct Applied {
    /// The attached program; dropping it detaches it.
    pub guard: Option<InitialWindow>,
    /// The window accepted connections start with (`None`: the kernel's).
    pub segments: Option<u32>,
    /// One sentence: why.
    pub why: String,
    /// The configured window could not be set: the kernel's error.
    pub error: Option<String>,
}

/// Attaches the program for connections accepted on `port` in this namespace, when
/// `configured` asks for a window.
pub fn apply(configured: Option<u32>, port: u16) -> Applied {
    let Some(n) = configured else {
        return Applied {
            guard: None,
            segments: None,
            why: "initial_window = 0: the kernel's (10, or the route's initcwnd)".into(),
            error: None,
        };
    };
    match braid_sys::sock_ops::attach_initial_window(port, n) {
        Ok(w) => Applied {
            why: format!(
                "initial_window = {n}: set on each connection accepted on port {port} by a BPF sock_ops program on cgroup {}",
                w.cgroup.display()
            ),
            guard: Some(w),
            segments: Some(n),
            error: None,
        },
        Err(e) => Applied {
            guard: None,
            segments: None,
            why: format!("initial_window = {n} could not be set ({e}): the kernel's"),
            error: Some(e.to_string()),
        },
    }
}
