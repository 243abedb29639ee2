//! Checks of doctor's parsers of the host's firewall and sshd files, shared by the fuzz targets
//! in `fuzz/` and the unit suite's property tests. Each takes arbitrary bytes, parses them and
//! judges the result, and panics only when a parser or the evaluator does. The files are the
//! host's own, but doctor runs on hosts braid has never seen: an odd ruleset or config must
//! give an answer, never a crash or a hang. Compiled for tests and with the `fuzz` feature only;
//! not part of the API.

#[cfg(test)]
mod props;

use crate::firewall::eval::{admits, Probe};
use crate::firewall::iptables::parse_iptables_save;
use crate::firewall::model::{Family, Ruleset};
use crate::firewall::nft::parse_nft_json;
use crate::firewall::sshd;

/// Judges the probes doctor asks about: the relay's port and ssh, TCP and UDP, both families.
fn judge(rules: &Ruleset) {
    for family in [Family::V4, Family::V6] {
        for probe in [
            Probe::tcp(8388, family),
            Probe::tcp(22, family),
            Probe::udp(8388, family),
        ] {
            let _ = admits(rules, probe).describe();
        }
    }
}

/// `nft -j list ruleset` output, parsed and judged.
pub fn nft_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = parse_nft_json(text) {
        judge(&rules);
    }
}

/// `iptables-save` and `ip6tables-save` output, parsed and judged.
pub fn iptables_save(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let rules = Ruleset {
        source: "iptables-save".into(),
        tables: vec![
            parse_iptables_save(&text, Family::V4),
            parse_iptables_save(&text, Family::V6),
        ],
        ..Ruleset::default()
    };
    judge(&rules);
}

/// The relay's salt file: read, written back and read again to the same salts.
pub fn salt_file(data: &[u8]) {
    use crate::server::salts::SaltLog;
    const NOW: u64 = 1_800_000_000_000;
    if let Ok(log) = SaltLog::decode(data, NOW) {
        assert_eq!(SaltLog::decode(&log.encode(), NOW), Ok(log));
    }
}

/// An `sshd_config`, a `/proc/net/tcp` text and an `Include` pattern against a file name (the
/// input's three parts split at the first two NUL bytes).
pub fn sshd_config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let config = parts.next().unwrap_or("");
    for d in sshd::directives(config) {
        if let sshd::Directive::Include(patterns) = d {
            assert!(!patterns.is_empty());
        }
    }
    let _ = sshd::listening(parts.next().unwrap_or(""));
    let (pattern, name) = parts
        .next()
        .unwrap_or("")
        .split_once('/')
        .unwrap_or(("", ""));
    let _ = sshd::wildcard(pattern, name);
}
