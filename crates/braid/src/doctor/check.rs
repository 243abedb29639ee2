//! One doctor check and the report they make: a fixed JSON shape that automated checks depend
//! on, and a human form with one line per check and a cause and a fix under every warning or
//! failure.

use serde::Serialize;
use serde_json::{Map, Value};

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Established fine.
    Ok,
    /// Works, but something is off and worth fixing.
    Warn,
    /// Broken.
    Fail,
    /// Not checked, with the reason in `summary`.
    Skip,
}

/// One check, as in `{"id","status","summary","cause","fix","evidence"}`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// Stable id, e.g. `kernel.mptcp` or `uplink.wifi.route`.
    pub id: String,
    /// Verdict.
    pub status: Status,
    /// One line: what was found.
    pub summary: String,
    /// Why it is so (empty for ok).
    pub cause: String,
    /// What to do (empty for ok).
    pub fix: String,
    /// The raw facts: errnos, counters, sysctl values, versions.
    pub evidence: Map<String, Value>,
}

impl Check {
    /// A passing check.
    pub fn ok(id: impl Into<String>, summary: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Ok,
            summary: summary.into(),
            cause: String::new(),
            fix: String::new(),
            evidence: Map::new(),
        }
    }

    /// A skipped check; `why` says why it was not run.
    pub fn skip(id: impl Into<String>, why: impl Into<String>) -> Check {
        Check {
            id: id.into(),
            status: Status::Skip,
            summary: why.into(),
            cause: String::new(),
            fix: String::new(),
            evidence: Map::new(),
        }
    }

    /// A failing check.
    pub fn fail(
        id: impl Into<String>,
        summary: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            id: id.into(),
            status: Status::Fail,
            summary: summary.into(),
            cause: cause.into(),
            fix: fix.into(),
            evidence: Map::new(),
        }
    }

    /// A warning.
    pub fn warn(
        id: impl Into<String>,
        summary: impl Into<String>,
        cause: impl Into<String>,
        fix: impl Into<String>,
    ) -> Check {
        Check {
            id: id.into(),
            status: Status::Warn,
            summary: summary.into(),
            cause: cause.into(),
            fix: fix.into(),
            evidence: Map::new(),
        }
    }

    /// Adds one piece of evidence.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Check {
        self.evidence.insert(key.to_string(), value.into());
        self
    }
}

/// All checks of one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// In the order they ran.
    pub checks: Vec<Check>,
}

impl Report {
    /// 0 when nothing failed, 1 when a check failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.checks.iter().any(|c| c.status == Status::Fail))
    }

    /// The JSON form.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The human form.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for c in &self.checks {
            let mark = match c.status {
                Status::Ok => "ok  ",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
                Status::Skip => "skip",
            };
            out += &format!("[{mark}] {:<28} {}\n", c.id, c.summary);
            if matches!(c.status, Status::Warn | Status::Fail) {
                out += &format!("       cause: {}\n       fix:   {}\n", c.cause, c.fix);
            }
        }
        let count = |s: Status| self.checks.iter().filter(|c| c.status == s).count();
        out += &format!(
            "{} ok, {} warn, {} fail, {} skip\n",
            count(Status::Ok),
            count(Status::Warn),
            count(Status::Fail),
            count(Status::Skip)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_fixed_shape() {
        let r = Report {
            checks: vec![Check::fail(
                "kernel.mptcp",
                "no MPTCP",
                "built without it",
                "boot a newer kernel",
            )
            .with("release", "5.4.0")],
        };
        let v: Value = serde_json::from_str(&r.to_json()).unwrap();
        let c = &v["checks"][0];
        assert_eq!(c["id"], "kernel.mptcp");
        assert_eq!(c["status"], "fail");
        assert_eq!(c["evidence"]["release"], "5.4.0");
        for k in ["summary", "cause", "fix"] {
            assert!(c[k].is_string(), "{k}");
        }
        assert_eq!(r.exit_code(), 1);
    }

    #[test]
    fn text_puts_cause_and_fix_under_warnings_only() {
        let r = Report {
            checks: vec![
                Check::ok("a", "fine"),
                Check::warn("b", "meh", "because", "do this"),
            ],
        };
        let t = r.to_text();
        assert_eq!(t.matches("cause:").count(), 1);
        assert!(t.contains("fix:   do this"));
        assert_eq!(r.exit_code(), 0);
    }
}
