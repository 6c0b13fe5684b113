//! A fleet: many hosts, each recognised by its MACs and installed once per generation.
//! The pure part lives here: the model read from the configuration ([`model`]), the decision
//! "install, boot locally or hold" from the desired state and what happened ([`decide`]), the
//! disk marker and completion stamp ([`marker`]) and the per-host GRUB configuration ([`grub`]).
//! These do no I/O. Around them: what serve remembers, behind the [`store::Store`] interface
//! ([`sqlite`] keeps it in a file), the attempts' tokens ([`token`]) and the status view
//! of `nixos-pxe fleet status` and serve's `/v1/hosts` ([`status`]).

pub mod copy;
pub mod decide;
pub mod marker;
pub mod open;
#[doc(hidden)]
pub mod pg_cluster;
pub mod postgres;
pub mod sqlite;
pub mod status;
pub mod store;
pub mod token;
#[cfg(test)]
pub mod store_tests;

pub use decide::{AttemptSummary, Confirmed, Decision, HostState, Outcome, decide};
pub use crate::config::fleet::{Fleet, HostSpec, Mac, UnknownHosts};
