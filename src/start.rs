//! What this process is, from how it was started: the NFS root's init when the kernel started it
//! as init (argv[0] named `init`, PID 1), otherwise the command line. Never from the PID alone: a
//! container whose entrypoint is nixos-pxe, or a build step that a sandbox's shell `exec`s, is
//! PID 1 too, and must run the subcommand it was given.

use std::ffi::{OsStr, OsString};
use std::path::Path;

/// The file name init is started under. The kernel runs `init=` (nfsroot.init, default `/init`,
/// which the tarball links to nixos-pxe) with that path as argv[0], so nfsroot.init must end in it.
pub const INIT_FILE_NAME: &str = "init";

/// First arguments that ask for the command line even under the name `init` (clap's own flags).
const CLI_FLAGS: &[&str] = &["-h", "--help", "-V", "--version"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// The NFS root's init. `kernel_words`: the arguments after argv[0], which are the kernel
    /// command line's words the kernel did not recognise (it passes them on to init); init
    /// ignores them.
    Init { kernel_words: Vec<String> },
    /// The command line: clap parses the arguments and runs the subcommand.
    Cli,
    /// Started under the name `init` with no subcommand, but not as PID 1: someone ran the NFS
    /// root's /init by hand. Being init there would mount over the running system's root.
    InitButNotPid1 { pid: u32 },
}

/// Decides what the process is from its arguments (`args[0]` included) and its PID.
/// `subcommands`: the names the command line accepts as its first argument.
pub fn role(args: &[OsString], pid: u32, subcommands: &[&str]) -> Role {
    let Some(argv0) = args.first() else { return Role::Cli };
    if Path::new(argv0).file_name() != Some(OsStr::new(INIT_FILE_NAME)) {
        return Role::Cli;
    }
    let first = args.get(1).map(|w| w.to_string_lossy());
    if first.is_some_and(|w| subcommands.contains(&w.as_ref()) || CLI_FLAGS.contains(&w.as_ref())) {
        return Role::Cli;
    }
    if pid != 1 {
        return Role::InitButNotPid1 { pid };
    }
    Role::Init { kernel_words: args[1..].iter().map(|w| w.to_string_lossy().into_owned()).collect() }
}

/// Whether `path` (nfsroot.init) is one the kernel can start nixos-pxe's init under.
pub fn is_init_path(path: &str) -> bool {
    path.rsplit('/').next() == Some(INIT_FILE_NAME)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUBCOMMANDS: &[&str] = &["check", "init", "install", "help"];

    fn role_of(args: &[&str], pid: u32) -> Role {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        role(&args, pid, SUBCOMMANDS)
    }

    fn init(words: &[&str]) -> Role {
        Role::Init { kernel_words: words.iter().map(|w| w.to_string()).collect() }
    }

    #[test]
    fn the_kernel_starting_init_is_init() {
        assert_eq!(role_of(&["/init"], 1), init(&[]));
        assert_eq!(role_of(&["/sbin/init"], 1), init(&[]));
        assert_eq!(role_of(&["init"], 1), init(&[]));
    }

    #[test]
    fn words_the_kernel_passes_on_are_ignored_by_init() {
        assert_eq!(role_of(&["/init", "splash", "single"], 1), init(&["splash", "single"]));
        assert_eq!(role_of(&["/init", "checks"], 1), init(&["checks"]));
    }

    #[test]
    fn a_subcommand_always_runs_pid_1_or_not() {
        // The bug: `unshare -fp --mount-proc nixos-pxe check ...` became init.
        assert_eq!(role_of(&["nixos-pxe", "check", "--config", "x.nix"], 1), Role::Cli);
        assert_eq!(role_of(&["/nix/store/x-nixos-pxe/bin/nixos-pxe", "check"], 1), Role::Cli);
        assert_eq!(role_of(&["nixos-pxe", "--help"], 1), Role::Cli);
        assert_eq!(role_of(&["nixos-pxe"], 1), Role::Cli);
        // Under the name init, too.
        assert_eq!(role_of(&["/init", "check", "--config", "x.nix"], 1), Role::Cli);
        assert_eq!(role_of(&["/init", "--help"], 1), Role::Cli);
        assert_eq!(role_of(&["/init", "-V"], 1), Role::Cli);
        assert_eq!(role_of(&["/init", "init"], 1), Role::Cli);
        assert_eq!(role_of(&["/srv/nfsroot/init", "help"], 4242), Role::Cli);
    }

    #[test]
    fn init_by_hand_is_refused_when_not_pid_1() {
        assert_eq!(role_of(&["/srv/nfsroot/init"], 4242), Role::InitButNotPid1 { pid: 4242 });
        assert_eq!(role_of(&["./init", "splash"], 4242), Role::InitButNotPid1 { pid: 4242 });
        assert_eq!(role_of(&["nixos-pxe"], 4242), Role::Cli);
        assert_eq!(role_of(&[], 1), Role::Cli);
    }

    #[test]
    fn init_paths_end_in_init() {
        assert!(is_init_path("/init"));
        assert!(is_init_path("/sbin/init"));
        assert!(!is_init_path("/bin/nixos-pxe"));
        assert!(!is_init_path("/init/"));
        assert!(!is_init_path("/initrd"));
        assert!(!is_init_path("/my-init"));
    }
}
