//! `/etc/braid/server.toml`: written once with a fresh key; an existing one is kept as it is
//! (its key, port and method are what the pairing URI then carries), never overwritten.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use crate::config::server::ServerConfig;
use crate::config::Method;

use super::change::Change;
use super::SetupError;

/// Where the server config goes, under the setup root.
pub fn path(root: &Path) -> PathBuf {
    root.join("etc/braid/server.toml")
}

/// The config setup ends up with, and the change that writes it (none when one was kept).
pub struct Planned {
    /// The typed config (as written, or as found).
    pub config: ServerConfig,
    /// `None` when an existing file is kept.
    pub change: Option<Change>,
}

/// Keeps a valid existing config (saying so when `listen`/`method` differ from what was asked),
/// refuses an invalid one, or plans a new one with a fresh key.
pub fn plan(root: &Path, listen: SocketAddr, method: Method) -> Result<Planned, SetupError> {
    let p = path(root);
    if p.exists() {
        let config = ServerConfig::load(&p).map_err(|e| SetupError::ExistingConfig {
            path: p.clone(),
            why: e.to_string(),
        })?;
        if config.listen != listen || config.method != method {
            println!(
                "note: keeping {} as it is (listen {}, {}); setup never rewrites an existing config: edit it, or move it away and run setup again, to use {listen} and {method}",
                p.display(),
                config.listen,
                config.method
            );
        } else {
            println!("keep: {} (and its key)", p.display());
        }
        return Ok(Planned {
            config,
            change: None,
        });
    }
    let key = crate::keygen::generate(method).map_err(|e| SetupError::Random(e.to_string()))?;
    let mut text = render(listen, method, &key);
    if root != Path::new("/") {
        // Everything under the root, the relay's salt file too.
        text += &format!("state_dir = \"{}\"\n", root.join("run/braid").display());
    }
    let config = ServerConfig::from_toml(&p, &text).map_err(|e| SetupError::ExistingConfig {
        path: p.clone(),
        why: format!("(the config setup generated is invalid: {e})"),
    })?;
    Ok(Planned {
        config,
        change: Some(Change::file(p, text, 0o600)),
    })
}

/// The file's text: the keys setup decides, the others at their defaults (documented in
/// /usr/share/doc/braid/examples/server.toml).
fn render(listen: SocketAddr, method: Method, key: &str) -> String {
    format!(
        "# braid server: written by `braid setup server`; `braid setup undo` removes it.\n\
         # Every key, with its default: /usr/share/doc/braid/examples/server.toml\n\
         listen = \"{listen}\"\n\
         method = \"{method}\"\n\
         # The pre-shared key. Keep it secret: anyone with it can use the relay.\n\
         key = \"{key}\"\n\
         fast_open = \"auto\"\n\
         mptcp = true\n\
         control = \"127.0.0.1:9090\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_writes_a_fresh_key_and_keeps_an_existing_config() {
        let root = std::env::temp_dir().join(format!("braid-scfg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let listen: SocketAddr = "0.0.0.0:8388".parse().unwrap();
        let first = plan(&root, listen, Method::Aes256Gcm).unwrap();
        let change = first.change.expect("a new file");
        change.apply().unwrap();
        let kept = plan(&root, "0.0.0.0:9999".parse().unwrap(), Method::Aes256Gcm).unwrap();
        assert!(kept.change.is_none());
        assert_eq!(kept.config.key, first.config.key);
        assert_eq!(kept.config.listen, listen);
        assert_eq!(
            kept.config.state_dir,
            root.join("run/braid"),
            "under a root, the salt file stays there too"
        );
        std::fs::write(path(&root), "listen = 1\n").unwrap();
        let e = plan(&root, listen, Method::Aes256Gcm)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("server.toml") && e.contains("fix:"), "{e}");
        let _ = std::fs::remove_dir_all(&root);
    }
}
