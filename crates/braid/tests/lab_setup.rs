//! `braid setup` in the lab, with real parts: a real OpenSSH server (Debian's openssh-server)
//! in the VPS namespace behind a default-deny host firewall, real nft and iptables, the real
//! braid binary. Every file setup writes goes under a temporary root; every firewall change
//! happens inside the lab's namespaces, which the tests remove.
//!
//! - sshd on 65222 (nft default-deny), on 22 and 2222 at once (ufw-style iptables): after setup
//!   ssh still logs in on every port, the relay port admits TCP and UDP from the gateway, any
//!   other port stays closed, and `setup undo` leaves the firewall exactly as found.
//! - `--dry-run` changes nothing (firewall, files).
//! - setup refuses, with the fix, on a kernel without MPTCP or with a reboot pending.
//! - pairing end to end: the URI from `setup server` given to `setup gateway` bonds.
//!
//! Root-only (skips without root unless CI=true, where it must run).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use braid_lab::harness::{Harness, RELAY_PORT};
use braid_lab::lab::Lab;
use braid_lab::Role;
use braid_proto::health::LinkState;
use common::{exe, unshaped_uplinks, wait_until};

/// A port nothing of braid's uses, with a listener behind it: it must stay closed.
const OTHER_PORT: u16 = 9999;

