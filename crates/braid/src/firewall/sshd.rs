//! The TCP ports sshd listens on, from `sshd_config` and a `/proc` socket-inode scan.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// The TCP ports sshd listens on: the `Port`/`ListenAddress` lines of `sshd_config` (and of
/// files it `Include`s; default 22), plus the LISTEN sockets that belong to a process named
/// `sshd`. The latter are found by matching the socket inodes of `/proc/<pid>/fd` (the procfs
/// root is taken as the grandparent of the first `proc_net_tcp` path, e.g. `/proc` for
/// `/proc/net/tcp`) against the LISTEN (`0A`) lines of `proc_net_tcp`. That scan needs root; it
/// catches an sshd still listening on a port the config no longer names (not restarted yet).
/// With systemd socket activation (`ssh.socket`) the listener belongs to systemd and only the
/// config ports are found.
pub fn sshd_ports(sshd_config: &Path, proc_net_tcp: &[PathBuf]) -> Vec<u16> {
    let mut ports = config_ports(sshd_config);
    let proc_root = proc_net_tcp
        .first()
        .and_then(|p| p.parent())
        .and_then(Path::parent);
    let inodes = proc_root.map(sshd_socket_inodes).unwrap_or_default();
    if !inodes.is_empty() {
        for f in proc_net_tcp {
            if let Ok(text) = std::fs::read_to_string(f) {
                ports.extend(
                    listening(&text)
                        .into_iter()
                        .filter(|(_, inode)| inodes.contains(inode))
                        .map(|(p, _)| p),
                );
            }
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Ports named by an sshd config: `ListenAddress host:port` as written, `Port` for the
/// addresses without a port (or for all addresses); 22 when nothing says otherwise.
fn config_ports(path: &Path) -> Vec<u16> {
    let mut port_lines = Vec::new();
    let mut listen = Vec::new();
    let base = path.parent().unwrap_or(Path::new("/etc/ssh")).to_path_buf();
    read_sshd_config(path, &base, 0, &mut port_lines, &mut listen);
    if port_lines.is_empty() {
        port_lines.push(22);
    }
    if listen.is_empty() {
        return port_lines;
    }
    listen
        .into_iter()
        .flat_map(|p: Option<u16>| p.map_or_else(|| port_lines.clone(), |p| vec![p]))
        .collect()
}

fn read_sshd_config(
    path: &Path,
    base: &Path,
    depth: u32,
    ports: &mut Vec<u16>,
    listen: &mut Vec<Option<u16>>,
) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    for directive in directives(&text) {
        match directive {
            Directive::Port(p) => ports.push(p),
            Directive::ListenAddress(p) => listen.push(p),
            Directive::Include(patterns) if depth < 8 => {
                for pattern in patterns {
                    for file in expand_include(base, pattern) {
                        read_sshd_config(&file, base, depth + 1, ports, listen);
                    }
                }
            }
            Directive::Include(_) => {}
        }
    }
}

/// An `sshd_config` line that bears on the ports sshd listens on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Directive<'a> {
    /// `Port N`.
    Port(u16),
    /// `ListenAddress ADDR[:PORT]`, with the port if it names one.
    ListenAddress(Option<u16>),
    /// `Include PATTERN…`.
    Include(Vec<&'a str>),
}

/// The port-related directives of one config file's text, up to its first `Match` block (Port
/// and ListenAddress are not allowed inside one). Keywords are case-insensitive; comments and
/// values that are not ports are skipped.
pub(crate) fn directives(text: &str) -> Vec<Directive<'_>> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        let (Some(key), Some(value)) = (words.next(), words.next()) else {
            continue;
        };
        match key.to_ascii_lowercase().as_str() {
            "port" => out.extend(value.parse::<u16>().ok().map(Directive::Port)),
            "listenaddress" => out.push(Directive::ListenAddress(listen_port(value))),
            "include" => out.push(Directive::Include(
                std::iter::once(value).chain(words).collect(),
            )),
            "match" => break,
            _ => {}
        }
    }
    out
}

/// The port of a `ListenAddress` value, if it has one: `1.2.3.4:2222`, `[::1]:2222`.
fn listen_port(v: &str) -> Option<u16> {
    if let Some(rest) = v.strip_prefix('[') {
        return rest.split_once("]:").and_then(|(_, p)| p.parse().ok());
    }
    match v.matches(':').count() {
        1 => v.rsplit_once(':').and_then(|(_, p)| p.parse().ok()),
        _ => None,
    }
}

/// The files an `Include` pattern names (relative to /etc/ssh; `*` and `?` in the file name).
fn expand_include(base: &Path, pattern: &str) -> Vec<PathBuf> {
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let name = full
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("")
        .to_string();
    if !name.contains(['*', '?']) {
        return vec![full];
    }
    let dir = full.parent().unwrap_or(base);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().is_some_and(|n| wildcard(&name, n)))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Shell-style match of `*` and `?`, in time proportional to the pattern's length times the
