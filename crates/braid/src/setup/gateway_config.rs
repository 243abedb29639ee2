//! `/etc/braid/gateway.toml`, from the pairing URI and the interfaces; an existing one is kept.

use std::path::{Path, PathBuf};

use crate::config::gateway::GatewayConfig;

use super::change::Change;
use super::pairing::Pairing;
use super::SetupError;

/// Where the gateway config goes, under the setup root.
pub fn path(root: &Path) -> PathBuf {
    root.join("etc/braid/gateway.toml")
}

/// The change that writes gateway.toml, or `None` when a valid one is kept as it is.
pub fn plan(
    root: &Path,
    pairing: &Pairing,
    uplinks: &[String],
    lan: &[String],
) -> Result<Option<Change>, SetupError> {
    let p = path(root);
    if p.exists() {
        let kept = GatewayConfig::load(&p).map_err(|e| SetupError::ExistingConfig {
            path: p.clone(),
            why: e.to_string(),
        })?;
        if kept.key != pairing.key || kept.server != pairing.relay {
            println!(
                "note: keeping {} as it is, although it names relay {} with another key or address than the pairing URI; setup never rewrites an existing config: move it away and run setup again to use the URI",
                p.display(),
                kept.server
            );
        } else {
            println!("keep: {}", p.display());
        }
        return Ok(None);
    }
    let mut text = render(pairing, uplinks, lan);
    if root != Path::new("/") {
        // Everything under the root, the gateway's state record too.
        text = text.replace(
            "control = ",
            &format!(
                "state_dir = \"{}\"\ncontrol = ",
                root.join("run/braid").display()
            ),
        );
    }
    GatewayConfig::from_toml(&p, &text).map_err(|e| {
        SetupError::Usage(format!(
            "the gateway.toml setup would write is not valid: {e}"
        ))
    })?;
    Ok(Some(Change::file(p, text, 0o600)))
}

fn render(p: &Pairing, uplinks: &[String], lan: &[String]) -> String {
    let quoted = |v: &[String]| {
        v.iter()
            .map(|s| format!("\"{s}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut t = format!(
        "# braid gateway: written by `braid setup gateway`; `braid setup undo` removes it.\n\
         # Every key, with its default: /usr/share/doc/braid/examples/gateway.toml\n\
         server = \"{}\"\n\
         method = \"{}\"\n\
         key = \"{}\"\n\
         fast_open = \"{}\"\n\
         mptcp = {}\n\
         redirect = \"0.0.0.0:1100\"\n\
         lan = [{}]\n\
         control = \"127.0.0.1:9090\"\n",
        p.relay,
        p.method,
        p.key.as_base64(),
        if p.tfo { "auto" } else { "off" },
        p.mptcp,
        quoted(lan)
    );
    // Explicit tables: an uplink removed later (SIGHUP) does not renumber the others.
    for (i, u) in uplinks.iter().enumerate() {
        t += &format!(
            "\n[[uplink]]\nname = \"{u}\"\ninterface = \"{u}\"\ntable = {}\n",
            101 + i
        );
    }
    t
}
