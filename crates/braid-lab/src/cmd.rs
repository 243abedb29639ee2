//! Running external tools (`ip`, `tc`, `iptables`, `nft`, `ethtool`, `sysctl`) with checked
//! results.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use crate::LabError;

/// The command line of `cmd` as one string, for error messages and logs.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&arg.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion and returns its output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output, LabError> {
    tracing::trace!(command = %describe(cmd), "run");
    cmd.stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn {
            command: describe(cmd),
            source,
        })
}

/// Runs `cmd` and returns its stdout; a non-zero exit is an error naming the command, its exit
/// status and its stderr.
pub fn checked(cmd: &mut Command) -> Result<String, LabError> {
    let out = output(cmd)?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Runs `cmd` with `input` on its stdin (`nft -f -`), checked like [`checked`].
pub fn checked_with_stdin(cmd: &mut Command, input: &str) -> Result<String, LabError> {
    tracing::trace!(command = %describe(cmd), input, "run");
    let command = describe(cmd);
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|source| LabError::Io {
                what: format!("writing stdin of `{command}`"),
                source,
            })?;
    }
    let out = child.wait_with_output().map_err(|source| LabError::Io {
        what: format!("waiting for `{command}`"),
        source,
    })?;
    check(cmd, &out)?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn check(cmd: &Command, out: &Output) -> Result<(), LabError> {
    if out.status.success() {
        return Ok(());
    }
    Err(LabError::Command {
        command: describe(cmd),
        status: out.status.to_string(),
        stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    })
}

/// `ip netns exec NS program`.
pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, program]);
    cmd
}

/// `ip netns exec NS argv…`, checked.
pub fn run_in(ns: &str, argv: &[&str]) -> Result<String, LabError> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| LabError::InvalidSpec("empty argv".into()))?;
    checked(in_ns(ns, program).args(args))
}
