//! What every kernel test of braid-sys shares: a private network namespace per test (never the
//! host's) and `ip` inside it.
#![allow(dead_code)]

use std::future::Future;
use std::process::Command;

use nix::sched::CloneFlags;

/// Runs `test` on a fresh thread inside a new, empty network namespace that disappears with the
/// thread; programs started from that thread act on it. Skips (returns) when not root unless
/// CI=true, where missing root is a failure.
pub fn in_netns(name: &str, test: impl FnOnce() + Send + 'static) {
    if !nix::unistd::geteuid().is_root() && std::env::var("CI").as_deref() != Ok("true") {
        eprintln!(
            "skipping {name}: needs root for a private network namespace (CI=true forces it)"
        );
        return;
    }
    let joined = std::thread::spawn(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        test();
    })
    .join();
    if let Err(panic) = joined {
        std::panic::resume_unwind(panic);
    }
}

/// [`in_netns`] for an async test, on a current-thread tokio runtime inside the namespace.
pub fn in_netns_async<F, Fut>(name: &str, test: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    in_netns(name, move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
            .block_on(test());
    });
}

/// `ip ARGS` in the calling thread's namespace (children inherit it).
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf8")
}
