//! The running kernel's release, for messages such as "TFO on MPTCP needs Linux 6.2; this is 6.1".

/// A parsed `uname -r` such as `6.18.44-fc-v669`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelRelease {
    /// The full string.
    pub release: String,
    /// Major and minor number, when the string starts with them.
    pub version: Option<(u32, u32)>,
}

impl KernelRelease {
    /// Parses a release string.
    pub fn parse(release: &str) -> KernelRelease {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major = it.next().and_then(|s| s.parse().ok());
        let minor = it.next().and_then(|s| s.parse().ok());
        KernelRelease {
            release: release.to_string(),
            version: major.zip(minor),
        }
    }

    /// The running kernel (`uname -r`).
    pub fn running() -> KernelRelease {
        let r = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_else(|_| "unknown".into());
        KernelRelease::parse(&r)
    }

    /// True when the kernel is at least `major.minor`; unknown versions count as new enough.
    pub fn at_least(&self, major: u32, minor: u32) -> bool {
        self.version.is_none_or(|v| v >= (major, minor))
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
        assert_eq!(k.version, Some((6, 1)));
        assert!(!k.at_least(6, 2));
        assert!(KernelRelease::parse("6.18.44-fc").at_least(6, 2));
    }
}
