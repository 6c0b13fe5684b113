use nixos_pxe_installer::start::{self, Role};

fn main() -> std::process::ExitCode {
    // The kernel starts nfsroot.init (`/init`, a link to nixos-pxe) as PID 1: be the NFS root's
    // init then, and only then; a subcommand always runs that subcommand (see start.rs).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let subcommands = nixos_pxe_installer::cli::subcommand_names();
    let names: Vec<&str> = subcommands.iter().map(String::as_str).collect();
    match start::role(&args, std::process::id(), &names) {
        Role::Init { kernel_words } => nixos_pxe_installer::init::main(&kernel_words),
        Role::Cli => nixos_pxe_installer::cli::main(),
        Role::InitButNotPid1 { pid } => {
            let argv0 = args.first().map(|a| a.to_string_lossy().into_owned()).unwrap_or_default();
            eprintln!(
                "error: started as {argv0} (the NFS root's init) but as PID {pid}: init runs only as PID 1, \
                 started by the kernel (init=) or as the first process of a new PID namespace. Nothing was done.\n\
                 For the command line, give a subcommand: {argv0} --help"
            );
            std::process::ExitCode::from(2)
        }
    }
}
