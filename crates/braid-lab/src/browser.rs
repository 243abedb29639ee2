//! A real browser inside a lab namespace: Debian's Chromium, headless, loads a page (the
//! dashboard), lets its JavaScript run, and hands back the resulting DOM or a screenshot.
//!
//! ```text
//!  render_dom / screenshot ──► ip netns exec NS chromium --headless … URL
//!                                   │  fresh --user-data-dir, removed afterwards
//!                                   └─► stdout (--dump-dom) or PATH (--screenshot)
//! ```
//!
//! `--virtual-time-budget` lets the page's timers run for that long in virtual time (network
//! fetches pause the virtual clock, so a page that polls once a second gets about
//! `wait_ms / 1000` answered polls) and then Chromium exits. Needs root (for `ip netns exec`) and
//! the `chromium` package (`apt-get install -y chromium`).

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Lab, Role};

/// Wall-clock time Chromium gets beyond the virtual-time budget before it is killed.
const STARTUP_ALLOWANCE: Duration = Duration::from_secs(60);

/// Loads `url` in headless Chromium inside `role`'s namespace, lets the page run for `wait_ms`
/// of virtual time, and returns the DOM as HTML.
pub fn render_dom(lab: &Lab, role: Role, url: &str, wait_ms: u64) -> Result<String, String> {
    let out = run_chromium(
        lab,
        role,
        &["--dump-dom".to_owned(), url.to_owned()],
        wait_ms,
    )?;
    if out.trim().is_empty() {
        return Err(format!("chromium printed no DOM for {url}"));
    }
    Ok(out)
}

/// Like [`render_dom`], but saves a `width`×`height` PNG screenshot of the page to `out`.
pub fn screenshot(
    lab: &Lab,
    role: Role,
    url: &str,
    wait_ms: u64,
    out: &Path,
    width: u32,
    height: u32,
) -> Result<(), String> {
    let out = std::path::absolute(out).map_err(|e| format!("{}: {e}", out.display()))?;
    // A stale file must not pass for a fresh screenshot.
    let _ = std::fs::remove_file(&out);
    let args = [
        format!("--screenshot={}", out.display()),
        format!("--window-size={width},{height}"),
        "--hide-scrollbars".to_owned(),
        url.to_owned(),
    ];
    run_chromium(lab, role, &args, wait_ms)?;
    match std::fs::metadata(&out) {
        Ok(m) if m.len() > 0 => Ok(()),
        _ => Err(format!(
            "chromium exited without writing a screenshot to {}",
            out.display()
        )),
    }
}

/// Runs headless Chromium with `args` after the common flags and a fresh profile; returns its
/// stdout. Kills it (its whole process group) if it takes far longer than the budget.
fn run_chromium(lab: &Lab, role: Role, args: &[String], wait_ms: u64) -> Result<String, String> {
    let profile = TempProfile::create()?;
    let mut cmd = lab.command(role, "chromium");
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--mute-audio",
    ])
    .arg(format!("--user-data-dir={}", profile.0.display()))
    .arg(format!("--virtual-time-budget={wait_ms}"))
    .args(args)
    // Keep crash dumps and caches inside the throwaway profile too.
    .env("HOME", &profile.0)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let described = crate::cmd::describe(&cmd);
    let timeout = Duration::from_millis(wait_ms) + STARTUP_ALLOWANCE;
    let (status, stdout, stderr) =
        run_with_timeout(cmd, timeout).map_err(|e| format!("`{described}`: {e}"))?;
    if !status.success() {
        // `ip netns exec` says `exec of "chromium" failed: No such file or directory`.
        let hint = if stderr.contains("exec of \"chromium\" failed") {
            "\ninstall Chromium with `apt-get install -y chromium`"
        } else {
            ""
        };
        return Err(format!(
            "`{described}` exited with {status}: {}{hint}",
            last_lines(&stderr, 15)
        ));
    }
    Ok(stdout)
}

/// Spawns `cmd`, collects stdout and stderr, and waits at most `timeout` for it; on timeout its
/// process group is killed.
fn run_with_timeout(
    mut cmd: Command,
    timeout: Duration,
) -> Result<(std::process::ExitStatus, String, String), String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let pid = child.id();
    let stdout = child.stdout.take().map(read_in_background);
    let stderr = child.stderr.take().map(read_in_background);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() >= deadline => {
                kill_group(pid);
                let _ = child.wait();
                return Err(format!("timed out after {timeout:?}; killed"));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => {
                kill_group(pid);
                let _ = child.wait();
                return Err(format!("waiting: {e}"));
            }
        }
    };
    // Helpers the browser left behind (renderer, zygote) share its process group.
    kill_group(pid);
    let join = |h: Option<std::thread::JoinHandle<String>>| {
        h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
    };
    Ok((status, join(stdout), join(stderr)))
}

fn read_in_background<R: Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    })
}

/// SIGKILLs the process group `pgid` (the one `process_group(0)` gave our child), if any is left.
fn kill_group(pgid: u32) {
    let Ok(pgid) = i32::try_from(pgid) else {
        return;
    };
    let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), nix::sys::signal::SIGKILL);
}

fn last_lines(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.trim().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh, empty Chromium profile directory, removed on drop.
struct TempProfile(PathBuf);

impl TempProfile {
    fn create() -> Result<Self, String> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        for _ in 0..100 {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let dir = base.join(format!(
                "braid-chromium-{}-{}-{nanos}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            match std::fs::create_dir(&dir) {
                Ok(()) => return Ok(TempProfile(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(format!("creating {}: {e}", dir.display())),
            }
        }
        Err(format!(
            "no free profile directory name under {}",
            base.display()
        ))
    }
}

impl Drop for TempProfile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "removing chromium profile");
        }
    }
}
