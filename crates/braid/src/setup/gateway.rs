//! `braid setup gateway --pair URI`: the router side, step by step (see [`super`]).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use crate::doctor::kernel::KernelRoots;

use super::discover::{self, Found};
use super::exec::Executor;
use super::pairing::Pairing;
use super::unit::{self, Daemon};
use super::{gateway_config, kernel_gate, sysctl, SetupError};

/// What `braid setup gateway` was asked.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where files go (`/`).
    pub root: PathBuf,
    /// procfs, /boot and /run.
    pub kernel: KernelRoots,
    /// The URI `braid setup server` printed.
    pub pair: String,
    /// Uplink interfaces given on the command line (found when empty).
    pub uplinks: Vec<String>,
    /// LAN interfaces given on the command line (found when empty).
    pub lan: Vec<String>,
    /// Print every change, make none.
    pub dry_run: bool,
    /// Go on despite the kernel gate.
    pub ignore_kernel: bool,
}

/// Runs every step, then doctor; returns doctor's exit code (0: nothing failed).
pub async fn run(opts: &Options) -> Result<u8, SetupError> {
    let pairing = Pairing::parse(&opts.pair).map_err(|e| SetupError::Usage(e.to_string()))?;
    println!("== kernel");
    for w in kernel_gate::gate(&opts.kernel, opts.ignore_kernel)? {
        println!("warning: {w}");
    }
    println!("== interfaces");
    let (uplinks, lan) = interfaces(opts)?;
    println!("uplinks: {}; LAN: {}", uplinks.join(", "), lan.join(", "));
    let mut ex = if opts.dry_run {
        println!("dry run: nothing below is changed");
        Executor::dry_run()
    } else {
        Executor::apply(opts.root.clone())?
    };
    println!("== config");
    if let Some(c) = gateway_config::plan(&opts.root, &pairing, &uplinks, &lan)? {
        ex.run(c)?;
    }
    println!("== sysctl");
    let (changes, notes) = sysctl::plan(&opts.root, &opts.kernel.procfs(), sysctl::GATEWAY);
    notes.iter().for_each(|n| println!("note: {n}"));
    for c in changes {
        ex.run(c)?;
    }
    println!("== service");
    let (changes, notes) = unit::plan(&opts.root, Daemon::Gateway);
    notes.iter().for_each(|n| println!("note: {n}"));
    for c in changes {
        ex.run(c)?;
    }
    if ex.is_dry_run() {
        return Ok(0);
    }
    println!("== doctor");
    let report = crate::doctor::run(&crate::doctor::Options {
        config: gateway_config::path(&opts.root),
        json: false,
        roots: opts.kernel.clone(),
        sshd_config: "/etc/ssh/sshd_config".into(),
    })
    .await
    .map_err(SetupError::Usage)?;
    print!("{}", report.to_text());
    let code = report.exit_code();
    println!(
        "{}",
        if code == 0 {
            "doctor: nothing failed — the gateway is set up".to_string()
        } else {
            "doctor: a check failed — see its fix above".to_string()
        }
    );
    Ok(code)
}

/// The interfaces: as given, or found; asked about on a terminal when the guess is unsure.
fn interfaces(opts: &Options) -> Result<(Vec<String>, Vec<String>), SetupError> {
    let mut found = if opts.uplinks.is_empty() || opts.lan.is_empty() {
        discover::discover()
    } else {
        Found::default()
    };
    if !opts.uplinks.is_empty() {
        found.uplinks = opts.uplinks.clone();
    }
    if !opts.lan.is_empty() {
        found.lan = opts.lan.clone();
    }
    found.lan.retain(|l| !found.uplinks.contains(l));
    let given = !opts.uplinks.is_empty() && !opts.lan.is_empty();
    if given || found.is_sure() {
        return Ok((found.uplinks, found.lan));
    }
    if !std::io::stdin().is_terminal() {
        return Err(SetupError::Usage(format!(
            "found uplinks [{}] and LAN candidates [{}]; setup does not guess without asking; fix: name them, e.g. --uplink {} --lan {}",
            found.uplinks.join(", "),
            found.lan.join(", "),
            found.uplinks.first().map_or("eth0", String::as_str),
            found.lan.first().map_or("eth1", String::as_str),
        )));
    }
    let uplinks = ask("uplinks (interfaces to the internet)", &found.uplinks)?;
    let lan = ask("LAN interface(s) whose TCP is bonded", &found.lan)?;
    Ok((uplinks, lan))
}

/// Asks on the terminal, with the found list as the default answer.
fn ask(what: &str, default: &[String]) -> Result<Vec<String>, SetupError> {
    print!("{what} [{}]: ", default.join(" "));
    let _ = std::io::stdout().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| SetupError::Usage(format!("cannot read the answer: {e}")))?;
    let answer: Vec<String> = line.split_whitespace().map(String::from).collect();
    let list = if answer.is_empty() {
        default.to_vec()
    } else {
        answer
    };
    if list.is_empty() {
        return Err(SetupError::Usage(format!(
            "no {what} given; fix: name at least one"
        )));
    }
    Ok(list)
}