/// A temporary folder, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let p =
            std::env::temp_dir().join(format!("braid-setup-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `braid ARGS` in `role` and returns its output.
fn braid(h: &Harness, role: Role, args: &[&str]) -> Output {
    braid_at(exe(), h, role, args)
}

/// Runs `BIN ARGS` in `role` (the binary under test, or one installed from the package).
fn braid_at(bin: &Path, h: &Harness, role: Role, args: &[&str]) -> Output {
    h.lab
        .command(role, &bin.to_string_lossy())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("running braid")
}

fn text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `braid setup server` in vps with the lab's public address, an empty /boot (the machine's
/// own kernels stay out of it) and `sshd_config`.
fn setup_server(h: &Harness, root: &Path, sshd_config: &Path, extra: &[&str]) -> Output {
    setup_server_at(exe(), h, root, sshd_config, extra)
}

fn setup_server_at(
    bin: &Path,
    h: &Harness,
    root: &Path,
    sshd_config: &Path,
    extra: &[&str],
) -> Output {
    // An empty /boot inside the root (setup writes no file there).
    let boot = root.join("boot-empty");
    std::fs::create_dir_all(&boot).expect("boot dir");
    let (r, b, s) = (path(root), path(&boot), path(sshd_config));
    let public = Lab::VPS_PUBLIC.to_string();
    let mut args = vec![
        "setup",
        "server",
        "--root",
        &r,
        "--public-host",
        &public,
        "--sshd-config",
        &s,
        "--boot-root",
        &b,
        "--run-root",
        &b,
    ];
    args.extend_from_slice(extra);
    braid_at(bin, h, Role::Vps, &args)
}

fn path(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}

/// The vps firewall as text: the nft ruleset and iptables-save without counters.
fn firewall(h: &Harness) -> String {
    // Stateless: counters move with the test's own traffic; the rules must not.
    let nft = h
        .lab
        .run(Role::Vps, &["nft", "-s", "list", "ruleset"])
        .expect("nft");
    let ipt = h
        .lab
        .run(Role::Vps, &["iptables-save"])
        .expect("iptables-save");
    let ipt: String = ipt
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| match l.find(" [") {
            Some(i) if l.starts_with(':') => l[..i].to_string() + "\n",
            _ => l.to_string() + "\n",
        })
        .collect();
    format!("{nft}\n--- iptables-save\n{ipt}")
}

/// Every file under `root`, with its content.
fn files(root: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((p.clone(), std::fs::read(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// A real sshd in vps on `ports`, with a host key and a client key made here.
struct Sshd {
    dir: TempDir,
    config: PathBuf,
}

impl Sshd {
    fn start(h: &Harness, name: &str, ports: &[u16]) -> Sshd {
        let dir = TempDir::new(name);
        let d = &dir.0;
        for key in ["host", "client"] {
            let st = Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(d.join(key))
                .status()
                .expect("ssh-keygen (install openssh-client)");
            assert!(st.success(), "ssh-keygen");
        }
        std::fs::copy(d.join("client.pub"), d.join("authorized_keys")).expect("authorized_keys");
        let mut cfg: String = ports.iter().map(|p| format!("Port {p}\n")).collect();
        cfg += &format!(
            "HostKey {0}/host\nAuthorizedKeysFile {0}/authorized_keys\nPidFile {0}/sshd.pid\n\
             UsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            d.display()
        );
        let config = d.join("sshd_config");
        std::fs::write(&config, cfg).expect("sshd_config");
        // sshd wants its privilege separation folder, /run/sshd, which systemd-tmpfiles makes
        // at boot. `ip netns exec` runs sshd in a mount namespace of its own, so a tmpfs on /run
        // there gives it one without touching the host's /run.
        let script = format!(
            "mount -t tmpfs -o mode=0755 tmpfs /run && mkdir -m 0755 /run/sshd && exec /usr/sbin/sshd -D -e -f {}",
            config.display()
        );
        let mut cmd = h.lab.command(Role::Vps, "sh");
        cmd.args(["-c", &script])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(d.join("sshd.log")).expect("log"));
        h.lab.spawn_process(Role::Vps, cmd).expect("starting sshd");
        for &p in ports {
            wait_until(
                &format!("sshd listening on {p}"),
                Duration::from_secs(10),
                || {
                    h.lab
                        .in_netns(Role::Vps, || TcpStream::connect(("127.0.0.1", p)))
                        .expect("vps")
                        .map(drop)
                        .map_err(|e| e.to_string())
                },
            );
        }
        Sshd { dir, config }
    }

    /// `ssh -p PORT root@VPS echo …` from gw with the test's key: true when it logged in.
    fn login(&self, h: &Harness, port: u16) -> Result<(), String> {
        let key = self.dir.0.join("client");
        let out = h
            .lab
            .command(Role::Gw, "ssh")
            .args(["-p", &port.to_string(), "-i"])
            .arg(&key)
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "ConnectTimeout=3",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(format!("root@{}", Lab::VPS_PUBLIC))
            .arg("echo braid-ssh-ok")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| e.to_string())?;
        if String::from_utf8_lossy(&out.stdout).contains("braid-ssh-ok") {
            Ok(())
        } else {
            Err(format!(
                "ssh -p {port} did not log in: {}\nsshd log:\n{}",
                text(&out),
                std::fs::read_to_string(self.dir.0.join("sshd.log")).unwrap_or_default()
            ))
        }
    }
}

/// A TCP connection from gw to the VPS's `port` (an answer, not a drop, within 2 s).
fn tcp_open(h: &Harness, port: u16) -> bool {
    let to = SocketAddr::from((Lab::VPS_PUBLIC, port));
    h.lab
        .in_netns(Role::Gw, || {
            TcpStream::connect_timeout(&to, Duration::from_secs(2)).is_ok()
        })
        .expect("gw")
}

/// A UDP datagram from gw to the VPS's `port` echoed back by `udp_echo` within 2 s.
fn udp_open(h: &Harness, port: u16) -> bool {
    let to = SocketAddr::from((Lab::VPS_PUBLIC, port));
    h.lab
        .in_netns(Role::Gw, || {
            let s = UdpSocket::bind("0.0.0.0:0").ok()?;
            s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
            s.send_to(b"braid-udp", to).ok()?;
            let mut buf = [0u8; 16];
            let n = s.recv(&mut buf).ok()?;
            Some(&buf[..n] == b"braid-udp")
        })
        .expect("gw")
        .unwrap_or(false)
}

/// Listeners in vps: a TCP accept loop and a UDP echo on `port` (threads that live as long as
/// the namespace; they are in the test process and end with it).
fn listeners(h: &Harness, port: u16) {
    let (tcp, udp) = h
        .lab
        .in_netns(Role::Vps, || {
            (
                std::net::TcpListener::bind(("0.0.0.0", port)).expect("tcp listener"),
                UdpSocket::bind(("0.0.0.0", port)).expect("udp socket"),
            )
        })
        .expect("vps");
    std::thread::spawn(move || {
        for s in tcp.incoming().flatten() {
            let mut s = s;
            let _ = s.write_all(b"hi");
            let mut b = [0u8; 1];
            let _ = s.read(&mut b);
        }
    });
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while let Ok((n, from)) = udp.recv_from(&mut buf) {
            let _ = udp.send_to(&buf[..n], from);
        }
    });
}

/// A "reboot": `reload` puts the host's saved rules back, without braid's, so the relay is
/// closed; `setup reapply` restores exactly setup's rules, and a second run changes nothing.
fn check_reapply(h: &Harness, sshd: &Sshd, ssh_ports: &[u16], root: &Path, reload: &dyn Fn()) {
    let after_setup = firewall(h);
    reload();
    assert!(
        !tcp_open(h, RELAY_PORT),
        "the reload must drop braid's rules"
    );
    let r = path(root);
    for round in 0..2 {
        let out = braid(h, Role::Vps, &["setup", "reapply", "--root", &r]);
        assert!(out.status.success(), "reapply: {}", text(&out));
        let said = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            said.contains("put back:"),
            round == 0,
            "reapply round {round}: {said}"
        );
        assert_eq!(
            firewall(h),
            after_setup,
            "reapply round {round} must restore exactly setup's rules"
        );
    }
    assert!(
        tcp_open(h, RELAY_PORT) && udp_open(h, RELAY_PORT),
        "relay closed after reapply"
    );
    for &p in ssh_ports {
        sshd.login(h, p)
            .unwrap_or_else(|e| panic!("after reapply: {e}"));
    }
}

