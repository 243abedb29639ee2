//! Puts the git commit into `braid --version` (`braid 0.1.0 (abc1234)`); "unknown" outside a
//! git checkout (a source tarball) or without git. `BRAID_COMMIT` in the environment wins, for
//! package builds from an exported tree.

fn main() {
    let commit = std::env::var("BRAID_COMMIT").ok().unwrap_or_else(|| {
        std::process::Command::new("git")
            .args(["rev-parse", "--short=10", "HEAD"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown".into())
    });
    println!("cargo:rustc-env=BRAID_COMMIT={commit}");
    println!("cargo:rerun-if-env-changed=BRAID_COMMIT");
    // Rebuild when HEAD moves (a commit, a checkout). In a worktree .git is a file; then the
    // version may lag until the next rebuild of this crate, which is only cosmetic.
    for p in [
        "../../.git/HEAD",
        "../../.git/refs/heads",
        "../../.git/packed-refs",
    ] {
        if std::path::Path::new(p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
