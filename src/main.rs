fn main() -> std::process::ExitCode {
    // The kernel starts /init (init=/init) as PID 1: be the NFS root's init, whatever argv says.
    if std::process::id() == 1 {
        return nixos_pxe_installer::init::main();
    }
    nixos_pxe_installer::cli::main()
}
