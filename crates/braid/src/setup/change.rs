//! One change setup makes to a machine, as data: what it does, how to undo it, and how to say
//! it. Applying, undoing and describing are the only three things done with a change, so a dry
//! run (describe), a real run (journal, then apply) and `braid setup undo` (undo, newest first)
//! walk the very same list.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use base64::Engine;
use serde::{Deserialize, Serialize};

/// A change to the machine, with what undoing it needs (captured before it is made).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// Write a file (parents created). Undo restores the earlier content, or removes the file.
    File {
        /// Full path (under the setup root).
        path: PathBuf,
        /// New content.
        contents: String,
        /// Permission bits, e.g. 0o600 for a file with a key.
        mode: u32,
        /// The earlier content, base64, when the file existed.
        before: Option<String>,
        /// Folders writing it creates (outermost first); undo removes them again if empty.
        #[serde(default)]
        created: Vec<PathBuf>,
    },
    /// Write a sysctl now (its file under procfs). Undo writes the earlier value back.
    Sysctl {
        /// `net.mptcp.enabled`.
        key: String,
        /// Its procfs file.
        path: PathBuf,
        /// New value.
        value: String,
        /// Value before.
        before: String,
    },
    /// One nft transaction (`nft -j -f -`). Undo deletes what it added.
    Nft {
        /// The batch as nft's JSON.
        batch: serde_json::Value,
        /// The same in nft's syntax, for people.
        text: String,
        /// How to take it back.
        undo: NftUndo,
    },
    /// A command (iptables, ufw, firewall-cmd, systemctl) and the one that takes it back.
    Command {
        /// The command.
        argv: Vec<String>,
        /// Its reverse; empty when there is nothing to take back.
        undo: Vec<String>,
    },
}

/// How an nft change is taken back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum NftUndo {
    /// Delete the rules of `family table chain` that carry `comment` (found by handle); every
    /// other rule of the chain stays as it was.
    DeleteTagged {
        /// `inet`, `ip`, `ip6`.
        family: String,
        /// The host's table.
        table: String,
        /// Its chain.
        chain: String,
        /// The tag braid put on its rules.
        comment: String,
    },
}

/// Why a change could not be made or taken back.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// A file could not be written, read or removed.
    #[error("{what} {path}: {source}; fix: check that the folder exists and is writable by root")]
    File {
        /// What was being done.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command could not be started.
    #[error(
        "cannot run `{command}`: {source}; fix: install it, or run the printed commands by hand"
    )]
    Spawn {
        /// The command line.
        command: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// nft's JSON output could not be read.
    #[error("cannot read `{command}`'s JSON: {why}")]
    Json {
        /// The command line.
        command: String,
        /// What was wrong.
        why: String,
    },
}

impl Change {
    /// A file write, with the earlier content read now (so it can be restored).
    pub fn file(path: PathBuf, contents: String, mode: u32) -> Change {
        let before = std::fs::read(&path)
            .ok()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b));
        let mut created: Vec<PathBuf> = path
            .ancestors()
            .skip(1)
            .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
            .map(Path::to_path_buf)
            .collect();
        created.reverse();
        Change::File {
            path,
            contents,
            mode,
            before,
            created,
        }
    }

    /// One line saying what the change does, as a person would read it.
    pub fn describe(&self) -> String {
        match self {
            Change::File { path, before, .. } => match before {
                Some(_) => format!("rewrite {}", path.display()),
                None => format!("write {}", path.display()),
            },
            Change::Sysctl {
                key, value, before, ..
            } => format!("sysctl -w {key}={value} (was {before})"),
            Change::Nft { text, .. } => format!("nft -f - <<'EOF'\n{}EOF", text),
            Change::Command { argv, .. } => shell_line(argv),
        }
    }

    /// What a dry run prints below [`Change::describe`]: the full content of a file.
    pub fn detail(&self) -> Option<String> {
        match self {
            Change::File { contents, .. } => Some(contents.clone()),
            _ => None,
        }
    }

    /// One line saying what undoing the change does.
    pub fn describe_undo(&self) -> String {
        match self {
            Change::File { path, before, .. } => match before {
                Some(_) => format!("restore the earlier {}", path.display()),
                None => format!("remove {}", path.display()),
            },
            Change::Sysctl { key, before, .. } => format!("sysctl -w {key}={before}"),
            Change::Nft {
                undo:
                    NftUndo::DeleteTagged {
                        family,
                        table,
                        chain,
                        comment,
                    },
                ..
            } => format!(
                "delete the rules commented {comment:?} from nft chain {family} {table} {chain}"
            ),
            Change::Command { undo, .. } if undo.is_empty() => "nothing to undo".into(),
            Change::Command { undo, .. } => shell_line(undo),
        }
    }

    /// Makes the change.
    pub fn apply(&self) -> Result<(), ChangeError> {
        match self {
            Change::File {
                path,
                contents,
                mode,
                ..
            } => write_file(path, contents.as_bytes(), *mode),
            Change::Sysctl { path, value, .. } => write_sysctl(path, value),
            Change::Nft { batch, .. } => run_stdin(&["nft", "-j", "-f", "-"], &batch.to_string()),
            Change::Command { argv, .. } => run(argv).map(drop),
        }
    }

    /// Takes the change back.
    pub fn undo(&self) -> Result<(), ChangeError> {
        match self {
            Change::File {
                path,
                before,
                created,
                ..
            } => match before {
                Some(b64) => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(b64)
                        .unwrap_or_default();
                    let mode = std::fs::metadata(path)
                        .map(|m| m.permissions().mode() & 0o7777)
                        .unwrap_or(0o644);
                    write_file(path, &bytes, mode)
                }
                None => {
                    match std::fs::remove_file(path) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                            return Err(ChangeError::File {
                                what: "removing",
                                path: path.clone(),
                                source: e,
                            })
                        }
                        _ => {}
                    }
                    // Innermost first; a folder something else now uses stays.
                    for d in created.iter().rev() {
                        let _ = std::fs::remove_dir(d);
                    }
                    Ok(())
                }
            },
            Change::Sysctl { path, before, .. } => write_sysctl(path, before),
            Change::Nft { undo, .. } => undo_nft(undo),
            Change::Command { undo, .. } if undo.is_empty() => Ok(()),
            // A unit that is gone (the package was removed first) is not enabled either.
            Change::Command { undo, .. } if undo.first().is_some_and(|p| p == "systemctl") => {
                if let Err(e) = run(undo) {
                    println!("note: {e} (taken as undone: the unit is not enabled)");
                }
                Ok(())
            }
            Change::Command { undo, .. } => run(undo).map(drop),
        }
    }
}

