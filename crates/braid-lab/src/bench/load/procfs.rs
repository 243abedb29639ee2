//! What the load benchmark reads of a daemon in `/proc`: its descriptors, its memory and the
//! open-file limit it runs with.

/// Open descriptors of `pid` (entries of `/proc/PID/fd`).
pub fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Resident memory of `pid` in KiB (`VmRSS` of `/proc/PID/status`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status_field(&status, "VmRSS:").unwrap_or(0)
}

fn status_field(status: &str, name: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(name))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// "soft/hard" of `pid`'s open-file limit (`Max open files` of `/proc/PID/limits`).
pub fn nofile(pid: u32) -> String {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap_or_default();
    limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some(format!("{}/{}", f.get(3)?, f.get(4)?))
        })
        .unwrap_or_else(|| "?".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_has_descriptors_memory_and_a_limit() {
        let me = std::process::id();
        assert!(fds(me) >= 3);
        assert!(rss_kib(me) > 0);
        assert!(nofile(me).contains('/'), "{}", nofile(me));
        assert_eq!(status_field("VmRSS:\t  1234 kB\n", "VmRSS:"), Some(1234));
    }
}
