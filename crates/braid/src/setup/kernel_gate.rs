//! The first step of `braid setup server`/`gateway`: can MPTCP work on this kernel at all?
//! It asks doctor's own kernel checks, so setup and doctor cannot disagree, and stops with the
//! check's cause and fix unless told to go on (`--ignore-kernel`).

use crate::doctor::check::{Check, Status};
use crate::doctor::kernel::{kernel_mptcp, reboot_pending, KernelRoots};

use super::SetupError;

/// Passes when the running kernel has upstream MPTCP and no newer kernel waits for a reboot.
/// With `ignore`, a failure is returned as a warning line instead of an error.
pub fn gate(roots: &KernelRoots, ignore: bool) -> Result<Vec<String>, SetupError> {
    let mut warnings = Vec::new();
    for check in [kernel_mptcp(roots), reboot_pending(roots)] {
        if !blocks(&check) {
            continue;
        }
        if ignore {
            warnings.push(format!(
                "going on despite: {} (--ignore-kernel); fix: {}",
                check.summary, check.fix
            ));
        } else {
            return Err(SetupError::Kernel {
                summary: check.summary,
                cause: check.cause,
                fix: check.fix,
            });
        }
    }
    Ok(warnings)
}

/// A failed check blocks, and so does a pending reboot (a warning for doctor): the kernel that
/// setup would configure is not the one that will run after the next boot.
fn blocks(c: &Check) -> bool {
    match c.status {
        Status::Fail => true,
        Status::Warn => c.id == "kernel.reboot_pending",
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::{Path, PathBuf};

    fn tree(name: &str, v1: bool, newer_kernel: bool) -> (PathBuf, KernelRoots) {
        let dir = std::env::temp_dir().join(format!("braid-gate-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let proc = dir.join("proc");
        std::fs::create_dir_all(proc.join("sys/net/mptcp")).unwrap();
        if v1 {
            std::fs::write(proc.join("sys/net/mptcp/enabled"), "1\n").unwrap();
        }
        let boot = dir.join("boot");
        std::fs::create_dir_all(&boot).unwrap();
        std::fs::write(boot.join("vmlinuz-6.1.0-30-amd64"), "").unwrap();
        if newer_kernel {
            std::fs::write(boot.join("vmlinuz-6.12.0-1-amd64"), "").unwrap();
        }
        let roots = KernelRoots {
            proc,
            boot: boot.clone(),
            run: dir.join("run"),
            release: Some("6.1.0-30-amd64".into()),
            kmsg: dir.join("kmsg"),
        };
        (dir, roots)
    }

    fn cleanup(p: &Path) {
        let _ = std::fs::remove_dir_all(p);
    }

    #[test]
    fn gate_upstream_kernel_passes() {
        let (d, r) = tree("ok", true, false);
        assert_eq!(gate(&r, false).unwrap(), Vec::<String>::new());
        cleanup(&d);
    }

    #[test]
    fn gate_no_mptcp_refuses_with_the_fix_unless_ignored() {
        let (d, r) = tree("none", false, false);
        let e = gate(&r, false).unwrap_err().to_string();
        assert!(e.contains("no MPTCP") && e.contains("fix:"), "{e}");
        assert_eq!(gate(&r, true).unwrap().len(), 1);
        cleanup(&d);
    }

    #[test]
    fn gate_newer_kernel_not_booted_refuses() {
        let (d, r) = tree("reboot", true, true);
        let e = gate(&r, false).unwrap_err().to_string();
        assert!(e.contains("6.12.0-1-amd64") && e.contains("Reboot"), "{e}");
        cleanup(&d);
    }
}
