//! systemd's notify protocol, in the few lines it takes (no libsystemd): one datagram per
//! state change to the unix socket in `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace). Without that variable (not under systemd, or `Type=simple`) every call is a no-op.
//!
//! - `READY=1` once the data path is really up (server: listener bound; gateway: listeners,
//!   capture table and the uplink manager's first reconcile).
//! - `WATCHDOG=1` every half `$WATCHDOG_USEC`, from the runtime itself, so a wedged runtime
//!   stops the pings and systemd restarts the daemon.
//! - `RELOADING=1` … `READY=1` around a SIGHUP reload; `STOPPING=1` at shutdown.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// Sends `state` (e.g. `"READY=1"`) to systemd; false when not under systemd or on an error,
/// which is logged once at debug level (the daemon works the same without systemd).
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let sent = send(&path.to_string_lossy(), state);
    if let Err(e) = &sent {
        tracing::debug!("sd_notify {state:?}: {e}");
    }
    sent.is_ok()
}

/// Never blocks: called from async tasks, and a receiver that stops reading (a full queue) must
/// cost a lost notification, not a runtime thread.
fn send(path: &str, state: &str) -> std::io::Result<()> {
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    match path.strip_prefix('@') {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?;
            sock.send_to_addr(state.as_bytes(), &addr)?;
        }
        None => {
            sock.send_to(state.as_bytes(), path)?;
        }
    }
    Ok(())
}

/// `READY=1` with a status line systemctl shows.
pub fn ready(status: &str) {
    notify(&format!("READY=1\nSTATUS={status}"));
}

/// How often systemd wants a `WATCHDOG=1`: half of `$WATCHDOG_USEC`, when it is meant for this
/// process (`$WATCHDOG_PID`, if set, is ours).
pub fn watchdog_interval() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.trim() != std::process::id().to_string() {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// Pings the watchdog from a task on the current runtime, if systemd asked for it.
pub fn spawn_watchdog() {
    if let Some(every) = watchdog_interval() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                notify("WATCHDOG=1");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_reaches_a_path_socket_and_an_abstract_one() {
        let dir = std::env::temp_dir().join(format!("braid-notify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notify");
        let rx = UnixDatagram::bind(&p).unwrap();
        send(p.to_str().unwrap(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");

        use std::os::linux::net::SocketAddrExt;
        let name = format!("braid-notify-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send(&format!("@{name}"), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn send_to_a_receiver_that_never_reads_does_not_block() {
        let dir = std::env::temp_dir().join(format!("braid-notify-full-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("notify");
        let _rx = UnixDatagram::bind(&p).unwrap();
        let started = std::time::Instant::now();
        let sent = (0..1000)
            .filter(|_| send(p.to_str().unwrap(), "WATCHDOG=1").is_ok())
            .count();
        assert!(
            sent < 1000,
            "the queue never filled: the test proves nothing"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
