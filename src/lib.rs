//! nixos-pxe: unattended NixOS installation over PXE.
//! Modules in the order the boot chain uses them: schema and configuration, render, boot loader,
//! kernel config; later the NFS-root pack, init, installer and the boot server.

pub mod boot_file;
pub mod cli;
pub mod command;
pub mod compression;
pub mod config;
pub mod cpio;
pub mod error;
pub mod fleet;
pub mod init;
pub mod install;
pub mod kernel_config;
pub mod kernel_symbol;
pub mod loader;
pub mod origin;
pub mod pack;
pub mod render;
pub mod schema;
pub mod secure_boot;
pub mod serve;
// After serve: power control of the fleet's hosts through their BMCs (the fleet commands).
pub mod bmc;
pub mod start;