/// name's: a `*` is retried only from the last one met (the recursive match it replaces tried
/// every split at every `*`, exponential in their number: a 75-byte input of the
/// `sshd_config` fuzz target ran for over a minute).
pub(crate) fn wildcard(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni) = (0, 0);
    // The last `*` met, and where in the name its match ends for now.
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ni));
                pi += 1;
            }
            Some(&c) if c == '?' || c == n[ni] => {
                pi += 1;
                ni += 1;
            }
            _ => match star {
                // Let that `*` take one more character, and go on after it.
                Some((sp, sn)) => {
                    star = Some((sp, sn + 1));
                    pi = sp + 1;
                    ni = sn + 1;
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// Socket inodes held by processes named `sshd` under the procfs root.
fn sshd_socket_inodes(proc_root: &Path) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    let Ok(dir) = std::fs::read_dir(proc_root) else {
        return inodes;
    };
    for entry in dir.filter_map(Result::ok) {
        let pid_dir = entry.path();
        if !entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        {
            continue;
        }
        if !std::fs::read_to_string(pid_dir.join("comm")).is_ok_and(|c| c.trim() == "sshd") {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(pid_dir.join("fd")) else {
            continue;
        };
        for fd in fds.filter_map(Result::ok) {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let t = target.to_string_lossy();
            if let Some(n) = t
                .strip_prefix("socket:[")
                .and_then(|s| s.strip_suffix(']'))
                .and_then(|s| s.parse().ok())
            {
                inodes.insert(n);
            }
        }
    }
    inodes
}

/// `(port, inode)` of the LISTEN sockets in a `/proc/net/tcp` or `tcp6` text.
pub(crate) fn listening(text: &str) -> Vec<(u16, u64)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3) != Some(&"0A") {
                return None;
            }
            let port = u16::from_str_radix(f.get(1)?.rsplit_once(':')?.1, 16).ok()?;
            Some((port, f.get(9)?.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// A fake /etc/ssh and /proc under the temp dir, removed on drop.
    struct Tree(PathBuf);

    impl Tree {
        fn new() -> Tree {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "braid-doctor-fw-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&dir).unwrap();
            Tree(dir)
        }

        fn file(&self, rel: &str, text: &str) -> PathBuf {
            let p = self.0.join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    const PROC_NET_TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 00000000:08AE 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5555 1 0000000000000000 100 0 0 10 0\n\
   1: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9999 1 0000000000000000 100 0 0 10 0\n\
   2: 0100007F:FEBE 0100007F:0016 01 00000000:00000000 00:00000000 00000000     0        0 5556 1 0000000000000000 100 0 0 10 0\n";

    #[test]
    fn sshd_ports_reads_includes_and_sshd_listen_sockets() {
        let t = Tree::new();
        let cfg = t.file(
            "etc/ssh/sshd_config",
            "# Port 22\nInclude sshd_config.d/*.conf\nPasswordAuthentication no\n",
        );
        t.file("etc/ssh/sshd_config.d/10-omr.conf", "Port 65222\n");
        t.file("etc/ssh/sshd_config.d/README", "Port 1\n");
        let tcp = t.file("proc/net/tcp", PROC_NET_TCP);
        t.file("proc/1234/comm", "sshd\n");
        t.file("proc/99/comm", "nginx\n");
        std::fs::create_dir_all(t.0.join("proc/1234/fd")).unwrap();
        std::fs::create_dir_all(t.0.join("proc/99/fd")).unwrap();
        std::os::unix::fs::symlink("socket:[5555]", t.0.join("proc/1234/fd/3")).unwrap();
        std::os::unix::fs::symlink("socket:[9999]", t.0.join("proc/99/fd/6")).unwrap();
        // 0x08AE = 2222: the running sshd still listens on an old port; 80 belongs to nginx.
        assert_eq!(
            sshd_ports(&cfg, &[tcp, t.0.join("proc/net/tcp6")]),
            vec![2222, 65222]
        );
    }

    #[test]
    fn wildcard_matches_like_the_shell() {
        for (pattern, name, want) in [
            ("*.conf", "10-omr.conf", true),
            ("*.conf", "README", false),
            ("1?-*", "10-omr.conf", true),
            ("*", "", true),
            ("", "", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "x", true),
            ("é?", "éz", true),
        ] {
            assert_eq!(wildcard(pattern, name), want, "{pattern} {name}");
        }
    }

    #[test]
    fn wildcard_with_many_stars_answers_at_once() {
        // Through the sshd_config fuzz target, a 75-byte input ran for over a minute: the
        // recursive match tried every split of the name at each of the 12 stars.
        let pattern = "*a".repeat(12) + "*b";
        let started = std::time::Instant::now();
        assert!(!wildcard(&pattern, &"a".repeat(62)));
        assert!(wildcard(&pattern, &("a".repeat(62) + "b")));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn sshd_ports_defaults_to_22_and_honours_listen_address_ports() {
        let t = Tree::new();
        let none = sshd_ports(&t.0.join("missing"), &[]);
        assert_eq!(none, vec![22]);
        let cfg = t.file(
            "sshd_config",
            "Port 2200\nListenAddress 0.0.0.0:4000\nListenAddress [::]\nMatch User x\nPort 5\n",
        );
        assert_eq!(sshd_ports(&cfg, &[]), vec![2200, 4000]);
    }
}
