//! `tamga-node`: the tamga daemon and the `tamga` command.
//!
//! Who owns what:
//! - [`store`] owns sled; nothing else names a sled type;
//! - [`writer`] owns the write path: one task batches record writes and audit appends
//!   into one atomic batch and one flush, and keeps the audit hash chain;
//! - [`audit`] is the entry and its chain verification, [`audit_index`] the append path
//!   with its indexes and checkpoint schedule and the queries, [`audit_cli`] `tamga audit`;
//! - [`net`] owns the libp2p `Swarm` in one task; the rest talks to it through a handle;
//! - [`api`] serves the local HTTP API; [`cli`] is the `tamga` command;
//! - [`daemon`] starts every task with one cancellation token and awaits them all.

pub mod api;
pub mod audit;
pub mod audit_bench;
pub mod audit_cli;
pub mod audit_index;
pub mod backup;
pub mod bench;
pub mod cli;
pub mod client;
pub mod daemon;
pub mod demo;
pub mod example;
pub mod identity;
pub mod localfed;
pub mod metrics;
pub mod net;
pub mod par;
pub mod refusals;
pub mod reload;
pub mod store;
pub mod sync;
pub mod writer;
