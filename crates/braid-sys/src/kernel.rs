//! The kernel's release string (`uname -r`), parsed once for everything that compares kernels:
//! "TFO on MPTCP needs Linux 6.2; this is 6.1", and doctor's "a newer kernel of the same flavour
//! is installed but not booted".

use std::cmp::Ordering;

/// A parsed release such as `6.18.44-fc-v669`, `6.1.0-31-amd64` or `5.14.0-362.el9.x86_64`:
/// its numbers (`[6, 1, 0, 31]`) and its flavour (`amd64`). Ordered by the numbers only, so
/// compare releases of one flavour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRelease {
    /// The full string.
    pub release: String,
    /// The version numbers, in order: `6.12.12+bpo-cloud-amd64` gives `[6, 12, 12]`.
    pub numbers: Vec<u64>,
    /// The trailing words that are no version: `cloud-amd64`, `el9.x86_64`, or empty.
    pub flavour: String,
}

impl KernelRelease {
    /// Parses a release string; anything is accepted (numbers may then be empty).
    pub fn parse(release: &str) -> KernelRelease {
        let parts: Vec<&str> = release.split('-').collect();
        // The flavour is the trailing dash-separated words that do not start with a digit.
        let mut first_flavour = parts.len();
        while first_flavour > 1
            && !parts[first_flavour - 1].starts_with(|c: char| c.is_ascii_digit())
        {
            first_flavour -= 1;
        }
        let (version, mut flavour) = if first_flavour < parts.len() {
            (
                parts[..first_flavour].join("-"),
                parts[first_flavour..].join("-"),
            )
        } else {
            // No dashed flavour: the tail after the last run of numbers (`362.el9.x86_64`).
            let last = parts.last().copied().unwrap_or("");
            let tail = last
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .map(|i| &last[i..])
                .unwrap_or("");
            (
                release[..release.len() - tail.len()].to_string(),
                tail.to_string(),
            )
        };
        // `+bpo` (Debian backports) and similar `+word` tags belong to the version.
        if let Some(i) = flavour.find('+') {
            flavour.truncate(i);
        }
        let cut = version
            .find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(version.len());
        let numbers = version[..cut]
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .filter_map(|s| s.parse().ok())
            .collect();
        KernelRelease {
            release: release.to_string(),
            numbers,
            flavour,
        }
    }

    /// The running kernel (`uname -r`).
    pub fn running() -> KernelRelease {
        let r = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        KernelRelease::parse(&r)
    }

    /// Major and minor number, when the release starts with them.
    pub fn version(&self) -> Option<(u64, u64)> {
        match self.numbers.as_slice() {
            [major, minor, ..] => Some((*major, *minor)),
            _ => None,
        }
    }

    /// True when the kernel is at least `major.minor`; unknown versions count as new enough.
    pub fn at_least(&self, major: u64, minor: u64) -> bool {
        self.version().is_none_or(|v| v >= (major, minor))
    }
}

impl PartialOrd for KernelRelease {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for KernelRelease {
    fn cmp(&self, other: &Self) -> Ordering {
        self.numbers
            .cmp(&other.numbers)
            .then_with(|| self.release.cmp(&other.release))
    }
}

impl std::fmt::Display for KernelRelease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Linux {}", self.release)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_major_minor() {
        let k = KernelRelease::parse("6.1.0-31-amd64");
        assert_eq!(k.version(), Some((6, 1)));
        assert!(!k.at_least(6, 2));
        assert!(KernelRelease::parse("6.18.44-fc").at_least(6, 2));
        assert!(KernelRelease::parse("unknown").at_least(6, 2));
    }

    #[test]
    fn parse_splits_numbers_and_flavour() {
        let v = KernelRelease::parse("5.14.0-362.el9.x86_64");
        assert_eq!(
            (v.numbers.as_slice(), v.flavour.as_str()),
            (&[5, 14, 0, 362][..], "el9.x86_64")
        );
        let v = KernelRelease::parse("6.12.12+bpo-cloud-amd64");
        assert_eq!(
            (v.numbers.as_slice(), v.flavour.as_str()),
            (&[6, 12, 12][..], "cloud-amd64")
        );
        assert_eq!(KernelRelease::parse("5.4.274").flavour, "");
        assert!(KernelRelease::parse("6.1.0-10-amd64") > KernelRelease::parse("6.1.0-9-amd64"));
    }
}
