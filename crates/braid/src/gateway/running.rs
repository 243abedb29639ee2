//! Is `braid gateway` running on this machine? The one answer `braid doctor` and
//! `braid speedtest` use before they judge or rely on the state the daemon applies.
//!
//! The daemon's status API (`control` in gateway.toml) is asked first: it also says each uplink's
//! health, which tells a withdrawn endpoint from a missing one. Without it, braid's routing rules
//! in the kernel (protocol 212) show that a gateway runs, but not what it decided.

use braid_sys::netlink::Rtnl;

use super::uplink::plan::RTPROT_BRAID;
use crate::config::gateway::GatewayConfig;
use crate::status::model::{Role, Status};

/// How long the status API may take: a stopped (or frozen) daemon must not hold doctor up.
const STATUS_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// What is known about the running gateway.
#[derive(Debug, Clone)]
pub enum Running {
    /// Its status API answered.
    WithStatus(Box<Status>),
    /// Its rules are in the kernel, but its status cannot be read (why).
    WithoutStatus(String),
    /// No braid gateway runs here.
    No,
}

impl Running {
    /// True unless no gateway runs.
    pub fn is_running(&self) -> bool {
        !matches!(self, Running::No)
    }

    /// The daemon's status, when it could be read.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Running::WithStatus(s) => Some(s),
            _ => None,
        }
    }

    /// Why there is no applied state to look at; for skipped checks.
    pub const NOT_RUNNING: &'static str =
        "the gateway is not running (its status API does not answer and no braid rules are in the kernel), so there is no applied state to check";
}

/// Asks the status API, then the kernel's rules.
pub async fn detect(cfg: &GatewayConfig, rtnl: Option<&Rtnl>) -> Running {
    let token = cfg
        .control_access
        .token
        .as_ref()
        .map(|t| t.as_str().to_string());
    let api = match cfg.control {
        Some(addr) => {
            match tokio::time::timeout(
                STATUS_TIMEOUT,
                crate::status::client::fetch(addr, token.as_deref()),
            )
            .await
            {
                Ok(Ok(s)) if s.role == Role::Gateway => return Running::WithStatus(Box::new(s)),
                Ok(Ok(s)) => format!("the status API at {addr} belongs to a braid {}", s.role),
                Ok(Err(e)) => e,
                Err(_) => format!(
                    "the status API at {addr} did not answer within {} s",
                    STATUS_TIMEOUT.as_secs()
                ),
            }
        }
        None => "control = \"off\" in gateway.toml".into(),
    };
    let rules = match rtnl {
        Some(n) => n
            .rules()
            .await
            .map(|rules| rules.iter().any(|r| r.protocol == RTPROT_BRAID))
            .unwrap_or(false),
        None => false,
    };
    if rules {
        Running::WithoutStatus(api)
    } else {
        Running::No
    }
}
