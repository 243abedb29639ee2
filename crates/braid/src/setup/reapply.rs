//! `braid setup reapply`: puts back the firewall rules setup added to the host's own chains
//! when they are gone (after a reboot, the host's saved ruleset is loaded without them; after
//! `nft -f /etc/nftables.conf`, likewise). `braid-firewall.service` runs it at boot, after the
//! host's firewall and before the relay. Running it twice changes nothing.

use std::path::Path;

use super::journal::Journal;
use super::SetupError;

/// Re-applies every volatile firewall change of the journal under `root`, oldest first.
/// Returns how many were put back.
pub fn run(root: &Path) -> Result<usize, SetupError> {
    let journal = Journal::load(root)?;
    let mut put_back = 0;
    for change in journal.changes.iter().filter(|c| c.is_volatile_firewall()) {
        let line = change.describe();
        if change.reapply().map_err(|e| SetupError::Change {
            step: format!("reapply: {line}"),
            source: e,
        })? {
            println!("put back: {line}");
            put_back += 1;
        }
    }
    if put_back == 0 {
        println!("the firewall rules of braid setup are all in place");
    }
    Ok(put_back)
}
