//! A fleet: many hosts, each recognised by its MACs and installed once per generation.
//! The pure part lives here: the model read from the configuration ([`model`]), the decision
//! "install, boot locally or hold" from the desired state and what happened ([`decide`]), the
//! disk marker and completion stamp ([`marker`]) and the per-host GRUB configuration ([`grub`]).
//! No I/O: serve's store and sockets and the installer's reports are built around it.

pub mod decide;
pub mod grub;
pub mod marker;
pub mod model;

pub use decide::{AttemptSummary, Confirmed, Decision, HostState, Outcome, decide};
pub use model::{Fleet, HostSpec, Mac, UnknownHosts};