impl Change {
    /// Whether [`Change::reapply`] has work for this change: firewall rules that the host's own
    /// saved ruleset does not hold, so they are gone after a reboot or a firewall reload.
    pub fn is_volatile_firewall(&self) -> bool {
        match self {
            Change::Nft { .. } => true,
            Change::Command { argv, .. } => iptables_check(argv).is_some(),
            _ => false,
        }
    }

    /// Puts a firewall change back if it is gone, and never twice: nft rules are deleted by
    /// their tag and inserted again; an iptables rule is inserted unless `-C` finds it.
    /// Returns true when something was put back.
    pub fn reapply(&self) -> Result<bool, ChangeError> {
        match self {
            Change::Nft { undo, .. } => {
                if tagged_count(undo)? == self.nft_rule_count() {
                    return Ok(false);
                }
                undo_nft(undo)?;
                self.apply()?;
                Ok(true)
            }
            Change::Command { argv, .. } => match iptables_check(argv) {
                Some(check) if run(&check).is_ok() => Ok(false),
                Some(_) => self.apply().map(|()| true),
                None => Ok(false),
            },
            _ => Ok(false),
        }
    }

    /// How many rules an nft change inserts.
    fn nft_rule_count(&self) -> usize {
        match self {
            Change::Nft { batch, .. } => batch["nftables"].as_array().map_or(0, |a| {
                a.iter().filter(|o| o.get("insert").is_some()).count()
            }),
            _ => 0,
        }
    }
}

/// `iptables -w -C INPUT RULE…` for an `iptables -w -I INPUT N RULE…` command.
fn iptables_check(argv: &[String]) -> Option<Vec<String>> {
    match argv {
        [prog, w, i, chain, _pos, rule @ ..]
            if (prog == "iptables" || prog == "ip6tables") && w == "-w" && i == "-I" =>
        {
            let mut c = vec![prog.clone(), w.clone(), "-C".into(), chain.clone()];
            c.extend(rule.iter().cloned());
            Some(c)
        }
        _ => None,
    }
}

/// How many rules carrying the tag the chain holds now (0 when it is gone).
fn tagged_count(undo: &NftUndo) -> Result<usize, ChangeError> {
    tagged_now(undo).map(|h| h.len())
}

/// `argv` quoted for a shell where needed, so a printed command can be pasted.
pub fn shell_line(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./:=,@+%".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Writes through a temporary file and a rename, so a crash never leaves half a file.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), ChangeError> {
    let err = |what, source| ChangeError::File {
        what,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| err("creating the folder of", e))?;
    }
    let tmp = path.with_extension("braid-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .map_err(|e| err("writing", e))?;
    f.write_all(bytes).map_err(|e| err("writing", e))?;
    f.sync_all().map_err(|e| err("writing", e))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))
        .map_err(|e| err("setting the mode of", e))?;
    std::fs::rename(&tmp, path).map_err(|e| err("renaming into", e))
}

