//! `tamga-config`: tamga's files — `node.toml`, the roster, the catalog, the agreements
//! and the local policy — parsed, checked against each other, and the pure sharing
//! decision made from them.
//!
//! This crate owns the file formats (documented with full examples in `config/README.md`),
//! the error reporting for them (every problem, each with file, line, column and a hint),
//! and the decision functions: [`decide()`] (may this record go to this peer, with which
//! fields withheld), [`audience`], [`decide_accept`] (and [`decide_accept_revocation`]),
//! [`decide_relay`] and [`explain`].
//! It does no network or store I/O and keeps no state: it reads files when asked, and
//! the node applies what it decides. Its parts:
//!
//! - [`node`]: `node.toml`, [`NodeConfig::load`];
//! - [`roster`], [`catalog`], [`agreement`], [`policy`]: one file format each;
//! - [`federation`]: all of them loaded together, cross-checked, compiled ([`Federation`]);
//! - [`mod@decide`]: the decisions and their explanations;
//! - [`check`]: warnings (legal but likely mistakes) and checking a federation directory;
//! - [`mod@diff`]: what a change of files alters in practice;
//! - [`error`]: [`ConfigError`], [`ConfigErrors`];
//! - [`limits`]: every limit, named;
//! - [`demo`]: **DEMO ONLY** deterministic keys of the example federation.

pub mod agreement;
pub mod catalog;
pub mod check;
pub mod decide;
pub mod demo;
pub mod diff;
pub mod error;
pub mod federation;
pub mod limits;
pub mod node;
mod parse;
pub mod policy;
pub mod roster;

pub use agreement::Agreement;
pub use catalog::{BodyError, Catalog, Category, Field, FieldType};
pub use check::{warnings, Warning, WarningKind};
pub use decide::{
    agreement_withheld, audience, decide, decide_accept, decide_accept_revocation, decide_relay, explain,
    explain_accept, withheld, Decision, DenyReason, Explanation, Step, StepOutcome, Withheld,
    MAX_CREATED_AHEAD_MS,
};
pub use diff::{diff, PolicyDiff};
pub use error::{ConfigError, ConfigErrors, ErrorKind, Pos, SourceFile};
pub use federation::{Federation, Sources};
pub use node::{ApiConfig, AuditConfig, LimitsConfig, NetworkConfig, NodeConfig, ReloadConfig, StoreConfig};
pub use policy::{AcceptRule, Members, Policy, ShareRule};
pub use roster::{Member, PeerIdError, Role, Roster};

/// The PeerId type of the roster (the one libp2p 0.57 uses).
pub use libp2p_identity::PeerId;
/// The multiaddr type of the roster and `node.toml` (the one libp2p 0.57 uses).
pub use multiaddr::Multiaddr;
