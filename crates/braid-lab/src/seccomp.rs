//! Fault injection by seccomp: make `setsockopt(TCP_FASTOPEN…)` fail with ENOPROTOOPT, exactly
//! as Linux before 6.2 answers it on MPTCP sockets, so the TFO checks can be tested on any
//! kernel (`braid lab no-tfo -- COMMAND…`).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::Command;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::LabError;

const ENOPROTOOPT: u32 = 92;

fn filter() -> Result<BpfProgram, String> {
    let rule = |optname: i32| -> Result<SeccompRule, String> {
        SeccompRule::new(vec![
            SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                libc::IPPROTO_TCP as u64,
            )
            .map_err(|e| e.to_string())?,
            SeccompCondition::new(2, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, optname as u64)
                .map_err(|e| e.to_string())?,
        ])
        .map_err(|e| e.to_string())
    };
    let rules = BTreeMap::from([(
        libc::SYS_setsockopt,
        vec![rule(libc::TCP_FASTOPEN)?, rule(libc::TCP_FASTOPEN_CONNECT)?],
    )]);
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    let f = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(ENOPROTOOPT),
        arch,
    )
    .map_err(|e| e.to_string())?;
    f.try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())
}

/// Replaces this process with `argv`, under a filter that fails TFO socket options with
/// ENOPROTOOPT. Returns only on error.
pub fn exec_without_tfo(argv: &[OsString]) -> LabError {
    let Some((program, args)) = argv.split_first() else {
        return LabError::InvalidSpec("no command given".into());
    };
    let prog = match filter() {
        Ok(p) => p,
        Err(e) => return LabError::InvalidSpec(format!("cannot build the seccomp filter: {e}")),
    };
    if let Err(e) = seccompiler::apply_filter(&prog) {
        return LabError::InvalidSpec(format!("cannot apply the seccomp filter: {e}"));
    }
    let e = Command::new(program).args(args).exec();
    LabError::InvalidSpec(format!("cannot run {program:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_builds_for_this_architecture() {
        assert!(filter().is_ok());
    }
}
