//! The Debian package: `packaging/build-deb` builds it (from the binary under test, so the test
//! needs no second, release build), it holds what it should, installs with `dpkg -i` into a
//! scratch root (maintainer scripts run without starting anything: systemd does not run there),
//! `braid --version` runs from it and names the commit, its units pass `systemd-analyze
//! verify`, and `dpkg -r` removes it. Nothing outside the scratch root is touched.
//! Needs dpkg-deb (and systemd-analyze for the units); root-only like the lab tests, since
//! dpkg wants to own what it installs.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::exe;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

#[test]
fn deb_builds_installs_runs_verifies_and_removes() {
    if !braid_lab::root_tests_enabled("package") {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("braid-package-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = run(Command::new("bash")
        .arg(repo().join("packaging/build-deb"))
        .arg("--binary")
        .arg(exe())
        .arg("--out")
        .arg(tmp.join("out"))
        .arg("--fast"));
    let deb = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(deb.exists(), "no package at {}", deb.display());

    let list = String::from_utf8_lossy(&run(Command::new("dpkg-deb").arg("-c").arg(&deb)).stdout)
        .into_owned();
    for want in [
        "./usr/bin/braid",
        "./lib/systemd/system/braid-server.service",
        "./lib/systemd/system/braid-gateway.service",
        "./lib/systemd/system/braid-firewall.service",
        "./usr/share/doc/braid/examples/server.toml",
        "./usr/share/doc/braid/examples/gateway.toml",
        "./usr/share/man/man1/braid.1.gz",
        "./usr/share/man/man1/braid-setup-server.1.gz",
        "./usr/share/bash-completion/completions/braid",
        "./usr/share/zsh/vendor-completions/_braid",
        "./usr/share/fish/vendor_completions.d/braid.fish",
    ] {
        assert!(
            list.contains(want),
            "{want} missing from the package:\n{list}"
        );
    }

    // A scratch root with an empty dpkg database; scripts run outside it (they need a shell),
    // and find no running systemd, so they start nothing.
    let root = tmp.join("root");
    std::fs::create_dir_all(root.join("var/lib/dpkg/info")).expect("dpkg db");
    std::fs::create_dir_all(root.join("var/lib/dpkg/updates")).expect("dpkg db");
    std::fs::write(root.join("var/lib/dpkg/status"), "").expect("dpkg db");
    let dpkg = |args: &[&str]| {
        let mut c = Command::new("dpkg");
        c.arg(format!("--root={}", root.display()))
            .args([
                "--force-depends",
                "--force-script-chrootless",
                "--force-not-root",
            ])
            .args(args);
        c
    };
    run(dpkg(&["-i"]).arg(&deb));
    let bin = root.join("usr/bin/braid");
    let version = run(Command::new(&bin).arg("--version"));
    let version = String::from_utf8_lossy(&version.stdout).into_owned();
    let commit = String::from_utf8_lossy(
        &Command::new("git")
            .args(["rev-parse", "--short=10", "HEAD"])
            .current_dir(repo())
            .output()
            .expect("git")
            .stdout,
    )
    .trim()
    .to_string();
    assert!(
        version.starts_with(&format!("braid {} (", env!("CARGO_PKG_VERSION"))),
        "{version}"
    );
    if !commit.is_empty() {
        assert!(
            version.contains(&commit),
            "--version {version:?} lacks the commit {commit}"
        );
    }

    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok()
    {
        // The installed unit, pointed at the installed binary (the scratch root is no system
        // systemd could boot, so `--root` would miss sysinit.target and /bin/kill).
        let verify = tmp.join("verify");
        std::fs::create_dir_all(&verify).expect("verify dir");
        for unit in [
            "braid-server.service",
            "braid-gateway.service",
            "braid-firewall.service",
        ] {
            let text = std::fs::read_to_string(root.join("lib/systemd/system").join(unit))
                .expect("installed unit");
            let copy = verify.join(unit);
            std::fs::write(
                &copy,
                text.replace("/usr/bin/braid", &bin.to_string_lossy()),
            )
            .expect("unit copy");
            let out = Command::new("systemd-analyze")
                .args(["verify", "--man=no"])
                .arg(&copy)
                .output()
                .expect("systemd-analyze");
            let err = String::from_utf8_lossy(&out.stderr);
            // Only lines about our unit count: verify also reports the host's other units.
            let ours: Vec<&str> = err.lines().filter(|l| l.contains("braid")).collect();
            assert!(
                ours.is_empty() && out.status.success(),
                "systemd-analyze verify {unit}:\n{err}"
            );
        }
    }

    run(&mut dpkg(&["-r", "braid"]));
    assert!(!bin.exists(), "dpkg -r left {}", bin.display());
    let _ = std::fs::remove_dir_all(&tmp);
}