fn write_sysctl(path: &Path, value: &str) -> Result<(), ChangeError> {
    std::fs::write(path, value).map_err(|source| ChangeError::File {
        what: "writing the sysctl",
        path: path.to_path_buf(),
        source,
    })
}

/// Runs a command, returns its stdout; a failure keeps its status and stderr.
pub fn run(argv: &[String]) -> Result<String, ChangeError> {
    let (program, args) = argv.split_first().ok_or_else(|| ChangeError::Failed {
        command: String::new(),
        status: "empty command".into(),
        stderr: String::new(),
    })?;
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| ChangeError::Spawn {
            command: shell_line(argv),
            source,
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(ChangeError::Failed {
            command: shell_line(argv),
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn run_stdin(argv: &[&str], input: &str) -> Result<(), ChangeError> {
    let line = argv.join(" ");
    let mut child = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| ChangeError::Spawn {
            command: line.clone(),
            source,
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let out = child
        .wait_with_output()
        .map_err(|source| ChangeError::Spawn {
            command: line.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(ChangeError::Failed {
            command: line,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Deletes braid's tagged rules from a host chain: lists the chain with handles and deletes
/// exactly the rules whose comment is the tag (none left is fine: undo runs twice safely).
fn undo_nft(undo: &NftUndo) -> Result<(), ChangeError> {
    let NftUndo::DeleteTagged {
        family,
        table,
        chain,
        ..
    } = undo;
    for handle in tagged_now(undo)? {
        let argv = ["nft", "delete", "rule", family, table, chain, "handle"];
        let mut argv: Vec<String> = argv.map(String::from).into();
        argv.push(handle.to_string());
        run(&argv)?;
    }
    Ok(())
}

/// The handles of braid's tagged rules in the chain now (none when the chain is gone).
fn tagged_now(undo: &NftUndo) -> Result<Vec<u64>, ChangeError> {
    let NftUndo::DeleteTagged {
        family,
        table,
        chain,
        comment,
    } = undo;
    let list: Vec<String> = ["nft", "-j", "-a", "list", "chain", family, table, chain]
        .map(String::from)
        .into();
    match run(&list) {
        Ok(text) => tagged_handles(&text, comment).map_err(|why| ChangeError::Json {
            command: shell_line(&list),
            why,
        }),
        // The chain (or its table) is gone: nothing of braid's is left in it.
        Err(ChangeError::Failed { .. }) => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The handles of the rules with `comment` in `nft -j -a list chain …` output.
fn tagged_handles(json: &str, comment: &str) -> Result<Vec<u64>, String> {
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let objects = v["nftables"].as_array().ok_or("no `nftables` array")?;
    Ok(objects
        .iter()
        .filter_map(|o| o.get("rule"))
        .filter(|r| r["comment"].as_str() == Some(comment))
        .filter_map(|r| r["handle"].as_u64())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_handles_picks_only_braids_rules() {
        let json = r#"{"nftables":[{"metainfo":{}},
            {"rule":{"family":"inet","table":"filter","chain":"input","handle":7,"comment":"braid setup","expr":[]}},
            {"rule":{"family":"inet","table":"filter","chain":"input","handle":3,"expr":[]}},
            {"rule":{"family":"inet","table":"filter","chain":"input","handle":9,"comment":"other","expr":[]}}]}"#;
        assert_eq!(tagged_handles(json, "braid setup").unwrap(), vec![7]);
        assert!(tagged_handles("{}", "x").is_err());
    }

    #[test]
    fn file_change_restores_or_removes() {
        let dir = std::env::temp_dir().join(format!("braid-change-{}", std::process::id()));
        let p = dir.join("etc/x.conf");
        let new = Change::file(p.clone(), "new\n".into(), 0o600);
        new.apply().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = Change::file(p.clone(), "newer\n".into(), 0o644);
        again.apply().unwrap();
        again.undo().unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        new.undo().unwrap();
        assert!(!p.exists());
        assert!(
            !dir.exists(),
            "the folders the write created are gone again"
        );
        // Undo twice is harmless.
        new.undo().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn iptables_check_is_the_insert_as_a_check() {
        let argv: Vec<String> = "iptables -w -I INPUT 3 -p udp -m udp --dport 8388 -j ACCEPT"
            .split(' ')
            .map(String::from)
            .collect();
        let check = iptables_check(&argv).unwrap().join(" ");
        assert_eq!(
            check,
            "iptables -w -C INPUT -p udp -m udp --dport 8388 -j ACCEPT"
        );
        assert!(iptables_check(&["ufw".into(), "allow".into()]).is_none());
    }

    #[test]
    fn shell_line_quotes_what_a_shell_would_split() {
        let argv = ["ufw", "allow", "8388/tcp", "it's"].map(String::from);
        assert_eq!(shell_line(&argv), r"ufw allow 8388/tcp 'it'\''s'");
    }
}
