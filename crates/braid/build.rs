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
    // Rebuild when HEAD moves: a checkout changes HEAD, a commit changes the branch's ref file.
    // Both are asked of git, which knows where they are in a worktree too.
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
    };
    if let Some(head) = git(&["rev-parse", "--path-format=absolute", "--git-path", "HEAD"]) {
        println!("cargo:rerun-if-changed={head}");
    }
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        if let Some(r) = git(&["rev-parse", "--path-format=absolute", "--git-path", &branch]) {
            println!("cargo:rerun-if-changed={r}");
        }
    }
    if let Some(p) = git(&[
        "rev-parse",
        "--path-format=absolute",
        "--git-path",
        "packed-refs",
    ]) {
        println!("cargo:rerun-if-changed={p}");
    }
}