/// The test body shared by the firewall variants: dry run, setup, ssh/relay/other checks, a
/// "reboot" (`reload` puts the host's saved rules back, without braid's) and `setup reapply`
/// (twice: the second changes nothing), then undo.
fn setup_keeps_ssh_opens_relay_and_undoes(
    h: &Harness,
    sshd: &Sshd,
    ssh_ports: &[u16],
    reload: &dyn Fn(),
) {
    listeners(h, RELAY_PORT);
    listeners(h, OTHER_PORT);
    for &p in ssh_ports {
        sshd.login(h, p)
            .unwrap_or_else(|e| panic!("before setup: {e}"));
    }
    assert!(
        !tcp_open(h, RELAY_PORT),
        "the default-deny firewall must drop the relay port before setup"
    );
    let before = firewall(h);
    let root = TempDir::new(&format!("root-{}", ssh_ports[0]));

    let dry = setup_server(h, &root.0, &sshd.config, &["--dry-run"]);
    assert!(dry.status.success(), "dry run: {}", text(&dry));
    assert!(
        String::from_utf8_lossy(&dry.stdout).contains("would: "),
        "{}",
        text(&dry)
    );
    assert_eq!(firewall(h), before, "--dry-run changed the firewall");
    assert!(
        files(&root.0).is_empty(),
        "--dry-run wrote {:?}",
        files(&root.0)
    );

    let out = setup_server(h, &root.0, &sshd.config, &[]);
    assert!(out.status.success(), "setup server: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("pairing URI: ss://"), "{stdout}");
    let ports_line = format!(
        "sshd listens on {}",
        ssh_ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(stdout.contains(&ports_line), "{ports_line:?} in {stdout}");
    for &p in ssh_ports {
        sshd.login(h, p)
            .unwrap_or_else(|e| panic!("after setup: {e}"));
    }
    assert!(
        tcp_open(h, RELAY_PORT),
        "relay TCP port closed after setup\n{}",
        firewall(h)
    );
    assert!(
        udp_open(h, RELAY_PORT),
        "relay UDP port closed after setup\n{}",
        firewall(h)
    );
    assert!(
        !tcp_open(h, OTHER_PORT),
        "setup opened another port\n{}",
        firewall(h)
    );
    assert!(
        !udp_open(h, OTHER_PORT),
        "setup opened another UDP port\n{}",
        firewall(h)
    );
    assert!(root.0.join("etc/braid/server.toml").exists());
    assert!(
        root.0
            .join("etc/systemd/system/braid-firewall.service")
            .exists(),
        "the boot-time reapply unit"
    );

    check_reapply(h, sshd, ssh_ports, &root.0, reload);

    let undo = braid(h, Role::Vps, &["setup", "undo", "--root", &path(&root.0)]);
    assert!(undo.status.success(), "undo: {}", text(&undo));
    assert_eq!(
        firewall(h),
        before,
        "setup undo must leave the firewall exactly as found"
    );
    assert!(files(&root.0).is_empty(), "undo left {:?}", files(&root.0));
    for &p in ssh_ports {
        sshd.login(h, p)
            .unwrap_or_else(|e| panic!("after undo: {e}"));
    }
}

#[test]
fn setup_server_sshd_65222_behind_nft_default_deny_keeps_ssh_and_opens_only_the_relay() {
    if !braid_lab::root_tests_enabled("setup_server_nft") {
        return;
    }
    let h = Harness::new("bsu1", unshaped_uplinks(), exe()).expect("lab");
    // Debian's own nftables.conf style, default deny, plus another table with its own rules.
    const RULESET: &str = "table inet filter {\n chain input {\n  type filter hook input priority 0; policy drop;\n  iif lo accept\n  ct state established,related accept\n  tcp dport 65222 accept\n  icmp type echo-request accept\n }\n}\ntable ip other {\n chain c {\n  type filter hook input priority 10; policy accept;\n  tcp dport 80 counter accept\n }\n}\n";
    // As nftables.service loads /etc/nftables.conf at boot (which starts with a flush).
    let load = || {
        let mut nft = h.lab.command(Role::Vps, "nft");
        nft.args(["-f", "-"]).stdin(Stdio::piped());
        let mut child = nft.spawn().expect("nft");
        let text = format!("flush ruleset\n{RULESET}");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write");
        drop(stdin);
        assert!(child.wait().expect("nft").success(), "loading the ruleset");
    };
    load();
    let sshd = Sshd::start(&h, "sshd65222", &[65222]);
    setup_keeps_ssh_opens_relay_and_undoes(&h, &sshd, &[65222], &load);
}

#[test]
fn setup_server_sshd_on_22_and_2222_behind_ufw_style_iptables_admits_both() {
    if !braid_lab::root_tests_enabled("setup_server_iptables") {
        return;
    }
    let h = Harness::new("bsu2", unshaped_uplinks(), exe()).expect("lab");
    // ufw's layout: INPUT drops, jumps to ufw chains that admit 22 only. sshd also listens on
    // 2222, which the firewall drops: setup must admit it (a lockout waiting to happen).
    let rules = "*filter\n:INPUT DROP [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:ufw-before-input - [0:0]\n:ufw-user-input - [0:0]\n-A INPUT -j ufw-before-input\n-A INPUT -j ufw-user-input\n-A ufw-before-input -i lo -j ACCEPT\n-A ufw-before-input -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT\n-A ufw-user-input -p tcp -m tcp --dport 22 -j ACCEPT\nCOMMIT\n";
    // As netfilter-persistent restores /etc/iptables/rules.v4 at boot.
    let load = || {
        let mut restore = h.lab.command(Role::Vps, "iptables-restore");
        restore.stdin(Stdio::piped());
        let mut child = restore.spawn().expect("iptables-restore");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(rules.as_bytes()).expect("write");
        drop(stdin);
        assert!(
            child.wait().expect("iptables-restore").success(),
            "loading the rules"
        );
    };
    load();
    let sshd = Sshd::start(&h, "sshd22", &[22, 2222]);
    assert!(
        sshd.login(&h, 2222).is_err(),
        "2222 must be dropped before setup"
    );
    listeners(&h, RELAY_PORT);
    listeners(&h, OTHER_PORT);
    let before = firewall(&h);
    let root = TempDir::new("root-22");
    let out = setup_server(&h, &root.0, &sshd.config, &[]);
    assert!(out.status.success(), "setup server: {}", text(&out));
    for p in [22, 2222] {
        sshd.login(&h, p)
            .unwrap_or_else(|e| panic!("after setup: {e}"));
    }
    assert!(
        tcp_open(&h, RELAY_PORT) && udp_open(&h, RELAY_PORT),
        "relay closed\n{}",
        firewall(&h)
    );
    assert!(
        !tcp_open(&h, OTHER_PORT),
        "setup opened another port\n{}",
        firewall(&h)
    );
    check_reapply(&h, &sshd, &[22, 2222], &root.0, &load);
    let undo = braid(&h, Role::Vps, &["setup", "undo", "--root", &path(&root.0)]);
    assert!(undo.status.success(), "undo: {}", text(&undo));
    assert_eq!(
        firewall(&h),
        before,
        "setup undo must leave iptables exactly as found"
    );
}

#[test]
fn setup_server_refuses_with_the_fix_on_a_kernel_without_mptcp_or_a_pending_reboot() {
    let dir = TempDir::new("kernel");
    let proc_none = dir.0.join("proc-none");
    std::fs::create_dir_all(proc_none.join("sys/net/ipv4")).expect("fake proc");
    let proc_v1 = dir.0.join("proc-v1");
    std::fs::create_dir_all(proc_v1.join("sys/net/mptcp")).expect("fake proc");
    std::fs::write(proc_v1.join("sys/net/mptcp/enabled"), "1\n").expect("fake proc");
    let boot = dir.0.join("boot");
    std::fs::create_dir_all(&boot).expect("boot");
    std::fs::write(boot.join("vmlinuz-6.1.0-30-amd64"), "").expect("boot");
    let newer = dir.0.join("boot-newer");
    std::fs::create_dir_all(&newer).expect("boot");
    std::fs::write(newer.join("vmlinuz-6.12.0-1-amd64"), "").expect("boot");
    let root = dir.0.join("root");
    for (proc, boot, expect) in [
        (&proc_none, &boot, "no MPTCP"),
        (&proc_v1, &newer, "6.12.0-1-amd64 is installed"),
    ] {
        let out = Command::new(exe())
            .args(["setup", "server", "--public-host", "203.0.113.7", "--root"])
            .arg(&root)
            .arg("--proc-root")
            .arg(proc)
            .arg("--boot-root")
            .arg(boot)
            .arg("--run-root")
            .arg(boot)
            .args(["--kernel-release", "6.1.0-30-amd64"])
            .output()
            .expect("braid");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(err.contains(expect) && err.contains("fix:"), "{err}");
        assert!(
            !root.exists(),
            "a refused setup wrote files: {:?}",
            files(&root)
        );
    }
}

/// Starts a daemon in `role` as systemd would: the `ExecStart=` line of the unit that setup
/// wrote under `root` (systemd does not run in the lab), logging to `LOG` in the harness folder.
fn start_unit(h: &Harness, role: Role, root: &Path, unit: &str, log: &str) {
    let text = std::fs::read_to_string(root.join("etc/systemd/system").join(unit))
        .unwrap_or_else(|e| panic!("{unit} under {}: {e}", root.display()));
    let exec = text
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in {unit}:\n{text}"));
    let argv: Vec<&str> = exec.split_whitespace().collect();
    let log = std::fs::File::create(h.dir().join(log)).expect("log");
    let mut cmd = h.lab.command(role, argv[0]);
    cmd.args(&argv[1..])
        .args(["--log", "debug"])
        .stdout(Stdio::null())
        .stderr(log);
    h.lab
        .spawn_process(role, cmd)
        .expect("starting the unit's command");
}

/// Builds the .deb from the binary under test and installs it with dpkg into a scratch root
/// (see tests/package.rs); returns the installed `usr/bin/braid`.
fn install_package(dir: &Path) -> PathBuf {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("bash")
        .arg(repo.join("packaging/build-deb"))
        .arg("--binary")
        .arg(exe())
        .arg("--out")
        .arg(dir.join("out"))
        .arg("--fast")
        .output()
        .expect("build-deb");
    assert!(out.status.success(), "build-deb: {}", text(&out));
    let deb = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let root = dir.join("pkgroot");
    for d in ["var/lib/dpkg/info", "var/lib/dpkg/updates"] {
        std::fs::create_dir_all(root.join(d)).expect("dpkg db");
    }
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("dpkg db");
    let out = Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .args(["--force-depends", "--force-script-chrootless", "-i", &deb])
        .output()
        .expect("dpkg");
    assert!(out.status.success(), "dpkg -i: {}", text(&out));
    root.join("usr/bin/braid")
}

/// The README's Deploy section, as a new user would run it, from the package: `braid setup
/// server` on the VPS (plus `--public-host`: the lab's VPS address is private, which setup
/// rightly takes for NAT; and `--listen`, see below), `braid setup gateway --pair URI` on the
/// router; the daemons started by their units' ExecStart lines; then a bonded download and
/// doctor all ok.
#[test]
fn deploy_from_the_package_pairs_bonds_and_doctor_is_all_ok() {
    if !braid_lab::root_tests_enabled("setup_pairing") {
        return;
    }
    let pkg = TempDir::new("pair-pkg");
    let bin = install_package(&pkg.0);
    let h = Harness::new("bsu3", unshaped_uplinks(), exe()).expect("lab");
    let vps_root = TempDir::new("pair-vps");
    let gw_root = TempDir::new("pair-gw");
    let empty = TempDir::new("pair-boot");
    let no_sshd = vps_root.0.join("no-sshd_config");
    // The lab's VPS holds its public address on lo and receives on per-uplink veths; a UDP relay
    // on 0.0.0.0 would answer from a veth's address, which the gateway drops (a real VPS with a
    // failover IP on lo has the same trouble). So the relay listens on the public address.
    let listen = format!("{}:{RELAY_PORT}", Lab::VPS_PUBLIC);
    let out = setup_server_at(&bin, &h, &vps_root.0, &no_sshd, &["--listen", &listen]);
    assert!(out.status.success(), "setup server: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let uri = stdout
        .lines()
        .find_map(|l| l.strip_prefix("pairing URI: "))
        .unwrap_or_else(|| panic!("no pairing URI in {stdout}"))
        .to_string();

    // The lab's "internet" host has a private address, which the relay refuses by default.
    let server_toml = vps_root.0.join("etc/braid/server.toml");
    let mut cfg = std::fs::read_to_string(&server_toml).expect("server.toml");
    cfg += "allow_destinations = [\"10.30.0.2/32\"]\n";
    std::fs::write(&server_toml, cfg).expect("server.toml");
    start_unit(
        &h,
        Role::Vps,
        &vps_root.0,
        "braid-server.service",
        "server.log",
    );
    wait_until("the relay listening", Duration::from_secs(10), || {
        let to = SocketAddr::from((Lab::VPS_PUBLIC, RELAY_PORT));
        h.lab
            .in_netns(Role::Vps, || TcpStream::connect(to))
            .expect("vps")
            .map(drop)
            .map_err(|e| e.to_string())
    });

    // No interface flags: the uplinks (default routes) and the LAN are found.
    let (b, r) = (path(&empty.0), path(&gw_root.0));
    let out = braid_at(
        &bin,
        &h,
        Role::Gw,
        &[
            "setup",
            "gateway",
            "--pair",
            &uri,
            "--root",
            &r,
            "--boot-root",
            &b,
            "--run-root",
            &b,
        ],
    );
    assert!(out.status.success(), "setup gateway: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("uplinks: wan-wifi, wan-5g; LAN: eth-lan"),
        "{stdout}"
    );
    assert!(stdout.contains("doctor: nothing failed"), "{stdout}");

    let gateway_toml = gw_root.0.join("etc/braid/gateway.toml");
    let mut text_cfg = std::fs::read_to_string(&gateway_toml).expect("gateway.toml");
    assert!(
        text_cfg.contains(&format!(
            "state_dir = \"{}/run/braid\"",
            gw_root.0.display()
        )),
        "under a root, the state record goes there too:\n{text_cfg}"
    );
    // Likewise: local destinations bypass the capture unless listed.
    text_cfg = text_cfg.replace("lan = [", "capture = [\"10.30.0.2/32\"]\nlan = [");
    std::fs::write(&gateway_toml, &text_cfg).expect("gateway.toml");
    // The status helpers read the control address from the harness folder's gateway.toml.
    h.write("gateway.toml", &text_cfg).expect("copy");
    start_unit(
        &h,
        Role::Gw,
        &gw_root.0,
        "braid-gateway.service",
        "gateway.log",
    );
    common::wait_status(&h, "both uplinks Up", Duration::from_secs(15), |s| {
        s.uplinks.len() == 2 && s.uplinks.iter().all(|u| u.state == LinkState::Up)
    });
    let stream = common::start_bonded_stream(&h, 2);
    let v = h.finish_traffic(stream).expect("download");
    assert_eq!(
        v["ok"], true,
        "the bonded download lost or changed bytes: {v}"
    );

    let (code, report) = h
        .doctor(
            Role::Gw,
            &gateway_toml,
            &["--boot-root", &b, "--run-root", &b],
        )
        .expect("doctor");
    let checks = report["checks"].as_array().expect("checks");
    for c in checks {
        let ok = c["status"] == "ok" || (c["status"] == "skip" && c["id"] == "tfo");
        assert!(ok, "doctor on the paired gateway: {c}");
    }
    assert_eq!(code, 0);
}
