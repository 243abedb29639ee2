//! The host firewall as braid sees it: read it, judge it, and plan additions to it.
//!
//! ```text
//!  nft -j list ruleset ─► nft.rs ──────┐
//!  iptables-save ───────► iptables.rs ─┴─► model::Ruleset ─► eval::admits(Probe) ─► Admission
//!      (gather.rs runs both)                    ▲
//!  plan::Plan ─► render() ─► nft batch / iptables commands
//!            └─► Ruleset::with_plan() ──────────┘  "after my change, is SSH still admitted?"
//!  sshd_config + /proc ─► sshd::sshd_ports()
//! ```
//!
//! It is a top-level module, not part of `doctor`, because two commands use one model:
//! `braid doctor` judges the gathered ruleset (`doctor::firewall` holds its checks), and
//! `braid setup server` plans the rules that open the relay port and checks, on the same model,
//! that they never close SSH before applying them.
//!
//! Files by job: [`model`] (the typed ruleset), [`gather`](mod@gather) (the only file that runs firewall
//! tools), [`nft`] and [`iptables`] (one parser per source), [`eval`] (the judgement),
//! [`plan`] (writing), [`sshd`](mod@sshd) (the ports to keep open). `fixtures/` holds real outputs of
//! Debian 12's nft 1.0.6, ufw and firewalld, captured in throwaway network namespaces.
//!
//! Not interpreted: source/destination address matches, rate limits, `tcp flags`, named verdict
//! maps, marks (each makes an answer "depends on rule X", quoting it, never a failure); and the
//! provider's cloud firewall, which no host tool can see.

pub mod eval;
pub mod gather;
pub mod iptables;
pub mod model;
pub mod nft;
pub mod plan;
pub mod sshd;

pub use eval::{admits, Admission, Probe};
pub use gather::{gather, GatherError};
pub use model::{Family, Manager, Ruleset, L4};
pub use plan::{Placement, Plan, PlanError, Rendered};
pub use sshd::sshd_ports;
